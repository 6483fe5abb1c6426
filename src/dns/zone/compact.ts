/**
 * The compact base of a zone: every name that owns data, with its RRsets, in one byte buffer, and
 * an open-addressing hash index over the owner names in one `Int32Array`. A million A records
 * take some 30 MB here instead of several hundred MB of JavaScript objects, and the buffer can be
 * shared with the query threads as it is (workers/pool.ts).
 *
 * Layout, one node after another (all integers big-endian):
 *
 *     u16 name length, owner name in presentation form (ASCII, the case it was first given),
 *     u8 RRset count, then per RRset: u16 TYPE, u32 TTL, u16 record count,
 *                                     per record: u16 length, uncompressed wire rdata.
 *
 * Canonical presentation names are ASCII (wire/name.ts escapes every other byte), so a name is
 * compared with a case-folded key byte by byte, folding A-Z. The index stores node offset + 1 per
 * slot (0: empty), at most half full. A base never changes: Zone keeps changes in an overlay of
 * whole nodes and folds it into a new base when it grows (zone.ts). Nodes are decoded on demand,
 * one `ZoneNode` per lookup; they are fresh objects the caller may keep or change.
 *
 * Sharing. Since a base never changes, threads may read it at once: a base of SHARE_MIN bytes or
 * more keeps its records and its index on SharedArrayBuffers, and its `image` (posted to a query
 * thread, workers/pool.ts) is views of them, which postMessage shares instead of copying.
 */
import { FerryError } from '../../common/errors.js';
import { isSubdomainKey, parentName } from '../wire/name.js';
import { packRdata, unpackRdata } from '../wire/rdata.js';
import { RRType, isMetaType } from '../wire/types.js';
import { RRsetsByType, type ZoneNode } from './zone-node.js';

/** Most RRsets under one name that fit the u8 count (far above any real name's). */
const MAX_RRSETS = 255;

const SCRATCH = new Uint8Array(65535);

// FNV-1a over the case-folded name, then a final mix (the low bits index the table, and FNV's
// low bits depend only on the low bits of its input).
function mix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function hashKey(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return mix(h);
}

function hashBytes(buf: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    const c = buf[i]!;
    h = Math.imul(h ^ (c >= 0x41 && c <= 0x5a ? c + 32 : c), 0x01000193);
  }
  return mix(h);
}

/** Slots for `n` names: a power of two at least twice `n`. */
function slotsFor(n: number): number {
  let s = 4; // a zone of a few names (a server may have 100,000) needs no more
  while (s < n * 2) s *= 2;
  return s;
}

/** True when every character of `name` is ASCII (always so for canonical names). */
function isAscii(name: string): boolean {
  for (let i = 0; i < name.length; i++) if (name.charCodeAt(i) > 0x7e) return false;
  return true;
}

/**
 * Bases at least this big (bytes of node records) live on SharedArrayBuffers of their own; smaller
 * ones (most zones of a server with many) do not get one, since a SharedArrayBuffer costs more to
 * make and to post than a few KB: zone.ts packs the smallest into shared slabs, and query threads
 * get small zones through the zone arena (workers/arena.ts).
 */
export const SHARE_MIN = 16 * 1024;

/** A view of `n` bytes on a new SharedArrayBuffer, or a plain array when `share` is false. */
function bytes(n: number, share: boolean): Uint8Array {
  return share ? new Uint8Array(new SharedArrayBuffer(n)) : new Uint8Array(n);
}

/** True when `a` is a view of a SharedArrayBuffer. */
export function isShared(a: ArrayBufferView): boolean {
  return a.buffer instanceof SharedArrayBuffer;
}

/** Grows a byte buffer by doubling while nodes are written. */
class Writer {
  buf: Uint8Array = new Uint8Array(1024); // doubles as needed: most zones of a server with many are small
  off = 0;

