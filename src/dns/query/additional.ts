/** Additional-section processing (RFC 1034 §4.3.2 step 6): A/AAAA of NS, MX and SRV targets. */
import type { ResourceRecord } from '../wire/message.js';
import { nameKey } from '../wire/name.js';
import { RRType } from '../wire/types.js';
import type { Handler } from './context.js';
import { additionalField, rrsetRecords } from './lookup.js';

/**
 * After the lookup, adds the addresses of targets named by answer records when the target is in
 * the same zone, glue below a cut included (as Knot does; additional data is never
 * authoritative). Referral glue is the lookup's business.
 */
export const additional: Handler = (ctx, next) => {
  next();
  const zone = ctx.zone;
  if (!zone || ctx.response.answers.length === 0) return;
  const res = ctx.response;
  const seen = new Set(res.additional.map((r) => `${nameKey(r.name)}/${r.type}`));
  const extra: ResourceRecord[] = [];
  for (const rr of res.answers) {
    const field = additionalField(rr.type);
    if (field === undefined) continue;
    const target = rr.data[field] as string;
    const key = nameKey(target);
    if (!zone.contains(target)) continue;
    const node = zone.nodeByKey(key);
    if (!node) continue;
    for (const t of [RRType.A, RRType.AAAA]) {
      const set = node.rrsets.get(t);
      const id = `${key}/${t}`;
      if (!set || seen.has(id)) continue;
      seen.add(id);
      extra.push(...rrsetRecords(set));
    }
  }
  res.additional.push(...extra);
};
