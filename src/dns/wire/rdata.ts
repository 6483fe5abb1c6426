/**
 * Rdata in its three forms, driven by the field layouts of the type table (`types.ts`): wire
 * (pack/unpack, RFC 1035 §3.3 and each type's RFC), parsed values, and presentation text
 * (RFC 1035 §5.1; RFC 3597 §5 `\# len hex` for unknown types and accepted for known ones).
 */
import {
  badText,
  malformed,
  need,
  nameKey,
  packName,
  parseName,
  room,
  unpackName,
  type Compressor,
} from './name.js';
import {
  formatIPv4,
  formatIPv6,
  parseBase64,
  parseHex,
  parseIPv4,
  parseIPv6,
  parseTtl,
  parseUint,
  quoteBytes,
  unescapeBytes,
  type Token,
} from './text.js';
import { rdataFields, typeName } from './types.js';

/** One SvcParam (RFC 9460 §2.2): key number and wire value. */
export interface SvcParam {
  key: number;
  value: Uint8Array;
}

/**
 * One parsed rdata field: numbers for integers, strings for addresses (canonical text) and names
 * (canonical absolute), bytes for character-strings and binary, arrays for TXT and SvcParams.
 */
export type RdataValue = number | string | Uint8Array | Uint8Array[] | SvcParam[];

/** Parsed rdata: one value per field of the type's layout. */
export type Rdata = RdataValue[];

/**
 * Packs rdata (without RDLENGTH) at `off`. `cname` fields use `comp`; `canonical` lowercases all
 * names (for duplicate detection, RFC 4034 §6.2 style). Returns the new offset.
 */
export function packRdata(
  buf: Uint8Array,
  off: number,
  type: number,
  data: Rdata,
  comp?: Compressor,
  canonical = false,
): number {
  const fields = rdataFields(type);
  if (data.length !== fields.length)
    throw badText(`${typeName(type)} rdata needs ${fields.length} fields, got ${data.length}`);
  for (let i = 0; i < fields.length; i++) {
    const v = data[i]!;
    switch (fields[i]!) {
      case 'u8':
        room(buf, off, 1);
        buf[off++] = v as number;
        break;
      case 'u16':
        room(buf, off, 2);
        buf[off++] = (v as number) >> 8;
        buf[off++] = (v as number) & 0xff;
        break;
      case 'u32':
      case 'ttl':
        room(buf, off, 4);
        new DataView(buf.buffer, buf.byteOffset, buf.byteLength).setUint32(off, v as number);
        off += 4;
        break;
      case 'ipv4':
        off = packBytes(buf, off, parseIPv4(v as string));
        break;
      case 'ipv6':
        off = packBytes(buf, off, parseIPv6(v as string));
        break;
      case 'cname':
        off = packName(
          buf,
          off,
          canonical ? nameKey(v as string) : (v as string),
          canonical ? undefined : comp,
        );
        break;
      case 'name':
        off = packName(buf, off, canonical ? nameKey(v as string) : (v as string));
        break;
      case 'str':
      case 'caatag':
        off = packCharString(buf, off, v as Uint8Array);
        break;
      case 'strs':
        for (const s of v as Uint8Array[]) off = packCharString(buf, off, s);
        break;
      case 'hex':
      case 'b64':
      case 'caavalue':
      case 'opaque':
        off = packBytes(buf, off, v as Uint8Array);
        break;
      case 'svcparams':
        for (const p of v as SvcParam[]) {
          room(buf, off, 4);
          buf[off++] = p.key >> 8;
          buf[off++] = p.key & 0xff;
          buf[off++] = p.value.length >> 8;
          buf[off++] = p.value.length & 0xff;
          off = packBytes(buf, off, p.value);
        }
        break;
    }
  }
  return off;
}

function packBytes(buf: Uint8Array, off: number, bytes: Uint8Array): number {
  room(buf, off, bytes.length);
  buf.set(bytes, off);
  return off + bytes.length;
}