  /** `share`: from SHARE_MIN bytes, grow onto SharedArrayBuffers (see CompactBuilder). */
  constructor(private readonly share = false) {}

  ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.off + n) size *= 2;
    const next = bytes(size, this.share && size >= SHARE_MIN);
    next.set(this.buf.subarray(0, this.off));
    this.buf = next;
  }

  /** What was written, exactly, in its final place (shared when big enough, see SHARE_MIN). */
  take(): Uint8Array {
    const out = bytes(this.off, this.off >= SHARE_MIN);
    out.set(this.buf.subarray(0, this.off));
    return out;
  }

  u8(v: number): void {
    this.buf[this.off++] = v;
  }

  u16(v: number): void {
    this.buf[this.off++] = v >>> 8;
    this.buf[this.off++] = v & 0xff;
  }

  u32(v: number): void {
    this.u16(v >>> 16);
    this.u16(v & 0xffff);
  }
}

/**
 * A base as a query thread receives it (see the file comment): its node records, hash index and
 * node count; `CompactNodes.fromImage` serves from it without copying or indexing.
 */
export interface CompactImage {
  readonly buf: Uint8Array;
  readonly index: Int32Array;
  readonly count: number;
}

/** An immutable set of zone nodes in compact form. */
export class CompactNodes {
  /** The node records, exactly (no slack); on a SharedArrayBuffer from SHARE_MIN bytes. */
  readonly buf: Uint8Array;
  /** Offsets of nodes by hash slot, plus one; 0 is an empty slot. Shared when `buf` is. */
  private readonly index: Int32Array;
  private readonly mask: number;
  /** What a query thread gets (views of the same memory). */
  readonly image: CompactImage;

  /**
   * Indexes node records (use `build`, `fromBuffer`, or CompactBuilder, which know them valid);
   * records of SHARE_MIN bytes or more not yet on a SharedArrayBuffer are moved to one.
   */
  constructor(
    buf: Uint8Array,
    /** Number of nodes. */
    readonly count: number,
    /** Each node's offset and name hash, when the caller knows them (CompactBuilder). */
    known?: { offsets: Int32Array; hashes: Int32Array },
    /** The index made for these records before (`fromImage`). */
    index?: Int32Array,
  ) {
    const share = buf.length >= SHARE_MIN;
    if (share && !isShared(buf)) {
      const copy = bytes(buf.length, true);
      copy.set(buf);
      buf = copy;
    }
    this.buf = buf;
    if (index) {
      this.index = index;
      this.mask = index.length - 1;
      this.image = { buf, index, count };
      return;
    }
    const slots = slotsFor(count);
    this.index = share ? new Int32Array(new SharedArrayBuffer(4 * slots)) : new Int32Array(slots);
    this.mask = this.index.length - 1;
    this.image = { buf, index: this.index, count };
    const put = (off: number, h: number) => {
      let slot = h & this.mask;
      while (this.index[slot] !== 0) slot = (slot + 1) & this.mask;
      this.index[slot] = off + 1;
    };
    if (known) {
      for (let i = 0; i < count; i++) put(known.offsets[i]!, known.hashes[i]!);
      return;
    }
    for (let off = 0; off < buf.length; off = nodeEnd(buf, off)) {
      const len = (buf[off]! << 8) | buf[off + 1]!;
      put(off, hashBytes(buf, off + 2, off + 2 + len));
    }
  }

  /**
   * The base another thread made (its `image`), read where it is. The image comes from this
   * process, so only its shape is checked: an index the size `count` gets.
   */
  static fromImage(img: CompactImage): CompactNodes {
    if (
      !(img.buf instanceof Uint8Array) ||
      !(img.index instanceof Int32Array) ||
      !Number.isInteger(img.count) ||
      img.index.length !== slotsFor(img.count)
    )
      throw corrupt();
    return new CompactNodes(img.buf, img.count, undefined, img.index);
  }

