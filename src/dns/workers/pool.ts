/**
 * Queries on several cores: `DnsWorkerPool` runs N query threads (`worker_threads`) in this
 * process, while the main thread keeps the one `ZoneStore` that every change goes through (the
 * change API, UPDATE, transfers, persistence).
 *
 * Sockets. Each thread binds a UDP socket of its own on the port with SO_REUSEPORT through the
 * native UDP addon (udp-io.ts), which has the kernel deal each datagram to one of them at random
 * (`init.threads` is the count); the main thread only probes that the port is free. Node 20's
 * dgram has no reusePort and threads cannot share a TCP listener, so the main thread serves TCP
 * itself (server.ts), and without the addon it serves UDP too and starts no threads.
 *
 * Zone data. A thread reads the main thread's compact bases in place: a base never changes, and
 * a big one lives on SharedArrayBuffers (zone/compact.ts), so posting its image shares it. What
 * lies outside a base (the apex, names changed since it was made) is pushed as state, not as
 * deltas: after a change the main thread sends the current contents of every RRset the change
 * touched, or the zone's new image when it was added, folded into a new base, or changed outside
 * the store. A small zone (a base below SHARE_MIN) is instead written whole into the zone arena
 * (arena.ts: a few big SharedArrayBuffers) and a thread gets only its slice ref, building the
 * Zone on its first query (thread-zones.ts); any change to it is a new slice. Changes are
 * batched per tick, numbered, and acknowledged by each thread; `sync()` waits for those
 * acknowledgements. Messages on one port arrive in order, so a thread applies changes in
 * commit order; a change that a commit listener undid is pushed as its undone state. Threads
 * rebuild their precompiled answers (the answer cache) on the next query.
 *
 * Starting. A thread gets its zones in pieces of about PIECE_NODES names (a zone is never cut)
 * and reports each piece it has applied. There is no fixed start timeout, since a big zone on a
 * busy machine may take a while: a starting thread fails only when it dies, or reports no
 * progress for `stallMs`.
 *
 * Requests the primary role must see (UPDATE, NOTIFY, transfers, TSIG) are forwarded by the
 * thread (its request chain's forward link, dispatch/chain.ts), run through the chain here, and
 * the responses sent back through the thread's socket.
 */
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Worker, isMainThread } from 'node:worker_threads';
import { FerryError } from '../../common/errors.js';
import { toErrorCode } from '../../common/error-codes.js';
import type { Logger } from '../../common/log.js';
import { queryChannel } from '../metrics.js';
import { nameKey } from '../wire/name.js';
import { SHARE_MIN, type CompactImage } from '../zone/compact.js';
import type { ZoneStore } from '../zone/store.js';
import type { RRset, Zone, ZoneNode } from '../zone/zone.js';
import { SLICE_MAX, ZoneArena, sliceSize, type SliceRef } from './arena.js';
import { encodeRRsets, type RRsetState } from './codec.js';
import type { FromWorker, SliceTable, ToWorker, WorkerInit, ZoneImage, ZoneOp } from './protocol.js';
import { nativeUdp } from '../udp-io.js';

/** Answers a forwarded request: the response messages, or undefined to drop it. */
export type ForwardHandler = (
  msg: Buffer,
  remote: { address: string; transport: 'udp' | 'tcp' },
) => Buffer[] | undefined;

export interface WorkerPoolOptions extends WorkerInit {
  /** Query threads (≥ 1). */
  count: number;
  logger: Logger;
  forward: ForwardHandler;
  /** A starting thread that reports no progress this long is ended (default 30000 ms). */
  stallMs?: number;
}

/** One query thread's counters: queries it answered since it started. */
export interface WorkerStats {
  /** Its `threadId`. */
  thread: number;
  udp: number;
  tcp: number;
}

/** Default bound on a starting thread's silence (loading its code, a piece, binding). */
const STALL_MS = 30_000;
/** How often a starting thread's progress is checked. */
const STALL_CHECK_MS = 250;
/** Longest wait for a thread to close before it is terminated. */
const CLOSE_TIMEOUT_MS = 5_000;
/** Names per piece sent to a starting thread: one progress step. */
const PIECE_NODES = 10_000;
/** How often the main thread checks for `ferry.dns.query` subscribers to tell the threads. */
const METRICS_POLL_MS = 250;

interface Slot {
  worker: Worker;
  acked: number;
  /** Sent its init: later syncs go to it too. */
  initialized: boolean;
  ready: boolean;
  /** Exited (it gets no more messages). */
  gone: boolean;
}

