/**
 * Entry point of a `DnsWorkerPool` worker (see pool.ts): a `DnsServer` on the sockets the
 * cluster primary shares, serving replicas of the primary's zones. It applies the pushed RRset
 * states in order, forwards requests for the primary role, and exits when asked or when the
 * primary goes away (cluster closes a worker whose IPC channel disconnects).
 */
import { isFerryError } from '../../common/errors.js';
import { queryChannel, type DnsQueryEvent } from '../metrics.js';
import { DnsServer } from '../server.js';
import { nameKey } from '../wire/name.js';
import { Zone } from '../zone/zone.js';
import { decodeRRsets, type RRsetState } from './codec.js';
import type { FromWorker, ToWorker, ZoneOp, ZonePiece } from './protocol.js';

let server: DnsServer | undefined;
/** A zone arriving in pieces: its compact node runs so far and the RRsets outside them. */
interface PartialZone {
  origin: string;
  parts: Uint8Array[];
  rrsets: Uint8Array;
}

/** While starting: the init, the zones built so far, the one arriving, and the pieces to come. */
let loading:
  { m: Extract<ToWorker, { op: 'init' }>; zones: Zone[]; partial?: PartialZone; left: number } | undefined;
let nextId = 1;
const pending = new Map<number, (messages: Buffer[]) => void>();

/** Metrics: while the primary has subscribers, collect events here and send them in batches. */
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
  if (process.connected) process.send!(m);
}

function buf(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** A zone over the primary's compact node records (indexed, not decoded) and the other RRsets. */
function buildZone(origin: string, parts: Uint8Array[], rrsets: Uint8Array): Zone {
  const sets: RRsetState[] = [];
  decodeRRsets(rrsets, (s) => sets.push(s));
  return Zone.fromImage(origin, parts, sets);
}

function applyOps(ops: ZoneOp[], zones: { add(z: Zone): void; remove(o: string): boolean }): void {
  for (const op of ops) {
    if (op.kind === 'put') zones.add(buildZone(op.origin, [op.nodes], op.rrsets));
    else if (op.kind === 'remove') zones.remove(op.origin);
    else {
      const zone = server!.zones.findZoneByKey(nameKey(op.origin));
      if (!zone) continue;
      // Deletions first, so a CNAME replacing other data (or the reverse) never meets it.
      const sets: RRsetState[] = [];
      decodeRRsets(op.rrsets, (s) => sets.push(s));
      for (const s of sets) if (s.rdata.length === 0) zone.replaceRRset(s.name, s.type, 0, []);
      for (const s of sets) if (s.rdata.length > 0) zone.replaceRRset(s.name, s.type, s.ttl, s.rdata);
    }
  }
}

/** One piece of the zones at start, reported as progress; the last one starts the server. */
function load(piece: ZonePiece): void {
  const l = loading!;
  const finish = () => {
    if (l.partial) l.zones.push(buildZone(l.partial.origin, l.partial.parts, l.partial.rrsets));
    l.partial = undefined;
  };
  if (piece.first || !l.partial) {
    finish();
    l.partial = { origin: piece.origin, parts: [], rrsets: piece.rrsets };
  }
  if (piece.nodes.length > 0) l.partial.parts.push(piece.nodes);
  l.left--;
  if (l.left === 0) finish();
  send({ op: 'progress', done: l.m.pieces - l.left });
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

async function serve(m: Extract<ToWorker, { op: 'init' }>, zones: Zone[]): Promise<void> {
  server = new DnsServer(
    {
      address: m.init.address,
      port: m.init.port,
      zones,
      tcpIdleTimeoutMs: m.init.tcpIdleTimeoutMs,
      maxTcpConnections: m.init.maxTcpConnections,
      ...(m.init.maxUdpPayload === undefined ? {} : { maxUdpPayload: m.init.maxUdpPayload }),
      ...(m.init.udpIo === undefined ? {} : { udpIo: m.init.udpIo }),
    },
    {
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

process.on('message', (m: ToWorker) => {
  switch (m.op) {
    case 'init':
      loading = { m, zones: [], left: m.pieces };
      if (m.pieces === 0) startServing();
      return;
    case 'load':
      load(m.piece);
      return;
    case 'sync':
      try {
        applyOps(m.ops, server!.zones);
      } catch (err) {
        // A replica that cannot follow its primary must not keep answering from stale data.
        process.stderr.write(`ferry dns worker: cannot apply a zone change: ${String(err)}\n`);
        process.exit(70);
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
      send({ op: 'stats', udp: server?.received.udp ?? 0, tcp: server?.received.tcp ?? 0, pid: process.pid });
      return;
    case 'close':
      setMetrics(false);
      void (server?.stop() ?? Promise.resolve()).finally(() => process.exit(0));
      return;
  }
});

send({ op: 'up' });
