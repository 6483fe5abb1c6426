/**
 * Replication of a site's databases from one MariaDB to another: the migration user on the source,
 * a named multi-source connection on the replica (one per migration, filtered to the site's
 * databases), its lag, the bounded wait for a GTID position, and its removal. The same functions
 * build the reverse channel for a rollback after the switch (source and replica swapped).
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../../common/errors.js';
import { account, ident, literal, type Db } from './client.js';

/** The replication connection name of a migration: `ferry_` and the id's letters, digits and `_`. */
export function channelName(migrationId: string): string {
  const safe = migrationId.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 50);
  if (!safe) throw new FerryError('DB_CONFIG', 'a migration id is needed to name its replication channel');
  return `ferry_${safe}`;
}

/** The migration user on the source: replication, and reading the site's databases for the dump. */
export interface MigrationUser {
  user: string;
  /** The host part: the replica's address as the source sees it. */
  host: string;
  /** Secret. */
  password: string;
}

/**
 * Create (or re-create, on a resume) the migration user: REPLICATION SLAVE on the server, and on
 * the site's databases only what the dump reads (SELECT, SHOW VIEW, TRIGGER). REQUIRE SSL
 * when the source has a certificate. Returns whether TLS is required.
 */
export async function createMigrationUser(
  source: Db,
  u: MigrationUser,
  databases: readonly string[],
): Promise<boolean> {
  const tls = String(await source.value('SELECT @@have_ssl')) === 'YES';
  const who = account(u.user, u.host);
  await source.query(`CREATE OR REPLACE USER ${who} IDENTIFIED BY ?${tls ? ' REQUIRE SSL' : ''}`, [
    u.password,
  ]);
  await source.query(`GRANT REPLICATION SLAVE ON *.* TO ${who}`);
  for (const name of databases) {
    await source.query(`GRANT SELECT, SHOW VIEW, TRIGGER ON ${ident(name)}.* TO ${who}`);
  }
  return tls;
}

/** Drop the migration user (when the migration ends either way). */
export async function dropMigrationUser(source: Db, u: Pick<MigrationUser, 'user' | 'host'>): Promise<void> {
  await source.query(`DROP USER IF EXISTS ${account(u.user, u.host)}`);
}

/** A GTID position as domain → `domain-server-seq`. */
export function parseGtidPos(pos: string): Map<number, { server: number; seq: bigint; text: string }> {
  const out = new Map<number, { server: number; seq: bigint; text: string }>();
  for (const part of pos
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const m = /^(\d+)-(\d+)-(\d+)$/.exec(part);
    if (!m) throw new FerryError('DB_QUERY', `not a GTID: ${JSON.stringify(part)}`);
    out.set(Number(m[1]), { server: Number(m[2]), seq: BigInt(m[3]!), text: part });
  }
  return out;
}

/** The source's position: every transaction it has written to its binlog (`@@gtid_binlog_pos`). */
export async function readBinlogPos(source: Db): Promise<string> {
  return String((await source.value('SELECT @@gtid_binlog_pos')) ?? '');
}

/** Where the replica connects, as the migration user. */
export interface ChannelSource {
  host: string;
  port: number;
  user: string;
  /** Secret. */
  password: string;
  /** The source's CA as a file the replica's mariadbd can read; TLS with server verification when set. */
  caFile?: string;
}

/**
 * Create and start the named channel on the replica from `gtidPos` (the dump's position):
 * CHANGE MASTER 'name' TO ... MASTER_USE_GTID=slave_pos, the per-connection replicate_do_db, the
 * source's GTID domains of gtid_slave_pos set to the dump's (other domains kept).
 *
 * Setting gtid_slave_pos needs every replication connection of the replica stopped: MariaDB
 * refuses otherwise, and that refusal is returned (DB_QUERY) rather than stopping another
 * customer's replication.
 */
