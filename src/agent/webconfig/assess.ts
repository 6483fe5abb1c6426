/** What Ferry can move of each site, and why not where it cannot. */
import { constants } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { access, readFile, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Refusal, SourceRef, WebSite } from './model.js';

export interface AssessOptions {
  /** Folders a site's files may live under; a path elsewhere is refused. */
  declaredRoots: string[];
  /**
   * Which customer a name belongs to. Default: its last two labels (`www.shop.example` →
   * `shop.example`), which is wrong for names under a public suffix of two labels (`co.uk`):
   * give the mapping then.
   */
  customerOf?: (name: string) => string;
}

/** The last two labels of a name, without a leading `*.` or `.`. */
export function defaultCustomerOf(name: string): string {
  const labels = name
    .toLowerCase()
    .replace(/^\*?\./, '')
    .replace(/\.$/, '')
    .split('.');
  return labels.slice(-2).join('.');
}

function inside(path: string, root: string): boolean {
  const r = posix.resolve(root);
  const p = posix.resolve(path);
  return p === r || p.startsWith(r.endsWith('/') ? r : `${r}/`);
}

async function readable(path: string): Promise<'ok' | 'missing' | 'unreadable'> {
  try {
    await stat(path);
  } catch {
    return 'missing';
  }
  try {
    await access(path, constants.R_OK);
    return 'ok';
  } catch {
    return 'unreadable';
  }
}

const where = (at: SourceRef) => `${at.file}:${at.line}`;

/**
 * A site's data directory: the deepest common parent of its paths, which must lie strictly inside
 * a declared root (a root itself would take other sites' files along). Null when the site has no
 * paths; `undefined` when no such folder exists.
 */
export function siteDataDirOf(paths: string[], declaredRoots: string[]): string | null | undefined {
  if (paths.length === 0) return null;
  let common = posix.resolve(paths[0]!).split('/');
  for (const p of paths.slice(1)) {
    const parts = posix.resolve(p).split('/');
    let i = 0;
    while (i < common.length && i < parts.length && common[i] === parts[i]) i++;
    common = common.slice(0, i);
  }
  const dir = common.join('/') || '/';
  return declaredRoots.some((r) => inside(dir, r) && posix.resolve(r) !== dir) ? dir : undefined;
}

