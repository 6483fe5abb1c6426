/**
 * The 1,000,000-record part of `npm run bench:dns`: the same generated zone (`nN A 10.x.y.z`)
 * served by `ferry dns serve --workers N` (the compiled CLI, as an operator runs it) and by Knot
 * with N UDP and N TCP threads, one after the other. For each: seconds from the start of the
 * server process until it answers a query for the zone's last name, and the resident memory
 * summed over the server's whole process tree once it answers (both servers answer from threads
 * of one process, whose RSS counts their memory once; the OS threads are listed beside it); then
 * dnsperf with names drawn at random from the zone. Then a restart from the SQLite store: the zone
 * is saved once by `ferry dns serve --db FILE`, which is stopped, and `ferry dns serve --db FILE`
 * (no zone file) is started again BENCH_RUNS times (default 3), each beside a start of Knot on the
 * zone file; the medians of both are printed. Usable alone: `node --import tsx bench/dns/big.ts`
 * (after `npm run build`).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dnsExchangeUdp, decodeMessage, encodeMessage, makeQuery, RRType } from '../../src/dns/index.js';
import { freePort } from '../../test/ports.js';
import { knotConf } from './knot.js';

const ORIGIN = 'big.example.';
const RECORDS = 1_000_000;
const ADDR_FERRY = '127.0.130.3';
const ADDR_KNOT = '127.0.130.4';

/** One server's figures. */
export interface BigResult {
  loadS: number;
  rssMb: number;
  processes: number;
  /** OS threads over those processes (query threads and the runtime's own). */
  threads: number;
  qps: number;
  lost: number;
  sent: number;
}

