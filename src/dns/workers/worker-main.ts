/**
 * Entry point of a `DnsWorkerPool` query thread (see pool.ts): a `DnsServer` on a UDP socket of
 * its own (SO_REUSEPORT), serving replicas of the main thread's zones that read the main
 * thread's compact bases in place. It applies the pushed RRset states in order, forwards
 * requests for the primary role, and ends when asked (or is terminated).
 *
 * FERRY_DNS_THREAD_PAUSE=`ms,untilMs` (tests only) blocks the thread for `ms` after it comes up
 * and after each piece it reports, while less than `untilMs` have passed since it began: a
 * start that is slow but progresses, or one that stalls.
 */
import { parentPort, threadId } from 'node:worker_threads';
import { pino } from 'pino';
import { isFerryError } from '../../common/errors.js';
import { queryChannel, type DnsQueryEvent } from '../metrics.js';
import { DnsServer } from '../server.js';
import { nameKey } from '../wire/name.js';
import { Zone } from '../zone/zone.js';
import { decodeRRsets, type RRsetState } from './codec.js';
import type { FromWorker, SliceTable, ToWorker, ZoneImage, ZoneOp } from './protocol.js';
import { ThreadZones } from './thread-zones.js';

const port = parentPort!;
const began = Date.now();
let server: DnsServer | undefined;
/** The zones this thread serves (made at init, served from the last piece on). */
let threadZones: ThreadZones | undefined;

/** While starting: the init, the zones so far, and the pieces to come. */
let loading: { m: Extract<ToWorker, { op: 'init' }>; zones: ThreadZones; left: number } | undefined;
let nextId = 1;
const pending = new Map<number, (messages: Buffer[]) => void>();

/** Metrics: while the main thread has subscribers, collect events here and send them in batches. */
const METRICS_BATCH_MS = 200;
let batch: DnsQueryEvent[] = [];
let metricsTimer: NodeJS.Timeout | undefined;
const collect = (e: unknown) => {
  batch.push(e as DnsQueryEvent);
};

function setMetrics(on: boolean): void {
  if (on && !metricsTimer) {
    queryChannel.subscribe(collect);
    metricsTimer = setInterval(() => {
      if (batch.length === 0) return;
      send({ op: 'metrics', batch });
      batch = [];
    }, METRICS_BATCH_MS);
  } else if (!on && metricsTimer) {
    queryChannel.unsubscribe(collect);
    clearInterval(metricsTimer);
    metricsTimer = undefined;
    batch = [];
  }
}

function send(m: FromWorker): void {
  port.postMessage(m);
}

/** The test pause (see the file comment), in slices so that `terminate()` ends it. */
function testPause(): void {
  const spec = process.env.FERRY_DNS_THREAD_PAUSE;
  if (!spec) return;
  const [ms, until] = spec.split(',').map(Number);
  if (!(ms! > 0) || Date.now() - began >= until!) return;
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const end = Date.now() + ms!;
  while (Date.now() < end) Atomics.wait(cell, 0, 0, Math.min(50, end - Date.now()));
}

function buf(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** A zone over the main thread's compact base (read in place) and the RRsets outside it. */
function buildZone(z: ZoneImage): Zone {
  const sets: RRsetState[] = [];
  decodeRRsets(z.rrsets, (s) => sets.push(s));
  return Zone.fromImage(z.origin, z.base, sets);
}

function addSlices(zones: ThreadZones, t: SliceTable): void {
  for (let i = 0; i < t.origins.length; i++) zones.setSlice(t.origins[i]!, t.refs[i]!);
}

function applyOps(ops: ZoneOp[], zones: ThreadZones): void {
  for (const op of ops) {
    if (op.kind === 'put') zones.add(buildZone(op.zone));
    else if (op.kind === 'remove') zones.remove(op.origin);
    else if (op.kind === 'chunks') zones.addChunks(op.chunks);
    else if (op.kind === 'slices') addSlices(zones, op.table);
    else if (op.kind === 'drop') zones.dropChunks(op.chunks);
    else {
      const key = nameKey(op.origin);
      const zone = zones.findZoneByKey(key);
      if (zone?.originKey !== key) continue;
      // Deletions first, so a CNAME replacing other data (or the reverse) never meets it.
      const sets: RRsetState[] = [];
      decodeRRsets(op.rrsets, (s) => sets.push(s));
      for (const s of sets) if (s.rdata.length === 0) zone.replaceRRset(s.name, s.type, 0, []);
      for (const s of sets) if (s.rdata.length > 0) zone.replaceRRset(s.name, s.type, s.ttl, s.rdata);
    }
  }
}

/** One piece of the zones at start, reported as progress; the last one starts the server. */
function load(zones: ZoneImage[], small: SliceTable): void {
  const l = loading!;
  for (const z of zones) l.zones.add(buildZone(z));
  addSlices(l.zones, small);
  l.left--;
  send({ op: 'progress', done: l.m.pieces - l.left });
  testPause();
  if (l.left === 0) startServing();
}

function startServing(): void {
  const { m, zones } = loading!;
  loading = undefined;
  serve(m, zones).then(
    () => send({ op: 'ready' }),
    (err: unknown) =>
      send({
        op: 'ready',
        error: {
          code: isFerryError(err) ? err.code : 'DNS_WORKER',
          message: err instanceof Error ? err.message : String(err),
        },
      }),
  );
}

/** The thread server's warnings and errors, logged by the main thread's logger (pool.ts). */
const log = pino({ level: 'warn' }, { write: (record: string) => send({ op: 'log', record }) });

async function serve(m: Extract<ToWorker, { op: 'init' }>, zones: ThreadZones): Promise<void> {
  server = new DnsServer(
    {
      logger: log,
      address: m.init.address,
      port: m.init.port,
      ...(m.init.maxUdpPayload === undefined ? {} : { maxUdpPayload: m.init.maxUdpPayload }),
      udpIo: 'native',
    },
    {
      zones,
      ...(m.init.threads === undefined ? {} : { threads: m.init.threads }),
      forward(msg, from, reply) {
        const id = nextId++;
        pending.set(id, reply);
        send({ op: 'forward', id, msg, address: from.address, transport: from.transport });
      },
    },
  );
  setMetrics(m.metrics);
  await server.start();
}

port.on('message', (m: ToWorker) => {
  switch (m.op) {
    case 'init':
      threadZones = new ThreadZones();
      loading = { m, zones: threadZones, left: m.pieces };
      loading.zones.addChunks(m.chunks);
      if (m.pieces === 0) startServing();
      return;
    case 'load':
      load(m.zones, m.small);
      return;
    case 'sync':
      try {
        applyOps(m.ops, threadZones!);
      } catch (err) {
        // A replica that cannot follow its primary must not keep answering from stale data.
        process.stderr.write(`ferry dns worker: cannot apply a zone change: ${String(err)}\n`);
        process.exit(70); // in a thread: ends this thread, which the pool replaces
      }
      send({ op: 'ack', seq: m.seq });
      return;
    case 'reply': {
      const reply = pending.get(m.id);
      pending.delete(m.id);
      reply?.(m.messages.map(buf));
      return;
    }
    case 'metrics':
      setMetrics(m.on);
      return;
    case 'stats':
      send({ op: 'stats', thread: threadId, udp: server?.received.udp ?? 0, tcp: server?.received.tcp ?? 0 });
      return;
    case 'close':
      setMetrics(false);
      void (server?.stop() ?? Promise.resolve()).finally(() => process.exit(0));
      return;
  }
});

send({ op: 'up' });
testPause();
