/**
 * `DatabaseMover`: the host agent's side of moving a site's MariaDB databases (the database
 * methods of `HostDriver`, ports.ts), built from this component's blocks against the server's own
 * MariaDB, reached as the administrator of `--mariadb-defaults-file`.
 *
 * Per-migration state is kept in `<dataDir>/databases/<migration>.json` (mode 0600, replaced
 * atomically): the site's databases, the accounts and grants recorded before a freeze, what the
 * copy created, the channel, the take-over's result. So a repeated call, or one after an agent
 * restart, finds what the first did: a finished copy returns its result, a take-over its
 * writer position, a thaw the grants recorded at the freeze. The origin's state also keeps the
 * migration user's password, so that a renewed source does not break a running channel.
 *
 * The target cannot read the origin's accounts itself: the migration user may read only the
 * site's databases. So the origin publishes the site's accounts (CREATE USER with the password
 * hash, and the grants on the site's databases) in a table only that user may read,
 * `ferry_accounts.<migration user>`, written with the binary log off for the session (it
 * replicates nowhere) and dropped with the user.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../../common/errors.js';
import { KeyedLock } from '../../common/keyed-lock.js';
import {
  estimateCopyInHoldMs,
  type DatabaseDeclaration,
  type DatabaseLag,
  type DatabasePlanOptions,
  type DatabaseSource,
  type SiteDatabasesPlan,
} from '../../migration/ports.js';
import { Db, ident, literal, withDb, type DbEndpoint } from './client.js';
import {
  checkOrigin,
  checkTarget,
  databaseSizes,
  missingDatabases,
  readServerInfo,
  throwIfProblems,
  type DbProblem,
  type ServerInfo,
} from './checks.js';
import {
  copyDatabases,
  createSiteAccounts,
  dropPartialCopy,
  dropSiteAccounts,
  readSiteAccounts,
  type SiteAccount,
} from './copy.js';
import { discoverDatabases, type DatabaseLeftInPlace } from './discovery.js';
import { readOptionFile } from './option-file.js';
import {
  channelName,
  channelStatus,
  createMigrationUser,
  dropMigrationUser,
  parseGtidPos,
  readBinlogPos,
  removeChannel,
  startChannel,
  waitForPosition,
  type ChannelSource,
} from './replication.js';
import { freezeSiteWrites, thawSiteWrites } from './writes.js';

/** Where the agent's MariaDB is and how to administer it (`ferry agent --mariadb-*`). */
export interface MariaDbAgentOptions {
  /** Option file with the administrator account (`[client]` user, password, socket or host, port). */
  defaultsFile: string;
  /** The address other servers reach this MariaDB at, and the one it replicates from. */
  address: string;
  /** Default 3306. */
  port?: number;
  /** CA (PEM file) of this MariaDB's certificate, handed to replicas. */
  caFile?: string;
  /** Where a channel's filter option file goes. Default /etc/mysql/mariadb.conf.d. */
  optionDir?: string;
}

export interface DatabaseMoverOptions extends MariaDbAgentOptions {
  /** The agent's data dir: state in `databases/`, CA files for mariadbd in `mariadb-ca/`. */
  dataDir: string;
  /** This server's addresses: a DB_HOST naming one of them is this server. */
  localAddresses: readonly string[];
  /** The site's wp-config.php, when its web server serves a WordPress from it. */
  findWpConfig: (domain: string) => Promise<string | undefined>;
}

/** What one migration did on this server (the state file). Holds grants and a password hash: 0600. */
interface MigrationState {
  migrationId: string;
  domain: string;
  databases: string[];
  /** The application's own database users (wp-config's DB_USER, or the declared ones). */
  users: string[];
  /** Source side: the migration's replication user, and its password (a renewal keeps it). */
  source?: { user: string; host: string; password: string };
  /** The site's accounts as they were before `freezeDatabases`: `thawDatabases` gives them back. */
  frozen?: SiteAccount[];
  /** The freeze completed (every revoke done, the sessions gone). */
  frozenDone?: boolean;
  /** Replica side: the accounts (full grants) given their writes at the take-over. */
  accounts?: SiteAccount[];
  /** Replica side: this migration created the databases and accounts (a drop may remove them). */
  created?: boolean;
  copied?: { bytes: number; ms: number };
  /** Replica side: the copy was made inside the hold, with no channel (copy-in-hold). */
  copyInHold?: boolean;
  channel?: string;
  takenOver?: { waitedMs: number; writerPosition: string };
}

