/**
 * What the orchestrator needs from the world, as interfaces: a DNS provider and hosting servers.
 * A hosting server is a host agent (`HostAgent`), driven in-process (the sandbox) or through its
 * HTTP API (`HttpHostDriver`); DNS is the embedded server, any primary through RFC 2136, or PowerDNS's HTTP API. Every operation is idempotent, so that a
 * resumed migration can repeat the step it was in.
 */
import type { SiteNeeds, WebSite, WebSitesReport } from '../agent/webconfig/model.js';
import type { SiteMode, SiteStats } from '../host/index.js';
import type { RelayStats } from '../relay/index.js';

/** The authoritative DNS the domain lives in. */
export interface DnsProvider {
  /** Current RRset (presentation-format rdata), or undefined when the name has none of that type. */
  getRRset(name: string, type: string): Promise<{ ttl: number; rdata: string[] } | undefined>;
  /** Replace the RRset atomically; returns the zone's new SOA serial. */
  replaceRRset(name: string, type: string, ttl: number, rdata: string[]): Promise<{ serial: number }>;
  /**
   * What every authoritative server of the zone answers now: its SOA serial and the RRset. The
   * propagation check waits until all of them show at least the serial of the change.
   */
  observe(
    name: string,
    type: string,
  ): Promise<Array<{ server: string; serial: number | null; rdata: string[] }>>;
}

/** Counters of a redirect at the temporary IP: the part of the engines' stats the waits use. */
export type RedirectStats = Pick<
  RelayStats,
  'activeConnections' | 'totalConnections' | 'bytesToUpstream' | 'bytesToClient' | 'lastConnectionAt' | 'held'
>;

/**
 * Progress of one sync pass while it runs, as the copying side knows it: `bytes` copied (or sent)
 * so far in this attempt, `percent` of the whole when the driver knows the total (rsync's estimate
 * through an agent; the in-process sync walks the source first), else null; `files` when known.
 * `attempt` is set by the retrying wrapper (resilient.ts): a retried pass starts again from 0 bytes
 * with the next attempt number, and reports of an abandoned attempt are dropped.
 */
export interface SyncProgressReport {
  bytes: number;
  percent: number | null;
  files?: number;
  attempt?: number;
}

export interface SyncSiteOptions {
  /** Called as the copy goes; as often as the driver learns something (callers throttle). */
  onProgress?: (p: SyncProgressReport) => void;
}

/**
 * What recreates a web site on the target besides its data: the agent's `WebSiteBundle` (configs,
 * pool, certificate and key, user, crontab), opaque to the orchestrator, which only carries it from
 * the origin's `exportWebSite` to the target's `installWebSite`. A secret: it never goes into the
 * journal, events, logs or error messages.
 */
export interface WebBundle {
  readonly domain: string;
}

/**
 * Operator overrides for a web site (`ferry.yaml` `sites[].web`), for layouts the agent cannot
 * read: folders its files may live under, and the directory that holds all its data; and whether
 * the domain's mail stays behind.
 */
export interface WebSiteOverrides {
  declaredRoots?: string[];
  dataDir?: string;
  /**
   * `false` (`ferry.yaml` `sites[].mail: false`): the domain's mail stays on the origin; the agent
   * neither exports, copies, holds nor relays it. Absent: the mail moves with the site.
   */
  mail?: false;
}

/**
 * A database a site's `ferry.yaml` entry declares (`sites[].databases`), for sites whose
 * application config the agent cannot read. No password: the accounts are copied as the origin's
 * MariaDB stores them. `host` as an application writes it (`localhost`, `host:port`,
 * `localhost:/path/to.sock`); another host than the origin's is left in place.
 */
export interface DatabaseDeclaration {
  name: string;
  /** The site's database users (else: every account with a grant on the database, see docs/databases.md). */
  users?: string[];
  host?: string;
  /**
   * Its server: `mariadb` (default; MySQL-compatible servers are checked as MariaDB) or
   * `postgresql`, which Ferry does not move yet: a PostgreSQL database on the origin is refused
   * at plan time (`DB_ENGINE_UNSUPPORTED`), one on a host both servers reach is left in place.
   */
  engine?: 'mariadb' | 'postgresql';
}

/** What the origin's agent found about a site's databases (no secret): the plan lists it. */
export interface SiteDatabasesPlan {
  /** On the origin's MariaDB: they move with the site. */
  move: Array<{ name: string; bytes: number; users: string[]; source: string }>;
  /** On a host both servers reach: not moved, and said so. */
  leftInPlace: Array<{ name: string; host: string; source: string; reason: string }>;
  /** The origin's MariaDB version, for the target's check (same or newer). */
  originVersion?: string;
  /**
   * `copy-in-hold` when the origin's binary log cannot be replicated (off, not ROW, no strict
   * GTIDs) and the databases are within `copyInHoldMaxBytes`: no channel, the target copies them
   * inside the cut-over hold, after the origin's freeze. Absent: replication.
   */
  mode?: 'copy-in-hold';
  /** copy-in-hold: the pause the copy is expected to add to the hold (size at COPY_IN_HOLD_BYTES_PER_S, plus a fixed part). */
  estimatedPauseMs?: number;
  /** copy-in-hold: why the binary log cannot be used (the prerequisite the mode waives). */
  binlogProblem?: string;
}

