/**
 * One authoritative zone in memory: RRsets by owner and type, plus the set of names that exist
 * (with data, or as empty non-terminals, RFC 8020 §2) so lookups can tell NODATA from NXDOMAIN.
 *
 * Storage. Most names live in a compact base (compact.ts: one buffer of wire rdata and a hash
 * index in a typed array); names changed since the base was made live in an overlay of whole
 * nodes (a Map, where `null` marks a base name deleted). `compact()` folds the overlay into a new
 * base; a change folds by itself once the overlay outgrows a fraction of the base, so a zone
 * taking a stream of updates stays compact. The apex stays in the overlay (the SOA is read on
 * every negative answer and rewritten by every change); a zone loaded in bulk keeps it there as
 * its compact record until it is changed or read often (CompactApexRRsets), so a server with
 * 100,000 small zones holds little more than their bytes. Readers see one zone either way.
 */
import { FerryError } from '../../common/errors.js';
import type { ResourceRecord } from '../wire/message.js';
import { isSubdomainKey, nameKey, parentName, parseName, splitName } from '../wire/name.js';
import { rdataKey, unpackRdata, type Rdata } from '../wire/rdata.js';
import { RRClass, RRType, isMetaType, typeName } from '../wire/types.js';
import { CompactNodes, belowCounts, isShared, type CompactBuilder, type CompactImage } from './compact.js';
import type { RRset, ZoneNode } from './zone-node.js';
import { RRsetsByType } from './zone-node.js';

export { RRsetsByType, type RRset, type ZoneNode } from './zone-node.js';

function invalid(message: string): FerryError {
  return new FerryError('DNS_INVALID_DATA', message);
}

/** An authoritative zone (class IN). */
export class Zone {
  /** Apex, canonical absolute. */
  readonly origin: string;
  /** Apex, case-folded. */
  readonly originKey: string;
  /** The apex node, kept apart from `nodes` (it is never in the base). */
  private apex: ZoneNode | undefined;
  /**
   * Names other than the apex changed since `base` was made: their node now, or null when
   * deleted; made on the first such change (a zone loaded in bulk has none).
   */
  private nodes: Map<string, ZoneNode | null> | undefined;
  private base: CompactNodes | undefined;
  /** Names that own data (base and overlay). */
  private names = 0;
  // Number of data-owning names strictly below each name under the apex: an entry means the name
  // exists even without data of its own (an empty non-terminal). Leaves and the apex (which
  // always exists) have none, so a small zone has no map at all.
  private below: Map<string, number> | undefined;
  /** Bumped on every change. */
  version = 0;
  /** Called after every change: one function (most zones have one: the store's) or several. */
  private listeners: (() => void) | ReadonlyArray<() => void> | undefined;
  /** Made from another thread's image: folding is that thread's (see `fromImage`). */
  private replica = false;

  constructor(origin: string) {
    this.origin = parseName(origin);
    const key = nameKey(this.origin);
    this.originKey = key === this.origin ? this.origin : key; // one string when already folded
  }

  /** The overlay's entry for a case-folded name: its node, null when deleted, else undefined. */
  private overlay(key: string): ZoneNode | null | undefined {
    return key === this.originKey ? this.apex : this.nodes?.get(key);
  }

  private setOverlay(key: string, node: ZoneNode | null): void {
    if (key === this.originKey) this.apex = node ?? undefined;
    else (this.nodes ??= new Map()).set(key, node);
  }

  private deleteOverlay(key: string): void {
    if (key === this.originKey) this.apex = undefined;
    else if (this.nodes?.delete(key) && this.nodes.size === 0) this.nodes = undefined;
  }

  /** The apex SOA RRset; throws DNS_INVALID_DATA when the zone has none yet. */
  get soa(): RRset {
    const soa = this.own(this.originKey)?.rrsets.get(RRType.SOA);
    if (!soa) throw invalid(`zone ${this.origin} has no SOA record`);
    return soa;
  }

