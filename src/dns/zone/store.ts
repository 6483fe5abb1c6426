/**
 * The zones a server is authoritative for, chosen by longest match, with the in-process change
 * API: each change is applied synchronously (so it is atomic for queries) and bumps the zone's
 * SOA serial once (RFC 1982 arithmetic).
 */
import { FerryError } from '../../common/errors.js';
import { nameKey, parentName, parseName } from '../wire/name.js';
import { formatRdata, parseRdata, rdataKey, type Rdata } from '../wire/rdata.js';
import { tokenize } from '../wire/text.js';
import { RRClass, RRType, typeCode } from '../wire/types.js';
import type { ResourceRecord } from '../wire/message.js';
import type { Zone } from './zone.js';

/** One RRset replacement for `applyChanges`. Empty `rdata` deletes the RRset. */
export interface RRsetChange {
  owner: string;
  type: string;
  ttl: number;
  rdata: string[];
}

function notAuthoritative(name: string): FerryError {
  return new FerryError('DNS_NOT_AUTHORITATIVE', `no zone here is authoritative for ${name}`);
}

function typeOf(type: string): number {
  const code = typeCode(type);
  if (code === undefined) throw new FerryError('DNS_BAD_TEXT', `unknown RR type ${JSON.stringify(type)}`);
  return code;
}

/** How a change picks the zone's next serial. */
export type SerialPolicy = 'increment' | 'unixtime';

/**
 * The serial after `serial` (RFC 1982 arithmetic): +1, or with 'unixtime' the current Unix time
 * when that is greater, +1 otherwise (so serials only ever go up).
 */
export function nextSerial(serial: number, policy: SerialPolicy = 'increment', nowMs = Date.now()): number {
  const inc = (serial + 1) >>> 0;
  if (policy === 'unixtime') {
    const now = Math.floor(nowMs / 1000) >>> 0;
    if (serialGreater(now, serial)) return now;
  }
  return inc;
}

/** RFC 1982 §3.2: true when serial `a` is greater than `b`. */
export function serialGreater(a: number, b: number): boolean {
  return a !== b && ((a > b && a - b < 0x80000000) || (a < b && b - a > 0x80000000));
}

/** One RRset replacement with parsed rdata, for `applyRRsets`. Empty `data` deletes it. */
export interface ParsedRRsetChange {
  owner: string;
  type: number;
  ttl: number;
  data: Rdata[];
}

/**
 * One committed change of a zone as an RFC 1995 §4 difference: the SOA before and after, and the
 * other records removed and added (class IN).
 */
export interface ZoneDiff {
  origin: string;
  fromSoa: ResourceRecord;
  toSoa: ResourceRecord;
  removed: ResourceRecord[];
  added: ResourceRecord[];
}

/** What `onCommit` listeners see. */
export type ZoneStoreEvent =
  | { kind: 'change'; zone: Zone; diff: ZoneDiff }
  | { kind: 'add'; zone: Zone }
  | { kind: 'remove'; zone: Zone };

function soaRecord(zone: Zone): ResourceRecord {
  const soa = zone.soa;
  return { name: soa.name, type: RRType.SOA, class: RRClass.IN, ttl: soa.ttl, data: soa.rdata[0]! };
}

/** The set of zones served, with longest-match lookup and the change API. */
export class ZoneStore {
  private readonly zones = new Map<string, Zone>();
  /** Bumped on every change to any zone or the set of zones; answer caches compare it. */
  generation = 0;
  /** Every zone's one listener: the same function for all, so a zone costs no closure here. */
  private readonly bump = (): void => {
    this.generation++;
  };

  /** Serial policy for changes (default 'increment'). */
  readonly serialPolicy: SerialPolicy;

  private readonly commitHooks = new Set<(e: ZoneStoreEvent) => void>();
  /** Records per zone as of a zone version: counted once, then kept up by changes made here. */
  private readonly counts = new WeakMap<Zone, { version: number; records: number }>();

  /**
   * Calls `fn` synchronously on every committed change, added zone and removed zone (persistence,
   * the transfer journal, NOTIFY). A listener that throws on 'change' or 'add' aborts it: the
   * change is undone (or the zone not added) and the error is thrown to the caller.
   */
  onCommit(fn: (e: ZoneStoreEvent) => void): () => void {
    this.commitHooks.add(fn);
    return () => this.commitHooks.delete(fn);
  }

  private emit(e: ZoneStoreEvent): void {
    for (const fn of this.commitHooks) fn(e);
  }

