/**
 * The catalog zone (RFC 9432, schema version 2) the server produces, so that secondaries which
 * consume catalogs (Knot, BIND, PowerDNS) add and drop member zones by themselves.
 *
 * Contents: the SOA, `NS invalid.`, `version TXT "2"`, and one `PTR` per member zone at
 * `<id>.zones.<catalog>`. Every zone of the store is a member except the catalog itself and zones
 * at or below its name. The id is a hash of the member's lower-cased name, so a zone keeps its id
 * when it is replaced, removed and added again, or the server restarts: RFC 9432 §5.6 makes a
 * changed id a "member zone reset" (consumers drop the zone's data and transfer it anew), which
 * Ferry never asks for implicitly.
 *
 * The catalog changes in the same synchronous step as the store: adding or removing a member zone
 * is one ordinary change of the catalog (serial bump, IXFR journal, database, NOTIFY to the
 * catalog's own notify targets), so the catalog is transferred like any zone under its policy.
 */
import { createHash } from 'node:crypto';
import { FerryError } from '../../common/errors.js';
import { isSubdomainKey, nameKey, parseName } from '../wire/name.js';
import { parseRdata, type Rdata } from '../wire/rdata.js';
import { tokenize } from '../wire/text.js';
import { RRType } from '../wire/types.js';
import type { ParsedRRsetChange, ZoneStore, ZoneStoreEvent } from '../zone/store.js';
import { Zone } from '../zone/zone.js';

/** The catalog's name when none is configured. */
export const DEFAULT_CATALOG_ZONE = 'catalog.ferry.invalid.';

/** A catalog zone to produce. */
export interface CatalogOptions {
  /** Its name (default `catalog.ferry.invalid.`). */
  zone?: string;
}

/** TTL of the catalog's records: consumers transfer it, nobody resolves it (RFC 9432 §4). */
const TTL = 0;

/** The member id RFC 9432 §4.1 calls `unique-N`: stable per zone name (any case). */
export function catalogMemberId(origin: string): string {
  return createHash('sha256')
    .update(nameKey(parseName(origin)))
    .digest('hex')
    .slice(0, 32);
}

const rdata = (type: number, text: string): Rdata => parseRdata(type, tokenize(text), '.');

/** The catalog zone of one `ZoneStore`, kept in step with the zones it holds. */
export class Catalog {
  /** The catalog's apex, canonical. */
  readonly origin: string;
  private readonly key: string;
  private readonly zonesKey: string;
  private readonly unsubscribe: () => void;

  /**
   * Creates the catalog zone in `store` when it has none (serial: the current Unix time, so it
   * is above any copy a secondary kept from before), else brings the stored one up to date with
   * the zones now held, as one change. Then follows every add and remove.
   */
  constructor(
    private readonly store: ZoneStore,
    opts: CatalogOptions = {},
  ) {
    try {
      this.origin = parseName(opts.zone ?? DEFAULT_CATALOG_ZONE);
    } catch (err) {
      throw new FerryError(
        'DNS_BAD_OPTIONS',
        `catalog zone ${JSON.stringify(opts.zone)} is not a domain name`,
        {
          cause: err,
        },
      );
    }
    if (this.origin === '.') throw new FerryError('DNS_BAD_OPTIONS', 'the catalog zone cannot be the root');
    this.key = nameKey(this.origin);
    this.zonesKey = `zones.${this.key}`;
    this.reconcile();
    this.unsubscribe = store.onCommit((e) => this.follow(e));
  }

  /** Stops following the store (the catalog zone stays in it). */
  close(): void {
    this.unsubscribe();
  }

  /** The catalog zone in the store (undefined when someone removed it). */
  get zone(): Zone | undefined {
    const z = this.store.findZoneByKey(this.key);
    return z?.originKey === this.key ? z : undefined;
  }

  /** The members as listed in the catalog: member origin → id. */
  members(): Map<string, string> {
    const out = new Map<string, string>();
    for (const set of this.zone?.rrsets() ?? []) {
      const id = this.idOf(set.name);
      if (id !== undefined && set.type === RRType.PTR) for (const d of set.rdata) out.set(String(d[0]), id);
    }
    return out;
  }

  /** True for a zone the catalog lists: any other than the catalog and zones below it. */
  private isMember(zone: Zone): boolean {
    return !isSubdomainKey(zone.originKey, this.key);
  }

  /** `id` when the name is `<id>.zones.<catalog>`. */
  private idOf(name: string): string | undefined {
    const k = nameKey(name);
    if (!k.endsWith(`.${this.zonesKey}`)) return undefined;
    const id = k.slice(0, -this.zonesKey.length - 1);
    return id.includes('.') ? undefined : id;
  }

  private ptr(origin: string, present: boolean): ParsedRRsetChange {
    return {
      owner: `${catalogMemberId(origin)}.zones.${this.origin}`,
      type: RRType.PTR,
      ttl: TTL,
      data: present ? [rdata(RRType.PTR, origin)] : [],
    };
  }

  private follow(e: ZoneStoreEvent): void {
    if (e.kind === 'change' || !this.isMember(e.zone) || !this.zone) return;
    // 'add' also replaces a zone already held: then its PTR is there and nothing changes.
    const listed = this.zone.getRRset(this.ptr(e.zone.origin, false).owner, RRType.PTR) !== undefined;
    if (e.kind === 'add' && !listed) this.store.applyRRsets([this.ptr(e.zone.origin, true)]);
    if (e.kind === 'remove' && listed) this.store.applyRRsets([this.ptr(e.zone.origin, false)]);
  }

  private reconcile(): void {
    const wanted = this.store.list().filter((z) => this.isMember(z));
    const fixed: ParsedRRsetChange[] = [
      { owner: this.origin, type: RRType.NS, ttl: TTL, data: [rdata(RRType.NS, 'invalid.')] },
      { owner: `version.${this.origin}`, type: RRType.TXT, ttl: TTL, data: [rdata(RRType.TXT, '"2"')] },
    ];
    const current = this.zone;
    if (!current) {
      const zone = new Zone(this.origin);
      const serial = Math.floor(Date.now() / 1000) >>> 0;
      zone.addRecord(
        this.origin,
        RRType.SOA,
        TTL,
        rdata(RRType.SOA, `invalid. invalid. ${serial} 3600 600 2419200 0`),
      );
      for (const c of [...fixed, ...wanted.map((z) => this.ptr(z.origin, true))])
        zone.replaceRRset(c.owner, c.type, c.ttl, c.data);
      this.store.add(zone);
      return;
    }
    // A zone of that name that is no catalog (a zone file, say) is not overwritten.
    if (!current.getRRset(`version.${this.origin}`, RRType.TXT))
      throw new FerryError(
        'DNS_BAD_OPTIONS',
        `zone ${current.origin} is served as an ordinary zone (it has no version TXT record); name the catalog zone otherwise`,
      );
    const want = new Set(wanted.map((z) => catalogMemberId(z.origin)));
    const changes = [...fixed, ...wanted.map((z) => this.ptr(z.origin, true))];
    // Whatever else is below `zones.` goes: members gone while the server was down, and records
    // that are no member PTR of ours (another producer's ids, properties).
    for (const set of current.rrsets()) {
      const id = this.idOf(set.name);
      if (id !== undefined && (set.type !== RRType.PTR || !want.has(id)))
        changes.push({ owner: set.name, type: set.type, ttl: TTL, data: [] });
    }
    this.store.applyRRsets(changes);
  }
}
