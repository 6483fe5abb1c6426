/**
 * What a server must have to host a site, and what it lacks: the web server kind, the PHP-FPM
 * versions the site's pools run on (both flavors) and, for Apache, the modules its virtual hosts
 * use (apache.ts). The origin's agent states a site's needs when it inspects the site; the
 * target's agent answers with `lacksOf` both when asked at plan time (nothing changes) and before
 * an install, so a move the target cannot take is refused before anything changes.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../../common/errors.js';
import type { SiteNeed, SiteNeeds, WebSite } from '../webconfig/index.js';

/** One thing the target lacks (a need it does not meet), and what in the site needs it. */
export type TargetLack = SiteNeed;

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
export function phpFpmNeeds(site: WebSite): SiteNeed[] {
  const out: SiteNeed[] = [];
  for (const app of site.apps) {
    if (app.kind !== 'php-fpm') continue;
    const version =
      (app.pool && VERSION_IN_PATH.exec(app.pool.file)?.[1]) ?? VERSION_IN_SOCKET.exec(app.socket)?.[1];
    if (!version || out.some((o) => o.name === version)) continue;
    out.push({
      kind: 'php-fpm',
      name: version,
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

/** This server, as `lacksOf` looks at it. */
export interface ServerHas {
  /** Its web server's kind. */
  server: 'nginx' | 'apache';
  /** The modules its web server has loaded (Apache); without it, no module need is met. */
  loadedModules?: () => Promise<Set<string>>;
  php?: PhpFpmLayout;
}

/**
 * What this server lacks of `needs`: every need it does not meet. A web server of another kind
 * is a `TARGET_LACKS` error at once (nothing else can be compared then). Reads only.
 */
export async function lacksOf(domain: string, needs: SiteNeeds, here: ServerHas): Promise<TargetLack[]> {
  if (needs.server !== here.server)
    throw new FerryError(
      'TARGET_LACKS',
      `the target cannot serve ${domain}: the site runs on ${needs.server}, this server's web server is ${here.server}`,
    );
  const out: TargetLack[] = [];
  const wants = (kind: SiteNeed['kind']) => needs.requires.filter((n) => n.kind === kind);
  if (wants('php-fpm').length) {
    const present = await installedPhpFpmVersions(here.php);
    out.push(...wants('php-fpm').filter((n) => !present.includes(n.name)));
  }
  if (wants('module').length) {
    const loaded = here.loadedModules ? await here.loadedModules() : new Set<string>();
    out.push(...wants('module').filter((n) => !loaded.has(n.name)));
  }
  return out;
}

/** Throw `TARGET_LACKS` naming every lack (nothing when the list is empty). */
export function assertNothingLacking(domain: string, lacks: TargetLack[]): void {
  if (lacks.length === 0) return;
  const what = lacks.map((l) =>
    l.kind === 'module' ? `Apache module ${l.name} (${l.neededBy})` : `PHP-FPM ${l.name} (${l.neededBy})`,
  );
  throw new FerryError('TARGET_LACKS', `the target cannot serve ${domain}: it lacks ${what.join('; ')}`);
}