  constructor(zones: Zone[] = [], opts: { serialPolicy?: SerialPolicy } = {}) {
    this.serialPolicy = opts.serialPolicy ?? 'increment';
    if (!['increment', 'unixtime'].includes(this.serialPolicy)) {
      throw new FerryError(
        'DNS_BAD_OPTIONS',
        `serialPolicy must be 'increment' or 'unixtime', got ${opts.serialPolicy}`,
      );
    }
    for (const z of zones) this.add(z);
  }

  /** Adds or replaces the zone with the same origin. */
  add(zone: Zone): void {
    void zone.serial; // throws when the zone has no SOA
    this.emit({ kind: 'add', zone });
    const old = this.zones.get(zone.originKey);
    if (old) old.unsubscribe(this.bump);
    this.zones.set(zone.originKey, zone);
    zone.subscribe(this.bump);
    this.generation++;
  }

  /** Removes a zone; false when there was none. */
  remove(origin: string): boolean {
    const key = nameKey(parseName(origin));
    const zone = this.zones.get(key);
    if (!zone) return false;
    zone.unsubscribe(this.bump);
    this.zones.delete(key);
    this.generation++;
    this.emit({ kind: 'remove', zone });
    return true;
  }

  list(): Zone[] {
    return [...this.zones.values()];
  }

  /** The zone with the longest origin at or above `name` (RFC 1034 §4.3.2 step 2). */
  findZone(name: string): Zone | undefined {
    return this.findZoneByKey(nameKey(parseName(name)));
  }

  /** `findZone` for an already case-folded canonical name (the query hot path). */
  findZoneByKey(key: string): Zone | undefined {
    if (this.zones.size === 0) return undefined;
    for (let k: string | undefined = key; k !== undefined; k = parentName(k)) {
      const z = this.zones.get(k);
      if (z) return z;
    }
    return undefined;
  }

  /** The RRset in presentation form, or undefined when the name has none of that type. */
  getRRset(owner: string, type: string): { ttl: number; rdata: string[] } | undefined {
    const t = typeOf(type);
    const zone = this.findZone(owner);
    const set = zone?.getRRset(owner, t);
    if (!set) return undefined;
    return { ttl: set.ttl, rdata: set.rdata.map((d) => formatRdata(t, d)) };
  }

  /**
   * Replaces one RRset atomically (empty `rdata` deletes it) and bumps the zone's serial once.
   * Rdata is presentation text with absolute names. Throws DNS_NOT_AUTHORITATIVE when no zone
   * holds `owner`, DNS_BAD_TEXT / DNS_INVALID_DATA for bad data (nothing is changed then).
   */
  replaceRRset(owner: string, type: string, ttl: number, rdata: string[]): { serial: number } {
    return this.applyChanges([{ owner, type, ttl, rdata }]);
  }

  /**
   * Applies several RRset replacements as one change: all are validated first, then applied
   * together, and each touched zone's serial goes up once. Returns the serial of the (last) zone.
   * An unchanged RRset does not bump the serial.
   */
  applyChanges(changes: RRsetChange[]): { serial: number } {
    return this.applyRRsets(
      changes.map((c) => {
        const t = typeOf(c.type);
        return {
          owner: c.owner,
          type: t,
          ttl: c.ttl,
          data: c.rdata.map((r) => parseRdata(t, tokenize(r), '.')),
        };
      }),
    );
  }

