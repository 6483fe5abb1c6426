/**
 * Private MariaDB servers for the tests: each `startMariaDb` runs its own `mariadbd` on a loopback
 * address with its own datadir, port, socket and pid file under a temporary folder, never the
 * machine's own MariaDB service (the sandbox's `PrivateMariaDb`, with a test CA's certificate when
 * asked). `stop()` kills it and removes the folder.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PrivateMariaDb } from '../src/sandbox/mariadb.js';
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

/** Start one private server (src/sandbox/mariadb.ts) on a free port and wait until it answers. */
export async function startMariaDb(opts: MariaDbOptions): Promise<MariaDbServer> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-mariadb-'));
  const adminPassword = opts.adminPassword ?? 'admin-secret-1';
  let server: PrivateMariaDb | undefined;
  try {
    const tls = opts.tls ? makeCert(dir, opts.address) : undefined;
    // The port is free when chosen; another suite may take it before mariadbd binds it.
    for (let attempt = 1; ; attempt++) {
      server = new PrivateMariaDb({
        dir: join(dir, `server-${attempt}`),
        address: opts.address,
        port: await freePort(opts.address),
        serverId: opts.serverId,
        ...(opts.domain !== undefined ? { domain: opts.domain } : {}),
        ...(opts.binlog === false ? { binlog: false } : {}),
        ...(opts.binlogFormat ? { binlogFormat: opts.binlogFormat } : {}),
        ...(tls ? { tls } : {}),
        adminPassword,
      });
      try {
        await server.start();
        break;
      } catch (e) {
        await server.stop();
        if (attempt === 5) throw e;
      }
    }
    const s = server;
    return {
      address: opts.address,
      port: s.port,
      socket: s.socket,
      dir,
      ...(tls ? { caFile: tls.ca, caPem: readFileSync(tls.ca, 'utf8') } : {}),
      adminUser: s.adminUser,
      adminPassword,
      sql: (statements) => s.sql(statements),
      confDir: s.confDir,
      restart: () => s.restart(),
      stop: async () => {
        await s.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
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
