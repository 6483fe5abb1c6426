/** Messages between the main thread and its query threads (see pool.ts). */
import type { DnsQueryEvent } from '../metrics.js';
import type { CompactImage } from '../zone/compact.js';
import type { ArenaChunk } from './arena.js';

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

/**
 * Small zones in the zone arena (arena.ts): each origin key's slice ref, in the same order.
 */
export interface SliceTable {
  origins: string[];
  refs: Float64Array;
}

/**
 * One zone-level operation; a `put` replaces the zone (a new zone, or a new base after a fold).
 * A small zone is never patched: its new state is a new arena slice (`slices`), in arena chunks
 * sent before (`chunks`); `drop` forgets chunks no slice points into any more.
 */
export type ZoneOp =
  | { kind: 'put'; zone: ZoneImage }
  | { kind: 'chunks'; chunks: ArenaChunk[] }
  | { kind: 'slices'; table: SliceTable }
  | { kind: 'drop'; chunks: number[] }
  | { kind: 'patch'; origin: string; rrsets: Uint8Array }
  | { kind: 'remove'; origin: string };

export type ToWorker =
  /**
   * Followed by `pieces` load messages; the thread starts serving after the last. `chunks`: the
   * zone arena's chunks that the pieces' slices point into.
   */
  | { op: 'init'; init: WorkerInit; pieces: number; seq: number; metrics: boolean; chunks: ArenaChunk[] }
  /** A piece of the zones at start: big zones, and small ones as arena slices. */
  | { op: 'load'; zones: ZoneImage[]; small: SliceTable }
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
