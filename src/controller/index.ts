/** The controller: servers, sites, migrations and their event stream. */
export {
  Controller,
  type ControllerOptions,
  type ControllerEvent,
  type ServerEntry,
  type SiteEntry,
  type StartMigrationRequest,
  type EvacuateRequest,
  type EvacuationSite,
  type ServerSummary,
} from './controller.js';
export {
  loadConfig,
  parseConfig,
  describeConfig,
  parseDuration,
  startController,
  registerDnsProvider,
  type FerryConfig,
  type ServerConfig,
  type SiteConfig,
  type DnsConfig,
  type DnsProviderFactory,
  type RunningController,
  type StartControllerOptions,
  type LoadConfigOptions,
} from './config.js';