/** Ferry's own accounts (migration users) are never a site's. */
const isSiteAccount = (a: SiteAccount) => !a.user.startsWith('ferry_');

/** The prerequisites of replication that the copy-in-hold mode does without. */
const BINLOG_CODES: ReadonlySet<string> = new Set(['DB_BINLOG_OFF', 'DB_BINLOG_FORMAT', 'DB_GTID']);

/** The database that holds the accounts an origin publishes for its migration users. */
const ACCOUNTS_DB = 'ferry_accounts';

/** The site's databases as the application or ferry.yaml says, and those left in place. */
export async function findSiteDatabases(
  domain: string,
  declared: readonly DatabaseDeclaration[] | undefined,
  opts: Pick<DatabaseMoverOptions, 'findWpConfig' | 'localAddresses'>,
): Promise<{
  move: Array<{ name: string; users: string[]; source: string }>;
  leftInPlace: DatabaseLeftInPlace[];
}> {
  const d = declared ?? [];
  // Declared databases replace the application's config (which may be the one that cannot be read).
  const wpConfig = d.length ? undefined : await opts.findWpConfig(domain);
  const found = await discoverDatabases({
    ...(wpConfig ? { wpConfig } : {}),
    declared: d.map((x) => ({
      name: x.name,
      user: x.users?.[0] ?? '',
      password: '',
      ...(x.host ? { host: x.host } : {}),
    })),
    localAddresses: opts.localAddresses,
  });
  // PostgreSQL is not moved yet: on this server it is refused, on a shared host it stays in place.
  const pg = found.move.filter((m) => d.find((x) => x.name === m.name)?.engine === 'postgresql');
  if (pg.length > 0) {
    throw new FerryError(
      'DB_ENGINE_UNSUPPORTED',
      `${domain}'s database ${pg.map((m) => m.name).join(', ')} is a PostgreSQL database on this server, and Ferry moves MariaDB databases only. ` +
        'What is missing: logical replication to the target (a publication per database on the origin, with wal_level=logical; ' +
        "a subscription on the target; revoking the site role's writes for the switch). Move it by hand, or put it on a host both servers reach and declare that host (it is then left in place)",
    );
  }
  return {
    move: found.move.map((m) => {
      const decl = d.find((x) => x.name === m.name);
      return { name: m.name, users: decl ? (decl.users ?? []) : m.user ? [m.user] : [], source: m.source };
    }),
    leftInPlace: found.leftInPlace,
  };
}

/** The agent's database methods; one instance per agent. */
export class DatabaseMover {
  private admin: DbEndpoint | undefined;
  private caPem: string | undefined;
  private readonly stateDir: string;
  private readonly caDir: string;
  private readonly optionDir: string;
  private readonly locks = new KeyedLock();

  constructor(private readonly opts: DatabaseMoverOptions) {
    this.stateDir = join(opts.dataDir, 'databases');
    this.caDir = join(opts.dataDir, 'mariadb-ca');
    this.optionDir = opts.optionDir ?? '/etc/mysql/mariadb.conf.d';
  }

  /** Read the option file and the CA: AGENT_OPTIONS when one cannot be used. */
  async start(): Promise<void> {
    this.admin = await readOptionFile(this.opts.defaultsFile);
    if (this.opts.caFile) {
      try {
        this.caPem = await readFile(this.opts.caFile, 'utf8');
      } catch (e) {
        throw new FerryError(
          'AGENT_OPTIONS',
          `cannot read --mariadb-ca ${this.opts.caFile}: ${(e as Error).message}`,
          { cause: e },
        );
      }
      if (!this.caPem.includes('-----BEGIN CERTIFICATE-----'))
        throw new FerryError('AGENT_OPTIONS', `--mariadb-ca ${this.opts.caFile} holds no PEM certificate`);
    }
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
  }

  private get port(): number {
    return this.opts.port ?? 3306;
  }

  private adminEndpoint(): DbEndpoint {
    if (!this.admin)
      throw new FerryError('DB_NOT_CONFIGURED', 'the agent has not read its MariaDB option file yet');
    return this.admin;
  }

