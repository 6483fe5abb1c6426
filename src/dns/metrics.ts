/**
 * Per-query diagnostics on `node:diagnostics_channel` channel `ferry.dns.query` (undici style):
 * one `DnsQueryEvent` per answered query. The server builds events only while the channel has
 * subscribers, so the hot path pays one boolean check otherwise. With `workers` > 1 the workers'
 * events are batched to the main thread and published there.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { rcodeName, typeName } from './wire/types.js';
import { skipName } from './wire/name.js';

/** The channel's name. */
export const DNS_QUERY_CHANNEL = 'ferry.dns.query';

/** One answered query. */
export interface DnsQueryEvent {
  /** Question type mnemonic (`TYPE65534` style when unknown), or `NONE` without a question. */
  qtype: string;
  /** Response code mnemonic, EDNS extended codes included (`BADVERS`). */
  rcode: string;
  transport: 'udp' | 'tcp';
  /** Time from the packet's arrival in the handler to its response being ready. */
  durationMs: number;
}

/** The channel; publish only when `queryChannel.hasSubscribers`. */
export const queryChannel = diagnostics_channel.channel(DNS_QUERY_CHANNEL);

// The first question's type, or -1.
function questionType(p: Uint8Array): number {
  if (p.length < 12 || ((p[4]! << 8) | p[5]!) === 0) return -1;
  const off = skipName(p, 12);
  return off < 0 || off + 2 > p.length ? -1 : (p[off]! << 8) | p[off + 1]!;
}

// The full rcode: header bits plus the OPT record's extended bits (RFC 6891 §6.1.3).
function fullRcode(r: Uint8Array): number {
  const low = r[3]! & 0x0f;
  const ar = (r[10]! << 8) | r[11]!;
  if (ar === 0) return low;
  let off = 12;
  const qd = (r[4]! << 8) | r[5]!;
  for (let i = 0; i < qd && off >= 0; i++) off = off < 0 ? -1 : skipName(r, off) + 4;
  const rrs = ((r[6]! << 8) | r[7]!) + ((r[8]! << 8) | r[9]!) + ar;
  for (let i = 0; i < rrs && off >= 0 && off < r.length; i++) {
    const end = skipName(r, off);
    if (end < 0 || end + 10 > r.length) return low;
    const type = (r[end]! << 8) | r[end + 1]!;
    if (type === 41) return (r[end + 4]! << 4) | low;
    off = end + 10 + ((r[end + 8]! << 8) | r[end + 9]!);
  }
  return low;
}

/** The event for one query and its response, timed from `startMs` (`performance.now()`). */
export function queryEvent(
  query: Uint8Array,
  response: Uint8Array,
  transport: 'udp' | 'tcp',
  startMs: number,
): DnsQueryEvent {
  const t = questionType(query);
  return {
    qtype: t < 0 ? 'NONE' : typeName(t),
    rcode: response.length >= 12 ? rcodeName(fullRcode(response)) : 'NONE',
    transport,
    durationMs: performance.now() - startMs,
  };
}
