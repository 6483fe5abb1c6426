/**
 * The controller: the registry of servers and sites, the orchestrator that migrates them, and
 * one ordered event stream that the API, CLI and dashboard follow. The sandbox builds one
 * in-process; `ferry controller --config` builds one from a YAML file with remote agents.
 *
 * Derived, not stored: which temporary IPs are leased (those of unfinished migrations in the
 * journal) and which server hosts a site (the config, then every completed migration in order).
 */
import { EventEmitter } from 'node:events';
import { FerryError, errorMessage } from '../common/errors.js';
import {
  DEFAULT_TIMINGS,
  Orchestrator,
  type DnsProvider,
  type HostDriver,
  type Journal,
  type MigrationRecord,
  type MigrationTimings,
} from '../migration/index.js';

/** One hosting server as the controller knows it. */
export interface ServerEntry {
  id: string;
  driver: HostDriver;
  /** Shared IPs of the server; the first is where migrated sites point (IP2) when it is a target. */
  sharedIps: string[];
  /** Temporary IPs this server may bring up, one per migration away from it. */
  tempIpPool: string[];
}

/** One site (domain) as configured. */
export interface SiteEntry {
  domain: string;
  /** Id of the server hosting it when the controller first learnt of it. */
  server: string;
  /** Service ports carried through the temporary IP; the first is HTTP (probes, proxy). */
  ports: number[];
}

export interface ControllerOptions {
  dns: DnsProvider;
  servers: ServerEntry[];
  sites: SiteEntry[];
  journal: Journal;
  /** Timings used when a migration does not name its own. */
  defaults?: Partial<MigrationTimings>;
  /** Events kept for late subscribers (SSE replay). Default 10,000. */
  eventHistory?: number;
}

/** An event on the controller's stream: `seq` orders them and lets a client resume. */
export interface ControllerEvent {
  seq: number;
  at: number;
  type: 'phase' | 'step' | 'wait' | 'error' | 'migration';
  migrationId: string;
  data: Record<string, unknown>;
}

export interface StartMigrationRequest {
  domain: string;
  /** Target server id. */
  to: string;
  id?: string;
  timings?: Partial<MigrationTimings>;
}

const TERMINAL = new Set(['completed', 'failed', 'rolled-back']);

function normalize(domain: string): string {
  const d = domain.trim().toLowerCase();
  return d.endsWith('.') ? d : `${d}.`;
}

/** Servers, sites, migrations and their events. */
export class Controller extends EventEmitter<{ event: [ControllerEvent] }> {
  readonly orchestrator: Orchestrator;
  readonly journal: Journal;
  readonly dns: DnsProvider;
  private readonly servers = new Map<string, ServerEntry>();
  private readonly siteConfig = new Map<string, SiteEntry>();
  private readonly defaults: MigrationTimings;
  private readonly running = new Map<string, Promise<MigrationRecord>>();
  private readonly history: ControllerEvent[] = [];
  private readonly historyLimit: number;
  private seq = 0;
  private readonly stopping = new AbortController();

  constructor(opts: ControllerOptions) {
    super();
    this.dns = opts.dns;
    this.journal = opts.journal;
    this.defaults = { ...DEFAULT_TIMINGS, ...opts.defaults };
    this.historyLimit = opts.eventHistory ?? 10_000;
    for (const s of opts.servers) {
      if (this.servers.has(s.id)) throw new FerryError('CONFIG_INVALID', `server "${s.id}" is declared twice`);
      if (s.sharedIps.length === 0) throw new FerryError('CONFIG_INVALID', `server "${s.id}" has no shared IP`);
      this.servers.set(s.id, s);
    }
    for (const site of opts.sites) {
      const domain = normalize(site.domain);
      if (!this.servers.has(site.server)) {
        throw new FerryError('CONFIG_INVALID', `site ${domain} is on server "${site.server}", which is not declared`);
      }
      if (site.ports.length === 0) throw new FerryError('CONFIG_INVALID', `site ${domain} has no ports`);
      this.siteConfig.set(domain, { ...site, domain });
    }
    const hosts = new Map([...this.servers].map(([id, s]) => [id, s.driver]));
    this.orchestrator = new Orchestrator({ dns: opts.dns, hosts, journal: opts.journal });
    this.orchestrator.on('phase', (e) => this.publish('phase', e.id, { phase: e.phase }));
    this.orchestrator.on('step', (e) => this.publish('step', e.id, { phase: e.phase, step: e.step, ...(e.detail ? { detail: e.detail } : {}) }));
    this.orchestrator.on('wait', (e) =>
      this.publish('wait', e.id, { phase: e.phase, what: e.what, elapsedMs: e.elapsedMs, remainingMs: e.remainingMs, observed: e.observed }),
    );
    this.orchestrator.on('error', (e) => this.publish('error', e.id, { phase: e.phase, message: e.message }));
  }

  private publish(type: ControllerEvent['type'], migrationId: string, data: Record<string, unknown>): void {
    const ev: ControllerEvent = { seq: ++this.seq, at: Date.now(), type, migrationId, data };
    this.history.push(ev);
    if (this.history.length > this.historyLimit) this.history.splice(0, this.history.length - this.historyLimit);
    this.emit('event', ev);
  }

  /** Events after `afterSeq` still in the history (for SSE replay with Last-Event-ID). */
  eventsSince(afterSeq = 0, migrationId?: string): ControllerEvent[] {
    return this.history.filter((e) => e.seq > afterSeq && (!migrationId || e.migrationId === migrationId));
  }

