/**
 * One authoritative zone in memory: RRsets by owner and type, plus the set of names that exist
 * (with data, or as empty non-terminals, RFC 8020 §2) so lookups can tell NODATA from NXDOMAIN.
 */
import { FerryError } from '../../common/errors.js';
import type { ResourceRecord } from '../wire/message.js';
import { isSubdomainKey, nameKey, parentName, parseName, splitName } from '../wire/name.js';
import { rdataKey, type Rdata } from '../wire/rdata.js';
import { RRClass, RRType, isMetaType, typeName } from '../wire/types.js';

/** An RRset: all records of one owner and type (class IN), one TTL (RFC 2181 §5.2). */
export interface RRset {
  /** Owner, canonical absolute, in the case it was first given. */
  name: string;
  type: number;
  ttl: number;
  rdata: Rdata[];
}

/**
 * The RRsets of one name by type: a small array rather than a Map, since most names own one or
 * two RRsets and a zone may hold millions of names.
 */
export class RRsetsByType {
  private items: RRset[] = [];

  get(type: number): RRset | undefined {
    for (const s of this.items) if (s.type === type) return s;
    return undefined;
  }

  has(type: number): boolean {
    return this.get(type) !== undefined;
  }

  set(type: number, set: RRset): void {
    const i = this.items.findIndex((s) => s.type === type);
    if (i >= 0) this.items[i] = set;
    else this.items = [...this.items, set]; // exact-size arrays: push would over-allocate
  }

  delete(type: number): boolean {
    const before = this.items.length;
    this.items = this.items.filter((s) => s.type !== type);
    return this.items.length !== before;
  }

  get size(): number {
    return this.items.length;
  }

  /** Types present, in insertion order. */
  keys(): number[] {
    return this.items.map((s) => s.type);
  }
}

/** A name in the zone that owns data. */
export interface ZoneNode {
  name: string;
  rrsets: RRsetsByType;
}

function invalid(message: string): FerryError {
  return new FerryError('DNS_INVALID_DATA', message);
}

/** An authoritative zone (class IN). */
export class Zone {
  /** Apex, canonical absolute. */
  readonly origin: string;
  /** Apex, case-folded. */
  readonly originKey: string;
  private readonly nodes = new Map<string, ZoneNode>();
  // Number of data-owning names strictly below each name: an entry means the name exists even
  // without data of its own (an empty non-terminal). Leaves have none, which keeps it small.
  private readonly below = new Map<string, number>();
  /** Bumped on every change. */
  version = 0;
  private readonly listeners = new Set<() => void>();

  constructor(origin: string) {
    this.origin = parseName(origin);
    this.originKey = nameKey(this.origin);
  }

  /** The apex SOA RRset; throws DNS_INVALID_DATA when the zone has none yet. */
  get soa(): RRset {
    const soa = this.nodes.get(this.originKey)?.rrsets.get(RRType.SOA);
    if (!soa) throw invalid(`zone ${this.origin} has no SOA record`);
    return soa;
  }

  /** The SOA serial (RFC 1035 §3.3.13). */
  get serial(): number {
    return this.soa.rdata[0]![2] as number;
  }

  /** True when the canonical name (any case) lies at or below the apex. */
  contains(name: string): boolean {
    return isSubdomainKey(nameKey(name), this.originKey);
  }

  /** The node owning data at a case-folded name. */
  nodeByKey(key: string): ZoneNode | undefined {
    return this.nodes.get(key);
  }

  /** True when the case-folded name owns data or is an empty non-terminal. */
  existsKey(key: string): boolean {
    return this.nodes.has(key) || this.below.has(key);
  }

  /** The RRset at a name (any case, canonical) and type. */
  getRRset(name: string, type: number): RRset | undefined {
    return this.nodes.get(nameKey(parseName(name)))?.rrsets.get(type);
  }

  /**
   * Adds one record, merging it into its RRset (duplicates ignored; the RRset keeps the TTL it
   * has, RFC 2181 §5.2). Validates it like `replaceRRset`.
   */
  addRecord(name: string, type: number, ttl: number, data: Rdata): void {
    const owner = parseName(name);
    const existing = this.nodes.get(nameKey(owner))?.rrsets.get(type);
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
    let node = this.nodes.get(key);
    if (unique.length === 0) {
      if (!node?.rrsets.has(type)) return;
      if (type === RRType.SOA) throw invalid(`the SOA of ${this.origin} cannot be deleted`);
      node.rrsets.delete(type);
      if (node.rrsets.size === 0) {
        this.nodes.delete(key);
        this.adjustWeight(key, -1);
      }
      this.touch();
      return;
    }
    this.check(owner, type, unique.length);
    if (!Number.isInteger(ttl) || ttl < 0 || ttl > 0x7fffffff)
      throw invalid(`bad TTL ${ttl} for ${owner} ${typeName(type)}`);
    if (!node) {
      node = { name: owner, rrsets: new RRsetsByType() };
      this.nodes.set(key, node);
      this.adjustWeight(key, 1);
    }
    node.rrsets.set(type, { name: node.name, type, ttl, rdata: unique });
    this.touch();
  }

  /** Calls `fn` after every change to the zone; returns the unsubscribe function. */
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private touch(): void {
    this.version++;
    for (const fn of this.listeners) fn();
  }

  private check(owner: string, type: number, count: number): void {
    const key = nameKey(owner);
    if (!isSubdomainKey(key, this.originKey)) throw invalid(`${owner} is outside zone ${this.origin}`);
    if (isMetaType(type)) throw invalid(`${typeName(type)} is not a data type`);
    const node = this.nodes.get(key);
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
    for (let k = parentName(key); k !== undefined; k = parentName(k)) {
      const w = (this.below.get(k) ?? 0) + delta;
      if (w > 0) this.below.set(k, w);
      else this.below.delete(k);
      if (k === this.originKey) break;
    }
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
    for (const node of this.nodes.values()) for (const t of node.rrsets.keys()) yield node.rrsets.get(t)!;
  }

  /** Every RRset, apex first, then in canonical order (RFC 4034 §6.1); SOA leads the apex. */
  rrsets(): RRset[] {
    const keys = [...this.nodes.keys()].sort(compareCanonical);
    const out: RRset[] = [];
    for (const k of keys) {
      const node = this.nodes.get(k)!;
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
    return this.nodes.size;
  }
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