  private withAdmin<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    return withDb(this.adminEndpoint(), fn);
  }

  // --- origin, at plan time ----------------------------------------------------------------

  /** Origin: the site's databases and their prerequisites; throws the first DB_* refusal. */
  async plan(
    domain: string,
    declared?: DatabaseDeclaration[],
    opts: DatabasePlanOptions = {},
  ): Promise<SiteDatabasesPlan> {
    const site = await findSiteDatabases(domain, declared, this.opts);
    const leftInPlace = site.leftInPlace.map(({ name, host, source, reason }) => ({
      name,
      host,
      source,
      reason,
    }));
    if (site.move.length === 0) return { move: [], leftInPlace };
    const names = site.move.map((m) => m.name);
    return this.withAdmin(async (db) => {
      const { info, problems } = await checkOrigin(db, names);
      const binlog = problems.filter((p) => BINLOG_CODES.has(p.code));
      throwIfProblems(problems.filter((p) => !BINLOG_CODES.has(p.code)));
      const sizes = await databaseSizes(db, names);
      let inHold: Pick<SiteDatabasesPlan, 'mode' | 'estimatedPauseMs' | 'binlogProblem'> = {};
      if (binlog.length) {
        const total = [...sizes.values()].reduce((a, b) => a + b, 0);
        const max = opts.copyInHoldMaxBytes ?? 0;
        if (max > 0 && total <= max) {
          inHold = {
            mode: 'copy-in-hold',
            estimatedPauseMs: estimateCopyInHoldMs(total),
            binlogProblem: binlog[0]!.message,
          };
        } else {
          const alt =
            max > 0
              ? `; the copy-in-hold mode does without it only up to copyInHoldMaxBytes (${max} bytes), and ${names.join(', ')} hold ${total} bytes`
              : `; or, for small databases, set sites[].database.copyInHoldMaxBytes to copy them inside the cut-over hold instead (the site pauses for the copy; docs/databases.md)`;
          throwIfProblems(binlog.map((p) => ({ ...p, fix: p.fix + alt })));
        }
      }
      const move: SiteDatabasesPlan['move'] = [];
      const global: DbProblem[] = [];
      for (const m of site.move) {
        const accounts = (await readSiteAccounts(db, [m.name], { users: m.users })).filter(isSiteAccount);
        for (const a of accounts.filter((x) => x.globalPrivileges)) {
          global.push({
            code: 'DB_GLOBAL_PRIVILEGES',
            message: `'${a.user}'@'${a.host}' can write every database (privileges ON *.*), so ${m.name} cannot be made read-only for it alone`,
            fix: 'give the site a database user with grants on its own databases only',
          });
        }
        move.push({
          name: m.name,
          bytes: sizes.get(m.name) ?? 0,
          users: [...new Set(accounts.map((a) => a.user))],
          source: m.source,
        });
      }
      throwIfProblems(global);
      return { move, leftInPlace, originVersion: info.version, ...inHold };
    });
  }

  /** Target: same or newer MariaDB, no database or user of the site here already. */
  async check(_domain: string, plan: SiteDatabasesPlan): Promise<{ replicaAddress: string }> {
    const names = plan.move.map((m) => m.name);
    if (names.length > 0) {
      await this.withAdmin(async (db) => {
        const m = /^(\d+)\.(\d+)\.(\d+)/.exec(plan.originVersion ?? '');
        // server_id and gtid_domain_id are compared at the copy, where the origin answers itself.
        const origin: ServerInfo = {
          version: plan.originVersion ?? 'an unknown version',
          versionParts: m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [0, 0, 0],
          mariadb: /mariadb/i.test(plan.originVersion ?? 'mariadb'),
          serverId: Number.NaN,
          gtidDomainId: Number.NaN,
          logBin: true,
          binlogFormat: 'ROW',
          gtidStrictMode: true,
          tls: false,
        };
        const users = [...new Set(plan.move.flatMap((x) => x.users))];
        const existing = users.length
          ? await db.query<{ user: string; host: string }>(
              'SELECT User AS user, Host AS host FROM mysql.global_priv WHERE User IN (?)',
              [users],
            )
          : [];
        const { problems } = await checkTarget(db, origin, names, existing);
        throwIfProblems(problems);
      });
    }
    return { replicaAddress: this.opts.address };
  }

  // --- origin: the migration's source ----------------------------------------------------------

  /** Create (or renew, same password) the migration user for `replicaAddress` and publish the site's accounts to it. */
  openSource(
    migrationId: string,
    domain: string,
    replicaAddress: string,
    declared?: DatabaseDeclaration[],
  ): Promise<DatabaseSource> {
    return this.locked(migrationId, async () => {
      const st = await this.stateFor(migrationId, domain, declared);
      if (st.databases.length === 0)
        throw new FerryError('DB_CONFIG', `${domain} has no database on this server to move`);
      return this.withAdmin(async (db) => {
        const tls = String(await db.value('SELECT @@have_ssl')) === 'YES';
        if (tls && !this.caPem) {
          throw new FerryError(
            'DB_NOT_CONFIGURED',
            "this server's MariaDB has a certificate: give the agent its CA with --mariadb-ca, so that the target can verify it",
          );
        }
        const user = channelName(migrationId);
        const password =
          st.source && st.source.host === replicaAddress
            ? st.source.password
            : randomBytes(18).toString('base64url');
        // A new replica address: the old account goes (its channel, if any, was the previous target's).
        if (st.source && st.source.host !== replicaAddress) await dropMigrationUser(db, st.source);
        st.source = { user, host: replicaAddress, password };
        await this.save(st);
        await createMigrationUser(db, st.source, st.databases);
        const accounts = (await readSiteAccounts(db, st.databases, { users: st.users })).filter(
          isSiteAccount,
        );
        // The recorded grants of a freeze are the real ones while the site is frozen.
        await publishAccounts(db, user, replicaAddress, st.frozen ?? accounts);
        return {
          host: this.opts.address,
          port: this.port,
          user,
          password,
          ...(tls && this.caPem ? { caPem: this.caPem } : {}),
        };
      });
    });
  }

  /** Drop the migration user and its published accounts. Idempotent. */
  closeSource(migrationId: string): Promise<void> {
    return this.locked(migrationId, async () => {
      const user = channelName(migrationId);
      await this.withAdmin(async (db) => {
        const hosts = await db.query<{ host: string }>(
          'SELECT Host AS host FROM mysql.global_priv WHERE User = ?',
          [user],
        );
        for (const { host } of hosts) await dropMigrationUser(db, { user, host });
        await unpublishAccounts(db, user);
      });
      const st = await this.load(migrationId);
      if (st?.source) {
        delete st.source;
        await this.save(st);
      }
    });
  }

  // --- target: copy, channel, lag, take-over ---------------------------------------------------

  /** Copy, recreate the accounts frozen, start the channel; a finished copy returns its result. */
  copy(
    migrationId: string,
    domain: string,
    source: DatabaseSource,
    plan: SiteDatabasesPlan,
    opts: { timeoutMs?: number } = {},
  ): Promise<{ bytes: number; ms: number }> {
    const inHold = plan.mode === 'copy-in-hold';
    return this.locked(migrationId, async () => {
      const prev = await this.load(migrationId);
      if (prev?.copied) return prev.copied;
      const databases = plan.move.map((m) => m.name);
      if (databases.length === 0)
        throw new FerryError('DB_CONFIG', `the plan of ${domain} moves no database`);
      const srcEp: DbEndpoint = {
        host: source.host,
        port: source.port,
        user: source.user,
        password: source.password,
        ...(source.caPem ? { caPem: source.caPem } : {}),
      };
      const name = channelName(migrationId);
      return this.withAdmin(async (t) => {
        // An attempt that died mid-way (an agent killed) left a partial copy: it goes first.
        if (prev?.created) await this.removeCopy(t, prev);
        const { origin, accounts } = await readSource(srcEp);
        const own = await readServerInfo(t);
        const problems: DbProblem[] = [];
        // Without a channel the two servers' ids never meet.
        if (!inHold && own.serverId === origin.serverId)
          problems.push({
            code: 'DB_GTID',
            message: `both servers have server_id ${own.serverId}`,
            fix: 'give every MariaDB server its own server_id',
          });
        if (!inHold && own.gtidDomainId === origin.gtidDomainId)
          problems.push({
            code: 'DB_GTID',
            message: `both servers write GTIDs in domain ${own.gtidDomainId}`,
            fix: 'give each server its own gtid_domain_id (e.g. its server_id)',
          });
        throwIfProblems(problems);
        const absent = new Set(await missingDatabases(t, databases));
        const here = databases.filter((d) => !absent.has(d));
        if (here.length)
          throw new FerryError(
            'DB_EXISTS',
            `the target already has database ${here.join(', ')}; Ferry never overwrites one`,
          );
        const st: MigrationState = {
          migrationId,
          domain,
          databases,
          users: [...new Set(plan.move.flatMap((m) => m.users))],
          accounts,
          created: true,
          ...(inHold ? { copyInHold: true } : {}),
        };
        await this.save(st);
        try {
          const channelSource = await this.channelSource(name, source);
          const r = await copyDatabases({
            origin: srcEp,
            target: this.adminEndpoint(),
            targetDb: t,
            databases,
            ...(inHold ? { position: false } : {}),
            ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
          });
          await createSiteAccounts(t, accounts);
          // Until the take-over only replication writes the copy.
          await freezeSiteWrites(t, accounts);
          if (inHold) {
            st.copied = { bytes: r.bytes, ms: r.ms };
            await this.save(st);
            return st.copied;
          }
          await startChannel(t, name, channelSource, databases, r.gtidPos, { configDir: this.optionDir });
          st.copied = { bytes: r.bytes, ms: r.ms };
          st.channel = name;
          await this.save(st);
          return st.copied;
        } catch (e) {
          await this.removeCopy(t, st).catch(() => undefined);
          await this.save(st).catch(() => undefined);
          throw e;
        }
      });
    });
  }

  /** The channel's lag: seconds, and transactions received from the source but not applied yet. */
  async lag(migrationId: string): Promise<DatabaseLag> {
    const st = await this.load(migrationId);
    if (st?.takenOver) return { seconds: 0, transactions: 0, error: '' };
    // The copy is running: no channel yet, nothing known.
    if (st?.created && !st.channel) return { seconds: null, transactions: null, error: '' };
    const name = st?.channel ?? channelName(migrationId);
    return this.withAdmin(async (t) => {
      const status = await channelStatus(t, name);
      const [row] = await t.query<Record<string, unknown>>(`SHOW SLAVE ${literal(name)} STATUS`);
      let transactions: number | null = null;
      try {
        const received = parseGtidPos(String(row?.Gtid_IO_Pos ?? ''));
        const applied = parseGtidPos(status.appliedPos);
        let behind = 0n;
        for (const [domain, g] of received) {
          const d = g.seq - (applied.get(domain)?.seq ?? 0n);
          if (d > 0n) behind += d;
        }
        transactions = Number(behind);
      } catch {
        transactions = null; // a position this version cannot read
      }
      return { seconds: status.secondsBehind, transactions, error: status.lastError };
    });
  }

  /** Wait (bounded) for `position`, remove the channel, give the site's users their writes. */
  takeOver(
    migrationId: string,
    domain: string,
    position: string,
    timeoutMs: number,
  ): Promise<{ waitedMs: number; writerPosition: string }> {
    return this.locked(migrationId, async () => {
      const st = await this.load(migrationId);
      if (st?.takenOver) return st.takenOver;
      if (st?.copyInHold && st.copied) {
        // Copied inside the hold from the frozen origin: nothing to wait for.
        const copied = st;
        return this.withAdmin(async (t) => {
          await thawSiteWrites(t, copied.accounts ?? []);
          copied.takenOver = { waitedMs: 0, writerPosition: await readBinlogPos(t) };
          await this.save(copied);
          return copied.takenOver;
        });
      }
      if (!st?.channel)
        throw new FerryError(
          'DB_REPLICATION',
          `no replication channel of migration ${migrationId} for ${domain} on this server`,
        );
      const channel = st.channel;
      return this.withAdmin(async (t) => {
        const waitedMs = await waitForPosition(t, channel, position, timeoutMs);
        await removeChannel(t, channel, { configDir: this.optionDir });
        await thawSiteWrites(t, st.accounts ?? []);
        st.takenOver = { waitedMs, writerPosition: await readBinlogPos(t) };
        await this.save(st);
        await rm(this.caPath(channel), { force: true });
        return st.takenOver;
      });
    });
  }

  /** The reverse channel of a rollback: start it from `position`, no copy. Idempotent. */
  startReverse(migrationId: string, domain: string, source: DatabaseSource, position: string): Promise<void> {
    return this.locked(migrationId, async () => {
      const prev = await this.load(migrationId);
      if (prev?.takenOver) return;
      const name = channelName(migrationId);
      await this.withAdmin(async (t) => {
        if (prev?.channel && (await t.query(`SHOW SLAVE ${literal(name)} STATUS`)).length > 0) return;
        const st = prev ?? (await this.stateFor(migrationId, domain));
        if (st.databases.length === 0)
          throw new FerryError('DB_CONFIG', `${domain} has no database on this server to replicate into`);
        // The writes come back with the grants the forward migration's freeze recorded here.
        st.accounts =
          st.accounts ??
          (await this.siblings(domain, migrationId)).find((s) => s.frozen)?.frozen ??
          (await readSiteAccounts(t, st.databases, { users: st.users })).filter(isSiteAccount);
        await startChannel(t, name, await this.channelSource(name, source), st.databases, position, {
          configDir: this.optionDir,
        });
        st.channel = name;
        await this.save(st);
      });
    });
  }

  /** Rollback before the switch: the channel, the copied databases and accounts go. Idempotent. */
  dropCopy(migrationId: string, _domain: string): Promise<void> {
    return this.locked(migrationId, async () => {
      const st = await this.load(migrationId);
      await this.withAdmin(async (t) => {
        await removeChannel(t, st?.channel ?? channelName(migrationId), { configDir: this.optionDir });
        // After a take-over the copy is the site's live database: only the channel goes.
        if (st && !st.takenOver) await this.removeCopy(t, st);
      });
      if (st) {
        delete st.channel;
        await this.save(st);
      }
      await rm(this.caPath(channelName(migrationId)), { force: true });
    });
  }

  // --- either side: the site's writes ----------------------------------------------------------

  /** The site's users lose their writes here (their grants recorded first); returns the position after. */
  freeze(migrationId: string, domain: string): Promise<{ position: string }> {
    return this.locked(migrationId, async () => {
      const st = await this.stateFor(migrationId, domain);
      return this.withAdmin(async (db) => {
        if (!st.frozen) {
          // Recorded before anything is revoked: a crash in the middle still thaws to these.
          st.frozen = (await readSiteAccounts(db, st.databases, { users: st.users })).filter(isSiteAccount);
          await this.save(st);
        }
        // A repeat after a complete freeze changes nothing (the revokes would add to the binary log).
        if (!st.frozenDone) {
          await freezeSiteWrites(db, st.frozen);
          st.frozenDone = true;
          await this.save(st);
        }
        return { position: await readBinlogPos(db) };
      });
    });
  }

  /** The grants recorded at the freeze come back. Nothing when not frozen. */
  thaw(migrationId: string, _domain: string): Promise<void> {
    return this.locked(migrationId, async () => {
      const st = await this.load(migrationId);
      if (!st?.frozen) return;
      const frozen = st.frozen;
      await this.withAdmin((db) => thawSiteWrites(db, frozen));
      delete st.frozen;
      delete st.frozenDone;
      await this.save(st);
    });
  }

  // --- internals -----------------------------------------------------------------------------

  /** The channel, the databases and the accounts this migration created here. */
  private async removeCopy(t: Db, st: MigrationState): Promise<void> {
    await removeChannel(t, st.channel ?? channelName(st.migrationId), { configDir: this.optionDir });
    if (st.created) {
      // A loader left by an agent that died mid-copy may still be writing into them: it stops first.
      const loaders = await t.query<{ id: string | number }>(
        'SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB IN (?) AND ID <> CONNECTION_ID()',
        [st.databases],
      );
      for (const { id } of loaders) await t.query('KILL CONNECTION ?', [Number(id)]).catch(() => undefined);
      await dropPartialCopy(t, st.databases);
      await dropSiteAccounts(t, st.accounts ?? []);
      st.created = false;
    }
    delete st.channel;
    delete st.copied;
  }

  /** This migration's state, else one begun from another migration of the site here, else discovery. */
  private async stateFor(
    migrationId: string,
    domain: string,
    declared?: DatabaseDeclaration[],
  ): Promise<MigrationState> {
    const own = await this.load(migrationId);
    if (own) return own;
    const sibling = (await this.siblings(domain, migrationId))[0];
    if (sibling) return { migrationId, domain, databases: sibling.databases, users: sibling.users };
    const site = await findSiteDatabases(domain, declared, this.opts);
    return {
      migrationId,
      domain,
      databases: site.move.map((m) => m.name),
      users: [...new Set(site.move.flatMap((m) => m.users))],
    };
  }

  /**
   * Other migrations' states of `domain` on this server, those whose id begins `migrationId`
   * first (`m1` for `m1-reverse`), then the newest.
   */
  private async siblings(domain: string, migrationId: string): Promise<MigrationState[]> {
    const files = await readdir(this.stateDir).catch(() => [] as string[]);
    const out: Array<{ st: MigrationState; related: boolean; at: number }> = [];
    for (const f of files.filter((x) => x.endsWith('.json'))) {
      const st = await readFile(join(this.stateDir, f), 'utf8').then(
        (t) => JSON.parse(t) as MigrationState,
        () => undefined,
      );
      if (st && st.domain === domain && st.migrationId !== migrationId) {
        const at = (await stat(join(this.stateDir, f)).catch(() => undefined))?.mtimeMs ?? 0;
        out.push({ st, related: migrationId.startsWith(st.migrationId), at });
      }
    }
    return out.sort((a, b) => Number(b.related) - Number(a.related) || b.at - a.at).map((x) => x.st);
  }

  private statePath(migrationId: string): string {
    const h = createHash('sha256').update(migrationId).digest('hex').slice(0, 12);
    return join(this.stateDir, `${channelName(migrationId)}-${h}.json`);
  }

  private async load(migrationId: string): Promise<MigrationState | undefined> {
    return readFile(this.statePath(migrationId), 'utf8').then(
      (t) => JSON.parse(t) as MigrationState,
      () => undefined,
    );
  }

  private async save(st: MigrationState): Promise<void> {
    const path = this.statePath(st.migrationId);
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    await writeFile(`${path}.tmp`, JSON.stringify(st, null, 2) + '\n', { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }

  private caPath(channel: string): string {
    return join(this.caDir, `${channel}.pem`);
  }

  /** The source's CA as a file the replica's mariadbd (user mysql) can read. */
  /** What channel `channel` connects to: `source`, its CA (if any) written where MariaDB reads it. */
  private async channelSource(channel: string, source: DatabaseSource): Promise<ChannelSource> {
    const { host, port, user, password, caPem } = source;
    if (!caPem) return { host, port, user, password };
    await mkdir(this.caDir, { recursive: true, mode: 0o755 });
    const caFile = this.caPath(channel);
    await writeFile(caFile, caPem, { mode: 0o644 });
    await chmod(caFile, 0o644);
    return { host, port, user, password, caFile };
  }

  private locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(key, fn);
  }
}

