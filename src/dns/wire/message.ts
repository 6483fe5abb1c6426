/**
 * DNS messages (RFC 1035 §4.1) with EDNS(0) (RFC 6891 §6) and truncation (RFC 2181 §9).
 *
 * A hand-written codec rather than an npm one: none of the npm codecs gets name compression,
 * RFC 2136 UPDATE and TSIG all right, and this one is faster on the hot path because it packs
 * straight into a reused buffer and can truncate at RRset boundaries while packing.
 */
import { FerryError } from '../../common/errors.js';
import {
  malformed,
  need,
  packName,
  room,
  unpackName,
  PackOverflow,
  nameKey,
  type Compressor,
} from './name.js';
import { packRdata, unpackRdata, type Rdata } from './rdata.js';
import { RRClass, RRType } from './types.js';

/** Header flags (RFC 1035 §4.1.1, RFC 4035 §3.2 for AD/CD). */
export interface MessageFlags {
  qr: boolean;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  ad: boolean;
  cd: boolean;
}

export interface Question {
  name: string;
  type: number;
  class: number;
}

/** A resource record with parsed rdata. */
export interface ResourceRecord {
  name: string;
  type: number;
  class: number;
  ttl: number;
  data: Rdata;
}

export interface EdnsOption {
  code: number;
  data: Uint8Array;
}

/** The OPT pseudo-record's contents (RFC 6891 §6.1.3); the extended rcode lives in `rcode`. */
export interface Edns {
  udpSize: number;
  version: number;
  dnssecOk: boolean;
  options: EdnsOption[];
}

/** A whole message; `rcode` is the full 12-bit code (header bits plus the OPT's upper 8). */
export interface DnsMessage {
  id: number;
  opcode: number;
  rcode: number;
  flags: MessageFlags;
  questions: Question[];
  answers: ResourceRecord[];
  authority: ResourceRecord[];
  /** Additional records without the OPT record, which is `edns`. */
  additional: ResourceRecord[];
  edns?: Edns;
}

export const HEADER_SIZE = 12;

/** Flags with everything clear, to spread over. */
export const NO_FLAGS: MessageFlags = {
  qr: false,
  aa: false,
  tc: false,
  rd: false,
  ra: false,
  ad: false,
  cd: false,
};

/** Header fields decoded alone (cheap first look at a packet). */
export interface Header {
  id: number;
  opcode: number;
  rcode: number;
  flags: MessageFlags;
  qdcount: number;
  ancount: number;
  nscount: number;
  arcount: number;
}

/** Unpacks the 12-byte header (RFC 1035 §4.1.1). */
export function unpackHeader(buf: Uint8Array): Header {
  need(buf, 0, HEADER_SIZE, 'header');
  const f = (buf[2]! << 8) | buf[3]!;
  return {
    id: (buf[0]! << 8) | buf[1]!,
    opcode: (f >> 11) & 0xf,
    rcode: f & 0xf,
    flags: {
      qr: (f & 0x8000) !== 0,
      aa: (f & 0x0400) !== 0,
      tc: (f & 0x0200) !== 0,
      rd: (f & 0x0100) !== 0,
      ra: (f & 0x0080) !== 0,
      ad: (f & 0x0020) !== 0,
      cd: (f & 0x0010) !== 0,
    },
    qdcount: (buf[4]! << 8) | buf[5]!,
    ancount: (buf[6]! << 8) | buf[7]!,
    nscount: (buf[8]! << 8) | buf[9]!,
    arcount: (buf[10]! << 8) | buf[11]!,
  };
}

function u16(buf: Uint8Array, off: number): number {
  return (buf[off]! << 8) | buf[off + 1]!;
}

/** Unpacks a question at `off` (RFC 1035 §4.1.2); returns it and the new offset. */
export function unpackQuestion(buf: Uint8Array, off: number): [Question, number] {
  const [name, o] = unpackName(buf, off);
  need(buf, o, 4, 'question');
  return [{ name, type: u16(buf, o), class: u16(buf, o + 2) }, o + 4];
}

/** Unpacks a resource record at `off` (RFC 1035 §4.1.3); OPT rdata stays raw in `data[0]`. */
export function unpackRR(buf: Uint8Array, off: number): [ResourceRecord, number] {
  const [name, o] = unpackName(buf, off);
  need(buf, o, 10, 'resource record');
  const type = u16(buf, o);
  const cls = u16(buf, o + 2);
  const ttl = ((buf[o + 4]! << 24) >>> 0) + ((buf[o + 5]! << 16) | (buf[o + 6]! << 8) | buf[o + 7]!);
  const len = u16(buf, o + 8);
  const start = o + 10;
  need(buf, start, len, 'rdata');
  const data =
    type === RRType.OPT
      ? [Buffer.from(buf.subarray(start, start + len))]
      : unpackRdata(buf, start, len, type);
  return [{ name, type, class: cls, ttl, data }, start + len];
}

