/**
 * Master-file reader (RFC 1035 §5.1; `$TTL` from RFC 2308 §4; generic rdata from RFC 3597 §5).
 * Errors are FerryError `ZONE_SYNTAX` with `file:line:` in the message.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { FerryError } from '../../common/errors.js';
import { labelsToText, parseName, textToLabels } from '../wire/name.js';
import { packRdata, parseRdata, type Rdata } from '../wire/rdata.js';
import { isTtlToken, parseTtl, type Token } from '../wire/text.js';
import { RRClass, RRType, classCode, typeCode, typeName } from '../wire/types.js';
import { CompactBuilder } from './compact.js';
import { Zone } from './zone.js';

export interface ParseZoneOptions {
  /** Zone apex; default the owner of the SOA record. Also the initial `$ORIGIN`. */
  origin?: string;
  /** Shown in errors; `$INCLUDE` paths resolve against its directory. */
  fileName?: string;
  /** TTL for records before any `$TTL` or explicit TTL; default 3600. */
  defaultTtl?: number;
}

/** One logical entry of a master file: a directive or a record, parentheses joined. */
interface Entry {
  tokens: Token[];
  line: number;
  /** The line began with blank space: the owner is the previous one (RFC 1035 §5.1). */
  blankOwner: boolean;
}

class Syntax extends FerryError {
  constructor(file: string, line: number, message: string, cause?: unknown) {
    super('ZONE_SYNTAX', `${file}:${line}: ${message}`, cause === undefined ? undefined : { cause });
  }
}

/**
 * Splits master-file text into entries, one at a time (a big zone is never all tokens at once):
 * comments dropped, parentheses joined, quotes kept.
 */
function* scan(text: string, file: string): Generator<Entry> {
  let line = 1;
  let depth = 0;
  let parenLine = 0;
  let cur: Entry | undefined;
  let atLineStart = true;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '\n') {
      line++;
      i++;
      atLineStart = true;
      if (depth === 0) {
        if (cur && cur.tokens.length > 0) yield cur;
        cur = undefined;
      }
      continue;
    }
    if (atLineStart && depth === 0) {
      atLineStart = false;
      cur = { tokens: [], line, blankOwner: c === ' ' || c === '\t' };
    }
    atLineStart = false;
    if (c === ' ' || c === '\t' || c === '\r') {
      i++;
      continue;
    }
    if (c === ';') {
      while (i < text.length && text[i] !== '\n') i++;
      continue;
    }
    if (c === '(') {
      if (depth === 0) parenLine = line;
      depth++;
      i++;
      continue;
    }
    if (c === ')') {
      if (depth === 0) throw new Syntax(file, line, 'unbalanced ")"');
      depth--;
      i++;
      continue;
    }
    // A token: up to blank space, a comment, a parenthesis or the end of line (outside quotes).
    let tok = '';
    let quoted = false;
    let inQuote = false;
    let first = true;
    while (i < text.length) {
      const d = text[i]!;
      if (d === '\\') {
        if (i + 1 >= text.length || text[i + 1] === '\n')
          throw new Syntax(file, line, 'backslash at end of line');
        tok += d + text[i + 1];
        i += 2;
      } else if (d === '"') {
        if (first) quoted = true;
        inQuote = !inQuote;
        i++;
      } else if (inQuote) {
        if (d === '\n') throw new Syntax(file, line, 'unterminated quoted string');
        tok += d;
        i++;
      } else if (d === ' ' || d === '\t' || d === '\r' || d === '\n' || d === ';' || d === '(' || d === ')')
        break;
      else {
        tok += d;
        i++;
      }
      first = false;
    }
    if (inQuote) throw new Syntax(file, line, 'unterminated quoted string');
    cur!.tokens.push({ text: tok, quoted });
  }
  if (depth > 0)
    throw new Syntax(file, parenLine, 'unbalanced "(": no closing ")" before the end of the file');
  if (cur && cur.tokens.length > 0) yield cur;
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
  ttl: number | undefined; // from $TTL
  lastTtl: number | undefined; // last explicit TTL (RFC 1035 §5.1)
  lastOwner: string | undefined;
  defaultTtl: number;
  /** The zone being filled, once its apex is known. */
  zone: Zone | undefined;
  /** The fast path: records go here in compact form, not into `zone` (see parseZone). */
  builder: CompactBuilder | undefined;
  /** Records read before the apex was known. */
  pending: ParsedRecord[];
  readInclude: ((path: string) => string) | undefined;
  depth: number;
}

function parseText(text: string, file: string, st: State): void {
  for (const e of scan(text, file)) {
    const fail = (msg: string, cause?: unknown): never => {
      throw new Syntax(file, e.line, msg, cause);
    };
    try {
      const t0 = e.tokens[0]!;
      if (!e.blankOwner && !t0.quoted && t0.text.startsWith('$')) {
        directive(e, file, st, fail);
        continue;
      }
      record(e, file, st, fail);
    } catch (err) {
      if (err instanceof Syntax) throw err;
      fail((err as Error).message, err);
    }
  }
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
    let text: string;
    try {
      text = st.readInclude!(path);
    } catch (err) {
      return fail(`cannot read $INCLUDE file ${path}: ${(err as Error).message}`, err);
    }
    // The included file may change the origin; the including file's stays (RFC 1035 §5.1).
    const savedOrigin = st.origin;
    const savedOwner = st.lastOwner;
    if (args[1]) st.origin = absolute(args[1].text, st, fail);
    st.depth++;
    try {
      parseText(text, path, st);
    } finally {
      st.depth--;
      st.origin = savedOrigin;
      st.lastOwner = savedOwner;
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
    owner = st.lastOwner ?? fail('record without owner, and no previous owner');
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
  st.lastOwner = owner;
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
  readInclude: ((path: string) => string) | undefined,
  fast: boolean,
): State {
  return {
    origin: opts.origin ? parseName(opts.origin) : undefined,
    ttl: undefined,
    lastTtl: undefined,
    lastOwner: undefined,
    defaultTtl: opts.defaultTtl ?? 3600,
    zone: opts.origin ? new Zone(opts.origin) : undefined,
    builder: fast ? new CompactBuilder() : undefined,
    pending: [],
    readInclude,
    depth: 0,
  };
}

/**
 * Parses master-file text into a zone. `$INCLUDE` works only with `fileName` (relative to it).
 *
 * Records are written straight into the zone's compact form (compact.ts), with no object per
 * record. Syntax errors are reported as they are met; data that breaks a zone rule (a CNAME
 * beside other data, a second SOA, …) is only detected there, so such a file is read a second
 * time through `Zone.addRecord`, which names the offending line.
 */
export function parseZone(text: string, opts: ParseZoneOptions = {}): Zone {
  const file = opts.fileName ?? '<zone>';
  const read = opts.fileName ? (p: string) => readFileSync(p, 'utf8') : undefined;
  const st = initialState(opts, read, true);
  parseText(text, file, st);
  const zone = finish(st, file);
  if (zone) return zone;
  const exact = initialState(opts, read, false);
  parseText(text, file, exact);
  const z = finish(exact, file);
  if (!z) throw new FerryError('ZONE_SYNTAX', `${file}: cannot be read`); // not reached: no builder
  return z;
}

/** Reads a zone file; `$INCLUDE` paths are relative to the including file. */
export async function loadZoneFile(
  path: string,
  opts: { origin?: string; defaultTtl?: number } = {},
): Promise<Zone> {
  const file = resolve(path);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new FerryError('ZONE_SYNTAX', `${file}: cannot read: ${(err as Error).message}`, { cause: err });
  }
  return parseZone(text, { ...opts, fileName: file });
}
