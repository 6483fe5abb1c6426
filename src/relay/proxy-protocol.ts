/**
 * PROXY protocol v1 (text) and v2 (binary) headers, as specified by HAProxy's proxy-protocol.txt.
 * Pure: no I/O. The relay sends one header first on each upstream TCP connection so the upstream
 * learns the real client address, and can parse one from a client when it stands behind a proxy.
 */
import { isIP, isIPv4 } from 'node:net';

/** A relayed TCP connection's endpoints, as carried by a PROXY header. */
export interface ProxyAddresses {
  sourceAddress: string;
  sourcePort: number;
  destinationAddress: string;
  destinationPort: number;
}

/** The parse result: `addresses` is null for v1 UNKNOWN, v2 LOCAL and non-IP families. */
export interface ParsedProxyHeader {
  version: 1 | 2;
  addresses: ProxyAddresses | null;
  /** Header length in bytes; the payload starts there. */
  length: number;
}

/** The 12-byte v2 signature (section 2.2). */
export const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
/** Longest v1 line including CRLF (section 2.1). */
export const V1_MAX_LENGTH = 107;
/** Longest header accepted from a client: v2 fixed part + addresses + a bounded TLV area. */
export const MAX_HEADER_LENGTH = 16 + 1024;

/** `::ffff:a.b.c.d` → `a.b.c.d`; other addresses unchanged. */
export function unmapIPv4(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

/** Puts both addresses in one family (IPv4 when both can be, else IPv6 with v4-mapped forms). */
function sameFamily(a: ProxyAddresses): { v4: boolean; src: string; dst: string } {
  const src = unmapIPv4(a.sourceAddress);
  const dst = unmapIPv4(a.destinationAddress);
  if (isIPv4(src) && isIPv4(dst)) return { v4: true, src, dst };
  return { v4: false, src: isIPv4(src) ? `::ffff:${src}` : src, dst: isIPv4(dst) ? `::ffff:${dst}` : dst };
}

/** The v1 line, e.g. `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n` (section 2.1). */
export function encodeProxyV1(a: ProxyAddresses): Buffer {
  const { v4, src, dst } = sameFamily(a);
  return Buffer.from(
    `PROXY ${v4 ? 'TCP4' : 'TCP6'} ${src} ${dst} ${a.sourcePort} ${a.destinationPort}\r\n`,
    'latin1',
  );
}

function ipv4Bytes(address: string, out: Buffer, offset: number): void {
  const parts = address.split('.');
  for (let i = 0; i < 4; i++) out[offset + i] = Number(parts[i]);
}

function ipv6Bytes(address: string, out: Buffer, offset: number): void {
  let a = address;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (dotted) {
    const p = dotted[1]!.split('.').map(Number);
    a =
      a.slice(0, -dotted[1]!.length) +
      `${((p[0]! << 8) | p[1]!).toString(16)}:${((p[2]! << 8) | p[3]!).toString(16)}`;
  }
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups =
    tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  for (let i = 0; i < 8; i++) out.writeUInt16BE(parseInt(groups[i] ?? '0', 16), offset + i * 2);
}

function ipv6String(buf: Buffer, offset: number): string {
  const g: string[] = [];
  for (let i = 0; i < 8; i++) g.push(buf.readUInt16BE(offset + i * 2).toString(16));
  // Compress the longest run of zero groups (RFC 5952 section 4.2).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === '0') j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  if (best < 0) return g.join(':');
  return `${g.slice(0, best).join(':')}::${g.slice(best + bestLen).join(':')}`;
}

/** The v2 binary header with command PROXY over STREAM (section 2.2), without TLVs. */
export function encodeProxyV2(a: ProxyAddresses): Buffer {
  const { v4, src, dst } = sameFamily(a);
  const addrLen = v4 ? 12 : 36;
  const out = Buffer.alloc(16 + addrLen);
  V2_SIGNATURE.copy(out, 0);
  out[12] = 0x21; // version 2, command PROXY
  out[13] = v4 ? 0x11 : 0x21; // AF_INET/AF_INET6, STREAM
  out.writeUInt16BE(addrLen, 14);
  if (v4) {
    ipv4Bytes(src, out, 16);
    ipv4Bytes(dst, out, 20);
    out.writeUInt16BE(a.sourcePort, 24);
    out.writeUInt16BE(a.destinationPort, 26);
  } else {
    ipv6Bytes(src, out, 16);
    ipv6Bytes(dst, out, 32);
    out.writeUInt16BE(a.sourcePort, 48);
    out.writeUInt16BE(a.destinationPort, 50);
  }
  return out;
}

/** Encodes a header of the given version. */
export function encodeProxyHeader(version: 'v1' | 'v2', a: ProxyAddresses): Buffer {
  return version === 'v1' ? encodeProxyV1(a) : encodeProxyV2(a);
}

/** Thrown by the parser on a malformed header (never on a short one). */
export class ProxyHeaderError extends Error {}

function port(s: string | undefined): number {
  if (s === undefined || !/^\d{1,5}$/.test(s) || Number(s) > 65535)
    throw new ProxyHeaderError(`bad port ${String(s)}`);
  return Number(s);
}

/**
 * Parses a header at the start of `buf`. Returns null when more bytes are needed; throws
 * ProxyHeaderError when the bytes cannot be a valid v1 or v2 header.
 */
export function parseProxyHeader(buf: Buffer): ParsedProxyHeader | null {
  const n = Math.min(buf.length, 12);
  if (buf.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) {
    if (buf.length < 16) return null;
    const verCmd = buf[12]!;
    if (verCmd >> 4 !== 2) throw new ProxyHeaderError('v2: bad version');
    const len = buf.readUInt16BE(14);
    if (16 + len > MAX_HEADER_LENGTH) throw new ProxyHeaderError('v2: header too long');
    if (buf.length < 16 + len) return null;
    const cmd = verCmd & 0x0f;
    const fam = buf[13]! >> 4;
    const length = 16 + len;
    if (cmd === 0) return { version: 2, addresses: null, length }; // LOCAL
    if (cmd !== 1) throw new ProxyHeaderError('v2: bad command');
    if (fam === 1) {
      if (len < 12) throw new ProxyHeaderError('v2: short IPv4 block');
      return {
        version: 2,
        length,
        addresses: {
          sourceAddress: Array.from(buf.subarray(16, 20)).join('.'),
          destinationAddress: Array.from(buf.subarray(20, 24)).join('.'),
          sourcePort: buf.readUInt16BE(24),
          destinationPort: buf.readUInt16BE(26),
        },
      };
    }
    if (fam === 2) {
      if (len < 36) throw new ProxyHeaderError('v2: short IPv6 block');
      return {
        version: 2,
        length,
        addresses: {
          sourceAddress: unmapIPv4(ipv6String(buf, 16)),
          destinationAddress: unmapIPv4(ipv6String(buf, 32)),
          sourcePort: buf.readUInt16BE(48),
          destinationPort: buf.readUInt16BE(50),
        },
      };
    }
    return { version: 2, addresses: null, length }; // UNSPEC or UNIX: keep the real peer
  }
  const prefix = 'PROXY ';
  const m = Math.min(buf.length, prefix.length);
  if (buf.toString('latin1', 0, m) !== prefix.slice(0, m)) throw new ProxyHeaderError('not a PROXY header');
  const end = buf.indexOf('\r\n', 0, 'latin1');
  if (end < 0) {
    if (buf.length >= V1_MAX_LENGTH) throw new ProxyHeaderError('v1: line too long');
    return null;
  }
  if (end + 2 > V1_MAX_LENGTH) throw new ProxyHeaderError('v1: line too long');
  const parts = buf.toString('latin1', 0, end).split(' ');
  const length = end + 2;
  if (parts[1] === 'UNKNOWN') return { version: 1, addresses: null, length };
  if (parts.length !== 6 || (parts[1] !== 'TCP4' && parts[1] !== 'TCP6'))
    throw new ProxyHeaderError('v1: bad line');
  const family = parts[1] === 'TCP4' ? 4 : 6;
  if (isIP(parts[2]!) !== family || isIP(parts[3]!) !== family) throw new ProxyHeaderError('v1: bad address');
  return {
    version: 1,
    length,
    addresses: {
      sourceAddress: unmapIPv4(parts[2]!),
      destinationAddress: unmapIPv4(parts[3]!),
      sourcePort: port(parts[4]),
      destinationPort: port(parts[5]),
    },
  };
}