/**
 * The copy-in-hold estimate: a conservative dump-and-restore rate (bytes of data and indexes per
 * second; a restore rebuilds the indexes) and a fixed part (connections, accounts, grants).
 */
export const COPY_IN_HOLD_BYTES_PER_S = 8 * 1024 * 1024;
export const COPY_IN_HOLD_FIXED_MS = 1000;

/** The pause a copy inside the hold of `bytes` is expected to add. */
export function estimateCopyInHoldMs(bytes: number): number {
  return COPY_IN_HOLD_FIXED_MS + Math.ceil((bytes / COPY_IN_HOLD_BYTES_PER_S) * 1000);
}

/** How the origin plans a site's databases: `copyInHoldMaxBytes` > 0 allows the copy-in-hold mode up to that total size. */
export interface DatabasePlanOptions {
  copyInHoldMaxBytes?: number;
}

/**
 * Where and how the target's MariaDB connects to the origin's as the migration's own replication
 * user. A secret (its password): carried from the origin's agent to the target's by the
 * controller only, over TLS between hosts, never journaled, logged or put in an event.
 */
export interface DatabaseSource {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  /** The source's CA (PEM) when its MariaDB has a certificate: replication then verifies it. */
  readonly caPem?: string;
}

/** How far the target's replication channel is behind, for events, `ferry watch` and the dashboard. */
export interface DatabaseLag {
  /** Seconds_Behind_Master (null while the channel is not connected). */
  seconds: number | null;
  /** Transactions of the origin's site databases not yet applied (null when unknown). */
  transactions: number | null;
  /** The channel's IO/SQL error, with the server's own words; empty when none. */
  error: string;
}

/** One hosting server, as the orchestrator drives it (in-process or through its agent). */
export interface HostDriver {
  readonly id: string;
  /**
   * Set (to the agent's URL) when calls to this server cross the network unencrypted: its agent on
   * another host over plain HTTP. A web site's bundle, which holds its private keys, never goes that way.
   */
  readonly plainTransport?: string;
  /** Bring an address up on the server (no-op when already there). */
  addAddress(address: string): Promise<void>;
  removeAddress(address: string): Promise<void>;
  /** Start (or find, when already running) redirect `id`: listen on address:ports, forward to upstream. */
  startRedirect(
    id: string,
    spec: { address: string; ports: number[]; upstream: string; sourceAddress?: string },
  ): Promise<void>;
  setRedirectUpstream(id: string, upstream: string): Promise<void>;
  holdRedirect(id: string): Promise<void>;
  releaseRedirect(id: string): Promise<void>;
  redirectStats(id: string): Promise<RedirectStats | undefined>;
  stopRedirect(id: string): Promise<void>;
  /** Site (virtual host) management on this server's built-in site server or web server. */
  addSite(domain: string, mode: SiteMode): Promise<void>;
  removeSite(domain: string): Promise<void>;
  hasSite(domain: string): Promise<boolean>;
  setSiteMode(domain: string, mode: SiteMode): Promise<void>;
  siteStats(domain: string): Promise<SiteStats>;
  /** Wait until no request for the site is in flight; false on timeout. */
  waitSiteIdle(domain: string, timeoutMs: number): Promise<boolean>;
  /**
   * Copy the site's data to `to` (a delta after the first pass); the receiver reloads it.
   * `opts.onProgress` hears how far the copy is; no report comes after the promise settles.
   */
  syncSite(domain: string, to: HostDriver, opts?: SyncSiteOptions): Promise<{ files: number; bytes: number }>;
  /** GET a path of the site on one of this server's addresses (preflight parity). */
  probe(
    domain: string,
    address: string,
    port: number,
    path: string,
  ): Promise<{ status: number; bodySha256: string }>;
  /**
   * The site's mode now, or null when the server does not host it. Optional for older agents;
   * without it a resumed migration relies on its journal alone to know whether it had switched.
   */
  siteMode?(domain: string): Promise<SiteMode | null>;
  /** Addresses brought up through `addAddress` and still up (optional; used to record real state). */
  listAddresses?(): Promise<string[]>;

  // A site of the server's own web server (an nginx or Apache virtual host), moved through a gate:
  // the agent's site app put in front of the site's own vhost. Optional: agents without a web
  // server (`--web-config`) move built-in sites only. Every one is idempotent.

