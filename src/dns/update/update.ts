/**
 * Dynamic UPDATE (RFC 2136 §3): prerequisites checked against the zone, the update section
 * prescanned, then applied as one atomic change through the zone store (one serial bump, one
 * journal entry, one transaction). Returns an rcode; nothing here throws for a bad request.
 */
import { isFerryError } from '../../common/errors.js';
import { isSubdomainKey, nameKey } from '../wire/name.js';
import { rdataKey, type Rdata } from '../wire/rdata.js';
import { RRClass, RRType, Rcode, isMetaType } from '../wire/types.js';
import type { ParsedRRsetChange, ZoneStore } from '../zone/store.js';
import type { Zone } from '../zone/zone.js';
import type { UpdateRR } from './wire.js';

/** Outcome of an UPDATE. */
export interface UpdateResult {
  rcode: number;
  /** The zone's serial after the update (unchanged when nothing changed). */
  serial?: number;
  /** Why it was refused, for logs at the edge. */
  reason?: string;
  /** Set when refused for the zone size limit: the limit and the size the zone would have had. */
  sizeLimit?: { maxRecords: number; size: number };
}

/** Limits an UPDATE must stay within. */
export interface UpdateLimits {
  /** Most records the zone may hold after an update (undefined: no limit). */
  maxRecords?: number;
}

const fail = (rcode: number, reason: string): UpdateResult => ({ rcode, reason });

/** The zone an UPDATE names (RFC 2136 §3.1.1): NOTAUTH when not served, FORMERR when malformed. */
export function updateZone(
  store: ZoneStore,
  zone: ReadonlyArray<{ name: string; type: number; class: number }>,
): Zone | UpdateResult {
  if (zone.length !== 1) return fail(Rcode.FORMERR, 'ZOCOUNT must be 1');
  const z = zone[0]!;
  if (z.type !== RRType.SOA) return fail(Rcode.FORMERR, 'zone section type must be SOA');
  if (z.class !== RRClass.IN) return fail(Rcode.NOTAUTH, 'only class IN is served');
  const found = store.findZone(z.name);
  if (!found || found.originKey !== nameKey(z.name))
    return fail(Rcode.NOTAUTH, `not authoritative for ${z.name}`);
  return found;
}

function keyOf(name: string, type: number): string {
  return `${nameKey(name)}|${type}`;
}

/** Working copy of the RRsets an update touches. */
class Draft {
  readonly sets = new Map<string, { name: string; type: number; ttl: number; data: Rdata[] }>();

  constructor(private readonly zone: Zone) {}

  get(name: string, type: number): { name: string; type: number; ttl: number; data: Rdata[] } {
    const k = keyOf(name, type);
    let s = this.sets.get(k);
    if (!s) {
      const cur = this.zone.getRRset(name, type);
      s = { name: cur?.name ?? name, type, ttl: cur?.ttl ?? 0, data: [...(cur?.rdata ?? [])] };
      this.sets.set(k, s);
    }
    return s;
  }

  /** Types present at a name, in the draft. */
  types(name: string): number[] {
    const node = this.zone.nodeByKey(nameKey(name));
    const types = new Set(node?.rrsets.keys() ?? []);
    for (const s of this.sets.values()) if (nameKey(s.name) === nameKey(name)) types.add(s.type);
    return [...types].filter((t) => this.get(name, t).data.length > 0);
  }
}

/** RFC 2136 §3.2: prerequisites. */
function checkPrerequisites(zone: Zone, prereqs: readonly UpdateRR[]): UpdateResult | undefined {
  const valueSets = new Map<string, { name: string; type: number; keys: Set<string> }>();
  for (const rr of prereqs) {
    if (rr.ttl !== 0) return fail(Rcode.FORMERR, 'prerequisite TTL must be 0');
    if (!isSubdomainKey(nameKey(rr.name), zone.originKey))
      return fail(Rcode.NOTZONE, `${rr.name} is outside the zone`);
    const key = nameKey(rr.name);
    const node = zone.nodeByKey(key);
    if (rr.class === RRClass.ANY) {
      if (rr.data) return fail(Rcode.FORMERR, 'prerequisite of class ANY must have empty rdata');
      if (rr.type === RRType.ANY) {
        if (!node) return fail(Rcode.NXDOMAIN, `${rr.name} is not in use`);
      } else if (!node?.rrsets.has(rr.type)) return fail(Rcode.NXRRSET, `${rr.name} has no such RRset`);
    } else if (rr.class === RRClass.NONE) {
      if (rr.data) return fail(Rcode.FORMERR, 'prerequisite of class NONE must have empty rdata');
      if (rr.type === RRType.ANY) {
        if (node) return fail(Rcode.YXDOMAIN, `${rr.name} is in use`);
      } else if (node?.rrsets.has(rr.type)) return fail(Rcode.YXRRSET, `${rr.name} has that RRset`);
    } else if (rr.class === RRClass.IN) {
      if (!rr.data || isMetaType(rr.type))
        return fail(Rcode.FORMERR, 'value-dependent prerequisite needs rdata');
      const k = keyOf(rr.name, rr.type);
      let set = valueSets.get(k);
      if (!set) valueSets.set(k, (set = { name: rr.name, type: rr.type, keys: new Set() }));
      set.keys.add(rdataKey(rr.type, rr.data));
    } else return fail(Rcode.FORMERR, `bad prerequisite class ${rr.class}`);
  }
  // §3.2.3: each value-dependent RRset must match the zone's exactly.
  for (const s of valueSets.values()) {
    const cur = zone.getRRset(s.name, s.type);
    const have = new Set((cur?.rdata ?? []).map((d) => rdataKey(s.type, d)));
    if (have.size !== s.keys.size || [...have].some((k) => !s.keys.has(k)))
      return fail(Rcode.NXRRSET, `${s.name} RRset differs from the prerequisite`);
  }
  return undefined;
}