/** Fill in `refusals` and `movable` of each site. */
export async function assessSites(sites: WebSite[], opts: AssessOptions): Promise<WebSite[]> {
  const customerOf = opts.customerOf ?? defaultCustomerOf;
  // Pools by file and name, to find one shared by sites of two customers.
  const poolUsers = new Map<string, Set<string>>();
  for (const s of sites) {
    for (const a of s.apps) {
      if (a.kind !== 'php-fpm' || !a.pool) continue;
      const key = `${a.pool.file}#${a.pool.name}`;
      const set = poolUsers.get(key) ?? new Set<string>();
      for (const n of s.names) set.add(customerOf(n));
      poolUsers.set(key, set);
    }
  }
  for (const s of sites) {
    const r: Refusal[] = [];
    const names = s.names.filter((n) => n !== '' && n !== '_');
    if (names.length === 0) {
      r.push({
        code: 'NO_NAME',
        message: 'the block names no site (a catch-all server); it stays with the server',
        at: s.at,
      });
    }
    const patterns = names.filter((n) => n.startsWith('~'));
    if (patterns.length) {
      r.push({
        code: 'NAME_PATTERN',
        message: `names given by a regular expression (${patterns.join(', ')}) cannot be moved as a known set of names`,
        at: s.at,
      });
    }
    const customers = [...new Set(names.filter((n) => !n.startsWith('~')).map(customerOf))];
    if (customers.length > 1) {
      r.push({
        code: 'SHARED_NAMES',
        message: `the block serves names of ${customers.length} customers (${customers.join(', ')}); split it into one block per customer first`,
        at: s.at,
      });
    }
    for (const p of s.paths) {
      if (p.path.includes('$')) {
        r.push({
          code: 'PATH_VARIABLE',
          message: `${p.directive} ${p.path} depends on the request; declare the site's folders in ferry.yaml`,
          at: p.at,
        });
        continue;
      }
      if (!opts.declaredRoots.some((root) => inside(p.path, root))) {
        r.push({
          code: 'PATH_OUTSIDE_ROOTS',
          message: `${p.directive} ${p.path} is outside every declared root (${opts.declaredRoots.join(', ') || 'none declared'})`,
          at: p.at,
        });
        continue;
      }
      const state = await readable(p.path);
      if (state !== 'ok') {
        r.push({
          code: state === 'missing' ? 'PATH_MISSING' : 'FILE_UNREADABLE',
          message: `${p.directive} ${p.path} ${state === 'missing' ? 'does not exist' : 'cannot be read by the agent'}`,
          at: p.at,
        });
      }
    }
    const fixedPaths = s.paths.map((p) => p.path).filter((p) => !p.includes('$'));
    if (
      fixedPaths.length > 0 &&
      fixedPaths.every((p) => opts.declaredRoots.some((root) => inside(p, root))) &&
      siteDataDirOf(fixedPaths, opts.declaredRoots) === undefined
    ) {
      r.push({
        code: 'SPLIT_ROOTS',
        message: `the site's folders (${fixedPaths.join(', ')}) share no parent inside a declared root other than the root itself; its data cannot be moved as one folder`,
        at: s.at,
      });
    }
    for (const c of s.certificates) {
      for (const f of [c.certificate, c.key]) {
        if (f === null) continue;
        if (f.includes('$')) {
          r.push({
            code: 'PATH_VARIABLE',
            message: `certificate file ${f} depends on the request`,
            at: c.at,
          });
          continue;
        }
        const state = await readable(f);
        if (state !== 'ok') {
          r.push({
            code: state === 'missing' ? 'PATH_MISSING' : 'FILE_UNREADABLE',
            message: `certificate file ${f} ${state === 'missing' ? 'does not exist' : 'cannot be read by the agent'}`,
            at: c.at,
          });
        } else if (f === c.certificate) {
          const problem = await certificateProblem(f, s.names);
          if (problem) r.push({ ...problem, at: c.at });
        }
      }
    }
    for (const a of s.apps) {
      if (a.kind !== 'php-fpm') continue;
      if (!a.pool) {
        r.push({
          code: 'POOL_NOT_FOUND',
          message: `no PHP-FPM pool file listens on ${a.socket} (set at ${where(a.at)})`,
          at: a.at,
        });
        continue;
      }
      if ((poolUsers.get(`${a.pool.file}#${a.pool.name}`)?.size ?? 0) > 1) {
        r.push({
          code: 'POOL_SHARED',
          message: `PHP-FPM pool ${a.pool.name} (${a.pool.file}:${a.pool.line}) serves sites of several customers`,
          at: a.at,
        });
      }
      if (a.pool.user === 'root' || a.pool.user === null) {
        r.push({
          code: 'POOL_ROOT_USER',
          message: `PHP-FPM pool ${a.pool.name} (${a.pool.file}:${a.pool.line}) names no user other than root`,
          at: a.at,
        });
      }
    }
    s.refusals = r;
    s.movable = r.length === 0;
  }
  return sites;
}

/**
 * Whether the certificate in `file` (its first PEM block: the site's own) covers every name the
 * site answers to; names that are patterns (`*.x`, `.x`, `~regex`) are not checked. A target would
 * serve the same certificate, so a mismatch now is one the customer has, named before the move.
 */
async function certificateProblem(
  file: string,
  names: string[],
): Promise<Pick<Refusal, 'code' | 'message'> | null> {
  let cert: X509Certificate;
  try {
    const pem = (await readFile(file, 'utf8')).match(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/,
    );
    if (!pem) throw new Error('no PEM certificate in it');
    cert = new X509Certificate(pem[0]);
  } catch (err) {
    return {
      code: 'CERT_NAMES',
      message: `certificate file ${file} cannot be read as one: ${(err as Error).message}`,
    };
  }
  const uncovered = names.filter((n) => !/[*~]/.test(n) && !n.startsWith('.') && !cert.checkHost(n));
  if (uncovered.length === 0) return null;
  return {
    code: 'CERT_NAMES',
    message: `certificate ${file} (${cert.subjectAltName ?? cert.subject}) does not cover ${uncovered.join(', ')}`,
  };
}
