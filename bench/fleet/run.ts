/**
 * `npm run bench:fleet [-- servers sitesPerServer]`: one controller with a fleet of 1,000 servers
 * and 100,000 sites (default), started by the code `ferry controller` runs (the YAML config, the
 * SQLite journal in a temporary directory, the embedded name server, the control API), with the
 * servers simulated in memory at the HostDriver boundary (bench/fleet/memory-host.ts: no socket
 * per server). Measures start-up to serving the API (median of 3), RSS, the latency of every page
 * of the list calls, a `ferry status`-like call, the journal's size, and an evacuation of 10
 * servers at once (each with its own pool of temporary IPs), against the acceptance figures.
 *
 * It runs in a network namespace of its own (unshare -n, root): there one HTTP listener on the
 * wildcard address answers the controller's preflight parity probes for every server's address
 * (127.0.0.0/8 is all local there), and nothing it does can reach another helper's ports.
 */
import { spawnSync } from 'node:child_process';
import Database from 'better-sqlite3';
import { createServer } from 'node:http';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { apiOptionsFromConfig, startApi, type StartedApi } from '../../src/api/index.js';
import { loadConfig, startController, type RunningController } from '../../src/controller/index.js';
import { stats, median } from '../cutover/measure.js';
import { MemoryFleet } from './memory-host.js';

const SELF = fileURLToPath(import.meta.url);

if (!process.env.FERRY_FLEET_NETNS) {
  const r = spawnSync(
    'unshare',
    [
      '-n',
      '--',
      'sh',
      '-c',
      'ip link set lo up && exec "$0" "$@"',
      process.execPath,
      '--import',
      'tsx',
      SELF,
      ...process.argv.slice(2),
    ],
    { stdio: 'inherit', env: { ...process.env, FERRY_FLEET_NETNS: '1' } },
  );
  if (r.error) console.error(`cannot start the benchmark in a network namespace: ${r.error.message}`);
  process.exit(r.status ?? 1);
}

const SERVERS = Number(process.argv[2] ?? 1000);
const SITES_PER_SERVER = Number(process.argv[3] ?? 100);
const EVACUATED = Math.min(10, Math.floor(SERVERS / 2));
const POOL = 20;
const HTTP_PORT = 8080;
const DNS = { address: '127.0.0.53', port: 5353 };
const TOKEN = 'fleet-bench-token-0123456789abcdef';
const LIMITS = { pageMs: 50, rssBytes: 1024 ** 3 };

const serverId = (i: number) => `srv-${String(i).padStart(4, '0')}`;
const serverIp = (i: number) => `127.1.${Math.floor(i / 250)}.${(i % 250) + 1}`;
const tempIp = (i: number, k: number) => `127.${10 + k}.${Math.floor(i / 250)}.${(i % 250) + 1}`;
const domainOf = (i: number, j: number) => `site-${i}-${j}.fleet.example`;
const mib = (b: number) => `${(b / 1048576).toFixed(b < 10 * 1048576 ? 1 : 0)} MiB`;
const ms = (x: number) => `${x.toFixed(1)} ms`;

/** RSS, and the heap still in use after a full collection (what the process keeps, transients gone). */
const memory = async () => {
  await new Promise((r) => setTimeout(r, 50));
  (globalThis as { gc?: () => void }).gc?.();
  const u = process.memoryUsage();
  return { rss: u.rss, kept: u.heapUsed + u.external };
};

const memBare = await memory();
const fleet = new MemoryFleet();
for (let i = 0; i < SERVERS; i++)
  for (let j = 0; j < SITES_PER_SERVER; j++) fleet.host(serverId(i)).seed(domainOf(i, j));

// What the simulated servers hold, apart from the controller (in the heap of this same process).
const memFleet = await memory();
const fleetBytes = memFleet.kept - memBare.kept;

// The sites' preflight parity: one listener for every address; origin and target answer alike.
const parity = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(`${req.headers.host ?? ''} ${req.url ?? ''}\n`);
});
await new Promise<void>((ok) => parity.listen(HTTP_PORT, '0.0.0.0', ok));

