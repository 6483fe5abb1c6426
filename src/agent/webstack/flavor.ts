/**
 * What a web server flavor (nginx, Apache 2.4) does for a moved site, so the rest of the web
 * stack (export, install, gate, finish) is written once.
 *
 * A gated site is served through two generated configurations, both written into a folder the
 * web server includes (Ferry's include folder):
 *
 * - the FRONT: the site's listens, names and certificate as the site had them (or the target's
 *   shared IP in place of the origin's own address), whose only job is to pass every request to
 *   the gate (the agent's site app) with `Host` kept and `X-Ferry-Client` / `X-Ferry-Scheme` set;
 * - the BACKEND: the site's own block(s), byte-identical but for their listens, which move to
 *   `backend.address:httpPort` (plain listens) and `backend.address:httpsPort` (TLS listens,
 *   still TLS with the same certificate).
 *
 * Without the gate (the site's final home), `plain` is the site's own block(s) listening where the
 * layout says. The original file is not the flavor's business: the web stack moves it aside.
 */
import type { SiteNeed, WebSite } from '../webconfig/index.js';

/** A configuration file that holds one or more of a site's blocks. */
export interface SiteConfigFile {
  /** The path the web server read it from (as `nginx -T` / `apache2ctl -S` names it). */
  path: string;
  /** Its whole text. */
  text: string;
  /** Line ranges (counted from 1, both ends included) of the site's blocks in `text`. */
  blocks: Array<{ start: number; end: number }>;
}

/** Where a site's generated configuration goes and what it talks to. */
export interface WebStackLayout {
  /** The site (its first name), which names the generated files. */
  domain: string;
  /** The folder Ferry writes configuration into, included by the web server (nginx: inside `http {}`). */
  includeDir: string;
  /** Where the gate (the agent's site app) listens, on loopback. */
  gate: { address: string; port: number };
  /** The backend copy's loopback listens: one port for the plain listens, one for the TLS ones. */
  backend: { address: string; httpPort: number; httpsPort: number };
  /**
   * The address the front (or the plain site) listens on wherever the site named an address of
   * its own (the target's shared IP); undefined keeps the addresses as written. A listen on every
   * address (`listen 80;`, `<VirtualHost *:80>`) stays so.
   */
  listenAddress?: string;
  /** Loopback UDP port of the agent's per-request counters (syslog, `ferry_stats` line); none: no log. */
  statsPort?: number;
}

/** A file the flavor wants written into the include folder. */
export interface GeneratedFile {
  /** File name inside `layout.includeDir` (no folder part). */
  name: string;
  text: string;
}

/** Configuration generated for one site. */
export interface GeneratedConfig {
  files: GeneratedFile[];
}

/** One web server kind, as the web stack drives it. */
export interface WebFlavor {
  readonly kind: 'nginx' | 'apache';
  /**
   * The front and the backend of `site` (all of its blocks merged: every listen, name and
   * certificate) from the text of the files its blocks are in.
   */
  frontAndBackend(site: WebSite, files: SiteConfigFile[], layout: WebStackLayout): GeneratedConfig;
  /** The site's own blocks, unchanged but for listen addresses (`layout.listenAddress`). */
  plain(site: WebSite, files: SiteConfigFile[], layout: WebStackLayout): GeneratedConfig;
  /** The web server's own check of its whole configuration; throws a FerryError with its message. */
  check(): Promise<void>;
  /** Reload the web server gracefully (after `check`). */
  reload(): Promise<void>;
  /**
   * What the site's blocks need of a web server of this kind besides PHP-FPM (Apache: modules).
   * Without it, the site needs its PHP-FPM versions alone.
   */
  needs?(files: SiteConfigFile[]): SiteNeed[];
  /** The modules this server's web server has loaded (Apache), which meet `needs`. */
  loadedModules?(): Promise<Set<string>>;
}