  /**
   * Packs `nodes` (each owner at most once). Nodes it cannot hold (a non-ASCII name, more than
   * 255 RRsets) go to `rest`, which the caller keeps in its overlay.
   */
  static build(nodes: Iterable<ZoneNode>, rest: ZoneNode[] = []): CompactNodes {
    const w = new Writer();
    let count = 0;
    for (const node of nodes) {
      if (!isAscii(node.name) || node.rrsets.size > MAX_RRSETS || node.rrsets.size === 0) {
        if (node.rrsets.size > 0) rest.push(node);
        continue;
      }
      w.ensure(3 + node.name.length);
      w.u16(node.name.length);
      for (let i = 0; i < node.name.length; i++) w.u8(node.name.charCodeAt(i));
      w.u8(node.rrsets.size);
      for (const type of node.rrsets.keys()) {
        const set = node.rrsets.get(type)!;
        w.ensure(8);
        w.u16(type);
        w.u32(set.ttl >>> 0);
        w.u16(set.rdata.length);
        for (const d of set.rdata) {
          const len = packRdata(SCRATCH, 0, type, d);
          w.ensure(2 + len);
          w.u16(len);
          w.buf.set(SCRATCH.subarray(0, len), w.off);
          w.off += len;
        }
      }
      count++;
    }
    return new CompactNodes(w.take(), count);
  }

  /**
   * A base over node records made by `build` (e.g. received from another process), checked for
   * framing; the names must be distinct, as `build` writes them.
   */
  static fromBuffer(buf: Uint8Array, count?: number): CompactNodes {
    if (count === undefined) {
      count = 0;
      for (let off = 0; off < buf.length; off = nodeEnd(buf, off)) count++;
    }
    return new CompactNodes(buf, count);
  }

  /** The node records of `parts` (each from `build`) as one base. */
  static concat(parts: readonly Uint8Array[]): CompactNodes {
    if (parts.length === 1) return CompactNodes.fromBuffer(parts[0]!);
    const total = parts.reduce((n, p) => n + p.length, 0);
    const buf = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      buf.set(p, off);
      off += p.length;
    }
    return CompactNodes.fromBuffer(buf);
  }

  /** Offset of the node at a case-folded name, or -1. */
  private find(key: string): number {
    const buf = this.buf;
    let slot = hashKey(key) & this.mask;
    for (;;) {
      const at = this.index[slot]!;
      if (at === 0) return -1;
      const off = at - 1;
      const len = (buf[off]! << 8) | buf[off + 1]!;
      if (len === key.length) {
        let i = 0;
        for (; i < len; i++) {
          const c = buf[off + 2 + i]!;
          if ((c >= 0x41 && c <= 0x5a ? c + 32 : c) !== key.charCodeAt(i)) break;
        }
        if (i === len) return off;
      }
      slot = (slot + 1) & this.mask;
    }
  }

  /** True when a node owns data at the case-folded name. */
  has(key: string): boolean {
    return this.find(key) >= 0;
  }

  /** The node at a case-folded name, decoded (a fresh object). */
  get(key: string): ZoneNode | undefined {
    const off = this.find(key);
    return off < 0 ? undefined : decodeNode(this.buf, off);
  }

  /** Every node, decoded, in buffer order. */
  *nodes(): Generator<ZoneNode> {
    for (let off = 0; off < this.buf.length; off = nodeEnd(this.buf, off)) yield decodeNode(this.buf, off);
  }

  /** Every owner name (canonical, original case), in buffer order. */
  *names(): Generator<string> {
    for (let off = 0; off < this.buf.length; off = nodeEnd(this.buf, off)) yield nodeName(this.buf, off);
  }

  /**
   * The node records cut into runs of about `nodes` nodes each (views of the buffer, no copy);
   * `concat` of them is this base again.
   */
  chunks(nodes: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    let start = 0;
    let n = 0;
    for (let off = 0; off < this.buf.length;) {
      off = nodeEnd(this.buf, off);
      if (++n === nodes) {
        out.push(this.buf.subarray(start, off));
        start = off;
        n = 0;
      }
    }
    if (start < this.buf.length) out.push(this.buf.subarray(start));
    return out;
  }

  /** Offset of the node record at a case-folded name in `buf`, or -1 (for readers of wire data). */
  offsetOf(key: string): number {
    return this.find(key);
  }

  /**
   * Offset in `buf` of the RRset of `type` in the node record at `off` (u16 TYPE, u32 TTL, u16
   * record count, then per record u16 length and wire rdata), or -1 when the node has none.
   */
  rrsetOffset(off: number, type: number): number {
    const buf = this.buf;
    let p = off + 2 + ((buf[off]! << 8) | buf[off + 1]!);
    const sets = buf[p++]!;
    for (let s = 0; s < sets; s++) {
      if (((buf[p]! << 8) | buf[p + 1]!) === type) return p;
      const n = (buf[p + 6]! << 8) | buf[p + 7]!;
      p += 8;
      for (let r = 0; r < n; r++) p += 2 + ((buf[p]! << 8) | buf[p + 1]!);
    }
    return -1;
  }
}