  /** The SOA serial (RFC 1035 §3.3.13); throws like `soa`, but leaves a compact apex compact. */
  get serial(): number {
    const apex = this.apex?.rrsets;
    const compact = apex instanceof CompactApexRRsets ? apex.compactSerial() : undefined;
    if (compact !== undefined) return compact;
    const soa = this.nodeByKey(this.originKey)?.rrsets.get(RRType.SOA);
    if (!soa) throw invalid(`zone ${this.origin} has no SOA record`);
    return soa.rdata[0]![2] as number;
  }

  /** True when the canonical name (any case) lies at or below the apex. */
  contains(name: string): boolean {
    return isSubdomainKey(nameKey(name), this.originKey);
  }

  /** The node owning data at a case-folded name. */
  nodeByKey(key: string): ZoneNode | undefined {
    const n = this.overlay(key);
    if (n !== undefined) return n ?? undefined;
    return this.base?.get(key);
  }

  /**
   * The data at a case-folded name for readers of wire data (the query fast path): the node when
   * it changed since the base was made, else the offset of its record in `compactBase` (-1: none).
   */
  peekNode(key: string): ZoneNode | number {
    const n = this.overlay(key);
    if (n !== undefined) return n ?? -1;
    return this.base ? this.base.offsetOf(key) : -1;
  }

  /** The compact base that `peekNode` offsets point into. */
  get compactBase(): CompactNodes | undefined {
    return this.base;
  }

  /** True when the case-folded name owns data or is an empty non-terminal. */
  existsKey(key: string): boolean {
    const n = this.overlay(key);
    if (n) return true;
    if (n === undefined && this.base?.has(key)) return true;
    return this.below?.has(key) ?? false;
  }

  /** The RRset at a name (any case, canonical) and type. */
  getRRset(name: string, type: number): RRset | undefined {
    return this.nodeByKey(nameKey(parseName(name)))?.rrsets.get(type);
  }

  /** The node at `key` in the overlay, moved there from the base first, so it can be changed. */
  private own(key: string): ZoneNode | undefined {
    const n = this.overlay(key);
    if (n?.rrsets instanceof CompactApexRRsets) n.rrsets.decode();
    if (n !== undefined) return n ?? undefined;
    const b = this.base?.get(key);
    if (b) this.setOverlay(key, b);
    return b;
  }

  /**
   * Folds every name but the apex into a new compact base (after a bulk load; changes call it
   * when the overlay has grown). Content, version and listeners are unaffected.
   */
  compact(): void {
    const rest: ZoneNode[] = [];
    const skip = this.originKey;
    const nodes = this.eachNode();
    this.base = lean(
      CompactNodes.build(
        (function* () {
          for (const n of nodes) if (nameKey(n.name) !== skip) yield n;
        })(),
        rest,
      ),
    );
    this.nodes = undefined;
    for (const n of rest) this.setOverlay(nameKey(n.name), n);
  }

  /**
   * The compact base (see compact.ts), after folding in every change but the apex's: its node
   * records, cut into runs on demand, its `image` for a query thread, and the nodes outside it.
   */
  compactImage(): {
    base: Uint8Array;
    chunks(nodes: number): Uint8Array[];
    image: CompactImage;
    overlay: ZoneNode[];
  } {
    if (this.nodes || !this.base) this.compact();
    const base = this.base!;
    const overlay: ZoneNode[] = this.apex ? [this.apex] : [];
    for (const n of this.nodes?.values() ?? []) if (n) overlay.push(n);
    return { base: base.buf, chunks: (n) => base.chunks(n), image: base.image, overlay };
  }

  /** The current base's image, without folding (a new object when the zone folded since). */
  get baseImage(): CompactImage | undefined {
    return this.base?.image;
  }

