/**
 * Master-file reader (RFC 1035 §5.1; `$TTL` from RFC 2308 §4; generic rdata from RFC 3597 §5).
 * Errors are FerryError `ZONE_SYNTAX` with `file:line:` in the message.
 *
 * The file is read as bytes (scan.ts). A record of a common shape (a plain owner name, TTL, class
 * IN, and A, AAAA, NS, CNAME, PTR, MX, TXT or SRV rdata in plain form) is encoded straight from
 * those bytes into the zone's compact form; every other entry, and any token that path does not
 * take, goes through the text path (`record`, `parseRdata`) for that entry, so both give the same
 * records and the same errors.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { FerryError } from '../../common/errors.js';
import { labelsToText, parseName, textToLabels } from '../wire/name.js';
import { packRdata, parseRdata, type Rdata } from '../wire/rdata.js';
import { isTtlToken, parseIPv6, parseTtl } from '../wire/text.js';
import { RRClass, RRType, classCode, typeCode, typeName } from '../wire/types.js';
import { CompactBuilder } from './compact.js';
import { ESCAPED, EntryScanner, HIGH, MIXED, QUOTED, Syntax, latin1, type Entry } from './scan.js';
import { Zone } from './zone.js';

export interface ParseZoneOptions {
  /** Zone apex; default the owner of the SOA record. Also the initial `$ORIGIN`. */
  origin?: string;
  /** Shown in errors; `$INCLUDE` paths resolve against its directory. */
  fileName?: string;
  /** TTL for records before any `$TTL` or explicit TTL; default 3600. */
  defaultTtl?: number;
}

/** A record read from a file, before it joins the zone. */
interface ParsedRecord {
  name: string;
  type: number;
  ttl: number;
  data: Rdata;
  file: string;
  line: number;
}

interface State {
  origin: string | undefined;
  /** `origin` in presentation and wire form when it has no escapes (the fast path needs it). */
  originText: Uint8Array | undefined;
  originWire: Uint8Array | undefined;
  /** The `origin` those two were made for. */
  originFor: string | undefined;
  ttl: number | undefined; // from $TTL
  lastTtl: number | undefined; // last explicit TTL (RFC 1035 §5.1)
  /** The previous owner as text; undefined while only `ownerBytes` holds it (see lastOwner). */
  lastOwner: string | undefined;
  /** The previous owner's canonical bytes, `ownerLen` long; -1: none (or only as text). */
  ownerBytes: Uint8Array;
  ownerLen: number;
  /** Where the fast path writes the next owner (swapped with `ownerBytes` when it is used). */
  spare: Uint8Array;
  defaultTtl: number;
  /** The zone being filled, once its apex is known. */
  zone: Zone | undefined;
  /** The fast path: records go here in compact form, not into `zone` (see parseZone). */
  builder: CompactBuilder | undefined;
  /** Records read before the apex was known. */
  pending: ParsedRecord[];
  readInclude: ((path: string) => Uint8Array) | undefined;
  depth: number;
}

function lastOwner(st: State): string | undefined {
  if (st.lastOwner === undefined && st.ownerLen >= 0) st.lastOwner = latin1(st.ownerBytes, 0, st.ownerLen);
  return st.lastOwner;
}

function setLastOwner(st: State, owner: string | undefined): void {
  st.lastOwner = owner;
  st.ownerLen = -1;
  // Canonical names are ASCII; keep the bytes too, so blank-owner records stay on the fast path.
  if (owner === undefined || owner.length > st.ownerBytes.length) return;
  for (let i = 0; i < owner.length; i++) {
    const c = owner.charCodeAt(i);
    if (c > 0x7e) return;
    st.ownerBytes[i] = c;
  }
  st.ownerLen = owner.length;
}

function parseText(src: Uint8Array, file: string, st: State): void {
  const sc = new EntryScanner(src, file);
  while (sc.next()) {
    try {
      if (!sc.blankOwner && !(sc.flags[0]! & QUOTED) && src[sc.start[0]!] === 0x24 /* $ */) {
        const e = sc.entry();
        directive(e, file, st, failAt(file, e.line));
        continue;
      }
      if (fastRecord(sc, st)) continue;
      const e = sc.entry();
      record(e, file, st, failAt(file, e.line));
    } catch (err) {
      if (err instanceof Syntax) throw err;
      throw new Syntax(file, sc.line, (err as Error).message, err);
    }
  }
}