export async function startChannel(
  replica: Db,
  name: string,
  source: ChannelSource,
  databases: readonly string[],
  gtidPos: string,
  options: ChannelOptions = {},
): Promise<void> {
  const bad = databases.filter((d) => d.includes(',') || d.trim() !== d || d === '');
  if (bad.length || databases.length === 0) {
    throw new FerryError(
      'DB_CONFIG',
      `cannot filter replication to ${JSON.stringify(databases)}: a list of plain database names is needed`,
    );
  }
  if (options.configDir)
    await writeFile(channelConfigPath(options.configDir, name), channelConfig(name, databases));
  const conn = literal(name);
  const opts = [
    `MASTER_HOST=${literal(source.host)}`,
    `MASTER_PORT=${source.port}`,
    `MASTER_USER=${literal(source.user)}`,
    `MASTER_PASSWORD=${literal(source.password)}`,
    'MASTER_CONNECT_RETRY=1',
    'MASTER_USE_GTID=slave_pos',
  ];
  if (source.caFile) {
    opts.push('MASTER_SSL=1', `MASTER_SSL_CA=${literal(source.caFile)}`, 'MASTER_SSL_VERIFY_SERVER_CERT=1');
  }
  await replica.query(`CHANGE MASTER ${conn} TO ${opts.join(', ')}`);
  // The filter is per connection (`name.replicate_do_db`), so other channels of the replica keep theirs.
  await replica.query(`SET GLOBAL ${ident(name)}.replicate_do_db = ?`, [databases.join(',')]);
  // gtid_slave_pos has one GTID per domain: the source's domains start at the dump's position,
  // the replica's own binlog domains are carried over (MariaDB refuses a slave position that lacks
  // a domain its binlog has), other channels' domains are kept.
  const from = parseGtidPos(gtidPos);
  const merged = parseGtidPos(String((await replica.value('SELECT @@gtid_slave_pos')) ?? ''));
  for (const [domain, g] of parseGtidPos(await readBinlogPos(replica))) {
    if (!from.has(domain)) merged.set(domain, g);
  }
  for (const [domain, g] of from) merged.set(domain, g);
  await replica.query('SET GLOBAL gtid_slave_pos = ?', [[...merged.values()].map((g) => g.text).join(',')]);
  await replica.query(`START SLAVE ${conn}`);
}

/** Where the replica's server reads option files (e.g. /etc/mysql/mariadb.conf.d). */
export interface ChannelOptions {
  /**
   * The channel's filter is also written there, because `SET GLOBAL name.replicate_do_db` lasts
   * only until the server restarts, while the channel itself is kept and restarts with the
   * server: without the file a restarted replica would apply every database of the source.
   */
  configDir?: string;
}

/** The option file of a channel's filter. */
export function channelConfigPath(configDir: string, name: string): string {
  return join(configDir, `${name}.cnf`);
}

/** The option file text that keeps a channel's filter across restarts of the replica. */
export function channelConfig(name: string, databases: readonly string[]): string {
  return `# Written by Ferry for the migration channel ${name}; removed with the channel.\n[mariadbd]\n${name}.replicate_do_db=${databases.join(',')}\n`;
}

/** The state of a channel, for events and checks. */
export interface ChannelStatus {
  ioRunning: string;
  sqlRunning: boolean;
  /** Seconds_Behind_Master, or null while not computable (stopped, not connected). */
  secondsBehind: number | null;
  /** The replica's applied position (gtid_slave_pos). */
  appliedPos: string;
  /** The IO or SQL thread's error, with the server's message; empty when none. */
  lastError: string;
}