function packCharString(buf: Uint8Array, off: number, bytes: Uint8Array): number {
  if (bytes.length > 255) throw badText('character-string longer than 255 octets');
  room(buf, off, bytes.length + 1);
  buf[off++] = bytes.length;
  buf.set(bytes, off);
  return off + bytes.length;
}

/**
 * Unpacks `len` bytes of rdata at `off` of message `buf` (names may point earlier in `buf`).
 * Throws DNS_MALFORMED unless the fields use exactly `len` bytes.
 */
export function unpackRdata(buf: Uint8Array, off: number, len: number, type: number): Rdata {
  need(buf, off, len, 'rdata');
  const end = off + len;
  const fields = rdataFields(type);
  const out: Rdata = [];
  const within = (n: number, what: string) => {
    if (off + n > end) throw malformed(`truncated ${what} in ${typeName(type)} rdata`);
  };
  for (const f of fields) {
    switch (f) {
      case 'u8':
        within(1, f);
        out.push(buf[off++]!);
        break;
      case 'u16':
        within(2, f);
        out.push((buf[off]! << 8) | buf[off + 1]!);
        off += 2;
        break;
      case 'u32':
      case 'ttl':
        within(4, f);
        out.push(new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(off));
        off += 4;
        break;
      case 'ipv4':
        within(4, f);
        out.push(formatIPv4(buf, off));
        off += 4;
        break;
      case 'ipv6':
        within(16, f);
        out.push(formatIPv6(buf, off));
        off += 16;
        break;
      case 'cname':
      case 'name': {
        const [name, next] = unpackName(buf, off);
        if (next > end) throw malformed(`name overruns ${typeName(type)} rdata`);
        out.push(name);
        off = next;
        break;
      }
      case 'str':
      case 'caatag': {
        within(1, f);
        const n = buf[off]!;
        within(1 + n, f);
        if (f === 'caatag' && n === 0) throw malformed('empty CAA tag');
        out.push(Buffer.from(buf.subarray(off + 1, off + 1 + n)));
        off += 1 + n;
        break;
      }
      case 'strs': {
        const list: Uint8Array[] = [];
        do {
          within(1, 'character-string');
          const n = buf[off]!;
          within(1 + n, 'character-string');
          list.push(Buffer.from(buf.subarray(off + 1, off + 1 + n)));
          off += 1 + n;
        } while (off < end);
        out.push(list);
        break;
      }
      case 'hex':
      case 'b64':
      case 'caavalue':
      case 'opaque':
        out.push(Buffer.from(buf.subarray(off, end)));
        off = end;
        break;
      case 'svcparams': {
        const params: SvcParam[] = [];
        let last = -1;
        while (off < end) {
          within(4, 'SvcParam');
          const key = (buf[off]! << 8) | buf[off + 1]!;
          const n = (buf[off + 2]! << 8) | buf[off + 3]!;
          within(4 + n, 'SvcParam value');
          if (key <= last) throw malformed('SvcParam keys not in strictly increasing order');
          last = key;
          const value = Buffer.from(buf.subarray(off + 4, off + 4 + n));
          checkSvcValue(key, value, malformed);
          params.push({ key, value });
          off += 4 + n;
        }
        out.push(params);
        break;
      }
    }
  }
  if (off !== end) throw malformed(`${end - off} trailing bytes in ${typeName(type)} rdata`);
  return out;
}

const SCRATCH = new Uint8Array(65535);

/** Uncompressed wire form of rdata (a copy). */
export function rdataToWire(type: number, data: Rdata): Buffer {
  const end = packRdata(SCRATCH, 0, type, data);
  return Buffer.from(SCRATCH.subarray(0, end));
}

/** Identity of rdata within an RRset: canonical wire form as hex (duplicates compare equal). */
export function rdataKey(type: number, data: Rdata): string {
  const end = packRdata(SCRATCH, 0, type, data, undefined, true);
  return Buffer.from(SCRATCH.subarray(0, end)).toString('hex');
}

