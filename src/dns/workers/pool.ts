/**
 * Queries on several cores: `DnsWorkerPool` runs N `cluster` workers that answer from the same
 * UDP and TCP sockets, while this (primary) process keeps the one `ZoneStore` that every change
 * goes through (the change API, UPDATE, transfers, persistence).
 *
 * Sockets. With the native UDP addon (udp-io.ts, the default on Linux), each worker binds a UDP
 * socket of its own on the port with SO_REUSEPORT, and the kernel spreads clients over them by
 * address hash; the primary only probes that the port is free. Without it (Node 20's dgram has no
 * reusePort), a cluster worker's non-exclusive bind is served by the primary, which binds one
 * socket and passes the same descriptor to every worker; each datagram is read by whichever
 * worker gets to it first. Either way the bench prints each worker's share. TCP uses cluster's
 * default scheduling (the primary accepts and hands connections round-robin).
 *
 * Zone data. The primary pushes state, not deltas: after a change it sends the current contents
 * of every RRset the change touched (or the whole zone when a zone is added or was changed
 * outside the store), batched per tick, numbered, and acknowledged by each worker; `sync()`
 * waits for those acknowledgements. Messages on one IPC channel arrive in order, so a worker
 * applies changes in commit order; a change that a commit listener undid is pushed as its undone
 * state. Workers rebuild their precompiled answers (the answer cache) on the next query.
 *
 * Starting. A worker gets its zones in pieces of PIECE_RRSETS RRsets and reports each piece it
 * has applied. There is no fixed start timeout, since a big zone on a busy machine may take
 * minutes: a starting worker fails only when it dies, or reports no progress for `stallMs`.
 *
 * Requests the primary role must see (UPDATE, NOTIFY, transfers, TSIG) are forwarded by the
 * worker (its request chain's forward link, dispatch/chain.ts), run through the chain here, and
 * the responses sent back through the worker's socket.
 */
import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { FerryError } from '../../common/errors.js';
import { toErrorCode } from '../../common/error-codes.js';
import type { Logger } from '../../common/log.js';
import { queryChannel } from '../metrics.js';
import { nameKey } from '../wire/name.js';
import type { ZoneStore } from '../zone/store.js';
import type { RRset, Zone, ZoneNode } from '../zone/zone.js';
import { encodeRRsets, type RRsetState } from './codec.js';
import type { FromWorker, ToWorker, WorkerInit, ZoneOp, ZonePiece } from './protocol.js';

/** Answers a forwarded request: the response messages, or undefined to drop it. */
export type ForwardHandler = (
  msg: Buffer,
  remote: { address: string; transport: 'udp' | 'tcp' },
) => Buffer[] | undefined;

export interface WorkerPoolOptions extends WorkerInit {
  /** Worker processes (≥ 2). */
  count: number;
  logger: Logger;
  forward: ForwardHandler;
  /** A starting worker that reports no progress this long is killed (default 30000 ms). */
  stallMs?: number;
}

/** Default bound on a starting worker's silence (loading its code, a zone piece, binding). */
const STALL_MS = 30_000;
/** How often a starting worker's progress is checked. */
const STALL_CHECK_MS = 250;
/** Longest wait for a worker to close before it is killed. */
const CLOSE_TIMEOUT_MS = 5_000;
/** Names per zone piece sent to a starting worker: one progress step, a few ms of work. */
const PIECE_NODES = 10_000;
/** How often the primary checks for `ferry.dns.query` subscribers to tell the workers. */
const METRICS_POLL_MS = 250;

interface Slot {
  worker: Worker;
  acked: number;
  /** Sent its init: later syncs go to it too. */
  initialized: boolean;
  ready: boolean;
}

function workerEntry(): string {
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  return fileURLToPath(new URL(`./worker-main${ext}`, import.meta.url));
}

/** The RRsets of nodes kept outside a compact base, in `encodeRRsets` form. */
function overlayRRsets(nodes: ZoneNode[]): Uint8Array {
  const sets: RRset[] = [];
  for (const n of nodes) for (const t of n.rrsets.keys()) sets.push(n.rrsets.get(t)!);
  return encodeRRsets(sets);
}

