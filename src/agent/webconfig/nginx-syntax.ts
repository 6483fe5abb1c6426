/**
 * nginx's configuration syntax, read the way nginx itself reads it (its "Configuration file
 * measurement units" and "Beginner's guide" pages, and `ngx_conf_read_token`):
 *
 * - a simple directive is a name and parameters separated by whitespace, ended by `;`;
 * - a block directive has the same shape but ends with `{ ... }` holding more directives;
 * - `#` starts a comment up to the end of the line, unless it is inside a word or a quoted string;
 * - a parameter may be quoted with `"` or `'`; inside, the other quote, whitespace, `;`, `{`, `}`
 *   and `#` are plain characters, and a closing quote must be followed by whitespace, `;` or `{`;
 * - a backslash makes the next character plain; `\"`, `\'`, `\\`, `\t`, `\r`, `\n` are
 *   unescaped, any other pair is kept as written (so regular expressions keep their `\.`);
 * - an unquoted word ends at whitespace, `;` or `{`; a `{` right after `$` is part of a `${var}`
 *   and a `}` inside a word is a plain character: only a `}` that starts a word closes a block.
 *
 * `nginx -T` prints every configuration file it read after a line `# configuration file PATH:`;
 * `include` directives stay as written, so `parseNginxDump` expands them from those files.
 */
import { posix } from 'node:path';
import { FerryError } from '../../common/errors.js';

/** One word of a configuration file and the line it starts on. */
export interface NginxToken {
  kind: 'word' | ';' | '{' | '}';
  value: string;
  line: number;
  /** The word was quoted (so `}` or `;` in it is plain text). */
  quoted: boolean;
}

/** One directive, with its block when it has one. */
export interface NginxDirective {
  name: string;
  args: string[];
  file: string;
  line: number;
  block: NginxDirective[] | null;
}

const ESCAPES: Record<string, string> = { '"': '"', "'": "'", '\\': '\\', t: '\t', r: '\r', n: '\n' };
const isSpace = (c: string) => c === ' ' || c === '\t' || c === '\r' || c === '\n';

function syntaxError(file: string, line: number, what: string): FerryError {
  return new FerryError('WEBCONFIG_SYNTAX', `${file}:${line}: ${what}`);
}

/** Split one file's text into words and `;` `{` `}`. */
export function tokenizeNginx(text: string, file = '(config)'): NginxToken[] {
  const out: NginxToken[] = [];
  let i = 0;
  let line = 1;
  const n = text.length;
  while (i < n) {
    const c = text[i]!;
    if (c === '\n') {
      line++;
      i++;
      continue;
    }
    if (isSpace(c)) {
      i++;
      continue;
    }
    if (c === '#') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    if (c === ';' || c === '{' || c === '}') {
      out.push({ kind: c, value: c, line, quoted: false });
      i++;
      continue;
    }
    const start = line;
    if (c === '"' || c === "'") {
      let value = '';
      i++;
      for (;;) {
        if (i >= n) throw syntaxError(file, start, `unterminated ${c === '"' ? 'double' : 'single'} quote`);
        const ch = text[i]!;
        if (ch === '\\' && i + 1 < n) {
          const next = text[i + 1]!;
          if (next === '\n') line++;
          value += ESCAPES[next] ?? `\\${next}`;
          i += 2;
          continue;
        }
        if (ch === c) {
          i++;
          break;
        }
        if (ch === '\n') line++;
        value += ch;
        i++;
      }
      const after = text[i];
      if (after !== undefined && !isSpace(after) && after !== ';' && after !== '{' && after !== ')') {
        throw syntaxError(file, line, `unexpected "${after}" after a quoted string`);
      }
      out.push({ kind: 'word', value, line: start, quoted: true });
      continue;
    }
    let value = '';
    let variable = false;
    while (i < n) {
      const ch = text[i]!;
      if (ch === '{' && variable) {
        value += ch;
        i++;
        variable = false;
        continue;
      }
      variable = false;
      if (isSpace(ch) || ch === ';' || ch === '{') break;
      if (ch === '\\' && i + 1 < n) {
        const next = text[i + 1]!;
        if (next === '\n') line++;
        value += ESCAPES[next] ?? `\\${next}`;
        i += 2;
        continue;
      }
      if (ch === '$') variable = true;
      value += ch;
      i++;
    }
    out.push({ kind: 'word', value, line: start, quoted: false });
  }
  return out;
}

