/**
 * Presentation-format helpers shared by rdata text and zone files: tokens, character-strings
 * (RFC 1035 §5.1), TTLs with units, addresses (RFC 4291 §2.2, RFC 5952 §4).
 */
import { badText } from './name.js';

/** One whitespace-separated token; `text` keeps backslash escapes, quotes are removed. */
export interface Token {
  text: string;
  quoted: boolean;
}

/**
 * Splits one line of rdata into tokens. Quotes group text (also mid-token, as in SVCB
 * `alpn="h2,h3"`), backslash escapes the next character. Parentheses and comments are the zone
 * parser's business and are not special here.
 */
export function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    let tok = '';
    let quoted = false;
    let inQuote = false;
    let started = false;
    while (i < text.length) {
      const d = text[i]!;
      if (d === '\\') {
        if (i + 1 >= text.length) throw badText('dangling backslash');
        tok += d + text[i + 1];
        i += 2;
      } else if (d === '"') {
        if (!started) quoted = true;
        inQuote = !inQuote;
        i++;
      } else if (!inQuote && (d === ' ' || d === '\t' || d === '\n' || d === '\r')) break;
      else {
        tok += d;
        i++;
      }
      started = true;
    }
    if (inQuote) throw badText('unterminated quoted string');
    out.push({ text: tok, quoted });
  }
  return out;
}

/** Bytes of a character-string token, unescaping `\X` and `\DDD` (RFC 1035 §5.1). */
export function unescapeBytes(text: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5c) {
      const d = /^\d{3}/.exec(text.slice(i + 1, i + 4));
      if (d) {
        const v = Number(d[0]);
        if (v > 255) throw badText(`bad escape \\${d[0]}`);
        out.push(v);
        i += 3;
      } else {
        if (i + 1 >= text.length) throw badText('dangling backslash');
        out.push(text.charCodeAt(++i) & 0xff);
      }
    } else if (c > 0x7f) {
      for (const b of Buffer.from(text[i]!, 'utf8')) out.push(b);
    } else out.push(c);
  }
  return Buffer.from(out);
}

/** Quoted presentation of a character-string: `"` and `\` escaped, non-printables as `\DDD`. */
export function quoteBytes(bytes: Uint8Array): string {
  let s = '"';
  for (const b of bytes) {
    if (b === 0x22 || b === 0x5c) s += '\\' + String.fromCharCode(b);
    else if (b < 0x20 || b >= 0x7f) s += '\\' + String(b).padStart(3, '0');
    else s += String.fromCharCode(b);
  }
  return s + '"';
}

/** Parses an unsigned integer token with an upper bound. */
export function parseUint(text: string, max: number, what: string): number {
  if (!/^\d+$/.test(text)) throw badText(`bad ${what} ${JSON.stringify(text)}: expected a number`);
  const n = Number(text);
  if (n > max) throw badText(`${what} ${text} is larger than ${max}`);
  return n;
}

const TTL_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Parses a TTL: seconds, or BIND-style units (`1h30m`, `2d`); at most 2^31-1 (RFC 2181 §8). */
export function parseTtl(text: string, what = 'TTL'): number {
  if (/^\d+$/.test(text)) return parseUint(text, 0x7fffffff, what);
  if (!/^(\d+[smhdw])+$/i.test(text)) throw badText(`bad ${what} ${JSON.stringify(text)}`);
  let total = 0;
  for (const m of text.matchAll(/(\d+)([smhdw])/gi)) total += Number(m[1]) * TTL_UNITS[m[2]!.toLowerCase()]!;
  if (total > 0x7fffffff) throw badText(`${what} ${text} is larger than 2147483647`);
  return total;
}

/** True when the token looks like a TTL (used to tell TTL from class/type in zone files). */
export function isTtlToken(text: string): boolean {
  return /^\d+$/.test(text) || /^(\d+[smhdw])+$/i.test(text);
}

/** Parses dotted-quad IPv4 into 4 bytes. */
export function parseIPv4(text: string): Uint8Array {
  // By hand rather than by a regular expression: a big zone file has millions of these.
  const out = new Uint8Array(4);
  let part = 0;
  let digits = 0;
  let v = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x2e;
    if (c >= 0x30 && c <= 0x39 && digits < 3) {
      v = v * 10 + (c - 0x30);
      digits++;
    } else if (c === 0x2e && digits > 0 && v <= 255 && part < 4) {
      out[part++] = v;
      v = 0;
      digits = 0;
    } else throw badText(`bad IPv4 address ${JSON.stringify(text)}`);
  }
  if (part !== 4) throw badText(`bad IPv4 address ${JSON.stringify(text)}`);
  return out;
}

/** Dotted-quad text of 4 bytes at `off`. */
export function formatIPv4(b: Uint8Array, off = 0): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** Parses IPv6 text (RFC 4291 §2.2, with `::` and an IPv4 tail) into 16 bytes. */
export function parseIPv6(text: string): Uint8Array {
  const bad = () => badText(`bad IPv6 address ${JSON.stringify(text)}`);
  if (!/^[0-9a-fA-F:.]+$/.test(text)) throw bad();
  const halves = text.split('::');
  if (halves.length > 2) throw bad();
  const groups = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    const items = part.split(':');
    items.forEach((item, idx) => {
      if (item.includes('.')) {
        if (idx !== items.length - 1) throw bad();
        const v4 = parseIPv4(item);
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(item)) throw bad();
        out.push(parseInt(item, 16));
      }
    });
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  let all: number[];
  if (halves.length === 2) {
    if (head.length + tail.length > 7) throw bad();
    all = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    if (head.length !== 8) throw bad();
    all = head;
  }
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  return out;
}

/** RFC 5952 §4 text of 16 bytes at `off`: lowercase, longest zero run (≥ 2 groups) as `::`. */
export function formatIPv6(b: Uint8Array, off = 0): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[off + i * 2]! << 8) | b[off + i * 2 + 1]!);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (arr: number[]) => arr.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

/** Decodes strict hex (whitespace already removed). */
export function parseHex(text: string, what: string): Uint8Array {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) throw badText(`bad hex in ${what}`);
  return Buffer.from(text, 'hex');
}

/** Decodes strict base64 (whitespace already removed). */
export function parseBase64(text: string, what: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw badText(`bad base64 in ${what}`);
  return Buffer.from(text, 'base64');
}
