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
 * Root only; everything is removed, pass or fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_CODES } from '../../src/common/error-codes.js';
import { netnsSkipReason } from './netns/topology.js';
import {
  REAL_SITE_BINARIES,
  buildHosting,
  configSnapshot,
  migrate,
  moveUnderLoad,
  startAgents,
  startControllerAndResolver,
} from './netns/real-site.js';
import { commentCounts } from './netns/sites.js';
import {
  accounts,
  assertDatabaseMoved,
  assertDatabasesReady,
  binlogPos,
  databases,
  installCustomerDbs,
  replicationConnections,
  snapshotDatabases,
  startShopWriter,
  type DbWriter,
} from './netns/databases.js';

const skip = netnsSkipReason({
  ...REAL_SITE_BINARIES,
  'nginx-light': ['nginx'],
  'mariadb-client': ['mariadb-binlog', 'mariadb-dump'],
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