/** SHOW SLAVE 'name' STATUS; DB_REPLICATION when there is no such channel. */
export async function channelStatus(replica: Db, name: string): Promise<ChannelStatus> {
  const rows = await replica
    .query<Record<string, unknown>>(`SHOW SLAVE ${literal(name)} STATUS`)
    .catch((e: FerryError) => {
      throw new FerryError('DB_REPLICATION', `replication channel ${name}: ${e.message}`, { cause: e });
    });
  const r = rows[0];
  if (!r) throw new FerryError('DB_REPLICATION', `no replication channel ${name}`);
  const ioErr = String(r.Last_IO_Error ?? '');
  const sqlErr = String(r.Last_SQL_Error ?? '');
  const sb = r.Seconds_Behind_Master;
  return {
    ioRunning: String(r.Slave_IO_Running ?? ''),
    sqlRunning: r.Slave_SQL_Running === 'Yes',
    secondsBehind: sb === null || sb === undefined ? null : Number(sb),
    appliedPos: String((await replica.value('SELECT @@gtid_slave_pos')) ?? ''),
    lastError: sqlErr || ioErr,
  };
}

/** Lag of a channel: seconds (the replica's estimate) and transactions of the source's domains not applied yet. */
export interface ChannelLag {
  seconds: number | null;
  transactions: number;
}

/** The channel's lag against the source's current position. */
export async function channelLag(source: Db, replica: Db, name: string): Promise<ChannelLag> {
  const sourcePos = parseGtidPos(await readBinlogPos(source));
  const st = await channelStatus(replica, name);
  const applied = parseGtidPos(st.appliedPos);
  let behind = 0n;
  for (const [domain, g] of sourcePos) {
    const a = applied.get(domain);
    const d = g.seq - (a?.seq ?? 0n);
    if (d > 0n) behind += d;
  }
  return { seconds: st.secondsBehind, transactions: Number(behind) };
}

/** DB_REPLICATION with the server's message when the channel stopped on an error. */
async function assertHealthy(replica: Db, name: string): Promise<void> {
  const st = await channelStatus(replica, name);
  if (st.lastError || !st.sqlRunning) {
    throw new FerryError(
      'DB_REPLICATION',
      `replication channel ${name} stopped${st.lastError ? `: ${st.lastError}` : ' (its SQL thread is not running)'}`,
    );
  }
}

/**
 * Wait until the replica has applied `gtidPos` (MASTER_GTID_WAIT in short steps, checking the
 * channel between them). DB_CATCHUP_TIMEOUT after `timeoutMs`; DB_REPLICATION when the channel
 * stops with an error meanwhile. Resolves with the time waited in ms.
 */
export async function waitForPosition(
  replica: Db,
  name: string,
  gtidPos: string,
  timeoutMs: number,
): Promise<number> {
  parseGtidPos(gtidPos); // MASTER_GTID_WAIT answers NULL, not an error, to a malformed position
  const started = Date.now();
  for (;;) {
    const left = timeoutMs - (Date.now() - started);
    const step = Math.max(0, Math.min(left, 200)) / 1000;
    const r = await replica.value('SELECT MASTER_GTID_WAIT(?, ?)', [gtidPos, step]);
    if (r === null || r === undefined) {
      throw new FerryError('DB_QUERY', `MASTER_GTID_WAIT could not wait for ${JSON.stringify(gtidPos)}`);
    }
    if (Number(r) === 0) return Date.now() - started;
    await assertHealthy(replica, name);
    if (Date.now() - started >= timeoutMs) {
      const st = await channelStatus(replica, name);
      throw new FerryError(
        'DB_CATCHUP_TIMEOUT',
        `the target did not reach ${gtidPos} within ${timeoutMs} ms (it has applied ${st.appliedPos || 'nothing'})`,
      );
    }
  }
}

/** Stop the channel and remove it (RESET SLAVE ALL); nothing when it does not exist. */
export async function removeChannel(replica: Db, name: string, opts: ChannelOptions = {}): Promise<void> {
  const rows = await replica.query(`SHOW SLAVE ${literal(name)} STATUS`).catch(() => []);
  if (rows.length > 0) {
    await replica.query(`STOP SLAVE ${literal(name)}`);
    await replica.query(`RESET SLAVE ${literal(name)} ALL`);
  }
  if (opts.configDir) await rm(channelConfigPath(opts.configDir, name), { force: true });
}