/**
 * Number of data-owning names strictly below each name, over a base's names (what Zone keeps as
 * `below`, to tell empty non-terminals from NXDOMAIN). Names come in runs under one parent (a
 * zone file lists siblings together), so each run costs one comparison per name and one walk up
 * from its parent. Returns undefined when a name is the apex or lies outside it.
 */
export function belowCounts(base: CompactNodes, originKey: string): Map<string, number> | undefined {
  const below = new Map<string, number>();
  const buf = base.buf;
  let runStart = -1;
  let runLen = -1;
  let run = 0;
  const flush = (): boolean => {
    if (run === 0) return true;
    let k = '';
    for (let i = 0; i < runLen; i++) {
      const c = buf[runStart + i]!;
      k += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c + 32 : c);
    }
    if (runLen === 0) k = '.';
    if (!isSubdomainKey(k, originKey)) return false;
    for (let p: string | undefined = k; p !== undefined; p = parentName(p)) {
      below.set(p, (below.get(p) ?? 0) + run);
      if (p === originKey) break;
    }
    run = 0;
    return true;
  };
  for (let off = 0; off < buf.length; off = nodeEnd(buf, off)) {
    const len = (buf[off]! << 8) | buf[off + 1]!;
    const start = off + 2;
    // The parent starts after the first unescaped dot (a name of one label: the root).
    let p = start;
    while (p < start + len) {
      const c = buf[p]!;
      if (c === 0x5c) p += 2;
      else if (c === 0x2e) break;
      else p++;
    }
    if (len === 1 && buf[start] === 0x2e) return undefined; // the root itself
    const pStart = p + 1 === start + len ? start + len - 1 : p + 1;
    const pLen = start + len - pStart;
    // The apex itself is never in a base (it stays in the overlay).
    if (len === originKey.length && sameFolded(buf, start, originKey)) return undefined;
    if (run > 0 && pLen === runLen && sameBytesFolded(buf, pStart, runStart, pLen)) {
      run++;
      continue;
    }
    if (!flush()) return undefined;
    runStart = pStart;
    runLen = pLen;
    run = 1;
  }
  return flush() ? below : undefined;
}

/** Copies `n` bytes (few: a name, a record) without making views; returns the end offset. */
function copyBytes(dst: Uint8Array, at: number, src: Uint8Array, from: number, n: number): number {
  for (let i = 0; i < n; i++) dst[at + i] = src[from + i]!;
  return at + n;
}

function sameFolded(buf: Uint8Array, start: number, key: string): boolean {
  for (let i = 0; i < key.length; i++) {
    const c = buf[start + i]!;
    if ((c >= 0x41 && c <= 0x5a ? c + 32 : c) !== key.charCodeAt(i)) return false;
  }
  return true;
}

function sameBytesFolded(buf: Uint8Array, a: number, b: number, len: number): boolean {
  for (let i = 0; i < len; i++) {
    const x = buf[a + i]!;
    const y = buf[b + i]!;
    if (x !== y && (x >= 0x41 && x <= 0x5a ? x + 32 : x) !== (y >= 0x41 && y <= 0x5a ? y + 32 : y))
      return false;
  }
  return true;
}

function corrupt(): FerryError {
  return new FerryError('DNS_INVALID_DATA', 'compact zone data is truncated or malformed');
}

function nodeName(buf: Uint8Array, off: number): string {
  const len = (buf[off]! << 8) | buf[off + 1]!;
  let s = '';
  for (let i = 0; i < len; i++) s += String.fromCharCode(buf[off + 2 + i]!);
  return s;
}

