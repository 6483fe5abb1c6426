/**
 * Zone transfer responses: AXFR (RFC 5936) and IXFR (RFC 1995) as record sequences, and the
 * packing of a sequence into as many messages as it takes (RFC 5936 §2.2). Pure.
 */
import { HEADER_SIZE, packQuestion, packRR, type Question, type ResourceRecord } from '../wire/message.js';
import { PackOverflow, type Compressor } from '../wire/name.js';
import { Opcode, RRClass, RRType } from '../wire/types.js';
import type { ZoneDiff } from '../zone/store.js';
import type { Zone } from '../zone/zone.js';

/** The zone's SOA as a record. */
export function soaOf(zone: Zone): ResourceRecord {
  const s = zone.soa;
  return { name: s.name, type: RRType.SOA, class: RRClass.IN, ttl: s.ttl, data: s.rdata[0]! };
}

/** AXFR: the SOA, every other record, the SOA again (RFC 5936 §2.2). */
export function axfrRecords(zone: Zone): ResourceRecord[] {
  const soa = soaOf(zone);
  return [soa, ...zone.records().filter((r) => r.type !== RRType.SOA), soa];
}

/**
 * IXFR (RFC 1995 §4): the current SOA, then per difference the old SOA, the removed records, the
 * new SOA and the added records, then the current SOA. No differences gives the single SOA that
 * says the client is up to date.
 */
export function ixfrRecords(zone: Zone, diffs: readonly ZoneDiff[]): ResourceRecord[] {
  const soa = soaOf(zone);
  if (diffs.length === 0) return [soa];
  const out: ResourceRecord[] = [soa];
  for (const d of diffs) out.push(d.fromSoa, ...d.removed, d.toSoa, ...d.added);
  out.push(soa);
  return out;
}

/** Largest transfer message we build, leaving room for a TSIG RR (RFC 8945 §5.3.1). */
export const XFR_MESSAGE_SIZE = 16_384;

function forget(comp: Compressor, mark: number): void {
  for (const [k, v] of comp) if (v >= mark) comp.delete(k);
}

/**
 * Packs `records` as the answer section of one or more responses to a transfer query: the
 * question in the first message only, AA set, each message at most `maxSize` octets.
 */
export function packTransfer(
  query: { id: number; question: Question },
  records: readonly ResourceRecord[],
  maxSize = XFR_MESSAGE_SIZE,
): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  do {
    const buf = new Uint8Array(maxSize);
    const comp: Compressor = new Map();
    let off = HEADER_SIZE;
    const qd = out.length === 0 ? 1 : 0;
    if (qd) off = packQuestion(buf, off, query.question, comp);
    let an = 0;
    for (; i < records.length; i++) {
      const mark = off;
      try {
        off = packRR(buf, off, records[i]!, comp);
        an++;
      } catch (err) {
        if (!(err instanceof PackOverflow) || an === 0) throw err;
        off = mark;
        forget(comp, mark);
        break;
      }
    }
    const head = [query.id, 0x8000 | (Opcode.QUERY << 11) | 0x0400, qd, an, 0, 0];
    head.forEach((v, k) => {
      buf[k * 2] = (v >> 8) & 0xff;
      buf[k * 2 + 1] = v & 0xff;
    });
    out.push(Buffer.from(buf.subarray(0, off)));
  } while (i < records.length);
  return out;
}
