/**
 * TSIG (RFC 8945): keys, signing and verification of whole DNS messages in wire form. Pure: no
 * I/O, no logging. Secrets live only in `TsigKey.secret` and are never put in error messages or
 * in any object that `toJSON`/`inspect` would print.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';
import { FerryError } from '../../common/errors.js';
import { HEADER_SIZE } from '../wire/message.js';
import { malformed, need, nameKey, packName, parseName, unpackName } from '../wire/name.js';
import { RRClass, RRType } from '../wire/types.js';

/** TSIG error codes carried in the TSIG RR (RFC 8945 §3, the IANA TSIG/TKEY rcodes). */
export const TsigError = { NOERROR: 0, BADSIG: 16, BADKEY: 17, BADTIME: 18, BADTRUNC: 22 } as const;

/** Algorithms by name (RFC 8945 §6) and their HMAC hash. */
const ALGORITHMS: Record<string, { name: string; hash: string; size: number }> = {
  'hmac-md5': { name: 'hmac-md5.sig-alg.reg.int.', hash: 'md5', size: 16 },
  'hmac-sha1': { name: 'hmac-sha1.', hash: 'sha1', size: 20 },
  'hmac-sha224': { name: 'hmac-sha224.', hash: 'sha224', size: 28 },
  'hmac-sha256': { name: 'hmac-sha256.', hash: 'sha256', size: 32 },
  'hmac-sha384': { name: 'hmac-sha384.', hash: 'sha384', size: 48 },
  'hmac-sha512': { name: 'hmac-sha512.', hash: 'sha512', size: 64 },
};

export type TsigAlgorithm = keyof typeof ALGORITHMS;

/** A key as written in a config: name, algorithm and the base64 secret. */
export interface TsigKeyConfig {
  name: string;
  /** Default hmac-sha256. */
  algorithm?: string;
  /** Base64, as `tsig-keygen`/`keymgr -t` print it. */
  secret: string;
}

/** A usable key. `secret` is hidden from inspection and JSON. */
export class TsigKey {
  /** Key name, canonical and case-folded. */
  readonly name: string;
  /** Short algorithm name, e.g. `hmac-sha256`. */
  readonly algorithm: string;
  /** Algorithm domain name (RFC 8945 §6). */
  readonly algorithmName: string;
  readonly hash: string;
  readonly macSize: number;
  readonly #secret: Buffer;