/** Offset just past the node at `off`, checking that it lies inside the buffer. */
function nodeEnd(buf: Uint8Array, off: number): number {
  if (off + 3 > buf.length) throw corrupt();
  let p = off + 2 + ((buf[off]! << 8) | buf[off + 1]!);
  if (p + 1 > buf.length) throw corrupt();
  const sets = buf[p++]!;
  for (let s = 0; s < sets; s++) {
    if (p + 8 > buf.length) throw corrupt();
    const n = (buf[p + 6]! << 8) | buf[p + 7]!;
    p += 8;
    for (let r = 0; r < n; r++) {
      if (p + 2 > buf.length) throw corrupt();
      p += 2 + ((buf[p]! << 8) | buf[p + 1]!);
    }
  }
  if (p > buf.length) throw corrupt();
  return p;
}

function decodeNode(buf: Uint8Array, off: number): ZoneNode {
  const name = nodeName(buf, off);
  let p = off + 2 + name.length;
  const sets = buf[p++]!;
  const rrsets = new RRsetsByType();
  for (let s = 0; s < sets; s++) {
    const type = (buf[p]! << 8) | buf[p + 1]!;
    const ttl = ((buf[p + 2]! << 24) | (buf[p + 3]! << 16) | (buf[p + 4]! << 8) | buf[p + 5]!) >>> 0;
    const n = (buf[p + 6]! << 8) | buf[p + 7]!;
    p += 8;
    const rdata = new Array(n);
    for (let r = 0; r < n; r++) {
      const len = (buf[p]! << 8) | buf[p + 1]!;
      // Names in rdata are uncompressed, so a view of just this rdata decodes on its own.
      rdata[r] = unpackRdata(buf.subarray(p + 2, p + 2 + len), 0, len, type);
      p += 2 + len;
    }
    rrsets.set(type, { name, type, ttl, rdata });
  }
  return { name, rrsets };
}

/** Growable Int32Array. */
class Ints {
  a = new Int32Array(32); // doubles as needed
  n = 0;

  push(v: number): void {
    if (this.n === this.a.length) {
      const next = new Int32Array(this.a.length * 2);
      next.set(this.a);
      this.a = next;
    }
    this.a[this.n++] = v;
  }
}

/**
 * Collects a bulk load (a zone file, the database) straight into compact form, with no object
 * per record: records are appended to one staging buffer in the order given, each as the node
 * of one RRset of one record, and chained per owner through a hash table in typed arrays.
 * When every owner but the apex has one record and the apex's come first (a big zone file of
 * the usual shape), the staging buffer, already on a SharedArrayBuffer when big, is the base as
 * it is. Otherwise `finish` writes each owner's RRsets (types in the
 * order first seen, duplicates dropped, an RRset's TTL its first record's, as `Zone.addRecord`
 * does) as one compact node. It also checks the rules `Zone` enforces on data (CNAME alone and
 * single, SOA only at the apex and single, one DNAME, no meta types, names inside the zone) but
 * does not describe a violation: `finish` returns undefined, and the caller loads the same input
 * through `Zone` for the exact error.
 */
export class CompactBuilder {
  private readonly stage = new Writer(true);
  /** Per record: offset in `stage`, next record of the same owner (-1: none). */
  private readonly recOff = new Ints();
  private readonly recNext = new Ints();
  /** Per owner: first and last record, name hash. */
  private readonly head = new Ints();
  private readonly tail = new Ints();
  private readonly hash = new Ints();
  /** Owner hash table: per slot, owner + 1 (0: empty) and its hash, side by side. */
  private slots: Int32Array;
  private bad = false;

  /**
   * A builder for about `expectedRecords` records (a hint: it sizes the first buffers, which
   * grow as needed; small by default for the many small zones of a zone folder).
   */
  constructor(expectedRecords = 0) {
    const n = Math.min(Math.max(expectedRecords, 64), 1 << 24);
    this.slots = new Int32Array(2 * slotsFor(n));
    // Room for records of ~48 bytes as staged: pages of a big buffer not written stay free.
    if (expectedRecords > 1024) this.stage.ensure(expectedRecords * 48);
  }

