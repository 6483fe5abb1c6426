/**
 * Private MariaDB servers for the tests: each `startMariaDb` runs its own `mariadbd` on a loopback
 * address with its own datadir, port, socket and pid file under a temporary folder, never the
 * machine's own MariaDB service. `stop()` kills it and removes the folder.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './ports.js';

/** True when MariaDB (server and client tools) and openssl are installed. */
export const mariadbInstalled =
  existsSync('/usr/sbin/mariadbd') &&
  existsSync('/usr/bin/mariadb-install-db') &&
  existsSync('/usr/bin/mariadb-dump') &&
  existsSync('/usr/bin/mariadb-admin') &&
  existsSync('/usr/bin/openssl');

/** Options of one private server. */
export interface MariaDbOptions {
  /** Loopback address it listens on, e.g. `127.0.77.1`. */
  address: string;
  /** server_id, also the gtid_domain_id unless `domain` is given. */
  serverId: number;
  domain?: number;
  /** Binary log on (ROW format, GTID strict mode) unless false. */
  binlog?: boolean;
  binlogFormat?: 'ROW' | 'STATEMENT' | 'MIXED';
  /** Give the server a certificate (signed by a CA written beside it). */
  tls?: boolean;
  /** The admin's password (user `admin`@`%` with all privileges). */
  adminPassword?: string;
}

/** A running private server. */
export interface MariaDbServer {
  address: string;
  port: number;
  socket: string;
  dir: string;
  /** The CA that signed the server's certificate (when `tls`). */
  caFile?: string;
  caPem?: string;
  adminUser: string;
  adminPassword: string;
  /** Run SQL through the `mariadb` client over the socket as root; returns stdout (tab separated). */
  sql(statements: string): string;
  /** Folder of option files the server includes (`!includedir`), read at start. */
  confDir: string;
  /** Shut the server down cleanly and start it again with the same options. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** How Ferry's database code reaches `s` as its administrator: over its socket. */
export function adminEndpoint(s: MariaDbServer): { socket: string; user: string; password: string } {
  return { socket: s.socket, user: s.adminUser, password: s.adminPassword };
}

function makeCert(dir: string, address: string): { ca: string; cert: string; key: string } {
  const run = (args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args[0]}: ${r.stderr}`);
  };
  run(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=ferry test CA'].concat([
      '-keyout',
      'ca-key.pem',
      '-out',
      'ca.pem',
    ]),
  );
  run(
    ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${address}`, '-keyout', 'server-key.pem'].concat([
      '-out',
      'server.csr',
    ]),
  );
  writeFileSync(join(dir, 'ext.cnf'), `subjectAltName=IP:${address}\n`);
  run(
    ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial'].concat([
      '-days',
      '2',
      '-extfile',
      'ext.cnf',
      '-out',
      'server.pem',
    ]),
  );
  return { ca: join(dir, 'ca.pem'), cert: join(dir, 'server.pem'), key: join(dir, 'server-key.pem') };
}

