/**
 * The initial copy: the site's databases only, dumped in one consistent snapshot with its GTID
 * position (`mariadb-dump --single-transaction --gtid --master-data=2`: MariaDB reads the binlog
 * position of the snapshot itself, so the dump takes no global lock and reads no other database),
 * streamed into the target's `mariadb` client; then the site's users and grants recreated there.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FerryError, errorMessage } from '../../common/errors.js';
import { account, ident, type Db, type DbEndpoint } from './client.js';
import { missingDatabases } from './checks.js';

/** A database user of the site, as the origin has it. `createUser` holds the password hash: secret. */
export interface SiteAccount {
  user: string;
  host: string;
  /** SHOW CREATE USER (authentication, TLS requirements, limits). */
  createUser: string;
  /** GRANT statements on the site's databases (or their tables) only. */
  grants: string[];
  /** The account has privileges on every database (`ON *.*` beyond USAGE): it cannot be frozen per database. */
  globalPrivileges: boolean;
}

/** Privileges that change data or schema: held ON *.*, they write every database. */
const WRITE_PRIVILEGES = new Set([
  'ALL PRIVILEGES',
  'INSERT',
  'UPDATE',
  'DELETE',
  'CREATE',
  'DROP',
  'ALTER',
  'INDEX',
  'CREATE VIEW',
  'CREATE ROUTINE',
  'ALTER ROUTINE',
  'EXECUTE',
  'TRIGGER',
  'EVENT',
  'DELETE HISTORY',
]);

/** SHOW GRANTS lines of an account that are about one of `databases` (database or table level). */
function grantsOn(lines: string[], databases: readonly string[]): string[] {
  const quoted = new Set(databases.map((d) => ident(d)));
  return lines.filter((l) => {
    const m = /\bON\s+((?:`(?:[^`]|``)*`|[^\s.]+))\./i.exec(
      l.replace(/ ON (FUNCTION|PROCEDURE|PACKAGE) /i, ' ON '),
    );
    if (!m) return false;
    const db = m[1]!.startsWith('`') ? m[1]! : ident(m[1]!);
    // mysql.db may hold the name with `_` escaped (`wp\_site`), as GRANT ... ON `wp\_site`.* writes it
    return quoted.has(db) || quoted.has(db.replace(/\\_/g, '_'));
  });
}

/**
 * The site's accounts on the origin: every account with a grant on one of `databases`, plus
 * `users` (the user names the application config names), with their CREATE USER and the grants
 * on those databases. Grants on other databases are not copied.
 */
export async function readSiteAccounts(
  origin: Db,
  databases: readonly string[],
  opts: { users?: readonly string[]; excludeUsers?: readonly string[] } = {},
): Promise<SiteAccount[]> {
  const users = opts.users ?? [];
  const exclude = new Set(opts.excludeUsers ?? []);
  const names = [...databases, ...databases.map((d) => d.replace(/_/g, '\\_'))];
  const rows = await origin.query<{ user: string; host: string }>(
    'SELECT User AS user, Host AS host FROM mysql.db WHERE Db IN (?)' +
      ' UNION SELECT User, Host FROM mysql.tables_priv WHERE Db IN (?)' +
      (users.length ? ' UNION SELECT User, Host FROM mysql.global_priv WHERE User IN (?)' : ''),
    users.length ? [names, names, users] : [names, names],
  );
  const out: SiteAccount[] = [];
  for (const { user, host } of rows) {
    if (user === '' || exclude.has(user)) continue; // anonymous accounts are not a site's
    const createUser = String(await origin.value(`SHOW CREATE USER ${account(user, host)}`));
    const lines = (await origin.query(`SHOW GRANTS FOR ${account(user, host)}`)).map((r) =>
      String(Object.values(r)[0]),
    );
    const global = lines.some((l) => {
      const m = /^GRANT (.+?) ON \*\.\* TO /i.exec(l);
      return m ? m[1]!.split(/,\s*/).some((p) => WRITE_PRIVILEGES.has(p.toUpperCase())) : false;
    });
    out.push({ user, host, createUser, grants: grantsOn(lines, databases), globalPrivileges: global });
  }
  return out.sort((a, b) => `${a.user}@${a.host}`.localeCompare(`${b.user}@${b.host}`));
}

/** Create the site's accounts on the target with the same authentication and their grants on the site's databases. */
export async function createSiteAccounts(target: Db, accounts: readonly SiteAccount[]): Promise<void> {
  for (const a of accounts) {
    await target.query(a.createUser.replace(/^CREATE USER /i, 'CREATE USER IF NOT EXISTS '));
    for (const g of a.grants) await target.query(g);
  }
}

