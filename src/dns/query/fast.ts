/**
 * The fast path for a plain query the answer cache has not seen: the answer is written straight
 * from the zone's compact wire data into the response bytes, with no decoded query, context or
 * record objects. It covers the common shapes only: one RRset at the question name whose rdata
 * holds no compressible name and needs no additional section, NODATA and NXDOMAIN with the SOA.
 * Anything else returns undefined and takes the query chain (chain.ts), which gives the same
 * bytes for these shapes: delegations and DNAMEs above the name, CNAMEs, wildcards, ANY, DS,
 * class other than IN, EDNS versions other than 0 or with options, names with characters that
 * need escaping, and answers that would not fit (truncation).
 */
import { packQuestion, packRR } from '../wire/message.js';
import { PackOverflow } from '../wire/name.js';
import { packRdata } from '../wire/rdata.js';
import { RRClass, RRType, Rcode, isMetaType, rdataFields, typeInfo } from '../wire/types.js';
import type { CompactNodes } from '../zone/compact.js';
import type { ZoneStore } from '../zone/store.js';
import type { Zone, ZoneNode } from '../zone/zone.js';
import type { CacheProbe } from './cache.js';

/** OPT record length (root owner, no options). */
const OPT_SIZE = 11;
const OUT = new Uint8Array(65535);
/** The question name in presentation form, built here (at most 254 characters). */
const NAME = Buffer.alloc(256);
/** Start of each label in NAME. */
const STARTS = new Int32Array(128);

const plain = new Map<number, boolean>();

/**
 * True for a QTYPE whose answer is its stored rdata as is: a data type (no meta type, no ANY),
 * not CNAME (chains) or DS (answered from the parent), no field compressed on output, no
 * additional-section processing.
 */
function plainType(type: number): boolean {
  let v = plain.get(type);
  if (v === undefined) {
    v =
      !isMetaType(type) &&
      type !== RRType.CNAME &&
      type !== RRType.DS &&
      type !== RRType.DNAME &&
      typeInfo(type)?.additional === undefined &&
      !rdataFields(type).includes('cname');
    plain.set(type, v);
  }
  return v;
}

/** Whether `node` (a peekNode result) has an RRset of `type`. */
function has(base: CompactNodes | undefined, node: ZoneNode | number, type: number): boolean {
  if (typeof node !== 'number') return node.rrsets.has(type);
  return node >= 0 && base!.rrsetOffset(node, type) >= 0;
}

/**
 * The response to a plain query (see `probe` in cache.ts), or undefined when it takes the
 * general path. `maxUdp` is our EDNS payload size.
 */
export function fastAnswer(
  store: ZoneStore,
  p: Uint8Array,
  probe: CacheProbe,
  maxUdp: number,
): Buffer | undefined {
  if (probe.opt < 0) return undefined;
  const qe = probe.qnameEnd;
  const qtype = (p[qe]! << 8) | p[qe + 1]!;
  if (p[qe + 2] !== 0 || p[qe + 3] !== RRClass.IN || !plainType(qtype)) return undefined;
  // The case-folded presentation name: plain labels only (letters, digits, '-', '_', '*').
  const len = qe - 13;
  if (len < 2) return undefined; // the root
  let labels = 0;
  for (let o = 12; o < qe - 1;) {
    const l = p[o]!;
    STARTS[labels++] = o - 12;
    for (let i = o + 1; i <= o + l; i++) {
      let c = p[i]!;
      if (c >= 0x41 && c <= 0x5a) c += 32;
      else if (!(
        (c >= 0x61 && c <= 0x7a) ||
        (c >= 0x30 && c <= 0x39) ||
        c === 0x2d ||
        c === 0x5f ||
        c === 0x2a
      ))
        return undefined;
      NAME[i - 13] = c;
    }
    NAME[o + l + 1 - 13] = 0x2e;
    o += l + 1;
  }
  const key = NAME.toString('latin1', 0, len);
  const zone = store.findZoneByKey(key);
  if (!zone) return undefined;
  const originKey = zone.originKey;
  const base = zone.compactBase;
  // As lookup.ts: a DNAME at the apex, then a cut or DNAME on the way down decides first.
  if (key !== originKey && has(base, zone.peekNode(originKey), RRType.DNAME)) return undefined;
  let encloser = originKey;
  let node: ZoneNode | number = -1;
  for (let i = 0; i < labels; i++) {
    const start = STARTS[labels - 1 - i]!;
    if (len - start <= originKey.length) continue; // the apex and above
    const k = start === 0 ? key : key.slice(start);
    node = zone.peekNode(k);
    if (node === -1 && !zone.existsKey(k)) break;
    if (has(base, node, RRType.NS)) return undefined; // a referral
    if (start !== 0 && has(base, node, RRType.DNAME)) return undefined;
    encloser = k;
  }
  if (key === originKey) node = zone.peekNode(key);
  if (encloser !== key) {
    // NXDOMAIN unless a wildcard may answer (RFC 4592 §3.3.1).
    if (zone.existsKey(encloser === '.' ? '*.' : '*.' + encloser)) return undefined;
    return negative(zone, p, probe, maxUdp, Rcode.NXDOMAIN);
  }
  if (node === -1) return negative(zone, p, probe, maxUdp, Rcode.NOERROR); // empty non-terminal
  if (has(base, node, RRType.CNAME)) return undefined;
  if (!has(base, node, qtype)) return negative(zone, p, probe, maxUdp, Rcode.NOERROR);
  return positive(base, node, p, probe, maxUdp, qtype);
}