function failAt(file: string, line: number): (msg: string, cause?: unknown) => never {
  return (msg, cause) => {
    throw new Syntax(file, line, msg, cause);
  };
}

function absolute(text: string, st: State, fail: (m: string) => never): string {
  if (text === '@') return st.origin ?? fail('"@" used but no origin is known; add $ORIGIN');
  if (st.origin) return parseName(text, st.origin);
  try {
    return labelsToText(textToLabels(text));
  } catch (err) {
    if (!/relative name/.test((err as Error).message)) throw err;
    return fail(`relative name ${JSON.stringify(text)} but no origin is known; add $ORIGIN`);
  }
}

function directive(e: Entry, file: string, st: State, fail: (m: string, cause?: unknown) => never): void {
  const [d, ...args] = e.tokens;
  const name = d!.text.toUpperCase();
  if (name === '$ORIGIN') {
    if (args.length !== 1) fail('$ORIGIN takes one domain name');
    st.origin = absolute(args[0]!.text, st, fail);
  } else if (name === '$TTL') {
    if (args.length !== 1) fail('$TTL takes one TTL');
    st.ttl = parseTtl(args[0]!.text);
  } else if (name === '$INCLUDE') {
    if (args.length < 1 || args.length > 2) fail('$INCLUDE takes a file name and an optional origin');
    if (!st.readInclude) fail('$INCLUDE needs a file: load the zone with loadZoneFile');
    if (st.depth >= 10) fail('$INCLUDE nested more than 10 deep');
    const path = resolve(dirname(file), args[0]!.text);
    let bytes: Uint8Array;
    try {
      bytes = st.readInclude!(path);
    } catch (err) {
      return fail(`cannot read $INCLUDE file ${path}: ${(err as Error).message}`, err);
    }
    // The included file may change the origin; the including file's stays (RFC 1035 §5.1).
    const savedOrigin = st.origin;
    const savedOwner = lastOwner(st);
    if (args[1]) st.origin = absolute(args[1].text, st, fail);
    st.depth++;
    try {
      parseText(bytes, path, st);
    } finally {
      st.depth--;
      st.origin = savedOrigin;
      setLastOwner(st, savedOwner);
    }
  } else {
    fail(`unknown directive ${d!.text}`);
  }
}

function record(e: Entry, file: string, st: State, fail: (m: string) => never): void {
  const toks = e.tokens;
  let i = 0;
  let owner: string;
  if (e.blankOwner) {
    owner = lastOwner(st) ?? fail('record without owner, and no previous owner');
  } else {
    const t = toks[i++]!;
    if (t.quoted) fail('owner name must not be quoted');
    owner = absolute(t.text, st, fail);
  }
  let ttl: number | undefined;
  let cls: number | undefined;
  let type: number | undefined;
  while (i < toks.length && type === undefined) {
    const t = toks[i++]!;
    if (t.quoted) fail(`expected TTL, class or type, found a quoted string`);
    if (ttl === undefined && isTtlToken(t.text)) ttl = parseTtl(t.text);
    else if (cls === undefined && classCode(t.text) !== undefined) cls = classCode(t.text);
    else {
      type = typeCode(t.text);
      if (type === undefined) fail(`unknown type ${JSON.stringify(t.text)}`);
    }
  }
  if (type === undefined) fail('record has no type');
  if (cls !== undefined && cls !== RRClass.IN) fail('only class IN is supported');
  if (ttl !== undefined) st.lastTtl = ttl;
  const data = parseRdata(type!, toks.slice(i), st.origin ?? '.');
  setLastOwner(st, owner);
  const r: ParsedRecord = {
    name: owner,
    type: type!,
    ttl: ttl ?? st.ttl ?? st.lastTtl ?? st.defaultTtl,
    data,
    file,
    line: e.line,
  };
  // Records go straight into the zone once its apex is known (from the options or the SOA).
  if (!st.zone && r.type === RRType.SOA) {
    st.zone = new Zone(owner);
    for (const p of st.pending.splice(0)) addTo(st.zone, p, st.builder);
  }
  if (st.zone) addTo(st.zone, r, st.builder);
  else st.pending.push(r);
}

const RDATA = new Uint8Array(65535);

