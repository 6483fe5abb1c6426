/**
 * The userspace relay on several cores: `WorkerRelay` runs N worker processes that accept and
 * relay TCP from the same listening sockets, behind the same `RedirectEngine` contract. Each
 * worker relays on the native data plane (`NativeRelay`, native/relay) unless `dataPlane: 'js'`,
 * FERRY_NATIVE=0, a missing addon or `acceptProxyProtocol` puts it on the TypeScript one
 * (`TcpRelay`); the engine decides once and every worker uses the same plane.
 *
 * Why processes: one Node event loop relays on one core, while HAProxy runs a thread per core.
 * Node 20 cannot share a port between processes with SO_REUSEPORT, so this process binds every
 * port (ephemeral ports resolved, bind errors reported here), the workers inherit the listening
 * sockets as file descriptors at spawn, and this process then stops accepting: each accept is
 * taken by whichever worker the kernel wakes. That is `cluster`'s SCHED_NONE, without the cluster
 * module's process-wide settings, and without its round-robin mode's cost of passing every
 * accepted socket to a worker over IPC. TypeScript workers: every worker is woken for a new
 * connection and the kernel hands it to one; a burst (64 connects at once) spreads about evenly
 * (measured 28/36 to 37/27 over two workers). libuv's UV_TCP_SINGLE_ACCEPT=1 (one accept per
 * wake-up) was measured too: no better spread, and more CPU per new connection (about 290 → 430
 * µs), so it is not set. Native workers likewise are all woken and race (EPOLLEXCLUSIVE, one
 * woken worker per connection, left one worker with nearly every connection of a burst); a woken
 * worker accepts at most 16 at a time.
 *
 * Contract: `setUpstream`, `hold` and `release` resolve once every worker has applied them, so a
 * connection accepted after the call resolves is treated the new way in every worker; messages on
 * one IPC channel arrive in order, so a `setUpstream` then `release` releases to the new upstream.
 * Held connections are released in arrival order within each worker (the workers release at the
 * same time). `stats` sums the workers' counters per listener; `drain` waits for every worker.
 * UDP is relayed by this process (its session table is not shared), as are TCP connections
 * accepted here before the workers took over. A worker that dies leaves the others serving; its
 * last reported counters stay in the totals.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { FerryError } from '../common/errors.js';
import { toErrorCode } from '../common/error-codes.js';
import type { ListenerStats, RedirectEngine, RelayStats, Upstream } from './engine.js';
import {
  checkUpstream,
  resolveRelayOptions,
  type RelayOptions,
  type ResolvedRelayOptions,
} from './options.js';
import { NativeRelay, useNativeDataPlane } from './native-relay.js';
import { TcpRelay } from './tcp-relay.js';

/** Messages from the engine to a worker. */
export type WorkerRequest =
  | { id: number; op: 'init'; opts: RelayOptions; fds: number[]; holding: boolean }
  | { id: number; op: 'setUpstream'; upstream: Upstream }
  | { id: number; op: 'hold' | 'release' | 'stats' | 'close' }
  | { id: number; op: 'drain'; timeoutMs: number };

/** A request before it is numbered. */
type WorkerCall = WorkerRequest extends infer R ? (R extends WorkerRequest ? Omit<R, 'id'> : never) : never;

/** A worker's answer to the request with the same id. */
export type WorkerReply =
  { id: number; ok: true; value?: unknown } | { id: number; ok: false; code: string; message: string };

/** Longest wait for a worker to start, or to close before it is killed. */
const WORKER_TIMEOUT_MS = 10_000;
/** The inherited listening sockets start at this descriptor (after stdin, stdout, stderr, IPC). */
const FIRST_FD = 4;

interface Worker {
  child: ChildProcess;
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>;
  alive: boolean;
  /** The last counters it reported; they stay in the totals if it dies. */
  last: RelayStats | null;
}

function workerEntry(): string {
  // Run from TypeScript sources (tsx) or compiled JavaScript, whichever this module is.
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  return fileURLToPath(new URL(`./worker-main${ext}`, import.meta.url));
}

/** This process's flags for the workers, less those that would make a worker a test runner or debugger. */
function workerExecArgv(): string[] {
  return process.execArgv.filter((a) => !/^--(test|inspect|watch|eval|print|input-type)/.test(a));
}

/** Userspace relay over `workers` processes; see the module comment. */
export class WorkerRelay implements RedirectEngine {
  readonly kind = 'userspace';
  private readonly opts: ResolvedRelayOptions;
  private readonly raw: RelayOptions;
  /** Binds the ports, relays UDP, and any TCP accepted before the workers took over. */
  private readonly local: TcpRelay;
  private readonly workers: Worker[] = [];
  /** The workers' data plane, decided once here. */
  readonly dataPlane: 'native' | 'js';
  private nextId = 1;
  private holding = false;
  private started = false;
  private closed = false;

