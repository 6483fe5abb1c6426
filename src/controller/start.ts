/**
 * `startController`: the running controller a validated config describes (agents over HTTP, the
 * embedded name server or an RFC 2136 primary, the journal), for `ferry controller` and `ferry evacuate`.
 */
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { HttpHostDriver } from '../agent/client.js';
import { DnsServer, loadZoneFile, mergeZonePolicies } from '../dns/index.js';
import { errorMessage } from '../common/errors.js';
import {
  EmbeddedDnsProvider,
  Journal,
  PgJournal,
  createPowerDnsProvider,
  createRfc2136Provider,
  type DnsProvider,
  type HostDriver,
  type JournalStore,
  type PgJournalOptions,
  type PowerDnsProvider,
} from '../migration/index.js';
import {
  policyOf,
  type DnsConfig,
  type DnsPolicyConfig,
  type FerryConfig,
  type JournalConfig,
  type ServerConfig,
  type TsigKeySecret,
} from './config-schema.js';
import { Controller } from './controller.js';
import { LeaderLease } from './leader.js';
import { fencing, lead } from './leading.js';

/**
 * The name server's TSIG keys and zone policies from the config: the dns-level policy is the
 * default for every zone, a zone entry's own keys override it (`mergeZonePolicies`, src/dns).
 * Nothing configured: no policies, so transfers and updates are refused and nobody is notified.
 * `origins` are the loaded zones' origins, in config order.
 */
export function dnsSecurityOptions(
  cfg: Extract<DnsConfig, { provider: 'embedded' }>,
  origins: string[],
): { tsigKeys?: TsigKeySecret[]; zonePolicies?: Record<string, DnsPolicyConfig> } {
  const zonePolicies = mergeZonePolicies(policyOf(cfg), [
    ...cfg.zones.map((z, i) => ({ origin: origins[i]!, policy: policyOf(z) })),
    ...(cfg.catalog ? [{ origin: cfg.catalog.zone, policy: policyOf(cfg.catalog) }] : []),
  ]);
  return {
    ...(cfg.tsigKeys?.length
      ? { tsigKeys: cfg.tsigKeys.map((k) => ({ name: k.name, algorithm: k.algorithm, secret: k.secret })) }
      : {}),
    ...(zonePolicies ? { zonePolicies } : {}),
  };
}

/** A controller started from a config: close it to stop the migrations' drivers and the name server. */
export interface RunningController {
  config: FerryConfig;
  controller: Controller;
  /** The embedded name server, when the config uses it. */
  dnsServer: DnsServer | undefined;
  drivers: Map<string, HttpHostDriver>;
  /** Migrations resumed at start (under a lease: when this controller won it at start). */
  resumed: string[];
  /** The leader lease, with a PostgreSQL journal (several controllers may share it). */
  leader: LeaderLease | undefined;
  /** Ask every agent for its info: reachable, and serving sites the way the config says. */
  checkAgents(): Promise<Array<{ server: string; ok: boolean; message: string }>>;
  /** Ask the DNS provider whether it will take changes (PowerDNS: key, zone, SOA-EDIT-API); undefined when it has no such check. */
  checkDns(): Promise<{ ok: boolean; message: string } | undefined>;
  close(): Promise<void>;
}

export interface StartControllerOptions {
  /** Resume unfinished migrations of the journal (default true). */
  resume?: boolean;
  /**
   * Benchmarks and tests: the driver of each server, instead of an `HttpHostDriver` to its agent
   * (a fleet simulated in-process). `checkAgents` then reports such servers as driven in-process.
   */
  hostDriver?: (server: ServerConfig) => HostDriver;
  /** Stops the wait for an unreachable PostgreSQL (SIGTERM at start): the start throws the signal's reason. */
  signal?: AbortSignal;
  /** Told of every failed attempt to reach PostgreSQL before the next (the message names host:port, never the password). */
  onJournalRetry?: PgJournalOptions['onRetry'];
  /** This controller's API URL for the other controllers when `leader.advertise` is not set. */
  advertise?: string;
  /** Where the lease says who leads, steps down and is fenced. */
  logger?: Logger;
}

/**
 * Open the journal a config names: the SQLite file, or PostgreSQL (retrying with backoff while it
 * is unreachable, up to `giveUpAfterMs` when set).
 */
