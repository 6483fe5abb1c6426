/**
 * Issue 14's acceptance on nginx: WordPress whose database is on the origin's own MariaDB
 * (DB_HOST localhost in wp-config.php), beside two other customers' databases on the same server
 * (shop_a, forum_b), moves to the target, whose own MariaDB takes the database over, under issue
 * 13's load (pages, comments, uploads; the notes app and the static site beside it), while the
 * shop's own program keeps inserting orders. Driven the operator's way: `ferry agent` with
 * `--mariadb-defaults-file` (its MariaDB administrator), `--mariadb-ca` and
 * `--mariadb-option-dir`; ferry.yaml says only `kind: web` (the database is found in
 * wp-config.php); `ferry migrate --watch`.
 *
 * Checked with both servers' SQL, the origin's binary log (`mariadb-binlog`) and its general query
 * log: `assertMoved`'s checks (0 failed requests, every acknowledged comment once in the target's
 * database); the origin's binary log has no row change to wp_blog after the switch; the other
 * customers' databases unchanged but for the shop program's own orders, never named by a
 * statement of Ferry's connections, never locked, never copied to the target; the migration user
 * gone from the origin, no replication connection left on the target; the blog's user on the
 * origin without write privileges (the frozen copy is a backup).
 *
 * And the prerequisites: the origin's MariaDB without a binary log makes `ferry migrate` refuse at
 * plan time with DB_BINLOG_OFF, saying how to turn it on, and nothing changes on either server.
 *
 * And crash safety with a rollback after the switch, under the same load: the zone on knotd
 * (RFC 2136 updates), so that names keep resolving while the controller is down; the controller
 * SIGKILLed once the origin is frozen and the target's catch-up (`db-take-over`) is under way,
 * started again with the same config and journal, resumes through the switch; as soon as draining
 * begins, `ferry rollback ID --watch`. No request fails; every acknowledged comment is once in the
 * origin's wp_blog at the end (those written on the target included) and those acknowledged
 * before the rollback's freeze once in the target's; the origin's binary log has no change of
 * wp_blog of its own between the freeze and the reverse take-over; the blog's user writes the
 * origin again and not the target; no `ferry_` replication connection or account is left.
 * Root only; everything is removed, pass or fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_CODES } from '../../src/common/error-codes.js';
import { netnsSkipReason } from './netns/topology.js';
import {
  REAL_SITE_BINARIES,
  ROOT,
  buildHosting,
  configSnapshot,
  ferryCli,
  migrate,
  moveUnderLoad,
  scenarioLoad,
  startAgents,
  startController,
  startControllerAndResolver,
} from './netns/real-site.js';
import { commentCounts, startSiteLoad } from './netns/sites.js';
import {
  ORIGIN_DOMAIN,
  accounts,
  assertDatabaseMoved,
  assertDatabasesReady,
  binlogPos,
  binlogRowWrites,
  databases,
  installCustomerDbs,
  replicationConnections,
  seqOf,
  snapshotDatabases,
  startShopWriter,
  tryNoopWrite,
  type DbWriter,
} from './netns/databases.js';
import type { NsChild } from './netns/topology.js';

const skip = netnsSkipReason({
  ...REAL_SITE_BINARIES,
  'nginx-light': ['nginx'],
  'mariadb-client': ['mariadb-binlog', 'mariadb-dump'],
  knot: ['knotd'],
});
if (skip) console.log(`# skipping the real-site database acceptance: ${skip}`);

test(
  "WordPress with its database on the origin's MariaDB moves under load: every comment once in the target's database, no write to it on the origin after the switch, the other customers' databases untouched",
  { skip: skip ?? false, timeout: 480_000 },
  async () => {
    const h = await buildHosting('nginx', undefined, { database: 'local' });
    let ok = false;
    let writer: DbWriter | undefined;
    try {
      const origin = h.maria;
      const target = h.targetMaria!;
      const blog = h.sites.blog;
      await installCustomerDbs(origin);
      await assertDatabasesReady(h);
      const before = await snapshotDatabases(h);
      assert.ok(!before.targetDatabases.includes('wp_blog'), 'the target starts without the database');

      // The origin's binlog position the moment the switch is seen: every change of wp_blog is
      // before it (the origin was frozen before the target took over).
      let atSwitch = '';
      const { run, seen } = await moveUnderLoad(
        h,
        blog,
        async () => void (writer = startShopWriter(h.origin, origin)),
        async (step) => {
          if (step === 'target-serve') atSwitch = await binlogPos(origin);
        },
      );
      const written = await writer!.stop();
      const switchAt = run.at['target-serve']!;
      // The database moved through the migration's own steps, caught up inside the hold: the
      // origin frozen, then the target the writer, then the switch; the source closed at the end.
      const dbSteps = ['db-open-source', 'db-copy', 'db-freeze-origin', 'db-take-over', 'db-close-source'];
      for (const step of dbSteps)
        assert.ok(run.at[step] !== undefined, `step ${step} ran: ${Object.keys(run.at).join(' ')}`);
      assert.ok(
        run.at['db-copy']! <= run.at['db-freeze-origin']! &&
          run.at['db-freeze-origin']! <= run.at['db-take-over']! &&
          run.at['db-take-over']! <= switchAt,
        'copy, freeze, take-over, then the switch',
      );
      // The controller's events told the operator about the copy, the lag and the catch-up.
      const dbEvents = h
        .controller!.lines.map((l) => {
          try {
            return JSON.parse(l) as { type?: string; data?: { state?: string; lag?: { error?: string } } };
          } catch {
            return {};
          }
        })
        .filter((e) => e.type === 'database');
      const states = new Set(dbEvents.map((e) => e.data?.state));
      for (const state of ['copied', 'lag', 'frozen', 'caught-up'])
        assert.ok(states.has(state), `a database event '${state}': ${[...states].join(' ')}`);
      assert.ok(
        dbEvents.some((e) => e.data?.state === 'lag' && e.data.lag && !e.data.lag.error),
        "the replication's lag was read without error",
      );

      await assertDatabaseMoved(h, before, {
        written,
        atSwitch,
        switchAt,
        startedAt: Math.min(...Object.values(run.at)),
      });
      const onTarget = await commentCounts(target.sql, h.wpDb.name);

      console.log(
        `# real-site database: ${seen.results.length} requests, ${seen.summary.comments.length} comments (${onTarget.size} in the target's wp_comments), ${written.acked.length} orders by the other customer, 0 failed`,
      );
      ok = true;
    } finally {
      if (writer) await writer.stop().catch(() => undefined);
      await h.close(ok);
    }
  },
);

test(
  "the origin's MariaDB without a binary log: ferry migrate refuses at plan time with DB_BINLOG_OFF, says how to turn it on, and changes nothing",
  { skip: skip ?? false, timeout: 300_000 },
  async () => {
    const h = await buildHosting('nginx', undefined, { database: 'local', originBinlog: false });
    let ok = false;
    try {
      const blog = h.sites.blog;
      assert.equal((await h.maria.sql('SELECT @@log_bin;')).trim(), '0', "the origin's binary log is off");
      await startAgents(h);
      await startControllerAndResolver(h, [blog.domain]);
      const before = {
        origin: await configSnapshot(h.origin),
        target: await configSnapshot(h.target),
        accounts: await accounts(h.maria),
        targetAccounts: await accounts(h.targetMaria!),
        targetDatabases: await databases(h.targetMaria!),
      };

      const run = await migrate(h, blog.domain, 90_000);
      const out = `${run.lines.join('\n')}\n${run.stderr}`;
      assert.equal(
        run.exit,
        ERROR_CODES.DB_BINLOG_OFF.exit,
        `exit code of DB_BINLOG_OFF: ${out.slice(-600)}`,
      );
      assert.match(out, /DB_BINLOG_OFF/, out.slice(-600));
      assert.match(out, /log_bin/, 'the message names the setting');
      assert.match(out, /restart/, 'and that MariaDB must be restarted');
      assert.equal(run.at['phase:planned'], undefined, 'no migration was journaled');

      assert.equal(await configSnapshot(h.origin), before.origin, 'nothing changed on the origin');
      assert.equal(await configSnapshot(h.target), before.target, 'nothing changed on the target');
      assert.deepEqual(await accounts(h.maria), before.accounts, 'no migration user on the origin');
      assert.deepEqual(await accounts(h.targetMaria!), before.targetAccounts, 'no account on the target');
      assert.deepEqual(await databases(h.targetMaria!), before.targetDatabases, 'no database on the target');
      assert.deepEqual(await replicationConnections(h.targetMaria!), [], 'no replication connection');
      ok = true;
    } finally {
      await h.close(ok);
    }
  },
);

/** A controller event as `ferry controller --events` prints it. */
interface CtlEvent {
  type: string;
  at?: number;
  data?: { step?: string; phase?: string; state?: string; position?: string };
}