function zoneImage(zone: Zone): ZoneOp {
  const img = zone.compactImage();
  return { kind: 'put', origin: zone.origin, nodes: img.base, rrsets: overlayRRsets(img.overlay) };
}

/**
 * The zones in pieces of at most PIECE_NODES names (at least one piece per zone): runs of the
 * zone's compact node records, views of the buffer this process holds (no copy until sent).
 */
function zonePieces(zones: Zone[]): ZonePiece[] {
  const out: ZonePiece[] = [];
  const none = new Uint8Array(0);
  for (const zone of zones) {
    const img = zone.compactImage();
    const chunks = img.chunks(PIECE_NODES);
    if (chunks.length === 0) chunks.push(none);
    chunks.forEach((nodes, i) =>
      out.push({
        origin: zone.origin,
        first: i === 0,
        nodes,
        rrsets: i === 0 ? overlayRRsets(img.overlay) : none,
      }),
    );
  }
  return out;
}

/** N query workers fed from one zone store. */
export class DnsWorkerPool {
  private readonly slots: Slot[] = [];
  private seq = 0;
  private stopping = false;
  private readonly waiters: Array<{ seq: number; resolve: () => void }> = [];
  private flushQueued = false;
  private readonly puts = new Set<Zone>();
  private readonly removes = new Set<string>();
  private readonly touched = new Map<Zone, Map<string, { name: string; type: number }>>();
  private readonly dirty = new Set<Zone>();
  private readonly zoneSubs = new Map<Zone, () => void>();
  private readonly unsubscribe: () => void;
  private metricsOn = false;
  private readonly metricsTimer: NodeJS.Timeout;
  private readonly stats = new Map<number, (s: { udp: number; tcp: number; pid: number }) => void>();
  /** The zones in pieces as of sequence number `seq`, shared by workers starting together. */
  private pieces: { seq: number; list: ZonePiece[] } | undefined;

  private constructor(
    private readonly store: ZoneStore,
    private readonly opts: WorkerPoolOptions,
  ) {
    for (const z of store.list()) this.watchZone(z);
    this.unsubscribe = store.onCommit((e) => {
      if (e.kind === 'add') {
        this.puts.add(e.zone);
        this.watchZone(e.zone);
      } else if (e.kind === 'remove') {
        this.removes.add(e.zone.origin);
        this.zoneSubs.get(e.zone)?.();
        this.zoneSubs.delete(e.zone);
      } else {
        let t = this.touched.get(e.zone);
        if (!t) this.touched.set(e.zone, (t = new Map()));
        for (const rr of [e.diff.toSoa, ...e.diff.removed, ...e.diff.added])
          t.set(`${nameKey(rr.name)}|${rr.type}`, { name: rr.name, type: rr.type });
      }
      this.queueFlush();
    });
    this.metricsTimer = setInterval(() => this.pollMetrics(), METRICS_POLL_MS).unref();
  }

  /** Forks the workers and waits until each serves every zone on the sockets. */
  static async start(store: ZoneStore, opts: WorkerPoolOptions): Promise<DnsWorkerPool> {
    if (!cluster.isPrimary)
      throw new FerryError('DNS_BAD_OPTIONS', 'a DNS worker cannot start workers of its own');
    const pool = new DnsWorkerPool(store, opts);
    try {
      await Promise.all(Array.from({ length: opts.count }, () => pool.spawn()));
    } catch (err) {
      await pool.stop();
      throw err;
    } finally {
      pool.pieces = undefined;
    }
    return pool;
  }

