/**
 * The controller: the registry of servers and sites, the orchestrator that migrates them, and
 * one ordered event stream that the API, CLI and dashboard follow. The sandbox builds one
 * in-process; `ferry controller --config` builds one from a YAML file with remote agents.
 *
 * Derived, not stored: which temporary IPs are leased (those of unfinished and of `failed`
 * migrations in the journal) and which server hosts a site (the config, then every completed
 * migration in order; a `failed` one places it where its DNS record last pointed). A `failed`
 * migration keeps its lease and its site until an operator resolves it (rollback or resume), so
 * nothing it may still hold is handed out twice.
 */
import { EventEmitter } from 'node:events';
import { FerryError, errorMessage, isFerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';
import type { SiteMail, WebSitesReport } from '../agent/webconfig/model.js';
import {
  DEFAULT_BACKUP_KEEP_MS,
  DEFAULT_TIMINGS,
  Orchestrator,
  STEP,
  checkMailPorts,
  planSiteNames,
  TERMINAL_PHASES,
  type DatabaseDeclaration,
  type DatabaseOptions,
  type DatabasesPlanned,
  type DnsProvider,
  type HostDriver,
  type JournalStore,
  type MigrationMode,
  type MigrationRecord,
  type MigrationTimings,
  type NameLeftAlone,
  type ParityChecks,
  type RetryPolicy,
  type SiteKind,
  type WebSiteOverrides,
} from '../migration/index.js';
import { decodeCursor, encodeCursor, pageLimit, type Page, type PageRequest } from './paging.js';

/** One hosting server as the controller knows it. */
export interface ServerEntry {
  id: string;
  driver: HostDriver;
  /** Shared IPs of the server; the first is where migrated sites point (IP2) when it is a target. */
  sharedIps: string[];
  /** Temporary IPs this server may bring up, one per migration away from it. */
  tempIpPool: string[];
  /** IPv6: shared addresses (AAAA records of migrated sites point at the first) and temporary ones. */
  sharedIps6?: string[];
  tempIpPool6?: string[];
  /** Relay-host mode by default: migrations away from this server put IPt and its redirect on that server. */
  relayHost?: string;
}

/** One site (domain) as configured. */
export interface SiteEntry {
  domain: string;
  /** Id of the server hosting it when the controller first learnt of it. */
  server: string;
  /** Service ports carried through the temporary IP; the first is HTTP (probes, proxy). */
  ports: number[];
  /**
   * Preflight parity checks of the site; default GET /healthz (status, body) and GET /orders
   * (status), for a web site GET / (status, body), also over HTTPS when it has a TLS listen.
   */
  parity?: ParityChecks;
  /**
   * `builtin` (default): a site of the agent's built-in app. `web`: a site of the server's own web
   * server (nginx or Apache virtual host), moved through its gate.
   */
  kind?: SiteKind;
  /** A web site's overrides for layouts the agent cannot read (passed to the agent, checked at planning). */
  web?: WebSiteOverrides;
  /** A web site's declared databases (else the origin's agent reads them from the application's config). */
  databases?: DatabaseDeclaration[];
  /** The bounds of a web site's database catch-up at the cut-over. */
  database?: Partial<DatabaseOptions>;
  /** A web site's other names that move with it, besides those planning finds (`sites[].names`). */
  names?: string[];
  /** `false`: a web site's mail stays on the origin (`sites[].mail: false`). */
  mail?: false;
}

/** A site as `listSites` (and GET /v1/sites) shows it. */
export interface SiteSummary {
  domain: string;
  server: string;
  ports: number[];
  kind: SiteKind;
  migration: string | null;
}

export interface ControllerOptions {
  dns: DnsProvider;
  servers: ServerEntry[];
  sites: SiteEntry[];
  journal: JournalStore;
  /** Timings used when a migration does not name its own. */
  defaults?: Partial<MigrationTimings>;
  /** Events kept for late subscribers (SSE replay). Default 10,000. */
  eventHistory?: number;
  /** Timeouts and retries of agent and DNS calls. */
  retry?: Partial<RetryPolicy>;
  /** How long an origin keeps its backup of a moved web site (`migration.backupKeepDays`). Default 7 days. */
  backupKeepMs?: number;
  /**
   * Whether this controller may drive migrations now (several controllers: only the leader may;
   * see leader.ts). Starting, rolling back, resuming and evacuating are refused with NO_LEADER
   * otherwise. Default: always.
   */
  leads?: () => boolean;
}

/** An event on the controller's stream: `seq` orders them and lets a client resume. */
export interface ControllerEvent {
  seq: number;
  at: number;
  type:
    | 'phase'
    | 'step'
    | 'wait'
    | 'error'
    | 'migration'
    | 'dns'
    | 'traffic'
    | 'held'
    | 'sync'
    | 'database'
    | 'retry'
    | 'evacuation';
  migrationId: string;
  data: Record<string, unknown>;
}

export interface StartMigrationRequest {
  domain: string;
  /** Target server id. */
  to: string;
  id?: string;
  timings?: Partial<MigrationTimings>;
  /**
   * `temp-ip` (default); `direct` when the domain has a dedicated IP of the origin already (that
   * IP is redirected, no temporary IP); `relay-host` with `relayHost`, a server whose temporary
   * IP pool carries the redirect.
   */
  mode?: MigrationMode;
  relayHost?: string;
  /** Overrides the site's configured parity checks. */
  parity?: ParityChecks;
  /** What serves the site, when the config does not say (`web`: the server's own web server). */
  kind?: SiteKind;
}

/** What `previewMigration` answers: what a migration would do, without starting it. */
export interface MigrationPreview {
  domain: string;
  from: string;
  to: string;
  kind: SiteKind;
  /** The ports the temporary IP would carry. */
  ports: number[];
  /** A web site's databases: what moves, what stays, and in the copy-in-hold mode the expected pause. */
  databases?: DatabasesPlanned;
  /** A web site's names that move together (the domain first), and those left alone with why. */
  names?: string[];
  namesLeftAlone?: NameLeftAlone[];
  /** A web site's mail that moves with it (mailboxes, aliases, users, ports). */
  mail?: SiteMail;
  /** True when `sites[].mail: false` leaves the domain's mail on the origin. */
  mailStays?: boolean;
}

/** The outcome of one site in an evacuation. */
export interface EvacuationSite {
  domain: string;
  migrationId: string | null;
  phase: string;
  error?: string;
  startedAt: number;
  endedAt: number;
}

export interface EvacuateRequest {
  from: string;
  to: string;
  /** Most migrations at once; capped by the size of `from`'s temporary IP pool. Default: the pool size. */
  concurrency?: number;
  timings?: Partial<MigrationTimings>;
}

const TERMINAL: ReadonlySet<string> = TERMINAL_PHASES;

function normalize(domain: string): string {
  const d = domain.trim().toLowerCase();
  return d.endsWith('.') ? d : `${d}.`;
}

/** A server as `listServers` (and GET /v1/servers) shows it; the IPv6 lists only when it has IPv6. */
export interface ServerSummary {
  id: string;
  sharedIps: string[];
  tempIpPool: string[];
  /** Temporary IPs not leased to a migration. */
  freeTempIps: string[];
  sharedIps6?: string[];
  tempIpPool6?: string[];
  freeTempIps6?: string[];
  /** Relay-host mode: the server carrying the temporary IPs of migrations away from this one. */
  relayHost?: string;
  /** How many sites it hosts now (their list: `sitesPage({ server })`, GET /v1/sites?server=ID). */
  siteCount: number;
}

/** Which sites `sitesPage` lists: every one in config order, or with `server` those it hosts now. */
export interface SitePageRequest extends PageRequest {
  server?: string;
}

/** Which migrations `migrationsPage` lists: newest first, of one domain, only running or only ended ones. */
export interface MigrationPageRequest extends PageRequest {
  domain?: string;
  active?: boolean;
}

/**
 * Where the journal has put sites, kept up to date from the journal's changes (its last seq): the
 * server of every site a completed migration moved, the migrations still open (unsettled, or
 * failed and unresolved) with their leases, and what both make of it: where each site is, the
 * migration in charge of it, the leased temporary IPs, the sites moved onto each server. Bounded
 * by the sites, the servers and the open migrations; ended migrations leave only their site's place.
 */
interface Placement {
  seq: number;
  /** Per site, the server of its newest completed migration (which one: creation time, then id). */
  completedAt: Map<string, { server: string; createdAt: number; id: string }>;
  /** Per server, the sites a completed migration moved onto it (kept with `completedAt`). */
  movedIn: Map<string, Set<string>>;
  open: Map<string, { domain: string; phase: string; leases: string[]; failedAt?: string }>;
  /** Derived from `open`: where failed migrations left their sites, who is in charge, what is leased. */
  failedAt: Map<string, string>;
  active: Map<string, string>;
  leased: Set<string>;
  /** Sites per server now, derived on first use (from the config and the sites moved away or in). */
  counts?: Map<string, number>;
}

/** The server hosting `domain` now, `config` when no migration moved it. */
function whereOf(p: Placement, domain: string, config: string): string {
  return p.failedAt.get(domain) ?? p.completedAt.get(domain)?.server ?? config;
}

/** Servers, sites, migrations and their events. */
export class Controller extends EventEmitter<{ event: [ControllerEvent] }> {
  readonly orchestrator: Orchestrator;
  readonly journal: JournalStore;
  readonly dns: DnsProvider;
  private readonly servers = new Map<string, ServerEntry>();
  private readonly siteConfig = new Map<string, SiteEntry>();
  /** Config order of the servers and the sites (list and page order), and each one's place in it. */
  private readonly serverOrder: string[] = [];
  private readonly serverIndex = new Map<string, number>();
  private readonly siteOrder: string[] = [];
  private readonly siteIndex = new Map<string, number>();
  /** The sites each server hosts in the config. */
  private readonly configSitesOf = new Map<string, string[]>();
  private placed: Placement | undefined;
  private readonly defaults: MigrationTimings;
  private readonly backupKeepMs: number;
  private readonly running = new Map<string, Promise<MigrationRecord>>();
  private readonly aborts = new Map<string, AbortController>();
  /** The event history: `history[historyStart..]` are the kept events (at most `historyLimit`). */
  private history: ControllerEvent[] = [];
  private historyStart = 0;
  private readonly historyLimit: number;
  private seq = 0;
  private readonly stopping = new AbortController();
  private readonly leads: () => boolean;

  constructor(opts: ControllerOptions) {
    super();
    this.leads = opts.leads ?? (() => true);
    this.dns = opts.dns;
    this.journal = opts.journal;
    this.defaults = { ...DEFAULT_TIMINGS, ...opts.defaults };
    this.historyLimit = opts.eventHistory ?? 10_000;
    this.backupKeepMs = opts.backupKeepMs ?? DEFAULT_BACKUP_KEEP_MS;
    for (const s of opts.servers) {
      if (this.servers.has(s.id))
        throw new FerryError('CONFIG_INVALID', `server "${s.id}" is declared twice`);
      if (s.sharedIps.length === 0)
        throw new FerryError('CONFIG_INVALID', `server "${s.id}" has no shared IP`);
      this.servers.set(s.id, s);
      this.serverIndex.set(s.id, this.serverOrder.length);
      this.serverOrder.push(s.id);
      this.configSitesOf.set(s.id, []);
    }
    for (const site of opts.sites) {
      const domain = normalize(site.domain);
      if (!this.servers.has(site.server)) {
        throw new FerryError(
          'CONFIG_INVALID',
          `site ${domain} is on server "${site.server}", which is not declared`,
        );
      }
      if (site.ports.length === 0) throw new FerryError('CONFIG_INVALID', `site ${domain} has no ports`);
      if (this.siteConfig.has(domain))
        throw new FerryError('CONFIG_INVALID', `site ${domain} is declared twice`);
      this.siteConfig.set(domain, { ...site, domain });
      this.siteIndex.set(domain, this.siteOrder.length);
      this.siteOrder.push(domain);
      this.configSitesOf.get(site.server)!.push(domain);
    }
    const hosts = new Map([...this.servers].map(([id, s]) => [id, s.driver]));
    this.orchestrator = new Orchestrator({
      dns: opts.dns,
      hosts,
      journal: opts.journal,
      ...(opts.retry ? { retry: opts.retry } : {}),
    });
    this.orchestrator.on('phase', (e) => this.publish('phase', e.id, { phase: e.phase }));
    this.orchestrator.on('step', (e) =>
      this.publish('step', e.id, { phase: e.phase, step: e.step, ...(e.detail ? { detail: e.detail } : {}) }),
    );
    this.orchestrator.on('wait', (e) =>
      this.publish('wait', e.id, {
        phase: e.phase,
        what: e.what,
        elapsedMs: e.elapsedMs,
        remainingMs: e.remainingMs,
        observed: e.observed,
      }),
    );
    this.orchestrator.on('error', (e) => this.publish('error', e.id, { phase: e.phase, message: e.message }));
    this.orchestrator.on('dns', (e) =>
      this.publish('dns', e.id, {
        phase: e.phase,
        name: e.name,
        type: e.type,
        expect: e.expect,
        serial: e.serial,
        servers: e.servers,
      }),
    );
    this.orchestrator.on('traffic', (e) =>
      this.publish('traffic', e.id, { phase: e.phase, what: e.what, observed: e.observed }),
    );
    this.orchestrator.on('held', (e) =>
      this.publish('held', e.id, { phase: e.phase, redirect: e.redirect, site: e.site, state: e.state }),
    );
    this.orchestrator.on('sync', (e) => {
      const { id, at: _at, ...data } = e;
      this.publish('sync', id, data);
    });
    this.orchestrator.on('database', (e) => {
      const { id, at: _at, ...data } = e;
      this.publish('database', id, data);
    });
    this.orchestrator.on('retry', (e) =>
      this.publish('retry', e.id, { what: e.what, attempt: e.attempt, message: e.message }),
    );
  }

  private publish(type: ControllerEvent['type'], migrationId: string, data: Record<string, unknown>): void {
    const ev: ControllerEvent = { seq: ++this.seq, at: Date.now(), type, migrationId, data };
    this.history.push(ev);
    if (this.history.length - this.historyStart > this.historyLimit) this.historyStart++;
    // Drop the events let go in one copy once they are as many as those kept: O(1) per event.
    if (this.historyStart >= this.historyLimit) {
      this.history = this.history.slice(this.historyStart);
      this.historyStart = 0;
    }
    this.emit('event', ev);
  }

  /** Events after `afterSeq` still in the history (for SSE replay with Last-Event-ID). */
  eventsSince(afterSeq = 0, migrationId?: string): ControllerEvent[] {
    const out: ControllerEvent[] = [];
    for (let i = this.historyStart; i < this.history.length; i++) {
      const e = this.history[i]!;
      if (e.seq > afterSeq && (!migrationId || e.migrationId === migrationId)) out.push(e);
    }
    return out;
  }

  /** Every server with its addresses and the temporary IPs still free (the IPv6 ones when it has any). */
  listServers(): ServerSummary[] {
    const p = this.placement();
    return this.serverOrder.map((id) => this.serverSummary(id, p));
  }

  /** One page of `listServers`, in config order. */
  serversPage(req: PageRequest = {}): Page<ServerSummary> {
    const p = this.placement();
    return this.pageOf('servers', this.serverOrder, this.serverIndex, req, (id) => this.serverSummary(id, p));
  }

  /** One server as `listServers` shows it. */
  serverView(id: string): ServerSummary {
    this.server(id);
    return this.serverSummary(id, this.placement());
  }

  private serverSummary(id: string, p: Placement): ServerSummary {
    const s = this.servers.get(id)!;
    return {
      id: s.id,
      sharedIps: [...s.sharedIps],
      tempIpPool: [...s.tempIpPool],
      freeTempIps: s.tempIpPool.filter((ip) => !p.leased.has(ip)),
      ...(s.sharedIps6 || s.tempIpPool6
        ? {
            sharedIps6: [...(s.sharedIps6 ?? [])],
            tempIpPool6: [...(s.tempIpPool6 ?? [])],
            freeTempIps6: (s.tempIpPool6 ?? []).filter((ip) => !p.leased.has(ip)),
          }
        : {}),
      ...(s.relayHost ? { relayHost: s.relayHost } : {}),
      siteCount: this.siteCounts(p).get(id) ?? 0,
    };
  }

  /** How many sites each server hosts now: the config's, less those moved away, plus those moved in. */
  private siteCounts(p: Placement): Map<string, number> {
    if (p.counts) return p.counts;
    const counts = new Map<string, number>();
    for (const [id, sites] of this.configSitesOf) counts.set(id, sites.length);
    const moved = new Set([...p.completedAt.keys(), ...p.failedAt.keys()]);
    for (const d of moved) {
      const cfg = this.siteConfig.get(d)?.server;
      if (cfg === undefined) continue;
      const now = whereOf(p, d, cfg);
      if (now === cfg) continue;
      counts.set(cfg, counts.get(cfg)! - 1);
      counts.set(now, (counts.get(now) ?? 0) + 1);
    }
    p.counts = counts;
    return counts;
  }

  /** The domains server `id` hosts now, in config order. */
  private sitesOf(id: string, p: Placement): string[] {
    const here = (d: string) => whereOf(p, d, this.siteConfig.get(d)!.server) === id;
    const stayed = (this.configSitesOf.get(id) ?? []).filter(here);
    const moved = new Set([...(p.movedIn.get(id) ?? [])]);
    for (const [d, server] of p.failedAt) if (server === id) moved.add(d);
    const came = [...moved].filter((d) => this.siteConfig.get(d)!.server !== id && here(d));
    if (came.length === 0) return stayed;
    return [...stayed, ...came].sort((a, b) => this.siteIndex.get(a)! - this.siteIndex.get(b)!);
  }

  /**
   * A page of `order` (a list fixed at construction) after the key in the cursor; the cursor names
   * the last key given, so a key unknown here is CURSOR_INVALID.
   */
  private pageOf<T>(
    list: string,
    order: string[],
    index: Map<string, number>,
    req: PageRequest,
    view: (key: string) => T,
  ): Page<T> {
    const limit = pageLimit(req);
    let start = 0;
    if (req.cursor !== undefined) {
      const [last] = decodeCursor(list, req.cursor, ['string']) as [string];
      const at = index.get(last);
      if (at === undefined)
        throw new FerryError('CURSOR_INVALID', `the cursor names ${last}, which is not in the ${list} list`);
      start = at + 1;
    }
    const keys = order.slice(start, start + limit);
    return {
      items: keys.map(view),
      ...(start + limit < order.length ? { next: encodeCursor(list, [keys[keys.length - 1]!]) } : {}),
    };
  }

  server(id: string): ServerEntry {
    const s = this.servers.get(id);
    if (!s)
      throw new FerryError(
        'SERVER_NOT_FOUND',
        this.serverOrder.length <= 20
          ? `no server "${id}"; known: ${this.serverOrder.join(', ')}`
          : `no server "${id}" among the ${this.serverOrder.length} known (see ferry servers)`,
      );
    return s;
  }

  /** Where the journal has put sites, brought up to date with the migrations changed since the last time. */
  private placement(): Placement {
    const seq = this.journal.lastSeq();
    if (this.placed?.seq === seq) return this.placed;
    const completedAt =
      this.placed?.completedAt ??
      new Map<string, Placement['completedAt'] extends Map<string, infer V> ? V : never>();
    const movedIn = this.placed?.movedIn ?? new Map<string, Set<string>>();
    const open =
      this.placed?.open ?? new Map<string, Placement['open'] extends Map<string, infer V> ? V : never>();
    // Oldest first: for one domain a later migration's outcome overrides an earlier one's.
    for (const rec of this.journal.briefs(this.placed ? { changedAfter: this.placed.seq } : {})) {
      const d = normalize(rec.plan.domain);
      // An older migration settling late (its last cleanup step) does not undo a newer one's move.
      const known = completedAt.get(d);
      const newer =
        !known ||
        rec.createdAt > known.createdAt ||
        (rec.createdAt === known.createdAt && rec.id >= known.id);
      const cfg = this.siteConfig.get(d);
      if (rec.phase === 'completed' && newer && cfg) {
        if (known) movedIn.get(known.server)?.delete(d);
        completedAt.set(d, { server: rec.plan.target, createdAt: rec.createdAt, id: rec.id });
        if (rec.plan.target !== cfg.server) {
          let set = movedIn.get(rec.plan.target);
          if (!set) movedIn.set(rec.plan.target, (set = new Set()));
          set.add(d);
        }
      }
      if (!rec.settled || rec.phase === 'failed') {
        open.set(rec.id, {
          domain: d,
          phase: rec.phase,
          leases: [rec.plan.tempIp, ...(rec.plan.v6 ? [rec.plan.v6.tempIp] : [])],
          ...(rec.phase === 'failed' ? { failedAt: this.dnsPointsAt(rec.id) } : {}),
        });
      } else open.delete(rec.id);
    }
    const failedAt = new Map<string, string>();
    const active = new Map<string, string>();
    const leased = new Set<string>();
    for (const [id, m] of open) {
      for (const ip of m.leases) leased.add(ip);
      if (m.failedAt !== undefined) failedAt.set(m.domain, m.failedAt);
      if (m.phase === 'failed' || !TERMINAL.has(m.phase)) active.set(m.domain, id);
    }
    this.placed = { seq, completedAt, movedIn, open, failedAt, active, leased };
    return this.placed;
  }

  private siteSummary(s: SiteEntry, p: Placement): SiteSummary {
    return {
      domain: s.domain,
      server: whereOf(p, s.domain, s.server),
      ports: [...s.ports],
      kind: s.kind ?? 'builtin',
      migration: p.active.get(s.domain) ?? null,
    };
  }

  /**
   * Every site and the server hosting it now (config, then completed migrations in order), and
   * the migration in charge of it: one running, or a `failed` one not yet resolved.
   */
  listSites(): SiteSummary[] {
    const p = this.placement();
    return this.siteOrder.map((d) => this.siteSummary(this.siteConfig.get(d)!, p));
  }

  /** The sites server `id` hosts now, in config order. */
  sitesOn(id: string): SiteSummary[] {
    this.server(id);
    const p = this.placement();
    return this.sitesOf(id, p).map((d) => this.siteSummary(this.siteConfig.get(d)!, p));
  }

  /**
   * One page of `listSites`, in config order; with `server`, of the sites that server hosts now
   * (a cursor there names the last site given, so a site moved away meanwhile still marks the place).
   */
  sitesPage(req: SitePageRequest = {}): Page<SiteSummary> {
    const p = this.placement();
    const view = (d: string) => this.siteSummary(this.siteConfig.get(d)!, p);
    if (req.server === undefined) return this.pageOf('sites', this.siteOrder, this.siteIndex, req, view);
    this.server(req.server);
    const limit = pageLimit(req);
    const here = this.sitesOf(req.server, p);
    let start = 0;
    if (req.cursor !== undefined) {
      const [last] = decodeCursor('sites', req.cursor, ['string']) as [string];
      const at = this.siteIndex.get(last);
      if (at === undefined)
        throw new FerryError('CURSOR_INVALID', `the cursor names ${last}, which is not in the sites list`);
      start = here.findIndex((d) => this.siteIndex.get(d)! > at);
      if (start < 0) start = here.length;
    }
    const keys = here.slice(start, start + limit);
    return {
      items: keys.map(view),
      ...(start + limit < here.length ? { next: encodeCursor('sites', [keys[keys.length - 1]!]) } : {}),
    };
  }

  site(domain: string): SiteSummary {
    const d = normalize(domain);
    const s = this.siteConfig.get(d);
    if (!s) throw new FerryError('SITE_NOT_FOUND', `no site ${d} is configured`);
    return this.siteSummary(s, this.placement());
  }

  /** The server a failed migration's A record last pointed at (the journal's last DNS change). */
  private dnsPointsAt(id: string): string {
    const plan = this.orchestrator.get(id).plan;
    const last = this.journal
      .entries(id)
      .filter((e) => e.kind === 'step' && e.step === STEP.dnsChange && (e.detail?.type ?? 'A') === 'A')
      .pop()?.detail?.address;
    return last === plan.targetIp ? plan.target : plan.origin;
  }

  /** Temporary IPs of `serverId` not leased by an unfinished or a failed migration. */
  freeTempIps(serverId: string, family: 4 | 6 = 4): string[] {
    const s = this.server(serverId);
    const { leased } = this.placement();
    return (family === 4 ? s.tempIpPool : (s.tempIpPool6 ?? [])).filter((ip) => !leased.has(ip));
  }

  /**
   * The sites of server `id`'s own web server as its agent reads them, each with whether Ferry can
   * move it and why not (file and line). Reads only.
   */
  async webSites(id: string): Promise<WebSitesReport & { serverId: string }> {
    const s = this.server(id);
    if (!s.driver.webSites)
      throw new FerryError('WEBCONFIG_NONE', `the agent of ${id} cannot read its web server's sites`);
    return { serverId: id, ...(await s.driver.webSites()) };
  }

  /** The A RRset of a domain as the DNS provider has it. */
  async records(domain: string): Promise<{ domain: string; A: { ttl: number; rdata: string[] } | null }> {
    const d = normalize(domain);
    return { domain: d, A: (await this.dns.getRRset(d, 'A')) ?? null };
  }

  /**
   * Plan and start migrating `domain` to server `to` in the background; returns the planned
   * record at once. Errors in the request (unknown site or server, no free temporary IP, a
   * migration of the site already running) are thrown before anything is journaled.
   */
  /**
   * What a migration of `req.domain` would do, asked of both agents exactly as `startMigration`
   * asks them (reads only): the refusals it would meet, a web site's ports, and the databases
   * that move or stay with, in the copy-inside-the-hold mode, the pause it expects. Nothing is
   * journaled or changed on any server.
   */
  async previewMigration(req: StartMigrationRequest): Promise<MigrationPreview> {
    const planned = this.site(req.domain);
    const from = this.server(planned.server);
    const to = this.server(req.to);
    if (from.id === to.id)
      throw new FerryError('MIGRATION_SAME_SERVER', `${planned.domain} is on ${to.id} already`);
    this.refuseRunning(planned);
    const { kind, web, databasePlan, ports, names, mailStays } = await this.planSite(req, planned);
    return {
      domain: planned.domain,
      from: from.id,
      to: to.id,
      kind,
      ports,
      ...(databasePlan ? { databases: databasePlan } : {}),
      ...(names ? { names: names.names, namesLeftAlone: names.leftAlone } : {}),
      ...(web?.mail ? { mail: web.mail } : {}),
      ...(mailStays ? { mailStays } : {}),
    };
  }

  /**
   * The agents' planning of a web site, its databases, mail and names, and the ports its
   * temporary IP carries (reads only; a refusal is thrown).
   */
  private async planSite(
    req: StartMigrationRequest,
    planned: SiteSummary,
  ): Promise<{
    kind: SiteKind;
    web?: Awaited<ReturnType<Orchestrator['planWebSite']>>;
    databasePlan?: DatabasesPlanned;
    ports: number[];
    overrides?: WebSiteOverrides;
    names?: Awaited<ReturnType<typeof planSiteNames>>;
    mailStays?: boolean;
  }> {
    const from = this.server(planned.server);
    const kind = req.kind ?? this.siteConfig.get(planned.domain)?.kind ?? 'builtin';
    if (kind !== 'web') return { kind, ports: planned.ports };
    const cfg = this.siteConfig.get(planned.domain);
    const mailStays = cfg?.mail === false;
    const overrides: WebSiteOverrides = { ...cfg?.web, ...(mailStays ? { mail: false as const } : {}) };
    const declared = this.siteConfig.get(planned.domain)?.databases;
    const dbOptions = this.siteConfig.get(planned.domain)?.database;
    this.refuseRunning(planned);
    const to = this.server(req.to);
    if (from.id === to.id)
      throw new FerryError('MIGRATION_SAME_SERVER', `${planned.domain} is on ${to.id} already`);
    const web = await this.orchestrator.planWebSite(from.id, to.id, planned.domain, overrides);
    const databasePlan = await this.orchestrator.planDatabases(
      from.id,
      to.id,
      planned.domain,
      declared,
      dbOptions?.copyInHoldMaxBytes ? { copyInHoldMaxBytes: dbOptions.copyInHoldMaxBytes } : undefined,
    );
    // A web site's temporary IP carries the ports its own vhost listens on, plain HTTP first; with
    // mail, also the configured ports it lacks, which must hold every mail port the origin listens on.
    const ports = web.ports.length
      ? [...web.ports, ...(web.mail ? planned.ports.filter((p) => !web.ports.includes(p)) : [])]
      : planned.ports;
    checkMailPorts(planned.domain, ports, web.mail);
    const names = await this.planNames(req, planned, web.site.names, cfg?.names ?? []);
    return {
      kind,
      web,
      ports,
      overrides,
      names,
      ...(mailStays ? { mailStays } : {}),
      ...(databasePlan ? { databasePlan } : {}),
    };
  }

  /** The site's names that move with it, from the addresses its domain points at now. */
  private async planNames(
    req: StartMigrationRequest,
    planned: SiteSummary,
    webNames: string[],
    declared: string[],
  ): Promise<Awaited<ReturnType<typeof planSiteNames>>> {
    const from = this.server(planned.server);
    const direct = req.mode === 'direct';
    const one = (rr: { rdata: string[] } | undefined) => (rr?.rdata.length === 1 ? rr.rdata[0] : undefined);
    const a = one(await this.dns.getRRset(planned.domain, 'A'));
    const a6 = one(await this.dns.getRRset(planned.domain, 'AAAA'));
    const originIp = a && (direct || from.sharedIps.includes(a)) ? a : from.sharedIps[0]!;
    const moves6 = a6 !== undefined && (direct || (from.sharedIps6 ?? []).includes(a6));
    return planSiteNames(this.dns, {
      domain: planned.domain,
      webNames,
      declared,
      originIp,
      ...(moves6 ? { originIp6: a6 } : {}),
    });
  }

  async startMigration(req: StartMigrationRequest): Promise<MigrationRecord> {
    this.requireLead();
    // an unknown (or malformed) domain is SITE_NOT_FOUND before the DNS parses it
    const planned = this.site(req.domain);
    const from = this.server(planned.server);
    // A web site is asked for first: a refusal (not found, not movable, a target lacking what it
    // needs) ends the request before anything is journaled or changed on either server.
    const { web, databasePlan, ports, overrides, names, mailStays } = await this.planSite(req, planned);
    const declared = this.siteConfig.get(planned.domain)?.databases;
    const dbOptions = this.siteConfig.get(planned.domain)?.database;
    // A server configured with a relay host migrates in relay-host mode unless the request says otherwise.
    const mode = req.mode ?? (from.relayHost ? 'relay-host' : 'temp-ip');
    const relayHost = req.relayHost ?? from.relayHost;
    const current = await this.dns.getRRset(normalize(req.domain), 'A');
    const current6 = await this.dns.getRRset(normalize(req.domain), 'AAAA');
    // From here to create() nothing awaits: the temporary IP is leased (journaled) atomically.
    const site = this.site(req.domain);
    this.refuseRunning(site);
    const origin = this.server(site.server);
    const target = this.server(req.to);
    if (origin.id === target.id)
      throw new FerryError('MIGRATION_SAME_SERVER', `${site.domain} is on ${target.id} already`);
    const answer = current?.rdata.length === 1 ? current.rdata[0]! : undefined;
    let originIp = answer && origin.sharedIps.includes(answer) ? answer : origin.sharedIps[0]!;
    let tempIp: string | undefined;
    // IPv6 moves with IPv4 when the AAAA record points at one of the origin's IPv6 addresses.
    const answer6 = current6?.rdata.length === 1 ? current6.rdata[0]! : undefined;
    let v6: { originIp: string; targetIp: string; tempIp: string } | undefined;
    if (answer6 && (mode === 'direct' || (origin.sharedIps6 ?? []).includes(answer6))) {
      const target6 = target.sharedIps6?.[0];
      if (!target6)
        throw new FerryError(
          'MIGRATION_NO_IPV6',
          `${site.domain} has AAAA ${answer6} but target ${target.id} has no IPv6 address`,
        );
      const owner = mode === 'relay-host' ? this.server(relayHost ?? '') : origin;
      const temp6 = mode === 'direct' ? answer6 : this.freeTempIps(owner.id, 6)[0];
      if (!temp6)
        throw new FerryError(
          'TEMP_IP_EXHAUSTED',
          `server ${owner.id} has no free IPv6 temporary IP in its pool`,
        );
      v6 = { originIp: answer6, targetIp: target6, tempIp: temp6 };
    }
    if (mode === 'direct') {
      if (!answer)
        throw new FerryError(
          'MIGRATION_DIRECT_NO_IP',
          `${site.domain} has no single A record to redirect directly`,
        );
      originIp = answer;
      tempIp = answer;
    } else {
      const poolOwner = mode === 'relay-host' ? this.server(relayHost ?? '') : origin;
      tempIp = this.freeTempIps(poolOwner.id)[0];
      if (!tempIp)
        throw new FerryError(
          'TEMP_IP_EXHAUSTED',
          `server ${poolOwner.id} has no free temporary IP in its pool`,
        );
    }
    const id = req.id ?? `${site.domain.replace(/\.$/, '')}-${Date.now().toString(36)}`;
    const parity = req.parity ?? this.siteConfig.get(site.domain)?.parity;
    const rec = this.orchestrator.create({
      id,
      domain: site.domain,
      origin: origin.id,
      target: target.id,
      originIp,
      targetIp: target.sharedIps[0]!,
      tempIp,
      ports,
      timings: { ...this.defaults, ...req.timings },
      mode,
      ...(web
        ? {
            kind: 'web' as const,
            web: {
              ...(web.tlsPort !== undefined ? { tlsPort: web.tlsPort } : {}),
              ...(overrides?.declaredRoots ? { declaredRoots: overrides.declaredRoots } : {}),
              ...(overrides?.dataDir ? { dataDir: overrides.dataDir } : {}),
              ...(web.mail ? { mail: web.mail } : {}),
              ...(mailStays ? { mailStays } : {}),
              backupKeepMs: this.backupKeepMs,
              ...(declared?.length ? { databases: declared } : {}),
              ...(dbOptions ? { database: dbOptions } : {}),
              ...(databasePlan ? { databasePlan } : {}),
            },
          }
        : {}),
      ...(mode === 'relay-host' ? { relayHost: relayHost! } : {}),
      ...(parity ? { parity } : {}),
      ...(v6 ? { v6 } : {}),
      ...(names ? { names: names.names, namesLeftAlone: names.leftAlone } : {}),
    });
    this.publish('migration', id, {
      created: true,
      domain: site.domain,
      from: origin.id,
      to: target.id,
      tempIp,
    });
    this.drive(id);
    return rec;
  }

  /** MIGRATION_RUNNING when a migration is in charge of the site (running, or failed and unresolved). */
  private refuseRunning(site: SiteSummary): void {
    if (!site.migration) return;
    const phase = this.orchestrator.get(site.migration).phase;
    throw new FerryError(
      'MIGRATION_RUNNING',
      phase === 'failed'
        ? `${site.domain} has a failed migration (${site.migration}); resolve it first with: ferry rollback ${site.migration}`
        : `${site.domain} is being migrated already (${site.migration})`,
    );
  }

  /** NO_LEADER unless this controller may drive migrations now. */
  private requireLead(): void {
    if (!this.leads())
      throw new FerryError(
        'NO_LEADER',
        'this controller does not lead: only the leader starts, rolls back, resumes or evacuates migrations',
      );
  }

  /**
   * Stop driving every migration (this controller lost the lead): each stops at its next step or
   * wait, journals nothing more and stays resumable by the next leader. Resolves once all stopped.
   */
  async stopDriving(reason: string): Promise<void> {
    for (const abort of this.aborts.values()) abort.abort(new FerryError('NO_LEADER', reason));
    await Promise.allSettled([...this.running.values()]);
  }

  /** Run (or resume) a migration in the background, once. */
  private drive(id: string, how: 'run' | 'rollback' | 'resume' = 'run'): Promise<MigrationRecord> {
    const existing = this.running.get(id);
    if (existing) return existing;
    const abort = new AbortController();
    const signal = AbortSignal.any([this.stopping.signal, abort.signal]);
    const p = this.orchestrator[how](id, signal)
      .catch((err: unknown) => {
        this.publish('error', id, { message: errorMessage(err) });
        return this.orchestrator.get(id);
      })
      .finally(() => {
        this.running.delete(id);
        this.aborts.delete(id);
      });
    this.running.set(id, p);
    this.aborts.set(id, abort);
    return p;
  }

  /** Resume every unfinished migration in the journal (after a restart). Returns their ids. */
  resumeAll(): string[] {
    this.requireLead();
    const ids = this.journal
      .briefs()
      .filter((r) => !r.settled)
      .map((r) => r.id);
    for (const id of ids) this.drive(id);
    return ids;
  }

  /** Wait for a migration's current run to end; resolves with its record. */
  async wait(id: string): Promise<MigrationRecord> {
    return (await this.running.get(id)) ?? this.orchestrator.get(id);
  }

  migration(id: string): MigrationRecord {
    return this.orchestrator.get(id);
  }

  listMigrations(): MigrationRecord[] {
    return this.journal.getMany(this.journal.list());
  }

  /**
   * One page of migrations, newest first (then by id). The cursor holds the last one's creation
   * time and id, so migrations started meanwhile (newer) never shift the pages after it.
   */
  migrationsPage(req: MigrationPageRequest = {}): Page<MigrationRecord> {
    const limit = pageLimit(req);
    let after: { createdAt: number; id: string } | undefined;
    if (req.cursor !== undefined) {
      const [createdAt, id] = decodeCursor('migrations', req.cursor, ['number', 'string']) as [
        number,
        string,
      ];
      after = { createdAt, id };
    }
    const rows = this.journal.page({
      limit: limit + 1,
      ...(after ? { after } : {}),
      ...(req.domain !== undefined ? { domain: normalize(req.domain) } : {}),
      ...(req.active !== undefined ? { active: req.active } : {}),
    });
    const more = rows.length > limit;
    const mine = rows.slice(0, limit);
    const last = mine[mine.length - 1];
    return {
      items: mine,
      ...(more && last ? { next: encodeCursor('migrations', [last.createdAt, last.plan.id]) } : {}),
    };
  }

  /**
   * Roll migration `id` back from whatever phase it is in (issue 7 implements every phase).
   * Resolves with the record once the rollback has ended.
   */
  async rollback(id: string): Promise<MigrationRecord> {
    const rec = this.orchestrator.get(id);
    if (rec.phase === 'rolled-back') return rec;
    if (this.stopping.signal.aborted)
      throw new FerryError('CONTROLLER_STOPPING', 'the controller is shutting down');
    this.requireLead();
    // A refusal (databases that cannot be replicated back) leaves a running migration running.
    await this.orchestrator.refuseRollback(id);
    // Stop the run first (it ends at its next step or wait), then undo from where it stopped.
    const running = this.running.get(id);
    if (running) {
      this.aborts.get(id)?.abort(new FerryError('ROLLBACK_REQUESTED', `rollback of ${id} was requested`));
      await running;
    }
    this.publish('migration', id, { rollbackRequested: true, phase: this.orchestrator.get(id).phase });
    return this.drive(id, 'rollback');
  }

  /** Go on with a migration: a `failed` one from the phase it failed in, any other unfinished one where it is. */
  async resume(id: string): Promise<MigrationRecord> {
    const rec = this.orchestrator.get(id);
    if (rec.phase === 'completed' || rec.phase === 'rolled-back') return rec;
    this.requireLead();
    return this.drive(id, 'resume');
  }

  /**
   * Migrate every site of server `from` to `to`. Temporary IPs come from `from`'s pool and return
   * to it once each migration has drained; at most min(concurrency, pool size) run at once. One
   * site failing does not stop the others. Resolves with every migration and a summary per site.
   */
  async evacuate(
    req: EvacuateRequest,
  ): Promise<{ migrations: MigrationRecord[]; sites: EvacuationSite[]; totalMs: number }> {
    this.requireLead();
    const origin = this.server(req.from);
    this.server(req.to);
    if (origin.id === req.to)
      throw new FerryError('MIGRATION_SAME_SERVER', `cannot evacuate ${origin.id} onto itself`);
    const pool = origin.tempIpPool.length;
    if (pool === 0)
      throw new FerryError(
        'TEMP_IP_EXHAUSTED',
        `server ${origin.id} has no temporary IP pool to evacuate with`,
      );
    if (req.concurrency !== undefined && !(Number.isInteger(req.concurrency) && req.concurrency >= 1)) {
      throw new FerryError(
        'EVACUATE_OPTIONS',
        `concurrency must be a positive integer (got ${req.concurrency})`,
      );
    }
    const concurrency = Math.min(req.concurrency ?? pool, pool);
    const p = this.placement();
    const queue = this.sitesOf(origin.id, p).filter((d) => !p.active.has(d));
    const started = Date.now();
    const evacId = `evacuate-${origin.id}-${started.toString(36)}`;
    this.publish('evacuation', evacId, {
      from: origin.id,
      to: req.to,
      sites: queue.length,
      concurrency,
      state: 'started',
    });
    const sites: EvacuationSite[] = [];
    const migrations: MigrationRecord[] = [];
    const worker = async () => {
      for (let domain = queue.shift(); domain !== undefined; domain = queue.shift()) {
        const startedAt = Date.now();
        let rec: MigrationRecord | undefined;
        let error: string | undefined;
        try {
          rec = await this.startLeased(domain, req);
          rec = await this.wait(rec.plan.id);
          if (rec.phase !== 'completed') error = rec.error ?? `ended ${rec.phase}`;
        } catch (err) {
          error = errorMessage(err);
        }
        if (rec) migrations.push(rec);
        const entry: EvacuationSite = {
          domain,
          migrationId: rec?.plan.id ?? null,
          phase: rec?.phase ?? 'not-started',
          startedAt,
          endedAt: Date.now(),
          ...(error ? { error } : {}),
        };
        sites.push(entry);
        this.publish('evacuation', evacId, { ...entry, done: sites.length });
      }
    };
    await Promise.all(Array.from({ length: concurrency }, () => worker()));
    const totalMs = Date.now() - started;
    this.publish('evacuation', evacId, {
      state: 'ended',
      totalMs,
      completed: sites.filter((s) => s.phase === 'completed').length,
      failed: sites.filter((s) => s.phase !== 'completed').length,
    });
    return { migrations, sites, totalMs };
  }

  /** Start a migration, waiting (bounded) for a temporary IP when the pool is leased out. */
  private async startLeased(domain: string, req: EvacuateRequest): Promise<MigrationRecord> {
    const deadline = Date.now() + 30 * 60_000;
    for (;;) {
      try {
        return await this.startMigration({
          domain,
          to: req.to,
          ...(req.timings ? { timings: req.timings } : {}),
        });
      } catch (err) {
        if (!isFerryError(err, 'TEMP_IP_EXHAUSTED') || Date.now() > deadline || this.stopping.signal.aborted)
          throw err;
        await sleep(250, this.stopping.signal);
      }
    }
  }

  /** Stop driving migrations (they stay resumable in the journal). */
  async close(): Promise<void> {
    this.stopping.abort(new FerryError('CONTROLLER_STOPPING', 'the controller is shutting down'));
    await Promise.allSettled([...this.running.values()]);
  }
}
