/** The orchestrator: the migration state machine, its journal and the ports it drives. */
export { Orchestrator, type MigrationEvents, type OrchestratorOptions } from './orchestrator.js';
export { Journal, type JournalOptions } from './journal.js';
export type { JournalEvents, JournalStore, MigrationBrief } from './journal-store.js';
export {
  PgJournal,
  postgresEndpoint,
  redactPostgresUrl,
  withPassword,
  type JournalWriter,
  type PgJournalOptions,
} from './journal-pg.js';
export { EmbeddedDnsProvider, observeServer, type EmbeddedDnsOptions } from './dns-embedded.js';
export { PowerDnsProvider, createPowerDnsProvider, type PowerDnsOptions } from './dns-powerdns.js';
export { Rfc2136DnsProvider, createRfc2136Provider, type Rfc2136Options } from './dns-rfc2136.js';
export { ResilientHost, ResilientDns, withRetry, DEFAULT_RETRY, type RetryPolicy } from './resilient.js';
export {
  checkParity,
  describeParity,
  probeHttp,
  probeTlsNames,
  probeBanner,
  type ParityResult,
  type ProbeAnswer,
} from './parity.js';
export {
  STEP,
  WAIT,
  SYNC_PASSES,
  familyStep,
  originalRecordNote,
  nameStep,
  syncDoneNote,
  syncPassDone,
  waitPassedNote,
  waitEndNote,
  isReverseStep,
  type Step,
  type JournalStep,
  type SyncPass,
  type Wait,
  type WaitEnd,
  type FamilySuffix,
} from './steps.js';
export type {
  DatabaseDeclaration,
  DatabaseLag,
  DatabaseSource,
  SiteDatabasesPlan,
  DnsProvider,
  HostDriver,
  RedirectStats,
  SyncProgressReport,
  SyncSiteOptions,
  WebBundle,
  WebSiteOverrides,
} from './ports.js';
export { planDatabases, describeDatabases } from './databases.js';
export {
  planSiteNames,
  absoluteName,
  describeSiteNames,
  type SiteNames,
  type SiteNamesInput,
} from './names.js';
export {
  planWebSite,
  refusalsOf,
  describeRefusals,
  webParity,
  checkMailPorts,
  describeMail,
  WEB_PARITY,
  type SiteRefusal,
  type WebSitePlan,
} from './web.js';
export {
  PHASES,
  TERMINAL_PHASES,
  DEFAULT_TIMINGS,
  DEFAULT_PARITY,
  DEFAULT_BACKUP_KEEP_MS,
  DEFAULT_DATABASE_OPTIONS,
  type DatabaseOptions,
  type DatabasesPlanned,
  type SiteKind,
  type WebPlan,
  type NameLeftAlone,
  type Phase,
  type ForwardPhase,
  type MigrationMode,
  type MigrationPlan,
  type MigrationTimings,
  type MigrationRecord,
  type JournalEntry,
  type ParityChecks,
  type HttpCheck,
} from './types.js';