  /** Every server with its addresses and the temporary IPs still free. */
  listServers(): Array<{ id: string; sharedIps: string[]; tempIpPool: string[]; freeTempIps: string[]; sites: string[] }> {
    const sites = this.listSites();
    return [...this.servers.values()].map((s) => ({
      id: s.id,
      sharedIps: [...s.sharedIps],
      tempIpPool: [...s.tempIpPool],
      freeTempIps: this.freeTempIps(s.id),
      sites: sites.filter((x) => x.server === s.id).map((x) => x.domain),
    }));
  }

  server(id: string): ServerEntry {
    const s = this.servers.get(id);
    if (!s) throw new FerryError('SERVER_NOT_FOUND', `no server "${id}"; known: ${[...this.servers.keys()].join(', ')}`);
    return s;
  }

  /** Every site and the server hosting it now (config, then completed migrations in order). */
  listSites(): Array<{ domain: string; server: string; ports: number[]; migration: string | null }> {
    const where = new Map([...this.siteConfig].map(([d, s]) => [d, s.server]));
    const active = new Map<string, string>();
    const records = this.journal
      .list()
      .map((id) => this.journal.get(id)!)
      .sort((a, b) => a.createdAt - b.createdAt);
    for (const rec of records) {
      const d = normalize(rec.plan.domain);
      if (rec.phase === 'completed') where.set(d, rec.plan.target);
      else if (!TERMINAL.has(rec.phase)) active.set(d, rec.plan.id);
    }
    return [...this.siteConfig.values()].map((s) => ({
      domain: s.domain,
      server: where.get(s.domain) ?? s.server,
      ports: [...s.ports],
      migration: active.get(s.domain) ?? null,
    }));
  }

  site(domain: string): { domain: string; server: string; ports: number[]; migration: string | null } {
    const d = normalize(domain);
    const s = this.listSites().find((x) => x.domain === d);
    if (!s) throw new FerryError('SITE_NOT_FOUND', `no site ${d} is configured`);
    return s;
  }

  /** Temporary IPs of `serverId` not leased by an unfinished migration. */
  freeTempIps(serverId: string): string[] {
    const leased = new Set(
      this.journal
        .list()
        .map((id) => this.journal.get(id)!)
        .filter((r) => !TERMINAL.has(r.phase))
        .map((r) => r.plan.tempIp),
    );
    return this.server(serverId).tempIpPool.filter((ip) => !leased.has(ip));
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
  async startMigration(req: StartMigrationRequest): Promise<MigrationRecord> {
    const site = this.site(req.domain);
    if (site.migration) throw new FerryError('MIGRATION_RUNNING', `${site.domain} is being migrated already (${site.migration})`);
    const origin = this.server(site.server);
    const target = this.server(req.to);
    if (origin.id === target.id) throw new FerryError('MIGRATION_SAME_SERVER', `${site.domain} is on ${target.id} already`);
    const tempIp = this.freeTempIps(origin.id)[0];
    if (!tempIp) throw new FerryError('TEMP_IP_EXHAUSTED', `server ${origin.id} has no free temporary IP in its pool`);
    const current = await this.dns.getRRset(site.domain, 'A');
    const originIp = current?.rdata.length === 1 && origin.sharedIps.includes(current.rdata[0]!) ? current.rdata[0]! : origin.sharedIps[0]!;
    const id = req.id ?? `${site.domain.replace(/\.$/, '')}-${Date.now().toString(36)}`;
    const rec = this.orchestrator.create({
      id,
      domain: site.domain,
      origin: origin.id,
      target: target.id,
      originIp,
      targetIp: target.sharedIps[0]!,
      tempIp,
      ports: site.ports,
      timings: { ...this.defaults, ...req.timings },
    });
    this.publish('migration', id, { created: true, domain: site.domain, from: origin.id, to: target.id, tempIp });
    this.drive(id);
    return rec;
  }

  /** Run (or resume) a migration in the background, once. */
  private drive(id: string): Promise<MigrationRecord> {
    const existing = this.running.get(id);
    if (existing) return existing;
    const p = this.orchestrator
      .run(id, this.stopping.signal)
      .catch((err: unknown) => {
        this.publish('error', id, { message: errorMessage(err) });
        return this.orchestrator.get(id);
      })
      .finally(() => this.running.delete(id));
    this.running.set(id, p);
    return p;
  }

  /** Resume every unfinished migration in the journal (after a restart). Returns their ids. */
  resumeAll(): string[] {
    const ids = this.journal.list().filter((id) => !TERMINAL.has(this.journal.get(id)!.phase));
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
    return this.journal.list().map((id) => this.journal.get(id)!);
  }

  /**
   * Roll migration `id` back from whatever phase it is in (issue 7 implements every phase).
   * Resolves with the record once the rollback has ended.
   */
  async rollback(id: string): Promise<MigrationRecord> {
    throw new FerryError('NOT_IMPLEMENTED', `rollback of ${id} on request is not available yet`);
  }

  /** Migrate every site of server `from` to `to`, at most `concurrency` at once (issue 7). */
  async evacuate(req: { from: string; to: string; concurrency?: number }): Promise<{ migrations: MigrationRecord[] }> {
    throw new FerryError('NOT_IMPLEMENTED', `evacuation of ${req.from} is not available yet`);
  }

  /** Stop driving migrations (they stay resumable in the journal). */
  async close(): Promise<void> {
    this.stopping.abort(new FerryError('CONTROLLER_STOPPING', 'the controller is shutting down'));
    await Promise.allSettled([...this.running.values()]);
  }
}
