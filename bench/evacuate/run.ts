/**
 * `node --import tsx bench/evacuate/run.ts [sizes] [pools]`: how the total time of a batch
 * evacuation grows with the number of sites. Each run is a fresh sandbox in a child process of
 * its own (so peak memory is that run's): N sites on the origin under load (2 req/s per site),
 * evacuated to the target with a pool of P temporary IPs. A single migration run alone gives the
 * sequential cost; the table shows each run's total against N times that.
 *
 *   sizes: comma-separated site counts, default 5,10,25,50
 *   pools: comma-separated pool sizes, default 8
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runSandboxEvacuation, type EvacuationReport } from '../../src/cli/evacuate.js';

const SELF = fileURLToPath(import.meta.url);

if (process.argv[2] === '--one') {
  const [sites, pool, block] = [Number(process.argv[3]), Number(process.argv[4]), process.argv[5]!];
  const r = await runSandboxEvacuation({ sites, pool, block, warmupMs: 500, cooldownMs: 500 });
  process.stdout.write(JSON.stringify({ ...r, perSite: undefined, failures: r.failures.slice(0, 3) }) + '\n');
  process.exit(0);
}

const sizes = (process.argv[2] ?? '5,10,25,50').split(',').map(Number);
const pools = (process.argv[3] ?? '8').split(',').map(Number);

function one(sites: number, pool: number, block: string): EvacuationReport {
  const res = spawnSync(
    process.execPath,
    ['--import', 'tsx', SELF, '--one', String(sites), String(pool), block],
    { encoding: 'utf8', timeout: 30 * 60_000 },
  );
  const last = res.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(last) as EvacuationReport;
  } catch {
    throw new Error(`run of ${sites} sites failed: ${res.stderr.slice(-2000)}`);
  }
}

let blockNo = 51;
const single = one(1, 1, `127.0.${blockNo++}`);
const t1 = single.totalMs;
const rows: string[] = [];
const header =
  'sites  pool  total s  per site s  vs N×single  sites ×  time ×  failed req  peak RSS MiB  longest stall ms';
process.stdout.write(`single migration alone: ${(t1 / 1000).toFixed(1)} s\n${header}\n`);
for (const pool of pools) {
  let base: EvacuationReport | undefined;
  for (const n of sizes) {
    const r = one(n, pool, `127.0.${blockNo++}`);
    base ??= r;
    const row = [
      String(n).padStart(5),
      String(pool).padStart(5),
      (r.totalMs / 1000).toFixed(1).padStart(8),
      (r.totalMs / 1000 / n).toFixed(2).padStart(11),
      (r.totalMs / (n * t1)).toFixed(2).padStart(12),
      (n / base.sites).toFixed(1).padStart(8),
      (r.totalMs / base.totalMs).toFixed(1).padStart(7),
      `${r.requests.failed}/${r.requests.total}`.padStart(11),
      (r.peakRssBytes / 1048576).toFixed(0).padStart(13),
      String(r.maxEventLoopDelayMs).padStart(17),
    ].join(' ');
    rows.push(row);
    process.stdout.write(row + (r.completed === n ? '' : `  (${r.failed} not completed)`) + '\n');
  }
}
