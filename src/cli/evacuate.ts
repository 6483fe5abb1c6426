/**
 * `ferry evacuate SERVER --to SERVER`: migrate every site of a server, drawing temporary IPs
 * from its pool, and print a summary per site. With `--config` it drives the servers of a
 * controller config through their agents (Controller.evacuate); without, it runs against the
 * sandbox (servers `origin` and `target` on loopback, `--sites` sites on the origin, under load).
 * With `--controller` (or FERRY_CONTROLLER set) it asks a running controller's API instead and
 * follows the evacuation on its event stream.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Command } from 'commander';
import { FerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';
import type { EvacuationSite } from '../controller/index.js';
import { loadConfig, startController } from '../controller/index.js';
import { normalizeDomain } from '../host/index.js';
import { Sandbox } from '../sandbox/index.js';
import { millis, number, positive, share } from './options.js';
import { CLI_EXIT, action, clientOf, type ConnectionOptions } from './client.js';

/** The sandbox scenario of an evacuation; defaults beside each field. */
export interface SandboxEvacuationOptions {
  /** Server to evacuate and where to: the sandbox has `origin` and `target`. */
  from: string;
  to: string;
  /** Sites on the origin. Default 10. */
  sites: number;
  /** Temporary IPs in the origin's pool. Default 8. */
  pool: number;
  /** Most migrations at once (capped by the pool). Default: the pool size. */
  concurrency?: number;
  /** First three octets of the loopback block used (DNS .53, origin .1, target .2, pool .100+). Default 127.0.50. */
  block: string;
  /** Requests per second over all sites (default 2 per site, 20 at least) and simulated users (default one per site). */
  rate?: number;
  clients?: number;
  staleShare: number;
  writeShare: number;
  /** TTL (s), quiet window and caps (ms) of every migration. Defaults 1, 800, 15 000. */
  ttl: number;
  quietWindowMs: number;
  capMs: number;
  /** Load before and after the evacuation (ms). Default 1000 each. */
  warmupMs: number;
  cooldownMs: number;
  /** Progress lines (one per finished site); default none. */
  out?: (line: string) => void;
}

export const DEFAULT_EVACUATION: SandboxEvacuationOptions = {
  from: 'origin',
  to: 'target',
  sites: 10,
  pool: 8,
  block: '127.0.50',
  staleShare: 0.2,
  writeShare: 0.3,
  ttl: 1,
  quietWindowMs: 1500,
  capMs: 15_000,
  warmupMs: 1000,
  cooldownMs: 1000,
};

/** What an evacuation did, as measured. */
export interface EvacuationReport {
  sites: number;
  pool: number;
  concurrency: number;
  totalMs: number;
  completed: number;
  failed: number;
  requests: { total: number; failed: number };
  writes: { acknowledged: number; onTarget: number; missing: number; duplicated: number };
  peakRssBytes: number;
  peakHeapBytes: number;
  /** Longest event-loop stall seen (the sandbox's servers share this process's loop). */
  maxEventLoopDelayMs: number;
  perSite: EvacuationSite[];
  failures: Array<{ domain: string; address: string; status: number | null; error?: string }>;
}

