/**
 * The authoritative lookup (RFC 1034 §4.3.2 steps 3-4) in one zone: delegations (referral with
 * glue, AA clear), DNAME (RFC 6672 §3.3), exact matches, CNAME chains inside the zone, wildcards
 * (RFC 4592 §3.3.1: only below the closest encloser, never over an existing name or an empty
 * non-terminal), and negative answers with the SOA (RFC 2308 §3, RFC 8020).
 */
import type { ResourceRecord } from '../wire/message.js';
import { isSubdomainKey, nameKey, parentName, splitName, MAX_NAME, nameWireLength } from '../wire/name.js';
import { RRClass, RRType, Rcode, typeInfo } from '../wire/types.js';
import type { RRset, Zone, ZoneNode } from '../zone/zone.js';
import type { Handler, QueryContext } from './context.js';

/** Longest CNAME/DNAME chain followed inside a zone. */
const MAX_CHAIN = 16;

/** Records of an RRset under an owner name (the question's case, or a synthesized name). */
export function rrsetRecords(set: RRset, owner: string = set.name, ttl = set.ttl): ResourceRecord[] {
  return set.rdata.map((data) => ({ name: owner, type: set.type, class: RRClass.IN, ttl, data }));
}

/** The authoritative answer for the selected zone. */
export const lookup: Handler = (ctx) => {
  const zone = ctx.zone!;
  ctx.response.flags.aa = true;
  const visited = new Set<string>();
  let name = ctx.question!.name;
  const qtype = ctx.question!.type;
  for (let step = 0; step < MAX_CHAIN; step++) {
    const key = nameKey(name);
    if (visited.has(key)) return; // CNAME loop: stop with what we have (RFC 1034 §3.6.2)
    visited.add(key);
    const target = answerName(ctx, zone, name, key, qtype);
    if (target === undefined) return;
    if (!zone.contains(target)) return; // the chain leaves the zone; the resolver follows it
    name = target;
  }
};

/** Answers one name; returns the CNAME target to follow next, if any. */
function answerName(
  ctx: QueryContext,
  zone: Zone,
  name: string,
  key: string,
  qtype: number,
): string | undefined {
  const res = ctx.response;
  // Walk down from below the apex: a zone cut or DNAME above the name decides first.
  const chain: string[] = [];
  for (let k: string | undefined = key; k !== undefined && k !== zone.originKey; k = parentName(k))
    chain.push(k);
  let encloser = zone.originKey;
  // A DNAME at the apex rewrites everything below it (RFC 6672 §2.3); cuts never sit there.
  const apexDname =
    key === zone.originKey ? undefined : zone.nodeByKey(zone.originKey)?.rrsets.get(RRType.DNAME);
  if (apexDname) return substitute(ctx, name, zone.nodeByKey(zone.originKey)!, apexDname);
  for (let i = chain.length - 1; i >= 0; i--) {
    const k = chain[i]!;
    if (!zone.existsKey(k)) break;
    const node = zone.nodeByKey(k);
    if (node) {
      const ns = node.rrsets.get(RRType.NS);
      if (ns && !(k === key && qtype === RRType.DS)) {
        referral(ctx, zone, ns);
        return undefined;
      }
      const dname = node.rrsets.get(RRType.DNAME);
      if (dname && k !== key) return substitute(ctx, name, node, dname);
    }
    encloser = k;
  }
  const owner = name; // wildcard answers are synthesized under the question name
  let node: ZoneNode | undefined;
  if (zone.existsKey(key)) {
    node = zone.nodeByKey(key);
  } else {
    // RFC 4592 §3.3.1: the source of synthesis is "*." + the closest encloser.
    const wild = encloser === '.' ? '*.' : '*.' + encloser;
    if (!zone.existsKey(wild)) {
      res.rcode = Rcode.NXDOMAIN;
      negative(ctx, zone);
      return undefined;
    }
    node = zone.nodeByKey(wild);
  }
  if (!node) {
    negative(ctx, zone); // empty non-terminal (or empty wildcard): NODATA
    return undefined;
  }
  const cname = node.rrsets.get(RRType.CNAME);
  // ANY matches the CNAME itself and is not followed (RFC 1034 §4.3.2 step 3a).
  if (cname && qtype !== RRType.CNAME && qtype !== RRType.ANY) {
    res.answers.push(...rrsetRecords(cname, owner));
    return cname.rdata[0]![0] as string;
  }
  if (qtype === RRType.ANY) {
    const types = [...node.rrsets.keys()].sort((a, b) => a - b);
    for (const t of types) res.answers.push(...rrsetRecords(node.rrsets.get(t)!, owner));
    return undefined;
  }
  const set = node.rrsets.get(qtype);
  if (set) res.answers.push(...rrsetRecords(set, owner));
  else negative(ctx, zone);
  return undefined;
}

/** NXDOMAIN/NODATA authority: the SOA with TTL min(SOA TTL, MINIMUM) (RFC 2308 §3, §5). */
function negative(ctx: QueryContext, zone: Zone): void {
  const soa = zone.soa;
  const minimum = soa.rdata[0]![6] as number;
  ctx.response.authority.push(...rrsetRecords(soa, soa.name, Math.min(soa.ttl, minimum)));
}

/** A referral to the child zone: its NS in authority, glue in additional, AA clear (RFC 1034 §4.3.2 3b). */
function referral(ctx: QueryContext, zone: Zone, ns: RRset): void {
  const res = ctx.response;
  // AA stays set when the referral ends a CNAME chain that began with authoritative data.
  if (res.answers.length === 0) res.flags.aa = false;
  res.authority.push(...rrsetRecords(ns));
  const cutKey = nameKey(ns.name);
  const required: ResourceRecord[] = [];
  const optional: ResourceRecord[] = [];
  for (const d of ns.rdata) {
    const target = d[0] as string;
    const tkey = nameKey(target);
    if (!zone.contains(target)) continue;
    const node = zone.nodeByKey(tkey);
    if (!node) continue;
    // Glue below the cut is required (RFC 9471 §3); sibling glue is optional.
    const list = isSubdomainKey(tkey, cutKey) ? required : optional;
    for (const t of [RRType.A, RRType.AAAA]) {
      const set = node.rrsets.get(t);
      if (set) list.push(...rrsetRecords(set));
    }
  }
  res.additional.push(...required, ...optional);
  ctx.requiredAdditional = required.length;
}

/**
 * DNAME substitution (RFC 6672 §3.3): the DNAME, then a CNAME from the name to the rewritten
 * name with the DNAME's TTL; YXDOMAIN when the result is too long.
 */
function substitute(ctx: QueryContext, name: string, node: ZoneNode, dname: RRset): string | undefined {
  const res = ctx.response;
  ctx.cacheable = false; // the CNAME spells out the question's labels
  res.answers.push(...rrsetRecords(dname));
  const keep = splitName(name).length - splitName(node.name).length;
  const prefix = splitName(name).slice(0, keep).join('.');
  const target = dname.rdata[0]![0] as string;
  const rewritten = target === '.' ? `${prefix}.` : `${prefix}.${target}`;
  if (nameWireLength(rewritten) > MAX_NAME) {
    res.rcode = Rcode.YXDOMAIN;
    return undefined;
  }
  res.answers.push({ name, type: RRType.CNAME, class: RRClass.IN, ttl: dname.ttl, data: [rewritten] });
  return rewritten;
}

/** Field index of the target name that triggers additional processing, if the type has one. */
export function additionalField(type: number): number | undefined {
  return typeInfo(type)?.additional;
}
