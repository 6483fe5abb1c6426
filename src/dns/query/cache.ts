/**
 * The hot path: precompiled answers. A plain query (one question, no records but an optional
 * OPT) is recognised straight from its bytes, and a response encoded earlier for the same
 * question, EDNS state and size limit is reused with the id, RD/CD bits and the question's
 * spelling copied in. Every name in a cached response that equals the question is a pointer to
 * it (compression is case-insensitive), so copying the question bytes echoes the query's case
 * everywhere (RFC 4343 §4.1). Responses that spell the question name out elsewhere (DNAME
 * synthesis) are not cached. The whole cache is dropped when any zone changes.
 */

/** Where a cacheable query's parts are, and its cache key. */
export interface CacheProbe {
  key: string;
  /** Offset just past the question name (the bytes copied into a cached response). */
  qnameEnd: number;
  /**
   * The query's OPT: 0 none, 1 present, 2 present with DO set; -1 present with a version other
   * than 0 (BADVERS) or with options.
   */
  opt: number;
  /** The response's size limit: 512 without EDNS, min(theirs, ours) with it, 65535 over TCP. */
  limit: number;
}

/**
 * The key is built here, in one piece: the question name case-folded in wire form, QTYPE and
 * QCLASS, then the EDNS state, the transport and the size limit (a flat string hashes at once).
 */
const KEY = Buffer.alloc(272);

/**
 * The cache key of a plain query, or undefined when the query needs the full path: not a QUERY,
 * a response, anything but QDCOUNT=1, records other than one well-formed OPT, trailing bytes,
 * or a compressed question name.
 */
export function probe(p: Uint8Array, transport: 'udp' | 'tcp', maxUdp: number): CacheProbe | undefined {
  const len = p.length;
  if (len < 17) return undefined;
  if ((p[2]! & 0xf8) !== 0) return undefined; // QR or opcode
  if (p[4] !== 0 || p[5] !== 1 || p[6] !== 0 || p[7] !== 0 || p[8] !== 0 || p[9] !== 0 || p[10] !== 0)
    return undefined;
  const ar = p[11]!;
  if (ar > 1) return undefined;
  let off = 12;
  for (;;) {
    if (off >= len) return undefined;
    const l = p[off]!;
    KEY[off - 12] = l;
    if (l === 0) break;
    if (l > 63 || off + 1 + l > len || off + 1 + l - 12 > 254) return undefined;
    for (let i = off + 1; i <= off + l; i++) {
      const c = p[i]!;
      KEY[i - 12] = c >= 0x41 && c <= 0x5a ? c + 32 : c;
    }
    off += 1 + l;
  }
  const qnameEnd = off + 1;
  off = qnameEnd + 4;
  if (off > len) return undefined;
  let k = qnameEnd - 12;
  for (let i = qnameEnd; i < off; i++) KEY[k++] = p[i]!;
  const tcp = transport === 'tcp' ? 8 : 0;
  let opt = 0;
  let limit = tcp ? 65535 : 512;
  let state = 0; // 0 no OPT, 1 OPT, 2 OPT with DO, 3 and 4 the same with a version other than 0
  if (ar === 0) {
    if (off !== len) return undefined;
  } else {
    // One OPT (RFC 6891 §6.1.2): root owner, type 41, options well framed, nothing after.
    if (off + 11 > len || p[off] !== 0 || p[off + 1] !== 0 || p[off + 2] !== 41) return undefined;
    const udpSize = (p[off + 3]! << 8) | p[off + 4]!;
    const version = p[off + 6]!;
    const dnssecOk = (p[off + 7]! & 0x80) !== 0;
    const rdlen = (p[off + 9]! << 8) | p[off + 10]!;
    const end = off + 11 + rdlen;
    if (end !== len) return undefined;
    for (let i = off + 11; i < end;) {
      if (i + 4 > end) return undefined;
      i += 4 + ((p[i + 2]! << 8) | p[i + 3]!);
      if (i > end) return undefined;
    }
    if (version !== 0) {
      state = dnssecOk ? 4 : 3;
      opt = -1;
      limit = 0;
    } else {
      state = dnssecOk ? 2 : 1;
      opt = rdlen > 0 ? -1 : state;
      if (!tcp) limit = Math.max(512, Math.min(udpSize, maxUdp));
    }
  }
  KEY[k++] = state | tcp;
  KEY[k++] = limit >> 8;
  KEY[k++] = limit & 0xff;
  return { key: KEY.toString('latin1', 0, k), qnameEnd, opt, limit };
}

/** A bounded map of encoded responses, dropped whole when the zone data generation changes. */
export class AnswerCache {
  private readonly map = new Map<string, Buffer>();
  private generation = -1;

  constructor(readonly maxEntries: number) {}

  get size(): number {
    return this.map.size;
  }

  /** The stored response for `key`, if the data has not changed since it was stored. */
  get(key: string, generation: number): Buffer | undefined {
    if (generation !== this.generation) {
      this.map.clear();
      this.generation = generation;
      return undefined;
    }
    return this.map.get(key);
  }

  set(key: string, generation: number, response: Buffer): void {
    if (generation !== this.generation) {
      this.map.clear();
      this.generation = generation;
    }
    if (this.map.size >= this.maxEntries) {
      // Evict the oldest entry (Map keeps insertion order).
      const first = this.map.keys().next();
      if (!first.done) this.map.delete(first.value);
    }
    // A copy with its own memory: a small Buffer is a slice of a shared 8 KB pool, and keeping
    // it would keep the whole pool alive (found by the long fuzz run's memory bound).
    const own = Buffer.allocUnsafeSlow(response.length);
    response.copy(own);
    this.map.set(key, own);
  }
}

/** A copy of a cached response answering `query`: its id, RD and CD bits, and question spelling. */
export function patch(cached: Buffer, query: Uint8Array, qnameEnd: number): Buffer {
  const out = Buffer.allocUnsafe(cached.length);
  out.set(cached); // TypedArray#set: no argument checks as Buffer#copy has
  out[0] = query[0]!;
  out[1] = query[1]!;
  out[2] = (out[2]! & ~0x01) | (query[2]! & 0x01);
  out[3] = (out[3]! & ~0x10) | (query[3]! & 0x10);
  if (out[5] === 1) for (let i = 12; i < qnameEnd; i++) out[i] = query[i]!;
  return out;
}