/** Parses rdata presentation tokens; relative names complete with `origin`, `@` is the origin. */
export function parseRdata(type: number, tokens: readonly Token[], origin = '.'): Rdata {
  const first = tokens[0];
  if (first && !first.quoted && first.text === '\\#') return parseGeneric(type, tokens);
  const fields = rdataFields(type);
  if (fields[0] === 'opaque') throw badText(`unknown type ${typeName(type)} needs RFC 3597 \\# rdata`);
  let i = 0;
  const next = (what: string): Token => {
    const t = tokens[i++];
    if (!t) throw badText(`${typeName(type)} rdata is missing its ${what}`);
    return t;
  };
  const rest = (what: string): string => {
    if (i >= tokens.length) throw badText(`${typeName(type)} rdata is missing its ${what}`);
    const s = tokens
      .slice(i)
      .map((t) => t.text)
      .join('');
    i = tokens.length;
    return s;
  };
  const out: Rdata = [];
  for (const f of fields) {
    switch (f) {
      case 'u8':
        out.push(parseUint(next('number').text, 0xff, 'number'));
        break;
      case 'u16':
        out.push(parseUint(next('number').text, 0xffff, 'number'));
        break;
      case 'u32':
        out.push(parseUint(next('number').text, 0xffffffff, 'number'));
        break;
      case 'ttl':
        out.push(parseTtl(next('time value').text, 'time value'));
        break;
      case 'ipv4':
        out.push(formatIPv4(parseIPv4(next('address').text)));
        break;
      case 'ipv6':
        out.push(formatIPv6(parseIPv6(next('address').text)));
        break;
      case 'cname':
      case 'name': {
        const t = next('domain name');
        if (t.quoted) throw badText(`domain name must not be quoted: "${t.text}"`);
        out.push(t.text === '@' ? parseName(origin) : parseName(t.text, origin));
        break;
      }
      case 'str':
        out.push(charString(next('character-string').text));
        break;
      case 'strs': {
        if (i >= tokens.length) throw badText(`${typeName(type)} rdata needs at least one character-string`);
        const list: Uint8Array[] = [];
        while (i < tokens.length) list.push(charString(tokens[i++]!.text));
        out.push(list);
        break;
      }
      case 'hex':
        out.push(parseHex(rest('hex data'), typeName(type)));
        break;
      case 'b64':
        out.push(parseBase64(rest('base64 data'), typeName(type)));
        break;
      case 'caatag': {
        const t = next('tag').text;
        if (!/^[A-Za-z0-9]{1,255}$/.test(t)) throw badText(`bad CAA tag ${JSON.stringify(t)}`);
        out.push(Buffer.from(t, 'ascii'));
        break;
      }
      case 'caavalue':
        out.push(unescapeBytes(next('value').text));
        break;
      case 'svcparams':
        out.push(parseSvcParams(tokens.slice(i)));
        i = tokens.length;
        break;
      case 'opaque':
        break;
    }
  }
  if (i < tokens.length)
    throw badText(`unexpected ${JSON.stringify(tokens[i]!.text)} after ${typeName(type)} rdata`);
  return out.slice(); // an exact-size copy: zones keep millions of these
}

function charString(text: string): Uint8Array {
  const b = unescapeBytes(text);
  if (b.length > 255) throw badText('character-string longer than 255 octets');
  return b;
}

// RFC 3597 §5: `\# <length> <hex>...`; for known types the bytes are then unpacked.
function parseGeneric(type: number, tokens: readonly Token[]): Rdata {
  const lenTok = tokens[1];
  if (!lenTok) throw badText('\\# needs a length');
  const len = parseUint(lenTok.text, 0xffff, 'rdata length');
  const bytes = parseHex(
    tokens
      .slice(2)
      .map((t) => t.text)
      .join(''),
    '\\# rdata',
  );
  if (bytes.length !== len) throw badText(`\\# length ${len} does not match ${bytes.length} bytes of data`);
  if (rdataFields(type)[0] === 'opaque') return [Buffer.from(bytes)];
  try {
    return unpackRdata(bytes, 0, bytes.length, type);
  } catch (err) {
    throw badText(`\\# data is not valid ${typeName(type)} rdata: ${(err as Error).message}`);
  }
}