function addTo(zone: Zone, r: ParsedRecord, builder?: CompactBuilder): void {
  try {
    if (builder) builder.add(r.name, r.type, r.ttl, RDATA, packRdata(RDATA, 0, r.type, r.data));
    else zone.addRecord(r.name, r.type, r.ttl, r.data);
  } catch (err) {
    throw new Syntax(
      r.file,
      r.line,
      `${typeName(r.type)} record at ${r.name}: ${(err as Error).message}`,
      err,
    );
  }
}

// --- The fast path: records of a common shape, from bytes to compact form with no string ---

/**
 * Reads the record at the scanner into the builder when every token has a plain shape; false
 * (nothing changed) otherwise, and the text path reads it. Never throws: anything it would
 * refuse is left to the text path, which gives the error.
 */
function fastRecord(sc: EntryScanner, st: State): boolean {
  const builder = st.builder;
  if (!builder || !st.zone) return false;
  if (st.originFor !== st.origin) setOriginBytes(st);
  const src = sc.src;
  const count = sc.count;
  let t = 0;
  let owner: Uint8Array;
  let ownerLen: number;
  if (sc.blankOwner) {
    if (st.ownerLen < 0) return false;
    owner = st.ownerBytes;
    ownerLen = st.ownerLen;
  } else {
    if (sc.flags[0] !== 0) return false;
    owner = st.spare;
    ownerLen = ownerName(src, sc.start[0]!, sc.end[0]!, st, owner);
    if (ownerLen < 0) return false;
    t = 1;
  }
  let ttl = -1;
  let cls = false;
  let type = 0;
  while (t < count && type === 0) {
    if (sc.flags[t] !== 0) return false;
    const a = sc.start[t]!;
    const b = sc.end[t]!;
    t++;
    if (ttl < 0) {
      const v = ttlValue(src, a, b);
      if (v >= 0) {
        ttl = v;
        continue;
      }
      if (v === -2) return false;
    }
    if (!cls && b - a === 2 && (src[a]! | 0x20) === 0x69 && (src[a + 1]! | 0x20) === 0x6e) {
      cls = true;
      continue;
    }
    type = fastType(src, a, b);
    if (type === 0) return false;
  }
  if (type === 0) return false;
  const len = fastRdata(sc, t, type, st);
  if (len < 0) return false;
  if (ttl >= 0) st.lastTtl = ttl;
  if (owner === st.spare) {
    st.spare = st.ownerBytes;
    st.ownerBytes = owner;
    st.ownerLen = ownerLen;
    st.lastOwner = undefined;
  }
  builder.addBytes(
    st.ownerBytes,
    0,
    ownerLen,
    type,
    ttl >= 0 ? ttl : (st.ttl ?? st.lastTtl ?? st.defaultTtl),
    RDATA,
    len,
  );
  return true;
}

/** Keeps the origin's bytes for the fast path: none when it has escapes (or is unknown). */
function setOriginBytes(st: State): void {
  st.originFor = st.origin;
  st.originText = undefined;
  st.originWire = undefined;
  const o = st.origin;
  if (o === undefined || o.includes('\\')) return;
  const text = new Uint8Array(o.length);
  for (let i = 0; i < o.length; i++) text[i] = o.charCodeAt(i);
  const wire = new Uint8Array(o === '.' ? 1 : o.length + 1);
  if (o !== '.') {
    let lenAt = 0;
    for (let i = 0; i < o.length; i++) {
      if (text[i] === 0x2e) {
        wire[lenAt] = i - lenAt;
        lenAt = i + 1;
      } else wire[i + 1] = text[i]!;
    }
  }
  st.originText = text;
  st.originWire = wire;
}

/** 1 for the bytes of plain labels: letters, digits, `-`, `_`, `*`. */
const PLAIN = new Uint8Array(256);
for (let c = 0; c < 128; c++) if (/[A-Za-z0-9_*-]/.test(String.fromCharCode(c))) PLAIN[c] = 1;

/** Checks plain labels of 1-63 bytes at a..b (an optional final dot); false otherwise. */
function plainLabels(src: Uint8Array, a: number, b: number): boolean {
  let label = 0;
  for (let i = a; i < b; i++) {
    const c = src[i]!;
    if (c === 0x2e) {
      if (label === 0) return false;
      label = 0;
    } else if (PLAIN[c] === 1) {
      if (++label > 63) return false;
    } else return false;
  }
  return true;
}

