/**
 * The embedded default: a whole hosting platform on loopback addresses in one process. An
 * authoritative name server, an origin server with several sites on one shared IP, a target
 * server, simulated users resolving through DNS, and the orchestrator that migrates one site.
 * Every 127.0.0.0/8 address is local on Linux, so nothing here needs privileges.
 *
 * Each hosting server is a `HostAgent`, the same core `ferry agent` runs. By default the
 * orchestrator drives the agents in-process (data copied in-process, state kept in memory);
 * with `agents: 'http'` each agent is started as `ferry agent` starts it (`startAgent`: its API
 * on the server's address, rsync for data, its state file) and the orchestrator drives it
 * through `HttpHostDriver`.
 */
import { randomBytes } from 'node:crypto';
import { readdir, readFile, mkdtemp, rm } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  HostAgent,
  HttpHostDriver,
  InProcessTransport,
  LoopbackAddresses,
  MemoryStateStore,
  startAgent,
  type AddressManager,
  type HostAgentOptions,
} from '../agent/index.js';
import { FerryError } from '../common/errors.js';
import { DnsServer, dnsQuery, parseZone } from '../dns/index.js';
import type { TsigKeyConfig } from '../dns/tsig/index.js';
import { SiteServer, normalizeDomain } from '../host/index.js';
import { LoadGenerator, type RequestResult } from '../loadgen/index.js';
import { PrivateMariaDb, quote } from './mariadb.js';
import { Controller } from '../controller/index.js';
import {
  EmbeddedDnsProvider,
  Journal,
  type JournalStore,
  STEP,
  type DnsProvider,
  type MigrationRecord,
  type Orchestrator,
} from '../migration/index.js';
import {
  PrivateWebServer,
  REAL_STACK_SITES,
  RelocatingAgent,
  findStackBinaries,
  readPhpOrders,
  type StackBinaries,
} from './real-stack.js';

/** Every knob of the sandbox scenario, with its default. */
export interface SandboxOptions {
  /** Address and port of the authoritative name server. Default 127.0.10.53:10053. */
  dnsAddress: string;
  dnsPort: number;
  /** Shared IP of the origin (IP1), the target's IP (IP2) and the temporary IP (IPt). */
  originIp: string;
  targetIp: string;
  tempIp: string;
  /** HTTP port of every site, on every address. Default 18080. */
  httpPort: number;
  /** Zone of the sites and the sites on the origin's shared IP; the first is migrated. */
  zone: string;
  sites: string[];
  /** TTL in seconds of the sites' A records, before and during the migration. Default 2. */
  ttl: number;
  /** Total requests per second of the load, and how many simulated users make them. */
  rate: number;
  clients: number;
  /** Share of users whose caches keep answers past the TTL, and by how long (ms). */
  staleShare: number;
  staleOverstayMs: number;
  /** Share of users that reuse connections, and share of requests that are writes. */
  keepAliveShare: number;
  writeShare: number;
  /** How long a simulated user waits for a complete answer before counting a failure (ms). Default 5000. */
  requestTimeoutMs?: number;
  /** Quiet window and caps of the waits (ms). */
  quietWindowMs: number;
  dnsTempCapMs: number;
  drainCapMs: number;
  /** Load before the migration starts and after it ends (ms). */
  warmupMs: number;
  cooldownMs: number;
  /** Where sites keep their data and the journal lives; default a new temporary folder. */
  dataDir?: string;
  /** The origin's temporary IP pool (batch evacuation); default `[tempIp]`. */
  tempIpPool?: string[];
  /** TTL of the sites' A records before the migration; default `ttl` (above it, the migration lowers it first). */
  recordTtl?: number;
  /**
   * An external authoritative server (e.g. Knot through the rfc2136 provider) in place of the
   * embedded one: users resolve at `server`, the migration changes records through `provider`.
   * Its zone must hold what `zoneText()` describes.
   */
  externalDns?: { server: { address: string; port: number }; provider: DnsProvider };
  /**
   * How the orchestrator reaches the hosting servers' agents: `in-process` (default) or `http`
   * (each agent behind its API on its own address, as `ferry agent` runs it; needs rsync).
   */
  agents?: 'in-process' | 'http';
  /** Port of each agent's rsync daemon with `agents: 'http'`. Default 873. */
  rsyncPort?: number;
  /** How each server brings addresses up; default `LoopbackAddresses`. */
  addresses?: (host: 'origin' | 'target') => AddressManager;
  /** A TSIG key that may UPDATE the zone on the embedded server (for an rfc2136 provider). */
  dnsUpdateKey?: TsigKeyConfig;
  /**
   * What the hosting servers run: `builtin` (default), Ferry's built-in site app, or `nginx-php`,
   * a private nginx and PHP-FPM per server (real-stack.ts) with a PHP application that moves as a
   * provider's site does and a static site that stays. Default sites then: REAL_STACK_SITES.
   */
  stack?: 'builtin' | 'nginx-php';
  /**
   * With `stack: 'nginx-php'`, `mariadb`: each server also runs a private MariaDB (mariadb.ts) and
   * the PHP application keeps its orders in the origin's database `shop`, which moves with the
   * site (a consistent copy, replication, the catch-up inside the cut-over hold).
   */
  database?: 'none' | 'mariadb';
  /**
   * The journal's durability: `process` (default; the hosts share the controller's event loop
   * and should not wait on the disk) or `full` (fsync before each step acts, as `ferry
   * controller` runs it; the cut-over benchmark measures that).
   */
  journalDurability?: 'full' | 'process';
}