  /** `applyChanges` with parsed rdata (dynamic UPDATE builds these). */
  applyRRsets(changes: ParsedRRsetChange[]): { serial: number } {
    const prepared = changes.map((c) => {
      const zone = this.findZone(c.owner);
      if (!zone) throw notAuthoritative(c.owner);
      return { zone, owner: parseName(c.owner), type: c.type, ttl: c.ttl, data: c.data };
    });
    if (prepared.length === 0) throw new FerryError('DNS_INVALID_DATA', 'no change given');
    // Apply in order; on the first invalid one, undo the ones before it.
    const undo: Array<() => void> = [];
    const touched = new Map<
      Zone,
      { serial: number; soa: ResourceRecord; diff: ZoneDiff; version: number; delta: number; after: number }
    >();
    const rollback = () => {
      for (const u of undo.reverse()) u();
      for (const [zone, t] of touched) if (zone.serial !== t.serial) zone.setSerial(t.serial);
    };
    try {
      for (const p of prepared) {
        const before = p.zone.getRRset(p.owner, p.type);
        const snapshot = before ? { ttl: before.ttl, rdata: before.rdata } : undefined;
        const changed = !sameRRset(p.type, snapshot, p.ttl, p.data);
        if (!changed) continue;
        if (!touched.has(p.zone)) {
          const soa = soaRecord(p.zone);
          touched.set(p.zone, {
            serial: p.zone.serial,
            soa,
            diff: { origin: p.zone.origin, fromSoa: soa, toSoa: soa, removed: [], added: [] },
            version: p.zone.version,
            delta: 0,
            after: 0,
          });
        }
        p.zone.replaceRRset(p.owner, p.type, p.ttl, p.data);
        touched.get(p.zone)!.delta +=
          (p.zone.getRRset(p.owner, p.type)?.rdata.length ?? 0) - (snapshot?.rdata.length ?? 0);
        undo.push(() => p.zone.replaceRRset(p.owner, p.type, snapshot?.ttl ?? 0, snapshot?.rdata ?? []));
        if (p.type !== RRType.SOA) {
          const owner = before?.name ?? p.owner;
          const after = p.zone.getRRset(p.owner, p.type);
          diffRRset(
            touched.get(p.zone)!.diff,
            p.type,
            owner,
            snapshot,
            after ? { ttl: after.ttl, rdata: after.rdata, name: after.name } : undefined,
          );
        }
      }
    } catch (err) {
      rollback();
      throw err;
    }
    try {
      for (const [zone, t] of touched) {
        // A change that set the SOA itself keeps its serial if that went up; otherwise increment.
        const s = zone.serial;
        zone.setSerial(serialGreater(s, t.serial) ? s : nextSerial(t.serial, this.serialPolicy));
        t.after = zone.version;
        t.diff.toSoa = soaRecord(zone);
        this.emit({ kind: 'change', zone, diff: t.diff });
      }
    } catch (err) {
      rollback();
      throw err;
    }
    for (const [zone, t] of touched) {
      const c = this.counts.get(zone);
      // Only when nothing but this change touched the zone since it was counted.
      if (c && c.version === t.version && zone.version === t.after)
        this.counts.set(zone, { version: zone.version, records: c.records + t.delta });
    }
    return { serial: prepared[prepared.length - 1]!.zone.serial };
  }

  /**
   * The records `zone` holds (RRs, each RRset's records counted). Kept up to date by the change
   * API; counted afresh (O(records)) only after a change made to the zone outside it.
   */
  recordCount(zone: Zone): number {
    const c = this.counts.get(zone);
    if (c && c.version === zone.version) return c.records;
    let records = 0;
    for (const set of zone.rrsets()) records += set.rdata.length;
    this.counts.set(zone, { version: zone.version, records });
    return records;
  }

  /** SOA serial of the zone with this origin; throws DNS_NOT_AUTHORITATIVE when there is none. */
  serial(origin: string): number {
    const z = this.zones.get(nameKey(parseName(origin)));
    if (!z) throw notAuthoritative(origin);
    return z.serial;
  }
}

// Adds the records an RRset replacement removed and added to `diff` (a TTL change replaces all).
function diffRRset(
  diff: ZoneDiff,
  type: number,
  owner: string,
  before: { ttl: number; rdata: Rdata[] } | undefined,
  after: { ttl: number; rdata: Rdata[]; name: string } | undefined,
): void {
  const keys = (s: { rdata: Rdata[] } | undefined) => new Set((s?.rdata ?? []).map((d) => rdataKey(type, d)));
  const sameTtl = before?.ttl === after?.ttl;
  const b = sameTtl ? keys(before) : new Set<string>();
  const a = sameTtl ? keys(after) : new Set<string>();
  for (const d of before?.rdata ?? [])
    if (!a.has(rdataKey(type, d)))
      diff.removed.push({ name: owner, type, class: RRClass.IN, ttl: before!.ttl, data: d });
  for (const d of after?.rdata ?? [])
    if (!b.has(rdataKey(type, d)))
      diff.added.push({ name: after!.name, type, class: RRClass.IN, ttl: after!.ttl, data: d });
}

function sameRRset(
  type: number,
  before: { ttl: number; rdata: Rdata[] } | undefined,
  ttl: number,
  data: Rdata[],
): boolean {
  if (!before) return data.length === 0;
  if (data.length === 0 || before.ttl !== ttl) return false;
  const a = new Set(before.rdata.map((d) => rdataKey(type, d)));
  const b = new Set(data.map((d) => rdataKey(type, d)));
  return a.size === b.size && [...a].every((k) => b.has(k));
}
