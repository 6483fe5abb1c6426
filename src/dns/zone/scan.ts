/**
 * Master-file tokenizer over bytes (RFC 1035 §5.1): one entry (a directive or a record, its
 * parentheses joined, comments dropped) at a time, its tokens as byte ranges of the file, with
 * no string made. The reader (parser.ts) takes the common records straight from these ranges and
 * asks `entry()` for the tokens as text for everything else.
 */
import { FerryError } from '../../common/errors.js';
import type { Token } from '../wire/text.js';

/** A ZONE_SYNTAX error that names `file:line`. */
export class Syntax extends FerryError {
  constructor(file: string, line: number, message: string, cause?: unknown) {
    super('ZONE_SYNTAX', `${file}:${line}: ${message}`, cause === undefined ? undefined : { cause });
  }
}

/** Token flag: the token began with a quote. */
export const QUOTED = 1;
/** Token flag: it holds a backslash escape. */
export const ESCAPED = 2;
/** Token flag: it holds a byte of 0x80 or more. */
export const HIGH = 4;
/** Token flag: quotes other than one pair around the whole token (`a"b c"`, `"a"b`). */
export const MIXED = 8;

// Byte kinds for the tokenizer's inner loop.
const ORDINARY = 0;
const BLANK = 1;
const NEWLINE = 2;
const SPECIAL = 3; // ; ( )
const QUOTE = 4;
const BACKSLASH = 5;
const NON_ASCII = 6;
const KIND = new Uint8Array(256);
KIND.fill(NON_ASCII, 0x80);
KIND[0x20] = KIND[0x09] = KIND[0x0d] = BLANK;
KIND[0x0a] = NEWLINE;
KIND[0x3b] = KIND[0x28] = KIND[0x29] = SPECIAL;
KIND[0x22] = QUOTE;
KIND[0x5c] = BACKSLASH;

/** One entry of a master file, as text (quotes removed, escapes kept). */
export interface Entry {
  tokens: Token[];
  line: number;
  /** The line began with blank space: the owner is the previous one (RFC 1035 §5.1). */
  blankOwner: boolean;
}

/**
 * Reads entries from master-file bytes. After `next()` returns true, `count` tokens are in
 * `start`/`end`/`flags` (the source range, quotes included) for the entry at `line`.
 */
export class EntryScanner {
  /** Line of the entry's first token's line. */
  line = 0;
  blankOwner = false;
  count = 0;
  start = new Int32Array(32);
  end = new Int32Array(32);
  flags = new Uint8Array(32);
  private pos = 0;
  private lineNo = 1;
  private readonly buf: Buffer;

  constructor(
    readonly src: Uint8Array,
    readonly file: string,
  ) {
    this.buf = Buffer.from(src.buffer, src.byteOffset, src.byteLength);
  }