  /** Resolves once every worker has applied every change committed before the call. */
  sync(): Promise<void> {
    this.flush();
    const seq = this.seq;
    if (this.slots.every((s) => s.acked >= seq)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ seq, resolve }));
  }

  /** Queries answered by each worker over UDP and TCP since it started (how the load spread). */
  async workerStats(): Promise<Array<{ pid: number; udp: number; tcp: number }>> {
    return Promise.all(
      this.slots
        .filter((s) => s.ready)
        .map(
          (s) =>
            new Promise<{ pid: number; udp: number; tcp: number }>((resolve) => {
              this.stats.set(s.worker.id, resolve);
              this.send(s, { op: 'stats' });
            }),
        ),
    );
  }

  /** Closes the workers (the shared sockets close with the last one). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.pieces = undefined;
    clearInterval(this.metricsTimer);
    this.unsubscribe();
    for (const u of this.zoneSubs.values()) u();
    this.zoneSubs.clear();
    await Promise.all(
      this.slots.map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.worker.isDead()) return resolve();
            const timer = setTimeout(() => s.worker.process.kill('SIGKILL'), CLOSE_TIMEOUT_MS);
            s.worker.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            this.send(s, { op: 'close' });
          }),
      ),
    );
    this.slots.length = 0;
    for (const w of this.waiters.splice(0)) w.resolve();
  }

  private watchZone(zone: Zone): void {
    if (this.zoneSubs.has(zone)) return;
    this.zoneSubs.set(
      zone,
      zone.subscribe(() => {
        this.dirty.add(zone);
        this.queueFlush();
      }),
    );
  }

  private queueFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => this.flush());
  }

  /** The zone this store serves at `originKey` now, if any. */
  private current(originKey: string): Zone | undefined {
    const z = this.store.findZoneByKey(originKey);
    return z?.originKey === originKey ? z : undefined;
  }

  private flush(): void {
    this.flushQueued = false;
    const ops: ZoneOp[] = [];
    for (const origin of this.removes) {
      if (!this.current(nameKey(origin))) ops.push({ kind: 'remove', origin });
    }
    const full = new Set<Zone>();
    for (const z of this.puts) if (this.current(z.originKey) === z) full.add(z);
    for (const z of this.dirty) {
      if (full.has(z) || this.current(z.originKey) !== z) continue;
      const keys = this.touched.get(z);
      if (!keys) {
        full.add(z); // changed outside the store's change API: send it whole
        continue;
      }
      const sets: RRsetState[] = [];
      for (const [key, { name, type }] of keys) {
        const set = z.nodeByKey(key.slice(0, key.lastIndexOf('|')))?.rrsets.get(type);
        sets.push(set ?? { name, type, ttl: 0, rdata: [] });
      }
      ops.push({ kind: 'patch', origin: z.origin, rrsets: encodeRRsets(sets) });
    }
    for (const z of full) ops.push(zoneImage(z));
    this.puts.clear();
    this.removes.clear();
    this.touched.clear();
    this.dirty.clear();
    if (ops.length === 0) return;
    this.seq++;
    // Starting workers too: they apply these after their init, in order.
    for (const s of this.slots) {
      if (s.initialized) this.send(s, { op: 'sync', seq: this.seq, ops });
      else s.acked = this.seq; // its init will carry this state
    }
  }

  private send(s: Slot, m: ToWorker): void {
    if (s.worker.isConnected()) s.worker.send(m);
  }

  private spawn(): Promise<void> {
    cluster.setupPrimary({
      exec: workerEntry(),
      execArgv: process.execArgv.filter((a) => !a.startsWith('--test')),
      serialization: 'advanced',
      silent: false,
    });
    const worker = cluster.fork({ FERRY_DNS_WORKER: '1' });
    const slot: Slot = { worker, acked: this.seq, initialized: false, ready: false };
    this.slots.push(slot);
    const stallMs = this.opts.stallMs ?? STALL_MS;
    return new Promise<void>((resolve, reject) => {
      // Liveness while starting: any message is progress. When this process itself was too busy
      // to run the check on time, the worker's messages may be waiting unread: the clock restarts.
      let total = -1;
      let done = 0;
      const stage = () =>
        total < 0
          ? 'loading its code'
          : done < total
            ? `loading zones (${done} of ${total} pieces applied)`
            : 'binding its sockets';
      let lastProgress = Date.now();
      let lastCheck = lastProgress;
      const timer = setInterval(() => {
        const now = Date.now();
        if (now - lastCheck > 4 * STALL_CHECK_MS) lastProgress = now;
        lastCheck = now;
        if (now - lastProgress <= stallMs) return;
        clearInterval(timer);
        worker.process.kill('SIGKILL');
        reject(
          new FerryError(
            'DNS_WORKER',
            `DNS worker ${worker.process.pid} made no progress for ${stallMs} ms while ${stage()}`,
          ),
        );
      }, STALL_CHECK_MS);
      worker.on('message', (m: FromWorker) => {
        lastProgress = Date.now();
        if (m.op === 'up') {
          // The init carries the current sequence number; the zones as they are now follow.
          const { count: _count, logger: _logger, forward: _forward, stallMs: _stallMs, ...init } = this.opts;
          this.flush();
          slot.acked = this.seq;
          slot.initialized = true;
          // Encoded once for workers that start with the same state (a big zone takes seconds).
          if (this.pieces?.seq !== this.seq)
            this.pieces = { seq: this.seq, list: zonePieces(this.store.list()) };
          const pieces = this.pieces.list;
          this.send(slot, {
            op: 'init',
            init,
            pieces: pieces.length,
            seq: this.seq,
            metrics: this.metricsOn,
          });
          for (const piece of pieces) this.send(slot, { op: 'load', piece });
          total = pieces.length;
          lastProgress = Date.now(); // encoding the pieces took this process's time, not the worker's
          return;
        }
        if (m.op === 'progress') {
          done = m.done;
          return;
        }
        if (m.op === 'ready') {
          clearInterval(timer);
          if (m.error) {
            reject(new FerryError(toErrorCode(m.error.code, 'DNS_WORKER'), m.error.message));
            return;
          }
          slot.ready = true;
          if (this.slots.every((s) => s.ready)) this.pieces = undefined;
          resolve();
          return;
        }
        this.onMessage(slot, m);
      });
      worker.once('exit', (code, signal) => {
        clearInterval(timer);
        const wasReady = slot.ready;
        slot.ready = false;
        // A stats request it will never answer.
        this.stats.get(worker.id)?.({ pid: worker.process.pid ?? 0, udp: 0, tcp: 0 });
        this.stats.delete(worker.id);
        if (!this.stopping) {
          this.opts.logger.error({ pid: worker.process.pid, code, signal }, 'dns worker exited');
          reject(
            new FerryError(
              'DNS_WORKER',
              `DNS worker ${worker.process.pid} exited (code ${code}, signal ${signal})${wasReady ? '' : ` while ${stage()}`}`,
            ),
          );
          const i = this.slots.indexOf(slot);
          if (i >= 0) this.slots.splice(i, 1);
          this.releaseWaiters();
          // Replace it, unless it died while starting (then start() fails instead).
          if (wasReady) {
            this.spawn().catch((err: unknown) =>
              this.opts.logger.error({ err }, 'dns worker restart failed'),
            );
          }
        }
      });
    });
  }

  private onMessage(slot: Slot, m: FromWorker): void {
    switch (m.op) {
      case 'ack':
        slot.acked = m.seq;
        this.releaseWaiters();
        return;
      case 'forward': {
        let out: Buffer[] | undefined;
        try {
          out = this.opts.forward(Buffer.from(m.msg.buffer, m.msg.byteOffset, m.msg.byteLength), {
            address: m.address,
            transport: m.transport,
          });
        } catch (err) {
          this.opts.logger.error({ err, from: m.address }, 'dns forwarded request failed');
        }
        this.send(slot, { op: 'reply', id: m.id, messages: out ?? [] });
        return;
      }
      case 'metrics':
        if (queryChannel.hasSubscribers) for (const e of m.batch) queryChannel.publish(e);
        return;
      case 'stats':
        this.stats.get(slot.worker.id)?.({ pid: m.pid, udp: m.udp, tcp: m.tcp });
        this.stats.delete(slot.worker.id);
        return;
      default:
        return;
    }
  }

  private releaseWaiters(): void {
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (this.slots.every((s) => s.acked >= w.seq)) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  private pollMetrics(): void {
    const on = queryChannel.hasSubscribers;
    if (on === this.metricsOn) return;
    this.metricsOn = on;
    for (const s of this.slots) if (s.ready) this.send(s, { op: 'metrics', on });
  }
}
