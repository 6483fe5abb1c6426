/**
 * The agent's database methods through its HTTP API (`HttpHostDriver` → `buildAgentServer` →
 * `HostAgent` → `DatabaseMover`), against two private MariaDB servers with certificates: the
 * whole forward sequence under writes, idempotent repeats and an agent restart, the reverse
 * channel of a rollback, a catch-up that runs out of time, thaw and drop; the admin option file;
 * an agent without one.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { isFerryError } from '../../common/errors.js';
import { waitFor } from '../../common/time.js';
import { mariadbInstalled, startMariaDbs, type MariaDbServer } from '../../../test/mariadb.js';
import { estimateCopyInHoldMs } from '../../migration/ports.js';
import { freePort } from '../../../test/ports.js';
import { HostAgent, type HostAgentOptions } from '../agent.js';
import { HttpHostDriver } from '../client.js';
import { findBinary } from '../../../test/e2e/helpers.js';
import { startAgentApi } from '../../../test/agent-api.js';
import { Db, parseOptionFile, readOptionFile } from './index.js';

/** Whether a server has a replication connection by that name. */
function hasChannel(s: MariaDbServer, name: string): boolean {
  try {
    s.sql(`SHOW SLAVE '${name}' STATUS`);
    return true;
  } catch (e) {
    if (/There is no master connection/.test((e as Error).message)) return false;
    throw e;
  }
}

const TOKEN = 'db-test-token-0123456789abcdef';
const DOMAIN = 'blog.example';
const nginxBin = findBinary('nginx');
const skip = mariadbInstalled ? false : 'MariaDB (mariadb-server) is not installed';

interface Running {
  agent: HostAgent;
  app: FastifyInstance;
  driver: HttpHostDriver;
  dir: string;
  /** Stop the API and the agent; the data dir stays (a restart reuses it). */
  stop(): Promise<void>;
}

async function startAgent(
  id: string,
  sharedIp: string,
  dir: string,
  mariadb?: HostAgentOptions['mariadb'],
  more: Partial<HostAgentOptions> = {},
): Promise<Running> {
  const a = await startAgentApi({
    id,
    sharedIp,
    dataDir: dir,
    token: TOKEN,
    driver: { timeoutMs: 30_000, attempts: 1 },
    agent: { ...(mariadb ? { mariadb } : {}), ...more },
  });
  return { ...a, dir };
}

/** The option file an agent reads its administrator account from (the password quoted, with a `#`). */
async function defaultsFile(dir: string, s: MariaDbServer): Promise<string> {
  const f = join(dir, 'admin.cnf');
  await writeFile(
    f,
    `# admin of ${s.address}\n[mysqld]\nuser=mysql\n[client]\nuser = ${s.adminUser}\npassword = "${s.adminPassword}"\nsocket = ${s.socket}\n`,
    { mode: 0o600 },
  );
  return f;
}

