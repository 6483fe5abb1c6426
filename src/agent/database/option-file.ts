/**
 * The agent's MariaDB administrator account, read from a MariaDB option file such as Debian's
 * /etc/mysql/debian.cnf (`ferry agent --mariadb-defaults-file`).
 *
 * A small reader of its own rather than an INI library: option files are not INI (bare flags
 * without `=`, `!include` directives, MariaDB's own quoting and escapes, `#` comments after an
 * unquoted value), and only five keys of the client sections matter here. Messages name the file,
 * the line and the key, never a value: the file holds the administrator's password.
 */
import { readFile } from 'node:fs/promises';
import { FerryError } from '../../common/errors.js';
import type { DbEndpoint } from './client.js';

/** Client sections, in the order the `mariadb` client reads them (later ones override). */
const CLIENT_SECTIONS = ['client', 'client-server', 'client-mariadb', 'mysql', 'mariadb-client'];

/** Where a local server's socket is when the file names `localhost` and no socket (Debian's). */
export const DEFAULT_SOCKET = '/run/mysqld/mysqld.sock';

/** A quoted value's text: MariaDB reads \n, \t, \\, \", \' and \s (space) inside quotes. */
function unquote(body: string): string {
  return body.replace(/\\(.)/g, (_m, c: string) =>
    c === 'n' ? '\n' : c === 't' ? '\t' : c === 's' ? ' ' : c === 'r' ? '\r' : c,
  );
}

/** One `key = value` line's value: quoted (may hold `#`), or bare up to a `#` comment. */
function valueOf(raw: string, where: string, key: string): string {
  const v = raw.trim();
  const q = v[0];
  if (q === '"' || q === "'") {
    let i = 1;
    while (i < v.length && v[i] !== q) i += v[i] === '\\' ? 2 : 1;
    if (i >= v.length)
      throw new FerryError('AGENT_OPTIONS', `${where}: the value of ${key} has no closing quote`);
    return unquote(v.slice(1, i));
  }
  const hash = v.indexOf('#');
  return (hash >= 0 ? v.slice(0, hash) : v).trim();
}

/**
 * Parse an option file's text into the administrator's endpoint. `host` of `localhost` (or none)
 * means the server's socket, as the MariaDB clients read it. AGENT_OPTIONS on a malformed line
 * or when no user is given.
 */
export function parseOptionFile(text: string, file: string): DbEndpoint {
  const found = new Map<string, string>();
  let section = '';
  text.split(/\r?\n/).forEach((line, i) => {
    const where = `${file}:${i + 1}`;
    const l = line.trim();
    if (l === '' || l.startsWith('#') || l.startsWith(';')) return;
    if (l.startsWith('!')) {
      throw new FerryError(
        'AGENT_OPTIONS',
        `${where}: ${l.split(/\s+/)[0]} is not followed by Ferry; put the [client] account in this file itself`,
      );
    }
    const sec = /^\[\s*([^\]]+?)\s*\]\s*(?:#.*)?$/.exec(l);
    if (sec) {
      section = sec[1]!.toLowerCase();
      return;
    }
    if (l.startsWith('['))
      throw new FerryError('AGENT_OPTIONS', `${where}: a section header needs a closing ]`);
    if (!CLIENT_SECTIONS.includes(section)) return;
    const eq = l.indexOf('=');
    // Keys are read with `-` and `_` alike, as MariaDB does.
    const key = (eq < 0 ? l : l.slice(0, eq)).trim().toLowerCase().replace(/-/g, '_');
    if (!/^[a-z0-9_]+$/.test(key)) throw new FerryError('AGENT_OPTIONS', `${where}: not an option line`);
    if (eq < 0) return; // a flag (`ssl`, `skip-ssl`): nothing Ferry uses
    if (['user', 'password', 'host', 'port', 'socket'].includes(key)) {
      found.set(key, valueOf(l.slice(eq + 1), where, key));
    }
  });
  const user = found.get('user');
  if (!user) {
    throw new FerryError(
      'AGENT_OPTIONS',
      `${file}: no user in a [client] section; write the administrator account there (user=, password=, socket=)`,
    );
  }
  const portText = found.get('port');
  let port: number | undefined;
  if (portText !== undefined) {
    port = Number(portText);
    if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535)
      throw new FerryError('AGENT_OPTIONS', `${file}: port is not a port number 1-65535`);
  }
  const host = found.get('host');
  const ep: DbEndpoint = { user, password: found.get('password') ?? '' };
  if (found.get('socket') || !host || host === 'localhost') ep.socket = found.get('socket') || DEFAULT_SOCKET;
  else {
    ep.host = host;
    if (port !== undefined) ep.port = port;
  }
  return ep;
}

/** Read and parse an option file; AGENT_OPTIONS when it cannot be read. */
export async function readOptionFile(file: string): Promise<DbEndpoint> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new FerryError(
      'AGENT_OPTIONS',
      `cannot read the MariaDB option file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      { cause: e },
    );
  }
  return parseOptionFile(text, file);
}