/**
 * Decodes a whole message. Throws DNS_MALFORMED on anything out of bounds, on trailing bytes, on
 * more than one OPT or an OPT that is not owned by the root or not in the additional section
 * (RFC 6891 §6.1.1).
 */
export function decodeMessage(buf: Uint8Array): DnsMessage {
  const h = unpackHeader(buf);
  let off = HEADER_SIZE;
  const questions: Question[] = [];
  for (let i = 0; i < h.qdcount; i++) {
    const [q, o] = unpackQuestion(buf, off);
    questions.push(q);
    off = o;
  }
  const sections: ResourceRecord[][] = [[], [], []];
  const counts = [h.ancount, h.nscount, h.arcount];
  let edns: Edns | undefined;
  let rcode = h.rcode;
  for (let s = 0; s < 3; s++) {
    for (let i = 0; i < counts[s]!; i++) {
      const [rr, o] = unpackRR(buf, off);
      off = o;
      if (rr.type !== RRType.OPT) {
        sections[s]!.push(rr);
        continue;
      }
      if (s !== 2) throw malformed('OPT record outside the additional section');
      if (edns) throw malformed('more than one OPT record');
      if (rr.name !== '.') throw malformed('OPT record not owned by the root');
      edns = decodeOpt(rr);
      rcode |= ((rr.ttl >>> 24) & 0xff) << 4;
    }
  }
  if (off !== buf.length) throw malformed(`${buf.length - off} trailing bytes after the message`);
  const msg: DnsMessage = {
    id: h.id,
    opcode: h.opcode,
    rcode,
    flags: h.flags,
    questions,
    answers: sections[0]!,
    authority: sections[1]!,
    additional: sections[2]!,
  };
  if (edns) msg.edns = edns;
  return msg;
}

// RFC 6891 §6.1.2-6.1.3: CLASS is the UDP size, TTL holds ext-rcode, version and DO.
function decodeOpt(rr: ResourceRecord): Edns {
  const raw = rr.data[0] as Uint8Array;
  const options: EdnsOption[] = [];
  for (let i = 0; i < raw.length;) {
    need(raw, i, 4, 'EDNS option');
    const code = u16(raw, i);
    const len = u16(raw, i + 2);
    need(raw, i + 4, len, 'EDNS option data');
    options.push({ code, data: Buffer.from(raw.subarray(i + 4, i + 4 + len)) });
    i += 4 + len;
  }
  return { udpSize: rr.class, version: (rr.ttl >>> 16) & 0xff, dnssecOk: (rr.ttl & 0x8000) !== 0, options };
}

/** Encoding options. */
export interface EncodeOptions {
  /** Largest message to produce; RRsets that do not fit are left out and TC set (RFC 2181 §9). */
  maxSize?: number;
  /** Compress names (RFC 1035 §4.1.4); default true. */
  compress?: boolean;
  /**
   * How many leading additional records must fit (referral glue, RFC 9471 §3); if they do not,
   * TC is set. Other additional RRsets that do not fit are dropped silently.
   */
  requiredAdditional?: number;
}

const SCRATCH = new Uint8Array(65535);

/** Packs a question at `off`; returns the new offset. */
export function packQuestion(buf: Uint8Array, off: number, q: Question, comp?: Compressor): number {
  off = packName(buf, off, q.name, comp);
  room(buf, off, 4);
  buf[off++] = q.type >> 8;
  buf[off++] = q.type & 0xff;
  buf[off++] = q.class >> 8;
  buf[off++] = q.class & 0xff;
  return off;
}

/** Packs a resource record at `off` with its RDLENGTH; returns the new offset. */
export function packRR(buf: Uint8Array, off: number, rr: ResourceRecord, comp?: Compressor): number {
  off = packName(buf, off, rr.name, comp);
  room(buf, off, 10);
  buf[off++] = rr.type >> 8;
  buf[off++] = rr.type & 0xff;
  buf[off++] = rr.class >> 8;
  buf[off++] = rr.class & 0xff;
  buf[off++] = (rr.ttl >>> 24) & 0xff;
  buf[off++] = (rr.ttl >>> 16) & 0xff;
  buf[off++] = (rr.ttl >>> 8) & 0xff;
  buf[off++] = rr.ttl & 0xff;
  const lenAt = off;
  off += 2;
  const end = packRdata(buf, off, rr.type, rr.data, comp);
  const len = end - off;
  buf[lenAt] = len >> 8;
  buf[lenAt + 1] = len & 0xff;
  return end;
}