/** Run a whole evacuation in the sandbox under load and measure it. */
export async function runSandboxEvacuation(
  options: Partial<SandboxEvacuationOptions> = {},
): Promise<EvacuationReport> {
  const o = { ...DEFAULT_EVACUATION, ...options };
  if (!(Number.isInteger(o.sites) && o.sites >= 1 && o.sites <= 999))
    throw new FerryError('EVACUATE_OPTIONS', `sites must be 1..999 (got ${o.sites})`);
  if (!(Number.isInteger(o.pool) && o.pool >= 1 && o.pool <= 150))
    throw new FerryError('EVACUATE_OPTIONS', `pool must be 1..150 (got ${o.pool})`);
  if (!/^127\.\d{1,3}\.\d{1,3}$/.test(o.block))
    throw new FerryError('EVACUATE_OPTIONS', `block must be like 127.0.50 (got ${o.block})`);
  const rate = o.rate ?? Math.max(20, 2 * o.sites);
  const clients = o.clients ?? o.sites;
  // Each user asks every clients/rate seconds; a quiet window shorter than that ends waits between
  // two requests of a user whose cache still holds the old address.
  const gapMs = (clients / rate) * 1000;
  if (o.quietWindowMs < 2 * gapMs) {
    throw new FerryError(
      'EVACUATE_OPTIONS',
      `quiet window ${o.quietWindowMs} ms is under twice the gap between one user's requests (${gapMs.toFixed(0)} ms): raise the rate or the quiet window`,
    );
  }
  const sites = Array.from({ length: o.sites }, (_, i) => `site${String(i + 1).padStart(3, '0')}.example.`);
  const sb = new Sandbox({
    dnsAddress: `${o.block}.53`,
    dnsPort: 0,
    httpPort: 0,
    originIp: `${o.block}.1`,
    targetIp: `${o.block}.2`,
    tempIp: `${o.block}.100`,
    tempIpPool: Array.from({ length: o.pool }, (_, i) => `${o.block}.${100 + i}`),
    sites,
    ttl: o.ttl,
    rate,
    clients,
    staleShare: o.staleShare,
    staleOverstayMs: Math.min(2000, o.capMs / 2),
    writeShare: o.writeShare,
    quietWindowMs: o.quietWindowMs,
    dnsTempCapMs: o.capMs,
    drainCapMs: o.capMs,
  });
  let peakRss = 0;
  let peakHeap = 0;
  const sample = () => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  };
  const sampler = setInterval(sample, 200);
  const loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();
  await sb.start();
  try {
    sb.startLoad();
    await sleep(o.warmupMs);
    let done = 0;
    sb.controller.on('event', (e) => {
      if (e.type === 'evacuation' && typeof e.data.domain === 'string') {
        done++;
        o.out?.(
          `${String(done).padStart(4)}/${o.sites}  ${e.data.domain.padEnd(20)} ${String(e.data.phase).padEnd(12)} ${((Number(e.data.endedAt) - Number(e.data.startedAt)) / 1000).toFixed(1)} s${e.data.error ? `  ${String(e.data.error)}` : ''}`,
        );
      }
    });
    const res = await sb.controller.evacuate({
      from: o.from,
      to: o.to,
      ...(o.concurrency ? { concurrency: o.concurrency } : {}),
    });
    await sleep(o.cooldownMs);
    await sb.load.stop();
    sample();
    const results = sb.load.results();
    const acked = sb.load.summary().acknowledgedWrites;
    let onTarget = 0;
    let missing = 0;
    let duplicated = 0;
    for (const site of sites) {
      const counts = new Map<string, number>();
      for (const order of await sb.targetSites.readOrders(site))
        counts.set(order.key, (counts.get(order.key) ?? 0) + 1);
      for (const w of acked.filter((x) => normalizeDomain(x.domain) === normalizeDomain(site))) {
        const n = counts.get(w.key) ?? 0;
        if (n === 0) missing++;
        else onTarget++;
        if (n > 1) duplicated += n - 1;
      }
    }
    return {
      sites: o.sites,
      pool: o.pool,
      concurrency: Math.min(o.concurrency ?? o.pool, o.pool),
      totalMs: res.totalMs,
      completed: res.sites.filter((s) => s.phase === 'completed').length,
      failed: res.sites.filter((s) => s.phase !== 'completed').length,
      requests: { total: results.length, failed: results.filter((r) => !r.ok).length },
      writes: { acknowledged: acked.length, onTarget, missing, duplicated },
      peakRssBytes: peakRss,
      peakHeapBytes: peakHeap,
      maxEventLoopDelayMs: Math.round(loopDelay.max / 1e6),
      perSite: res.sites,
      failures: results
        .filter((r) => !r.ok)
        .slice(0, 20)
        .map((r) => ({
          domain: r.domain,
          address: r.address,
          status: r.status,
          ...(r.error ? { error: r.error } : {}),
        })),
    };
  } finally {
    clearInterval(sampler);
    loopDelay.disable();
    await sb.stop();
  }
}