  constructor(opts: RelayOptions) {
    this.opts = resolveRelayOptions(opts);
    if (this.opts.workers < 2)
      throw new FerryError(
        'RELAY_BAD_OPTION',
        'WorkerRelay needs workers >= 2; use TcpRelay for one process',
      );
    this.raw = opts;
    // UDP stays in this process (TypeScript), so it does not keep the workers off the native plane.
    this.dataPlane = useNativeDataPlane({ ...this.opts, udp: false }) ? 'native' : 'js';
    this.local = new TcpRelay({ ...opts, workers: 1, dataPlane: 'js' });
  }

  get ports(): number[] {
    return this.local.ports;
  }

  /** Live worker processes. */
  get workerCount(): number {
    return this.workers.filter((w) => w.alive).length;
  }

  /** Each worker's counters as of the last `stats()` (null before), e.g. to see how accepts spread. */
  get workerStats(): Array<RelayStats | null> {
    return this.workers.map((w) => w.last);
  }

  /** Process ids of the live workers (for tests and diagnostics). */
  get workerPids(): number[] {
    return this.workers.filter((w) => w.alive && w.child.pid !== undefined).map((w) => w.child.pid!);
  }

  async start(): Promise<void> {
    if (this.started)
      throw new FerryError('RELAY_STATE', 'relay already started; create a new WorkerRelay to start again');
    this.started = true;
    try {
      await this.local.start();
      const fds = this.local.tcpListenerFds();
      const n = this.opts.workers;
      const share = (total: number) => Math.max(1, Math.ceil(total / n));
      const opts: RelayOptions = {
        ...this.raw,
        // Each worker binds to the resolved ports through the inherited sockets.
        listen: this.opts.listen.map((spec, i) => ({ address: spec.address, ports: this.portsOf(i) })),
        upstream: this.opts.upstream,
        udp: false,
        workers: 1,
        dataPlane: this.dataPlane,
        maxConnections: share(this.opts.maxConnections),
        holdQueueLimit: this.opts.holdQueueLimit === 0 ? 0 : share(this.opts.holdQueueLimit),
      };
      for (let i = 0; i < n; i++) this.workers.push(this.spawn(fds));
      await Promise.all(
        this.workers.map((w) =>
          this.request(
            w,
            { op: 'init', opts, fds: fds.map((_, j) => FIRST_FD + j), holding: this.holding },
            WORKER_TIMEOUT_MS,
          ),
        ),
      );
      await this.local.stopAcceptingTcp();
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Resolved ports of listen entry `i`. */
  private portsOf(i: number): number[] {
    let offset = 0;
    for (let j = 0; j < i; j++) offset += this.opts.listen[j]!.ports.length;
    return this.local.ports.slice(offset, offset + this.opts.listen[i]!.ports.length);
  }

  private spawn(fds: number[]): Worker {
    const child = fork(workerEntry(), [], {
      execArgv: workerExecArgv(),
      stdio: ['ignore', 'inherit', 'inherit', 'ipc', ...fds],
    });
    const w: Worker = { child, pending: new Map(), alive: true, last: null };
    child.on('message', (m: WorkerReply) => {
      const p = w.pending.get(m.id);
      if (!p) return;
      w.pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else p.reject(new FerryError(toErrorCode(m.code, 'RELAY_WORKER'), m.message));
    });
    child.on('error', () => undefined); // reported through 'exit'
    child.once('exit', (code, signal) => {
      w.alive = false;
      const err = new FerryError(
        'RELAY_WORKER',
        `relay worker ${child.pid ?? '?'} exited (${signal ?? `code ${String(code)}`})`,
      );
      for (const p of w.pending.values()) p.reject(err);
      w.pending.clear();
    });
    return w;
  }

  private request(w: Worker, msg: WorkerCall, timeoutMs = WORKER_TIMEOUT_MS): Promise<unknown> {
    if (!w.alive) return Promise.resolve(undefined);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        w.pending.delete(id);
        reject(
          new FerryError(
            'RELAY_WORKER',
            `relay worker ${w.child.pid ?? '?'} did not answer ${msg.op} within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      const done =
        <T>(f: (v: T) => void) =>
        (v: T) => {
          clearTimeout(timer);
          f(v);
        };
      w.pending.set(id, { resolve: done(resolve), reject: done(reject) });
      w.child.send({ ...msg, id }, (err) => {
        if (!err || !w.pending.has(id)) return;
        w.pending.delete(id);
        clearTimeout(timer);
        // A worker that died meanwhile has nothing left to apply the call to.
        if (w.alive)
          reject(
            new FerryError(
              'RELAY_WORKER',
              `cannot reach relay worker ${w.child.pid ?? '?'}: ${err.message}`,
              { cause: err },
            ),
          );
        else resolve(undefined);
      });
    });
  }

  /** Sends `msg` to every live worker; resolves their answers once all have applied it. */
  private broadcast(msg: WorkerCall, timeoutMs?: number): Promise<unknown[]> {
    return Promise.all(this.workers.map((w) => this.request(w, msg, timeoutMs)));
  }

  async setUpstream(u: Upstream): Promise<void> {
    const upstream = checkUpstream(u, this.opts.sourceAddress);
    this.local.setUpstream(upstream);
    await this.broadcast({ op: 'setUpstream', upstream });
  }

  async hold(): Promise<void> {
    this.holding = true;
    this.local.hold();
    await this.broadcast({ op: 'hold' });
  }

  async release(): Promise<void> {
    this.holding = false;
    this.local.release();
    await this.broadcast({ op: 'release' });
  }

  async stats(): Promise<RelayStats> {
    const replies = await this.broadcast({ op: 'stats' });
    this.workers.forEach((w, i) => {
      if (replies[i] !== undefined) w.last = replies[i] as RelayStats;
      else if (w.last && !w.alive)
        w.last = {
          ...w.last,
          activeConnections: 0,
          held: 0,
          listeners: w.last.listeners?.map((l) => ({ ...l, activeConnections: 0 })),
        };
    });
    return mergeStats(
      this.local.stats(),
      this.workers.flatMap((w) => (w.last ? [w.last] : [])),
    );
  }

  async drain(timeoutMs: number): Promise<boolean> {
    const [here, ...there] = await Promise.all([
      this.local.drain(timeoutMs),
      ...this.workers.map((w) => this.request(w, { op: 'drain', timeoutMs }, timeoutMs + WORKER_TIMEOUT_MS)),
    ]);
    return here && there.every((r) => r === undefined || r === true);
  }

  /** Closes every worker (killing one that does not exit in time) and this process's sockets. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([
      this.local.close(),
      ...this.workers.map(async (w) => {
        if (!w.alive) return;
        const exited = new Promise<void>((r) => w.child.once('exit', () => r()));
        await this.request(w, { op: 'close' }).catch(() => undefined);
        const timer = setTimeout(() => w.child.kill('SIGKILL'), WORKER_TIMEOUT_MS);
        if (w.alive && w.child.connected) w.child.disconnect();
        await exited;
        clearTimeout(timer);
      }),
    ]);
  }
}

/** Sums worker counters into `base` (this process's), listener by listener in bind order. */
export function mergeStats(base: RelayStats, parts: RelayStats[]): RelayStats {
  const out: RelayStats = { ...base, listeners: base.listeners?.map((l) => ({ ...l })) };
  const later = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.max(a, b));
  for (const p of parts) {
    out.activeConnections += p.activeConnections;
    out.totalConnections += p.totalConnections;
    out.bytesToUpstream += p.bytesToUpstream;
    out.bytesToClient += p.bytesToClient;
    out.lastConnectionAt = later(out.lastConnectionAt, p.lastConnectionAt);
    out.held += p.held;
    out.upstreamFailures += p.upstreamFailures;
    out.rejected = (out.rejected ?? 0) + (p.rejected ?? 0);
    out.holdExpired = (out.holdExpired ?? 0) + (p.holdExpired ?? 0);
    out.idleTimeouts = (out.idleTimeouts ?? 0) + (p.idleTimeouts ?? 0);
    for (const pl of p.listeners ?? []) {
      const l = out.listeners?.find(
        (x: ListenerStats) => x.protocol === pl.protocol && x.port === pl.port && x.address === pl.address,
      );
      if (!l) continue;
      l.activeConnections += pl.activeConnections;
      l.totalConnections += pl.totalConnections;
      l.bytesToUpstream += pl.bytesToUpstream;
      l.bytesToClient += pl.bytesToClient;
      l.lastConnectionAt = later(l.lastConnectionAt, pl.lastConnectionAt);
    }
  }
  return out;
}

/**
 * The userspace engine for `opts`: a `WorkerRelay` when `workers` > 1; else, in this process, a
 * `NativeRelay` when the native data plane can serve the options (see `RelayOptions.dataPlane`),
 * or a `TcpRelay`.
 */
export function createUserspaceRelay(opts: RelayOptions): TcpRelay | NativeRelay | WorkerRelay {
  if ((opts.workers ?? 1) > 1) return new WorkerRelay(opts);
  return useNativeDataPlane(resolveRelayOptions(opts)) ? new NativeRelay(opts) : new TcpRelay(opts);
}
