/** The controller: servers, sites, migrations and their event stream. */
export {
  Controller,
  type ControllerOptions,
  type ControllerEvent,
  type ServerEntry,
  type SiteEntry,
  type StartMigrationRequest,
  type MigrationPreview,
  type EvacuateRequest,
  type EvacuationSite,
  type ServerSummary,
  type SiteSummary,
  type SitePageRequest,
  type MigrationPageRequest,
} from './controller.js';
export { DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, type Page, type PageRequest } from './paging.js';
export {
  parseDuration,
  type FerryConfig,
  type ServerConfig,
  type SiteConfig,
  type DnsConfig,
} from './config-schema.js';
export { loadConfig, parseConfig, type LoadConfigOptions } from './config.js';
export { isPostgresUrl, type JournalConfig } from './config-schema.js';
export { describeConfig } from './config-describe.js';
export {
  openJournal,
  startController,
  type RunningController,
  type StartControllerOptions,
} from './start.js';
export {
  LeaderLease,
  DEFAULT_LEADER_TTL_MS,
  type LeaderLeaseOptions,
  type LeaderStatus,
  type LeaderView,
  type LeaseHolder,
} from './leader.js';
