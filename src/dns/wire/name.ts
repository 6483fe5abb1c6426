/**
 * Domain names: presentation form (RFC 1035 §5.1 escapes) and wire form with compression
 * (RFC 1035 §4.1.4). Names in Ferry are absolute presentation strings ending in a dot, with
 * special bytes escaped canonically; `nameKey` is their case-folded form (RFC 4343).
 */
import { FerryError } from '../../common/errors.js';

/** Maximum label and name lengths in octets (RFC 1035 §2.3.4). */
export const MAX_LABEL = 63;
export const MAX_NAME = 255;

/** Compression table: case-folded name suffix → offset in the message. */
export type Compressor = Map<string, number>;

/** Error for bad wire input; the query engine turns it into FORMERR. */
export function malformed(message: string): FerryError {
  return new FerryError('DNS_MALFORMED', message);
}

/** Error for bad presentation-format input (zone files, API rdata). */
export function badText(message: string): FerryError {
  return new FerryError('DNS_BAD_TEXT', message);
}

/** Thrown by pack functions when the output would not fit the buffer (drives truncation). */
export class PackOverflow extends FerryError {
  constructor() {
    super('DNS_TOO_LARGE', 'message does not fit the buffer');
  }
}

/** Throws DNS_MALFORMED unless `n` bytes are readable at `off`. */
export function need(buf: Uint8Array, off: number, n: number, what: string): void {
  if (off + n > buf.length) throw malformed(`truncated ${what} at offset ${off}`);
}

/** Throws PackOverflow unless `n` bytes are writable at `off`. */
export function room(buf: Uint8Array, off: number, n: number): void {
  if (off + n > buf.length) throw new PackOverflow();
}

// Bytes that are escaped in presentation even though printable (RFC 1035 §5.1, zone-file specials).
const SPECIAL = new Set([0x2e, 0x5c, 0x22, 0x28, 0x29, 0x3b, 0x40, 0x24]);

/** Presentation form of one label's bytes. */
export function formatLabel(buf: Uint8Array, start: number, end: number): string {
  let s = '';
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b <= 0x20 || b >= 0x7f) s += '\\' + String(b).padStart(3, '0');
    else if (SPECIAL.has(b)) s += '\\' + String.fromCharCode(b);
    else s += String.fromCharCode(b);
  }
  return s;
}

/**
 * Splits presentation text into label byte arrays, unescaping `\X` and `\DDD`. A trailing dot
 * makes it absolute; relative names get `origin`'s labels appended. Checks label and name limits.
 */
export function textToLabels(text: string, origin?: readonly Uint8Array[]): Uint8Array[] {
  if (text === '.') return [];
  if (text === '') throw badText('empty domain name');
  const labels: Uint8Array[] = [];
  let cur: number[] = [];
  let absolute = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e) {
      if (cur.length === 0) throw badText(`empty label in ${JSON.stringify(text)}`);
      labels.push(Uint8Array.from(cur));
      cur = [];
      if (i === text.length - 1) absolute = true;
      continue;
    }
    if (c === 0x5c) {
      const d = /^\d{3}/.exec(text.slice(i + 1, i + 4));
      if (d) {
        const v = Number(d[0]);
        if (v > 255) throw badText(`bad escape \\${d[0]} in ${JSON.stringify(text)}`);
        cur.push(v);
        i += 3;
      } else {
        if (i + 1 >= text.length) throw badText(`dangling backslash in ${JSON.stringify(text)}`);
        const e = text.charCodeAt(++i);
        if (e > 0x7f) throw badText(`non-ASCII character in ${JSON.stringify(text)}`);
        cur.push(e);
      }
    } else {
      if (c > 0x7f) throw badText(`non-ASCII character in ${JSON.stringify(text)}; use punycode or \\DDD`);
      cur.push(c);
    }
    if (cur.length > MAX_LABEL)
      throw badText(`label longer than ${MAX_LABEL} octets in ${JSON.stringify(text)}`);
  }
  if (cur.length > 0) labels.push(Uint8Array.from(cur));
  if (!absolute) {
    if (!origin) throw badText(`relative name ${JSON.stringify(text)} without origin`);
    labels.push(...origin);
  }
  let wire = 1;
  for (const l of labels) wire += l.length + 1;
  if (wire > MAX_NAME) throw badText(`name longer than ${MAX_NAME} octets: ${JSON.stringify(text)}`);
  return labels;
}

/** Canonical presentation form of labels, absolute. */
export function labelsToText(labels: readonly Uint8Array[]): string {
  if (labels.length === 0) return '.';
  let s = '';
  for (const l of labels) s += formatLabel(l, 0, l.length) + '.';
  return s;
}

// Labels of 1-63 letters, digits, '-', '_' or '*', dot-separated, optionally absolute.
const PLAIN = /^(?:[A-Za-z0-9_*-]{1,63}\.)*[A-Za-z0-9_*-]{1,63}\.?$/;

/**
 * Parses presentation text to a canonical absolute name; relative names are completed with
 * `origin` (default: the root, so `example` means `example.`).
 */
export function parseName(text: string, origin = '.'): string {
  // Fast path: plain host-like names are already canonical.
  if (PLAIN.test(text) && text.length <= 254) {
    const full = text.endsWith('.') ? text : origin === '.' ? text + '.' : `${text}.${origin}`;
    if (full.length <= 254 && (origin === '.' || text.endsWith('.') || PLAIN.test(origin))) return full;
  }
  const o = origin === '.' ? [] : textToLabels(origin);
  return labelsToText(textToLabels(text, o));
}