/** RFC 2136 §3.4.1: prescan of the update section. */
function prescan(zone: Zone, updates: readonly UpdateRR[]): UpdateResult | undefined {
  for (const rr of updates) {
    if (!isSubdomainKey(nameKey(rr.name), zone.originKey))
      return fail(Rcode.NOTZONE, `${rr.name} is outside the zone`);
    if (rr.class === RRClass.IN) {
      if (isMetaType(rr.type) || !rr.data)
        return fail(Rcode.FORMERR, 'an added record needs a data type and rdata');
    } else if (rr.class === RRClass.ANY) {
      if (rr.ttl !== 0 || rr.data || (isMetaType(rr.type) && rr.type !== RRType.ANY))
        return fail(Rcode.FORMERR, 'a class ANY delete needs TTL 0, empty rdata and a data type or ANY');
    } else if (rr.class === RRClass.NONE) {
      if (rr.ttl !== 0 || isMetaType(rr.type) || !rr.data)
        return fail(Rcode.FORMERR, 'a class NONE delete needs TTL 0 and rdata');
    } else return fail(Rcode.FORMERR, `bad update class ${rr.class}`);
  }
  return undefined;
}

/**
 * Runs a whole UPDATE against `zone` (RFC 2136 §3.2-3.4) and commits it through `store` as one
 * change. NOERROR with no change when the update changes nothing.
 */
export function applyUpdate(
  store: ZoneStore,
  zone: Zone,
  prereqs: readonly UpdateRR[],
  updates: readonly UpdateRR[],
  limits: UpdateLimits = {},
): UpdateResult {
  const bad = checkPrerequisites(zone, prereqs) ?? prescan(zone, updates);
  if (bad) return bad;
  const draft = new Draft(zone);
  const apex = zone.originKey;
  for (const rr of updates) {
    const atApex = nameKey(rr.name) === apex;
    if (rr.class === RRClass.IN) {
      const data = rr.data!;
      const types = draft.types(rr.name);
      // §3.4.2.2: CNAME and other data do not mix; the update is ignored, not refused.
      if (rr.type === RRType.CNAME && types.some((t) => t !== RRType.CNAME)) continue;
      if (rr.type !== RRType.CNAME && types.includes(RRType.CNAME)) continue;
      const set = draft.get(rr.name, rr.type);
      if (rr.type === RRType.SOA) {
        if (!atApex) continue;
        const cur = set.data[0]!;
        // A SOA whose serial is not greater is ignored (§3.4.2.2).
        const newer = ((data[2] as number) - (cur[2] as number)) >>> 0;
        if (newer === 0 || newer >= 0x80000000) continue;
        set.data = [data];
        set.ttl = rr.ttl;
        continue;
      }
      if (rr.type === RRType.CNAME || rr.type === RRType.DNAME) set.data = [data];
      else if (!set.data.some((d) => rdataKey(rr.type, d) === rdataKey(rr.type, data))) set.data.push(data);
      set.ttl = rr.ttl; // the RRset takes the TTL of the record last added (RFC 2181 §5.2)
    } else if (rr.class === RRClass.ANY) {
      const types = rr.type === RRType.ANY ? draft.types(rr.name) : [rr.type];
      for (const t of types) {
        if (atApex && (t === RRType.SOA || t === RRType.NS)) continue; // §3.4.2.3
        draft.get(rr.name, t).data = [];
      }
    } else {
      if (rr.type === RRType.SOA) continue; // §3.4.2.4
      const set = draft.get(rr.name, rr.type);
      const k = rdataKey(rr.type, rr.data!);
      const left = set.data.filter((d) => rdataKey(rr.type, d) !== k);
      if (atApex && rr.type === RRType.NS && left.length === 0) continue;
      set.data = left;
    }
  }
  // Deletions first, so a CNAME can replace other data in the same update.
  const changes: ParsedRRsetChange[] = [...draft.sets.values()]
    .map((s) => ({ owner: s.name, type: s.type, ttl: s.ttl, data: s.data }))
    .sort((a, b) => (a.data.length === 0 ? 0 : 1) - (b.data.length === 0 ? 0 : 1));
  if (changes.length === 0) return { rcode: Rcode.NOERROR, serial: zone.serial };
  // The size limit: an update that makes the zone larger than the limit is refused whole; one
  // that does not grow it is taken even when the zone is already over (a file may hold more).
  if (limits.maxRecords !== undefined) {
    let delta = 0;
    for (const c of changes) delta += c.data.length - (zone.getRRset(c.owner, c.type)?.rdata.length ?? 0);
    if (delta > 0) {
      const size = store.recordCount(zone) + delta;
      if (size > limits.maxRecords)
        return {
          rcode: Rcode.REFUSED,
          reason: `zone ${zone.origin} would hold ${size} records, over its limit of ${limits.maxRecords}`,
          sizeLimit: { maxRecords: limits.maxRecords, size },
        };
    }
  }
  try {
    store.applyRRsets(changes);
    return { rcode: Rcode.NOERROR, serial: zone.serial };
  } catch (err) {
    if (isFerryError(err, 'DNS_INVALID_DATA')) return fail(Rcode.REFUSED, err.message);
    if (isFerryError(err, 'DNS_DB')) return fail(Rcode.SERVFAIL, err.message);
    throw err;
  }
}