/** A new query thread. Under tsx (tests) the entry is TypeScript: it registers tsx first. */
function newWorker(): Worker {
  const ts = import.meta.url.endsWith('.ts');
  const entry = new URL(`./worker-main${ts ? '.ts' : '.js'}`, import.meta.url);
  if (!ts) return new Worker(fileURLToPath(entry));
  const boot =
    `import('tsx/esm/api').then((m) => { m.register(); ` +
    `return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(boot, { eval: true, execArgv: [] });
}

/** Query threads started ahead of their pool (`startQueryThreadsEarly`), oldest first. */
const early: Array<{ worker: Worker; up: boolean; gone: boolean }> = [];

/**
 * Starts `n` query threads loading their code now, while this thread still reads the zones; the
 * next pool takes them instead of starting threads of its own. They keep the process alive only
 * once taken. Returns a function that ends those no pool took (e.g. when the server answers from
 * one thread after all).
 */
export function startQueryThreadsEarly(n: number): () => void {
  // Without the addon the server answers UDP in its own thread: no query threads to start.
  if (!nativeUdp().ok) return () => {};
  const mine: Worker[] = [];
  for (let i = 0; i < n; i++) {
    const e = { worker: newWorker(), up: false, gone: false };
    e.worker.unref();
    e.worker.once('message', () => (e.up = true)); // its first message is 'up'
    e.worker.on('error', () => {}); // it then exits: the pool starts another
    e.worker.once('exit', () => (e.gone = true));
    early.push(e);
    mine.push(e.worker);
  }
  return () => {
    for (let i = early.length - 1; i >= 0; i--)
      if (mine.includes(early[i]!.worker)) void early.splice(i, 1)[0]!.worker.terminate();
  };
}

/** A query thread: one started early if any is left and alive (and whether it is up), else new. */
function takeWorker(): { worker: Worker; up: boolean } {
  for (let e = early.shift(); e; e = early.shift()) {
    if (e.gone) continue;
    e.worker.ref();
    return e;
  }
  return { worker: newWorker(), up: false };
}

/**
 * One full garbage collection. Loading a big zone leaves hundreds of MB of unreachable buffers
 * (the zone-file reader's staging, the copy made for sharing) that an idle server would keep
 * resident until some later allocation triggered a collection; the zones are loaded when the
 * threads start, before any of them answers.
 */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

/** The RRsets of nodes kept outside a compact base, in `encodeRRsets` form. */
function overlayRRsets(nodes: ZoneNode[]): Uint8Array {
  const sets: RRset[] = [];
  for (const n of nodes) for (const t of n.rrsets.keys()) sets.push(n.rrsets.get(t)!);
  return encodeRRsets(sets);
}

/** A piece of the zones for a starting thread: big zones' images, small zones' slices. */
interface Piece {
  zones: ZoneImage[];
  small: { origins: string[]; refs: number[] };
}

function sliceTable(t: { origins: string[]; refs: number[] }): SliceTable {
  return { origins: t.origins, refs: Float64Array.from(t.refs) };
}

/** N query threads fed from one zone store. */
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
  /** The base each zone was last sent with: a zone that folded since is sent whole. */
  private readonly sentBase = new WeakMap<Zone, CompactImage>();
  private readonly unsubscribe: () => void;
  private metricsOn = false;
  private readonly metricsTimer: NodeJS.Timeout;
  private readonly stats = new Map<Worker, (s: WorkerStats) => void>();
  /** The zones in pieces as of sequence number `seq`, shared by threads starting together. */
  private pieces: { seq: number; list: Piece[] } | undefined;
  /** Small zones' state for the threads (arena.ts). */
  private readonly arena = new ZoneArena();
  /** Small zones in the arena by origin key: the zone, as of which version, its slice. */
  private readonly slices = new Map<
    string,
    { zone: Zone; version: number; ref: SliceRef; size: number; names: number }
  >();

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

  /** Starts the threads and waits until each serves every zone on its socket. */
  static async start(store: ZoneStore, opts: WorkerPoolOptions): Promise<DnsWorkerPool> {
    if (!isMainThread)
      throw new FerryError('DNS_BAD_OPTIONS', 'a DNS query thread cannot start threads of its own');
    collectGarbage();
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

  /** Resolves once every thread has applied every change committed before the call. */
  sync(): Promise<void> {
    this.flush();
    const seq = this.seq;
    if (this.slots.every((s) => s.acked >= seq)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ seq, resolve }));
  }

  /** Queries answered by each thread since it started (how the load spread). */
  async workerStats(): Promise<WorkerStats[]> {
    return Promise.all(
      this.slots
        .filter((s) => s.ready)
        .map(
          (s) =>
            new Promise<WorkerStats>((resolve) => {
              this.stats.set(s.worker, resolve);
              this.send(s, { op: 'stats' });
            }),
        ),
    );
  }

  /** Closes the threads (each closes its socket), terminating any that do not end in time. */
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
            if (s.gone) return resolve();
            const timer = setTimeout(() => void s.worker.terminate(), CLOSE_TIMEOUT_MS);
            s.worker.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            // A thread still starting has no server to close: end it at once.
            if (s.ready) this.send(s, { op: 'close' });
            else void s.worker.terminate();
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

  /**
   * A zone as a thread gets it (folding its overlay first, see Zone.compactImage): a slice in the
   * zone arena when it is small (a slice written for this version of it before is reused), else
   * its image over shared memory.
   */
  private place(zone: Zone): { ref: SliceRef; names: number } | { image: ZoneImage } {
    const key = zone.originKey;
    const old = this.slices.get(key);
    if (old?.zone === zone && old.version === zone.version) return old;
    const img = zone.compactImage();
    const rrsets = overlayRRsets(img.overlay);
    if (old) {
      this.arena.free(old.size);
      this.slices.delete(key);
    }
    // Decided by size, not by whether the base is on shared memory: a small base may sit in a
    // shared slab with other zones' (zone.ts), and is still best served from the arena.
    if (img.image.buf.byteLength < SHARE_MIN && sliceSize(img.image, rrsets, zone.origin) <= SLICE_MAX) {
      const { ref, size } = this.arena.write(zone.origin, img.image, rrsets);
      const names = img.image.count + img.overlay.length;
      this.slices.set(key, { zone, version: zone.version, ref, size, names });
      return { ref, names };
    }
    this.sentBase.set(zone, img.image);
    return { image: { origin: zone.origin, base: img.image, rrsets } };
  }

  /** Every zone, in pieces of about PIECE_NODES names (at least one zone per piece). */
  private zonePieces(): Piece[] {
    const out: Piece[] = [];
    let piece: Piece = { zones: [], small: { origins: [], refs: [] } };
    let names = 0;
    for (const zone of this.store.list()) {
      const p = this.place(zone);
      if ('ref' in p) {
        piece.small.origins.push(zone.origin);
        piece.small.refs.push(p.ref);
        names += p.names;
      } else {
        piece.zones.push(p.image);
        names += p.image.base.count;
      }
      if (names >= PIECE_NODES) {
        out.push(piece);
        piece = { zones: [], small: { origins: [], refs: [] } };
        names = 0;
      }
    }
    if (piece.zones.length + piece.small.origins.length > 0) out.push(piece);
    return out;
  }

  private flush(): void {
    this.flushQueued = false;
    const ops: ZoneOp[] = [];
    for (const origin of this.removes) {
      const key = nameKey(origin);
      if (this.current(key)) continue;
      const slice = this.slices.get(key);
      if (slice) {
        this.arena.free(slice.size);
        this.slices.delete(key);
      }
      ops.push({ kind: 'remove', origin });
    }
    const full = new Set<Zone>();
    for (const z of this.puts) if (this.current(z.originKey) === z) full.add(z);
    for (const z of this.dirty) {
      if (full.has(z) || this.current(z.originKey) !== z) continue;
      const keys = this.touched.get(z);
      // Changed outside the store's change API, folded into a new base, or small: send it whole.
      if (!keys || z.baseImage !== this.sentBase.get(z) || this.slices.has(z.originKey)) {
        full.add(z);
        continue;
      }
      const sets: RRsetState[] = [];
      for (const [key, { name, type }] of keys) {
        const set = z.nodeByKey(key.slice(0, key.lastIndexOf('|')))?.rrsets.get(type);
        sets.push(set ?? { name, type, ttl: 0, rdata: [] });
      }
      ops.push({ kind: 'patch', origin: z.origin, rrsets: encodeRRsets(sets) });
    }
    const small = { origins: [] as string[], refs: [] as number[] };
    for (const z of full) {
      const p = this.place(z);
      if ('ref' in p) {
        small.origins.push(z.origin);
        small.refs.push(p.ref);
      } else ops.push({ kind: 'put', zone: p.image });
    }
    this.puts.clear();
    this.removes.clear();
    this.touched.clear();
    this.dirty.clear();
    // The chunks the slices point into first; after a compaction every slice anew.
    if (small.origins.length > 0) ops.push({ kind: 'slices', table: sliceTable(small) });
    if (this.arena.wasteful) {
      const keys = [...this.slices.keys()];
      const moved = this.arena.compact(keys.map((k) => this.slices.get(k)!.ref));
      keys.forEach((k, i) => (this.slices.get(k)!.ref = moved.refs[i]!));
      const origins = keys.map((k) => this.slices.get(k)!.zone.origin);
      ops.push({ kind: 'slices', table: sliceTable({ origins, refs: moved.refs }) });
      ops.push({ kind: 'drop', chunks: moved.dropped });
    }
    const chunks = this.arena.takeNew();
    if (chunks.length > 0) ops.unshift({ kind: 'chunks', chunks });
    if (ops.length === 0) return;
    this.seq++;
    // Starting threads too: they apply these after their init, in order.
    for (const s of this.slots) {
      if (s.initialized) this.send(s, { op: 'sync', seq: this.seq, ops });
      else s.acked = this.seq; // its init will carry this state
    }
  }

  private send(s: Slot, m: ToWorker): void {
    if (!s.gone) s.worker.postMessage(m);
  }

  private spawn(): Promise<void> {
    const { worker, up } = takeWorker();
    const slot: Slot = { worker, acked: this.seq, initialized: false, ready: false, gone: false };
    this.slots.push(slot);
    const stallMs = this.opts.stallMs ?? STALL_MS;
    const name = () => `DNS query thread ${worker.threadId}`;
    return new Promise<void>((resolve, reject) => {
      // Liveness while starting: any message is progress. When this thread itself was too busy
      // to run the check on time, the thread's messages may be waiting unread: the clock restarts.
      let total = -1;
      let done = 0;
      const stage = () =>
        total < 0
          ? 'loading its code'
          : done < total
            ? `loading zones (${done} of ${total} pieces applied)`
            : 'binding its socket';
      let lastProgress = Date.now();
      let lastCheck = lastProgress;
      const timer = setInterval(() => {
        const now = Date.now();
        if (now - lastCheck > 4 * STALL_CHECK_MS) lastProgress = now;
        lastCheck = now;
        if (now - lastProgress <= stallMs) return;
        clearInterval(timer);
        void worker.terminate();
        reject(new FerryError('DNS_WORKER', `${name()} made no progress for ${stallMs} ms while ${stage()}`));
      }, STALL_CHECK_MS);
      const onMessage = (m: FromWorker) => {
        lastProgress = Date.now();
        if (m.op === 'up') {
          // The init carries the current sequence number; the zones as they are now follow.
          const init: WorkerInit = {
            address: this.opts.address,
            port: this.opts.port,
            threads: this.opts.count,
            ...(this.opts.maxUdpPayload === undefined ? {} : { maxUdpPayload: this.opts.maxUdpPayload }),
          };
          this.flush();
          slot.acked = this.seq;
          slot.initialized = true;
          // Made once for threads that start with the same state.
          if (this.pieces?.seq !== this.seq) this.pieces = { seq: this.seq, list: this.zonePieces() };
          const pieces = this.pieces.list;
          this.send(slot, {
            op: 'init',
            init,
            pieces: pieces.length,
            seq: this.seq,
            metrics: this.metricsOn,
            chunks: this.arena.list(),
          });
          for (const p of pieces) this.send(slot, { op: 'load', zones: p.zones, small: sliceTable(p.small) });
          total = pieces.length;
          lastProgress = Date.now(); // making the pieces took this thread's time, not the worker's
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
      };
      worker.on('message', onMessage);
      if (up) onMessage({ op: 'up' }); // started early: it came up before this listener
      worker.on('error', (err) => {
        if (!this.stopping)
          this.opts.logger.error({ err, thread: worker.threadId }, 'dns query thread failed');
      });
      worker.once('exit', (code) => {
        clearInterval(timer);
        slot.gone = true;
        const wasReady = slot.ready;
        slot.ready = false;
        // A stats request it will never answer.
        this.stats.get(worker)?.({ thread: worker.threadId, udp: 0, tcp: 0 });
        this.stats.delete(worker);
        if (this.stopping) return;
        this.opts.logger.error({ thread: worker.threadId, code }, 'dns query thread exited');
        reject(
          new FerryError(
            'DNS_WORKER',
            `${name()} exited (code ${code})${wasReady ? '' : ` while ${stage()}`}`,
          ),
        );
        const i = this.slots.indexOf(slot);
        if (i >= 0) this.slots.splice(i, 1);
        this.releaseWaiters();
        // Replace it, unless it died while starting (then start() fails instead).
        if (wasReady) {
          this.spawn().catch((err: unknown) =>
            this.opts.logger.error({ err }, 'dns query thread restart failed'),
          );
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
        this.stats.get(slot.worker)?.({ thread: m.thread, udp: m.udp, tcp: m.tcp });
        this.stats.delete(slot.worker);
        return;
      case 'log': {
        let rec: Record<string, unknown>;
        try {
          rec = JSON.parse(m.record) as Record<string, unknown>;
        } catch {
          return;
        }
        const { level, msg, time: _t, pid: _p, hostname: _h, ...fields } = rec;
        const obj = { thread: slot.worker.threadId, ...fields };
        if (typeof level === 'number' && level >= 50) this.opts.logger.error(obj, String(msg));
        else this.opts.logger.warn(obj, String(msg));
        return;
      }
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
