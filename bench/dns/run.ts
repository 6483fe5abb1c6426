/**
 * `npm run bench:dns` (node --import tsx bench/dns/run.ts [seconds]): dnsperf against Ferry and
 * Knot DNS in one run, both loaded from the same generated zone of 10,000 names, same query
 * file, duration and concurrency. Ferry runs with 2 query threads (in this process, whose main
 * thread is idle) and Knot with 2 UDP and 2 TCP worker threads. Runs alternate between the servers;
 * the table shows medians of BENCH_RUNS runs (default 3). Then a zone of 1,000,000 records is
 * served by `ferry dns serve --workers N` and by Knot, one after the other: time until it answers,
 * RSS over all the server's processes, queries/s on random names (bench/dns/big.ts).
 *
 * dnsperf 2.10 prints no latency histogram, so each run has two passes: a throughput pass
 * (queries/s, lost, average latency as dnsperf reports them) and a `-v` pass with the same load
 * that prints every query's latency, from which p99 is computed.
 *
 * Environment: BENCH_RUNS, BENCH_WORKERS (2), BENCH_CLIENTS (dnsperf -c, 8), BENCH_OUTSTANDING
 * (dnsperf -q, 64), BENCH_SKIP_1M=1, BENCH_SKIP_ZONES=1 (bench/dns/zones.ts), BENCH_SKIP_FUZZ=1, FERRY_FUZZ_PACKETS (300000) for the long fuzz run.
 */
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DnsServer,
  dnsExchangeUdp,
  decodeMessage,
  encodeMessage,
  loadZoneFile,
  makeQuery,
  RRType,
} from '../../src/dns/index.js';
import { freePort } from '../../test/ports.js';
import { knotConf } from './knot.js';
import { bigZoneBench } from './big.js';
import { benchZones } from './zones.js';

const seconds = Number(process.argv[2] ?? process.env.BENCH_SECONDS ?? 8);
const runs = Number(process.env.BENCH_RUNS ?? 3);
const workers = Number(process.env.BENCH_WORKERS ?? 2);
const clients = Number(process.env.BENCH_CLIENTS ?? 8);
const outstanding = Number(process.env.BENCH_OUTSTANDING ?? 64);
const ADDR_FERRY = '127.0.130.1';
const ADDR_KNOT = '127.0.130.2';
const NAMES = 10_000;
const ORIGIN = 'bench.example.';

for (const bin of ['dnsperf', 'knotd']) {
  if (spawnSync('which', [bin]).status !== 0) {
    console.error(`bench:dns needs ${bin} (apt-get install dnsperf knot)`);
    process.exit(1);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-dns-'));
const children: ChildProcess[] = [];
let ferry: DnsServer | undefined;

async function cleanup(): Promise<void> {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await ferry?.stop().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}
process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));
process.once('SIGTERM', () => void cleanup().finally(() => process.exit(143)));

/** The 10,000-name zone and a query file over it: A for every name, some AAAA, MX, NXDOMAIN. */
function generate(): { zone: string; queries: string } {
  const z: string[] = [
    `$ORIGIN ${ORIGIN}`,
    '$TTL 300',
    '@ SOA ns1 hostmaster 1 3600 600 86400 300',
    '@ NS ns1',
    '@ NS ns2',
    'ns1 A 192.0.2.53',
    'ns2 A 192.0.2.54',
    '@ MX 10 mail',
    'mail A 192.0.2.25',
  ];
  const q: string[] = [];
  for (let i = 0; i < NAMES; i++) {
    const n = `host${i}`;
    z.push(`${n} A 198.51.${(i >> 8) & 255}.${i & 255}`);
    q.push(`${n}.${ORIGIN} A`);
    if (i % 4 === 0) {
      z.push(`${n} AAAA 2001:db8::${i.toString(16)}`);
      q.push(`${n}.${ORIGIN} AAAA`);
    }
    if (i % 10 === 0) {
      z.push(`${n} MX 10 mail`);
      q.push(`${n}.${ORIGIN} MX`);
    }
    if (i % 20 === 0) q.push(`missing${i}.${ORIGIN} A`);
  }
  // Shuffle (seeded) so neither server sees names in zone order.
  let s = 42;
  for (let i = q.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) >>> 0;
    const j = s % (i + 1);
    [q[i], q[j]] = [q[j]!, q[i]!];
  }
  return { zone: z.join('\n') + '\n', queries: q.join('\n') + '\n' };
}