/** Parse one file's text into its directives (includes not expanded). */
export function parseNginx(text: string, file = '(config)'): NginxDirective[] {
  const tokens = tokenizeNginx(text, file);
  let pos = 0;
  const lastLine = tokens.length ? tokens[tokens.length - 1]!.line : 1;
  const block = (depth: number, openedAt: number): NginxDirective[] => {
    const list: NginxDirective[] = [];
    for (;;) {
      const t = tokens[pos];
      if (!t) {
        if (depth > 0)
          throw syntaxError(
            file,
            lastLine,
            `unexpected end of file, expecting "}" (block opened on line ${openedAt})`,
          );
        return list;
      }
      if (t.kind === '}') {
        if (depth === 0) throw syntaxError(file, t.line, 'unexpected "}"');
        pos++;
        return list;
      }
      if (t.kind !== 'word') throw syntaxError(file, t.line, `unexpected "${t.value}"`);
      const name = t.value;
      const args: string[] = [];
      pos++;
      for (;;) {
        const a = tokens[pos];
        if (!a)
          throw syntaxError(file, lastLine, `unexpected end of file, expecting ";" or "}" after "${name}"`);
        if (a.kind === 'word') {
          args.push(a.value);
          pos++;
        } else if (a.kind === ';') {
          pos++;
          list.push({ name, args, file, line: t.line, block: null });
          break;
        } else if (a.kind === '{') {
          pos++;
          list.push({ name, args, file, line: t.line, block: block(depth + 1, a.line) });
          break;
        } else {
          throw syntaxError(
            file,
            a.line,
            `unexpected "}" after "${name}": directive "${name}" is not terminated by ";"`,
          );
        }
      }
    }
  };
  return block(0, 1);
}

/** The files of an `nginx -T` dump, in the order printed (the first is the main file). */
export function splitNginxDump(dump: string): Array<{ file: string; text: string }> {
  const files: Array<{ file: string; text: string }> = [];
  const marker = /^# configuration file (.+):$/;
  let current: { file: string; lines: string[] } | null = null;
  const flush = () => {
    if (!current) return;
    // nginx prints a newline after every file; drop it so line numbers and contents match the file.
    const lines = current.lines;
    if (lines.length && lines[lines.length - 1] === '') lines.pop();
    files.push({ file: current.file, text: lines.join('\n') });
  };
  for (const line of dump.split('\n')) {
    const m = marker.exec(line);
    if (m) {
      flush();
      current = { file: m[1]!, lines: [] };
    } else if (current) current.lines.push(line);
  }
  flush();
  if (files.length === 0) {
    throw new FerryError(
      'WEBCONFIG_SYNTAX',
      'the output of nginx -T holds no "# configuration file PATH:" line',
    );
  }
  return files;
}

/** A glob of `include` (`*`, `?`, `[...]`) as a regular expression over a whole path. */
function globRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        re += `[${glob
          .slice(i + 1, end)
          .replace(/^!/, '^')
          .replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/**
 * Parse an `nginx -T` dump into the main file's directives with every `include` replaced by the
 * directives of the files it names (relative paths from the main file's folder, as with `-c`).
 */
export function parseNginxDump(dump: string): NginxDirective[] {
  const files = splitNginxDump(dump);
  const texts = new Map(files.map((f) => [f.file, f.text]));
  const parsed = new Map<string, NginxDirective[]>();
  const prefix = posix.dirname(files[0]!.file);
  const load = (file: string): NginxDirective[] => {
    let p = parsed.get(file);
    if (!p) {
      p = parseNginx(texts.get(file) ?? '', file);
      parsed.set(file, p);
    }
    return p;
  };
  const expand = (list: NginxDirective[], stack: string[]): NginxDirective[] => {
    const out: NginxDirective[] = [];
    for (const d of list) {
      if (d.name === 'include' && d.block === null && d.args.length === 1) {
        const pattern = posix.resolve(prefix, d.args[0]!);
        const re = globRegExp(pattern);
        // nginx sorts a glob's matches; a file that exists is dumped once, whoever includes it.
        const matches = [...texts.keys()].filter((f) => re.test(f)).sort();
        for (const f of matches) {
          if (stack.includes(f)) throw syntaxError(d.file, d.line, `include of ${f} loops`);
          out.push(...expand(load(f), [...stack, f]));
        }
        continue;
      }
      out.push(d.block ? { ...d, block: expand(d.block, stack) } : d);
    }
    return out;
  };
  return expand(load(files[0]!.file), [files[0]!.file]);
}
