/**
 * `npm run bench:relay` (node --import tsx bench/relay/run.ts [seconds]): wrk against a local nginx
 * through six paths, in one run and one fresh network namespace (loopback only, so the nft table
 * of the kernel path touches nothing else): directly, HAProxy in tcp mode, Ferry userspace (the
 * default data plane: native when the addon is built), Ferry userspace + PROXY v2, Ferry
 * userspace (JS) (the TypeScript data plane, forced, to show the native plane's gain), Ferry
 * kernel (nftables DNAT). Two loads: keep-alive, and one new
 * connection per request. Each path runs BENCH_RUNS times (default 3) per load, in an order
 * rotated every round; the table shows medians of req/s and p99 latency, each path's ratio to
 * HAProxy, the proxy processes' CPU time per request, and every run's req/s, under the command
 * line used. The userspace relay runs BENCH_WORKERS workers (default one per CPU, as HAProxy runs
 * one thread per CPU). BENCH_PATHS=kernel,direct runs only the paths named (HAProxy always runs).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import {
  KernelRelay,
  NativeRelay,
  TcpRelay,
  WorkerRelay,
  createUserspaceRelay,
  type RedirectEngine,
} from '../../src/relay/index.js';

const seconds = Number(process.argv[2] ?? process.env.BENCH_SECONDS ?? 5);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 64);
/** Runs per path and load; the table shows medians. */
const runs = Number(process.env.BENCH_RUNS ?? 3);
/** Userspace relay worker processes; default one per CPU, as HAProxy runs one thread per CPU. */
const workers = Number(process.env.BENCH_WORKERS ?? availableParallelism());
/** Comma-separated substrings of path names to run (HAProxy always runs, for the ratio). */
const only = process.env.BENCH_PATHS ? process.env.BENCH_PATHS.toLowerCase().split(',') : null;
const PORT = 8080;
/**
 * nginx listens on one port per path (8080 direct, 8081 PROXY protocol, 8082 HAProxy, 8083 Ferry
 * userspace, 8084 Ferry kernel, 8085 Ferry userspace (JS)), so that no path's connections land on TIME_WAIT sockets another
 * path left in nginx. That matters for the kernel path: its DNATed SYNs carry TCP timestamps and
 * sequence numbers derived from the client → listen address pair, not the client → nginx pair of
 * the other paths, so on a TIME_WAIT socket of another path nginx's PAWS check drops them and the
 * client retries a second later. Measured before this split: the kernel path fell from 7,200 to
 * 1,400-2,000 new connections/s whenever it ran after another path.
 */
const PP_PORT = 8081;
const HAPROXY_UP = 8082;
const USERSPACE_UP = 8083;
const KERNEL_UP = 8084;
const USERSPACE_JS_UP = 8085;

if (process.env.FERRY_BENCH_IN_NS !== '1') {
  // Re-run inside a namespace of our own, removed afterwards whatever happens.
  const ns = `ferry-bench-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', ns]);
  let status = 1;
  try {
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const r = spawnSync(
      'ip',
      ['netns', 'exec', ns, process.execPath, ...process.execArgv, ...process.argv.slice(1)],
      {
        stdio: 'inherit',
        env: { ...process.env, FERRY_BENCH_IN_NS: '1' },
      },
    );
    status = r.status ?? 1;
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
  process.exit(status);
}

for (const bin of ['nginx', 'haproxy', 'wrk', 'nft']) {
  if (spawnSync('which', [bin]).status !== 0) {
    console.error(`bench:relay needs ${bin} (apt-get install nginx-light haproxy wrk nftables)`);
    process.exit(1);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-'));
const children: ChildProcess[] = [];
const engines: RedirectEngine[] = [];

async function waitPort(host: string, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = createConnection({ host, port }, () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${host}:${port}`);
}

function startNginx(): ChildProcess {
  const conf = `
daemon off; worker_processes 2; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;
  server {
    listen 127.0.0.5:${PORT} backlog=4096; listen 127.0.0.5:${PP_PORT} proxy_protocol backlog=4096;
    listen 127.0.0.5:${HAPROXY_UP} backlog=4096; listen 127.0.0.5:${USERSPACE_UP} backlog=4096; listen 127.0.0.5:${KERNEL_UP} backlog=4096; listen 127.0.0.5:${USERSPACE_JS_UP} backlog=4096;
    location / { return 200 "ok\\n"; }
  }
}`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  return spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'nginx-error.log')], {
    stdio: 'inherit',
  });
}