async function waitUp(address: string, port: number, child?: ChildProcess): Promise<void> {
  const probe = encodeMessage(makeQuery(1, ORIGIN, RRType.SOA));
  for (let i = 0; i < 100; i++) {
    if (child && child.exitCode !== null) throw new Error(`server on ${address}:${port} exited`);
    const ok = await dnsExchangeUdp({ address, port }, probe, 200).then(
      (b) => decodeMessage(b).answers.length > 0,
      () => false,
    );
    if (ok) return;
  }
  throw new Error(`nothing answers on ${address}:${port}`);
}

function startKnot(zoneFile: string, port: number): ChildProcess {
  const conf = knotConf({ dir, address: ADDR_KNOT, port, workers, zones: [ORIGIN], file: zoneFile });
  writeFileSync(join(dir, 'knot.conf'), conf);
  const c = spawn('knotd', ['-c', join(dir, 'knot.conf')], { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(c);
  return c;
}

/** CPU seconds (user + system) the processes used so far, from /proc (Linux, 100 ticks/s). */
function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
  }
  return ticks / 100;
}

interface Pass {
  /** Server CPU microseconds per answered query during the pass. */
  cpuUsPerQuery?: number;
  qps: number;
  lost: number;
  sent: number;
  avgMs: number;
  p99Ms?: number;
}

async function dnsperf(
  address: string,
  port: number,
  queryFile: string,
  secs: number,
  verbose: boolean,
  pids: number[] = [],
): Promise<Pass> {
  const cpu0 = pids.length ? cpuSeconds(pids) : 0;
  const args = [
    '-s',
    address,
    '-p',
    String(port),
    '-d',
    queryFile,
    '-l',
    String(secs),
    '-c',
    String(clients),
    '-q',
    String(outstanding),
    '-t',
    '2',
  ];
  if (verbose) args.push('-v');
  // Asynchronously: with one worker, Ferry answers in this very process.
  const { stdout: out } = await promisify(execFile)('dnsperf', args, {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
  });
  const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? NaN);
  const pass: Pass = {
    qps: num(/Queries per second:\s+([\d.]+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    sent: num(/Queries sent:\s+(\d+)/),
    avgMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000,
  };
  if (pids.length) pass.cpuUsPerQuery = ((cpuSeconds(pids) - cpu0) * 1e6) / (pass.sent - pass.lost);
  if (verbose) {
    // Lines like "> NOERROR host1.bench.example. A 0.000123" (T for a timeout, counted as lost).
    const lat: number[] = [];
    for (const line of out.split('\n')) {
      if (!line.startsWith('> ') || line.startsWith('> T ')) continue;
      const v = Number(line.slice(line.lastIndexOf(' ') + 1));
      if (Number.isFinite(v)) lat.push(v);
    }
    lat.sort((a, b) => a - b);
    pass.p99Ms = lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))]! * 1000 : NaN;
  }
  return pass;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a';
}

