/**
 * The controller process of the crash test: a Controller over the platform's real agents
 * (`HttpHostDriver`, each agent's API) and its name server (RFC 2136 UPDATE, TSIG-signed; or
 * PowerDNS through its HTTP API when `powerdns` is set), with a journal on disk. `start` plans and runs one migration; `resume` resumes whatever the journal
 * holds (Controller.resumeAll). Every controller event is printed as one JSON line on stdout;
 * the last line is `{"done": [records]}`. The test SIGKILLs this process at chosen events.
 */
import { HttpHostDriver } from '../../src/agent/index.js';
import { Controller, type ServerEntry, type SiteEntry } from '../../src/controller/index.js';
import type { TsigKeyConfig } from '../../src/dns/tsig/index.js';
import {
  Journal,
  PowerDnsProvider,
  Rfc2136DnsProvider,
  type MigrationTimings,
} from '../../src/migration/index.js';

export interface CrashControllerConfig {
  /** Each server's agent API. */
  agents: Record<string, { url: string; token: string }>;
  dns: { address: string; port: number };
  zone: string;
  tsig: TsigKeyConfig;
  /** The records are in PowerDNS, changed through this API (the name server `dns` is PowerDNS's). */
  powerdns?: { api: string; apiKey: string };
  journal: string;
  servers: Array<Omit<ServerEntry, 'driver'>>;
  sites: SiteEntry[];
  defaults: Partial<MigrationTimings>;
  action: 'start' | 'resume';
  start?: { domain: string; to: string; id: string };
}

const cfg = JSON.parse(process.env.FERRY_CRASH_CONFIG ?? '{}') as CrashControllerConfig;
const journal = new Journal(cfg.journal);
const drivers = cfg.servers.map(
  (s) => new HttpHostDriver({ id: s.id, url: cfg.agents[s.id]!.url, token: cfg.agents[s.id]!.token }),
);
const controller = new Controller({
  dns: cfg.powerdns
    ? new PowerDnsProvider({ ...cfg.powerdns, zone: cfg.zone, nameServers: [cfg.dns] })
    : new Rfc2136DnsProvider({ server: cfg.dns, zone: cfg.zone, tsig: cfg.tsig, nameServers: [cfg.dns] }),
  servers: cfg.servers.map((s, i) => ({ ...s, driver: drivers[i]! })),
  sites: cfg.sites,
  journal,
  defaults: cfg.defaults,
  retry: { attempts: 5, baseDelayMs: 100, callTimeoutMs: 5000 },
});
controller.on('event', (e) => process.stdout.write(JSON.stringify(e) + '\n'));
let ids: string[];
if (cfg.action === 'start' && cfg.start) {
  const rec = await controller.startMigration(cfg.start);
  ids = [rec.plan.id];
} else {
  ids = controller.resumeAll();
}
const records = [];
for (const id of ids) records.push(await controller.wait(id));
process.stdout.write(JSON.stringify({ done: records }) + '\n');
for (const d of drivers) d.close();
journal.close();
