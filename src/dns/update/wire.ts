/**
 * RFC 2136 messages in wire form. UPDATE records may have empty rdata (class ANY and NONE deletes,
 * §2.4-2.5), which the query codec does not accept, so they are read and written here. Pure and
 * bounds-checked; DNS_MALFORMED on bad input.
 */
import {
  HEADER_SIZE,
  unpackHeader,
  unpackQuestion,
  type MessageFlags,
  type Question,
} from '../wire/message.js';
import { malformed, need, packName, unpackName } from '../wire/name.js';
import { rdataToWire, unpackRdata, type Rdata } from '../wire/rdata.js';
import { Opcode, RRClass, RRType } from '../wire/types.js';

/** An UPDATE record: rdata undefined when RDLENGTH is 0. */
export interface UpdateRR {
  name: string;
  type: number;
  class: number;
  ttl: number;
  data: Rdata | undefined;
}

/** An UPDATE message (RFC 2136 §2): zone, prerequisite, update and additional sections. */
export interface UpdateMessage {
  id: number;
  opcode: number;
  rcode: number;
  flags: MessageFlags;
  zone: Question[];
  prerequisites: UpdateRR[];
  updates: UpdateRR[];
  additional: UpdateRR[];
}

function u16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

function unpackUpdateRR(buf: Uint8Array, off: number): [UpdateRR, number] {
  const [name, o] = unpackName(buf, off);
  need(buf, o, 10, 'resource record');
  const type = u16(buf, o);
  const cls = u16(buf, o + 2);
  const ttl = ((buf[o + 4]! << 24) >>> 0) + (u16(buf, o + 6) | (buf[o + 5]! << 16));
  const len = u16(buf, o + 8);
  need(buf, o + 10, len, 'rdata');
  let data: Rdata | undefined;
  if (len > 0) {
    if (type === RRType.OPT || type === RRType.TSIG) data = [Buffer.from(buf.subarray(o + 10, o + 10 + len))];
    else data = unpackRdata(buf, o + 10, len, type);
  }
  return [{ name, type, class: cls, ttl, data }, o + 10 + len];
}

/** Decodes an UPDATE message (no TSIG: strip it first). Throws DNS_MALFORMED. */
export function decodeUpdate(buf: Uint8Array): UpdateMessage {
  const h = unpackHeader(buf);
  let off = HEADER_SIZE;
  const zone: Question[] = [];
  for (let i = 0; i < h.qdcount; i++) {
    const [q, o] = unpackQuestion(buf, off);
    zone.push(q);
    off = o;
  }
  const sections: UpdateRR[][] = [[], [], []];
  const counts = [h.ancount, h.nscount, h.arcount];
  for (let s = 0; s < 3; s++)
    for (let i = 0; i < counts[s]!; i++) {
      const [rr, o] = unpackUpdateRR(buf, off);
      sections[s]!.push(rr);
      off = o;
    }
  if (off !== buf.length) throw malformed('trailing bytes after the message');
  return {
    id: h.id,
    opcode: h.opcode,
    rcode: h.rcode,
    flags: h.flags,
    zone,
    prerequisites: sections[0]!,
    updates: sections[1]!,
    additional: sections[2]!,
  };
}

/** Encodes an UPDATE request (RFC 2136 §2), names uncompressed. */
export function encodeUpdate(msg: {
  id: number;
  zone: string;
  prerequisites?: UpdateRR[];
  updates: UpdateRR[];
}): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(HEADER_SIZE);
  head.writeUInt16BE(msg.id, 0);
  head.writeUInt16BE(Opcode.UPDATE << 11, 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(msg.prerequisites?.length ?? 0, 6);
  head.writeUInt16BE(msg.updates.length, 8);
  parts.push(head, packedName(msg.zone), Buffer.from([0, RRType.SOA, 0, RRClass.IN]));
  for (const rr of [...(msg.prerequisites ?? []), ...msg.updates]) {
    const rdata = rr.data ? rdataToWire(rr.type, rr.data) : Buffer.alloc(0);
    const fixed = Buffer.alloc(10);
    fixed.writeUInt16BE(rr.type, 0);
    fixed.writeUInt16BE(rr.class, 2);
    fixed.writeUInt32BE(rr.ttl >>> 0, 4);
    fixed.writeUInt16BE(rdata.length, 8);
    parts.push(packedName(rr.name), fixed, rdata);
  }
  return Buffer.concat(parts);
}

function packedName(name: string): Buffer {
  const b = new Uint8Array(256);
  return Buffer.from(b.subarray(0, packName(b, 0, name)));
}