/** Case-folded form of a canonical name, for comparisons and map keys (RFC 4343 §3: ASCII only). */
export function nameKey(name: string): string {
  return name.toLowerCase();
}

/**
 * Labels of a canonical name as presentation strings, split on unescaped dots. The root is [].
 */
export function splitName(name: string): string[] {
  if (name === '.') return [];
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === 0x5c) i++;
    else if (c === 0x2e) {
      out.push(name.slice(start, i));
      start = i + 1;
    }
  }
  return out;
}

/** Parent of a canonical name (`a.b.` → `b.`); the root's parent is undefined. */
export function parentName(name: string): string | undefined {
  if (name === '.') return undefined;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === 0x5c) i++;
    else if (c === 0x2e) return i === name.length - 1 ? '.' : name.slice(i + 1);
  }
  return '.';
}

/** True when `name` equals `ancestor` or lies below it (keys, i.e. case-folded canonical names). */
export function isSubdomainKey(nameKeyed: string, ancestorKeyed: string): boolean {
  if (ancestorKeyed === '.') return true;
  if (nameKeyed === ancestorKeyed) return true;
  if (!nameKeyed.endsWith('.' + ancestorKeyed)) return false;
  // The dot before the suffix must not be escaped: count backslashes before it.
  let i = nameKeyed.length - ancestorKeyed.length - 2;
  let slashes = 0;
  while (i >= 0 && nameKeyed.charCodeAt(i) === 0x5c) {
    slashes++;
    i--;
  }
  return slashes % 2 === 0;
}

// Unescapes one presentation label (already validated when the name was made canonical).
function labelBytes(label: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < label.length; i++) {
    const c = label.charCodeAt(i);
    if (c !== 0x5c) {
      out.push(c);
      continue;
    }
    const d = /^\d{3}/.exec(label.slice(i + 1, i + 4));
    if (d) {
      out.push(Number(d[0]) & 0xff);
      i += 3;
    } else out.push(label.charCodeAt(++i));
  }
  return out;
}

/**
 * Packs a canonical name at `off` (RFC 1035 §3.1), using and filling `comp` when given
 * (RFC 1035 §4.1.4: pointers only to offsets below 0x4000). Returns the new offset.
 */
export function packName(buf: Uint8Array, off: number, name: string, comp?: Compressor): number {
  const labels = splitName(name);
  for (let i = 0; i < labels.length; i++) {
    if (comp) {
      const key = nameKey(labels.slice(i).join('.') + '.');
      const ptr = comp.get(key);
      if (ptr !== undefined) {
        room(buf, off, 2);
        buf[off] = 0xc0 | (ptr >> 8);
        buf[off + 1] = ptr & 0xff;
        return off + 2;
      }
      if (off < 0x4000) comp.set(key, off);
    }
    const bytes = labelBytes(labels[i]!);
    if (bytes.length === 0 || bytes.length > MAX_LABEL) throw badText(`bad label in ${JSON.stringify(name)}`);
    room(buf, off, bytes.length + 1);
    buf[off++] = bytes.length;
    for (const b of bytes) buf[off++] = b;
  }
  room(buf, off, 1);
  buf[off++] = 0;
  return off;
}

/** Wire length of a canonical name without compression. */
export function nameWireLength(name: string): number {
  let n = 1;
  for (const l of splitName(name)) n += labelBytes(l).length + 1;
  return n;
}

/**
 * Unpacks a possibly compressed name at `off` (RFC 1035 §4.1.4). Pointers must point strictly
 * backwards from the label that holds them, which rules out loops; the expanded name must stay
 * within 255 octets. Returns the canonical name and the offset after it in the original stream.
 */
export function unpackName(buf: Uint8Array, off: number): [string, number] {
  let s = '';
  let pos = off;
  let end = -1;
  let wire = 1;
  let limit = off; // a pointer must target an offset below the start of the current label run
  for (;;) {
    need(buf, pos, 1, 'name');
    const len = buf[pos]!;
    if (len === 0) {
      if (end < 0) end = pos + 1;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      need(buf, pos, 2, 'name pointer');
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (end < 0) end = pos + 2;
      if (target >= limit) throw malformed(`forward or looping name pointer at offset ${pos}`);
      limit = target;
      pos = target;
      continue;
    }
    if (kind !== 0) throw malformed(`unsupported label type 0x${kind.toString(16)} at offset ${pos}`);
    need(buf, pos + 1, len, 'label');
    wire += len + 1;
    if (wire > MAX_NAME) throw malformed(`name longer than ${MAX_NAME} octets at offset ${off}`);
    s += formatLabel(buf, pos + 1, pos + 1 + len) + '.';
    pos += len + 1;
  }
  return [s === '' ? '.' : s, end];
}

/**
 * Offset just past a (possibly compressed) wire-format name at `off`, without building it
 * (RFC 1035 §4.1.4: a pointer ends the name); -1 when it runs out of bounds or past 128 labels.
 */
export function skipName(p: Uint8Array, off: number): number {
  for (let hops = 0; hops < 128; hops++) {
    if (off >= p.length) return -1;
    const l = p[off]!;
    if (l === 0) return off + 1;
    if ((l & 0xc0) === 0xc0) return off + 2 <= p.length ? off + 2 : -1;
    off += 1 + l;
  }
  return -1;
}