  /** The sites of the server's own web server, each with whether Ferry can move it and why not. */
  webSites?(): Promise<WebSitesReport>;
  /** One site of the server's own web server by one of its names, or null when none has it. */
  inspectWebSite?(domain: string, overrides?: WebSiteOverrides): Promise<WebSite | null>;
  /**
   * Whether this server (the target) can host the site: its web server kind, and each PHP-FPM
   * version and module in `needs` (the origin's inspection's `requires`). Throws `TARGET_LACKS`
   * naming what it lacks; changes nothing. `installWebSite` runs the same check.
   */
  checkWebSite?(domain: string, needs: SiteNeeds): Promise<void>;
  /** Put the gate in front of the site (origin, before the temporary IP; one web-server reload). */
  gateWebSite?(domain: string, overrides?: WebSiteOverrides): Promise<void>;
  /** Everything but the data that recreates the site elsewhere (a secret). */
  exportWebSite?(domain: string, overrides?: WebSiteOverrides): Promise<WebBundle>;
  /** Recreate the site from the origin's bundle (target); it ends a gated site, mode readonly. */
  installWebSite?(bundle: WebBundle): Promise<void>;
  /** Take the gate away and restore the site's own vhost (rollback on the origin). */
  ungateWebSite?(domain: string): Promise<void>;
  /** Remove everything `installWebSite` made (rollback on the target). */
  uninstallWebSite?(domain: string): Promise<void>;
  /**
   * After the drain: on the target the gate goes (the plain vhost serves); on the origin the
   * site's vhost, pool, crontab and data go into a backup kept `backupKeepMs`.
   */
  finishWebSite?(domain: string, role: 'origin' | 'target', opts?: { backupKeepMs?: number }): Promise<void>;

  // A site's databases on the server's own MariaDB (docs/databases.md), moved by a consistent copy,
  // a replication channel named after the migration, and a bounded catch-up inside the cut-over
  // hold. Optional: agents without `--mariadb-defaults-file` have none, and a site with databases
  // to move is then refused at plan time. Every one is idempotent for one migration id.

  /** Origin: the site's databases (read from its application's config, or `declared`) and their prerequisites; throws the first `DB_*` refusal. Reads only. */
  planDatabases?(
    domain: string,
    declared?: DatabaseDeclaration[],
    opts?: DatabasePlanOptions,
  ): Promise<SiteDatabasesPlan>;
  /**
   * Target: whether it can take them (version same or newer, no database or user by those names);
   * throws the `DB_*` refusal. Reads only. `replicaAddress`: the address its MariaDB connects
   * from, for the origin's `openDatabaseSource`.
   */
  checkDatabases?(domain: string, plan: SiteDatabasesPlan): Promise<{ replicaAddress: string }>;
  /** Origin: create (or renew, on a resume) the migration's replication user for `replicaAddress`, the target as the origin sees it. */
  openDatabaseSource?(
    migrationId: string,
    domain: string,
    replicaAddress: string,
    declared?: DatabaseDeclaration[],
  ): Promise<DatabaseSource>;
  /**
   * Target: copy the site's databases from `source` (one consistent snapshot), recreate the site's
   * accounts without write privileges, and start the channel from the snapshot's position. A
   * channel of the same migration already running is kept (a resume). A failure removes what it made.
   * With `plan.mode` `copy-in-hold` (called inside the hold): the copy only, no channel, bounded
   * by `opts.timeoutMs` (`DB_CATCHUP_TIMEOUT` when it passes, the partial copy removed).
   */
  copyDatabases?(
    migrationId: string,
    domain: string,
    source: DatabaseSource,
    plan: SiteDatabasesPlan,
    opts?: { timeoutMs?: number },
  ): Promise<{ bytes: number; ms: number }>;
  /** Target: the channel's lag. */
  databaseLag?(migrationId: string): Promise<DatabaseLag>;
  /** Origin: the site's users lose their write privileges and their sessions end; returns the origin's GTID position after that. */
  freezeDatabases?(migrationId: string, domain: string): Promise<{ position: string }>;
  /** Undo `freezeDatabases` (the catch-up ran out of time, or a rollback): the recorded grants come back. */
  thawDatabases?(migrationId: string, domain: string): Promise<void>;
  /**
   * Target: wait at most `timeoutMs` until the channel has applied `position`, remove the
   * channel, give the site's users their write privileges: the target is the writer.
   * `writerPosition` is this server's own GTID position at that moment (a reverse channel starts there).
   * `DB_CATCHUP_TIMEOUT` at the bound (the channel keeps running); `DB_REPLICATION` at once when
   * the channel stopped on an error. Returns at once once done for this migration. After a
   * copy-in-hold copy there is no channel: the users get their writes, `position` is not waited for.
   */
  takeOverDatabases?(
    migrationId: string,
    domain: string,
    position: string,
    timeoutMs: number,
  ): Promise<{ waitedMs: number; writerPosition: string }>;
  /**
   * The reverse channel of a rollback after the switch, on the origin (the replica now): start
   * channel `migrationId` from `source` (the target's `openDatabaseSource`) at `position` (the
   * target's `writerPosition`), with no copy: the origin's frozen databases are the state the
   * target started from. Then `freezeDatabases` on the target and `takeOverDatabases` here.
   */
  startDatabaseChannel?(
    migrationId: string,
    domain: string,
    source: DatabaseSource,
    position: string,
  ): Promise<void>;
  /** Target, on a rollback before the switch: remove the channel, the copied databases and the recreated accounts. */
  dropDatabaseCopy?(migrationId: string, domain: string): Promise<void>;
  /** Origin, at the end or on a rollback: drop the migration's replication user. */
  closeDatabaseSource?(migrationId: string): Promise<void>;
}