function startHaproxy(): ChildProcess {
  const conf = `
global
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen bench
  bind 127.0.0.6:${PORT}
  server nginx 127.0.0.5:${HAPROXY_UP}
`;
  writeFileSync(join(dir, 'haproxy.cfg'), conf);
  return spawn('haproxy', ['-f', join(dir, 'haproxy.cfg'), '-db'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

interface Result {
  rps: number;
  p99ms: number;
  errors: number;
  /** CPU time (user + system) of the proxy's processes per request, in µs; NaN when not attributable. */
  cpuUs: number;
}

/** User + system CPU seconds consumed so far by `pids` (all their threads). */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
    } catch {
      // exited
    }
  }
  return ticks / 100; // USER_HZ
}

function toMs(v: string, unit: string): number {
  const n = Number(v);
  return unit === 'us' ? n / 1000 : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : n;
}

function wrk(url: string, newConnections: boolean): Promise<Result> {
  const args = [
    '-t2',
    `-c${connections}`,
    `-d${seconds}s`,
    '--latency',
    ...(newConnections ? ['-H', 'Connection: close'] : []),
    url,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (out += d));
    child.on('error', reject);
    child.on('exit', () => {
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
      const p = /99%\s+([\d.]+)(us|ms|s|m)/.exec(out);
      const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
      const errors = (errs ? errs.slice(1).reduce((n, x) => n + Number(x), 0) : 0) + non2xx;
      if (Number.isNaN(rps)) reject(new Error(`wrk output not understood:\n${out}`));
      else resolve({ rps, p99ms: p ? toMs(p[1]!, p[2]!) : NaN, errors, cpuUs: NaN });
    });
  });
}

