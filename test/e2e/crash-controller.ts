/**
 * The controller process of the crash test: a Controller over the platform's RPC channel and a
 * journal on disk. `start` plans and runs one migration; `resume` resumes whatever the journal
 * holds (Controller.resumeAll). Every controller event is printed as one JSON line on stdout;
 * the last line is `{"done": [records]}`. The test SIGKILLs this process at chosen events.
 */
import { Controller, type ServerEntry, type SiteEntry } from '../../src/controller/index.js';
import { Journal, type MigrationTimings } from '../../src/migration/index.js';
import { RpcDns, RpcHost } from './crash-rpc.js';

export interface CrashControllerConfig {
  rpc: string;
  dns: { address: string; port: number };
  zone: string;
  journal: string;
  servers: Array<Omit<ServerEntry, 'driver'>>;
  sites: SiteEntry[];
  defaults: Partial<MigrationTimings>;
  action: 'start' | 'resume';
  start?: { domain: string; to: string; id: string };
}

const cfg = JSON.parse(process.env.FERRY_CRASH_CONFIG ?? '{}') as CrashControllerConfig;
const journal = new Journal(cfg.journal);
const controller = new Controller({
  dns: new RpcDns(cfg.rpc, cfg.dns, cfg.zone),
  servers: cfg.servers.map((s) => ({ ...s, driver: new RpcHost(s.id, cfg.rpc) })),
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
journal.close();