/** Header, question (the query's bytes) and the RRset of `type` at the question name. */
function positive(
  base: CompactNodes | undefined,
  node: ZoneNode | number,
  p: Uint8Array,
  probe: CacheProbe,
  maxUdp: number,
  type: number,
): Buffer | undefined {
  const room = probe.limit - (probe.opt > 0 ? OPT_SIZE : 0);
  const qe = probe.qnameEnd;
  const out = OUT;
  let off = 12;
  for (let i = 12; i < qe + 4; i++) out[off++] = p[i]!;
  let count = 0;
  if (typeof node === 'number') {
    const buf = base!.buf;
    let at = base!.rrsetOffset(node, type);
    const n = (buf[at + 6]! << 8) | buf[at + 7]!;
    const ttl = at + 2;
    at += 8;
    for (let r = 0; r < n; r++) {
      const rdlen = (buf[at]! << 8) | buf[at + 1]!;
      if (off + 12 + rdlen > room) return undefined; // truncation: the general path
      out[off] = 0xc0; // the owner is the question name (RFC 1035 §4.1.4)
      out[off + 1] = 12;
      out[off + 2] = type >> 8;
      out[off + 3] = type & 0xff;
      out[off + 4] = 0;
      out[off + 5] = RRClass.IN;
      out[off + 6] = buf[ttl]!;
      out[off + 7] = buf[ttl + 1]!;
      out[off + 8] = buf[ttl + 2]!;
      out[off + 9] = buf[ttl + 3]!;
      off += 10;
      for (let i = at; i < at + 2 + rdlen; i++) out[off++] = buf[i]!;
      at += 2 + rdlen;
      count++;
    }
  } else {
    const set = node.rrsets.get(type)!;
    const lim = out.subarray(0, room);
    try {
      for (const d of set.rdata) {
        if (off + 12 > room) return undefined;
        out[off] = 0xc0;
        out[off + 1] = 12;
        out[off + 2] = type >> 8;
        out[off + 3] = type & 0xff;
        out[off + 4] = 0;
        out[off + 5] = RRClass.IN;
        out[off + 6] = (set.ttl >>> 24) & 0xff;
        out[off + 7] = (set.ttl >>> 16) & 0xff;
        out[off + 8] = (set.ttl >>> 8) & 0xff;
        out[off + 9] = set.ttl & 0xff;
        const end = packRdata(lim, off + 12, type, d);
        out[off + 10] = (end - off - 12) >> 8;
        out[off + 11] = (end - off - 12) & 0xff;
        off = end;
        count++;
      }
    } catch (err) {
      if (err instanceof PackOverflow) return undefined;
      throw err;
    }
  }
  return finish(p, probe, maxUdp, off, Rcode.NOERROR, count, 0);
}

/** NXDOMAIN or NODATA: the SOA with TTL min(SOA TTL, MINIMUM) in authority (RFC 2308 §3, §5). */
function negative(
  zone: Zone,
  p: Uint8Array,
  probe: CacheProbe,
  maxUdp: number,
  rcode: number,
): Buffer | undefined {
  const soa = zone.soa;
  const data = soa.rdata[0]!;
  const ttl = Math.min(soa.ttl, data[6] as number);
  // The SOA's names are compressed against the question's, so both go through the name packer.
  const qe = probe.qnameEnd;
  for (let i = 13; i < qe; i++) NAME[i - 13] = p[i]!;
  for (let o = 12; o < qe - 1; o += p[o]! + 1) NAME[o + p[o]! + 1 - 13] = 0x2e;
  const name = NAME.toString('latin1', 0, qe - 13);
  const qtype = (p[qe]! << 8) | p[qe + 1]!;
  const lim = OUT.subarray(0, probe.limit - (probe.opt > 0 ? OPT_SIZE : 0));
  const comp = new Map<string, number>();
  let off: number;
  try {
    off = packQuestion(lim, 12, { name, type: qtype, class: RRClass.IN }, comp);
    off = packRR(lim, off, { name: soa.name, type: RRType.SOA, class: RRClass.IN, ttl, data }, comp);
  } catch (err) {
    if (err instanceof PackOverflow) return undefined;
    throw err;
  }
  return finish(p, probe, maxUdp, off, rcode, 0, 1);
}

/** Writes the header and our OPT (when the query had one); returns a copy of the message. */
function finish(
  p: Uint8Array,
  probe: CacheProbe,
  maxUdp: number,
  off: number,
  rcode: number,
  an: number,
  ns: number,
): Buffer {
  const out = OUT;
  let ar = 0;
  if (probe.opt > 0) {
    // RFC 6891 §6.1.2: our payload size, version 0, DO copied (RFC 3225 §3), no options.
    out[off] = 0;
    out[off + 1] = 0;
    out[off + 2] = RRType.OPT;
    out[off + 3] = maxUdp >> 8;
    out[off + 4] = maxUdp & 0xff;
    out[off + 5] = 0;
    out[off + 6] = 0;
    out[off + 7] = probe.opt === 2 ? 0x80 : 0;
    out[off + 8] = 0;
    out[off + 9] = 0;
    out[off + 10] = 0;
    off += OPT_SIZE;
    ar = 1;
  }
  out[0] = p[0]!;
  out[1] = p[1]!;
  out[2] = 0x84 | (p[2]! & 0x01); // QR, AA, RD copied
  out[3] = (p[3]! & 0x10) | rcode; // CD copied
  out[4] = 0;
  out[5] = 1;
  out[6] = an >> 8;
  out[7] = an & 0xff;
  out[8] = 0;
  out[9] = ns;
  out[10] = 0;
  out[11] = ar;
  return Buffer.from(out.subarray(0, off));
}