/** The namespace's conntrack entries and its insert failures and drops so far (hex columns, summed over CPUs). */
function conntrack(): string {
  const count = readFileSync('/proc/sys/net/netfilter/nf_conntrack_count', 'utf8').trim();
  const [head, ...rows] = readFileSync('/proc/net/stat/nf_conntrack', 'utf8').trim().split('\n');
  const cols = head!.trim().split(/\s+/);
  const sum = (name: string) =>
    rows.reduce((n, r) => n + parseInt(r.trim().split(/\s+/)[cols.indexOf(name)] ?? '0', 16), 0);
  return `conntrack ${count} entries, insert_failed ${sum('insert_failed')}, drop ${sum('drop')}, clashres ${sum('clashres')}`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** A pause between runs, so each starts on an idle machine with the previous run's sockets closed. */
function settle(ms = 1000): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function main(): Promise<void> {
  execFileSync('sysctl', ['-qw', 'net.ipv4.ip_local_port_range=1024 65000']);
  execFileSync('sysctl', ['-qw', 'net.ipv4.tcp_tw_reuse=1']);
  children.push(startNginx());
  await waitPort('127.0.0.5', PORT);
  children.push(startHaproxy());
  await waitPort('127.0.0.6', PORT);

  const haproxy = children.at(-1)!;
  const all: Array<[string, string, () => RedirectEngine | null]> = [
    ['nginx direct', '127.0.0.5', () => null],
    ['HAProxy tcp', '127.0.0.6', () => null],
    [
      'Ferry userspace',
      '127.0.0.7',
      () =>
        createUserspaceRelay({
          listen: { address: '127.0.0.7', ports: [PORT] },
          upstream: { address: '127.0.0.5', port: USERSPACE_UP },
          workers,
        }),
    ],
    [
      'Ferry userspace+PROXYv2',
      '127.0.0.8',
      () =>
        createUserspaceRelay({
          listen: { address: '127.0.0.8', ports: [PORT] },
          upstream: { address: '127.0.0.5', port: PP_PORT },
          proxyProtocol: 'v2',
          workers,
        }),
    ],
    [
      'Ferry userspace (JS)',
      '127.0.0.10',
      () =>
        createUserspaceRelay({
          listen: { address: '127.0.0.10', ports: [PORT] },
          upstream: { address: '127.0.0.5', port: USERSPACE_JS_UP },
          workers,
          dataPlane: 'js',
        }),
    ],
    [
      'Ferry kernel',
      '127.0.0.9',
      () =>
        new KernelRelay({
          listen: { address: '127.0.0.9', ports: [PORT] },
          upstream: { address: '127.0.0.5', port: KERNEL_UP },
          id: 'bench',
        }),
    ],
  ];
  // A term naming a path exactly selects that path only; otherwise it selects every path containing it.
  const picks = (name: string, term: string) =>
    all.some(([n]) => n.toLowerCase() === term)
      ? name.toLowerCase() === term
      : name.toLowerCase().includes(term);
  const paths = all.filter(
    ([name]) => only === null || name === 'HAProxy tcp' || only.some((o) => picks(name, o)),
  );
  // The processes whose CPU time counts as the proxy's, per path.
  const proxyPids = new Map<string, () => number[]>([['HAProxy tcp', () => [haproxy.pid!]]]);
  // The kernel engine's table is loaded only around its own runs: its NAT and conntrack rules make
  // the kernel track every flow in the namespace, which would tax the other paths with work that
  // they never need in production (measured: Ferry userspace went from about 42 to 92 µs of CPU
  // per keep-alive request, HAProxy from about 22 to 36, with the table loaded throughout).
  const perRun = new Map<string, () => RedirectEngine>();
  const running = new Map<string, RedirectEngine>();
  for (const [name, , make] of paths) {
    if (name === 'Ferry kernel') {
      perRun.set(name, make as () => RedirectEngine);
      continue;
    }
    const e = make();
    if (!e) continue;
    engines.push(e);
    running.set(name, e);
    await e.start();
    if (e instanceof WorkerRelay) proxyPids.set(name, () => e.workerPids);
    else if (e instanceof TcpRelay || e instanceof NativeRelay) proxyPids.set(name, () => [process.pid]);
  }

  const cpus = spawnSync('nproc').stdout.toString().trim();
  const env = ['BENCH_RUNS', 'BENCH_WORKERS', 'BENCH_CONNECTIONS', 'BENCH_PATHS']
    .filter((k) => process.env[k] !== undefined)
    .map((k) => `${k}=${process.env[k]}`);
  console.log(
    `command: ${[...env, 'node', ...process.execArgv, ...process.argv.slice(1).map((a) => relative(process.cwd(), a) || a)].join(' ')}`,
  );
  console.log(
    `wrk -t2 -c${connections} -d${seconds}s; median of ${runs} runs per path, path order rotated each round; ` +
      `userspace workers ${workers}; ${cpus} CPUs; loopback in one fresh namespace`,
  );
  for (const [load, fresh] of [
    ['keep-alive', false],
    ['new connection per request', true],
  ] as const) {
    const results = new Map<string, Result[]>(paths.map(([name]) => [name, []]));
    for (let round = 0; round < runs; round++) {
      // Rotate the order each round so no path always runs after the same one (TIME_WAIT, caches).
      for (let i = 0; i < paths.length; i++) {
        const [name, host] = paths[(i + round) % paths.length]!;
        await settle();
        const pids = proxyPids.get(name)?.() ?? [];
        const cpu0 = cpuSeconds(pids);
        const engine = perRun.get(name)?.();
        await engine?.start();
        let r: Result;
        try {
          r = await wrk(`http://${host}:${PORT}/`, fresh);
        } finally {
          await engine?.close();
        }
        if (pids.length > 0) r.cpuUs = ((cpuSeconds(pids) - cpu0) * 1e6) / (r.rps * seconds);
        results.get(name)!.push(r);
        // How the accepts spread over the workers (cumulative connections per worker).
        const wr = running.get(name);
        let spread = '';
        if (wr instanceof WorkerRelay) {
          await wr.stats();
          spread = `, ${wr.dataPlane} workers' connections ${wr.workerStats.map((s) => s?.totalConnections ?? '?').join('/')}`;
        }
        console.error(
          `  ${load} round ${round + 1}/${runs}: ${name} ${r.rps.toFixed(0)} req/s (${conntrack()}${spread})`,
        );
      }
    }
    const med = new Map(
      [...results].map(([name, rs]) => [
        name,
        {
          rps: median(rs.map((r) => r.rps)),
          p99ms: median(rs.map((r) => r.p99ms)),
          cpuUs: median(rs.map((r) => r.cpuUs)),
          errors: rs.reduce((n, r) => n + r.errors, 0),
          all: rs.map((r) => r.rps),
        },
      ]),
    );
    const ha = med.get('HAProxy tcp')!.rps;
    console.log(`\n${load}`);
    console.log(
      `${'path'.padEnd(26)}${'req/s'.padStart(10)}${'p99 ms'.padStart(10)}${'errors'.padStart(8)}${'× HAProxy'.padStart(11)}${'proxy CPU µs/req'.padStart(18)}   runs`,
    );
    for (const [name, r] of med) {
      console.log(
        `${name.padEnd(26)}${r.rps.toFixed(0).padStart(10)}${r.p99ms.toFixed(2).padStart(10)}${String(r.errors).padStart(8)}${(r.rps / ha).toFixed(2).padStart(11)}${(Number.isNaN(r.cpuUs) ? '-' : r.cpuUs.toFixed(1)).padStart(18)}   ${r.all.map((x) => x.toFixed(0)).join(' ')}`,
      );
    }
  }
}

try {
  await main();
} finally {
  for (const e of engines) await e.close().catch(() => undefined);
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