/** Presentation text of rdata (RFC 1035 §5.1 and each type's RFC). */
export function formatRdata(type: number, data: Rdata): string {
  const fields = rdataFields(type);
  const parts: string[] = [];
  for (let i = 0; i < fields.length; i++) {
    const v = data[i]!;
    switch (fields[i]!) {
      case 'u8':
      case 'u16':
      case 'u32':
      case 'ttl':
        parts.push(String(v));
        break;
      case 'ipv4':
      case 'ipv6':
      case 'cname':
      case 'name':
        parts.push(v as string);
        break;
      case 'str':
      case 'caavalue':
        parts.push(quoteBytes(v as Uint8Array));
        break;
      case 'caatag':
        parts.push(Buffer.from(v as Uint8Array).toString('latin1'));
        break;
      case 'strs':
        parts.push((v as Uint8Array[]).map(quoteBytes).join(' '));
        break;
      case 'hex':
      case 'b64':
        // An empty blob has no presentation in these types: fall back to the generic form.
        if ((v as Uint8Array).length === 0) return formatGeneric(rdataToWire(type, data));
        if (fields[i] === 'hex')
          parts.push(
            Buffer.from(v as Uint8Array)
              .toString('hex')
              .toUpperCase(),
          );
        else parts.push(Buffer.from(v as Uint8Array).toString('base64'));
        break;
      case 'svcparams':
        for (const p of v as SvcParam[]) parts.push(formatSvcParam(p));
        break;
      case 'opaque':
        return formatGeneric(v as Uint8Array);
    }
  }
  return parts.join(' ');
}

/** RFC 3597 §5 generic rdata text. */
export function formatGeneric(bytes: Uint8Array): string {
  return bytes.length === 0
    ? '\\# 0'
    : `\\# ${bytes.length} ${Buffer.from(bytes).toString('hex').toUpperCase()}`;
}

// --- SVCB/HTTPS SvcParams (RFC 9460 §2.1, §7) ---

const SVC_KEYS = ['mandatory', 'alpn', 'no-default-alpn', 'port', 'ipv4hint', 'ech', 'ipv6hint'];

function svcKeyName(key: number): string {
  return SVC_KEYS[key] ?? `key${key}`;
}

function svcKeyCode(name: string): number {
  const known = SVC_KEYS.indexOf(name.toLowerCase());
  if (known >= 0) return known;
  const m = /^key(\d{1,5})$/i.exec(name);
  if (!m || Number(m[1]) > 65534) throw badText(`unknown SvcParamKey ${JSON.stringify(name)}`);
  return Number(m[1]);
}

// Validates a SvcParam value's wire form; `fail` builds the error to throw.
function checkSvcValue(key: number, v: Uint8Array, fail: (m: string) => Error): void {
  const name = svcKeyName(key);
  switch (key) {
    case 0:
      if (v.length === 0 || v.length % 2 !== 0) throw fail(`bad ${name} value length`);
      break;
    case 1:
      if (v.length === 0) throw fail('empty alpn');
      for (let i = 0; i < v.length;) {
        const n = v[i]!;
        if (n === 0 || i + 1 + n > v.length) throw fail('bad alpn value');
        i += 1 + n;
      }
      break;
    case 2:
      if (v.length !== 0) throw fail('no-default-alpn takes no value');
      break;
    case 3:
      if (v.length !== 2) throw fail('port value must be 2 octets');
      break;
    case 4:
      if (v.length === 0 || v.length % 4 !== 0) throw fail('bad ipv4hint length');
      break;
    case 6:
      if (v.length === 0 || v.length % 16 !== 0) throw fail('bad ipv6hint length');
      break;
    case 65535:
      throw fail('SvcParamKey 65535 is reserved');
  }
}

// Splits a value-list (RFC 9460 Appendix A.1) on commas not escaped by a backslash.
function splitValueList(bytes: Uint8Array): Uint8Array[] {
  const items: Uint8Array[] = [];
  let cur: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b === 0x5c && i + 1 < bytes.length) cur.push(bytes[++i]!);
    else if (b === 0x2c) {
      items.push(Uint8Array.from(cur));
      cur = [];
    } else cur.push(b);
  }
  items.push(Uint8Array.from(cur));
  return items;
}