/**
 * Writes the canonical owner of a plain owner token into `out`, as `absolute` makes it; its
 * length, or -1 when the text path must read it.
 */
function ownerName(src: Uint8Array, a: number, b: number, st: State, out: Uint8Array): number {
  const o = st.originText;
  if (b - a === 1 && src[a] === 0x40) {
    if (!o) return -1;
    out.set(o);
    return o.length;
  }
  if (!plainLabels(src, a, b)) return -1;
  const isAbsolute = src[b - 1] === 0x2e;
  let n = b - a;
  if (!isAbsolute) {
    if (!o) return -1;
    n += o.length === 1 ? 1 : 1 + o.length;
  }
  if (n > 254) return -1; // 255 octets in wire form
  for (let i = a; i < b; i++) out[i - a] = src[i]!;
  if (!isAbsolute) {
    out[b - a] = 0x2e;
    if (o!.length > 1) out.set(o!, b - a + 1);
  }
  return n;
}

/**
 * Writes a plain rdata name token as uncompressed wire at `off` of RDATA, completed with the
 * origin as `parseRdata` does (the root when none is known); the new offset, or -1.
 */
function rdataName(src: Uint8Array, a: number, b: number, off: number, st: State): number {
  const unknownOrigin = st.origin === undefined;
  const ow = st.originWire;
  if (!unknownOrigin && !ow) return -1;
  if (b - a === 1 && src[a] === 0x40) {
    if (unknownOrigin) {
      RDATA[off] = 0;
      return off + 1;
    }
    RDATA.set(ow!, off);
    return off + ow!.length;
  }
  if (!plainLabels(src, a, b)) return -1;
  const isAbsolute = src[b - 1] === 0x2e;
  const tail = isAbsolute || unknownOrigin ? 1 : ow!.length;
  const wireLen = (isAbsolute ? b - a : b - a + 1) + tail;
  if (wireLen > 255) return -1;
  let lenAt = off;
  let p = off + 1;
  for (let i = a; i < b; i++) {
    const c = src[i]!;
    if (c === 0x2e) {
      RDATA[lenAt] = p - lenAt - 1;
      lenAt = p;
    } else RDATA[p] = c;
    p++;
  }
  if (!isAbsolute) RDATA[lenAt] = p - lenAt - 1;
  else p--; // the final dot's length byte is the root's
  if (isAbsolute || unknownOrigin) RDATA[p++] = 0;
  else {
    RDATA.set(ow!, p);
    p += ow!.length;
  }
  return p;
}

/** TTL of a token as `parseTtl` reads it (seconds or units); -1: no TTL, -2: leave it to parseTtl. */
function ttlValue(src: Uint8Array, a: number, b: number): number {
  let total = 0;
  let v = 0;
  let digits = 0;
  let units = false;
  for (let i = a; i < b; i++) {
    const c = src[i]!;
    if (c >= 0x30 && c <= 0x39) {
      if (++digits > 10) return -2;
      v = v * 10 + (c - 0x30);
      continue;
    }
    if (digits === 0) return -1;
    const unit = unitSeconds(c | 0x20);
    if (unit === 0) return -1;
    total += v * unit;
    v = 0;
    digits = 0;
    units = true;
  }
  if (digits > 0) {
    if (units) return -1; // `1h30`: not a TTL
    return v > 0x7fffffff ? -2 : v;
  }
  return units && total <= 0x7fffffff ? total : units ? -2 : -1;
}

function unitSeconds(c: number): number {
  switch (c) {
    case 0x73: // s
      return 1;
    case 0x6d: // m
      return 60;
    case 0x68: // h
      return 3600;
    case 0x64: // d
      return 86400;
    case 0x77: // w
      return 604800;
    default:
      return 0;
  }
}

