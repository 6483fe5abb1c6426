/**
 * Small zones for the query threads, packed into a few big SharedArrayBuffers ("chunks") on the
 * main thread instead of one posted copy per zone and thread (workers/pool.ts). A server with
 * 100,000 zones of ten records would otherwise make each thread hold 100,000 small buffers and
 * Zone objects; here a thread holds one number per zone and builds a Zone on its first query
 * (thread-zones.ts).
 *
 * A slice is one zone's state as a thread needs it, written once and never changed:
 *
 *     i32 node count, i32 record bytes, i32 index slots, i32 RRset bytes, i32 origin bytes,
 *     i32 unused (native byte order), the compact base's node records (zone/compact.ts), padding
 *     to 4 bytes, its hash index (i32 per slot), the RRsets kept outside the base
 *     (`encodeRRsets`), the origin (canonical presentation form, ASCII), padding to 8 bytes.
 *
 * A slice is named by a `SliceRef`: chunk id × 2^32 + byte offset. Chunks are append-only: a
 * changed zone gets a new slice, and its old one becomes garbage. When garbage outgrows both
 * COMPACT_MIN and the live bytes, `compact` copies the live slices into fresh chunks; the threads
 * then get the new refs and drop the old chunks.
 */
import { FerryError } from '../../common/errors.js';
import type { CompactImage } from '../zone/compact.js';

/** Bytes per chunk. */
const CHUNK = 8 << 20;
/** Largest slice kept in a chunk: a bigger zone takes the shared-base path (pool.ts). */
export const SLICE_MAX = 64 * 1024;
/** Garbage below this many bytes is never compacted. */
const COMPACT_MIN = 4 * CHUNK;
const HEADER = 24;
const CHUNK_SPAN = 2 ** 32;

/** Chunk id × 2^32 + byte offset of a slice. */
export type SliceRef = number;

/** One chunk as a thread receives it. */
export interface ArenaChunk {
  id: number;
  buffer: SharedArrayBuffer;
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;

/** Bytes a slice of this base and overlay takes. */
export function sliceSize(img: CompactImage, rrsets: Uint8Array, origin: string): number {
  return spanOf(img.buf.length, img.index.length, rrsets.length, origin.length);
}

function spanOf(bufLen: number, slots: number, rrLen: number, originLen: number): number {
  return align(align(HEADER + bufLen, 4) + 4 * slots + rrLen + originLen, 8);
}

interface Chunk {
  id: number;
  buffer: SharedArrayBuffer;
  bytes: Uint8Array;
  used: number;
}

/** The main thread's writer of slices (see the file comment). */
export class ZoneArena {
  private readonly chunks = new Map<number, Chunk>();
  private current: Chunk | undefined;
  private nextId = 1;
  /** Bytes of slices in use, and of slices replaced or removed since they were written. */
  live = 0;
  garbage = 0;
  /** Chunks made since the last `takeNew` (the threads must get them before their slices). */
  private fresh: ArenaChunk[] = [];

  /** Every chunk (for a thread starting now). */
  list(): ArenaChunk[] {
    return [...this.chunks.values()].map((c) => ({ id: c.id, buffer: c.buffer }));
  }

  /** The chunks made since the last call. */
  takeNew(): ArenaChunk[] {
    const out = this.fresh;
    this.fresh = [];
    return out;
  }

  /** Writes one zone's slice (at most SLICE_MAX bytes: check `sliceSize` first). */
  write(origin: string, img: CompactImage, rrsets: Uint8Array): { ref: SliceRef; size: number } {
    const size = sliceSize(img, rrsets, origin);
    const c = this.room(size);
    const off = c.used;
    const head = new Int32Array(c.buffer, off, 5);
    head[0] = img.count;
    head[1] = img.buf.length;
    head[2] = img.index.length;
    head[3] = rrsets.length;
    head[4] = origin.length;
    c.bytes.set(img.buf, off + HEADER);
    const at = align(off + HEADER + img.buf.length, 4);
    new Int32Array(c.buffer, at, img.index.length).set(img.index);
    const rr = at + 4 * img.index.length;
    c.bytes.set(rrsets, rr);
    for (let i = 0; i < origin.length; i++) c.bytes[rr + rrsets.length + i] = origin.charCodeAt(i);
    c.used += size;
    this.live += size;
    return { ref: c.id * CHUNK_SPAN + off, size };
  }

  /** Marks a slice of `size` bytes as no longer used. */
  free(size: number): void {
    this.live -= size;
    this.garbage += size;
  }

  /** True when `compact` would pay (see the file comment). */
  get wasteful(): boolean {
    return this.garbage >= COMPACT_MIN && this.garbage > this.live;
  }

  /**
   * Copies the slices at `refs` into fresh chunks and forgets every older chunk: returns the new
   * ref of each (same order) and the ids of the chunks dropped.
   */
  compact(refs: readonly SliceRef[]): { refs: SliceRef[]; dropped: number[] } {
    const dropped = [...this.chunks.keys()];
    const old = new Map(this.chunks);
    this.chunks.clear();
    this.current = undefined;
    this.live = 0;
    this.garbage = 0;
    const out = refs.map((ref) => {
      const c = old.get(Math.floor(ref / CHUNK_SPAN))!;
      const off = ref % CHUNK_SPAN;
      const head = new Int32Array(c.buffer, off, 5);
      const size = spanOf(head[1]!, head[2]!, head[3]!, head[4]!);
      const to = this.room(size);
      to.bytes.set(c.bytes.subarray(off, off + size), to.used);
      const ref2 = to.id * CHUNK_SPAN + to.used;
      to.used += size;
      this.live += size;
      return ref2;
    });
    return { refs: out, dropped };
  }

  private room(size: number): Chunk {
    if (this.current && this.current.used + size <= CHUNK) return this.current;
    const buffer = new SharedArrayBuffer(Math.max(CHUNK, size));
    const c: Chunk = { id: this.nextId++, buffer, bytes: new Uint8Array(buffer), used: 0 };
    this.chunks.set(c.id, c);
    this.fresh.push({ id: c.id, buffer });
    this.current = c;
    return c;
  }
}

/** The origin, base image and overlay RRsets of the slice at `ref` (views of `chunks`, no copy). */
export function readSlice(
  chunks: ReadonlyMap<number, SharedArrayBuffer>,
  ref: SliceRef,
): { origin: string; image: CompactImage; rrsets: Uint8Array } {
  const buffer = chunks.get(Math.floor(ref / CHUNK_SPAN));
  if (!buffer)
    throw new FerryError('DNS_WORKER', `zone arena chunk ${Math.floor(ref / CHUNK_SPAN)} is unknown`);
  const off = ref % CHUNK_SPAN;
  const head = new Int32Array(buffer, off, 5);
  const [count, bufLen, slots, rrLen, originLen] = [head[0]!, head[1]!, head[2]!, head[3]!, head[4]!];
  const at = align(off + HEADER + bufLen, 4);
  const rr = at + 4 * slots;
  return {
    origin: Buffer.from(buffer, rr + rrLen, originLen).toString('latin1'),
    image: {
      buf: new Uint8Array(buffer, off + HEADER, bufLen),
      index: new Int32Array(buffer, at, slots),
      count,
    },
    rrsets: new Uint8Array(buffer, rr, rrLen),
  };
}