  /**
   * A zone made of compact node records (another zone's `compactImage`: runs of its records, or
   * its `image`, read in place by a query thread) plus the RRsets kept outside them. A zone
   * made from an image never folds by itself: its owner sends the next base (workers/pool.ts).
   * Throws DNS_INVALID_DATA on malformed records.
   */
  static fromImage(
    origin: string,
    parts: readonly Uint8Array[] | CompactImage,
    overlay: Iterable<{ name: string; type: number; ttl: number; rdata: readonly Rdata[] }> = [],
  ): Zone {
    const zone = new Zone(origin);
    const shared = !Array.isArray(parts);
    const base = shared
      ? CompactNodes.fromImage(parts as CompactImage)
      : (parts as readonly Uint8Array[]).length > 0
        ? CompactNodes.concat(parts as readonly Uint8Array[])
        : undefined;
    if (base && !zone.install(base))
      throw invalid(`compact data for zone ${zone.origin} holds its apex or a name outside it`);
    zone.replica = shared;
    for (const set of overlay) zone.replaceRRset(set.name, set.type, set.ttl, set.rdata);
    return zone;
  }

  /**
   * The zone a bulk load collected (the zone-file reader, the database), or undefined when its
   * data breaks a rule; the caller then loads it through `addRecord` for the exact error.
   */
  static fromBuilder(origin: string, builder: CompactBuilder): Zone | undefined {
    const zone = new Zone(origin);
    const r = builder.finish(zone.originKey, (type, rd) =>
      rdataKey(type, unpackRdata(rd, 0, rd.length, type)),
    );
    if (!r || !zone.install(r.base)) return undefined;
    if (r.apex) {
      zone.apex = compactApex(r.apex, zone.origin);
      zone.names++;
    }
    return zone;
  }

  /** Makes `base` the base of this empty zone; false when it holds the apex or a name outside. */
  private install(base: CompactNodes): boolean {
    const below = belowCounts(base, this.originKey);
    if (!below) return false;
    this.base = lean(base);
    this.names += base.count;
    for (const [k, n] of below) if (k !== this.originKey) this.addBelow(k, n);
    return true;
  }

  /** Folds the overlay into the base once it holds more than an eighth of the base's names. */
  private maybeFold(): void {
    if (
      this.base &&
      !this.replica &&
      (this.nodes?.size ?? 0) + (this.apex ? 1 : 0) > 1024 + (this.base.count >> 3)
    )
      this.compact();
  }

  /**
   * Adds one record, merging it into its RRset (duplicates ignored; the RRset keeps the TTL it
   * has, RFC 2181 §5.2). Validates it like `replaceRRset`.
   */
  addRecord(name: string, type: number, ttl: number, data: Rdata): void {
    const owner = parseName(name);
    const existing = this.own(nameKey(owner))?.rrsets.get(type);
    if (existing) {
      const k = rdataKey(type, data);
      if (existing.rdata.some((d) => rdataKey(type, d) === k)) return;
      this.check(owner, type, existing.rdata.length + 1);
      existing.rdata.push(data);
      this.touch();
      return;
    }
    this.replaceRRset(owner, type, ttl, [data]);
  }

  /**
   * Replaces the RRset at `name`/`type` (empty `rdata` deletes it). Enforces RFC rules: data in
   * the zone, CNAME alone at its name with one record (RFC 2181 §10.1), one SOA at the apex only,
   * one DNAME. Throws DNS_INVALID_DATA otherwise. Does not touch the serial.
   */
  replaceRRset(name: string, type: number, ttl: number, rdata: readonly Rdata[]): void {
    const owner = parseName(name);
    const key = nameKey(owner);
    let unique: Rdata[] = [...rdata];
    if (rdata.length > 1) {
      const seen = new Set<string>();
      unique = rdata.filter((d) => {
        const k = rdataKey(type, d);
        return seen.has(k) ? false : (seen.add(k), true);
      });
    }
    let node = this.own(key);
    if (unique.length === 0) {
      if (!node?.rrsets.has(type)) return;
      if (type === RRType.SOA) throw invalid(`the SOA of ${this.origin} cannot be deleted`);
      node.rrsets.delete(type);
      if (node.rrsets.size === 0) {
        if (this.base?.has(key)) this.setOverlay(key, null);
        else this.deleteOverlay(key);
        this.names--;
        this.adjustWeight(key, -1);
      }
      this.touch();
      this.maybeFold();
      return;
    }
    this.check(owner, type, unique.length);
    if (!Number.isInteger(ttl) || ttl < 0 || ttl > 0x7fffffff)
      throw invalid(`bad TTL ${ttl} for ${owner} ${typeName(type)}`);
    if (!node) {
      node = { name: owner, rrsets: new RRsetsByType() };
      this.setOverlay(key, node);
      this.names++;
      this.adjustWeight(key, 1);
    }
    node.rrsets.set(type, { name: node.name, type, ttl, rdata: unique });
    this.touch();
    this.maybeFold();
  }