/** The type of a token the fast path encodes (A, AAAA, NS, CNAME, PTR, MX, TXT, SRV); 0 otherwise. */
function fastType(src: Uint8Array, a: number, b: number): number {
  // Bytes as big-endian numbers, ASCII letters upper-cased (`& 0xdf`).
  const n = b - a;
  if (n > 5) return 0;
  let v = 0;
  for (let i = a; i < b; i++) v = v * 256 + (src[i]! & 0xdf);
  switch (n) {
    case 1:
      return v === 0x41 ? RRType.A : 0;
    case 2:
      return v === 0x4e53 ? RRType.NS : v === 0x4d58 ? RRType.MX : 0;
    case 3:
      return v === 0x505452 ? RRType.PTR : v === 0x545854 ? RRType.TXT : v === 0x535256 ? RRType.SRV : 0;
    case 4:
      return v === 0x41414141 ? RRType.AAAA : 0;
    default:
      return v === 0x434e414d45 ? RRType.CNAME : 0;
  }
}

/**
 * Writes the wire rdata of tokens `t`.. into RDATA as `packRdata(parseRdata(…))` would; its
 * length, or -1 when the text path must read it.
 */
function fastRdata(sc: EntryScanner, t: number, type: number, st: State): number {
  const src = sc.src;
  const n = sc.count - t;
  const f = sc.flags;
  switch (type) {
    case RRType.A:
      return n === 1 && f[t] === 0 ? ipv4(src, sc.start[t]!, sc.end[t]!) : -1;
    case RRType.AAAA: {
      if (n !== 1 || f[t] !== 0) return -1;
      let bytes: Uint8Array;
      try {
        bytes = parseIPv6(latin1(src, sc.start[t]!, sc.end[t]!));
      } catch {
        return -1;
      }
      RDATA.set(bytes);
      return 16;
    }
    case RRType.NS:
    case RRType.CNAME:
    case RRType.PTR:
      return n === 1 && f[t] === 0 ? rdataName(src, sc.start[t]!, sc.end[t]!, 0, st) : -1;
    case RRType.MX: {
      if (n !== 2 || f[t] !== 0 || f[t + 1] !== 0 || !u16(src, sc.start[t]!, sc.end[t]!, 0)) return -1;
      return rdataName(src, sc.start[t + 1]!, sc.end[t + 1]!, 2, st);
    }
    case RRType.SRV: {
      if (n !== 4) return -1;
      for (let k = 0; k < 3; k++)
        if (f[t + k] !== 0 || !u16(src, sc.start[t + k]!, sc.end[t + k]!, 2 * k)) return -1;
      return f[t + 3] === 0 ? rdataName(src, sc.start[t + 3]!, sc.end[t + 3]!, 6, st) : -1;
    }
    case RRType.TXT: {
      if (n === 0) return -1;
      let off = 0;
      for (let k = t; k < sc.count; k++) {
        if (sc.flags[k]! & (MIXED | HIGH) || off + 256 > RDATA.length) return -1;
        const end = charString(src, sc.contentStart(k), sc.contentEnd(k), off, sc.flags[k]! & ESCAPED);
        if (end < 0) return -1;
        off = end;
      }
      return off;
    }
    default:
      return -1;
  }
}

/** Dotted-quad IPv4 into RDATA as `parseIPv4` reads it; 4, or -1. */
function ipv4(src: Uint8Array, a: number, b: number): number {
  let part = 0;
  let digits = 0;
  let v = 0;
  for (let i = a; i <= b; i++) {
    const c = i < b ? src[i]! : 0x2e;
    if (c >= 0x30 && c <= 0x39 && digits < 3) {
      v = v * 10 + (c - 0x30);
      digits++;
    } else if (c === 0x2e && digits > 0 && v <= 255 && part < 4) {
      RDATA[part++] = v;
      v = 0;
      digits = 0;
    } else return -1;
  }
  return part === 4 ? 4 : -1;
}

/** A decimal number up to 65535 into RDATA at `off` as `parseUint` reads it; false otherwise. */
function u16(src: Uint8Array, a: number, b: number, off: number): boolean {
  if (b === a || b - a > 5) return false;
  let v = 0;
  for (let i = a; i < b; i++) {
    const c = src[i]!;
    if (c < 0x30 || c > 0x39) return false;
    v = v * 10 + (c - 0x30);
  }
  if (v > 0xffff) return false;
  RDATA[off] = v >> 8;
  RDATA[off + 1] = v & 0xff;
  return true;
}

/**
 * An ASCII character-string (content a..b, `\X` and `\DDD` escapes as `unescapeBytes` reads
 * them) into RDATA at `off` with its length byte; the new offset, or -1.
 */
