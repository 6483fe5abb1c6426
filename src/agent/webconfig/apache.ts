/**
 * The sites of an Apache 2.4 server: the virtual hosts `apache2ctl -S` lists (each with the file
 * and line it starts on), read from those files.
 *
 * Apache's configuration syntax (its "Configuration Files" page): one directive per line, a line
 * ending in `\` continues on the next, `#` starts a comment only at the start of a line,
 * arguments are separated by whitespace and may be quoted with `"` (a backslash escapes the next
 * character), sections are `<Name args>` ... `</Name>`, and `${VAR}` is a variable of the
 * environment or of a `Define`.
 */
import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';
import { FerryError } from '../../common/errors.js';
import { poolListeningOn } from './php-fpm.js';
import type { FpmPool, SiteApp, SiteListen, SitePath, SourceRef, WebSite } from './model.js';

/** One virtual host as `-S` lists it. */
export interface ApacheVhostEntry {
  file: string;
  line: number;
  name: string;
  listens: Array<{ address: string | null; port: number }>;
  aliases: string[];
  defaultServer: boolean;
}

/** `apache2ctl -S`'s listing: its virtual hosts and the server root. */
export function parseApacheDump(text: string): { vhosts: ApacheVhostEntry[]; serverRoot: string | null } {
  const vhosts = new Map<string, ApacheVhostEntry>();
  let serverRoot: string | null = null;
  let addr: { address: string | null; port: number } | null = null;
  let last: ApacheVhostEntry | null = null;
  const at = (s: string) => /\((.+):(\d+)\)\s*$/.exec(s);
  const listenOf = (s: string) => {
    const i = s.lastIndexOf(':');
    const a = s.slice(0, i).replace(/^\[|\]$/g, '');
    return { address: a === '*' || a === '_default_' ? null : a, port: Number(s.slice(i + 1)) };
  };
  const entry = (name: string, file: string, line: number) => {
    const key = `${file}:${line}`;
    let v = vhosts.get(key);
    if (!v) {
      v = { file, line, name, listens: [], aliases: [], defaultServer: false };
      vhosts.set(key, v);
    }
    if (addr && !v.listens.some((l) => l.address === addr!.address && l.port === addr!.port))
      v.listens.push(addr);
    return v;
  };
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    const root = /^ServerRoot: "(.*)"$/.exec(line);
    if (root) serverRoot = root[1]!;
    let m = /^(\S+:\d+)\s+is a NameVirtualHost$/.exec(line);
    if (m) {
      addr = listenOf(m[1]!);
      continue;
    }
    m = /^(\S+:\d+)\s+(\S+)\s+\(.+:\d+\)$/.exec(line);
    if (m) {
      addr = listenOf(m[1]!);
      const a = at(line)!;
      last = entry(m[2]!, a[1]!, Number(a[2]));
      continue;
    }
    m = /^\s+default server (\S+) \(.+:\d+\)$/.exec(line);
    if (m) {
      const a = at(line)!;
      entry(m[1]!, a[1]!, Number(a[2])).defaultServer = true;
      continue;
    }
    m = /^\s+port \d+ namevhost (\S+) \(.+:\d+\)$/.exec(line);
    if (m) {
      const a = at(line)!;
      last = entry(m[1]!, a[1]!, Number(a[2]));
      continue;
    }
    m = /^\s+(?:wild )?alias (\S+)$/.exec(line);
    if (m && last && !last.aliases.includes(m[1]!)) last.aliases.push(m[1]!);
    if (/^\S/.test(line) && !/:\d+\s/.test(line)) addr = null;
  }
  return { vhosts: [...vhosts.values()], serverRoot };
}

/** One directive of an Apache file; sections have `block`. */
interface ApacheDirective {
  name: string;
  args: string[];
  line: number;
  block: ApacheDirective[] | null;
}

