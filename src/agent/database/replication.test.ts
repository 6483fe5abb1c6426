/**
 * Replication and the cut-over primitives against two private MariaDB servers (the origin with a
 * certificate): the migration user over TLS, the copy's GTID position, the named channel filtered
 * to the site's database, lag, the bounded wait, freezing the site's writes on the origin, the
 * reverse channel of a rollback, and a replication error in the middle.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isFerryError } from '../../common/errors.js';
import { adminEndpoint, mariadbInstalled, startMariaDbs, type MariaDbServer } from '../../../test/mariadb.js';
import {
  Db,
  channelConfigPath,
  channelLag,
  channelName,
  channelStatus,
  copyDatabases,
  createMigrationUser,
  createSiteAccounts,
  dropMigrationUser,
  freezeSiteWrites,
  readBinlogPos,
  readSiteAccounts,
  removeChannel,
  startChannel,
  thawSiteWrites,
  waitForPosition,
  type DbEndpoint,
  type SiteAccount,
} from './index.js';

const skip = mariadbInstalled ? false : 'MariaDB (mariadb-server) is not installed';

describe('replicating a site database', { skip }, () => {
  let origin: MariaDbServer;
  let target: MariaDbServer;
  let o: Db;
  let t: Db;
  const repl = { user: 'ferry_m1', host: '127.0.0.1', password: 'repl-pw-Zq8' };
  const channel = channelName('m-1');
  let accounts: SiteAccount[];

  before(async () => {
    [origin, target] = await startMariaDbs([
      { address: '127.0.77.1', serverId: 1, tls: true },
      { address: '127.0.77.2', serverId: 2, tls: true },
    ]);
    origin.sql(
      'CREATE DATABASE wp; CREATE TABLE wp.comments(id INT PRIMARY KEY AUTO_INCREMENT, body TEXT) ENGINE=InnoDB;' +
        " INSERT INTO wp.comments(body) VALUES ('first'),('second');" +
        ' CREATE DATABASE shop; CREATE TABLE shop.orders(id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO shop.orders VALUES (1);' +
        " CREATE USER 'wp'@'localhost' IDENTIFIED BY 'wp-pw'; GRANT ALL ON wp.* TO 'wp'@'localhost';" +
        " CREATE USER 'shopper'@'localhost' IDENTIFIED BY 'shop-pw'; GRANT ALL ON shop.* TO 'shopper'@'localhost';",
    );
    o = await Db.open(adminEndpoint(origin));
    t = await Db.open(adminEndpoint(target));
  });

  after(async () => {
    await o?.close();
    await t?.close();
    await Promise.all([origin?.stop(), target?.stop()]);
  });

  test('copy with the GTID position, users recreated, channel over TLS catches up writes to the site only', async () => {
    const tls = await createMigrationUser(o, repl, ['wp']);
    assert.equal(tls, true, 'the origin has a certificate, so the migration user requires TLS');
    // Without TLS the migration user is refused.
    await assert.rejects(
      Db.open({ host: origin.address, port: origin.port, user: repl.user, password: repl.password }),
      (e) => isFerryError(e, 'DB_AUTH'),
    );
    const originEp: DbEndpoint = {
      host: origin.address,
      port: origin.port,
      user: repl.user,
      password: repl.password,
      caPem: origin.caPem!,
    };
    const copy = await copyDatabases({
      origin: originEp,
      target: adminEndpoint(target),
      targetDb: t,
      databases: ['wp'],
    });
    assert.match(copy.gtidPos, /^1-1-\d+$/);
    assert.deepEqual(await t.query('SELECT body FROM wp.comments ORDER BY id'), [
      { body: 'first' },
      { body: 'second' },
    ]);
    assert.deepEqual(await t.query("SHOW DATABASES LIKE 'shop'"), [], 'other databases are not copied');

    accounts = await readSiteAccounts(o, ['wp'], { users: ['wp'], excludeUsers: [repl.user] });
    assert.deepEqual(
      accounts.map((a) => `${a.user}@${a.host}`),
      ['wp@localhost'],
    );
    await createSiteAccounts(t, accounts);
    const asWp = await Db.open({ socket: target.socket, user: 'wp', password: 'wp-pw' }, 'wp');
    assert.equal(
      Number(await asWp.value('SELECT COUNT(*) FROM comments')),
      2,
      'the site user logs in on the target with its password',
    );
    // Until the switch the target's copy is written by replication only.
    await freezeSiteWrites(t, accounts);
    await assert.rejects(asWp.query("INSERT INTO comments(body) VALUES ('too early')"));
    await asWp.close();

    // Writes after the snapshot, to the site's database and to another one.
    origin.sql("INSERT INTO wp.comments(body) VALUES ('after dump'); INSERT INTO shop.orders VALUES (2);");
    const caFile = join(target.dir, 'origin-ca.pem');
    writeFileSync(caFile, origin.caPem!);
    await startChannel(
      t,
      channel,
      { host: origin.address, port: origin.port, user: repl.user, password: repl.password, caFile },
      ['wp'],
      copy.gtidPos,
      { configDir: target.confDir },
    );
    const pos = await readBinlogPos(o);
    await waitForPosition(t, channel, pos, 20_000);
    assert.deepEqual(
      (await t.query('SELECT body FROM wp.comments ORDER BY id')).map((r) => r.body),
      ['first', 'second', 'after dump'],
    );
    assert.deepEqual(
      await t.query("SHOW DATABASES LIKE 'shop'"),
      [],
      "the other customer's writes are filtered out",
    );
    const st = await channelStatus(t, channel);
    assert.equal(st.ioRunning, 'Yes');
    const ssl = await t.query(`SHOW SLAVE '${channel}' STATUS`);
    assert.equal(ssl[0]?.Master_SSL_Allowed, 'Yes', 'the channel uses TLS');
    const lag = await channelLag(o, t, channel);
    assert.equal(lag.transactions, 0);
    assert.equal(lag.seconds, 0);
  });

  test('the filter and the channel survive a restart of the target', async () => {
    assert.match(
      readFileSync(channelConfigPath(target.confDir, channel), 'utf8'),
      /ferry_m_1\.replicate_do_db=wp/,
    );
    await t.close();
    await target.restart();
    t = await Db.open(adminEndpoint(target));
    assert.equal(await t.value(`SELECT @@${channel}.replicate_do_db`), 'wp');
    origin.sql(
      "INSERT INTO shop.orders VALUES (10); INSERT INTO wp.comments(body) VALUES ('after restart');",
    );
    await waitForPosition(t, channel, await readBinlogPos(o), 20_000);
    assert.equal(Number(await t.value("SELECT COUNT(*) FROM wp.comments WHERE body='after restart'")), 1);
    assert.deepEqual(await t.query("SHOW DATABASES LIKE 'shop'"), []);
  });

  test('the bounded wait times out while the target is held up, and the lag counts the missing writes', async () => {
    // Another session on the target locks the table: the channel runs but cannot apply.
    const blocker = await Db.open(adminEndpoint(target));
    await blocker.query('LOCK TABLES wp.comments WRITE');
    origin.sql(
      "INSERT INTO wp.comments(body) VALUES ('held 1'),('held 2'); INSERT INTO wp.comments(body) VALUES ('held 3');",
    );
    const pos = await readBinlogPos(o);
    const started = Date.now();
    await assert.rejects(waitForPosition(t, channel, pos, 500), (e) => isFerryError(e, 'DB_CATCHUP_TIMEOUT'));
    await assert.rejects(waitForPosition(t, channel, 'garbage', 500), (e) => isFerryError(e, 'DB_QUERY'));
    const waited = Date.now() - started;
    assert.ok(waited >= 500 && waited < 5000, `waited ${waited} ms`);
    assert.equal((await channelLag(o, t, channel)).transactions, 2);
    await blocker.query('UNLOCK TABLES');
    await blocker.close();
    await waitForPosition(t, channel, pos, 20_000);
    assert.equal((await channelLag(o, t, channel)).transactions, 0);
  });

  test("a replication error in the middle stops the wait with the server's own message", async () => {
    // A row written on the target collides with the origin's next insert.
    const next = Number(await o.value('SELECT MAX(id) FROM wp.comments')) + 1;
    await t.query('SET SESSION sql_log_bin = 0');
    await t.query('INSERT INTO wp.comments(id, body) VALUES (?, ?)', [next, 'stray']);
    origin.sql(`INSERT INTO wp.comments(id, body) VALUES (${next}, 'origin')`);
    await assert.rejects(waitForPosition(t, channel, await readBinlogPos(o), 20_000), (e) => {
      assert.ok(isFerryError(e, 'DB_REPLICATION'), String(e));
      assert.match((e as Error).message, /Duplicate entry/);
      return true;
    });
    await t.query('DELETE FROM wp.comments WHERE id = ?', [next]);
    await t.query(`START SLAVE '${channel}'`);
    await waitForPosition(t, channel, await readBinlogPos(o), 20_000);
    assert.equal(await t.value('SELECT body FROM wp.comments WHERE id = ?', [next]), 'origin');
  });

  test("freezing the site's writes on the origin: its user reads but cannot write, its sessions are closed, other customers write on", async () => {
    const session = await Db.open({ socket: origin.socket, user: 'wp', password: 'wp-pw' }, 'wp');
    const shop = await Db.open({ socket: origin.socket, user: 'shopper', password: 'shop-pw' }, 'shop');
    const killed = await freezeSiteWrites(o, accounts);
    assert.equal(killed, 1, "the site user's open session is closed");
    await assert.rejects(session.query('SELECT 1'));
    await session.close();
    const fresh = await Db.open({ socket: origin.socket, user: 'wp', password: 'wp-pw' }, 'wp');
    assert.ok(Number(await fresh.value('SELECT COUNT(*) FROM comments')) >= 3, 'still readable');
    await assert.rejects(fresh.query("INSERT INTO comments(body) VALUES ('late')"), /denied/);
    await shop.query('INSERT INTO orders VALUES (3)');
    assert.equal(Number(await o.value("SELECT COUNT(*) FROM wp.comments WHERE body='late'")), 0);
    assert.equal(await freezeSiteWrites(o, accounts), 1, 'freezing again is harmless');
    await fresh.close().catch(() => undefined);
    await thawSiteWrites(o, accounts);
    const back = await Db.open({ socket: origin.socket, user: 'wp', password: 'wp-pw' }, 'wp');
    await back.query("INSERT INTO comments(body) VALUES ('after thaw')");
    await back.close();
    await shop.close();
  });

  test('freeze under continuous writes: every acknowledged write reaches the target once, none lands after the position', async () => {
    const acked: string[] = [];
    let refused = 0;
    let stop = false;
    const writer = (async () => {
      let db: Db | undefined;
      for (let n = 0; !stop; n++) {
        try {
          db ??= await Db.open({ socket: origin.socket, user: 'wp', password: 'wp-pw' }, 'wp');
          await db.query('INSERT INTO comments(body) VALUES (?)', [`w-${n}`]);
          acked.push(`w-${n}`);
        } catch {
          refused++;
          await db?.close().catch(() => undefined);
          db = undefined;
          await new Promise((r) => setTimeout(r, 5));
        }
      }
      await db?.close().catch(() => undefined);
    })();
    await new Promise((r) => setTimeout(r, 300));
    await freezeSiteWrites(o, accounts);
    const pos = await readBinlogPos(o);
    const ackedAtFreeze = acked.length;
    await waitForPosition(t, channel, pos, 20_000);
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await writer;
    assert.ok(ackedAtFreeze > 0, 'writes were made before the freeze');
    assert.equal(acked.length, ackedAtFreeze, 'no write is acknowledged after the freeze');
    assert.ok(refused > 0, 'writes after the freeze are refused');
    assert.equal(await readBinlogPos(o), pos, "the origin's binlog has no write after the position");
    const onTarget = (
      await t.query<{ body: string }>("SELECT body FROM wp.comments WHERE body LIKE 'w-%' ORDER BY id")
    ).map((r) => r.body);
    const onOrigin = (
      await o.query<{ body: string }>("SELECT body FROM wp.comments WHERE body LIKE 'w-%' ORDER BY id")
    ).map((r) => r.body);
    assert.deepEqual(onTarget, onOrigin, 'the same writes on both servers');
    // Each acknowledged write once, in order; at most the statement in flight when its session was
    // killed may be there unacknowledged (committed on both servers alike). The cut-over holds the
    // site's requests before the freeze, so in a migration there is none.
    assert.deepEqual(onTarget.slice(0, acked.length), acked);
    assert.ok(onTarget.length - acked.length <= 1, `${onTarget.length - acked.length} unacknowledged writes`);
    await thawSiteWrites(o, accounts);
  });

  test('cut-over and rollback: final position reached, channel removed, reverse channel brings target writes back', async () => {
    await freezeSiteWrites(o, accounts);
    const pos = await readBinlogPos(o);
    await waitForPosition(t, channel, pos, 20_000);
    await removeChannel(t, channel, { configDir: target.confDir });
    assert.equal(existsSync(channelConfigPath(target.confDir, channel)), false);
    await assert.rejects(
      channelStatus(t, channel),
      (e) => isFerryError(e, 'DB_REPLICATION') && /There is no master connection/.test((e as Error).message),
    );
    await dropMigrationUser(o, repl);
    assert.equal(Number(await o.value("SELECT COUNT(*) FROM mysql.global_priv WHERE User='ferry_m1'")), 0);
    const onOrigin = await o.query('SELECT id, body FROM wp.comments ORDER BY id');
    assert.deepEqual(await t.query('SELECT id, body FROM wp.comments ORDER BY id'), onOrigin);

    // The target is the writer now; reverse channel from the target's position at the switch.
    const switchPos = await readBinlogPos(t);
    const back = { user: 'ferry_m1_back', host: '127.0.0.1', password: 'back-pw-7' };
    await createMigrationUser(t, back, ['wp']);
    await thawSiteWrites(t, accounts);
    const asWp = await Db.open({ socket: target.socket, user: 'wp', password: 'wp-pw' }, 'wp');
    await asWp.query("INSERT INTO comments(body) VALUES ('on target')");
    await asWp.close();
    const caFile = join(origin.dir, 'target-ca.pem');
    writeFileSync(caFile, target.caPem!);
    const rev = channelName('m-1_back');
    await startChannel(
      o,
      rev,
      { host: target.address, port: target.port, user: back.user, password: back.password, caFile },
      ['wp'],
      switchPos,
    );
    await waitForPosition(o, rev, await readBinlogPos(t), 20_000);
    assert.equal(Number(await o.value("SELECT COUNT(*) FROM wp.comments WHERE body='on target'")), 1);
    await removeChannel(o, rev);
    await dropMigrationUser(t, back);
    await thawSiteWrites(o, accounts);
  });

  test('a failed CHANGE MASTER never carries the password, in the message or the cause', async () => {
    const secret = 'never-shown-Xy9';
    const name = channelName('busy');
    const source = { host: origin.address, port: origin.port, user: 'x', password: secret };
    // A second CHANGE MASTER on a running channel is refused by the server.
    await startChannel(t, name, source, ['wp'], await readBinlogPos(o));
    await assert.rejects(startChannel(t, name, source, ['wp'], await readBinlogPos(o)), (e) => {
      assert.ok(isFerryError(e, 'DB_QUERY'), String(e));
      assert.match((e as Error).message, /CHANGE MASTER/);
      const seen = [e, (e as Error).cause].map((x) => String(x) + JSON.stringify(x)).join(' ');
      assert.doesNotMatch(seen, new RegExp(secret));
      return true;
    });
    await removeChannel(t, name);
  });
});
