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
  CUSTOMER_DBS,
  accounts,
  binlogPos,
  binlogRowWrites,
  databases,
  generalLog,
  grantsOf,
  installCustomerDbs,
  replicationConnections,
  seqOf,
  ORIGIN_DOMAIN,
  shopOrders,
  startShopWriter,
  tableChecksums,
  tryNoopWrite,
  assertDatabasesReady,
  type DbWriter,
} from './netns/databases.js';

const skip = netnsSkipReason({
  ...REAL_SITE_BINARIES,
  'nginx-light': ['nginx'],
  'mariadb-client': ['mariadb-binlog', 'mariadb-dump'],
});
if (skip) console.log(`# skipping the real-site database acceptance: ${skip}`);

/** The site's database user, as wp-config.php names it; local, so on the socket. */
const BLOG_ACCOUNT = { user: 'blog', host: 'localhost' };
const WRITE_PRIVILEGE = /\b(ALL PRIVILEGES|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER)\b/;

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
      const before = {
        accounts: await accounts(origin),
        targetDatabases: await databases(target),
        orders: await shopOrders(origin),
        sums: Object.fromEntries(
          await Promise.all(CUSTOMER_DBS.map(async (d) => [d.name, await tableChecksums(origin, d.name)])),
        ) as Record<string, Record<string, string>>,
      };
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

      // The other customer kept writing through the whole migration, never refused.
      assert.deepEqual(written.failed, [], "the shop's program had no insert refused");
      const startedAt = Math.min(...Object.values(run.at));
      const during = written.acked.filter((w) => w.at > startedAt && w.at < switchAt);
      assert.ok(during.length > 5, `the shop's program wrote during the migration (${during.length})`);
      assert.ok(
        written.acked.some((w) => w.at > switchAt),
        'and after the switch (its database stays on the origin)',
      );

      // Comments: every comment the origin's copy has is on the target too (none split off).
      const onOrigin = await commentCounts(origin.sql, h.wpDb.name);
      const onTarget = await commentCounts(target.sql, h.wpDb.name);
      const notCarried = [...onOrigin.keys()].filter((k) => !onTarget.has(k));
      assert.deepEqual(notCarried, [], "every comment of the origin's copy is on the target");

      // The origin's binary log: wp_blog changed before the switch, never after it.
      assert.match(atSwitch, /^\d+-\d+-\d+/, `the origin's position at the switch was read (${atSwitch})`);
      const switchSeq = seqOf(atSwitch, ORIGIN_DOMAIN);
      const writes = await binlogRowWrites(origin);
      const blogWrites = writes.filter((w) => w.db === h.wpDb.name);
      assert.ok(
        blogWrites.length > 5,
        "the origin's binary log has the site's writes made before the switch",
      );
      const late = blogWrites.filter(
        (w) => seqOf(w.gtid, ORIGIN_DOMAIN) > switchSeq || w.timestamp > Math.floor(switchAt / 1000),
      );
      assert.deepEqual(late, [], `no change of ${h.wpDb.name} in the origin's binary log after the switch`);
      assert.ok(
        writes.some((w) => w.db === 'shop_a' && seqOf(w.gtid, ORIGIN_DOMAIN) > switchSeq),
        "while the shop's later orders are there (the log was read past the switch)",
      );

      // The other customers' databases: unchanged but for the shop program's own orders.
      assert.deepEqual(await tableChecksums(origin, 'forum_b'), before.sums.forum_b, 'forum_b unchanged');
      const shopNow = await tableChecksums(origin, 'shop_a');
      assert.equal(shopNow.products, before.sums.shop_a!.products, 'shop_a.products unchanged');
      const orders = await shopOrders(origin);
      for (const [id, ref] of before.orders) assert.equal(orders.get(id), ref, `order ${id} unchanged`);
      const added = [...orders].filter(([id]) => !before.orders.has(id)).map(([, ref]) => ref);
      assert.ok(
        added.every((r) => /^w-\d+$/.test(r)),
        `only the program's orders were added: ${added.filter((r) => !/^w-\d+$/.test(r)).join(' ')}`,
      );
      const acked = written.acked.map((w) => w.ref);
      assert.deepEqual(
        acked.filter((r) => added.filter((a) => a === r).length !== 1),
        [],
        'every acknowledged order once',
      );
      const targetDbs = await databases(target);
      for (const d of CUSTOMER_DBS)
        assert.ok(!targetDbs.includes(d.name), `${d.name} was not copied to the target`);
      assert.ok(targetDbs.includes(h.wpDb.name), 'the site database is on the target');

      // Never read, never locked: no statement of Ferry's connections (any account but the
      // customers' and the test's root) names another customer's database or takes a global lock.
      const customers = new Set(['root', BLOG_ACCOUNT.user, ...CUSTOMER_DBS.map((d) => d.user)]);
      const logged = await generalLog(origin);
      const ferrys = logged.filter((s) => s.account !== '' && !customers.has(s.account.split('@')[0]!));
      assert.ok(
        ferrys.some((s) => s.argument.includes(h.wpDb.name)),
        `Ferry's connections are in the origin's general log (${new Set(ferrys.map((s) => s.account)).size} accounts)`,
      );
      const touching = ferrys.filter((s) =>
        CUSTOMER_DBS.some((d) => new RegExp(`\\b${d.name}\\b`).test(s.argument)),
      );
      assert.deepEqual(touching, [], "no statement of Ferry's names another customer's database");
      const locks = ferrys.filter((s) =>
        /\b(FLUSH\s+TABLES\s+WITH\s+READ\s+LOCK|LOCK\s+TABLES?)\b/i.test(s.argument),
      );
      assert.deepEqual(locks, [], 'Ferry took no lock another customer would wait on');

      // Clean-up: the migration user gone, no replication connection left.
      assert.deepEqual(
        await accounts(origin),
        before.accounts,
        "the origin's accounts are as before the move",
      );
      assert.deepEqual(
        await replicationConnections(target),
        [],
        'no replication connection left on the target',
      );
      const filters = (await h.target.exec('ls', ['-1', target.optionDir!])).stdout.trim();
      assert.equal(filters, '', "no channel filter file left in the target's MariaDB option folder");

      // The origin's copy is a frozen backup: its user may read it, not write it; the target's may.
      const grants = await grantsOf(origin, BLOG_ACCOUNT.user, BLOG_ACCOUNT.host);
      const writable = grants.filter((g) => g.includes(`\`${h.wpDb.name}\``) && WRITE_PRIVILEGE.test(g));
      assert.deepEqual(
        writable,
        [],
        `the blog's user keeps no write privilege on the origin: ${grants.join(' | ')}`,
      );
      const blogLogin = {
        user: h.wpDb.user,
        password: h.wpDb.password,
        database: h.wpDb.name,
        table: 'wp_options',
      };
      assert.match(
        (await tryNoopWrite(h.origin, origin, blogLogin)) ?? 'allowed',
        /command denied/i,
        "a write as the blog's user is refused on the origin",
      );
      assert.equal(await tryNoopWrite(h.target, target, blogLogin), null, 'and allowed on the target');

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