async function main(): Promise<void> {
  const { zone, queries } = generate();
  const zoneFile = join(dir, 'bench.zone');
  const queryFile = join(dir, 'queries.txt');
  writeFileSync(zoneFile, zone);
  writeFileSync(queryFile, queries);
  const queryCount = queries.split('\n').length - 1;

  const knotPort = await freePort(ADDR_KNOT, { udp: true });
  const knot = startKnot(zoneFile, knotPort);
  await waitUp(ADDR_KNOT, knotPort, knot);
  ferry = new DnsServer({ address: ADDR_FERRY, port: 0, zones: [await loadZoneFile(zoneFile)], workers });
  await ferry.start();
  await waitUp(ADDR_FERRY, ferry.port);

  console.log(
    `zone: ${NAMES} names (${zone.split('\n').length - 3} records); query file: ${queryCount} queries (A, AAAA, MX, NXDOMAIN), shuffled`,
  );
  console.log(
    `dnsperf -c ${clients} -q ${outstanding} -l ${seconds}, UDP, ${runs} runs each (alternating), medians; ` +
      `Ferry: ${workers} query threads; Knot ${execFileSync('knotd', ['--version'], {
        encoding: 'utf8',
      })
        .trim()
        .replace(/^knotd \(Knot DNS\), version /, '')}: udp-workers ${workers}, tcp-workers ${workers}`,
  );
  // Warm-up: JIT and answer caches on Ferry's side, page cache on both.
  await dnsperf(ADDR_KNOT, knotPort, queryFile, 2, false);
  await dnsperf(ADDR_FERRY, ferry.port, queryFile, 2, false);

  // Ferry answers in this process, in its query threads with workers > 1 (the process is
  // otherwise idle while dnsperf runs).
  const ferryPids = [process.pid];
  const results: Record<'Knot' | 'Ferry', { tput: Pass[]; lat: Pass[] }> = {
    Knot: { tput: [], lat: [] },
    Ferry: { tput: [], lat: [] },
  };
  for (let r = 0; r < runs; r++) {
    for (const [name, addr, port, pids] of [
      ['Knot', ADDR_KNOT, knotPort, [knot.pid!]],
      ['Ferry', ADDR_FERRY, ferry.port, ferryPids],
    ] as Array<['Knot' | 'Ferry', string, number, number[]]>) {
      const t = await dnsperf(addr, port, queryFile, seconds, false, pids);
      const l = await dnsperf(addr, port, queryFile, seconds, true);
      results[name].tput.push(t);
      results[name].lat.push(l);
      console.log(
        `  run ${r + 1} ${name.padEnd(5)} ${fmt(t.qps).padStart(8)} q/s, lost ${t.lost}/${t.sent}, avg ${fmt(t.avgMs, 3)} ms, CPU ${fmt(t.cpuUsPerQuery!, 1)} µs/query; -v pass: ${fmt(l.qps)} q/s, lost ${l.lost}, p99 ${fmt(l.p99Ms!, 3)} ms`,
      );
    }
  }
  const row = (name: 'Knot' | 'Ferry') => {
    const r = results[name];
    return {
      qps: median(r.tput.map((p) => p.qps)),
      lost: r.tput.reduce((n, p) => n + p.lost, 0) + r.lat.reduce((n, p) => n + p.lost, 0),
      avg: median(r.tput.map((p) => p.avgMs)),
      p99: median(r.lat.map((p) => p.p99Ms!)),
      cpu: median(r.tput.map((p) => p.cpuUsPerQuery!)),
    };
  };
  const k = row('Knot');
  const f = row('Ferry');
  console.log('');
  console.log('server   queries/s   lost (all passes)   avg ms    p99 ms   CPU µs/query');
  for (const [name, x] of [
    ['Knot', k],
    ['Ferry', f],
  ] as const) {
    console.log(
      `${name.padEnd(8)} ${fmt(x.qps).padStart(9)}   ${String(x.lost).padStart(17)}   ${fmt(x.avg, 3).padStart(6)}   ${fmt(x.p99, 3).padStart(7)}   ${fmt(x.cpu, 1).padStart(12)}`,
    );
  }
  const ratio = f.qps / k.qps;
  console.log(
    `Ferry/Knot queries/s: ${ratio.toFixed(2)} (target ≥ 1.0 with 0 lost, issue 17): ${ratio >= 1 && f.lost === 0 ? 'MET' : 'NOT MET'}`,
  );
  console.log(
    `Knot/Ferry CPU per query: ${(k.cpu / f.cpu).toFixed(2)} (the qps ratio on cores of their own; the shared cores ` +
      `here also run dnsperf and other work, so queries/s swing between runs)`,
  );
  const spread = await ferry.workerStats();
  const total = spread.reduce((n, s) => n + s.udp, 0);
  if (spread.length > 1)
    console.log(
      `Ferry workers' share of UDP queries: ${spread.map((s) => `${((100 * s.udp) / total).toFixed(1)}%`).join(' / ')}`,
    );
  knot.kill('SIGTERM');
  await ferry.stop();
  ferry = undefined;

  if (process.env.BENCH_SKIP_1M !== '1') {
    console.log('');
    // The compiled CLI serves the big zone (bench/dns/big.ts), as an operator runs it: build it.
    const build = spawnSync('npm', ['run', 'build'], { stdio: 'ignore' });
    if (build.status !== 0)
      throw new Error('npm run build failed; the 1M-record part serves the compiled CLI');
    await bigZoneBench(workers, async (address, port, file, pids) => {
      const p = await dnsperf(address, port, file, seconds, false, pids);
      return { qps: p.qps, lost: p.lost, sent: p.sent };
    });
  }
  if (process.env.BENCH_SKIP_ZONES !== '1') await benchZones({ dir, zoneFile, queryFile, workers, seconds });
  if (process.env.BENCH_SKIP_FUZZ !== '1') {
    console.log('');
    const packets = process.env.FERRY_FUZZ_PACKETS ?? '300000';
    console.log(`fuzz: src/dns/fuzz.test.ts with FERRY_FUZZ_PACKETS=${packets}`);
    const r = spawnSync(process.execPath, ['scripts/run-tests.mjs', 'src/dns/fuzz.test.ts'], {
      stdio: 'inherit',
      env: { ...process.env, FERRY_FUZZ_PACKETS: packets },
    });
    if (r.status !== 0) process.exitCode = 1;
  }
}

try {
  await main();
} finally {
  await cleanup();
}