  /** Calls `fn` after every change to the zone; returns the unsubscribe function. */
  subscribe(fn: () => void): () => void {
    const l = this.listeners;
    if (l === undefined) this.listeners = fn;
    else if (typeof l === 'function') {
      if (l !== fn) this.listeners = [l, fn];
    } else if (!l.includes(fn)) this.listeners = [...l, fn];
    return () => this.unsubscribe(fn);
  }

  /** Stops calling `fn` (see `subscribe`). */
  unsubscribe(fn: () => void): void {
    const l = this.listeners;
    if (l === fn) this.listeners = undefined;
    else if (l !== undefined && typeof l !== 'function') {
      const rest = l.filter((f) => f !== fn);
      this.listeners = rest.length > 1 ? rest : rest[0];
    }
  }

  private touch(): void {
    this.version++;
    // An array is replaced, never changed, so a listener may unsubscribe while it runs.
    const l = this.listeners;
    if (typeof l === 'function') l();
    else if (l) for (const fn of l) fn();
  }

  private check(owner: string, type: number, count: number): void {
    const key = nameKey(owner);
    if (!isSubdomainKey(key, this.originKey)) throw invalid(`${owner} is outside zone ${this.origin}`);
    if (isMetaType(type)) throw invalid(`${typeName(type)} is not a data type`);
    const node = this.nodeByKey(key);
    if (type === RRType.CNAME) {
      if (node && node.rrsets.size - (node.rrsets.has(type) ? 1 : 0) > 0)
        throw invalid(`CNAME at ${owner} cannot coexist with other data (RFC 2181 §10.1)`);
      if (count > 1) throw invalid(`${owner} has more than one CNAME`);
    } else if (node?.rrsets.has(RRType.CNAME)) {
      throw invalid(`${owner} has a CNAME; no other data may be there (RFC 2181 §10.1)`);
    }
    if (type === RRType.SOA) {
      if (key !== this.originKey) throw invalid(`SOA at ${owner} is not at the apex ${this.origin}`);
      if (count > 1) throw invalid(`zone ${this.origin} has more than one SOA`);
    }
    if (type === RRType.DNAME && count > 1) throw invalid(`${owner} has more than one DNAME (RFC 6672 §2.4)`);
  }

  private adjustWeight(key: string, delta: number): void {
    if (key === this.originKey) return;
    for (let k = parentName(key); k !== undefined && k !== this.originKey; k = parentName(k))
      this.addBelow(k, delta);
  }

  private addBelow(key: string, delta: number): void {
    const w = (this.below?.get(key) ?? 0) + delta;
    if (w > 0) (this.below ??= new Map()).set(key, w);
    else if (this.below?.delete(key) && this.below.size === 0) this.below = undefined;
  }

  /** Sets the SOA serial (other SOA fields unchanged). */
  setSerial(serial: number): void {
    const soa = this.soa;
    const d = [...soa.rdata[0]!];
    d[2] = serial >>> 0;
    soa.rdata = [d];
    this.touch();
  }

  /** Every RRset in no particular order (cheap: no sort, for copying a big zone). */
  *eachRRset(): Generator<RRset> {
    for (const node of this.eachNode()) for (const t of node.rrsets.keys()) yield node.rrsets.get(t)!;
  }