const mib = (n: number) => `${(n / 1024 / 1024).toFixed(0)} MiB`;

/** The readable summary: one line per site, then the totals. */
export function describeEvacuation(r: EvacuationReport): string {
  const lines = [
    '',
    ...r.perSite
      .slice()
      .sort((a, b) => a.domain.localeCompare(b.domain))
      .map(
        (s) =>
          `  ${s.domain.padEnd(22)} ${s.phase.padEnd(12)} ${((s.endedAt - s.startedAt) / 1000).toFixed(1).padStart(6)} s${s.error ? `  ${s.error}` : ''}`,
      ),
    `Evacuated ${r.completed}/${r.sites} sites in ${(r.totalMs / 1000).toFixed(1)} s with ${r.concurrency} at once (pool of ${r.pool} temporary IPs); ${r.failed} not completed`,
    `Requests ${r.requests.total}, failed ${r.requests.failed}; writes acknowledged ${r.writes.acknowledged}, on target ${r.writes.onTarget}, missing ${r.writes.missing}, duplicated ${r.writes.duplicated}`,
    `Peak memory: RSS ${mib(r.peakRssBytes)}, heap ${mib(r.peakHeapBytes)}; longest event-loop stall ${r.maxEventLoopDelayMs} ms`,
  ];
  return lines.join('\n');
}

export function registerEvacuate(program: Command): void {
  const d = DEFAULT_EVACUATION;
  program
    .command('evacuate')
    .description(
      'Migrate every site of SERVER to another server, a pool of temporary IPs at a time (the servers of --config, or the sandbox: origin and target)',
    )
    .argument('<server>', 'server to evacuate (sandbox: origin)')
    .requiredOption('--to <server>', 'server to move the sites to (sandbox: target)')
    .option('--concurrency <n>', 'most migrations at once (capped by the temporary IP pool)', number(1, 1000))
    .option('--sites <n>', 'sandbox: sites on the origin', number(1, 999), d.sites)
    .option('--pool <n>', 'sandbox: temporary IPs in the origin pool', number(1, 150), d.pool)
    .option('--rate <rps>', 'sandbox: requests per second over all sites (default 2 per site)', positive)
    .option('--stale-share <0..1>', 'sandbox: share of users with stale caches', share, d.staleShare)
    .option('--ttl <seconds>', 'TTL of the records during each migration', number(1, 86400), d.ttl)
    .option(
      '--quiet-window <ms>',
      'traffic must be absent this long before a wait ends',
      millis,
      d.quietWindowMs,
    )
    .option('--block <a.b.c>', 'sandbox: loopback /24 to use', d.block)
    .option(
      '--config <file>',
      'evacuate the servers of this controller config through their agents, not the sandbox',
    )
    .option(
      '--controller <url>',
      'ask this running controller (env FERRY_CONTROLLER) through its API, not the sandbox',
    )
    .option('--token <token>', 'API token for --controller (env FERRY_TOKEN)')
    .option('--json', 'print the report as a JSON line, last')
    .action(async (server: string, o: Record<string, unknown>, cmd: Command) => {
      if (!o.config && (o.controller || process.env.FERRY_CONTROLLER)) {
        await action((_s: string, _o: Record<string, unknown>, _c: Command) => evacuateThroughApi(server, o))(
          server,
          o,
          cmd,
        );
        return;
      }
      if (o.config) {
        const running = await startController(await loadConfig(o.config as string));
        try {
          running.controller.on('event', (e) => {
            if (e.type === 'evacuation' && typeof e.data.domain === 'string')
              process.stdout.write(
                `${e.data.domain} ${String(e.data.phase)}${e.data.error ? `  ${String(e.data.error)}` : ''}\n`,
              );
          });
          const res = await running.controller.evacuate({
            from: server,
            to: o.to as string,
            ...(o.concurrency ? { concurrency: o.concurrency as number } : {}),
          });
          const failed = res.sites.filter((s) => s.phase !== 'completed');
          process.stdout.write(
            o.json
              ? JSON.stringify({ totalMs: res.totalMs, sites: res.sites }) + '\n'
              : `${res.sites
                  .map(
                    (s) =>
                      `  ${s.domain.padEnd(30)} ${s.phase.padEnd(12)} ${((s.endedAt - s.startedAt) / 1000).toFixed(1).padStart(7)} s${s.error ? `  ${s.error}` : ''}`,
                  )
                  .join(
                    '\n',
                  )}\nEvacuated ${res.sites.length - failed.length}/${res.sites.length} sites of ${server} in ${(res.totalMs / 1000).toFixed(1)} s\n`,
          );
          process.exitCode = failed.length === 0 ? 0 : 1;
        } finally {
          await running.close();
        }
        return;
      }
      const report = await runSandboxEvacuation({
        from: server,
        to: o.to as string,
        ...(o.concurrency ? { concurrency: o.concurrency as number } : {}),
        sites: o.sites as number,
        pool: o.pool as number,
        ...(o.rate ? { rate: o.rate as number } : {}),
        staleShare: o.staleShare as number,
        ttl: o.ttl as number,
        quietWindowMs: o.quietWindow as number,
        block: o.block as string,
        out: (line) => process.stdout.write(line + '\n'),
      });
      process.stdout.write((o.json ? JSON.stringify(report) : describeEvacuation(report)) + '\n');
      process.exitCode = report.failed === 0 && report.requests.failed === 0 ? 0 : 1;
    });
}