describe('the MariaDB option file', () => {
  test('reads the [client] account: quoted values keep #, later client sections override, localhost is the socket', () => {
    const ep = parseOptionFile(
      '[mysqld]\nuser = mysql\n\n[client]\nuser=root\npassword = "pa#ss\\"w0rd" # the admin\nhost = localhost\n' +
        'ssl\n[mariadb-client]\nsocket=/tmp/x.sock\n',
      'a.cnf',
    );
    assert.deepEqual(ep, { user: 'root', password: 'pa#ss"w0rd', socket: '/tmp/x.sock' });
    const tcp = parseOptionFile(
      '[client]\nuser=admin\npassword=s3cret # comment\nhost=192.0.2.7\nport=3307\n',
      'b.cnf',
    );
    assert.deepEqual(tcp, { user: 'admin', password: 's3cret', host: '192.0.2.7', port: 3307 });
    assert.deepEqual(parseOptionFile('[client]\nuser=debian-sys-maint\n', 'c.cnf'), {
      user: 'debian-sys-maint',
      password: '',
      socket: '/run/mysqld/mysqld.sock',
    });
  });

  test('a bad file is refused with its line, never with the password', async () => {
    const secret = 'Very-Secret-Pw-42';
    for (const [text, why] of [
      [`[client]\nuser=root\npassword="${secret}\n`, /a\.cnf:3: the value of password has no closing quote/],
      [`[client]\npassword=${secret}\n`, /no user in a \[client\] section/],
      [
        `[client]\nuser=root\npassword=${secret}\n!includedir /etc/mysql/conf.d/\n`,
        /a\.cnf:4: !includedir is not followed/,
      ],
      [`[client\nuser=root\npassword=${secret}\n`, /a\.cnf:1: a section header needs a closing \]/],
      [`[client]\nuser=root\npassword=${secret}\nport=33o6\n`, /port is not a port number/],
    ] as const) {
      assert.throws(
        () => parseOptionFile(text, 'a.cnf'),
        (e: unknown) =>
          isFerryError(e, 'AGENT_OPTIONS') && why.test(e.message) && !e.message.includes(secret),
      );
    }
    await assert.rejects(
      readOptionFile('/nonexistent/ferry-admin.cnf'),
      (e: unknown) =>
        isFerryError(e, 'AGENT_OPTIONS') &&
        /cannot read the MariaDB option file \/nonexistent\/ferry-admin\.cnf: ENOENT/.test(e.message),
    );
  });

  test('an agent whose option file cannot be read does not start', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-dbagent-bad-'));
    try {
      await assert.rejects(
        startAgent('bad', '127.0.78.9', dir, { defaultsFile: join(dir, 'missing.cnf') }),
        (e: unknown) => isFerryError(e, 'AGENT_OPTIONS'),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('an agent without --mariadb-defaults-file', () => {
  let a: Running;
  before(async () => {
    a = await startAgent('plain', '127.0.78.3', await mkdtemp(join(tmpdir(), 'ferry-dbagent-plain-')));
  });
  after(async () => {
    await a?.stop();
    if (a) await rm(a.dir, { recursive: true, force: true });
  });

  test('plans a site with no local database as empty, and answers DB_NOT_CONFIGURED for anything else', async () => {
    assert.equal((await a.driver.info()).mariadb, null);
    assert.deepEqual(await a.driver.planDatabases(DOMAIN), { move: [], leftInPlace: [] });
    const remote = await a.driver.planDatabases(DOMAIN, [{ name: 'shared', host: 'db.example:3306' }]);
    assert.deepEqual(remote.move, []);
    assert.equal(remote.leftInPlace[0]?.name, 'shared');
    assert.match(remote.leftInPlace[0]!.reason, /left in place/);
    const notConfigured = (e: unknown) =>
      isFerryError(e, 'DB_NOT_CONFIGURED') && /--mariadb-defaults-file/.test(e.message);
    await assert.rejects(a.driver.planDatabases(DOMAIN, [{ name: 'wp' }]), notConfigured);
    await assert.rejects(a.driver.checkDatabases(DOMAIN, { move: [], leftInPlace: [] }), notConfigured);
    await assert.rejects(a.driver.databaseLag('m1'), notConfigured);
    await assert.rejects(a.driver.freezeDatabases('m1', DOMAIN), notConfigured);
    await assert.rejects(a.driver.closeDatabaseSource('m1'), notConfigured);
  });

  test('the routes that carry a replication password refuse plain HTTP from another host', async () => {
    const source = { host: '192.0.2.1', port: 3306, user: 'ferry_m1', password: 'x'.repeat(20) };
    const plan = { move: [], leftInPlace: [] };
    for (const [method, url, payload] of [
      ['PUT', '/v1/database-migrations/m1/source', { domain: DOMAIN, replicaAddress: '192.0.2.2' }],
      ['PUT', '/v1/database-migrations/m1/copy', { domain: DOMAIN, source, plan }],
      ['PUT', '/v1/database-migrations/m1/channel', { domain: DOMAIN, source, position: '1-1-1' }],
    ] as const) {
      const res = await a.app.inject({
        method,
        url,
        payload,
        headers: { authorization: `Bearer ${TOKEN}` },
        remoteAddress: '192.0.2.10',
      });
      assert.equal(res.statusCode, 409, url);
      assert.equal(res.json().error.code, 'SECRETS_NEED_TLS');
      assert.match(res.json().error.message, /replication user's password/);
    }
  });
});

describe("moving a site's databases through the agents' API", { skip }, () => {
  let origin: MariaDbServer;
  let target: MariaDbServer;
  let o: Running;
  let t: Running;
  const stopWriter = { stop: false };

  const siteDb = (s: MariaDbServer, user = 'wp', password = 'wp-pw', db = 'wp') =>
    Db.open({ socket: s.socket, user, password }, db);

  const mariadbOf = async (dir: string, s: MariaDbServer): Promise<HostAgentOptions['mariadb']> => ({
    defaultsFile: await defaultsFile(dir, s),
    // Both servers listen on 127.0.0.1 (their own ports): the address each connects from.
    address: '127.0.0.1',
    port: s.port,
    caFile: s.caFile!,
    optionDir: s.confDir,
  });

  before(async () => {
    [origin, target] = await startMariaDbs([
      { address: '127.0.0.1', serverId: 31, tls: true },
      { address: '127.0.0.1', serverId: 32, tls: true },
    ]);
    origin.sql(
      'CREATE DATABASE wp; CREATE TABLE wp.comments(id INT PRIMARY KEY AUTO_INCREMENT, body TEXT) ENGINE=InnoDB;' +
        " INSERT INTO wp.comments(body) VALUES ('first'),('second');" +
        " CREATE USER 'wp'@'localhost' IDENTIFIED BY 'wp-pw'; GRANT ALL ON wp.* TO 'wp'@'localhost';" +
        ' CREATE DATABASE wp2; CREATE TABLE wp2.posts(id INT PRIMARY KEY AUTO_INCREMENT, body TEXT) ENGINE=InnoDB;' +
        " CREATE USER 'wp2'@'localhost' IDENTIFIED BY 'wp2-pw'; GRANT ALL ON wp2.* TO 'wp2'@'localhost';" +
        ' CREATE DATABASE shop; CREATE TABLE shop.orders(id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO shop.orders VALUES (1);',
    );
    const od = await mkdtemp(join(tmpdir(), 'ferry-dbagent-origin-'));
    const td = await mkdtemp(join(tmpdir(), 'ferry-dbagent-target-'));
    o = await startAgent('origin', '127.0.78.1', od, await mariadbOf(od, origin));
    t = await startAgent('target', '127.0.78.2', td, await mariadbOf(td, target));
  });

  after(async () => {
    stopWriter.stop = true;
    await o?.stop();
    await t?.stop();
    await Promise.all([origin?.stop(), target?.stop()]);
    for (const r of [o, t]) if (r) await rm(r.dir, { recursive: true, force: true });
  });

  test('plan, check, open, copy under writes, lag, freeze, take-over, restart, reverse channel, close', async () => {
    const plan = await o.driver.planDatabases(DOMAIN, [
      { name: 'wp', users: ['wp'] },
      { name: 'ext', host: '192.0.2.50' },
    ]);
    assert.equal(plan.move.length, 1);
    assert.equal(plan.move[0]!.name, 'wp');
    assert.deepEqual(plan.move[0]!.users, ['wp']);
    assert.ok(plan.move[0]!.bytes > 0, 'the plan says how big the database is');
    assert.equal(plan.leftInPlace[0]?.name, 'ext');
    assert.match(plan.originVersion ?? '', /MariaDB/);
    const check = await t.driver.checkDatabases(DOMAIN, plan);
    assert.equal(check.replicaAddress, '127.0.0.1');

    // The same declarations as the plan's (the orchestrator passes the site's ferry.yaml entry).
    const declared = [{ name: 'wp', users: ['wp'] }];
    const source = await o.driver.openDatabaseSource('m1', DOMAIN, check.replicaAddress, declared);
    assert.equal(source.host, '127.0.0.1');
    assert.equal(source.port, origin.port);
    assert.equal(source.caPem, origin.caPem);
    const again = await o.driver.openDatabaseSource('m1', DOMAIN, check.replicaAddress, declared);
    assert.equal(
      again.password,
      source.password,
      'a renewed source keeps the password a running channel uses',
    );

    // The site writes all along: comments acknowledged by the origin (ids chosen here).
    const acked: number[] = [1, 2];
    let writerFailed: unknown;
    const writer = (async () => {
      const w = await siteDb(origin);
      try {
        for (let id = 100; !stopWriter.stop; id++) {
          await w.query('INSERT INTO comments(id, body) VALUES (?, ?)', [id, `c${id}`]);
          acked.push(id);
          await sleep(15);
        }
      } finally {
        await w.close();
      }
    })().catch((e: unknown) => (writerFailed = e));
    await sleep(100);
    const copy = await t.driver.copyDatabases('m1', DOMAIN, source, plan);
    assert.ok(copy.bytes > 0);
    assert.deepEqual(
      await t.driver.copyDatabases('m1', DOMAIN, source, plan),
      copy,
      'a repeated copy answers the first',
    );
    await sleep(300);
    const lag = await t.driver.databaseLag('m1');
    assert.equal(lag.error, '');
    assert.equal(typeof lag.transactions, 'number');

    // Until the take-over only replication writes the target's copy.
    const early = await siteDb(target);
    await assert.rejects(early.query("INSERT INTO comments(body) VALUES ('too early')"));
    await early.close();
    assert.equal(
      target.sql("SHOW DATABASES LIKE 'shop'").trim(),
      '',
      "another customer's database is not copied",
    );

    assert.equal(writerFailed, undefined, 'the site wrote without error until the freeze');
    // The cut-over: the site's writes stop on the origin (its open session is closed by the freeze).
    const frozen = await o.driver.freezeDatabases('m1', DOMAIN);
    stopWriter.stop = true;
    await writer; // its session was killed by the freeze (writerFailed), or it saw the stop first
    assert.match(frozen.position, /^31-31-\d+$/);
    const late = await siteDb(origin);
    await assert.rejects(late.query("INSERT INTO comments(body) VALUES ('after freeze')"), /denied/);
    await late.close();
    assert.deepEqual(await o.driver.freezeDatabases('m1', DOMAIN), frozen, 'a second freeze changes nothing');

    const took = await t.driver.takeOverDatabases('m1', DOMAIN, frozen.position, 20_000);
    assert.match(took.writerPosition, /32-32-\d+/);
    const ids = (s: MariaDbServer) =>
      s.sql('SELECT id FROM wp.comments ORDER BY id').trim().split('\n').map(Number);
    const rows = ids(target);
    assert.deepEqual(rows, ids(origin), "the target has the origin's rows, each once");
    for (const id of acked) assert.ok(rows.includes(id), `acknowledged comment ${id} is on the target`);
    assert.ok(acked.length > 5, 'writes went on during the copy');
    const writerOnTarget = await siteDb(target);
    await writerOnTarget.query("INSERT INTO comments(body) VALUES ('on target')");
    await writerOnTarget.close();
    assert.equal(hasChannel(target, 'ferry_m1'), false, 'the channel is gone');
    assert.equal(existsSync(join(target.confDir, 'ferry_m1.cnf')), false);

    // The state file holds grants (and their hashes): owner only.
    const stateDir = join(t.dir, 'databases');
    const [stateFile] = await readdir(stateDir);
    assert.equal((await stat(join(stateDir, stateFile!))).mode & 0o777, 0o600);

    // A restarted agent (same data dir) answers the take-over as before, without waiting again.
    await t.stop();
    t = await startAgent('target', '127.0.78.2', t.dir, await mariadbOf(t.dir, target));
    assert.deepEqual(await t.driver.takeOverDatabases('m1', DOMAIN, frozen.position, 1), took);

    // A rollback after the switch: the reverse channel brings the target's writes back.
    const back = await o.driver.checkDatabases(DOMAIN, { move: [], leftInPlace: [] });
    const reverse = await t.driver.openDatabaseSource('m1-reverse', DOMAIN, back.replicaAddress);
    await o.driver.startDatabaseChannel('m1-reverse', DOMAIN, reverse, took.writerPosition);
    await o.driver.startDatabaseChannel('m1-reverse', DOMAIN, reverse, took.writerPosition);
    const onTarget = await siteDb(target);
    await onTarget.query("INSERT INTO comments(body) VALUES ('rollback me')");
    await onTarget.close();
    const tFrozen = await t.driver.freezeDatabases('m1-reverse', DOMAIN);
    await o.driver.takeOverDatabases('m1-reverse', DOMAIN, tFrozen.position, 20_000);
    assert.equal(
      origin.sql("SELECT COUNT(*) FROM wp.comments WHERE body IN ('on target', 'rollback me')").trim(),
      '2',
      'every write made on the target is back on the origin',
    );
    const originAgain = await siteDb(origin);
    await originAgain.query("INSERT INTO comments(body) VALUES ('origin writes again')");
    await originAgain.close();
    const targetFrozen = await siteDb(target);
    await assert.rejects(targetFrozen.query("INSERT INTO comments(body) VALUES ('two writers')"), /denied/);
    await targetFrozen.close();

    // The end: the migration users go, and what the origin published for them.
    await o.driver.closeDatabaseSource('m1');
    await o.driver.closeDatabaseSource('m1');
    await t.driver.closeDatabaseSource('m1-reverse');
    assert.equal(
      origin.sql("SELECT COUNT(*) FROM mysql.global_priv WHERE User LIKE 'ferry\\_%'").trim(),
      '0',
    );
    assert.equal(
      target.sql("SELECT COUNT(*) FROM mysql.global_priv WHERE User LIKE 'ferry\\_%'").trim(),
      '0',
    );
    assert.equal(origin.sql("SHOW DATABASES LIKE 'ferry_accounts'").trim(), '');
    // Nothing the agents answered or kept names a site password.
    const kept = (
      await Promise.all(
        [o, t].map((r) =>
          readdir(join(r.dir, 'databases')).then((fs) =>
            Promise.all(fs.map((f) => readFile(join(r.dir, 'databases', f), 'utf8'))),
          ),
        ),
      )
    )
      .flat()
      .join('\n');
    assert.ok(!kept.includes('wp-pw') && !JSON.stringify(plan).includes('wp-pw'));
  });

  test('a catch-up past its bound keeps the channel; thaw gives the writes back; drop leaves nothing', async () => {
    const plan = await o.driver.planDatabases('news.example', [{ name: 'wp2', users: ['wp2'] }]);
    const check = await t.driver.checkDatabases('news.example', plan);
    const source = await o.driver.openDatabaseSource('m2', 'news.example', check.replicaAddress, [
      { name: 'wp2', users: ['wp2'] },
    ]);
    await t.driver.copyDatabases('m2', 'news.example', source, plan);
    // The channel receives nothing more, but stays healthy.
    target.sql("STOP SLAVE 'ferry_m2' IO_THREAD");
    origin.sql("INSERT INTO wp2.posts(body) VALUES ('not replicated yet')");
    const frozen = await o.driver.freezeDatabases('m2', 'news.example');
    await assert.rejects(
      t.driver.takeOverDatabases('m2', 'news.example', frozen.position, 300),
      (e: unknown) => isFerryError(e, 'DB_CATCHUP_TIMEOUT'),
    );
    assert.match(
      target.sql("SHOW SLAVE 'ferry_m2' STATUS"),
      /ferry_m2|127\.0\.0\.1/,
      'the channel is still there',
    );
    target.sql("START SLAVE 'ferry_m2' IO_THREAD");

    // Back to the origin: its site user writes again, with the grants recorded at the freeze,
    // also when the agent restarted in between.
    await o.stop();
    o = await startAgent('origin', '127.0.78.1', o.dir, await mariadbOf(o.dir, origin));
    await o.driver.thawDatabases('m2', 'news.example');
    await o.driver.thawDatabases('m2', 'news.example');
    const w = await siteDb(origin, 'wp2', 'wp2-pw', 'wp2');
    await w.query("INSERT INTO posts(body) VALUES ('after thaw')");
    await w.close();

    // Rollback before the switch: nothing of the copy stays on the target.
    await t.driver.dropDatabaseCopy('m2', 'news.example');
    await t.driver.dropDatabaseCopy('m2', 'news.example');
    assert.equal(target.sql("SHOW DATABASES LIKE 'wp2'").trim(), '');
    assert.equal(target.sql("SELECT COUNT(*) FROM mysql.global_priv WHERE User = 'wp2'").trim(), '0');
    assert.equal(hasChannel(target, 'ferry_m2'), false);
    assert.equal(existsSync(join(target.confDir, 'ferry_m2.cnf')), false);
    assert.equal(origin.sql('SELECT COUNT(*) FROM wp2.posts').trim(), '2', 'the origin kept every write');
    await o.driver.closeDatabaseSource('m2');
  });

  test('the target refuses a database it already has; the origin one it does not have, or a user that writes everywhere', async () => {
    const plan = await o.driver.planDatabases(DOMAIN, [{ name: 'wp', users: ['wp'] }]);
    await assert.rejects(
      t.driver.checkDatabases(DOMAIN, plan),
      (e: unknown) => isFerryError(e, 'DB_EXISTS') && /already has a database wp/.test(e.message),
    );
    origin.sql(
      "CREATE DATABASE wp3; CREATE USER 'wp3'@'localhost' IDENTIFIED BY 'wp3-pw'; GRANT ALL ON *.* TO 'wp3'@'localhost';",
    );
    await assert.rejects(
      o.driver.planDatabases(DOMAIN, [{ name: 'wp3', users: ['wp3'] }]),
      (e: unknown) =>
        isFerryError(e, 'DB_GLOBAL_PRIVILEGES') &&
        /'wp3'@'localhost' can write every database/.test(e.message),
    );
    await assert.rejects(
      o.driver.planDatabases(DOMAIN, [{ name: 'nosuch' }]),
      (e: unknown) => isFerryError(e, 'DB_MISSING') && /no database nosuch/.test(e.message),
    );
  });

  /** `ferry agent` as a command (its own process), on `ip`, with the --mariadb-* options of `s`. */
  async function spawnAgent(id: string, ip: string, dir: string, s: MariaDbServer) {
    const [apiPort, httpPort, rsyncPort] = [await freePort(ip), await freePort(ip), await freePort(ip)];
    const args = ['agent', '--id', id, '--listen', ip, '--port', String(apiPort), '--shared-ip', ip];
    args.push('--loopback-addresses', '--http-port', String(httpPort), '--rsync-port', String(rsyncPort));
    args.push('--site-app', 'in-process', '--data-dir', join(dir, 'data'));
    args.push('--mariadb-defaults-file', await defaultsFile(dir, s), '--mariadb-address', '127.0.0.1');
    args.push('--mariadb-port', String(s.port), '--mariadb-ca', s.caFile!, '--mariadb-option-dir', s.confDir);
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FERRY_AGENT_TOKEN: TOKEN },
    });
    const out = { text: '' };
    child.stdout.on('data', (c: Buffer) => (out.text += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out.text += c.toString()));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const driver = new HttpHostDriver({ id, url: `http://${ip}:${apiPort}`, token: TOKEN, attempts: 1 });
    for (let i = 0; !/listening on/.test(out.text); i++) {
      if (i >= 300 || child.exitCode !== null) {
        child.kill('SIGKILL');
        assert.fail(`ferry agent did not start: ${out.text}`);
      }
      await sleep(100);
    }
    return {
      driver,
      out,
      kill: async (signal: NodeJS.Signals = 'SIGTERM') => {
        driver.close();
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        await exited;
      },
    };
  }

  test('`ferry agent --mariadb-*` serves the database calls with its options', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-dbagent-cli-'));
    const a = await spawnAgent('cli-origin', '127.0.78.5', dir, origin);
    try {
      assert.deepEqual((await a.driver.info()).mariadb, { address: '127.0.0.1', port: origin.port });
      const declared = [{ name: 'wp2', users: ['wp2'] }];
      const plan = await a.driver.planDatabases('news.example', declared);
      assert.deepEqual(
        plan.move.map((m) => m.name),
        ['wp2'],
      );
      const source = await a.driver.openDatabaseSource('m4', 'news.example', '127.0.0.1', declared);
      assert.deepEqual([source.host, source.port, source.caPem], ['127.0.0.1', origin.port, origin.caPem]);
      await a.driver.closeDatabaseSource('m4');
      assert.equal(origin.sql("SELECT COUNT(*) FROM mysql.global_priv WHERE User = 'ferry_m4'").trim(), '0');
      assert.ok(
        !a.out.text.includes(origin.adminPassword) && !a.out.text.includes(source.password),
        'no password in its log',
      );
    } finally {
      await a.kill();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a target agent killed in the middle of a copy: the next copy removes the partial one and completes', async () => {
    origin.sql(
      'CREATE DATABASE big; CREATE TABLE big.t(id INT PRIMARY KEY, pad CHAR(200)) ENGINE=InnoDB;' +
        " USE big; INSERT INTO big.t SELECT seq, REPEAT('x', 200) FROM seq_1_to_300000;",
    );
    const declared = [{ name: 'big' }];
    const plan = await o.driver.planDatabases('big.example', declared);
    const source = await o.driver.openDatabaseSource('m5', 'big.example', '127.0.0.1', declared);
    const dir = await mkdtemp(join(tmpdir(), 'ferry-dbagent-kill-'));
    let a = await spawnAgent('cli-target', '127.0.78.6', dir, target);
    try {
      let answered = false;
      const first = a.driver.copyDatabases('m5', 'big.example', source, plan).then(() => (answered = true));
      first.catch(() => undefined);
      for (let i = 0; target.sql("SHOW DATABASES LIKE 'big'").trim() === ''; i++) {
        assert.ok(i < 600, 'the copy did not start');
        await sleep(20);
      }
      await a.kill('SIGKILL');
      await first.catch(() => undefined);
      assert.equal(answered, false, 'the agent was killed before the copy ended');

      a = await spawnAgent('cli-target', '127.0.78.6', dir, target);
      const copy = await a.driver.copyDatabases('m5', 'big.example', source, plan);
      assert.ok(copy.bytes > 0);
      assert.equal(target.sql('SELECT COUNT(*) FROM big.t').trim(), '300000');
      origin.sql('INSERT INTO big.t VALUES (300001, "late")');
      const { position } = await o.driver.freezeDatabases('m5', 'big.example');
      await a.driver.takeOverDatabases('m5', 'big.example', position, 30_000);
      assert.equal(
        target.sql('SELECT COUNT(*) FROM big.t').trim(),
        '300001',
        'the channel started where the copy ended',
      );
      await o.driver.thawDatabases('m5', 'big.example');
    } finally {
      await a.kill();
      await o.driver.closeDatabaseSource('m5');
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a failed copy says why and leaves nothing on the target', async () => {
    const plan = await o.driver.planDatabases('news.example', [{ name: 'wp2', users: ['wp2'] }]);
    // A source for another database only: the dump of wp2 is refused half-way through the copy.
    const source = await o.driver.openDatabaseSource('m3', DOMAIN, '127.0.0.1', [
      { name: 'wp', users: ['wp'] },
    ]);
    const wrong = { ...source, password: 'Not-The-Password-9' };
    await assert.rejects(
      t.driver.copyDatabases('m3', 'news.example', wrong, plan),
      (e: unknown) => isFerryError(e, 'DB_AUTH') && !e.message.includes(wrong.password),
    );
    await assert.rejects(
      t.driver.copyDatabases('m3', 'news.example', source, plan),
      (e: unknown) => isFerryError(e, 'DB_AUTH') && /wp2/.test(e.message),
    );
    assert.equal(target.sql("SHOW DATABASES LIKE 'wp2'").trim(), '');
    assert.equal(target.sql("SELECT COUNT(*) FROM mysql.global_priv WHERE User = 'wp2'").trim(), '0');
    assert.equal(hasChannel(target, 'ferry_m3'), false);
    await o.driver.closeDatabaseSource('m3');
  });

  test(
    "the plan reads a WordPress site's wp-config.php in its nginx document root",
    { skip: nginxBin ? false : 'nginx is not installed' },
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'ferry-dbagent-wp-'));
      let a: Running | undefined;
      try {
        const www = join(dir, 'www');
        const prefix = join(dir, 'nginx');
        await mkdir(join(www, 'wp'), { recursive: true });
        await mkdir(join(prefix, 'logs'), { recursive: true });
        await writeFile(
          join(prefix, 'nginx.conf'),
          `events {}\nhttp {\n  server {\n    listen 127.0.78.4:8081;\n    server_name wp.example;\n    root ${www}/wp;\n  }\n}\n`,
        );
        await writeFile(
          join(www, 'wp', 'wp-config.php'),
          "<?php\ndefine( 'DB_NAME', 'wp' );\ndefine( 'DB_USER', 'wp' );\ndefine( 'DB_PASSWORD', 'wp-pw' );\ndefine( 'DB_HOST', 'localhost' );\n",
        );
        a = await startAgent('wp-origin', '127.0.78.4', dir, await mariadbOf(dir, origin), {
          web: {
            kind: 'nginx',
            confDir: join(dir, 'ferry-nginx'),
            appAddress: '127.0.0.1',
            appPort: await freePort(),
          },
          webConfig: {
            kind: 'nginx',
            command: [nginxBin!, '-T', '-c', join(prefix, 'nginx.conf'), '-p', prefix],
            declaredRoots: [www],
          },
          webStack: { includeDir: join(dir, 'include') },
        });
        const plan = await a.driver.planDatabases('wp.example');
        assert.deepEqual(
          plan.move.map((m) => [m.name, m.users, m.source]),
          [['wp', ['wp'], join(www, 'wp', 'wp-config.php')]],
        );
        assert.ok(!JSON.stringify(plan).includes('wp-pw'), 'the plan carries no password');
        assert.deepEqual(await a.driver.planDatabases('other.example'), { move: [], leftInPlace: [] });
      } finally {
        await a?.stop();
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});

describe('copy inside the hold: an origin without a binary log', { skip }, () => {
  let origin: MariaDbServer;
  let target: MariaDbServer;
  let o: Running;
  let t: Running;
  const declared = [{ name: 'wp', users: ['wp'] }];
  const siteDb = (s: MariaDbServer) => Db.open({ socket: s.socket, user: 'wp', password: 'wp-pw' }, 'wp');
  const mariadbOf = async (dir: string, s: MariaDbServer): Promise<HostAgentOptions['mariadb']> => ({
    defaultsFile: await defaultsFile(dir, s),
    address: '127.0.0.1',
    port: s.port,
    caFile: s.caFile!,
    optionDir: s.confDir,
  });

  before(async () => {
    [origin, target] = await startMariaDbs([
      { address: '127.0.0.1', serverId: 41, tls: true, binlog: false },
      { address: '127.0.0.1', serverId: 42, tls: true },
    ]);
    origin.sql(
      'CREATE DATABASE wp; CREATE TABLE wp.comments(id INT PRIMARY KEY, body TEXT) ENGINE=InnoDB;' +
        " INSERT INTO wp.comments VALUES (1, 'first'), (2, 'second');" +
        " CREATE USER 'wp'@'localhost' IDENTIFIED BY 'wp-pw'; GRANT ALL ON wp.* TO 'wp'@'localhost';",
    );
    const od = await mkdtemp(join(tmpdir(), 'ferry-dbhold-origin-'));
    const td = await mkdtemp(join(tmpdir(), 'ferry-dbhold-target-'));
    o = await startAgent('origin', '127.0.78.4', od, await mariadbOf(od, origin));
    t = await startAgent('target', '127.0.78.5', td, await mariadbOf(td, target));
  });

  after(async () => {
    await o?.stop();
    await t?.stop();
    await Promise.all([origin?.stop(), target?.stop()]);
    for (const r of [o, t]) if (r) await rm(r.dir, { recursive: true, force: true });
  });

  test('refused by default and above copyInHoldMaxBytes, saying how to enable the binlog and the limit', async () => {
    await assert.rejects(
      o.driver.planDatabases(DOMAIN, declared),
      (e: unknown) =>
        isFerryError(e, 'DB_BINLOG_OFF') &&
        /set log_bin/.test(e.message) &&
        /set sites\[\]\.database\.copyInHoldMaxBytes/.test(e.message),
    );
    await assert.rejects(
      o.driver.planDatabases(DOMAIN, declared, { copyInHoldMaxBytes: 1000 }),
      (e: unknown) =>
        isFerryError(e, 'DB_BINLOG_OFF') &&
        /set log_bin/.test(e.message) &&
        /only up to copyInHoldMaxBytes \(1000 bytes\), and wp hold \d+ bytes/.test(e.message),
    );
  });

  test('a copy past its bound stops, leaves nothing on the target, and the origin thaws', async () => {
    const plan = await o.driver.planDatabases(DOMAIN, declared, { copyInHoldMaxBytes: 1 << 30 });
    const check = await t.driver.checkDatabases(DOMAIN, plan);
    const source = await o.driver.openDatabaseSource('h1', DOMAIN, check.replicaAddress, declared);
    await o.driver.freezeDatabases('h1', DOMAIN);
    await assert.rejects(
      t.driver.copyDatabases('h1', DOMAIN, source, plan, { timeoutMs: 1 }),
      (e: unknown) => isFerryError(e, 'DB_CATCHUP_TIMEOUT') && /bound of 1 ms/.test(e.message),
    );
    assert.equal(target.sql("SHOW DATABASES LIKE 'wp'").trim(), '', 'the partial copy is gone');
    assert.equal(target.sql("SELECT COUNT(*) FROM mysql.global_priv WHERE User = 'wp'").trim(), '0');
    await t.driver.dropDatabaseCopy('h1', DOMAIN);
    await o.driver.thawDatabases('h1', DOMAIN);
    const w = await siteDb(origin);
    await w.query("INSERT INTO comments VALUES (3, 'after the thaw')");
    await w.close();
    await o.driver.closeDatabaseSource('h1');
  });

  test('the plan reports the pause; the copy in the hold has every acknowledged row; then only the target writes', async () => {
    const plan = await o.driver.planDatabases(DOMAIN, declared, { copyInHoldMaxBytes: 1 << 30 });
    assert.equal(plan.mode, 'copy-in-hold');
    assert.match(plan.binlogProblem ?? '', /log_bin=OFF/);
    const bytes = plan.move.reduce((n, m) => n + m.bytes, 0);
    assert.ok(bytes > 0);
    assert.equal(plan.estimatedPauseMs, estimateCopyInHoldMs(bytes));
    const check = await t.driver.checkDatabases(DOMAIN, plan);
    const source = await o.driver.openDatabaseSource('h2', DOMAIN, check.replicaAddress, declared);

    // The site writes until the freeze ends its session.
    const acked: number[] = [1, 2, 3];
    let stop = false;
    const writer = (async () => {
      const w = await siteDb(origin);
      try {
        for (let id = 100; !stop; id++) {
          await w.query('INSERT INTO comments VALUES (?, ?)', [id, `c${id}`]);
          acked.push(id);
          await sleep(10);
        }
      } finally {
        await w.close().catch(() => undefined);
      }
    })().catch(() => undefined);
    // Freeze once the site has written (a fixed pause was too short on a loaded machine).
    await waitFor(() => acked.length > 10, 30_000);
    const frozen = await o.driver.freezeDatabases('h2', DOMAIN);
    stop = true;
    await writer;
    assert.equal(frozen.position, '', 'no binary log: no position');
    const late = await siteDb(origin);
    await assert.rejects(late.query("INSERT INTO comments VALUES (99999, 'after freeze')"), /denied/);
    await late.close();

    const copy = await t.driver.copyDatabases('h2', DOMAIN, source, plan, { timeoutMs: 60_000 });
    assert.ok(copy.bytes > 0 && copy.ms >= 0);
    assert.equal(target.sql('SHOW ALL SLAVES STATUS').trim(), '', 'no replication channel');
    const early = await siteDb(target);
    await assert.rejects(early.query("INSERT INTO comments VALUES (99998, 'too early')"), /denied/);
    await early.close();

    const took = await t.driver.takeOverDatabases('h2', DOMAIN, frozen.position, 1000);
    assert.equal(took.waitedMs, 0);
    const ids = (s: MariaDbServer) =>
      s.sql('SELECT id FROM wp.comments ORDER BY id').trim().split('\n').map(Number);
    assert.ok(acked.length > 10, 'the site wrote before the freeze');
    assert.deepEqual(ids(target), ids(origin), "the target has the frozen origin's rows");
    for (const id of acked)
      assert.ok(ids(target).includes(id), `acknowledged comment ${id} is on the target`);
    const w = await siteDb(target);
    await w.query("INSERT INTO comments VALUES (99997, 'on target')");
    await w.close();
    await o.driver.closeDatabaseSource('h2');
  });
});
