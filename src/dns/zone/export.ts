/**
 * Master-file writer (RFC 1035 §5.1): `$ORIGIN`, owners relative to it, every rdata name
 * absolute, one record per line, unknown types in RFC 3597 form. Re-reading gives the same zone.
 */
import { isSubdomainKey, nameKey } from '../wire/name.js';
import { formatRdata } from '../wire/rdata.js';
import { typeName } from '../wire/types.js';
import type { Zone } from './zone.js';

/** Owner text relative to the origin: `@` for the apex, the labels above it otherwise. */
function relativeOwner(name: string, origin: string): string {
  const key = nameKey(name);
  const originKey = nameKey(origin);
  if (key === originKey) return '@';
  if (originKey === '.') return name.slice(0, -1);
  if (!isSubdomainKey(key, originKey)) return name;
  return name.slice(0, name.length - origin.length - 1);
}

/** Writes a zone as master-file text. */
export function exportZone(zone: Zone): string {
  const lines = [`$ORIGIN ${zone.origin}`];
  for (const set of zone.rrsets()) {
    const owner = relativeOwner(set.name, zone.origin);
    for (const d of set.rdata)
      lines.push(`${owner}\t${set.ttl}\tIN\t${typeName(set.type)}\t${formatRdata(set.type, d)}`);
  }
  return lines.join('\n') + '\n';
}