  /** Records added so far. */
  get records(): number {
    return this.recOff.n;
  }

  /** Adds one record: a canonical owner name, TYPE, TTL and uncompressed wire rdata (`len` bytes). */
  add(owner: string, type: number, ttl: number, rdata: Uint8Array, len = rdata.length): void {
    if (owner.length > NAME.length) {
      this.bad = true; // not a canonical name (at most 255 octets, 4 characters each)
      return;
    }
    for (let i = 0; i < owner.length; i++) {
      const c = owner.charCodeAt(i);
      NAME[i] = c > 0x7e ? 0xff : c; // addBytes refuses any byte above 0x7e
    }
    this.addBytes(NAME, 0, owner.length, type, ttl, rdata, len);
  }

  /**
   * `add` with the owner as bytes: `nameLen` bytes at `nameStart` of `name`, the canonical
   * presentation form (ASCII), as a zone file's reader has it without making a string.
   */
  addBytes(
    name: Uint8Array,
    nameStart: number,
    nameLen: number,
    type: number,
    ttl: number,
    rdata: Uint8Array,
    len: number,
  ): void {
    if (ttl < 0 || ttl > 0x7fffffff || len > 0xffff || nameLen > 0xffff) {
      this.bad = true;
      return;
    }
    const w = this.stage;
    const off = w.off;
    w.ensure(nameLen + 13 + len);
    const buf = w.buf;
    buf[off] = nameLen >>> 8;
    buf[off + 1] = nameLen & 0xff;
    let p = off + 2;
    let h = 0x811c9dc5;
    for (let i = 0; i < nameLen; i++) {
      const c = name[nameStart + i]!;
      if (c > 0x7e) {
        this.bad = true;
        return;
      }
      buf[p++] = c;
      h = Math.imul(h ^ (c >= 0x41 && c <= 0x5a ? c + 32 : c), 0x01000193);
    }
    h = mix(h);
    buf[p++] = 1; // RRsets
    buf[p] = type >>> 8;
    buf[p + 1] = type & 0xff;
    buf[p + 2] = ttl >>> 24;
    buf[p + 3] = (ttl >>> 16) & 0xff;
    buf[p + 4] = (ttl >>> 8) & 0xff;
    buf[p + 5] = ttl & 0xff;
    buf[p + 6] = 0; // records
    buf[p + 7] = 1;
    buf[p + 8] = len >>> 8;
    buf[p + 9] = len & 0xff;
    w.off = copyBytes(buf, p + 10, rdata, 0, len);
    const rec = this.recOff.n;
    this.recOff.push(off);
    this.recNext.push(-1);
    // Find the owner, or make it one.
    if (this.head.n >= this.slots.length >> 2) this.grow();
    const slots = this.slots;
    const mask = (slots.length >> 1) - 1;
    const hi = h | 0;
    let slot = h & mask;
    for (;;) {
      const at = slots[2 * slot]!;
      if (at === 0) {
        slots[2 * slot] = this.head.n + 1;
        slots[2 * slot + 1] = hi;
        this.head.push(rec);
        this.tail.push(rec);
        this.hash.push(hi);
        return;
      }
      if (slots[2 * slot + 1] === hi) {
        const node = at - 1;
        const first = this.recOff.a[this.head.a[node]!]!;
        const len = (buf[first]! << 8) | buf[first + 1]!;
        if (len === nameLen && sameBytesFolded(buf, first + 2, off + 2, len)) {
          this.recNext.a[this.tail.a[node]!] = rec;
          this.tail.a[node] = rec;
          return;
        }
      }
      slot = (slot + 1) & mask;
    }
  }

  private grow(): void {
    const old = this.slots;
    const next = new Int32Array(old.length * 2);
    const mask = (next.length >> 1) - 1;
    for (let i = 0; i < old.length; i += 2) {
      if (old[i] === 0) continue;
      let slot = old[i + 1]! & mask;
      while (next[2 * slot] !== 0) slot = (slot + 1) & mask;
      next[2 * slot] = old[i]!;
      next[2 * slot + 1] = old[i + 1]!;
    }
    this.slots = next;
  }

