/** Messages between the primary process and its query workers (see pool.ts). */
import type { DnsQueryEvent } from '../metrics.js';

/** What a worker needs to serve: the sockets' address and port, limits, and every zone. */
export interface WorkerInit {
  address: string;
  port: number;
  tcpIdleTimeoutMs: number;
  maxTcpConnections: number;
  maxUdpPayload?: number;
  /** The server's `udpIo` option (udp-io.ts). */
  udpIo?: 'auto' | 'native' | 'dgram';
}

/**
 * One zone-level operation; `rrsets` is `encodeRRsets` output, `nodes` compact node records
 * (zone/compact.ts) that the worker indexes as they are.
 */
export type ZoneOp =
  | { kind: 'put'; origin: string; nodes: Uint8Array; rrsets: Uint8Array }
  | { kind: 'patch'; origin: string; rrsets: Uint8Array }
  | { kind: 'remove'; origin: string };

/**
 * A piece of a zone's image at start; `first` begins the zone, the rest add to it. `nodes` is a
 * run of compact node records (zone/compact.ts); `rrsets` (`encodeRRsets` output) the RRsets
 * kept outside the compact base (the apex), in the first piece only.
 */
export interface ZonePiece {
  origin: string;
  first: boolean;
  nodes: Uint8Array;
  rrsets: Uint8Array;
}

export type ToWorker =
  /** Followed by `pieces` load messages; the worker starts serving after the last. */
  | { op: 'init'; init: WorkerInit; pieces: number; seq: number; metrics: boolean }
  | { op: 'load'; piece: ZonePiece }
  | { op: 'sync'; seq: number; ops: ZoneOp[] }
  | { op: 'reply'; id: number; messages: Uint8Array[] }
  | { op: 'metrics'; on: boolean }
  | { op: 'stats' }
  | { op: 'close' };

export type FromWorker =
  /** Its message handler is in place (an ES module loads asynchronously; earlier messages are lost). */
  | { op: 'up' }
  /** Another zone piece applied: a starting worker is alive as long as these come. */
  | { op: 'progress'; done: number }
  | { op: 'ready'; error?: { code: string; message: string } }
  | { op: 'ack'; seq: number }
  | { op: 'forward'; id: number; msg: Uint8Array; address: string; transport: 'udp' | 'tcp' }
  | { op: 'metrics'; batch: DnsQueryEvent[] }
  | { op: 'stats'; udp: number; tcp: number; pid: number };