/** The arguments of one logical line: whitespace separated, `"..."` quoted with `\` escapes. */
function splitArgs(s: string, file: string, line: number): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < s.length) {
    while (i < s.length && /\s/.test(s[i]!)) i++;
    if (i >= s.length) break;
    const q = s[i] === '"' || s[i] === "'" ? s[i] : null;
    let word = '';
    if (q) {
      i++;
      while (i < s.length && s[i] !== q) {
        if (s[i] === '\\' && i + 1 < s.length) i++;
        word += s[i];
        i++;
      }
      if (i >= s.length) throw new FerryError('WEBCONFIG_SYNTAX', `${file}:${line}: unterminated quote`);
      i++;
    } else {
      while (i < s.length && !/\s/.test(s[i]!)) {
        if (s[i] === '\\' && i + 1 < s.length && /[\s"\\]/.test(s[i + 1]!)) i++;
        word += s[i];
        i++;
      }
    }
    out.push(word);
  }
  return out;
}

/** Parse the section starting at `startLine` of `text` (its `<VirtualHost>`), up to its closing line. */
export function parseApacheSection(
  text: string,
  file: string,
  startLine: number,
  env: Record<string, string | undefined> = {},
): ApacheDirective {
  const lines = text.split('\n');
  const stack: ApacheDirective[] = [];
  let top: ApacheDirective | null = null;
  for (let i = startLine - 1; i < lines.length; i++) {
    const first = i + 1;
    let logical = lines[i]!;
    while (/\\\s*$/.test(logical) && i + 1 < lines.length)
      logical = logical.replace(/\\\s*$/, ' ') + lines[++i];
    const s = logical.trim();
    if (s === '' || s.startsWith('#')) continue;
    const expanded = s.replace(/\$\{([A-Za-z0-9_]+)\}/g, (all, v: string) => env[v] ?? all);
    const close = /^<\/([^>\s]+)\s*>$/.exec(expanded);
    if (close) {
      const open = stack.pop();
      if (!open || open.name.toLowerCase() !== close[1]!.toLowerCase()) {
        throw new FerryError(
          'WEBCONFIG_SYNTAX',
          `${file}:${first}: </${close[1]}> closes ${open ? `<${open.name}> of line ${open.line}` : 'no section'}`,
        );
      }
      if (stack.length === 0) return open;
      continue;
    }
    const section = /^<([^\s>]+)(.*)>$/.exec(expanded);
    const d: ApacheDirective = section
      ? { name: section[1]!, args: splitArgs(section[2]!, file, first), line: first, block: [] }
      : (() => {
          const args = splitArgs(expanded, file, first);
          return { name: args[0]!, args: args.slice(1), line: first, block: null };
        })();
    if (!top) {
      if (!section)
        throw new FerryError(
          'WEBCONFIG_SYNTAX',
          `${file}:${first}: expected a <VirtualHost> section here, found ${d.name}`,
        );
      top = d;
    } else stack.at(-1)!.block!.push(d);
    if (section) stack.push(d);
  }
  throw new FerryError(
    'WEBCONFIG_SYNTAX',
    `${file}:${startLine}: <${top?.name ?? 'VirtualHost'}> is never closed`,
  );
}

function walk(list: ApacheDirective[], fn: (d: ApacheDirective) => void): void {
  for (const d of list) {
    fn(d);
    if (d.block) walk(d.block, fn);
  }
}

/** `proxy:unix:/run/php/x.sock|fcgi://localhost` or `fcgi://127.0.0.1:9000/...` → where PHP-FPM listens. */
function fcgiTarget(s: string): string | null {
  const t = s.replace(/^proxy:/, '');
  const unix = /^unix:([^|]+)\|fcgi:/i.exec(t);
  if (unix) return unix[1]!;
  const tcp = /^fcgi:\/\/([^/]+)/i.exec(t);
  return tcp ? tcp[1]! : null;
}

/** Read the files `-S` names and describe each virtual host. */
export async function apacheSites(
  dump: string,
  pools: FpmPool[],
  env: Record<string, string | undefined> = process.env,
): Promise<WebSite[]> {
  const { vhosts, serverRoot } = parseApacheDump(dump);
  const texts = new Map<string, string>();
  const sites: WebSite[] = [];
  for (const v of vhosts) {
    let text = texts.get(v.file);
    if (text === undefined) {
      try {
        text = await readFile(v.file, 'utf8');
      } catch (err) {
        throw new FerryError(
          'WEBCONFIG_READ',
          `cannot read ${v.file}, named by apache2ctl -S: ${(err as Error).message}`,
          { cause: err },
        );
      }
      texts.set(v.file, text);
    }
    const section = parseApacheSection(text, v.file, v.line, env);
    const at = (d: ApacheDirective): SourceRef => ({ file: v.file, line: d.line });
    const abs = (p: string) => (serverRoot && !p.startsWith('/') ? posix.resolve(serverRoot, p) : p);
    const names: string[] = [];
    const paths: SitePath[] = [];
    const apps: SiteApp[] = [];
    const certs: ApacheDirective[] = [];
    const keys: ApacheDirective[] = [];
    let sslEngine = false;
    const addPath = (path: string, directive: string, d: ApacheDirective) => {
      const p = abs(path);
      if (!paths.some((x) => x.path === p || p.startsWith(`${x.path.replace(/\/$/, '')}/`)))
        paths.push({ path: p, directive, at: at(d) });
    };
    const addApp = (a: SiteApp) => {
      if (
        !apps.some(
          (x) =>
            (x.kind === 'php-fpm' ? x.socket : x.upstream) === (a.kind === 'php-fpm' ? a.socket : a.upstream),
        )
      )
        apps.push(a);
    };
    const body = section.block ?? [];
    for (const d of body) {
      if (d.name.toLowerCase() === 'servername' && d.args[0])
        names.unshift(d.args[0].replace(/^[a-z]+:\/\//i, '').replace(/:\d+$/, ''));
      if (d.name.toLowerCase() === 'serveralias') names.push(...d.args);
      if (d.name.toLowerCase() === 'documentroot' && d.args[0])
        paths.unshift({ path: abs(d.args[0]), directive: 'DocumentRoot', at: at(d) });
    }
    walk(body, (d) => {
      const n = d.name.toLowerCase();
      if ((n === 'alias' || n === 'aliasmatch' || n === 'scriptalias') && d.args[1])
        addPath(d.args[1], d.name, d);
      if (
        (n === 'directory' || n === 'directorymatch') &&
        d.args[0] &&
        !d.args[0].startsWith('~') &&
        n === 'directory'
      )
        addPath(d.args[0], 'Directory', d);
      if (n === 'sslengine' && d.args[0]?.toLowerCase() === 'on') sslEngine = true;
      if (n === 'sslcertificatefile') certs.push(d);
      if (n === 'sslcertificatekeyfile') keys.push(d);
      if (n === 'sethandler' && d.args[0]?.startsWith('proxy:')) {
        const sock = fcgiTarget(d.args[0]);
        if (sock) addApp({ kind: 'php-fpm', socket: sock, at: at(d), pool: poolListeningOn(pools, sock) });
        else addApp({ kind: 'proxy', upstream: d.args[0].slice('proxy:'.length), at: at(d) });
      }
      if ((n === 'proxypass' || n === 'proxypassmatch') && d.args[1] && d.args[1] !== '!') {
        const sock = fcgiTarget(d.args[1]);
        if (sock) addApp({ kind: 'php-fpm', socket: sock, at: at(d), pool: poolListeningOn(pools, sock) });
        else addApp({ kind: 'proxy', upstream: d.args[1], at: at(d) });
      }
    });
    // -S shows the names Apache took, also those set by an Include inside the section; a vhost
    // without ServerName is listed under an address, which is no site name.
    for (const n of [v.name, ...v.aliases]) if (!names.includes(n) && !/^[\d.:]+$/.test(n)) names.push(n);
    const listens: SiteListen[] = v.listens.map((l) => ({ ...l, tls: sslEngine, at: at(section) }));
    const pool = apps.flatMap((a) => (a.kind === 'php-fpm' && a.pool ? [a.pool] : []))[0] ?? null;
    const kinds = new Set(apps.map((a) => a.kind));
    sites.push({
      server: 'apache',
      at: { file: v.file, line: v.line },
      names,
      defaultServer:
        v.defaultServer ||
        vhosts.filter((o) =>
          o.listens.some((l) => v.listens.some((m) => m.port === l.port && m.address === l.address)),
        ).length === 1,
      listens,
      paths,
      application: kinds.size === 0 ? 'static' : kinds.size > 1 ? 'mixed' : [...kinds][0]!,
      apps,
      certificates: certs.map((c, i) => ({
        certificate: abs(c.args[0] ?? ''),
        key: keys[i]?.args[0] ? abs(keys[i].args[0]) : null,
        at: at(c),
      })),
      user: pool?.user ?? null,
      group: pool?.group ?? null,
      movable: false,
      refusals: [],
    });
  }
  return sites;
}