function charString(src: Uint8Array, a: number, b: number, off: number, escaped: number): number {
  let p = off + 1;
  if (!escaped) {
    if (b - a > 255) return -1;
    for (let i = a; i < b; i++) RDATA[p++] = src[i]!;
  } else {
    for (let i = a; i < b; i++) {
      let c = src[i]!;
      if (c === 0x5c) {
        const d1 = src[i + 1]!;
        if (i + 3 < b && isDigit(d1) && isDigit(src[i + 2]!) && isDigit(src[i + 3]!)) {
          c = (d1 - 0x30) * 100 + (src[i + 2]! - 0x30) * 10 + (src[i + 3]! - 0x30);
          if (c > 255) return -1;
          i += 3;
        } else c = src[++i]!;
      }
      if (p - off > 255) return -1;
      RDATA[p++] = c;
    }
  }
  RDATA[off] = p - off - 1;
  return p;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** The zone read; undefined when the fast path's data breaks a rule (parseZone reads it again). */
function finish(st: State, file: string): Zone | undefined {
  let zone = st.zone;
  if (!zone) throw new Syntax(file, 1, 'zone has no SOA record (and no origin was given)');
  if (st.builder) {
    zone = Zone.fromBuilder(zone.origin, st.builder);
    if (!zone) return undefined;
  }
  if (!zone.nodeByKey(zone.originKey)?.rrsets.has(RRType.SOA)) {
    throw new Syntax(file, 1, `zone ${zone.origin} has no SOA record at its apex`);
  }
  if (!st.builder) zone.compact(); // one buffer instead of an object per record (compact.ts)
  return zone;
}

function initialState(
  opts: ParseZoneOptions,
  readInclude: ((path: string) => Uint8Array) | undefined,
  fast: boolean,
  size: number,
): State {
  return {
    origin: opts.origin ? parseName(opts.origin) : undefined,
    originText: undefined,
    originWire: undefined,
    originFor: undefined,
    ttl: undefined,
    lastTtl: undefined,
    lastOwner: undefined,
    ownerBytes: new Uint8Array(1024),
    ownerLen: -1,
    spare: new Uint8Array(1024),
    defaultTtl: opts.defaultTtl ?? 3600,
    zone: opts.origin ? new Zone(opts.origin) : undefined,
    builder: fast ? new CompactBuilder(Math.floor(size / 24)) : undefined, // ~24 bytes a record
    pending: [],
    readInclude,
    depth: 0,
  };
}

/**
 * Parses a master file (text, or its bytes as read from disk: UTF-8) into a zone. `$INCLUDE`
 * works only with `fileName` (relative to it).
 *
 * Records are written straight into the zone's compact form (compact.ts), with no object per
 * record. Syntax errors are reported as they are met; data that breaks a zone rule (a CNAME
 * beside other data, a second SOA, …) is only detected there, so such a file is read a second
 * time through `Zone.addRecord`, which names the offending line.
 */
export function parseZone(text: string | Uint8Array, opts: ParseZoneOptions = {}): Zone {
  const file = opts.fileName ?? '<zone>';
  const src = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  const read = opts.fileName ? (p: string) => readFileSync(p) : undefined;
  const st = initialState(opts, read, true, src.length);
  parseText(src, file, st);
  return finish(st, file) ?? parseZoneByRecord(src, opts);
}

/**
 * Parses a master file record by record through `Zone.addRecord`, with no fast path: slower,
 * but it names the line of a record that breaks a zone rule (parseZone's second reading).
 */
export function parseZoneByRecord(text: string | Uint8Array, opts: ParseZoneOptions = {}): Zone {
  const file = opts.fileName ?? '<zone>';
  const src = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  const read = opts.fileName ? (p: string) => readFileSync(p) : undefined;
  const st = initialState(opts, read, false, 0);
  parseText(src, file, st);
  const z = finish(st, file);
  if (!z) throw new FerryError('ZONE_SYNTAX', `${file}: cannot be read`); // not reached: no builder
  return z;
}

/** Reads a zone file; `$INCLUDE` paths are relative to the including file. */
export async function loadZoneFile(
  path: string,
  opts: { origin?: string; defaultTtl?: number } = {},
): Promise<Zone> {
  const file = resolve(path);
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new FerryError('ZONE_SYNTAX', `${file}: cannot read: ${(err as Error).message}`, { cause: err });
  }
  return parseZone(bytes, { ...opts, fileName: file });
}