interface SiteLine {
  domain: string;
  phase: string;
  migrationId?: string | null;
  startedAt?: number;
  endedAt?: number;
  error?: string;
}

/**
 * Evacuate through a running controller: POST /v1/evacuations, then follow its `evacuation`
 * events (one per finished site, then `state: ended`) on the event stream, which is opened first
 * so that no event is missed. Exit 0 when every site completed, 1 otherwise.
 */
async function evacuateThroughApi(server: string, o: Record<string, unknown>): Promise<number> {
  const conn: ConnectionOptions = {
    ...(o.controller ? { controller: String(o.controller) } : {}),
    ...(o.token ? { token: String(o.token) } : {}),
    json: Boolean(o.json),
  };
  const client = clientOf(conn);
  const stop = new AbortController();
  const events = client.stream('/v1/events', { signal: stop.signal });
  const first = await events.next();
  if (first.done) throw new FerryError('EVACUATE_STREAM', 'the controller closed its event stream at once');
  const sites: SiteLine[] = [];
  const print = (line: SiteLine) => {
    if (!o.json)
      process.stdout.write(
        `  ${line.domain.padEnd(30)} ${line.phase}${line.error ? `  ${line.error}` : ''}\n`,
      );
  };
  const body = {
    from: server,
    to: String(o.to),
    ...(o.concurrency ? { concurrency: o.concurrency as number } : {}),
  };
  const started = Date.now();
  try {
    const res = await client.post<{ sites?: SiteLine[]; totalMs?: number; accepted?: boolean }>(
      '/v1/evacuations',
      body,
    );
    let totalMs = res.totalMs;
    if (res.sites) {
      sites.push(...res.sites);
      res.sites.forEach(print);
    } else {
      const prefix = `evacuate-${server}-`;
      for await (const e of events) {
        const ev = e.data as { type?: string; migrationId?: string; data?: Record<string, unknown> };
        if (e.event !== 'evacuation' || !ev.migrationId?.startsWith(prefix) || !ev.data) continue;
        if (ev.data.state === 'ended') {
          totalMs = Number(ev.data.totalMs);
          break;
        }
        if (typeof ev.data.domain === 'string') {
          const line = ev.data as unknown as SiteLine;
          sites.push(line);
          print(line);
        }
      }
    }
    totalMs ??= Date.now() - started;
    const failed = sites.filter((x) => x.phase !== 'completed');
    process.stdout.write(
      o.json
        ? JSON.stringify({ totalMs, sites }) + '\n'
        : `Evacuated ${sites.length - failed.length}/${sites.length} sites of ${server} in ${(totalMs / 1000).toFixed(1)} s\n`,
    );
    return failed.length === 0 ? CLI_EXIT.ok : CLI_EXIT.failed;
  } finally {
    stop.abort();
  }
}