function parseSvcParams(tokens: readonly Token[]): SvcParam[] {
  const params: SvcParam[] = [];
  for (const t of tokens) {
    const eq = t.text.indexOf('=');
    const keyText = eq < 0 ? t.text : t.text.slice(0, eq);
    const raw = eq < 0 ? undefined : unescapeBytes(t.text.slice(eq + 1));
    const key = svcKeyCode(keyText);
    const str = raw ? Buffer.from(raw).toString('latin1') : '';
    let value: Uint8Array;
    switch (key) {
      case 0:
        value = Buffer.concat(
          str.split(',').map((k) => {
            const b = Buffer.alloc(2);
            b.writeUInt16BE(svcKeyCode(k));
            return b;
          }),
        );
        break;
      case 1: {
        if (!raw) throw badText('alpn needs a value');
        const items = splitValueList(raw);
        value = Buffer.concat(items.flatMap((it) => [Buffer.from([it.length]), Buffer.from(it)]));
        if (items.some((it) => it.length === 0 || it.length > 255)) throw badText('bad alpn item');
        break;
      }
      case 2:
        if (raw && raw.length > 0) throw badText('no-default-alpn takes no value');
        value = new Uint8Array(0);
        break;
      case 3:
        value = Buffer.alloc(2);
        (value as Buffer).writeUInt16BE(parseUint(str, 0xffff, 'port'));
        break;
      case 4:
        value = Buffer.concat(str.split(',').map((a) => parseIPv4(a)));
        break;
      case 6:
        value = Buffer.concat(str.split(',').map((a) => parseIPv6(a)));
        break;
      case 5:
        value = parseBase64(str, 'ech');
        break;
      default:
        value = raw ?? new Uint8Array(0);
    }
    checkSvcValue(key, value, badText);
    params.push({ key, value: Buffer.from(value) });
  }
  params.sort((a, b) => a.key - b.key);
  for (let i = 1; i < params.length; i++) {
    if (params[i]!.key === params[i - 1]!.key)
      throw badText(`duplicate SvcParamKey ${svcKeyName(params[i]!.key)}`);
  }
  return params;
}

const SAFE_VALUE = /^[A-Za-z0-9!#%&'*+\-./:<=>?[\]^_`{|}~]*$/;

function presentValue(bytes: Uint8Array): string {
  const s = Buffer.from(bytes).toString('latin1');
  return SAFE_VALUE.test(s) ? s : quoteBytes(bytes);
}

function formatSvcParam(p: SvcParam): string {
  const name = svcKeyName(p.key);
  const v = p.value;
  switch (p.key) {
    case 0: {
      const keys: string[] = [];
      for (let i = 0; i + 1 < v.length; i += 2) keys.push(svcKeyName((v[i]! << 8) | v[i + 1]!));
      return `${name}=${keys.join(',')}`;
    }
    case 1: {
      const items: number[] = [];
      for (let i = 0; i < v.length;) {
        const n = v[i]!;
        if (items.length > 0) items.push(0x2c);
        for (const b of v.subarray(i + 1, i + 1 + n)) {
          if (b === 0x2c || b === 0x5c) items.push(0x5c);
          items.push(b);
        }
        i += 1 + n;
      }
      return `${name}=${presentValue(Uint8Array.from(items))}`;
    }
    case 2:
      return name;
    case 3:
      return `${name}=${(v[0]! << 8) | v[1]!}`;
    case 4: {
      const a: string[] = [];
      for (let i = 0; i < v.length; i += 4) a.push(formatIPv4(v, i));
      return `${name}=${a.join(',')}`;
    }
    case 6: {
      const a: string[] = [];
      for (let i = 0; i < v.length; i += 16) a.push(formatIPv6(v, i));
      return `${name}=${a.join(',')}`;
    }
    case 5:
      return `${name}=${Buffer.from(v).toString('base64')}`;
    default:
      return v.length === 0 ? name : `${name}=${presentValue(v)}`;
  }
}
