/**
 * Which databases a site uses: read from its application config (`wp-config.php`) or declared in
 * ferry.yaml. A database whose host is not this server is left in place (both servers reach it).
 */
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { FerryError } from '../../common/errors.js';

/** Where a database server is, as the application names it. */
export type DbLocation =
  | { kind: 'socket'; socket: string }
  | { kind: 'tcp'; host: string; port: number }
  /** `localhost` without a socket: the client library's default socket. */
  | { kind: 'default-socket' };

/** One database the site uses, and the user it connects as. `password` is secret. */
export interface SiteDatabase {
  name: string;
  user: string;
  password: string;
  location: DbLocation;
  /** Where it was found: the config file's path, or `ferry.yaml`. */
  source: string;
}

/** A database left where it is, and why (for the plan). */
export interface DatabaseLeftInPlace {
  name: string;
  host: string;
  source: string;
  reason: string;
}

/** The discovery's answer: databases that move with the site, and those left in place. */
export interface SiteDatabases {
  move: SiteDatabase[];
  leftInPlace: DatabaseLeftInPlace[];
}

/** A database declared in ferry.yaml (`host` as in wp-config: `localhost`, `host:port`, `localhost:/socket`). */
export interface DeclaredDatabase {
  name: string;
  user: string;
  password: string;
  host?: string;
}

/** The `DB_*` settings of a wp-config.php text (the first define of each wins, as in PHP). */
export interface WpConfigDb {
  name: string;
  user: string;
  password: string;
  host: string;
}

/** PHP text without comments; string literals kept as they are. */
function stripPhpComments(text: string): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === "'" || c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== c) j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (c === '#' || (c === '/' && text[i + 1] === '/')) {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      i = end < 0 ? text.length : end + 2;
      out += ' ';
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** The value of a PHP string literal body (single quotes: only \' and \\ are escapes). */
function unquote(body: string, quote: string): string {
  if (quote === "'") return body.replace(/\\(['\\])/g, '$1');
  return body
    .replace(/\\(["\\$])/g, '$1')
    .replace(/\\n/g, '\n')
    .replace(/\\t/g, '\t');
}

/** Parse the DB settings of a wp-config.php; DB_CONFIG when one is missing or not a literal string. */
export function parseWpConfig(text: string, file = 'wp-config.php'): WpConfigDb {
  const code = stripPhpComments(text);
  const found = new Map<string, string>();
  const re = /\bdefine\s*\(\s*(['"])(DB_[A-Z]+)\1\s*,\s*((['"])((?:\\.|(?!\4)[^\\])*)\4|[^)]*)\s*\)/g;
  for (const m of code.matchAll(re)) {
    const key = m[2]!;
    if (found.has(key)) continue;
    if (m[4] === undefined) {
      if (['DB_NAME', 'DB_USER', 'DB_PASSWORD', 'DB_HOST'].includes(key)) {
        throw new FerryError(
          'DB_CONFIG',
          `${file}: ${key} is not a plain string (it is computed: ${m[3]!.trim().slice(0, 40)}); declare the database in ferry.yaml`,
        );
      }
      continue;
    }
    found.set(key, unquote(m[5]!, m[4]));
  }
  const need = (k: string) => {
    const v = found.get(k);
    if (v === undefined) throw new FerryError('DB_CONFIG', `${file}: no define('${k}', ...)`);
    return v;
  };
  return {
    name: need('DB_NAME'),
    user: need('DB_USER'),
    password: need('DB_PASSWORD'),
    host: found.get('DB_HOST') ?? 'localhost',
  };
}

/**
 * Split a DB_HOST as WordPress reads it: `host`, `host:port`, `host:/socket`, `[v6]:port`, or
 * `:/socket`. Returns the host part ('' for none) and the port or socket.
 */
export function parseDbHost(value: string): { host: string; port?: number; socket?: string } {
  let host = value.trim();
  let rest: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(.*))?$/.exec(host);
  if (v6) {
    host = v6[1]!;
    rest = v6[2];
  } else if ((host.match(/:/g) ?? []).length === 1 || host.includes(':/')) {
    const at = host.indexOf(':');
    rest = host.slice(at + 1);
    host = host.slice(0, at);
  }
  if (rest === undefined || rest === '') return { host };
  if (rest.includes('/')) {
    // `host:port:/socket` is not a form; `host:/socket` is
    return { host, socket: rest };
  }
  if (!/^\d{1,5}$/.test(rest) || Number(rest) > 65535) {
    throw new FerryError('DB_CONFIG', `DB_HOST ${JSON.stringify(value)}: the port is not a number`);
  }
  return { host, port: Number(rest) };
}

/** True when `host` names this server: localhost, a loopback address, one of `localAddresses`, our hostname. */
export function isLocalHost(host: string, localAddresses: readonly string[] = []): boolean {
  const h = host.toLowerCase();
  if (h === '' || h === 'localhost' || h === '::1' || h.startsWith('127.')) return true;
  if (localAddresses.map((a) => a.toLowerCase()).includes(h)) return true;
  return h === hostname().toLowerCase();
}

/** Where a local DB_HOST points (socket, default socket or TCP), or undefined when not local. */
export function locate(dbHost: string, localAddresses: readonly string[] = []): DbLocation | undefined {
  const { host, port, socket } = parseDbHost(dbHost);
  if (!isLocalHost(host, localAddresses)) return undefined;
  if (socket) return { kind: 'socket', socket };
  // The MySQL client libraries read `localhost` as the default socket, whatever the port.
  if (host === '' || host.toLowerCase() === 'localhost') {
    return port === undefined ? { kind: 'default-socket' } : { kind: 'tcp', host: '127.0.0.1', port };
  }
  return { kind: 'tcp', host, port: port ?? 3306 };
}

/** Options of `discoverDatabases`. */
export interface DiscoverOptions {
  /** The site's wp-config.php, when it is a WordPress site. */
  wpConfig?: string;
  /** Databases declared in ferry.yaml (used instead of, or beside, the application config). */
  declared?: DeclaredDatabase[];
  /** This server's own addresses (its shared IPs), which count as local. */
  localAddresses?: readonly string[];
}

/** A site's databases: those that move (local to the origin) and those left in place. */
export async function discoverDatabases(opts: DiscoverOptions): Promise<SiteDatabases> {
  const out: SiteDatabases = { move: [], leftInPlace: [] };
  const add = (name: string, user: string, password: string, dbHost: string, source: string) => {
    if (out.move.some((d) => d.name === name) || out.leftInPlace.some((d) => d.name === name)) return;
    const location = locate(dbHost, opts.localAddresses);
    if (location) out.move.push({ name, user, password, location, source });
    else {
      out.leftInPlace.push({
        name,
        host: dbHost,
        source,
        reason: `on another database server (${dbHost}), which both servers reach: left in place`,
      });
    }
  };
  for (const d of opts.declared ?? []) add(d.name, d.user, d.password, d.host ?? 'localhost', 'ferry.yaml');
  if (opts.wpConfig) {
    let text: string;
    try {
      text = await readFile(opts.wpConfig, 'utf8');
    } catch (e) {
      throw new FerryError('DB_CONFIG', `cannot read ${opts.wpConfig}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    const c = parseWpConfig(text, opts.wpConfig);
    add(c.name, c.user, c.password, c.host, opts.wpConfig);
  }
  return out;
}