  /** Every node that owns data, in no particular order (base nodes decoded one at a time). */
  *eachNode(): Generator<ZoneNode> {
    if (this.apex) yield this.apex;
    const changed = this.nodes;
    if (changed) for (const node of changed.values()) if (node) yield node;
    if (!this.base) return;
    for (const node of this.base.nodes()) if (!changed?.has(nameKey(node.name))) yield node;
  }

  /** Every RRset, apex first, then in canonical order (RFC 4034 §6.1); SOA leads the apex. */
  rrsets(): RRset[] {
    const byKey = new Map<string, ZoneNode>();
    for (const node of this.eachNode()) byKey.set(nameKey(node.name), node);
    const keys = [...byKey.keys()].sort(compareCanonical);
    const out: RRset[] = [];
    for (const k of keys) {
      const node = byKey.get(k)!;
      const types = [...node.rrsets.keys()].sort((a, b) =>
        a === RRType.SOA ? -1 : b === RRType.SOA ? 1 : a - b,
      );
      for (const t of types) out.push(node.rrsets.get(t)!);
    }
    return out;
  }

  /** Every record, as wire-codec records, in `rrsets()` order. */
  records(): ResourceRecord[] {
    return this.rrsets().flatMap((s) =>
      s.rdata.map((data) => ({ name: s.name, type: s.type, class: RRClass.IN, ttl: s.ttl, data })),
    );
  }

  /** Number of names that own data. */
  get size(): number {
    return this.names;
  }
}

/** Reads of a compact apex after which it is decoded for good (it is being queried here). */
const READS_TO_DECODE = 16;

/**
 * A zone's apex whose RRsets are kept as its compact node record (compact.ts) in a one-byte
 * string (no buffer object per zone), until they are changed or read often: a server loading
 * 100,000 small zones from files keeps them so, as most are never queried in the process that
 * loaded them. While compact, each read decodes a fresh copy; `decode` (called by every change,
 * through `Zone.own`, and by the READS_TO_DECODE-th read) decodes them for good. One object is
 * both the node and its RRsets (`rrsets` is itself).
 */
class CompactApexRRsets extends RRsetsByType implements ZoneNode {
  private reads = 0;

  constructor(
    readonly name: string,
    private record: string | undefined,
    /** The SOA serial in `record`, so reading it decodes nothing. */
    private readonly serial: number | undefined,
  ) {
    super();
  }

  /** The node's RRsets: this object. */
  get rrsets(): RRsetsByType {
    return this;
  }

  /** The SOA serial while compact (undefined once decoded, or with no SOA). */
  compactSerial(): number | undefined {
    return this.record === undefined ? undefined : this.serial;
  }

  /** The RRsets decoded, for good (see the class comment). */
  decode(): void {
    if (this.record === undefined) return;
    const sets = tight(this.node()).rrsets;
    this.record = undefined;
    for (const t of sets.keys()) super.set(t, sets.get(t)!);
  }

  private node(): ZoneNode {
    return CompactNodes.fromBuffer(Buffer.from(this.record!, 'latin1'), 1).nodes().next().value!;
  }

  // Reads come in runs on one apex (its types, then each RRset: a query worker's copy is made so),
  // so the last one decoded is kept until another is read. A read must not change what it gets.
  private fresh(): RRsetsByType {
    if (lastRead?.from !== this || lastRead.record !== this.record)
      lastRead = { from: this, record: this.record!, sets: this.node().rrsets };
    return lastRead.sets;
  }

  override get(type: number): RRset | undefined {
    if (this.record !== undefined && ++this.reads >= READS_TO_DECODE) this.decode();
    return this.record === undefined ? super.get(type) : this.fresh().get(type);
  }

  override has(type: number): boolean {
    return this.record === undefined ? super.has(type) : this.fresh().has(type);
  }

  override set(type: number, set: RRset): void {
    this.decode();
    super.set(type, set);
  }

  override delete(type: number): boolean {
    this.decode();
    return super.delete(type);
  }

  override get size(): number {
    return this.record === undefined ? super.size : this.fresh().size;
  }