/** Publish the site's accounts for the migration user alone, outside the binary log. */
async function publishAccounts(db: Db, user: string, host: string, accounts: SiteAccount[]): Promise<void> {
  const table = `${ident(ACCOUNTS_DB)}.${ident(user)}`;
  await db.query('SET SESSION sql_log_bin = 0');
  await db.query(`CREATE DATABASE IF NOT EXISTS ${ident(ACCOUNTS_DB)}`);
  await db.query(`CREATE OR REPLACE TABLE ${table} (accounts LONGTEXT NOT NULL)`);
  await db.query(`INSERT INTO ${table} VALUES (?)`, [JSON.stringify(accounts)]);
  await db.query(`GRANT SELECT ON ${table} TO ${literal(user)}@${literal(host)}`);
}

async function unpublishAccounts(db: Db, user: string): Promise<void> {
  await db.query('SET SESSION sql_log_bin = 0');
  await db.query(`DROP TABLE IF EXISTS ${ident(ACCOUNTS_DB)}.${ident(user)}`);
  const left = await db.value('SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?', [
    ACCOUNTS_DB,
  ]);
  if (Number(left) === 0) await db.query(`DROP DATABASE IF EXISTS ${ident(ACCOUNTS_DB)}`);
}

/** The source's facts and the accounts it published, as the migration user (proves the target reaches it). */
async function readSource(ep: DbEndpoint): Promise<{ origin: ServerInfo; accounts: SiteAccount[] }> {
  let db: Db;
  try {
    db = await Db.open(ep);
  } catch (e) {
    const err = e as FerryError;
    throw new FerryError(
      err.code ?? 'DB_UNREACHABLE',
      `the target cannot reach the origin's MariaDB: ${err.message}`,
      {
        cause: e,
      },
    );
  }
  try {
    const origin = await readServerInfo(db);
    const text = await db.value(`SELECT accounts FROM ${ident(ACCOUNTS_DB)}.${ident(ep.user)}`);
    const accounts = JSON.parse(String(text ?? '[]')) as SiteAccount[];
    return { origin, accounts };
  } finally {
    await db.close();
  }
}