const dir = await mkdtemp(join(tmpdir(), 'ferry-fleet-'));
/** The zone file and the config; nothing of them stays in this process's memory. */
async function writeFleetFiles(): Promise<void> {
  const zone = [
    '$ORIGIN fleet.example.',
    '$TTL 60',
    '@ IN SOA ns1 hostmaster 1 3600 600 86400 1',
    '@ IN NS ns1',
    `ns1 IN A ${DNS.address}`,
  ];
  for (let i = 0; i < SERVERS; i++)
    for (let j = 0; j < SITES_PER_SERVER; j++) zone.push(`site-${i}-${j} 1 IN A ${serverIp(i)}`);
  await writeFile(join(dir, 'fleet.zone'), zone.join('\n') + '\n');
  const servers: Record<string, unknown> = {};
  for (let i = 0; i < SERVERS; i++)
    servers[serverId(i)] = {
      agent: `http://${serverIp(i)}:9`,
      token: TOKEN,
      sharedIps: [serverIp(i)],
      tempIpPool: Array.from({ length: i < EVACUATED ? POOL : 2 }, (_, k) => tempIp(i, k)),
    };
  const sites: unknown[] = [];
  for (let i = 0; i < SERVERS; i++)
    for (let j = 0; j < SITES_PER_SERVER; j++)
      sites.push({ domain: domainOf(i, j), server: serverId(i), ports: [HTTP_PORT] });
  // JSON is YAML: the config file `ferry controller --config` would read.
  await writeFile(
    join(dir, 'ferry.yaml'),
    JSON.stringify({
      journal: 'journal.sqlite',
      servers,
      dns: { provider: 'embedded', listen: DNS, zones: ['fleet.zone'] },
      sites,
      defaults: { ttl: 1, quietWindow: '300ms', dnsTempCap: '5s', drainCap: '5s', poll: '100ms' },
      api: {
        listen: { address: '127.0.0.1', port: 0 },
        tokens: [{ name: 'bench', scope: 'operator', token: TOKEN }],
        rateLimitPerMinute: 0,
      },
    }),
  );
}
await writeFleetFiles();

/** What `ferry controller --config` does: load, start the controller and the API. */
async function start(): Promise<{ running: RunningController; api: StartedApi; ms: number }> {
  const t0 = performance.now();
  const config = await loadConfig(join(dir, 'ferry.yaml'));
  const running = await startController(config, { hostDriver: (s) => fleet.host(s.id) });
  const api = await startApi(running.controller, {
    ...apiOptionsFromConfig(config.api, { baseDir: dirname(resolve(config.file)) }),
    host: '127.0.0.1',
    port: 0,
  });
  const res = await fetch(`${api.url}/v1/servers?limit=1`, { headers: { authorization: `Bearer ${TOKEN}` } });
  if (res.status !== 200) throw new Error(`the API answers ${res.status}: ${await res.text()}`);
  await res.arrayBuffer();
  return { running, api, ms: performance.now() - t0 };
}

process.stdout.write(
  `fleet: ${SERVERS} servers, ${SERVERS * SITES_PER_SERVER} sites (simulated in memory at the HostDriver boundary), ` +
    `embedded DNS, SQLite journal in ${dir}\nNo peer exists for this benchmark: figures only, no ratio.\n\n`,
);

const startups: number[] = [];
let current: Awaited<ReturnType<typeof start>> | undefined;
for (let k = 0; k < 3; k++) {
  if (current) {
    await current.api.close();
    await current.running.close();
  }
  current = await start();
  startups.push(current.ms);
}
const { running, api } = current!;
const { controller } = running;
const memStart = await memory();
const rssStart = memStart.rss;
process.stdout.write(
  `start-up to serving the API: ${startups.map((x) => `${(x / 1000).toFixed(2)} s`).join(', ')} ` +
    `(the first from an empty journal and zone database, then restarts)\nRSS after start: ${mib(rssStart)} ` +
    `(heap and external memory in use after a full collection: ${mib(memStart.kept)}, of which the simulated servers ${mib(fleetBytes)})\n`,
);