  override keys(): number[] {
    return this.record === undefined ? super.keys() : this.fresh().keys();
  }
}

/** The compact apex read last, decoded (see CompactApexRRsets.fresh). */
let lastRead: { from: CompactApexRRsets; record: string; sets: RRsetsByType } | undefined;

/**
 * `apex` kept compact (see CompactApexRRsets), or tight when the compact form cannot hold it;
 * its name is `origin` (the zone's string) when they are the same.
 */
function compactApex(apex: ZoneNode, origin: string): ZoneNode {
  const rest: ZoneNode[] = [];
  const buf = CompactNodes.build([apex], rest).buf;
  if (rest.length > 0) return tight(apex);
  const record = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('latin1');
  const name = apex.name === origin ? origin : apex.name;
  if (name.length > 0) name.charCodeAt(0); // flattens it (see `tight`)
  const serial = apex.rrsets.get(RRType.SOA)?.rdata[0]?.[2];
  return new CompactApexRRsets(name, record, typeof serial === 'number' ? serial : undefined);
}

/** Size of the shared buffers that small bases are carved from (see `lean`). */
const SLAB_BYTES = 16 * 1024;
/** Bases whose records take up to this many bytes go into slabs. */
const SLAB_MAX = 1024;
/** The slab being filled, and where its free part starts. */
let slab: ArrayBufferLike | undefined;
let slabUsed = 0;

/** `n` bytes (a multiple of 4) of the current slab, a new one when it is full. */
function carve(n: number): { buffer: ArrayBufferLike; byteOffset: number } {
  if (!slab || slabUsed + n > SLAB_BYTES) {
    slab = new SharedArrayBuffer(SLAB_BYTES);
    slabUsed = 0;
  }
  const at = { buffer: slab, byteOffset: slabUsed };
  slabUsed += n;
  return at;
}

/**
 * `base` with its records and index moved into slabs shared by many small zones, when it is
 * small and on buffers of its own: each typed array on its own buffer costs some 250 bytes beside
 * its data, more than a zone of ten records holds. Slabs are SharedArrayBuffers (a query thread
 * gets a view of one without a copy of the whole slab); one is freed when no base uses it.
 */
function lean(base: CompactNodes): CompactNodes {
  const { buf, index, count } = base.image;
  const n = buf.length;
  if (n === 0 || n > SLAB_MAX || isShared(buf)) return base;
  const b = carve((n + 7) & ~7);
  const bytes = new Uint8Array(b.buffer, b.byteOffset, n);
  bytes.set(buf);
  const i = carve(4 * index.length);
  const slots = new Int32Array(i.buffer, i.byteOffset, index.length);
  slots.set(index);
  return CompactNodes.fromImage({ buf: bytes, index: slots, count });
}

/**
 * `node` as it is kept for long (a zone's apex, one per zone of a server that may have 100,000):
 * every array exactly as long as its content (arrays built by `push` keep spare slots) and every
 * string flat (a name built piece by piece is otherwise kept as the chain of its pieces).
 */
function tight(node: ZoneNode): ZoneNode {
  const flat = (v: string) => (v.length > 0 && v.charCodeAt(0), v); // reading a character flattens it
  const field = (v: Rdata[number]): Rdata[number] =>
    typeof v === 'string' ? flat(v) : Array.isArray(v) ? v.slice() : v;
  const name = flat(node.name);
  const rrsets = new RRsetsByType();
  for (const t of node.rrsets.keys()) {
    const set = node.rrsets.get(t)!;
    rrsets.set(t, { name, type: t, ttl: set.ttl, rdata: set.rdata.map((d) => d.map(field)) });
  }
  return { name, rrsets };
}

/** Canonical DNS name order (RFC 4034 §6.1) on case-folded names: compare labels from the right. */
export function compareCanonical(a: string, b: string): number {
  const la = splitName(a).reverse();
  const lb = splitName(b).reverse();
  for (let i = 0; i < Math.min(la.length, lb.length); i++) {
    const x = la[i]!;
    const y = lb[i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return la.length - lb.length;
}
