/**
 * Many zones and TCP, beside Knot DNS (issue 17): 100,000 zones of 10 records each, one file per
 * zone in one directory, loaded by `ferry dns serve --zone-dir DIR --workers 2` (the built CLI,
 * as an operator runs it) and by knotd (one `zone:` entry per zone, a template naming the file);
 * for each, the load time (process start until the last zone's SOA is answered) and the RSS
 * summed over the server's processes, also after one UDP query to every zone (a server that
 * builds a zone's answer state on its first query pays for it here); for Ferry, one UPDATE (knsupdate) of a zone among
 * them and its AXFR (kdig), with the time until the query threads answer the change; then TCP
 * queries/s (dnsperf -m tcp, queries pipelined on each connection) against both on the
 * 10,000-name zone.
 *
 * `npm run bench:dns` calls `benchZones` with its zone and query file; alone:
 * `node --import tsx bench/dns/zones.ts [zones]` (default 100000) builds a zone of its own.
 * `... zones.ts --in-process [zones]` measures only the load path on the compiled code, in this
 * process: the files read and parsed by ZoneFiles into a ZoneStore, then time, CPU, heap and RSS
 * (median of BENCH_RUNS=3 runs, each in a fresh process).
 * Needs `npm run build` (dist/), knotd and dnsperf. Environment: BENCH_WORKERS (2), BENCH_CLIENTS
 * (8), BENCH_OUTSTANDING (64), BENCH_SECONDS (8).
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeMessage, dnsExchangeUdp, encodeMessage, makeQuery, RRType } from '../../src/dns/index.js';
import { freePort } from '../../test/ports.js';
import { knotConf } from './knot.js';

const ADDR_FERRY = '127.0.131.1';
const ADDR_KNOT = '127.0.131.2';
const FERRY_BIN = join(import.meta.dirname, '../../bin/ferry.js');

export interface BenchZonesOptions {
  /** Scratch directory (removed by the caller). */
  dir: string;
  /** The 10,000-name zone and its query file, for the TCP figures. */
  zoneFile: string;
  queryFile: string;
  zones?: number;
  workers?: number;
  seconds?: number;
}

/** Writes `count` zone files of 10 records each as DIR/z<i>.example.zone; returns the last origin. */
function writeZones(dir: string, count: number): string {
  mkdirSync(dir, { recursive: true });
  let origin = '';
  for (let i = 0; i < count; i++) {
    origin = `z${i}.example.`;
    writeFileSync(
      join(dir, `${origin}zone`),
      `$ORIGIN ${origin}\n$TTL 3600\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n@ NS ns2\n` +
        `ns1 A 192.0.2.53\nns2 A 192.0.2.54\n@ A 198.51.100.${i % 250}\nwww A 198.51.100.${i % 250}\n` +
        `mail A 198.51.100.25\n@ MX 10 mail\n@ TXT "zone ${i}"\n`,
    );
  }
  return origin;
}

/** RSS in bytes of `pid` and every process below it. */
function rssTree(pid: number): number {
  let total = 0;
  const status = (p: number) => {
    try {
      return readFileSync(`/proc/${p}/status`, 'utf8');
    } catch {
      return '';
    }
  };
  const walk = (p: number) => {
    total += Number(/VmRSS:\s+(\d+) kB/.exec(status(p))?.[1] ?? 0) * 1024;
    for (const t of readdirSyncSafe(`/proc/${p}/task`)) {
      let kids = '';
      try {
        kids = readFileSync(`/proc/${p}/task/${t}/children`, 'utf8');
      } catch {
        /* gone */
      }
      for (const k of kids.split(' ').filter(Boolean)) walk(Number(k));
    }
  };
  walk(pid);
  return total;
}

function readdirSyncSafe(p: string): string[] {
  try {
    return readdirSync(p);
  } catch {
    return [];
  }
}

/** Milliseconds from `t0` until `origin`'s SOA is answered (polling every 50 ms). */
async function answeredAfter(child: ChildProcess, address: string, port: number, origin: string, t0: number) {
  const probe = encodeMessage(makeQuery(1, origin, RRType.SOA));
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`the server on ${address}:${port} exited (${child.exitCode ?? child.signalCode})`);
    const ok = await dnsExchangeUdp({ address, port }, probe, 200).then(
      (b) => decodeMessage(b).answers.length > 0,
      () => false,
    );
    if (ok) return performance.now() - t0;
    if (performance.now() - t0 > 600_000) throw new Error(`${origin} not answered within 10 minutes`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * One UDP query (`www.<origin>` A) to every origin, `window` at a time from one socket, each
 * batch waiting up to 2 s; returns how many were answered.
 */
async function queryEvery(address: string, port: number, origins: string[], window = 256): Promise<number> {
  const sock = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  let answered = 0;
  let waiting = new Set<number>();
  let wake: (() => void) | undefined;
  sock.on('message', (m: Buffer) => {
    if (m.length >= 2 && waiting.delete(m.readUInt16BE(0))) {
      answered++;
      if (waiting.size === 0) wake?.();
    }
  });
  await new Promise<void>((r) => sock.bind(0, r));
  try {
    for (let i = 0; i < origins.length; i += window) {
      const batch = origins.slice(i, i + window);
      waiting = new Set(batch.map((_, j) => j + 1));
      const done = new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 2000).unref();
      });
      batch.forEach((o, j) =>
        sock.send(encodeMessage(makeQuery(j + 1, `www.${o}`, RRType.A)), port, address),
      );
      await done;
    }
  } finally {
    sock.close();
  }
  return answered;
}