function optRecord(edns: Edns, rcode: number): ResourceRecord {
  const opts = Buffer.concat(
    edns.options.map((o) => {
      const b = Buffer.alloc(4 + o.data.length);
      b.writeUInt16BE(o.code, 0);
      b.writeUInt16BE(o.data.length, 2);
      b.set(o.data, 4);
      return b;
    }),
  );
  const ttl = (((rcode >> 4) & 0xff) << 24) | ((edns.version & 0xff) << 16) | (edns.dnssecOk ? 0x8000 : 0);
  return { name: '.', type: RRType.OPT, class: edns.udpSize, ttl: ttl >>> 0, data: [opts] };
}

function forget(comp: Compressor | undefined, mark: number): void {
  if (!comp) return;
  for (const [k, v] of comp) if (v >= mark) comp.delete(k);
}

/**
 * Encodes a message. With `maxSize`, whole RRsets that do not fit are left out: a missing
 * answer or authority RRset (or required glue) sets TC and ends the message there; other
 * additional RRsets are skipped. The OPT record always fits (its room is reserved first).
 */
export function encodeMessage(msg: DnsMessage, opts: EncodeOptions = {}): Buffer {
  const max = Math.min(opts.maxSize ?? 65535, 65535);
  if (msg.rcode > 0xf && !msg.edns) throw new FerryError('DNS_ENCODE', `rcode ${msg.rcode} needs EDNS`);
  const comp: Compressor | undefined = opts.compress === false ? undefined : new Map();
  const opt = msg.edns ? optRecord(msg.edns, msg.rcode) : undefined;
  const optSize = opt ? 11 + (opt.data[0] as Uint8Array).length : 0;
  const buf = SCRATCH.subarray(0, Math.max(HEADER_SIZE, max - optSize));
  let off = HEADER_SIZE;
  for (const q of msg.questions) off = packQuestion(buf, off, q, comp);
  let tc = msg.flags.tc;
  const counts = [0, 0, 0];
  const sections = [msg.answers, msg.authority, msg.additional];
  const required = opts.requiredAdditional ?? 0;
  outer: for (let s = 0; s < 3; s++) {
    const rrs = sections[s]!;
    for (let i = 0; i < rrs.length;) {
      // One RRset: consecutive records with the same owner, type and class.
      let j = i + 1;
      const first = rrs[i]!;
      while (
        j < rrs.length &&
        rrs[j]!.type === first.type &&
        rrs[j]!.class === first.class &&
        nameKey(rrs[j]!.name) === nameKey(first.name)
      )
        j++;
      const mark = off;
      try {
        for (let k = i; k < j; k++) off = packRR(buf, off, rrs[k]!, comp);
        counts[s]! += j - i;
      } catch (err) {
        if (!(err instanceof PackOverflow)) throw err;
        off = mark;
        forget(comp, mark);
        if (s < 2 || i < required) {
          tc = true;
          break outer;
        }
      }
      i = j;
    }
  }
  // The OPT record goes last, into the room reserved for it.
  const out = SCRATCH.subarray(0, max);
  if (opt) {
    off = packRR(out, off, opt);
    counts[2]! += 1;
  }
  const f =
    (msg.flags.qr ? 0x8000 : 0) |
    ((msg.opcode & 0xf) << 11) |
    (msg.flags.aa ? 0x0400 : 0) |
    (tc ? 0x0200 : 0) |
    (msg.flags.rd ? 0x0100 : 0) |
    (msg.flags.ra ? 0x0080 : 0) |
    (msg.flags.ad ? 0x0020 : 0) |
    (msg.flags.cd ? 0x0010 : 0) |
    (msg.rcode & 0xf);
  const head = [msg.id, f, msg.questions.length, counts[0]!, counts[1]!, counts[2]!];
  head.forEach((v, i) => {
    out[i * 2] = (v >> 8) & 0xff;
    out[i * 2 + 1] = v & 0xff;
  });
  return Buffer.from(out.subarray(0, off));
}

/** A query message for `name`/`type` (class IN), optionally with EDNS. */
export function makeQuery(
  id: number,
  name: string,
  type: number,
  opts: { rd?: boolean; edns?: { udpSize: number; dnssecOk?: boolean } | false; cls?: number } = {},
): DnsMessage {
  const msg: DnsMessage = {
    id,
    opcode: 0,
    rcode: 0,
    flags: { ...NO_FLAGS, rd: opts.rd ?? false },
    questions: [{ name, type, class: opts.cls ?? RRClass.IN }],
    answers: [],
    authority: [],
    additional: [],
  };
  if (opts.edns)
    msg.edns = { udpSize: opts.edns.udpSize, version: 0, dnssecOk: opts.edns.dnssecOk ?? false, options: [] };
  return msg;
}