  constructor(cfg: TsigKeyConfig) {
    this.name = nameKey(parseName(cfg.name));
    const alg = normalizeAlgorithm(cfg.algorithm ?? 'hmac-sha256');
    const info = ALGORITHMS[alg];
    if (!info)
      throw new FerryError(
        'DNS_BAD_OPTIONS',
        `TSIG key ${this.name}: algorithm ${JSON.stringify(cfg.algorithm)} is not supported; use hmac-sha256, hmac-sha512 or hmac-sha1`,
      );
    this.algorithm = alg;
    this.algorithmName = info.name;
    this.hash = info.hash;
    this.macSize = info.size;
    if (typeof cfg.secret !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(cfg.secret.replace(/\s+/g, '')))
      throw new FerryError('DNS_BAD_OPTIONS', `TSIG key ${this.name}: the secret must be base64`);
    this.#secret = Buffer.from(cfg.secret.replace(/\s+/g, ''), 'base64');
    if (this.#secret.length === 0)
      throw new FerryError('DNS_BAD_OPTIONS', `TSIG key ${this.name}: empty secret`);
  }

  /** HMAC of `parts` under this key. */
  mac(parts: readonly Uint8Array[]): Buffer {
    const h = createHmac(this.hash, this.#secret);
    for (const p of parts) h.update(p);
    return h.digest();
  }

  toJSON(): object {
    return { name: this.name, algorithm: this.algorithm };
  }

  [inspect.custom](): string {
    return `TsigKey(${this.name}, ${this.algorithm})`;
  }
}

function normalizeAlgorithm(a: string): string {
  const s = a.toLowerCase().replace(/\.$/, '');
  return s === 'hmac-md5.sig-alg.reg.int' ? 'hmac-md5' : s;
}

/** Short name of an algorithm domain name, or undefined when unknown. */
function algorithmByName(name: string): string | undefined {
  const k = nameKey(name);
  for (const [short, info] of Object.entries(ALGORITHMS)) if (info.name === k) return short;
  return undefined;
}

/** Keys by name. */
export class TsigKeyring {
  private readonly keys = new Map<string, TsigKey>();

  constructor(keys: ReadonlyArray<TsigKey | TsigKeyConfig> = []) {
    for (const k of keys) this.add(k instanceof TsigKey ? k : new TsigKey(k));
  }

  add(key: TsigKey): void {
    this.keys.set(key.name, key);
  }

  get(name: string): TsigKey | undefined {
    return this.keys.get(nameKey(name));
  }

  get size(): number {
    return this.keys.size;
  }
}

/** The TSIG RR's fields (RFC 8945 §4.2). */
export interface TsigRecord {
  keyName: string;
  algorithm: string;
  /** Seconds since the epoch (48 bits). */
  timeSigned: number;
  fudge: number;
  mac: Buffer;
  originalId: number;
  error: number;
  other: Buffer;
}

/** Where a message's TSIG RR is and what it holds. */
export interface FoundTsig {
  tsig: TsigRecord;
  /** Offset of the TSIG RR (the message without it ends here). */
  start: number;
}

function u16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

/** Offset just after the question or resource record at `off` (RR when `rr`). */
function skipEntry(buf: Uint8Array, off: number, rr: boolean): number {
  const [, o] = unpackName(buf, off);
  if (!rr) {
    need(buf, o, 4, 'question');
    return o + 4;
  }
  need(buf, o, 10, 'resource record');
  const len = u16(buf, o + 8);
  need(buf, o + 10, len, 'rdata');
  return o + 10 + len;
}

/**
 * Finds the TSIG RR. RFC 8945 §5.1: it must be the last record of the additional section; a TSIG
 * anywhere else, or more than one, is DNS_MALFORMED (FORMERR). Undefined when there is none.
 */
export function findTsig(buf: Uint8Array): FoundTsig | undefined {
  need(buf, 0, HEADER_SIZE, 'header');
  const qd = u16(buf, 4);
  const total = u16(buf, 6) + u16(buf, 8) + u16(buf, 10);
  if (u16(buf, 10) === 0) return undefined;
  let off = HEADER_SIZE;
  for (let i = 0; i < qd; i++) off = skipEntry(buf, off, false);
  let found: FoundTsig | undefined;
  for (let i = 0; i < total; i++) {
    const start = off;
    const [owner, o] = unpackName(buf, off);
    off = skipEntry(buf, off, true);
    if (u16(buf, o) !== RRType.TSIG) continue;
    if (i !== total - 1) throw malformed('TSIG record is not the last record (RFC 8945 §5.1)');
    if (u16(buf, o + 2) !== RRClass.ANY) throw malformed('TSIG record class is not ANY');
    found = { tsig: unpackTsigRdata(buf, o + 10, u16(buf, o + 8), owner), start };
  }
  if (off !== buf.length) throw malformed('trailing bytes after the message');
  return found;
}

function unpackTsigRdata(buf: Uint8Array, off: number, len: number, owner: string): TsigRecord {
  const end = off + len;
  const [algorithm, o1] = unpackName(buf, off);
  if (o1 + 10 > end) throw malformed('truncated TSIG rdata');
  const t = u16(buf, o1) * 2 ** 32 + (((buf[o1 + 2]! << 24) >>> 0) + (buf[o1 + 3]! << 16) + u16(buf, o1 + 4));
  const fudge = u16(buf, o1 + 6);
  const macLen = u16(buf, o1 + 8);
  let o = o1 + 10;
  if (o + macLen + 6 > end) throw malformed('truncated TSIG MAC');
  const mac = Buffer.from(buf.subarray(o, o + macLen));
  o += macLen;
  const originalId = u16(buf, o);
  const error = u16(buf, o + 2);
  const otherLen = u16(buf, o + 4);
  o += 6;
  if (o + otherLen !== end) throw malformed('bad TSIG other data length');
  const other = Buffer.from(buf.subarray(o, o + otherLen));
  return { keyName: owner, algorithm, timeSigned: t, fudge, mac, originalId, error, other };
}

/** Canonical uncompressed lower-case wire form of a name (RFC 8945 §4.3.3). */
function canonicalName(name: string): Buffer {
  const b = new Uint8Array(256);
  return Buffer.from(b.subarray(0, packName(b, 0, nameKey(name))));
}

function u48(v: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeUInt16BE(Math.floor(v / 2 ** 32) & 0xffff, 0);
  b.writeUInt32BE(v % 2 ** 32, 2);
  return b;
}

function withLength(mac: Uint8Array): Buffer {
  const b = Buffer.alloc(2 + mac.length);
  b.writeUInt16BE(mac.length, 0);
  b.set(mac, 2);
  return b;
}

/** The TSIG variables (RFC 8945 §4.3.3), or only the timers (§4.3.1 subsequent messages). */
function variables(
  key: TsigKey,
  t: Omit<TsigRecord, 'mac' | 'originalId' | 'keyName' | 'algorithm'>,
  timersOnly: boolean,
): Buffer {
  const timers = Buffer.concat([u48(t.timeSigned), Buffer.from([t.fudge >> 8, t.fudge & 0xff])]);
  if (timersOnly) return timers;
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(t.error, 0);
  tail.writeUInt16BE(t.other.length, 2);
  return Buffer.concat([
    canonicalName(key.name),
    Buffer.from([0, RRClass.ANY, 0, 0, 0, 0]),
    canonicalName(key.algorithmName),
    timers,
    tail,
    t.other,
  ]);
}

/** Options for signing one message. */
export interface SignOptions {
  /** The request's MAC, when signing a response (RFC 8945 §4.3.3). */
  requestMac?: Uint8Array;
  /** The previous message's MAC, for the 2nd and later messages of a stream (§5.3.1). */
  priorMac?: Uint8Array;
  /** Time signed in seconds (default now). */
  now?: number;
  /** Default 300 (§10). */
  fudge?: number;
  error?: number;
  other?: Uint8Array;
  /** Send an empty MAC (BADKEY/BADSIG answers, §5.3.2). */
  unsigned?: boolean;
}

function header(buf: Uint8Array): { id: number; arcount: number } {
  return { id: u16(buf, 0), arcount: u16(buf, 10) };
}

/**
 * Appends a TSIG RR to a message in wire form (which must not have one) and returns the signed
 * message and its MAC. The message's ID is the original ID.
 */
export function signMessage(
  msg: Uint8Array,
  key: TsigKey,
  opts: SignOptions = {},
): { packet: Buffer; mac: Buffer } {
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const vars = {
    timeSigned: now,
    fudge: opts.fudge ?? 300,
    error: opts.error ?? 0,
    other: Buffer.from(opts.other ?? []),
  };
  const prior = opts.priorMac ?? opts.requestMac;
  const parts: Uint8Array[] = [];
  if (prior) parts.push(withLength(prior));
  parts.push(msg, variables(key, vars, opts.priorMac !== undefined));
  const mac = opts.unsigned ? Buffer.alloc(0) : key.mac(parts);
  const alg = canonicalName(key.algorithmName);
  const rdata = Buffer.concat([
    alg,
    u48(vars.timeSigned),
    Buffer.from([vars.fudge >> 8, vars.fudge & 0xff]),
    withLength(mac),
    Buffer.from([msg[0]!, msg[1]!, vars.error >> 8, vars.error & 0xff]),
    withLength(vars.other),
  ]);
  const owner = canonicalName(key.name);
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(RRType.TSIG, 0);
  fixed.writeUInt16BE(RRClass.ANY, 2);
  fixed.writeUInt16BE(rdata.length, 8);
  const packet = Buffer.concat([msg, owner, fixed, rdata]);
  packet.writeUInt16BE(header(msg).arcount + 1, 10);
  return { packet, mac };
}

/** What verification found. */
export type VerifyResult = { status: 'unsigned'; message: Buffer } | VerifySigned;

/** A signed message's verification outcome. */
export interface VerifySigned {
  status: 'ok' | 'error';
  /** TSIG error when status is 'error': BADKEY, BADSIG, BADTIME (or FORMERR=1 for a bad MAC size). */
  error: number;
  tsig: TsigRecord;
  key: TsigKey | undefined;
  /** The message without its TSIG RR, with the original ID. */
  message: Buffer;
}

export interface VerifyOptions {
  requestMac?: Uint8Array;
  priorMac?: Uint8Array;
  /** Seconds since the epoch (default now). */
  now?: number;
}

/**
 * Verifies a message's TSIG (RFC 8945 §5.2 for requests, §5.3 for responses): key known (BADKEY),
 * MAC right, compared in constant time (BADSIG), time within the fudge (BADTIME). Throws
 * DNS_MALFORMED when the TSIG RR itself is malformed or misplaced.
 */
export function verifyMessage(packet: Uint8Array, keys: TsigKeyring, opts: VerifyOptions = {}): VerifyResult {
  const found = findTsig(packet);
  if (!found) return { status: 'unsigned', message: Buffer.from(packet) };
  const { tsig, start } = found;
  const message = Buffer.from(packet.subarray(0, start));
  message.writeUInt16BE(tsig.originalId, 0);
  message.writeUInt16BE(header(packet).arcount - 1, 10);
  const key = keys.get(tsig.keyName);
  const fail = (error: number, k: TsigKey | undefined) => ({
    status: 'error' as const,
    error,
    tsig,
    key: k,
    message,
  });
  if (!key || algorithmByName(tsig.algorithm) !== key.algorithm) return fail(TsigError.BADKEY, undefined);
  // §5.2.2.1: a MAC longer than the hash, or shorter than max(10, half), is a FORMERR.
  if (tsig.mac.length > key.macSize || tsig.mac.length < Math.max(10, key.macSize / 2))
    return fail(tsig.mac.length === 0 ? TsigError.BADSIG : 1, key);
  const prior = opts.priorMac ?? opts.requestMac;
  const parts: Uint8Array[] = [];
  if (prior) parts.push(withLength(prior));
  parts.push(message, variables(key, tsig, opts.priorMac !== undefined));
  const expected = key.mac(parts).subarray(0, tsig.mac.length);
  if (!timingSafeEqual(expected, tsig.mac)) return fail(TsigError.BADSIG, key);
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - tsig.timeSigned) > tsig.fudge) return fail(TsigError.BADTIME, key);
  return { status: 'ok', error: 0, tsig, key, message };
}

/**
 * The TSIG part of an error answer to a request that failed verification (RFC 8945 §5.2):
 * BADKEY and BADSIG are sent unsigned; BADTIME is signed, with the request's time and the
 * server's own time in Other Data. `response` is the unsigned answer (rcode NOTAUTH).
 */
export function signError(
  response: Uint8Array,
  failed: VerifySigned,
  now = Math.floor(Date.now() / 1000),
): Buffer {
  const key =
    failed.key ??
    new TsigKey({
      name: failed.tsig.keyName,
      algorithm: algorithmByName(failed.tsig.algorithm) ?? 'hmac-sha256',
      secret: 'AA==',
    });
  if (failed.error === TsigError.BADTIME) {
    return signMessage(response, key, {
      requestMac: failed.tsig.mac,
      now: failed.tsig.timeSigned,
      fudge: failed.tsig.fudge,
      error: TsigError.BADTIME,
      other: u48(now),
    }).packet;
  }
  return signMessage(response, key, { unsigned: true, now, fudge: failed.tsig.fudge, error: failed.error })
    .packet;
}
