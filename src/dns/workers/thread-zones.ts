/**
 * A query thread's zone set (worker-main.ts): the same longest-match lookup as ZoneStore, over a
 * table of origins. A big zone is a Zone over the main thread's shared base, as the store keeps
 * it; a small one is only a slice ref into the zone arena (arena.ts), turned into a Zone over
 * views of the arena on its first query and kept in a bounded cache (least recently used out),
 * so a query to every one of 100,000 zones does not make the thread hold 100,000 Zones. A slice
 * never changes: a changed small zone arrives as a new ref, which drops the cached Zone.
 */
import { FerryError } from '../../common/errors.js';
import { nameKey, parentName, parseName } from '../wire/name.js';
import { ZoneStore } from '../zone/store.js';
import { Zone } from '../zone/zone.js';
import { readSlice, type ArenaChunk, type SliceRef } from './arena.js';
import { decodeRRsets, type RRsetState } from './codec.js';

/**
 * Small zones kept built per thread. Each costs some 3.6 KB of heap, and more in garbage while
 * the cache turns over (a query to each of 30,000 zones grew a thread by ~25 MB of RSS at 1,024,
 * ~95 MB at 4,096); a miss costs one build (decoding the apex, indexing nothing: the index is in
 * the slice).
 */
export const ZONE_CACHE = 1024;

/** The zones a query thread serves (see the file comment). */
export class ThreadZones extends ZoneStore {
  /** By origin key: a big zone, or a small zone's slice ref. */
  private readonly table = new Map<string, Zone | SliceRef>();
  /** Small zones built, least recently used first. */
  private readonly built = new Map<string, Zone>();
  private readonly chunks = new Map<number, SharedArrayBuffer>();
  /** The key used last (already at the cache's recent end). */
  private lastKey: string | undefined;

  constructor(private readonly cacheMax = ZONE_CACHE) {
    super();
    if (!Number.isInteger(cacheMax) || cacheMax < 1)
      throw new FerryError('DNS_BAD_OPTIONS', `zone cache size must be a positive integer, got ${cacheMax}`);
  }

  /** Arena chunks the slices to come may point into. */
  addChunks(chunks: readonly ArenaChunk[]): void {
    for (const c of chunks) this.chunks.set(c.id, c.buffer);
  }

  /** Forgets chunks no slice points into any more (after the main thread compacted). */
  dropChunks(ids: readonly number[]): void {
    for (const id of ids) this.chunks.delete(id);
  }

  /** Serves the small zone at `origin` from the slice at `ref` (replacing what was there). */
  setSlice(origin: string, ref: SliceRef): void {
    const key = nameKey(parseName(origin));
    const old = this.table.get(key);
    if (old !== undefined && typeof old !== 'number') super.remove(origin);
    this.table.set(key, ref);
    this.forget(key);
    this.generation++;
  }

  /** Adds or replaces a zone served as it is (a big zone). */
  override add(zone: Zone): void {
    super.add(zone);
    this.table.set(zone.originKey, zone);
    this.forget(zone.originKey);
  }

  override remove(origin: string): boolean {
    const key = nameKey(parseName(origin));
    const v = this.table.get(key);
    if (v === undefined) return false;
    this.table.delete(key);
    this.forget(key);
    if (typeof v !== 'number') return super.remove(origin);
    this.generation++;
    return true;
  }

  /** Every zone; small ones are built for the call and not cached (O(zones)). */
  override list(): Zone[] {
    return [...this.table].map(([k, v]) => (typeof v === 'number' ? this.build(k, v) : v));
  }

  override findZoneByKey(key: string): Zone | undefined {
    for (let k: string | undefined = key; k !== undefined; k = parentName(k)) {
      const v = this.table.get(k);
      if (v === undefined) continue;
      return typeof v === 'number' ? this.small(k, v) : v;
    }
    return undefined;
  }

  override serial(origin: string): number {
    const key = nameKey(parseName(origin));
    const zone = this.findZoneByKey(key);
    if (zone?.originKey !== key)
      throw new FerryError('DNS_NOT_AUTHORITATIVE', `no zone here is authoritative for ${origin}`);
    return zone.serial;
  }

  /** Small zones built now (at most the cache size). */
  get builtCount(): number {
    return this.built.size;
  }

  /** The small zone at `key`, from the cache or built now (evicting the least recently used). */
  private small(key: string, ref: SliceRef): Zone {
    let zone = this.built.get(key);
    if (zone) {
      if (key !== this.lastKey) {
        this.built.delete(key);
        this.built.set(key, zone);
        this.lastKey = key;
      }
      return zone;
    }
    zone = this.build(key, ref);
    if (this.built.size >= this.cacheMax) this.built.delete(this.built.keys().next().value!);
    this.built.set(key, zone);
    this.lastKey = key;
    return zone;
  }

  private build(key: string, ref: SliceRef): Zone {
    const { origin, image, rrsets } = readSlice(this.chunks, ref);
    const sets: RRsetState[] = [];
    decodeRRsets(rrsets, (s) => sets.push(s));
    const zone = Zone.fromImage(origin, image, sets);
    if (zone.originKey !== key)
      throw new FerryError('DNS_WORKER', `zone arena slice for ${key} holds zone ${zone.origin}`);
    return zone;
  }

  private forget(key: string): void {
    this.built.delete(key);
    if (this.lastKey === key) this.lastKey = undefined;
  }
}