  /**
   * The compact base of every owner but the apex, and the apex's node (decoded), for a zone at
   * `originKey`; undefined when the data breaks a rule (see the class comment). `canonical`
   * gives an rdata's identity for duplicate checks (rdataKey over decoded rdata).
   */
  finish(
    originKey: string,
    canonical: (type: number, rdata: Uint8Array) => string,
  ): { base: CompactNodes; apex: ZoneNode | undefined } | undefined {
    if (this.bad) return undefined;
    const src = this.stage.buf;
    const direct = this.stagedAsBase(originKey);
    const all = new Writer();
    // A node takes no more bytes than its first staged record, and less for the others.
    if (direct < 0) all.buf = new Uint8Array(this.stage.off);
    const apexOut = new Writer();
    const offsets = new Int32Array(this.head.n);
    const hashes = new Int32Array(this.head.n);
    /** Per owner: its node's offset in the base, plus one (0: not in the base, the apex). */
    const nodeAt = new Int32Array(this.head.n);
    let count = 0;
    let apexNode = -1;
    const types: number[] = [];
    const byType: number[][] = [];
    for (let node = 0; node < this.head.n; node++) {
      const r0 = this.head.a[node]!;
      const off = this.recOff.a[r0]!;
      const nameLen = (src[off]! << 8) | src[off + 1]!;
      const isApex = nameLen === originKey.length && sameFolded(src, off + 2, originKey);
      if (isApex) apexNode = node;
      if (this.recNext.a[r0] === -1 && !isApex) {
        // One record (most names of a big zone): its staged node as it is.
        const p = off + 3 + nameLen;
        const type = (src[p]! << 8) | src[p + 1]!;
        if (isMetaType(type) || type === RRType.SOA) return undefined;
        hashes[count] = this.hash.a[node]!;
        if (direct >= 0) {
          offsets[count++] = off - direct;
          nodeAt[node] = off - direct + 1;
          continue;
        }
        const size = p + 10 + ((src[p + 8]! << 8) | src[p + 9]!) - off;
        offsets[count++] = all.off;
        nodeAt[node] = all.off + 1;
        all.ensure(size);
        all.off = copyBytes(all.buf, all.off, src, off, size);
        continue;
      }
      types.length = 0;
      byType.length = 0;
      for (let r = this.head.a[node]!; r !== -1; r = this.recNext.a[r]!) {
        const p = this.recOff.a[r]! + 3 + nameLen;
        const type = (src[p]! << 8) | src[p + 1]!;
        let i = types.indexOf(type);
        if (i < 0) {
          i = types.length;
          types.push(type);
          byType.push([]);
        }
        byType[i]!.push(p);
      }
      if (!valid(types, isApex)) return undefined;
      const out = isApex ? apexOut : all;
      if (!isApex) {
        nodeAt[node] = out.off + 1;
        offsets[count] = out.off;
        hashes[count] = this.hash.a[node]!;
        count++;
      }
      out.ensure(3 + nameLen);
      out.u16(nameLen);
      out.buf.set(src.subarray(off + 2, off + 2 + nameLen), out.off);
      out.off += nameLen;
      out.u8(types.length);
      for (let i = 0; i < types.length; i++) {
        const recs = byType[i]!;
        const first = recs[0]!;
        out.ensure(8);
        out.buf.set(src.subarray(first, first + 6), out.off); // TYPE and the first record's TTL
        out.off += 6;
        const countAt = out.off;
        out.u16(0);
        let n = 0;
        const seen = recs.length > 1 ? new Set<string>() : undefined;
        for (const p of recs) {
          const len = (src[p + 8]! << 8) | src[p + 9]!;
          const rd = src.subarray(p + 10, p + 10 + len);
          if (seen) {
            const k = canonical(types[i]!, rd);
            if (seen.has(k)) continue;
            seen.add(k);
          }
          out.ensure(2 + len);
          out.u16(len);
          out.buf.set(rd, out.off);
          out.off += len;
          n++;
        }
        const t = types[i]!;
        if (n > 1 && (t === RRType.CNAME || t === RRType.SOA || t === RRType.DNAME)) return undefined;
        out.buf[countAt] = n >>> 8;
        out.buf[countAt + 1] = n & 0xff;
      }
    }
    // The apex goes to the zone's overlay (zone.ts).
    const apex = apexOut.off > 0 ? decodeNode(apexOut.buf, 0) : undefined;
    const buf =
      direct >= 0
        ? this.stage.buf.subarray(direct, this.stage.off)
        : all.off === all.buf.length
          ? all.buf
          : all.buf.slice(0, all.off);
    const index = this.asIndex(nodeAt, count, apexNode, buf.length >= SHARE_MIN);
    return { base: new CompactNodes(buf, count, index ? undefined : { offsets, hashes }, index), apex };
  }

