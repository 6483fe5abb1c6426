/**
 * What a target server must have before a site can be recreated there: the PHP-FPM version the
 * site's pool runs on (both flavors) and, for Apache, the modules its virtual hosts use (apache.ts).
 * Asked at plan time, so a move the target cannot take is refused before anything changes.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../../common/errors.js';
import type { WebSite } from '../webconfig/index.js';

/** One thing the target lacks, and what in the site needs it. */
export interface TargetLack {
  /** `module` (Apache) or `php-fpm` (a PHP-FPM version). */
  kind: 'module' | 'php-fpm';
  /** The module (`proxy_fcgi_module`) or the version (`8.2`). */
  name: string;
  /** What needs it, e.g. `RewriteEngine at /etc/apache2/sites-enabled/shop.conf:7`. */
  neededBy: string;
}

/** Where a server keeps its PHP-FPM versions (Debian's layout by default). */
export interface PhpFpmLayout {
  /** Folder of one folder per version, each with `fpm/pool.d`. Default `/etc/php`. */
  phpRoot?: string;
  /** Folders searched for `php-fpmX.Y`. Default `/usr/sbin`, `/usr/bin`, `/usr/local/sbin`. */
  binDirs?: string[];
}

const VERSION_IN_PATH = /\/php\/(\d+\.\d+)\/fpm\//;
const VERSION_IN_SOCKET = /php(\d+\.\d+)-fpm/;

/** The PHP-FPM versions a site's pools run on, from the pool file's path (`/etc/php/8.2/fpm/...`) or the socket's name. */
export function sitePhpVersions(site: WebSite): Array<{ version: string; neededBy: string }> {
  const out: Array<{ version: string; neededBy: string }> = [];
  for (const app of site.apps) {
    if (app.kind !== 'php-fpm') continue;
    const version =
      (app.pool && VERSION_IN_PATH.exec(app.pool.file)?.[1]) ?? VERSION_IN_SOCKET.exec(app.socket)?.[1];
    if (!version || out.some((o) => o.version === version)) continue;
    out.push({
      version,
      neededBy: app.pool ? `pool [${app.pool.name}] of ${app.pool.file}` : `${app.at.file}:${app.at.line}`,
    });
  }
  return out;
}

async function isDir(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

async function isFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

/** The PHP-FPM versions installed here: a pool folder `<phpRoot>/X.Y/fpm/pool.d` and a `php-fpmX.Y` binary. */
export async function installedPhpFpmVersions(layout: PhpFpmLayout = {}): Promise<string[]> {
  const root = layout.phpRoot ?? '/etc/php';
  const binDirs = layout.binDirs ?? ['/usr/sbin', '/usr/bin', '/usr/local/sbin'];
  const names = await readdir(root).catch(() => [] as string[]);
  const out: string[] = [];
  for (const v of names.filter((n) => /^\d+\.\d+$/.test(n)).sort()) {
    if (!(await isDir(join(root, v, 'fpm', 'pool.d')))) continue;
    for (const d of binDirs) {
      if (await isFile(join(d, `php-fpm${v}`))) {
        out.push(v);
        break;
      }
    }
  }
  return out;
}

/** The PHP-FPM versions `site` needs that are not installed here. */
export async function phpFpmLacks(site: WebSite, layout: PhpFpmLayout = {}): Promise<TargetLack[]> {
  const needed = sitePhpVersions(site);
  if (needed.length === 0) return [];
  const present = await installedPhpFpmVersions(layout);
  return needed
    .filter((n) => !present.includes(n.version))
    .map((n) => ({ kind: 'php-fpm' as const, name: n.version, neededBy: n.neededBy }));
}

/** Throw `TARGET_LACKS` naming every lack (nothing when the list is empty). */
export function assertNothingLacking(domain: string, lacks: TargetLack[]): void {
  if (lacks.length === 0) return;
  const what = lacks.map((l) =>
    l.kind === 'module' ? `Apache module ${l.name} (${l.neededBy})` : `PHP-FPM ${l.name} (${l.neededBy})`,
  );
  throw new FerryError('TARGET_LACKS', `the target cannot serve ${domain}: it lacks ${what.join('; ')}`);
}
