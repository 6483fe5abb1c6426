/** Messages between the main thread and its query threads (see pool.ts). */
import type { DnsQueryEvent } from '../metrics.js';
import type { CompactImage } from '../zone/compact.js';

/** What a query thread needs to serve: the UDP socket's address and port, and limits. */
export interface WorkerInit {
  address: string;
  port: number;
  maxUdpPayload?: number;
  /** Query threads sharing the UDP port: each datagram goes to one of them at random. */
  threads?: number;
}

/**
 * One zone as a thread gets it: its compact base's `image` (zone/compact.ts: views of shared
 * memory, read in place), and in `rrsets` (`encodeRRsets` output) the RRsets kept outside it.
 */
export interface ZoneImage {
  origin: string;
  base: CompactImage;
  rrsets: Uint8Array;
}

/** One zone-level operation; a `put` replaces the zone (a new zone, or a new base after a fold). */
export type ZoneOp =
  | { kind: 'put'; zone: ZoneImage }
  | { kind: 'patch'; origin: string; rrsets: Uint8Array }
  | { kind: 'remove'; origin: string };

export type ToWorker =
  /** Followed by `pieces` load messages; the thread starts serving after the last. */
  | { op: 'init'; init: WorkerInit; pieces: number; seq: number; metrics: boolean }
  /** A piece of the zones at start: a few zones, or one big one. */
  | { op: 'load'; zones: ZoneImage[] }
  | { op: 'sync'; seq: number; ops: ZoneOp[] }
  | { op: 'reply'; id: number; messages: Uint8Array[] }
  | { op: 'metrics'; on: boolean }
  | { op: 'stats' }
  | { op: 'close' };

export type FromWorker =
  /** Its message handler is in place (its modules are loaded). */
  | { op: 'up' }
  /** Another piece applied: a starting thread is alive as long as these come. */
  | { op: 'progress'; done: number }
  | { op: 'ready'; error?: { code: string; message: string } }
  | { op: 'ack'; seq: number }
  | { op: 'forward'; id: number; msg: Uint8Array; address: string; transport: 'udp' | 'tcp' }
  | { op: 'metrics'; batch: DnsQueryEvent[] }
  | { op: 'stats'; thread: number; udp: number; tcp: number }
  /** A warning or error of the thread's server (a pino JSON line), for the pool's logger. */
  | { op: 'log'; record: string };