/** Start one private server (datadir made with mariadb-install-db) and wait until it answers. */
export async function startMariaDb(opts: MariaDbOptions): Promise<MariaDbServer> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-mariadb-'));
  const datadir = join(dir, 'data');
  mkdirSync(datadir);
  mkdirSync(join(dir, 'conf.d'));
  const socket = join(dir, 'mysqld.sock');
  const adminPassword = opts.adminPassword ?? 'admin-secret-1';
  let child: ChildProcess | undefined;
  // A test process that dies without its `after` hook still takes its server with it.
  const killOnExit = () => child?.kill('SIGKILL');
  process.once('exit', killOnExit);
  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const install = spawnSync(
      'mariadb-install-db',
      [
        '--no-defaults',
        `--datadir=${datadir}`,
        '--user=root',
        '--auth-root-authentication-method=normal',
      ].concat(['--skip-test-db', '--skip-name-resolve']),
      { encoding: 'utf8' },
    );
    if (install.status !== 0) throw new Error(`mariadb-install-db: ${install.stderr}`);
    const lines = [
      '[mariadbd]',
      `datadir=${datadir}`,
      `socket=${socket}`,
      `pid-file=${join(dir, 'mysqld.pid')}`,
      `bind-address=${opts.address}`,
      'user=root',
      'skip-name-resolve',
      `server-id=${opts.serverId}`,
      `gtid-domain-id=${opts.domain ?? opts.serverId}`,
      `log-error=${join(dir, 'error.log')}`,
      'innodb-buffer-pool-size=32M',
      'innodb-log-file-size=16M',
      'performance-schema=OFF',
      `relay-log=${join(dir, 'relay')}`,
    ];
    if (opts.binlog !== false) {
      lines.push(`log-bin=${join(dir, 'binlog')}`, `binlog-format=${opts.binlogFormat ?? 'ROW'}`);
      lines.push('gtid-strict-mode=1', 'log-slave-updates=0');
    }
    let caFile: string | undefined;
    if (opts.tls) {
      const c = makeCert(dir, opts.address);
      caFile = c.ca;
      lines.push(`ssl-ca=${c.ca}`, `ssl-cert=${c.cert}`, `ssl-key=${c.key}`);
    }
    let port = 0;
    for (let attempt = 0; attempt < 5; attempt++) {
      port = await freePort(opts.address);
      writeFileSync(
        join(dir, 'my.cnf'),
        lines.concat(`port=${port}`, `!includedir ${join(dir, 'conf.d')}`, '').join('\n'),
      );
      child = spawn('/usr/sbin/mariadbd', [`--defaults-file=${join(dir, 'my.cnf')}`], {
        stdio: 'ignore',
      });
      const up = await waitUp(socket, child);
      if (up) break;
      if (attempt === 4) {
        throw new Error(
          `mariadbd did not start: ${readFileSync(join(dir, 'error.log'), 'utf8').slice(-2000)}`,
        );
      }
    }
    const sql = (statements: string) => {
      const r = spawnSync(
        'mariadb',
        ['--no-defaults', '-S', socket, '-u', 'root', '-N', '-B', '-e', statements],
        {
          encoding: 'utf8',
        },
      );
      if (r.status !== 0) throw new Error(`mariadb: ${r.stderr}`);
      return r.stdout;
    };
    sql(
      `CREATE USER 'admin'@'%' IDENTIFIED BY '${adminPassword.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'; GRANT ALL ON *.* TO 'admin'@'%' WITH GRANT OPTION;` +
        (opts.binlog !== false ? ' RESET MASTER;' : ''),
    );
    return {
      address: opts.address,
      port,
      socket,
      dir,
      ...(caFile ? { caFile, caPem: readFileSync(caFile, 'utf8') } : {}),
      adminUser: 'admin',
      adminPassword,
      sql,
      confDir: join(dir, 'conf.d'),
      restart: async () => {
        const old = child!;
        const exited = new Promise((resolve) => old.once('exit', resolve));
        old.kill('SIGTERM');
        await exited;
        child = spawn('/usr/sbin/mariadbd', [`--defaults-file=${join(dir, 'my.cnf')}`], { stdio: 'ignore' });
        if (!(await waitUp(socket, child))) {
          throw new Error(
            `mariadbd did not restart: ${readFileSync(join(dir, 'error.log'), 'utf8').slice(-2000)}`,
          );
        }
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function waitUp(socket: string, child: ChildProcess): Promise<boolean> {
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    const r = spawnSync('mariadb-admin', ['--no-defaults', '-S', socket, '-u', 'root', 'ping'], {
      encoding: 'utf8',
    });
    if (r.status === 0) return true;
    await sleep(100);
  }
  child.kill('SIGKILL');
  return false;
}

/** Start several servers at once; when one fails, the others are stopped before the error is thrown. */
export async function startMariaDbs<const T extends readonly MariaDbOptions[]>(
  all: T,
): Promise<{ -readonly [K in keyof T]: MariaDbServer }> {
  const results = await Promise.allSettled(all.map((o) => startMariaDb(o)));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(results.map((r) => (r.status === 'fulfilled' ? r.value.stop() : undefined)));
    throw failed.reason;
  }
  return results.map((r) => (r as PromiseFulfilledResult<MariaDbServer>).value) as {
    -readonly [K in keyof T]: MariaDbServer;
  };
}