  /** Moves to the next entry with tokens; false at the end of the file. */
  next(): boolean {
    const s = this.src;
    const n = s.length;
    let i = this.pos;
    while (i < n) {
      // At the start of a line, outside parentheses.
      const line = this.lineNo;
      const c0 = s[i]!;
      let count = 0;
      let depth = 0;
      let parenLine = 0;
      while (i < n) {
        const c = s[i]!;
        if (c === 0x0a) {
          this.lineNo++;
          i++;
          if (depth === 0) break;
          continue;
        }
        if (c === 0x20 || c === 0x09 || c === 0x0d) {
          i++;
          continue;
        }
        if (c === 0x3b) {
          while (i < n && s[i] !== 0x0a) i++;
          continue;
        }
        if (c === 0x28) {
          if (depth === 0) parenLine = this.lineNo;
          depth++;
          i++;
          continue;
        }
        if (c === 0x29) {
          if (depth === 0) throw new Syntax(this.file, this.lineNo, 'unbalanced ")"');
          depth--;
          i++;
          continue;
        }
        // A token: up to blank space, a comment, a parenthesis or the end of line (outside quotes).
        const tokStart = i;
        let flags = c === 0x22 ? QUOTED : 0;
        let inQuote = false;
        let quotes = 0;
        let lastQuote = -1;
        while (i < n) {
          const k = KIND[s[i]!]!;
          if (k === ORDINARY) i++;
          else if (k === BACKSLASH) {
            if (i + 1 >= n || s[i + 1] === 0x0a)
              throw new Syntax(this.file, this.lineNo, 'backslash at end of line');
            flags |= ESCAPED;
            if (s[i + 1]! >= 0x80) flags |= HIGH;
            i += 2;
          } else if (k === QUOTE) {
            inQuote = !inQuote;
            quotes++;
            lastQuote = i;
            i++;
          } else if (k === NON_ASCII) {
            flags |= HIGH;
            i++;
          } else if (inQuote) {
            if (k === NEWLINE) throw new Syntax(this.file, this.lineNo, 'unterminated quoted string');
            i++;
          } else break; // blank space, newline, comment, parenthesis
        }
        if (inQuote) throw new Syntax(this.file, this.lineNo, 'unterminated quoted string');
        if (quotes > 0 && !(flags & QUOTED && quotes === 2 && lastQuote === i - 1)) flags |= MIXED;
        if (count === this.start.length) this.growTokens();
        this.start[count] = tokStart;
        this.end[count] = i;
        this.flags[count] = flags;
        count++;
      }
      if (depth > 0)
        throw new Syntax(this.file, parenLine, 'unbalanced "(": no closing ")" before the end of the file');
      if (count > 0) {
        this.pos = i;
        this.line = line;
        this.blankOwner = c0 === 0x20 || c0 === 0x09;
        this.count = count;
        return true;
      }
    }
    this.pos = i;
    this.count = 0;
    return false;
  }

  /** Start of token `t`'s content (inside the quotes of a simply quoted token). */
  contentStart(t: number): number {
    return this.flags[t]! & QUOTED ? this.start[t]! + 1 : this.start[t]!;
  }

  /** End of token `t`'s content. */
  contentEnd(t: number): number {
    return this.flags[t]! & QUOTED ? this.end[t]! - 1 : this.end[t]!;
  }

  /** Token `t` as text: quotes removed, escapes kept, UTF-8 decoded as the whole file would be. */
  text(t: number): string {
    const s = this.src;
    const end = this.end[t]!;
    if (!(this.flags[t]! & (QUOTED | MIXED | HIGH))) return latin1(s, this.start[t]!, end);
    // Quotes are ASCII, so decoding the runs between them equals decoding the whole file.
    let out = '';
    let from = this.start[t]!;
    for (let i = from; i < end; i++) {
      const d = s[i]!;
      if (d === 0x5c) i++;
      else if (d === 0x22) {
        out += this.buf.toString('utf8', from, i);
        from = i + 1;
      }
    }
    return out + this.buf.toString('utf8', from, end);
  }

  /** The current entry as text tokens (for directives and the records the fast path leaves). */
  entry(): Entry {
    const tokens: Token[] = [];
    for (let t = 0; t < this.count; t++)
      tokens.push({ text: this.text(t), quoted: (this.flags[t]! & QUOTED) !== 0 });
    return { tokens, line: this.line, blankOwner: this.blankOwner };
  }

  private growTokens(): void {
    const size = this.start.length * 2;
    const start = new Int32Array(size);
    const end = new Int32Array(size);
    const flags = new Uint8Array(size);
    start.set(this.start);
    end.set(this.end);
    flags.set(this.flags);
    this.start = start;
    this.end = end;
    this.flags = flags;
  }
}

/** ASCII bytes as a string. */
export function latin1(s: Uint8Array, start: number, end: number): string {
  let out = '';
  for (let i = start; i < end; i++) out += String.fromCharCode(s[i]!);
  return out;
}