/**
 * The sandbox is one process: a redirect's own process (which outlives a deployed agent) should go
 * soon after the sandbox does, so that a killed demo or test leaves nothing listening on its ports.
 */
const SANDBOX_REDIRECT_ORPHAN_MS = 2000;

/** The shop's database password in the demo's private MariaDB (loopback only, gone with the sandbox). */
const SHOP_DB_PASSWORD = 'shop-demo-password';

/** A hosting server in this process: a `HostAgent` with in-process data copies and state in memory. */

export function inProcessAgent(opts: {
  id: string;
  ip: string;
  port: number;
  dataDir: string;
  addresses?: AddressManager;
}): HostAgent {
  return new HostAgent({
    redirectOrphanTimeoutMs: SANDBOX_REDIRECT_ORPHAN_MS,
    id: opts.id,
    dataDir: opts.dataDir,
    sharedIps: [opts.ip],
    httpPort: opts.port,
    addresses: opts.addresses ?? new LoopbackAddresses(),
    web: { kind: 'builtin' },
    transport: new InProcessTransport(opts.ip),
    state: new MemoryStateStore(),
  });
}

export const DEFAULT_SANDBOX: SandboxOptions = {
  dnsAddress: '127.0.10.53',
  dnsPort: 10053,
  originIp: '127.0.10.1',
  targetIp: '127.0.10.2',
  tempIp: '127.0.10.100',
  httpPort: 18080,
  zone: 'example.',
  sites: ['shop.example.', 'blog.example.', 'news.example.'],
  ttl: 2,
  rate: 60,
  clients: 30,
  staleShare: 0.2,
  staleOverstayMs: 3000,
  keepAliveShare: 0.5,
  writeShare: 0.3,
  quietWindowMs: 1500,
  dnsTempCapMs: 20_000,
  drainCapMs: 20_000,
  warmupMs: 2000,
  cooldownMs: 2000,
};

/** The machine-readable result of a demo run (issue 2's summary). */
export interface DemoSummary {
  domain: string;
  migrationId: string;
  finalPhase: string;
  phases: Array<{ name: string; startedAt: number; endedAt: number }>;
  dnsAnswers: Array<{ at: number; address: string }>;
  /** `resent`: sent once more after a web server's reload closed a kept-alive connection under it. */
  requests: { total: number; failed: number; resent: number };
  writes: {
    acknowledged: number;
    onTarget: number;
    missing: number;
    duplicated: number;
    onOriginAfterCutover: number;
  };
  servedBy: { origin: number; target: number };
  otherSites: { requests: number; failed: number };
  failures: Array<{ at: number; domain: string; address: string; status: number | null; error?: string }>;
}

/** The sandbox's agents run their site app in-process: the `SiteServer` itself, for tests to read. */
function inProcessSites(agent: HostAgent): SiteServer {
  if (!(agent.sites instanceof SiteServer))
    throw new FerryError('SANDBOX_OPTIONS', `${agent.id} runs its site app in a process of its own`);
  return agent.sites;
}