function events(ctl: NsChild): CtlEvent[] {
  return ctl.lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as CtlEvent];
    } catch {
      return [];
    }
  });
}

const isStep = (step: string) => (l: string) => l.includes('"type":"step"') && l.includes(`"step":"${step}"`);
const isPhase = (phase: string) => (l: string) =>
  l.includes('"type":"phase"') && l.includes(`"phase":"${phase}"`);

test(
  "the controller SIGKILLed during the database catch-up resumes through the switch, then a rollback while draining brings every comment back to the origin's database",
  { skip: skip ?? false, timeout: 480_000 },
  async () => {
    const h = await buildHosting('nginx', undefined, { database: 'local' });
    let ok = false;
    let stopLoad: (() => Promise<unknown>) | undefined;
    try {
      const origin = h.maria;
      const target = h.targetMaria!;
      const blog = h.sites.blog;
      await assertDatabasesReady(h);
      await startAgents(h);
      // The zone on knotd, updated by RFC 2136: the name server keeps answering while the
      // controller is down, as a provider's does.
      await startControllerAndResolver(h, [blog.domain], { dns: 'knot' });
      const first = h.controller!;
      const load = await startSiteLoad(h.topo, ROOT, scenarioLoad(h), `${h.dir}/load.log`);
      stopLoad = () => load.stop();
      await new Promise((r) => setTimeout(r, 3000));

      // A TTL of 8 s keeps draining (and the records at IPt) long enough to ask for the rollback in it.
      const started = await ferryCli(h, 'migrate', ['migrate', blog.domain, '--to', 'target', '--ttl', '8']);
      assert.equal(started.exit, 0, `ferry migrate: ${started.stderr.slice(-600)}`);
      const id = (JSON.parse(started.lines.find((l) => l.startsWith('{'))!) as { id: string }).id;

      // SIGKILL once the origin is frozen and the target's catch-up is under way.
      await first.waitLine(isStep('db-take-over'), 180_000);
      first.child.kill('SIGKILL');
      await first.exited;
      const killedAt = Date.now();
      const beforeKill = events(first)
        .filter((e) => e.type === 'step')
        .map((e) => e.data!.step!);
      assert.ok(beforeKill.includes('db-freeze-origin'), 'the origin was frozen before the kill');
      const frozen = events(first).find((e) => e.type === 'database' && e.data?.state === 'frozen');
      const freezeSeq = seqOf(frozen?.data?.position ?? '', ORIGIN_DOMAIN);
      assert.ok(freezeSeq > 0, `the origin's position at the freeze: ${frozen?.data?.position}`);

      // The same config and journal: the controller resumes the migration by itself.
      const second = await startController(h);
      const restartMs = Date.now() - killedAt;
      await second.waitLine(isPhase('draining'), 180_000);
      const drainingAt = Date.now();
      // Sampled while the origin is still frozen: the reverse catch-up has not begun.
      let atReverseFreeze = '';
      const sampling = second
        .waitLine(isStep('reverse-db-freeze-target'), 240_000)
        .then(async () => void (atReverseFreeze = await binlogPos(origin)))
        .catch(() => undefined);
      const rollback = await ferryCli(h, 'rollback', ['rollback', id, '--watch'], 240_000);
      await sampling;
      await new Promise((r) => setTimeout(r, 2000)); // traffic at the origin again
      const seen = await load.stop();
      stopLoad = undefined;

      // The kill fell inside the cut-over's database catch-up and the resumed run passed the switch.
      const all = [...events(first), ...events(second)];
      const stepAt = (step: string) => all.find((e) => e.type === 'step' && e.data?.step === step)?.at;
      assert.ok(!beforeKill.includes('target-serve'), 'killed before the switch');
      const switchAt = stepAt('target-serve');
      assert.ok(switchAt !== undefined && switchAt > killedAt, 'the resumed controller made the switch');
      assert.ok(
        events(second).some((e) => e.type === 'phase' && e.data?.phase === 'draining'),
        'and went on to draining',
      );
      assert.ok(
        !all.some((e) => e.type === 'phase' && e.data?.phase === 'completed'),
        'the migration never completed',
      );

      // The rollback after the switch: the migration ends rolled back.
      const summary = rollback.lines.filter((l) => l.startsWith('{"summary"')).pop();
      assert.equal(
        summary && (JSON.parse(summary) as { summary: { phase: string } }).summary.phase,
        'rolled-back',
        `ferry rollback --watch: ${rollback.lines.slice(-4).join(' | ')} ${rollback.stderr.slice(-400)}`,
      );
      assert.equal(rollback.exit, 0, 'ferry rollback --watch exits 0 once rolled back');
      const reverseFreezeAt = stepAt('reverse-db-freeze-target');
      const reverseTakeOverAt = stepAt('reverse-db-take-over');
      assert.ok(
        reverseFreezeAt && reverseTakeOverAt,
        'the databases came back through the reverse take-over',
      );

      // No request failed, through the kill, the switch and the rollback.
      const failures = seen.results.filter((r) => !r.ok);
      assert.equal(failures.length, 0, `failed requests: ${JSON.stringify(failures.slice(0, 8))}`);
      assert.equal(seen.summary.unexpected, 0, 'no write refused, no 4xx');

      // Comments: every one acknowledged in the whole run once on the origin; those acknowledged
      // before the reverse freeze once on the target too (it was the only writer in between).
      const byId = new Map(seen.results.map((r) => [r.id, r]));
      const comments = seen.summary.comments.map((c) => ({ ...c, result: byId.get(c.key.slice(2))! }));
      // Sent after the switch and acknowledged before the rollback's freeze: written on the target,
      // the only writer then (a comment's 302 does not name the server).
      const onTarget = comments.filter(
        (c) => c.result.at > switchAt! && c.result.at + c.result.latencyMs < reverseFreezeAt!,
      );
      assert.ok(
        onTarget.length > 0,
        'comments were written on the target between the switch and the rollback',
      );
      const inOrigin = await commentCounts(origin.sql, h.wpDb.name);
      const inTarget = await commentCounts(target.sql, h.wpDb.name);
      assert.deepEqual(
        comments.filter((c) => inOrigin.get(c.key) !== 1).map((c) => c.key),
        [],
        "every acknowledged comment once in the origin's database",
      );
      assert.deepEqual(
        comments
          .filter((c) => c.result.at + c.result.latencyMs < reverseFreezeAt! && inTarget.get(c.key) !== 1)
          .map((c) => c.key),
        [],
        "every comment acknowledged before the rollback's freeze once in the target's database",
      );

      // Never two writers: from the freeze until the reverse take-over, the origin's binary log
      // has no change of the site's database made on the origin (its own GTID domain).
      assert.match(
        atReverseFreeze,
        /^\d+-\d+-\d+/,
        `the origin's position at the reverse freeze (${atReverseFreeze})`,
      );
      const reverseSeq = seqOf(atReverseFreeze, ORIGIN_DOMAIN);
      const blogWrites = (await binlogRowWrites(origin)).filter(
        (w) => w.db === h.wpDb.name && w.gtid.startsWith(`${ORIGIN_DOMAIN}-`),
      );
      const whileFrozen = blogWrites.filter(
        (w) =>
          seqOf(w.gtid, ORIGIN_DOMAIN) > freezeSeq &&
          (seqOf(w.gtid, ORIGIN_DOMAIN) <= reverseSeq || w.timestamp < Math.floor(reverseTakeOverAt! / 1000)),
      );
      assert.deepEqual(
        whileFrozen,
        [],
        `no write to ${h.wpDb.name} on the origin while the target was the writer`,
      );
      assert.ok(
        blogWrites.some((w) => seqOf(w.gtid, ORIGIN_DOMAIN) > reverseSeq),
        'and the origin takes the site writes again after the rollback',
      );

      // The origin's site user writes again, the target's does not; no channel, no migration user.
      const blogLogin = {
        user: h.wpDb.user,
        password: h.wpDb.password,
        database: h.wpDb.name,
        table: 'wp_options',
      };
      assert.equal(
        await tryNoopWrite(h.origin, origin, blogLogin),
        null,
        "the blog's user writes the origin again",
      );
      assert.match(
        (await tryNoopWrite(h.target, target, blogLogin)) ?? 'allowed',
        /command denied/i,
        "and may not write the target's copy",
      );
      for (const [name, m] of [
        ['origin', origin],
        ['target', target],
      ] as const) {
        assert.deepEqual(
          (await replicationConnections(m)).filter((c) => /^ferry_/i.test(c)),
          [],
          `no ferry_ replication connection left on the ${name}`,
        );
        assert.deepEqual(
          (await accounts(m)).filter((a) => a.startsWith('ferry_')),
          [],
          `no migration user left on the ${name}`,
        );
      }
      console.log(
        `# real-site database crash+rollback: controller killed after step ${beforeKill.at(-1)}, down ${restartMs} ms, slowest request ${Math.max(...seen.results.map((r) => r.latencyMs))} ms, draining began ${drainingAt - switchAt!} ms after the switch, ${seen.results.length} requests, ${comments.length} comments (${onTarget.length} while the target wrote), 0 failed`,
      );
      ok = true;
    } finally {
      if (stopLoad) await stopLoad().catch(() => undefined);
      await h.close(ok);
    }
  },
);
