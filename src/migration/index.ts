/** The orchestrator: the migration state machine, its journal and the ports it drives. */
export { Orchestrator, type MigrationEvents, type OrchestratorOptions } from './orchestrator.js';
export { Journal } from './journal.js';
export { EmbeddedDnsProvider, observeServer, type EmbeddedDnsOptions } from './dns-embedded.js';
export type { DnsProvider, HostDriver, RedirectStats } from './ports.js';
export {
  PHASES,
  DEFAULT_TIMINGS,
  type Phase,
  type MigrationPlan,
  type MigrationTimings,
  type MigrationRecord,
  type JournalEntry,
} from './types.js';