/** Writes the zone (1,000,000 A records besides the apex's) and a query file of random names. */
function generate(dir: string): { zoneFile: string; queryFile: string; last: string } {
  const lines = [
    `$ORIGIN ${ORIGIN}`,
    '$TTL 300',
    '@ SOA ns1 hostmaster 1 3600 600 86400 300',
    '@ NS ns1',
    'ns1 A 192.0.2.53',
  ];
  for (let i = 0; i < RECORDS - 1; i++)
    lines.push(`n${i} A 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  const zoneFile = join(dir, 'big.zone');
  writeFileSync(zoneFile, lines.join('\n') + '\n');
  // Seeded: the same 100,000 random names (some missing) for both servers.
  const q: string[] = [];
  let s = 7;
  for (let i = 0; i < 100_000; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    const n = s % (RECORDS + RECORDS / 20); // about 5% NXDOMAIN
    q.push(`n${n}.${ORIGIN} A`);
  }
  const queryFile = join(dir, 'big-queries.txt');
  writeFileSync(queryFile, q.join('\n') + '\n');
  return { zoneFile, queryFile, last: `n${RECORDS - 2}.${ORIGIN}` };
}

/**
 * Resident set sizes (MB) summed over `pid` and all its descendants, how many processes there
 * are, and their OS threads (threads share their process's memory: counted once).
 */
export function treeRss(pid: number): { mb: number; processes: number; threads: number; each: number[] } {
  const parent = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      parent.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const tree = new Set([pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [p, pp] of parent)
      if (!tree.has(p) && tree.has(pp)) {
        tree.add(p);
        grew = true;
      }
  }
  let kb = 0;
  let threads = 0;
  const each: number[] = [];
  for (const p of tree) {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      const m = /VmRSS:\s+(\d+) kB/.exec(status);
      kb += Number(m?.[1] ?? 0);
      threads += Number(/Threads:\s+(\d+)/.exec(status)?.[1] ?? 0);
      each.push(Math.round(Number(m?.[1] ?? 0) / 1024));
    } catch {
      // gone meanwhile
    }
  }
  return { mb: kb / 1024, processes: tree.size, threads, each };
}

/** Seconds from `t0` until `name` gets an answer with data (polled every 20 ms). */
async function untilAnswer(child: ChildProcess, address: string, port: number, name: string, t0: number) {
  const probe = encodeMessage(makeQuery(1, name, RRType.A));
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`server on ${address}:${port} exited (${child.exitCode ?? child.signalCode})`);
    const ok = await dnsExchangeUdp({ address, port }, probe, 100).then(
      (b) => decodeMessage(b).answers.length > 0,
      () => false,
    );
    if (ok) return (performance.now() - t0) / 1000;
    if (performance.now() - t0 > 300_000)
      throw new Error(`nothing answers on ${address}:${port} after 300 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

type Perf = (
  address: string,
  port: number,
  queryFile: string,
  pids: number[],
) => Promise<{
  qps: number;
  lost: number;
  sent: number;
}>;

/** Starts a server, waits for `last`, reads the tree's RSS, stops it: [seconds, MB]. */
async function startOnly(
  address: string,
  port: number,
  cmd: string,
  args: string[],
  last: string,
): Promise<[number, number]> {
  const t0 = performance.now();
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    const s = await untilAnswer(child, address, port, last, t0);
    return [s, treeRss(child.pid!).mb];
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/**
 * The restart from the store: saves the zone into a --db file once (stopping that server writes
 * its image), then `runs` times starts Knot on the zone file and Ferry on the store alone.
 */
async function restartBench(
  cli: string,
  dir: string,
  zoneFile: string,
  last: string,
  workers: number,
  runs: number,
  knotArgs: [string, string[]],
  kport: number,
): Promise<{ ferryS: number; ferryMb: number; knotS: number }> {
  const db = join(dir, 'big.db');
  const fport = await freePort(ADDR_FERRY, { udp: true });
  const serve = (extra: string[]) => [
    cli,
    'dns',
    'serve',
    ...extra,
    '--db',
    db,
    '--listen',
    `${ADDR_FERRY}:${fport}`,
    '--workers',
    String(workers),
  ];
  const [saveS] = await startOnly(ADDR_FERRY, fport, process.execPath, serve(['--zone', zoneFile]), last);
  const ferry: Array<[number, number]> = [];
  const knot: number[] = [];
  for (let i = 0; i < runs; i++) {
    knot.push((await startOnly(ADDR_KNOT, kport, knotArgs[0], knotArgs[1], last))[0]);
    ferry.push(await startOnly(ADDR_FERRY, fport, process.execPath, serve([]), last));
  }
  const ferryS = median(ferry.map((f) => f[0]));
  const ferryMb = median(ferry.map((f) => f[1]));
  const knotS = median(knot);
  console.log(
    `  restart from the store (${(statSync(db).size / 1e6).toFixed(0)} MB SQLite, first saved in ${saveS.toFixed(1)} s), ` +
      `median of ${runs}: Ferry --db answers after ${ferryS.toFixed(1)} s, RSS ${ferryMb.toFixed(0)} MB ` +
      `(runs: ${ferry.map((f) => f[0].toFixed(1)).join(', ')} s); Knot from the zone file ${knotS.toFixed(1)} s ` +
      `(runs: ${knot.map((k) => k.toFixed(1)).join(', ')} s)`,
  );
  const verdict = (ok: boolean) => (ok ? 'MET' : 'NOT MET');
  console.log(
    `  Ferry restart/Knot load ${(ferryS / knotS).toFixed(2)} (target ≤ 1.0: ${verdict(ferryS <= knotS)}), ` +
      `under 5 s: ${verdict(ferryS < 5)}`,
  );
  return { ferryS, ferryMb, knotS };
}

async function measure(
  name: string,
  address: string,
  port: number,
  cmd: string,
  args: string[],
  last: string,
  queryFile: string,
  perf: Perf,
): Promise<BigResult> {
  const t0 = performance.now();
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    const loadS = await untilAnswer(child, address, port, last, t0);
    const { mb, processes, threads, each } = treeRss(child.pid!);
    const p = await perf(address, port, queryFile, [child.pid!]);
    console.log(
      `  ${name.padEnd(5)} answers after ${loadS.toFixed(1)} s, RSS ${mb.toFixed(0)} MB over ${processes} process(es) (${each.join(' + ')}; ${threads} OS threads); ` +
        `random names: ${p.qps.toFixed(0)} q/s, lost ${p.lost}/${p.sent}`,
    );
    return { loadS, rssMb: mb, processes, threads, ...p };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
  }
}

/** Runs the 1M-record comparison and prints it; returns both servers' figures. */
export async function bigZoneBench(
  workers: number,
  perf: Perf,
  runs = Number(process.env.BENCH_RUNS ?? 3),
): Promise<{
  knot: BigResult;
  ferry: BigResult;
  restart: { ferryS: number; ferryMb: number; knotS: number };
}> {
  const root = join(import.meta.dirname, '..', '..');
  const cli = join(root, 'dist', 'cli', 'main.js');
  if (!existsSync(cli))
    throw new Error('bench:dns serves the 1M zone with the compiled CLI: run `npm run build` first');
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-big-'));
  try {
    const { zoneFile, queryFile, last } = generate(dir);
    console.log(
      `1,000,000-record zone (${ORIGIN}, A records), ${workers} workers each: load = from process start until ` +
        `${last} A is answered; RSS summed over the process tree then; dnsperf on random names of the zone`,
    );
    const kport = await freePort(ADDR_KNOT, { udp: true });
    writeFileSync(
      join(dir, 'knot.conf'),
      knotConf({ dir, address: ADDR_KNOT, port: kport, workers, zones: [ORIGIN], file: zoneFile }),
    );
    const knotArgs: [string, string[]] = ['knotd', ['-c', join(dir, 'knot.conf')]];
    const knot = await measure('Knot', ADDR_KNOT, kport, ...knotArgs, last, queryFile, perf);
    const fport = await freePort(ADDR_FERRY, { udp: true });
    const ferry = await measure(
      'Ferry',
      ADDR_FERRY,
      fport,
      process.execPath,
      [
        cli,
        'dns',
        'serve',
        '--zone',
        zoneFile,
        '--listen',
        `${ADDR_FERRY}:${fport}`,
        '--workers',
        String(workers),
      ],
      last,
      queryFile,
      perf,
    );
    const verdict = (ok: boolean) => (ok ? 'MET' : 'NOT MET');
    console.log(
      `  Ferry/Knot: load time ${(ferry.loadS / knot.loadS).toFixed(2)} (target ≤ 1.0: ${verdict(ferry.loadS <= knot.loadS)}), ` +
        `RSS ${(ferry.rssMb / knot.rssMb).toFixed(2)} (target ≤ 1.0: ${verdict(ferry.rssMb <= knot.rssMb)}), ` +
        `random-name queries/s ${(ferry.qps / knot.qps).toFixed(2)} (target ≥ 1.0 with 0 lost: ${verdict(ferry.qps >= knot.qps && ferry.lost === 0)})`,
    );
    const restart = await restartBench(cli, dir, zoneFile, last, workers, runs, knotArgs, kport);
    return { knot, ferry, restart };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (spawnSync('which', ['knotd']).status !== 0 || spawnSync('which', ['dnsperf']).status !== 0) {
    console.error('needs knotd and dnsperf');
    process.exit(1);
  }
  const { dnsperfQps } = await import('./perf.js');
  await bigZoneBench(
    Number(process.env.BENCH_WORKERS ?? 2),
    dnsperfQps(Number(process.env.BENCH_SECONDS ?? 8)),
  );
}