/** Drop the site's accounts on the target (cleanup of a failed or rolled back migration). */
export async function dropSiteAccounts(
  target: Db,
  accounts: readonly Pick<SiteAccount, 'user' | 'host'>[],
): Promise<void> {
  for (const a of accounts) await target.query(`DROP USER IF EXISTS ${account(a.user, a.host)}`);
}

/** Drop the databases the copy made on the target (only ever called for databases it created). */
export async function dropPartialCopy(target: Db, databases: readonly string[]): Promise<void> {
  for (const name of databases) await target.query(`DROP DATABASE IF EXISTS ${ident(name)}`);
}

/** Options of `copyDatabases`. */
export interface CopyOptions {
  /** The origin, as the migration user (TLS when `caPem` is set). */
  origin: DbEndpoint;
  /** The target, as its administrator (typically its socket). */
  target: DbEndpoint;
  /** An open admin connection to the target, for the checks and the cleanup. */
  targetDb: Db;
  databases: readonly string[];
  /** False: no GTID position (the copy-in-hold mode, the origin's binary log off). Default true. */
  position?: boolean;
  /** Stop the copy (and drop it) after this long: DB_CATCHUP_TIMEOUT. Default: no bound. */
  timeoutMs?: number;
  /** `mariadb-dump` and `mariadb` binaries (defaults: on PATH). */
  dumpBin?: string;
  clientBin?: string;
}

/** What the copy did. */
export interface CopyResult {
  /** The origin's GTID position of the snapshot: replication starts there ('' when `position` is false). */
  gtidPos: string;
  bytes: number;
  ms: number;
}

/** A value of an option file: double-quoted, so that `#`, `;` and spaces are kept (MariaDB reads \\ and \"). */
function optionValue(v: string): string {
  if (/[\r\n]/.test(v))
    throw new FerryError('DB_CONFIG', 'a database user or password with a line break cannot be used');
  return '"' + v.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
}

/** A client option file (the password never goes on a command line). */
function optionFile(ep: DbEndpoint, caFile: string | undefined): string {
  const lines = ['[client]', `user=${optionValue(ep.user)}`, `password=${optionValue(ep.password)}`];
  if (ep.socket) lines.push(`socket=${optionValue(ep.socket)}`);
  else lines.push(`host=${optionValue(ep.host ?? 'localhost')}`, `port=${ep.port ?? 3306}`, 'protocol=TCP');
  if (caFile) lines.push('ssl', `ssl-ca=${optionValue(caFile)}`, 'ssl-verify-server-cert');
  else lines.push('skip-ssl');
  return lines.join('\n') + '\n';
}

/**
 * Copy `databases` from the origin to the target. Refuses (DB_EXISTS) when the target already has
 * one of them; on any failure drops what it created there and throws DB_COPY_FAILED (or the
 * connection's code) with the tools' own message.
 */
