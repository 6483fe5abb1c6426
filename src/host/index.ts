/**
 * The built-in site server and site data sync: what a hosting server runs for its sites.
 * `SiteServer` serves many name-based virtual hosts whose modes the migration switches
 * (`SiteProcess` runs it in a process of its own that outlives the agent);
 * `syncDirectory` copies a site's data folder to another server, delta after the first pass.
 */
export {
  SiteServer,
  normalizeDomain,
  type SiteMode,
  type SiteStats,
  type SiteUpstream,
  type SiteServerOptions,
  type Order,
} from './site-server.js';
export { SiteProcess, type SiteApp, type SiteProcessOptions } from './site-process.js';
export { syncDirectory, syncPaths, type SyncOptions, type SyncResult } from './sync.js';
export { type ProxyTarget } from './proxy.js';
export { ORDERS_FILE } from './orders.js';