export async function openJournal(
  cfg: JournalConfig,
  opts: Pick<PgJournalOptions, 'signal' | 'onRetry' | 'retryInitialMs' | 'retryMaxMs'> = {},
): Promise<JournalStore> {
  if (cfg.kind === 'sqlite') return new Journal(cfg.path);
  return PgJournal.open(cfg.url, {
    ...opts,
    ...(cfg.password !== undefined ? { password: cfg.password } : {}),
    ...(cfg.giveUpAfterMs !== undefined ? { giveUpAfterMs: cfg.giveUpAfterMs } : {}),
  });
}

/**
 * Build and start the controller a config describes: the DNS provider (the embedded name server
 * listening, zones loaded), one `HttpHostDriver` per server, the journal, and the controller,
 * which then resumes unfinished migrations. The control API mounts its routes on `controller`.
 */
export async function startController(
  config: FerryConfig,
  opts: StartControllerOptions = {},
): Promise<RunningController> {
  let dnsServer: DnsServer | undefined;
  let journal: JournalStore | undefined;
  const drivers = new Map<string, HttpHostDriver>();
  let powerDns: PowerDnsProvider | undefined;
  try {
    // First: with PostgreSQL unreachable nothing else starts (no name server, no API, no driving).
    journal = await openJournal(config.journal, {
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.onJournalRetry ? { onRetry: opts.onJournalRetry } : {}),
    });
    let provider: DnsProvider;
    const dnsCfg = config.dns;
    if (dnsCfg.provider === 'embedded') {
      const zones = await Promise.all(
        dnsCfg.zones.map((z) => loadZoneFile(z.file, z.origin ? { origin: z.origin } : {})),
      );
      dnsServer = new DnsServer({
        address: dnsCfg.listen.address,
        port: dnsCfg.listen.port,
        zones,
        db: dnsCfg.db,
        ...dnsSecurityOptions(
          dnsCfg,
          zones.map((z) => z.origin),
        ),
        ...(dnsCfg.serialPolicy ? { serialPolicy: dnsCfg.serialPolicy } : {}),
        ...(dnsCfg.workers !== undefined ? { workers: dnsCfg.workers } : {}),
        ...(dnsCfg.catalog ? { catalog: { zone: dnsCfg.catalog.zone } } : {}),
      });
      await dnsServer.start();
      provider = new EmbeddedDnsProvider({
        server: dnsServer,
        ...(dnsCfg.nameServers ? { nameServers: dnsCfg.nameServers } : {}),
      });
    } else if (dnsCfg.provider === 'powerdns') {
      powerDns = createPowerDnsProvider(dnsCfg);
      provider = powerDns;
    } else {
      // Any primary (BIND, Knot, PowerDNS) through TSIG-signed UPDATE.
      provider = createRfc2136Provider(dnsCfg);
    }
    // A journal on PostgreSQL may be shared: only the lease's holder drives (leader.ts).
    const jc = config.journal;
    const lease =
      jc.kind === 'postgres'
        ? new LeaderLease({
            url: jc.url,
            ...(jc.password !== undefined ? { password: jc.password } : {}),
            id: config.leader?.id ?? `${hostname()}-${process.pid}`,
            advertise: config.leader?.advertise ?? opts.advertise ?? '',
            ...(config.leader?.ttlMs !== undefined ? { ttlMs: config.leader.ttlMs } : {}),
          })
        : undefined;
    const injected = new Map<string, HostDriver>();
    for (const s of config.servers) {
      if (opts.hostDriver) {
        injected.set(s.id, opts.hostDriver(s));
        continue;
      }
      const ca = s.ca ? await readFile(s.ca) : undefined;
      drivers.set(
        s.id,
        new HttpHostDriver({
          id: s.id,
          url: s.agent,
          token: s.token,
          ...(ca ? { ca } : {}),
          ...(s.timeoutMs !== undefined ? { timeoutMs: s.timeoutMs } : {}),
          ...(s.engine ? { engine: s.engine } : {}),
          ...(lease ? fencing(lease, s.id, opts.logger) : {}),
        }),
      );
    }
    const controller = new Controller({
      dns: provider,
      servers: config.servers.map((s) => ({
        id: s.id,
        driver: drivers.get(s.id) ?? injected.get(s.id)!,
        sharedIps: s.sharedIps,
        tempIpPool: s.tempIpPool,
        ...(s.sharedIps6 ? { sharedIps6: s.sharedIps6 } : {}),
        ...(s.tempIpPool6 ? { tempIpPool6: s.tempIpPool6 } : {}),
        ...(s.relayHost ? { relayHost: s.relayHost } : {}),
      })),
      sites: config.sites.map((s) => ({
        domain: s.domain,
        server: s.server,
        ports: s.ports,
        ...(s.kind === 'web'
          ? {
              kind: 'web' as const,
              ...(s.web ? { web: s.web } : {}),
              ...(s.databases ? { databases: s.databases } : {}),
              ...(s.database ? { database: s.database } : {}),
              ...(s.names ? { names: s.names } : {}),
              ...(s.mail === false ? { mail: false as const } : {}),
            }
          : {}),
        ...(s.parity ? { parity: s.parity } : {}),
      })),
      journal,
      defaults: config.defaults,
      backupKeepMs: config.migration.backupKeepMs,
      ...(lease ? { leads: () => lease.isLeader } : {}),
    });
    let resumed: string[] = [];
    let leading: { close(): Promise<void> } | undefined;
    // Only the lease's holder writes: a leader woken after a pause cannot add to the next one's journal.
    if (lease && journal instanceof PgJournal)
      journal.fenceWith({ lease: lease.name, holder: lease.id, token: () => lease.fence() });
    if (lease) {
      try {
        leading = await lead({
          lease,
          controller,
          journal,
          ...(opts.logger ? { logger: opts.logger } : {}),
          ...(opts.resume === false ? { resume: false } : {}),
        });
      } catch (err) {
        await lease.close();
        throw err;
      }
    } else if (opts.resume !== false) resumed = controller.resumeAll();
    const j = journal;
    const server = dnsServer;
    return {
      config,
      controller,
      dnsServer,
      drivers,
      resumed,
      leader: lease,
      checkDns: async () => {
        if (!powerDns) return undefined;
        try {
          return { ok: true, message: await powerDns.verify() };
        } catch (err) {
          return { ok: false, message: errorMessage(err) };
        }
      },
      checkAgents: () =>
        Promise.all(
          config.servers.map(async (s) => {
            const driver = drivers.get(s.id);
            if (!driver) return { server: s.id, ok: true, message: 'driven in-process, no agent' };
            try {
              const info = await driver.info();
              if (info.web !== s.web) {
                return {
                  server: s.id,
                  ok: false,
                  message: `agent serves sites with ${String(info.web)}, the config says web: ${s.web}`,
                };
              }
              // Every site placed here must exist on the agent (created with PUT /v1/sites/{domain}),
              // and be served on the port its migrations probe and proxy to.
              const bare = (d: string) => d.toLowerCase().replace(/\.$/, '');
              const served = new Set(Array.isArray(info.sites) ? info.sites.map((d) => bare(String(d))) : []);
              // Web sites are the server's own web server's until a migration gates them: not in the agent's app.
              const here = controller.sitesOn(s.id).filter((x) => x.kind !== 'web');
              const missing = here.filter((x) => !served.has(bare(x.domain))).map((x) => bare(x.domain));
              const problems: string[] = [];
              if (missing.length)
                problems.push(
                  `the agent does not serve ${missing.join(', ')}; create each on it first: PUT /v1/sites/{domain} {"mode":"serve"}`,
                );
              const port = typeof info.httpPort === 'number' ? info.httpPort : undefined;
              const offPort = port === undefined ? [] : here.filter((x) => x.ports[0] !== port);
              if (offPort.length)
                problems.push(
                  `the agent serves sites on --http-port ${port}, but ${offPort.map((x) => `${bare(x.domain)} has ports [${x.ports.join(', ')}]`).join(', ')}`,
                );
              if (problems.length) return { server: s.id, ok: false, message: problems.join('; ') };
              return {
                server: s.id,
                ok: true,
                message: `agent ${String(info.id)} at ${s.agent}, web ${String(info.web)}, ${here.length} site${here.length === 1 ? '' : 's'} present`,
              };
            } catch (err) {
              return { server: s.id, ok: false, message: (err as Error).message };
            }
          }),
        ),
      close: async () => {
        // The lease first: given back at once, so another controller takes over without waiting.
        await leading?.close();
        await controller.close();
        for (const d of drivers.values()) d.close();
        await server?.stop();
        await j.close();
      },
    };
  } catch (err) {
    for (const d of drivers.values()) d.close();
    await dnsServer?.stop().catch(() => undefined);
    await journal?.close();
    throw err;
  }
}