export async function copyDatabases(opts: CopyOptions): Promise<CopyResult> {
  const { databases, targetDb } = opts;
  if (databases.length === 0) throw new FerryError('DB_CONFIG', 'no database to copy');
  const missingOnTarget = new Set(await missingDatabases(targetDb, databases));
  const already = databases.filter((d) => !missingOnTarget.has(d));
  if (already.length) {
    throw new FerryError(
      'DB_EXISTS',
      `the target already has database ${already.join(', ')}; Ferry never overwrites one`,
    );
  }
  const dir = await mkdtemp(join(tmpdir(), 'ferry-dbcopy-'));
  const started = Date.now();
  try {
    let caFile: string | undefined;
    if (opts.origin.caPem) {
      caFile = join(dir, 'origin-ca.pem');
      await writeFile(caFile, opts.origin.caPem, { mode: 0o600 });
    }
    await writeFile(join(dir, 'origin.cnf'), optionFile(opts.origin, caFile), { mode: 0o600 });
    await writeFile(join(dir, 'target.cnf'), optionFile(opts.target, undefined), { mode: 0o600 });
    const result = await pipeDump(opts, dir);
    return { ...result, ms: Date.now() - started };
  } catch (e) {
    await dropPartialCopy(targetDb, databases).catch(() => undefined);
    if (e instanceof FerryError) throw e;
    throw new FerryError('DB_COPY_FAILED', `copying ${databases.join(', ')} failed: ${errorMessage(e)}`, {
      cause: e,
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const GTID_MARKER = Buffer.from("-- SET GLOBAL gtid_slave_pos='");

/** The error lines of a client's stderr (never the statement it echoes: that is customer data). */
function errorLines(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => /^(ERROR|mariadb-dump: |mysqldump: |mariadb: )/.test(l));
  return lines.map((l) => l.slice(0, 500)).join('; ');
}

function pipeDump(opts: CopyOptions, dir: string): Promise<{ gtidPos: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const dump = spawn(
      opts.dumpBin ?? 'mariadb-dump',
      [
        `--defaults-extra-file=${join(dir, 'origin.cnf')}`,
        '--single-transaction',
        ...(opts.position === false ? [] : ['--gtid', '--master-data=2']),
        '--triggers',
        '--hex-blob',
        '--default-character-set=utf8mb4',
        '--databases',
        ...opts.databases,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const load = spawn(
      opts.clientBin ?? 'mariadb',
      [`--defaults-extra-file=${join(dir, 'target.cnf')}`, '--binary-mode'],
      {
        stdio: ['pipe', 'ignore', 'pipe'],
      },
    );
    let dumpErr = '';
    let loadErr = '';
    let bytes = 0;
    let gtidPos: string | undefined;
    dump.stderr.on('data', (d: Buffer) => (dumpErr = (dumpErr + d.toString()).slice(-4000)));
    load.stderr.on('data', (d: Buffer) => (loadErr = (loadErr + d.toString()).slice(-4000)));
    // The dump writes its GTID position in a comment, after the data in this version: look for it
    // in every chunk, carrying the last bytes over so that a line split between chunks is found.
    let carry = Buffer.alloc(0);
    dump.stdout.on('data', (d: Buffer) => {
      bytes += d.length;
      if (gtidPos !== undefined) return;
      const buf = carry.length ? Buffer.concat([carry, d]) : d;
      const at = buf.indexOf(GTID_MARKER);
      if (at >= 0) {
        const end = buf.indexOf(0x0a, at);
        if (end >= 0) {
          const m = /^-- SET GLOBAL gtid_slave_pos='([0-9,-]*)';/.exec(
            buf.subarray(at, end).toString('latin1'),
          );
          gtidPos = m?.[1] ?? '';
          return;
        }
        carry = Buffer.from(buf.subarray(at, at + 4096));
      } else {
        carry = Buffer.from(buf.subarray(Math.max(0, buf.length - GTID_MARKER.length)));
      }
    });
    dump.stdout.pipe(load.stdin);
    load.stdin.on('error', () => undefined); // the loader's exit is reported below
    let pending = 2;
    let dumpCode: number | null = null;
    let loadCode: number | null = null;
    let dumpStopped = false;
    let timedOut = false;
    const timer =
      opts.timeoutMs !== undefined
        ? setTimeout(() => {
            timedOut = true;
            dump.kill('SIGTERM');
            load.kill('SIGTERM');
          }, opts.timeoutMs)
        : undefined;
    const done = () => {
      if (--pending > 0) return;
      clearTimeout(timer);
      // The side that failed first is reported; the other one was stopped because of it.
      if (timedOut) {
        reject(
          new FerryError(
            'DB_CATCHUP_TIMEOUT',
            `copying ${opts.databases.join(', ')} took longer than its bound of ${opts.timeoutMs} ms: stopped`,
          ),
        );
      } else if (dumpCode !== 0 && !dumpStopped) {
        const msg = errorLines(dumpErr) || `mariadb-dump exited with ${dumpCode}`;
        reject(
          new FerryError(
            /Access denied/.test(msg)
              ? 'DB_AUTH'
              : /Unknown database/.test(msg)
                ? 'DB_MISSING'
                : /Can't connect|Lost connection|SSL/.test(msg)
                  ? 'DB_UNREACHABLE'
                  : 'DB_COPY_FAILED',
            `dumping ${opts.databases.join(', ')} from the origin failed: ${msg}`,
          ),
        );
      } else if (loadCode !== 0) {
        reject(
          new FerryError(
            'DB_COPY_FAILED',
            `restoring on the target failed: ${errorLines(loadErr) || `mariadb exited with ${loadCode}`}`,
          ),
        );
      } else if (opts.position === false) {
        resolve({ gtidPos: '', bytes });
      } else if (!gtidPos) {
        reject(
          new FerryError(
            'DB_COPY_FAILED',
            "the dump carries no GTID position (is the origin's binary log on?)",
          ),
        );
      } else resolve({ gtidPos, bytes });
    };
    dump.once('error', (e) => {
      dumpErr += e.message;
    });
    load.once('error', (e) => {
      loadErr += e.message;
    });
    dump.once('close', (code) => {
      dumpCode = code;
      if (code !== 0 && loadCode === null) load.kill('SIGTERM');
      done();
    });
    load.once('close', (code) => {
      loadCode = code;
      if (code !== 0 && dumpCode === null) {
        dumpStopped = true;
        dump.kill('SIGTERM');
      }
      done();
    });
  });
}