/**
 * One change and one transfer among all the zones, with Debian's own clients: knsupdate adds
 * `bench-update.<origin>` A, then UDP queries (answered by the query threads) poll for it every
 * 20 ms up to 10 s, and kdig transfers the zone (AXFR). Returns the milliseconds until the change
 * was answered and the records transferred, the new one among them or not.
 */
async function updateAndTransfer(
  address: string,
  port: number,
  origin: string,
): Promise<{ ms: number; records: number; hasNew: boolean }> {
  const name = `bench-update.${origin}`;
  const script = `server ${address} ${port}\nzone ${origin}\nupdate add ${name} 60 A 192.0.2.77\nsend\n`;
  const t0 = performance.now();
  const up = spawnSync('knsupdate', [], { input: script, encoding: 'utf8', timeout: 10_000 });
  if (up.status !== 0) throw new Error(`knsupdate failed: ${up.stderr || up.stdout}`);
  const probe = encodeMessage(makeQuery(2, name, RRType.A));
  let ms = NaN;
  while (performance.now() - t0 < 10_000) {
    const got = await dnsExchangeUdp({ address, port }, probe, 200).then(
      (b) => decodeMessage(b).answers.length > 0,
      () => false,
    );
    if (got) {
      ms = performance.now() - t0;
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const x = spawnSync('kdig', [`@${address}`, '-p', String(port), origin, 'AXFR', '+nocomments'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  const lines = x.stdout.split('\n').filter((l) => l.trim() !== '' && !l.startsWith(';'));
  return {
    ms,
    records: lines.length,
    hasNew: lines.some((l) => l.toLowerCase().startsWith(name.toLowerCase())),
  };
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

async function dnsperfTcp(
  address: string,
  port: number,
  queryFile: string,
  seconds: number,
  clients: number,
  outstanding: number,
): Promise<{ qps: number; lost: number; sent: number }> {
  const args = ['-m', 'tcp', '-s', address, '-p', String(port), '-d', queryFile, '-l', String(seconds)];
  args.push('-c', String(clients), '-q', String(outstanding), '-t', '2');
  const { stdout } = await promisify(execFile)('dnsperf', args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  const num = (re: RegExp) => Number(re.exec(stdout)?.[1] ?? NaN);
  return {
    qps: num(/Queries per second:\s+([\d.]+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    sent: num(/Queries sent:\s+(\d+)/),
  };
}

const mb = (n: number) => `${(n / 1048576).toFixed(0)} MB`;
const ratio = (f: number, k: number) => (f / k).toFixed(2);

/** Runs the many-zones load and the TCP comparison; prints one table each. */
export async function benchZones(o: BenchZonesOptions): Promise<void> {
  const count = o.zones ?? 100_000;
  const workers = o.workers ?? 2;
  const seconds = o.seconds ?? 8;
  const clients = Number(process.env.BENCH_CLIENTS ?? 8);
  const outstanding = Number(process.env.BENCH_OUTSTANDING ?? 64);
  if (!existsSync(join(import.meta.dirname, '../../dist/cli/main.js')))
    throw new Error('bench/dns/zones.ts runs the built CLI: run `npm run build` first');
  const zoneDir = join(o.dir, 'many');
  const t = performance.now();
  const last = writeZones(zoneDir, count);
  console.log(
    `${count} zones × 10 records written in ${((performance.now() - t) / 1000).toFixed(1)} s (${zoneDir}); ` +
      `load time = start → SOA of ${last} answered; RSS summed over the server's processes`,
  );
  const origins = Array.from({ length: count }, (_, i) => `z${i}.example.`);
  const children: ChildProcess[] = [];
  try {
    // Knot: one zone entry each, the template names the file.
    const knotPort = await freePort(ADDR_KNOT, { udp: true });
    writeFileSync(
      join(o.dir, 'knot-many.conf'),
      knotConf({
        dir: o.dir,
        address: ADDR_KNOT,
        port: knotPort,
        workers,
        zones: origins,
        file: `${zoneDir}/%s.zone`,
      }),
    );
    let t0 = performance.now();
    const knot = spawn('knotd', ['-c', join(o.dir, 'knot-many.conf')], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(knot);
    const knotMs = await answeredAfter(knot, ADDR_KNOT, knotPort, last, t0);
    const knotRss = rssTree(knot.pid!);
    await new Promise((r) => setTimeout(r, 2000));
    const knotRss2 = rssTree(knot.pid!);
    const knotAnswered = await queryEvery(ADDR_KNOT, knotPort, origins);
    const knotRss3 = rssTree(knot.pid!);
    await stop(knot);

    const ferryPort = await freePort(ADDR_FERRY, { udp: true });
    t0 = performance.now();
    const ferry = spawn(
      process.execPath,
      [
        FERRY_BIN,
        'dns',
        'serve',
        '--zone-dir',
        zoneDir,
        '--listen',
        `${ADDR_FERRY}:${ferryPort}`,
        '--workers',
        String(workers),
        '--allow-update',
        '127.0.0.0/8',
        '--allow-transfer',
        '127.0.0.0/8',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, FERRY_LOG_LEVEL: 'warn' } },
    );
    children.push(ferry);
    const ferryMs = await answeredAfter(ferry, ADDR_FERRY, ferryPort, last, t0);
    const ferryRss = rssTree(ferry.pid!);
    await new Promise((r) => setTimeout(r, 2000));
    const ferryRss2 = rssTree(ferry.pid!);
    const ferryAnswered = await queryEvery(ADDR_FERRY, ferryPort, origins);
    const ferryRss3 = rssTree(ferry.pid!);
    const mid = origins[Math.floor(count / 2)]!;
    const change = await updateAndTransfer(ADDR_FERRY, ferryPort, mid);
    await stop(ferry);

    console.log('');
    console.log(
      `${count} zones    load time   RSS at first answer   RSS 2 s later   RSS after a query to every zone`,
    );
    const row = (ms: number, a: number, b: number, c: number, answered: number) =>
      `${`${(ms / 1000).toFixed(1)} s`.padStart(9)}   ${mb(a).padStart(19)}   ${mb(b).padStart(13)}   ` +
      `${mb(c).padStart(9)} (${answered} answered)`;
    console.log(`Knot         ${row(knotMs, knotRss, knotRss2, knotRss3, knotAnswered)}`);
    console.log(`Ferry        ${row(ferryMs, ferryRss, ferryRss2, ferryRss3, ferryAnswered)}`);
    console.log(
      `Ferry/Knot: load time ${ratio(ferryMs, knotMs)}, RSS ${ratio(ferryRss2, knotRss2)}, ` +
        `RSS after every zone queried ${ratio(ferryRss3, knotRss3)} (target ≤ 1.00 each)`,
    );
    console.log(
      `Ferry with ${count} zones: an UPDATE of ${mid} (knsupdate) answered by the query threads after ` +
        `${Number.isNaN(change.ms) ? 'NOT within 10 s' : `${change.ms.toFixed(0)} ms`}; AXFR of it (kdig): ` +
        `${change.records} records, ${change.hasNew ? 'the new one among them' : 'WITHOUT the new one'}`,
    );
    rmSync(zoneDir, { recursive: true, force: true });

    // TCP on the 10,000-name zone, both with the same workers.
    const kp = await freePort(ADDR_KNOT, { udp: true });
    writeFileSync(
      join(o.dir, 'knot-tcp.conf'),
      knotConf({
        dir: o.dir,
        address: ADDR_KNOT,
        port: kp,
        workers,
        zones: ['bench.example.'],
        file: o.zoneFile,
      }),
    );
    const k2 = spawn('knotd', ['-c', join(o.dir, 'knot-tcp.conf')], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(k2);
    await answeredAfter(k2, ADDR_KNOT, kp, 'bench.example.', performance.now());
    const fp = await freePort(ADDR_FERRY, { udp: true });
    const f2 = spawn(
      process.execPath,
      [
        FERRY_BIN,
        'dns',
        'serve',
        '--zone',
        o.zoneFile,
        '--listen',
        `${ADDR_FERRY}:${fp}`,
        '--workers',
        String(workers),
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, FERRY_LOG_LEVEL: 'warn' } },
    );
    children.push(f2);
    await answeredAfter(f2, ADDR_FERRY, fp, 'bench.example.', performance.now());
    // Warm-up (JIT, answer caches), then one pass each.
    await dnsperfTcp(ADDR_KNOT, kp, o.queryFile, 2, clients, outstanding);
    await dnsperfTcp(ADDR_FERRY, fp, o.queryFile, 2, clients, outstanding);
    const kt = await dnsperfTcp(ADDR_KNOT, kp, o.queryFile, seconds, clients, outstanding);
    const ft = await dnsperfTcp(ADDR_FERRY, fp, o.queryFile, seconds, clients, outstanding);
    console.log('');
    console.log(
      `TCP (dnsperf -m tcp -c ${clients} -q ${outstanding} -l ${seconds}, pipelined), 10,000-name zone, ${workers} workers each:`,
    );
    console.log(`Knot   ${kt.qps.toFixed(0).padStart(8)} q/s, lost ${kt.lost}/${kt.sent}`);
    console.log(`Ferry  ${ft.qps.toFixed(0).padStart(8)} q/s, lost ${ft.lost}/${ft.sent}`);
    console.log(`Ferry/Knot TCP queries/s: ${ratio(ft.qps, kt.qps)}`);
  } finally {
    await Promise.all(children.map((c) => stop(c)));
  }
}

/** One in-process load of every zone file in `dir` (see the file comment); prints one JSON line. */
async function loadInProcess(dir: string): Promise<void> {
  const dist = join(import.meta.dirname, '../../dist/dns/index.js');
  const { ZoneFiles, ZoneStore } = (await import(dist)) as typeof import('../../src/dns/index.js');
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const store = new ZoneStore(await new ZoneFiles({ dirs: [dir] }).loadAll());
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  console.log(
    JSON.stringify({
      zones: store.list().length,
      ms: Math.round(ms),
      cpuMs: Math.round((cpu.user + cpu.system) / 1000),
      heapMB: Math.round(m.heapUsed / 1048576),
      rssMB: Math.round(m.rss / 1048576),
    }),
  );
}

/** `--in-process`: BENCH_RUNS fresh processes loading the same files; the median of each figure. */
function benchInProcess(count: number): void {
  if (!existsSync(join(import.meta.dirname, '../../dist/dns/index.js')))
    throw new Error('--in-process loads the built code: run `npm run build` first');
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-load-'));
  try {
    writeZones(dir, count);
    const runs: Array<Record<string, number>> = [];
    for (let i = 0; i < Number(process.env.BENCH_RUNS ?? 3); i++) {
      const r = spawnSync(
        process.execPath,
        ['--expose-gc', '--import', 'tsx', import.meta.filename, '--load-dir', dir],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
      );
      if (r.status !== 0) throw new Error(`the load run exited with ${r.status ?? r.signal}`);
      runs.push(JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number>);
      console.log(`run ${i + 1}: ${JSON.stringify(runs[i])}`);
    }
    const median = (k: string) => runs.map((r) => r[k]!).sort((a, b) => a - b)[runs.length >> 1];
    console.log(
      `${count} zones loaded in process (median of ${runs.length}): ${median('ms')} ms, CPU ${median('cpuMs')} ms, ` +
        `heap ${median('heapMB')} MB, RSS ${median('rssMB')} MB`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.filename === process.argv[1] && process.argv[2] === '--load-dir') {
  await loadInProcess(process.argv[3]!);
} else if (
  process.argv[1] &&
  import.meta.filename === process.argv[1] &&
  process.argv[2] === '--in-process'
) {
  benchInProcess(Number(process.argv[3] ?? 100_000));
}

// Alone: a 10,000-name zone of A records and a shuffled query file over it.
else if (process.argv[1] && import.meta.filename === process.argv[1]) {
  for (const bin of ['dnsperf', 'knotd']) {
    if (spawnSync('which', [bin]).status !== 0) {
      console.error(`bench/dns/zones.ts needs ${bin} (apt-get install dnsperf knot)`);
      process.exit(1);
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-zones-'));
  try {
    const z = ['$ORIGIN bench.example.', '$TTL 300', '@ SOA ns1 hostmaster 1 3600 600 86400 300', '@ NS ns1'];
    const q: string[] = [];
    z.push('ns1 A 192.0.2.53');
    for (let i = 0; i < 10_000; i++) {
      z.push(`host${i} A 198.51.${(i >> 8) & 255}.${i & 255}`);
      q.push(`host${(i * 7919) % 10_000}.bench.example. A`);
    }
    writeFileSync(join(dir, 'bench.zone'), z.join('\n') + '\n');
    writeFileSync(join(dir, 'queries.txt'), q.join('\n') + '\n');
    await benchZones({
      dir,
      zoneFile: join(dir, 'bench.zone'),
      queryFile: join(dir, 'queries.txt'),
      zones: Number(process.argv[2] ?? 100_000),
      workers: Number(process.env.BENCH_WORKERS ?? 2),
      seconds: Number(process.env.BENCH_SECONDS ?? 8),
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