function checkOptions(o: SandboxOptions): void {
  const problems: string[] = [];
  const share = (k: keyof SandboxOptions) => {
    const v = o[k] as number;
    if (!(v >= 0 && v <= 1)) problems.push(`${k} must be between 0 and 1 (got ${v})`);
  };
  share('staleShare');
  share('keepAliveShare');
  share('writeShare');
  if (!(o.ttl >= 1)) problems.push(`ttl must be at least 1 second (got ${o.ttl})`);
  if (!(o.rate > 0)) problems.push(`rate must be positive (got ${o.rate})`);
  if (!(o.clients >= 1)) problems.push(`clients must be at least 1 (got ${o.clients})`);
  if (o.sites.length < 1) problems.push('sites must name at least one site');
  if (o.database === 'mariadb' && o.stack !== 'nginx-php')
    problems.push('database: mariadb needs stack: nginx-php (the PHP application keeps its orders in it)');
  if (o.stack === 'nginx-php' && o.agents === 'http')
    problems.push('the nginx-php stack runs its agents in-process (agents: http is not supported with it)');
  if (o.staleOverstayMs >= o.drainCapMs + o.ttl * 1000) {
    problems.push(
      `staleOverstayMs (${o.staleOverstayMs}) must stay below drainCapMs + ttl (${o.drainCapMs + o.ttl * 1000}): stale clients would outlive the redirect`,
    );
  }
  if (problems.length) throw new FerryError('SANDBOX_OPTIONS', `bad sandbox options: ${problems.join('; ')}`);
}

/** A running sandbox platform. */
export class Sandbox {
  readonly opts: SandboxOptions;
  dns!: DnsServer;
  /** The hosting servers' agents (in this process in both modes). */
  originAgent!: HostAgent;
  targetAgent!: HostAgent;
  /** What the orchestrator drives: the agents themselves, or their API through `HttpHostDriver`. */
  origin!: HostAgent | HttpHostDriver;
  target!: HostAgent | HttpHostDriver;
  /** With `agents: 'http'`: each agent's API URL and bearer token (for another process to drive it). */
  readonly agentApis: Partial<Record<'origin' | 'target', { url: string; token: string }>> = {};
  controller!: Controller;
  load!: LoadGenerator;
  dataDir!: string;
  private ownsDataDir = false;
  private journal!: Journal;
  /** How to stop each agent started (and its API, with `agents: 'http'`). */
  private readonly running: Array<{ close(): Promise<void> }> = [];
  private dnsWatch: NodeJS.Timeout | undefined;
  readonly dnsAnswers: Array<{ at: number; address: string }> = [];

  /** With `stack: 'nginx-php'`: each hosting server's private nginx and PHP-FPM. */
  readonly webServers: Partial<Record<'origin' | 'target', PrivateWebServer>> = {};
  /** With `database: 'mariadb'`: each hosting server's private MariaDB. */
  readonly databases: Partial<Record<'origin' | 'target', PrivateMariaDb>> = {};
  private readonly onExit = () => this.removeNow();

  constructor(opts: Partial<SandboxOptions> = {}) {
    this.opts = {
      ...DEFAULT_SANDBOX,
      ...(opts.stack === 'nginx-php' ? { sites: REAL_STACK_SITES } : {}),
      ...opts,
    };
    checkOptions(this.opts);
  }

  get realStack(): boolean {
    return this.opts.stack === 'nginx-php';
  }

  get migratedDomain(): string {
    return this.opts.sites[0]!;
  }

