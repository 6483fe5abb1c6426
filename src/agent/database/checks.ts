/**
 * Prerequisites of a database migration, checked at plan time: each problem has a stable code, a
 * message with the server's facts and what the operator does about it.
 */
import { FerryError } from '../../common/errors.js';
import type { ErrorCode } from '../../common/error-codes.js';
import { Db, dbError, describeEndpoint, type DbEndpoint } from './client.js';

/** What a server says about itself. */
export interface ServerInfo {
  version: string;
  /** [major, minor, patch] of `version`. */
  versionParts: [number, number, number];
  mariadb: boolean;
  serverId: number;
  logBin: boolean;
  binlogFormat: string;
  gtidStrictMode: boolean;
  gtidDomainId: number;
  /** The server has a certificate (replication and the dump can require TLS). */
  tls: boolean;
}

/** One unmet prerequisite. */
export interface DbProblem {
  code: ErrorCode;
  message: string;
  /** What the operator does about it. */
  fix: string;
}

/** Read a server's version, binlog and GTID settings. */
export async function readServerInfo(db: Db): Promise<ServerInfo> {
  const [row] = await db.query<Record<string, unknown>>(
    'SELECT @@version AS version, @@global.server_id AS serverId, @@log_bin AS logBin, @@global.binlog_format AS binlogFormat,' +
      ' @@global.gtid_strict_mode AS strict, @@global.gtid_domain_id AS domain, @@have_ssl AS haveSsl',
  );
  const version = String(row?.version ?? '');
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(version);
  return {
    version,
    versionParts: m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [0, 0, 0],
    mariadb: /mariadb/i.test(version),
    serverId: Number(row?.serverId),
    logBin: Number(row?.logBin) === 1,
    binlogFormat: String(row?.binlogFormat ?? ''),
    gtidStrictMode: Number(row?.strict) === 1,
    gtidDomainId: Number(row?.domain),
    tls: String(row?.haveSsl) === 'YES',
  };
}

function cmpVersion(a: [number, number, number], b: [number, number, number]): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** The databases of `names` that do not exist on the server. */
export async function missingDatabases(db: Db, names: readonly string[]): Promise<string[]> {
  if (names.length === 0) return [];
  const rows = await db.query<{ name: string }>(
    'SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (?)',
    [names],
  );
  const have = new Set(rows.map((r) => r.name));
  return names.filter((n) => !have.has(n));
}

/** Bytes of data and indexes of each database (for the plan: copy time, the copy-in-hold bound). */
export async function databaseSizes(db: Db, names: readonly string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>(names.map((n) => [n, 0]));
  if (names.length === 0) return out;
  const rows = await db.query<{ name: string; bytes: string | number | null }>(
    'SELECT TABLE_SCHEMA AS name, SUM(DATA_LENGTH + INDEX_LENGTH) AS bytes FROM information_schema.TABLES' +
      ' WHERE TABLE_SCHEMA IN (?) GROUP BY TABLE_SCHEMA',
    [names],
  );
  for (const r of rows) out.set(r.name, Number(r.bytes ?? 0));
  return out;
}

/** Problems of the origin: not MariaDB, binlog off or not ROW, GTID strict mode off, databases missing. */
export async function checkOrigin(
  db: Db,
  databases: readonly string[],
): Promise<{ info: ServerInfo; problems: DbProblem[] }> {
  const info = await readServerInfo(db);
  const problems: DbProblem[] = [];
  if (!info.mariadb) {
    problems.push({
      code: 'DB_VERSION',
      message: `the origin runs ${info.version}, not MariaDB`,
      fix: 'only MariaDB origins are supported for now; move the database with a dump while the site is held',
    });
  }
  if (!info.logBin) {
    problems.push({
      code: 'DB_BINLOG_OFF',
      message:
        "the origin's binary log is off (log_bin=OFF), so writes made during the copy cannot be replicated",
      fix: "set log_bin, server_id (unique), binlog_format=ROW and gtid_strict_mode=ON in the origin's [mariadbd] section and restart it (docs/databases.md)",
    });
  } else if (info.binlogFormat !== 'ROW') {
    problems.push({
      code: 'DB_BINLOG_FORMAT',
      message: `the origin's binlog_format is ${info.binlogFormat}, not ROW: per-database filters would miss or misapply writes`,
      fix: "set binlog_format=ROW in the origin's configuration (and SET GLOBAL binlog_format='ROW'); sessions opened before keep the old format until they reconnect",
    });
  }
  if (info.logBin && !info.gtidStrictMode) {
    problems.push({
      code: 'DB_GTID',
      message:
        "the origin's gtid_strict_mode is OFF: an out-of-order GTID could make the target skip a write",
      fix: "set gtid_strict_mode=ON in the origin's configuration (and SET GLOBAL gtid_strict_mode=ON)",
    });
  }
  for (const name of await missingDatabases(db, databases)) {
    problems.push({
      code: 'DB_MISSING',
      message: `the origin has no database ${name}`,
      fix: "check the site's DB_NAME (or the database declared in ferry.yaml)",
    });
  }
  return { info, problems };
}

