/**
 * RRsets in a compact binary form for the primary → worker channel: whole zones at start and the
 * RRsets a change touched afterwards. Per RRset: owner (uncompressed wire name, RFC 1035 §3.1),
 * TYPE u16, TTL u32, count u16, then each rdata as u16 length + uncompressed wire rdata. A count
 * of 0 deletes the RRset. Pure: no I/O.
 */
import { nameWireLength, packName, unpackName } from '../wire/name.js';
import { packRdata, unpackRdata, type Rdata } from '../wire/rdata.js';

/** One RRset's full state; empty `rdata` means it no longer exists. */
export interface RRsetState {
  name: string;
  type: number;
  ttl: number;
  rdata: readonly Rdata[];
}

const SCRATCH = new Uint8Array(65535);

/** Packs RRset states one after another. */
export function encodeRRsets(sets: Iterable<RRsetState>): Buffer {
  // Small to start: a zone of 10 records needs some 300 bytes, and 100,000 of them are encoded.
  let buf = Buffer.allocUnsafe(1024);
  let off = 0;
  const ensure = (n: number) => {
    if (off + n <= buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(buf.length * 2, off + n));
    buf.copy(next, 0, 0, off);
    buf = next;
  };
  for (const s of sets) {
    ensure(nameWireLength(s.name) + 8);
    off = packName(buf, off, s.name);
    buf.writeUInt16BE(s.type, off);
    buf.writeUInt32BE(s.ttl >>> 0, off + 2);
    buf.writeUInt16BE(s.rdata.length, off + 6);
    off += 8;
    for (const d of s.rdata) {
      const len = packRdata(SCRATCH, 0, s.type, d);
      ensure(2 + len);
      buf.writeUInt16BE(len, off);
      buf.set(SCRATCH.subarray(0, len), off + 2);
      off += 2 + len;
    }
  }
  return buf.subarray(0, off);
}

/** Unpacks what `encodeRRsets` wrote, calling `fn` for each RRset in order. */
export function decodeRRsets(buf: Uint8Array, fn: (s: RRsetState) => void): void {
  let off = 0;
  while (off < buf.length) {
    const [name, o] = unpackName(buf, off);
    off = o;
    const type = (buf[off]! << 8) | buf[off + 1]!;
    const ttl = ((buf[off + 2]! << 24) | (buf[off + 3]! << 16) | (buf[off + 4]! << 8) | buf[off + 5]!) >>> 0;
    const count = (buf[off + 6]! << 8) | buf[off + 7]!;
    off += 8;
    const rdata: Rdata[] = [];
    for (let i = 0; i < count; i++) {
      const len = (buf[off]! << 8) | buf[off + 1]!;
      // Names in rdata are uncompressed, so a view of just this rdata decodes on its own.
      rdata.push(unpackRdata(buf.subarray(off + 2, off + 2 + len), 0, len, type));
      off += 2 + len;
    }
    fn({ name, type, ttl, rdata });
  }
}