  /** Start the name server, both hosting servers with their sites, and the orchestrator. */
  async start(): Promise<void> {
    const o = this.opts;
    // Missing packages are said before anything starts.
    const binaries = this.realStack ? findStackBinaries() : undefined;
    this.ownsDataDir = !o.dataDir;
    this.dataDir = o.dataDir ?? (await mkdtemp(join(tmpdir(), 'ferry-sandbox-')));
    if (this.ownsDataDir && binaries) process.on('exit', this.onExit);
    try {
      this.dns = new DnsServer({
        address: o.dnsAddress,
        port: o.dnsPort,
        zones: [parseZone(this.zoneText(), { origin: o.zone })],
        ...(o.dnsUpdateKey
          ? {
              tsigKeys: [o.dnsUpdateKey],
              zonePolicies: { [o.zone]: { allowUpdate: [{ key: o.dnsUpdateKey.name }] } },
            }
          : {}),
      });
      await this.dns.start();
      if (binaries) {
        // nginx cannot pick a free port itself: port 0 is chosen here.
        const port = o.httpPort || (await freePort(o.originIp));
        await this.startWebHost('origin', o.originIp, port, binaries);
        await this.startWebHost('target', o.targetIp, port, binaries);
      } else {
        await this.startHost('origin', o.originIp, o.httpPort);
        await this.startHost('target', o.targetIp, this.originAgent.sites.port);
        for (const site of o.sites) await this.origin.addSite(site, 'serve');
      }
      // The hosts share this process's event loop: by default the journal does not make them wait on fsync.
      this.journal = new Journal(join(this.dataDir, 'journal.sqlite'), {
        durability: o.journalDurability ?? 'process',
      });
      this.controller = new Controller({
        dns: o.externalDns?.provider ?? new EmbeddedDnsProvider({ server: this.dns }),
        servers: [
          {
            id: 'origin',
            driver: this.origin,
            sharedIps: [o.originIp],
            tempIpPool: o.tempIpPool ?? [o.tempIp],
          },
          { id: 'target', driver: this.target, sharedIps: [o.targetIp], tempIpPool: [] },
        ],
        sites: o.sites.map((domain) => ({
          domain,
          server: 'origin',
          ports: [this.httpPort],
          // The PHP site takes writes while preflight probes it: its page is compared, its orders' count is not.
          ...(binaries
            ? {
                kind: 'web' as const,
                parity: { http: [{ path: '/' }, { path: '/orders', body: false }] },
              }
            : {}),
          // The shop's database, declared (its application has no wp-config.php to read it from).
          ...(o.database === 'mariadb' && domain === o.sites[0]
            ? {
                databases: [{ name: 'shop', users: ['shop'] }],
                database: { retryDelayMs: 2000 },
              }
            : {}),
        })),
        journal: this.journal,
        defaults: {
          ttl: o.ttl,
          quietWindowMs: o.quietWindowMs,
          dnsTempCapMs: o.dnsTempCapMs,
          drainCapMs: o.drainCapMs,
          cutoverDrainTimeoutMs: 10_000,
          pollMs: 100,
        },
      });
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Start one hosting server's agent, in-process or behind its API, and the driver for it. */
  private async startHost(id: 'origin' | 'target', ip: string, port: number): Promise<void> {
    const o = this.opts;
    const addresses = o.addresses?.(id) ?? new LoopbackAddresses();
    let agent: HostAgent;
    let driver: HostAgent | HttpHostDriver;
    if (o.agents === 'http') {
      const token = randomBytes(24).toString('hex');
      const running = await startAgent({
        id,
        dataDir: join(this.dataDir, id),
        sharedIps: [ip],
        httpPort: port,
        addresses,
        web: { kind: 'builtin' },
        rsync: { port: o.rsyncPort ?? 873 },
        redirectOrphanTimeoutMs: SANDBOX_REDIRECT_ORPHAN_MS,
        listen: { address: ip, port: 0 },
        token,
      });
      this.running.push(running);
      this.agentApis[id] = { url: running.url, token };
      agent = running.agent;
      driver = new HttpHostDriver({ id, url: running.url, token });
    } else {
      const inProcess = inProcessAgent({ id, ip, port, dataDir: join(this.dataDir, id), addresses });
      await inProcess.start();
      this.running.push({ close: () => inProcess.stop() });
      agent = driver = inProcess;
    }
    if (id === 'origin') [this.originAgent, this.origin] = [agent, driver];
    else [this.targetAgent, this.target] = [agent, driver];
  }

  /**
   * One hosting server of the real stack: its private nginx and PHP-FPM (the origin with the
   * sites), and its agent driving them as `ferry agent --web nginx --web-config nginx` does, in
   * this process (data copied in-process, state in memory).
   */
  private async startWebHost(
    id: 'origin' | 'target',
    ip: string,
    port: number,
    binaries: StackBinaries,
  ): Promise<void> {
    const o = this.opts;
    const server = new PrivateWebServer({ id, root: join(this.dataDir, id), ip, port, binaries });
    this.webServers[id] = server;
    this.running.push({ close: () => server.stop() });
    await server.prepare();
    const db = o.database === 'mariadb' ? await this.startDatabase(id, ip, server) : undefined;
    if (id === 'origin') {
      await server.addPhpSite(o.sites[0]!, db && { socket: db.socket, password: SHOP_DB_PASSWORD });
      for (const site of o.sites.slice(1)) await server.addStaticSite(site);
    }
    await server.start();
    if (id === 'origin') await server.waitListening();
    const options: HostAgentOptions = {
      redirectOrphanTimeoutMs: SANDBOX_REDIRECT_ORPHAN_MS,
      id,
      dataDir: server.agentDir,
      sharedIps: [ip],
      httpPort: port,
      addresses: o.addresses?.(id) ?? new LoopbackAddresses(),
      // The gate (the site app) listens on loopback behind nginx, on a port of its own per server.
      web: {
        kind: 'nginx',
        confDir: server.includeDir,
        command: server.nginxCommand,
        appAddress: '127.0.0.1',
        appPort: await freePort('127.0.0.1'),
      },
      webConfig: {
        kind: 'nginx',
        command: [...server.nginxCommand, '-T'],
        poolDirs: [server.poolDir],
        declaredRoots: [server.wwwDir],
      },
      webStack: {
        includeDir: server.includeDir,
        command: server.nginxCommand,
        phpFpm: { command: server.phpFpmCommand, pidFile: server.fpmPidFile },
        crontabCommand: server.crontabCommand,
      },
      transport: new InProcessTransport(ip),
      state: new MemoryStateStore(),
      ...(db
        ? {
            mariadb: {
              defaultsFile: db.adminOptionFile,
              address: db.address,
              port: db.port,
              optionDir: db.confDir,
            },
          }
        : {}),
    };
    const agent =
      id === 'target'
        ? new RelocatingAgent(options, this.webServers.origin!.root + '/', server.root + '/')
        : new HostAgent(options);
    await agent.start();
    // Stopped before its web server (the running list is closed from the last one started).
    this.running.push({ close: () => agent.stop() });
    if (id === 'origin') [this.originAgent, this.origin] = [agent, agent];
    else [this.targetAgent, this.target] = [agent, agent];
  }

  /**
   * A server's private MariaDB (server id 1 on the origin, 2 on the target), stopped after its
   * agent. The origin's holds the shop's database, its user `shop`@`localhost` and its orders table.
   */
  private async startDatabase(
    id: 'origin' | 'target',
    ip: string,
    server: PrivateWebServer,
  ): Promise<PrivateMariaDb> {
    // Both on 127.0.0.1, each on a port of its own: a connection between two loopback addresses
    // leaves from 127.0.0.1, and a migration user is made for the address its replica comes from.
    const db = new PrivateMariaDb({
      dir: join(server.root, 'mariadb'),
      address: '127.0.0.1',
      port: await freePort('127.0.0.1'),
      serverId: id === 'origin' ? 1 : 2,
      adminPassword: randomBytes(12).toString('hex'),
      // Room for the cut-over benchmark's database of 1 GB; the demo's is a few rows.
      bufferPool: '128M',
      logFileSize: '128M',
    });
    this.databases[id] = db;
    this.running.push({ close: () => db.stop() });
    await db.start();
    if (id === 'origin') {
      db.sql(
        `CREATE DATABASE shop; CREATE USER 'shop'@'localhost' IDENTIFIED BY ${quote(SHOP_DB_PASSWORD)};` +
          ` GRANT ALL ON shop.* TO 'shop'@'localhost';` +
          ' CREATE TABLE shop.orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, k VARCHAR(100) NOT NULL,' +
          ' at BIGINT NOT NULL, server VARCHAR(32) NOT NULL, KEY (k)) ENGINE=InnoDB;',
      );
    }
    return db;
  }

  /** The origin's and the target's site servers (to read what they store and serve). */
  get originSites(): SiteServer {
    return inProcessSites(this.originAgent);
  }

  get targetSites(): SiteServer {
    return inProcessSites(this.targetAgent);
  }

  get httpPort(): number {
    return this.webServers.origin?.port ?? this.originAgent.sites.port;
  }

  /** The zone of the scenario in master-file form (what an external server must load). */
  zoneText(): string {
    const o = this.opts;
    const lines = [
      `$ORIGIN ${o.zone}`,
      `$TTL 300`,
      `@ IN SOA ns1 hostmaster 1 3600 600 86400 60`,
      `@ IN NS ns1`,
      `ns1 IN A ${o.dnsAddress}`,
      ...o.sites.map((s) => `${s} ${o.recordTtl ?? o.ttl} IN A ${o.originIp}`),
    ];
    return lines.join('\n') + '\n';
  }

  /** Resolve a name's A record at the sandbox's name server, with the project's own client. */
  async resolve(name: string): Promise<{ address: string; ttl: number }> {
    // Like a libc stub resolver: a second, longer try when the first gets no answer (a busy machine).
    for (let attempt = 1; ; attempt++) {
      let res;
      try {
        const server = this.opts.externalDns?.server ?? { address: this.dns.address, port: this.dns.port };
        res = await dnsQuery({ server, name, type: 'A', timeoutMs: attempt === 1 ? 1000 : 3000 });
      } catch (err) {
        if (attempt >= 2) throw err;
        continue;
      }
      const a = res.answers.find((r) => r.typeName === 'A');
      if (!a) throw new FerryError('RESOLVE_FAILED', `${name}: no A record (${res.rcodeName})`);
      return { address: a.rdata, ttl: a.ttl };
    }
  }

  /** Start the simulated users on every site. */
  startLoad(): void {
    const o = this.opts;
    this.load = new LoadGenerator({
      sites: o.sites,
      port: this.httpPort,
      resolve: (name) => this.resolve(name),
      rate: o.rate,
      clients: o.clients,
      staleShare: o.staleShare,
      staleOverstayMs: o.staleOverstayMs,
      keepAliveShare: o.keepAliveShare,
      writeShare: o.writeShare,
      // The real stack's other sites are static files: their users only read them.
      ...(this.realStack ? { staticSites: o.sites.slice(1) } : {}),
      // nginx reloads (the gate put in front, taken away after the drain) close idle keep-alive
      // connections: the simulated users send again as browsers do, and the summary counts it.
      ...(this.realStack ? { resendOnClosedKeepAlive: true } : {}),
      ...(o.requestTimeoutMs !== undefined ? { requestTimeoutMs: o.requestTimeoutMs } : {}),
    });
    this.load.start();
  }

  /** Sample the migrated domain's A record every `everyMs`, recording each change. */
  watchDns(everyMs = 200): void {
    const sample = async () => {
      try {
        const { address } = await this.resolve(this.migratedDomain);
        const last = this.dnsAnswers[this.dnsAnswers.length - 1];
        if (!last || last.address !== address) this.dnsAnswers.push({ at: Date.now(), address });
      } catch {
        // a missed sample is not an answer; the next one tells
      }
    };
    void sample();
    this.dnsWatch = setInterval(() => void sample(), everyMs);
  }

  get orchestrator(): Orchestrator {
    return this.controller.orchestrator;
  }

  /** Create and run the migration of the first site from origin to target. */
  async migrate(): Promise<MigrationRecord> {
    const rec = await this.controller.startMigration({ domain: this.migratedDomain, to: 'target' });
    return this.controller.wait(rec.plan.id);
  }

  /** Tally what happened: requests, writes on each side, DNS answers (issue 2's summary). */
  async summarize(
    rec: MigrationRecord,
    journal: JournalStore = this.orchestrator.journal,
  ): Promise<DemoSummary> {
    const plain = normalizeDomain(rec.plan.domain);
    const domain = this.opts.sites.find((x) => normalizeDomain(x) === plain) ?? rec.plan.domain;
    const results = this.load.results();
    const mine = results.filter((r) => r.domain === domain);
    const others = results.filter((r) => r.domain !== domain);
    const acked = this.load.summary().acknowledgedWrites.filter((w) => w.domain === domain);
    const onTargetOrders = await this.ordersOn('target', domain);
    const counts = new Map<string, number>();
    for (const order of onTargetOrders) counts.set(order.key, (counts.get(order.key) ?? 0) + 1);
    let onTarget = 0;
    let missing = 0;
    let duplicated = 0;
    for (const w of acked) {
      const n = counts.get(w.key) ?? 0;
      if (n === 0) missing++;
      else onTarget++;
      if (n > 1) duplicated += n - 1;
    }
    const cutoverAt = journal.entries(rec.plan.id).find((e) => e.step === STEP.targetServe)?.at ?? Infinity;
    const originOrders = await this.ordersOn('origin', domain);
    const onOriginAfterCutover = originOrders.filter(
      (x) => x.server === 'origin' && x.at >= cutoverAt,
    ).length;
    const fail = (r: RequestResult) => !r.ok;
    return {
      domain,
      migrationId: rec.plan.id,
      finalPhase: rec.phase,
      phases: rec.phases.map((p) => ({
        name: p.name,
        startedAt: p.startedAt,
        endedAt: p.endedAt ?? p.startedAt,
      })),
      dnsAnswers: [...this.dnsAnswers],
      requests: {
        total: mine.length,
        failed: mine.filter(fail).length,
        resent: mine.filter((r) => r.resent).length,
      },
      writes: { acknowledged: acked.length, onTarget, missing, duplicated, onOriginAfterCutover },
      servedBy: {
        origin: mine.filter((r) => r.servedBy === 'origin').length,
        target: mine.filter((r) => r.servedBy === 'target').length,
      },
      otherSites: { requests: others.length, failed: others.filter(fail).length },
      failures: results
        .filter(fail)
        .slice(0, 20)
        .map((r) => ({
          at: r.at,
          domain: r.domain,
          address: r.address,
          status: r.status,
          ...(r.error ? { error: r.error } : {}),
        })),
    };
  }

  /**
   * The orders of `domain` a server stores: the built-in app's order log, or the PHP application's
   * `orders.jsonl` (on a completed origin, in the backup its agent moved the site's data into).
   */
  private async ordersOn(
    side: 'origin' | 'target',
    domain: string,
  ): Promise<Array<{ key: string; at: number; server: string }>> {
    const db = this.databases[side];
    if (db) {
      // A completed origin keeps its copy, read-only for the site: the orders it took before the switch.
      const has = db.sql(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = 'orders'",
      );
      if (Number(has.trim()) === 0) return [];
      return db
        .sql('SELECT k, at, server FROM shop.orders ORDER BY id')
        .split('\n')
        .filter((l) => l)
        .map((l) => {
          const [key, at, srv] = l.split('\t');
          return { key: key!, at: Number(at), server: srv! };
        });
    }
    const server = this.webServers[side];
    if (!server) {
      const orders = await (side === 'origin' ? this.originSites : this.targetSites).readOrders(domain);
      return orders.map((x) => ({ key: x.key, at: Date.parse(x.at), server: x.server }));
    }
    const name = normalizeDomain(domain).replace(/\.$/, '');
    const live = join(server.wwwDir, name, 'htdocs');
    const backups = join(server.agentDir, 'backups');
    for (const b of await readdir(backups).catch(() => [] as string[])) {
      const manifest = await readFile(join(backups, b, 'manifest.json'), 'utf8').catch(() => '');
      if (!manifest) continue;
      const m = JSON.parse(manifest) as { items: Array<{ kind: string; from: string; backup: string }> };
      const data = m.items.find((i) => i.kind === 'data' && i.from === live);
      if (data) return readPhpOrders(join(data.backup, 'data', 'orders.jsonl'));
    }
    return readPhpOrders(join(live, 'data', 'orders.jsonl'));
  }

  /** At process exit, without waiting: kill the private web servers, remove the temporary folder. */
  private removeNow(): void {
    for (const s of Object.values(this.webServers)) s.killNow();
    if (this.ownsDataDir && this.dataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** Stop everything the sandbox started; safe to call more than once and after a failed start. */
  async stop(): Promise<void> {
    if (this.dnsWatch) clearInterval(this.dnsWatch);
    await this.controller?.close();
    this.dnsWatch = undefined;
    await this.load?.stop().catch(() => undefined);
    for (const host of [this.origin, this.target]) if (host instanceof HttpHostDriver) host.close();
    for (const r of this.running.splice(0).reverse()) await r.close().catch(() => undefined);
    await this.dns?.stop().catch(() => undefined);
    try {
      this.journal?.close();
    } catch {
      // already closed
    }
    if (this.ownsDataDir && this.dataDir) await rm(this.dataDir, { recursive: true, force: true });
    process.off('exit', this.onExit);
  }
}

/** A free TCP port on `address` (bound and released: the caller binds it next). */
function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, address, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
