/** The data of one name in a zone: its RRsets by type (shared by zone.ts and compact.ts). */
import type { Rdata } from '../wire/rdata.js';

/** An RRset: all records of one owner and type (class IN), one TTL (RFC 2181 §5.2). */
export interface RRset {
  /** Owner, canonical absolute, in the case it was first given. */
  name: string;
  type: number;
  ttl: number;
  rdata: Rdata[];
}

/** The items of every RRsetsByType that has none (never changed in place). */
const NONE: readonly RRset[] = Object.freeze([]);

/**
 * The RRsets of one name by type: a small array rather than a Map, since most names own one or
 * two RRsets and a zone may hold millions of names. The array is replaced, never changed in
 * place, so an empty one is shared.
 */
export class RRsetsByType {
  private items: readonly RRset[] = NONE;

  get(type: number): RRset | undefined {
    for (const s of this.items) if (s.type === type) return s;
    return undefined;
  }

  has(type: number): boolean {
    return this.get(type) !== undefined;
  }

  set(type: number, set: RRset): void {
    const i = this.items.findIndex((s) => s.type === type);
    if (i >= 0) this.items = this.items.map((s, j) => (j === i ? set : s));
    else this.items = [...this.items, set]; // exact-size arrays: push would over-allocate
  }

  delete(type: number): boolean {
    const before = this.items.length;
    const rest = this.items.filter((s) => s.type !== type);
    this.items = rest.length > 0 ? rest : NONE;
    return rest.length !== before;
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
