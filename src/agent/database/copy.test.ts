/**
 * Prerequisites and the initial copy against private MariaDB servers: each unmet prerequisite is
 * its own code with what to do; the copy reads only the site's database, takes no lock another
 * customer would wait on, and leaves nothing behind on the target when it fails.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isFerryError } from '../../common/errors.js';
import { adminEndpoint, mariadbInstalled, startMariaDbs, type MariaDbServer } from '../../../test/mariadb.js';
import {
  Db,
  checkOrigin,
  checkReach,
  checkTarget,
  copyDatabases,
  createMigrationUser,
  databaseSizes,
  readSiteAccounts,
  throwIfProblems,
  type DbEndpoint,
} from './index.js';

const skip = mariadbInstalled ? false : 'MariaDB (mariadb-server) is not installed';

describe('prerequisites and the initial copy', { skip }, () => {
  let origin: MariaDbServer;
  let target: MariaDbServer;
  let o: Db;
  let t: Db;
  const mig = { user: 'ferry_m2', host: '127.0.0.1', password: 'mig-pw-Q1' };
  let asMig: DbEndpoint;

  before(async () => {
    [origin, target] = await startMariaDbs([
      { address: '127.0.77.3', serverId: 3, tls: true },
      // The loader reads the password from an option file: `#`, quotes, `;`, a backslash and a trailing space stay.
      { address: '127.0.77.4', serverId: 4, binlog: false, adminPassword: `t#"x\\y; z' ` },
    ]);
    origin.sql(
      'CREATE DATABASE wp; CREATE TABLE wp.posts(id INT PRIMARY KEY AUTO_INCREMENT, body LONGTEXT) ENGINE=InnoDB;' +
        " INSERT INTO wp.posts(body) VALUES ('hello'), (REPEAT('x', 2000000));" +
        ' CREATE DATABASE shop; CREATE TABLE shop.orders(id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO shop.orders VALUES (1),(2);' +
        ' CREATE TABLE shop.visits(id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO shop.visits VALUES (1);' +
        " CREATE USER 'wp'@'localhost' IDENTIFIED BY 'wp-pw'; GRANT SELECT, INSERT, UPDATE, DELETE ON wp.* TO 'wp'@'localhost';" +
        " CREATE USER 'root2'@'localhost' IDENTIFIED BY 'r'; GRANT ALL ON *.* TO 'root2'@'localhost';",
    );
    o = await Db.open(adminEndpoint(origin));
    t = await Db.open(adminEndpoint(target));
    await createMigrationUser(o, mig, ['wp']);
    asMig = {
      host: origin.address,
      port: origin.port,
      user: mig.user,
      password: mig.password,
      caPem: origin.caPem!,
    };
  });

  after(async () => {
    await o?.close();
    await t?.close();
    await Promise.all([origin?.stop(), target?.stop()]);
  });

  test('a ready origin and target have no problem', async () => {
    const oc = await checkOrigin(o, ['wp']);
    assert.deepEqual(oc.problems, []);
    assert.equal(oc.info.mariadb, true);
    assert.equal(oc.info.tls, true);
    const sizes = await databaseSizes(o, ['wp', 'nope']);
    assert.ok(sizes.get('wp')! >= 2_000_000, `wp holds a 2 MB row: ${sizes.get('wp')}`);
    assert.equal(sizes.get('nope'), 0);
    const tc = await checkTarget(t, oc.info, ['wp'], [{ user: 'wp', host: 'localhost' }]);
    assert.deepEqual(tc.problems, []);
    await checkReach(asMig);
  });

  test('binlog off, STATEMENT format, strict mode off, a missing database: each its code and what to do', async () => {
    const off = await checkOrigin(t, []);
    assert.deepEqual(
      off.problems.map((p) => p.code),
      ['DB_BINLOG_OFF'],
    );
    assert.match(off.problems[0]!.fix, /log_bin/);
    await o.query("SET GLOBAL binlog_format = 'STATEMENT'");
    await o.query('SET GLOBAL gtid_strict_mode = OFF');
    try {
      const c = await checkOrigin(o, ['wp', 'nope']);
      assert.deepEqual(
        c.problems.map((p) => p.code),
        ['DB_BINLOG_FORMAT', 'DB_GTID', 'DB_MISSING'],
      );
      assert.match(c.problems[2]!.message, /nope/);
      assert.throws(
        () => throwIfProblems(c.problems),
        (e) => {
          assert.ok(isFerryError(e, 'DB_BINLOG_FORMAT'));
          assert.match(
            (e as Error).message,
            /What to do: .*binlog_format=ROW.*and 2 more: DB_GTID, DB_MISSING/,
          );
          return true;
        },
      );
    } finally {
      await o.query("SET GLOBAL binlog_format = 'ROW'");
      await o.query('SET GLOBAL gtid_strict_mode = ON');
    }
  });

  test('target: older version, shared GTID domain or server_id, existing database or user are refused', async () => {
    const oc = await checkOrigin(o, ['wp']);
    const newer = {
      ...oc.info,
      version: '99.1.0-MariaDB',
      versionParts: [99, 1, 0] as [number, number, number],
    };
    assert.deepEqual(
      (await checkTarget(t, newer, [])).problems.map((p) => p.code),
      ['DB_VERSION'],
    );
    const mysql = {
      ...oc.info,
      version: '8.0.36',
      versionParts: [8, 0, 36] as [number, number, number],
      mariadb: false,
    };
    assert.deepEqual((await checkOrigin(o, [])).problems, []);
    assert.deepEqual(
      (await checkTarget(t, mysql, [])).problems,
      [],
      'an older MySQL origin version alone is fine for the target',
    );
    await t.query(`SET GLOBAL gtid_domain_id = ${oc.info.gtidDomainId}`);
    await t.query(`SET GLOBAL server_id = ${oc.info.serverId}`);
    await t.query('CREATE DATABASE wp');
    await t.query("CREATE USER 'wp'@'localhost' IDENTIFIED BY 'someone else'");
    try {
      const c = await checkTarget(t, oc.info, ['wp'], [{ user: 'wp', host: 'localhost' }]);
      assert.deepEqual(
        c.problems.map((p) => p.code),
        ['DB_GTID', 'DB_GTID', 'DB_EXISTS', 'DB_EXISTS'],
      );
      // The copy refuses too, and leaves the target's own database alone.
      await t.query('CREATE TABLE wp.mine(id INT)');
      await assert.rejects(
        copyDatabases({ origin: asMig, target: adminEndpoint(target), targetDb: t, databases: ['wp'] }),
        (e) => isFerryError(e, 'DB_EXISTS'),
      );
      assert.deepEqual(await t.query('SHOW TABLES FROM wp'), [{ Tables_in_wp: 'mine' }]);
    } finally {
      await t.query('SET GLOBAL gtid_domain_id = 4');
      await t.query('SET GLOBAL server_id = 4');
      await t.query('DROP DATABASE wp');
      await t.query("DROP USER 'wp'@'localhost'");
    }
  });

  test('the target cannot reach the origin: wrong password, wrong port, no TLS', async () => {
    await assert.rejects(checkReach({ ...asMig, password: 'wrong' }), (e) => {
      assert.ok(isFerryError(e, 'DB_AUTH'), String(e));
      assert.match((e as Error).message, /Access denied for user 'ferry_m2'/);
      assert.doesNotMatch((e as Error).message, /mig-pw-Q1|wrong/);
      return true;
    });
    const closed = await Db.open(adminEndpoint(origin));
    await closed.close();
    await assert.rejects(checkReach({ ...asMig, port: 1 }), (e) => isFerryError(e, 'DB_UNREACHABLE'));
    const { caPem: _caPem, ...plain } = asMig;
    await assert.rejects(
      checkReach(plain),
      (e) => isFerryError(e, 'DB_AUTH'),
      'REQUIRE SSL refuses a plain connection',
    );
  });

  test("the copy reads the site's database only and waits on no other customer's lock or long statement", async () => {
    await o.query("SET GLOBAL log_output = 'TABLE'");
    await o.query('SET GLOBAL general_log = ON');
    const locker = await Db.open(adminEndpoint(origin));
    const sleeper = await Db.open(adminEndpoint(origin));
    const writer = await Db.open(adminEndpoint(origin));
    await locker.query('LOCK TABLES shop.orders WRITE');
    const long = sleeper
      .query('SELECT SLEEP(20), COUNT(*) FROM shop.visits FOR UPDATE')
      .catch(() => undefined);
    await writer.query('BEGIN');
    await writer.query("INSERT INTO wp.posts(body) VALUES ('uncommitted')");
    try {
      const started = Date.now();
      const copy = await copyDatabases({
        origin: asMig,
        target: adminEndpoint(target),
        targetDb: t,
        databases: ['wp'],
      });
      assert.ok(Date.now() - started < 10_000, `the copy took ${Date.now() - started} ms`);
      assert.match(copy.gtidPos, /^3-3-\d+$/);
      assert.deepEqual(
        (await t.query('SELECT id, LENGTH(body) AS n FROM wp.posts ORDER BY id')).map((r) => Number(r.n)),
        [5, 2000000],
        'the snapshot: committed rows only',
      );
      const logged = (
        await o.query<{ argument: string }>(
          "SELECT CONVERT(argument USING utf8mb4) AS argument FROM mysql.general_log WHERE user_host LIKE 'ferry\\_m2[%'",
        )
      ).map((r) => r.argument);
      assert.ok(
        logged.some((q) => /wp/.test(q)),
        'the dump is in the log',
      );
      assert.deepEqual(
        logged.filter((q) => /shop|FLUSH TABLES|(^|[^N])LOCK TABLES/i.test(q)),
        [],
      );
    } finally {
      await o.query('SET GLOBAL general_log = OFF');
      await writer.query('ROLLBACK');
      await locker.query('UNLOCK TABLES');
      await o.query('KILL QUERY ?', [sleeper.threadId]).catch(() => undefined);
      await long;
      await Promise.all([locker.close(), sleeper.close(), writer.close()]);
      await t.query('DROP DATABASE IF EXISTS wp');
    }
  });

  test('bad input: wrong credentials, a missing database, a restore failing half-way leaves nothing on the target', async () => {
    await assert.rejects(
      copyDatabases({
        origin: { ...asMig, password: 'nope' },
        target: adminEndpoint(target),
        targetDb: t,
        databases: ['wp'],
      }),
      (e) =>
        isFerryError(e, 'DB_AUTH') &&
        /Access denied/.test((e as Error).message) &&
        !/nope/.test((e as Error).message),
    );
    await assert.rejects(
      copyDatabases({ origin: asMig, target: adminEndpoint(target), targetDb: t, databases: ['gone'] }),
      // the migration user has grants on the site's databases only, so the server answers "access denied"
      (e) => isFerryError(e, 'DB_AUTH') && /database 'gone'/.test((e as Error).message),
    );
    // The target refuses the 2 MB row: the database and the first rows were made, then the load fails.
    await t.query('SET GLOBAL max_allowed_packet = 1048576');
    try {
      await assert.rejects(
        copyDatabases({ origin: asMig, target: adminEndpoint(target), targetDb: t, databases: ['wp'] }),
        (e) => {
          assert.ok(isFerryError(e, 'DB_COPY_FAILED'), String(e));
          assert.match(
            (e as Error).message,
            /restoring on the target failed: .*(packet|max_allowed_packet|gone away)/i,
          );
          return true;
        },
      );
      assert.deepEqual(await t.query("SHOW DATABASES LIKE 'wp'"), [], 'the partial copy is removed');
    } finally {
      await t.query('SET GLOBAL max_allowed_packet = 16777216');
    }
    assert.deepEqual(
      await readSiteAccounts(o, ['wp'], { excludeUsers: [mig.user] }).then((a) =>
        a.map((x) => [x.user, x.globalPrivileges]),
      ),
      [['wp', false]],
    );
    const all = await readSiteAccounts(o, ['wp'], { users: ['root2'], excludeUsers: [mig.user] });
    assert.deepEqual(
      all.map((x) => [x.user, x.globalPrivileges]),
      [
        ['root2', true],
        ['wp', false],
      ],
    );
  });
});
