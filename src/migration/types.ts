/**
 * The migration's vocabulary: phases, the plan an operator asks for, and the state the journal
 * keeps. See ../../../shared/design/system.md ("The migration, phase by phase").
 */

/** Phases in the order a successful migration passes them (issue 2's order: sync after dns-temp). */
export const PHASES = [
  'planned',
  'temp-ip',
  'dns-temp',
  'syncing',
  'preflight',
  'cutover',
  'draining',
  'completed',
] as const;

export type Phase = (typeof PHASES)[number] | 'failed' | 'rolled-back';

/** Timing knobs of one migration; all in milliseconds except TTLs (seconds, as DNS has them). */
export interface MigrationTimings {
  /** TTL of the A record while it points at the temporary IP and then at the target. Default 5 s. */
  ttl: number;
  /** Traffic must have been absent this long before a wait ends. Default 2000 ms. */
  quietWindowMs: number;
  /** Upper bound on the wait at IP1 before cut-over (after the TTL has passed). Default 30 s. */
  dnsTempCapMs: number;
  /** Upper bound on the drain of IPt after cut-over (after the TTL has passed). Default 30 s. */
  drainCapMs: number;
  /** How long in-flight requests may take to finish at cut-over before it is abandoned. Default 10 s. */
  cutoverDrainTimeoutMs: number;
  /** How often waits look at DNS and traffic. Default 200 ms. */
  pollMs: number;
}

export const DEFAULT_TIMINGS: MigrationTimings = {
  ttl: 5,
  quietWindowMs: 2000,
  dnsTempCapMs: 30_000,
  drainCapMs: 30_000,
  cutoverDrainTimeoutMs: 10_000,
  pollMs: 200,
};

/** What an operator asks for: move `domain` from `origin` to `target` through `tempIp`. */
export interface MigrationPlan {
  id: string;
  domain: string;
  /** Host ids known to the orchestrator's host registry. */
  origin: string;
  target: string;
  /** The origin's shared address the domain points at today (IP1). */
  originIp: string;
  /** The target's address the domain will point at (IP2). */
  targetIp: string;
  /** The temporary address used by this domain alone (IPt). */
  tempIp: string;
  /** Service ports carried through the temporary IP (the site's HTTP port at least). */
  ports: number[];
  timings: MigrationTimings;
}

/** One journal entry: written before the side effects it announces run. */
export interface JournalEntry {
  seq: number;
  migrationId: string;
  at: number;
  phase: Phase;
  /** `enter` a phase, a `step` inside it, or `leave` it. */
  kind: 'enter' | 'step' | 'leave' | 'note' | 'error';
  step?: string;
  detail?: Record<string, unknown>;
}

/** The state of one migration as the journal rebuilds it. */
export interface MigrationRecord {
  plan: MigrationPlan;
  phase: Phase;
  createdAt: number;
  updatedAt: number;
  error?: string;
  /** When each phase started and ended (epoch ms). */
  phases: Array<{ name: Phase; startedAt: number; endedAt: number | null }>;
}