async function call(path: string): Promise<{ ms: number; body: Record<string, unknown> }> {
  const t0 = performance.now();
  const res = await fetch(`${api.url}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  const body = (await res.json()) as Record<string, unknown>;
  const took = performance.now() - t0;
  if (res.status !== 200) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
  return { ms: took, body };
}

/** Every page of a list: the latency of each, the items counted. */
async function walk(list: string, key: string, limit: number): Promise<{ times: number[]; items: number }> {
  const times: number[] = [];
  let items = 0;
  let cursor: string | undefined;
  do {
    const r = await call(`/v1/${list}?limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`);
    times.push(r.ms);
    items += (r.body[key] as unknown[]).length;
    cursor = r.body.next as string | undefined;
  } while (cursor);
  return { times, items };
}

// The evacuation: 10 servers at once, each onto another, each with its own pool.
const evacuations = Array.from({ length: EVACUATED }, (_, i) => ({
  from: serverId(i),
  to: serverId(EVACUATED + i),
}));
const statusTimes: number[] = [];
let evacuating = true;
const poller = (async () => {
  while (evacuating) {
    const list = await call('/v1/migrations?limit=50');
    statusTimes.push(list.ms);
    const first = (list.body.migrations as Array<{ id: string }>)[0];
    if (first) statusTimes.push((await call(`/v1/migrations/${encodeURIComponent(first.id)}`)).ms);
    await new Promise((r) => setTimeout(r, 250));
  }
})();
const t0 = performance.now();
const results = await Promise.all(evacuations.map((e) => controller.evacuate(e)));
const evacMs = performance.now() - t0;
evacuating = false;
await poller;
const outcomes = results.flatMap((r) => r.sites);
const completed = outcomes.filter((s) => s.phase === 'completed').length;
const failures = outcomes.length - completed;
// Why migrations did not complete: each distinct error once, with how many.
const why = new Map<string, number>();
for (const o of outcomes)
  if (o.phase !== 'completed') {
    const e = `${o.phase}: ${(o.error ?? 'no error recorded').replace(/site-\d+-\d+|srv-\d+|[\d.]+/g, '…')}`;
    why.set(e, (why.get(e) ?? 0) + 1);
  }
// Where the sites are now: on the target's simulated server, and in DNS at its address.
let misplaced = 0;
for (const [i, e] of evacuations.entries()) {
  const moved = new Set(fleet.host(e.to).hosted());
  for (let j = 0; j < SITES_PER_SERVER; j++) {
    const d = `${domainOf(i, j)}.`;
    const rr = await controller.dns.getRRset(d, 'A');
    if (!moved.has(d) || rr?.rdata[0] !== serverIp(EVACUATED + i)) misplaced++;
  }
  if (fleet.host(e.from).hosted().length !== 0) misplaced++;
}
const memEvac = await memory();
const rssEvac = memEvac.rss;
const size = (f: string) =>
  stat(join(dir, f)).then(
    (st) => st.size,
    () => 0,
  );
const [journalBytes, walBytes] = await Promise.all([size('journal.sqlite'), size('journal.sqlite-wal')]);
process.stdout.write(
  `\nevacuation of ${EVACUATED} servers at once (${SITES_PER_SERVER} sites each, a pool of ${POOL} temporary IPs each): ` +
    `${(evacMs / 1000).toFixed(1)} s, ${completed} completed, ${failures} failed, ` +
    `${(completed / (evacMs / 1000)).toFixed(1)} migrations/s; ${misplaced} sites not where they should be\n` +
    [...why].map(([e, n]) => `  ${n} × ${e.slice(0, 300)}\n`).join('') +
    `RSS after the evacuation: ${mib(rssEvac)} (in use after a full collection: ${mib(memEvac.kept)}); journal file ${mib(journalBytes)}, its write-ahead log ${mib(walBytes)} (SQLite checkpoints it at about 4 MiB)\n`,
);

// What the journal holds: entries per migration, the most frequent ones.
const db = new Database(join(dir, 'journal.sqlite'), { readonly: true });
const entries = (db.prepare('SELECT COUNT(*) AS n FROM journal').get() as { n: number }).n;
const top = db
  .prepare(
    `SELECT kind || ' ' || COALESCE(step, phase) AS what, COUNT(*) AS n, SUM(LENGTH(COALESCE(detail, ''))) AS bytes
       FROM journal GROUP BY what ORDER BY bytes DESC LIMIT 4`,
  )
  .all() as Array<{ what: string; n: number; bytes: number }>;
db.close();
process.stdout.write(
  `journal: ${entries} entries, ${(entries / Math.max(1, outcomes.length)).toFixed(0)} per migration; ` +
    `largest: ${top.map((t) => `${t.what} ×${t.n} (${mib(t.bytes)} of detail)`).join(', ')}\n`,
);

const rows: Array<[string, string, boolean | undefined]> = [];
const lists: Array<[string, string]> = [
  ['sites', 'sites'],
  ['servers', 'servers'],
  ['migrations', 'migrations'],
];
process.stdout.write('\nlist            limit  pages   items   p50 ms   p99 ms   max ms\n');
for (const [list, key] of lists) {
  for (const limit of [100, 1000]) {
    const w = await walk(list, key, limit);
    const s = stats(w.times);
    process.stdout.write(
      `${`/v1/${list}`.padEnd(15)} ${String(limit).padStart(5)} ${String(w.times.length).padStart(6)} ${String(w.items).padStart(7)} ` +
        `${s.p50.toFixed(1).padStart(8)} ${s.p99.toFixed(1).padStart(8)} ${s.max.toFixed(1).padStart(8)}\n`,
    );
    rows.push([
      `/v1/${list} limit ${limit}: p99 per page ${ms(s.p99)} < ${LIMITS.pageMs} ms`,
      '',
      s.p99 < LIMITS.pageMs,
    ]);
  }
}
const statusAfter: number[] = [];
for (let k = 0; k < 50; k++) statusAfter.push((await call('/v1/migrations?limit=50')).ms);
const sDuring = stats(statusTimes);
const sAfter = stats(statusAfter);
process.stdout.write(
  `\n\`ferry status\`-like calls (GET /v1/migrations?limit=50 and one migration): during the evacuation ` +
    `p50 ${ms(sDuring.p50)} p99 ${ms(sDuring.p99)} (${statusTimes.length} calls); after it p50 ${ms(sAfter.p50)} p99 ${ms(sAfter.p99)}\n`,
);
rows.push([`RSS after start ${mib(rssStart)} < 1 GiB`, '', rssStart < LIMITS.rssBytes]);
rows.push([`RSS after the evacuation ${mib(rssEvac)} < 1 GiB`, '', rssEvac < LIMITS.rssBytes]);
rows.push([
  `in use after a full collection: ${mib(memStart.kept)} after start, ${mib(memEvac.kept)} after the evacuation`,
  `(the simulated servers' share: ${mib(fleetBytes)} before the controller started; the RSS counts them too)`,
  undefined,
]);
rows.push([
  `evacuation failures ${failures} (and ${misplaced} misplaced) = 0`,
  '',
  failures === 0 && misplaced === 0,
]);
rows.push([`start-up median ${(median(startups) / 1000).toFixed(2)} s`, '(no acceptance figure)', undefined]);
process.stdout.write(
  '\nacceptance (issue 16: under 50 ms per page, the controller under 1 GiB; RSS is the whole process, simulated servers included):\n',
);
for (const [what, note, ok] of rows)
  process.stdout.write(`  ${ok === undefined ? 'INFO' : ok ? 'PASS' : 'FAIL'}  ${what} ${note}\n`);

await api.close();
await running.close();
parity.close();
await rm(dir, { recursive: true, force: true });
process.exit(rows.some(([, , ok]) => ok === false) ? 1 : 0);