/**
 * Problems of the target against the origin: older or not MariaDB, the same server_id or
 * gtid_domain_id, a database or user of the site that already exists there.
 */
export async function checkTarget(
  db: Db,
  origin: ServerInfo,
  databases: readonly string[],
  accounts: readonly { user: string; host: string }[] = [],
): Promise<{ info: ServerInfo; problems: DbProblem[] }> {
  const info = await readServerInfo(db);
  const problems: DbProblem[] = [];
  if (!info.mariadb || cmpVersion(info.versionParts, origin.versionParts) < 0) {
    problems.push({
      code: 'DB_VERSION',
      message: `the target runs ${info.version}, the origin ${origin.version}: a replica must run the same or a newer MariaDB`,
      fix: "upgrade the target's MariaDB to the origin's version or newer",
    });
  }
  if (info.serverId === origin.serverId) {
    problems.push({
      code: 'DB_GTID',
      message: `both servers have server_id ${info.serverId}: the target would ignore the origin's events as its own`,
      fix: 'give every MariaDB server its own server_id',
    });
  }
  if (info.gtidDomainId === origin.gtidDomainId) {
    problems.push({
      code: 'DB_GTID',
      message: `both servers write GTIDs in domain ${info.gtidDomainId}: the target's own writes and the origin's would collide in gtid_slave_pos`,
      fix: 'give each server its own gtid_domain_id (e.g. its server_id) in its configuration',
    });
  }
  const absent = await missingDatabases(db, databases);
  for (const name of databases.filter((n) => !absent.includes(n))) {
    problems.push({
      code: 'DB_EXISTS',
      message: `the target already has a database ${name}`,
      fix: 'Ferry never overwrites a database: drop or rename the one on the target if it is not needed',
    });
  }
  if (accounts.length > 0) {
    const rows = await db.query<{ user: string; host: string }>(
      'SELECT User AS user, Host AS host FROM mysql.global_priv WHERE (User, Host) IN (?)',
      [accounts.map((a) => [a.user, a.host])],
    );
    for (const r of rows) {
      problems.push({
        code: 'DB_EXISTS',
        message: `the target already has the database user '${r.user}'@'${r.host}'`,
        fix: "it may belong to another customer: rename the site's user on the origin or remove the one on the target",
      });
    }
  }
  return { info, problems };
}

/** Throw the first problem as a FerryError (message and fix), listing the others after it. */
export function throwIfProblems(problems: readonly DbProblem[]): void {
  const [first, ...rest] = problems;
  if (!first) return;
  const more = rest.length ? ` (and ${rest.length} more: ${rest.map((p) => p.code).join(', ')})` : '';
  throw new FerryError(first.code, `${first.message}. What to do: ${first.fix}${more}`);
}

/** The target can connect to the origin as the migration user (over TLS when `caPem` is set). */
export async function checkReach(originAsMigrationUser: DbEndpoint): Promise<void> {
  let db: Db;
  try {
    db = await Db.open(originAsMigrationUser);
  } catch (e) {
    const err = e as FerryError;
    throw new FerryError(
      err.code ?? 'DB_UNREACHABLE',
      `the target cannot reach the origin's MariaDB (${describeEndpoint(originAsMigrationUser)}): ${err.message}`,
      { cause: e },
    );
  }
  try {
    await db.query('SELECT 1');
  } catch (e) {
    throw dbError(e, 'the origin answered the connection but not a query', 'DB_UNREACHABLE');
  } finally {
    await db.close();
  }
}