  /**
   * The owner hash table made into the base's index (node offset + 1 per slot), with no second
   * hashing of every name, when it has the size the base's `count` gets; undefined otherwise.
   * The apex, which the base leaves out, is deleted from it first. Ends the builder.
   */
  private asIndex(
    nodeAt: Int32Array,
    count: number,
    apexNode: number,
    share: boolean,
  ): Int32Array | undefined {
    const slots = this.slots;
    const n = slots.length >> 1;
    if (n !== slotsFor(count) || count + (apexNode >= 0 ? 1 : 0) !== this.head.n) return undefined;
    const mask = n - 1;
    if (apexNode >= 0) {
      let hole = this.hash.a[apexNode]! & mask;
      while (slots[2 * hole] !== apexNode + 1) hole = (hole + 1) & mask;
      // Linear probing's deletion: entries after the hole that may sit there move back into it.
      for (let j = (hole + 1) & mask; slots[2 * j] !== 0; j = (j + 1) & mask) {
        const home = slots[2 * j + 1]! & mask;
        if (((j - home) & mask) >= ((j - hole) & mask)) {
          slots[2 * hole] = slots[2 * j]!;
          slots[2 * hole + 1] = slots[2 * j + 1]!;
          hole = j;
        }
      }
      slots[2 * hole] = 0;
    }
    const index = share ? new Int32Array(new SharedArrayBuffer(4 * n)) : new Int32Array(n);
    for (let i = 0; i < n; i++) if (slots[2 * i] !== 0) index[i] = nodeAt[slots[2 * i]! - 1]!;
    return index;
  }

  /**
   * Where the base starts in the staging buffer when it can be that buffer as it is: it is on a
   * SharedArrayBuffer, every owner but the apex has one record, and the apex's records come
   * first; -1 otherwise.
   */
  private stagedAsBase(originKey: string): number {
    if (!isShared(this.stage.buf)) return -1; // small: an exact copy costs little, slack would stay
    const src = this.stage.buf;
    const recOff = this.recOff.a;
    let apexRecords = 0;
    for (let node = 0; node < this.head.n; node++) {
      const r0 = this.head.a[node]!;
      const off = recOff[r0]!;
      const nameLen = (src[off]! << 8) | src[off + 1]!;
      if (nameLen === originKey.length && sameFolded(src, off + 2, originKey)) {
        for (let r = r0; r !== -1; r = this.recNext.a[r]!) if (r !== apexRecords++) return -1;
      } else if (this.recNext.a[r0] !== -1) return -1;
    }
    return apexRecords < this.recOff.n ? recOff[apexRecords]! : this.stage.off;
  }
}

/** The per-name rules of Zone.check that hold whatever the records' order (see CompactBuilder). */
function valid(types: number[], isApex: boolean): boolean {
  if (types.length > MAX_RRSETS) return false;
  for (const t of types) {
    if (isMetaType(t)) return false;
    if (t === RRType.CNAME && types.length > 1) return false; // RFC 2181 §10.1
    if (t === RRType.SOA && !isApex) return false;
  }
  return true;
}

/** Scratch for `add`'s owner: a canonical name is at most 255 octets of 4 characters each. */
const NAME = new Uint8Array(1024);
