/**
 * The journal's contract: what the orchestrator, the controller, the API and the CLI read and
 * write. Two implementations keep it: `Journal` (SQLite, the embedded default) and `PgJournal`
 * (PostgreSQL, shared by several controllers).
 *
 * Reads and `append` are synchronous, so the state machine stays simple; durability is
 * `flushed()`: it resolves once every entry appended before the call is on stable storage, and the
 * orchestrator awaits it before any side effect of a step ("journal, then act"). When it rejects
 * the step is not acknowledged and its side effect never runs. A store that can lose its storage
 * (PostgreSQL's connection) rejects with JOURNAL_LOST, emits `lost` once, and refuses further
 * appends until it is opened again; its reads go on answering from what it had.
 */
import type { EventEmitter } from 'node:events';
import { STEP } from './steps.js';
import {
  TERMINAL_PHASES,
  type JournalEntry,
  type MigrationPlan,
  type MigrationRecord,
  type Phase,
} from './types.js';

/** One migration in brief, for listings that must stay cheap with many migrations. */
export interface MigrationBrief {
  id: string;
  plan: MigrationPlan;
  phase: Phase;
  settled: boolean;
  createdAt: number;
}

/** Events of a journal store. */
export interface JournalEvents {
  /** The storage is gone (PostgreSQL connection lost, a commit failed): nothing more is acknowledged. */
  lost: [err: Error];
}

/** Durable store of migrations and their journal entries (see the module comment). */
export interface JournalStore extends Pick<EventEmitter<JournalEvents>, 'on' | 'once' | 'off'> {
  /** Record a new migration in phase `planned`. Fails with JOURNAL_DUPLICATE if the id exists. */
  create(plan: MigrationPlan, at?: number): void;
  /** Append an entry; `enter` also moves the migration's current phase. Returns the entry's seq. */
  append(entry: Omit<JournalEntry, 'seq'>): number;
  /** Resolves once every entry appended before the call is on stable storage; rejects if it cannot be. */
  flushed(): Promise<void>;
  /** Every entry of one migration, oldest first. */
  entries(migrationId: string): JournalEntry[];
  /** The migration as the journal knows it, or undefined. */
  get(id: string): MigrationRecord | undefined;
  /** The migrations of `ids`, in that order (unknown ids left out). */
  getMany(ids: readonly string[]): MigrationRecord[];
  /** Every migration in brief, oldest first; with `changedAfter`, only those with an entry after that seq. */
  briefs(opts?: { changedAfter?: number }): MigrationBrief[];
  /** The seq of the newest entry (0 when none): it changes with every write. */
  lastSeq(): number;
  /**
   * Ids of migrations, newest first (created_at, then id), at most `limit`, after the one created
   * at `after.createdAt` with id `after.id`; only those of `domain`, and with `active`, only those
   * not ended (true) or only ended ones (false).
   */
  page(opts: {
    limit: number;
    after?: { createdAt: number; id: string };
    domain?: string;
    active?: boolean;
  }): Array<{ id: string; createdAt: number }>;
  /** Ids of every migration, newest first. */
  list(): string[];
  /**
   * Take in what other writers committed since the last read (a follower keeping its copy
   * current, a new leader catching up before it resumes). Resolves with the number of new entries;
   * a store whose reads always see the storage (SQLite) resolves with 0.
   */
  refresh(): Promise<number>;
  close(): void | Promise<void>;
}

/** Whether a migration in `phase` whose newest entry is `last` has nothing left to do. */
export function isSettled(
  phase: Phase,
  last: { kind: string | null; phase: string | null } | undefined,
): boolean {
  return phase === 'completed'
    ? last?.kind === 'leave' && last.phase === 'completed'
    : TERMINAL_PHASES.has(phase);
}

/**
 * A migration's record from its row and its marks (its `enter` entries and removal notes, oldest
 * first): what every store builds `get` from.
 */
export function buildRecord(
  row: { plan: MigrationPlan; phase: Phase; createdAt: number; updatedAt: number; error: string | null },
  marks: readonly JournalEntry[],
  last: { kind: string | null; phase: string | null } | undefined,
): MigrationRecord {
  const phases: MigrationRecord['phases'] = [];
  for (const e of marks) {
    if (e.kind !== 'enter') continue;
    const prev = phases[phases.length - 1];
    if (prev && prev.endedAt === null) prev.endedAt = e.at;
    if (prev && prev.name === e.phase) {
      prev.endedAt = null; // re-entered on resume: the same phase goes on
      continue;
    }
    phases.push({ name: e.phase, startedAt: e.at, endedAt: null });
  }
  return {
    plan: row.plan,
    phase: row.phase,
    settled: isSettled(row.phase, last),
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    ...(row.error !== null ? { error: row.error } : {}),
    phases,
    ...removedAt(marks),
  };
}

/**
 * When the last redirect at IPt and the last temporary IP were removed, from the journal's notes
 * (absent: never set up, as in direct mode, or not removed yet).
 */
export function removedAt(entries: readonly JournalEntry[]): {
  redirectRemovedAt?: number;
  tempIpRemovedAt?: number;
} {
  const last = (step: string) => entries.filter((e) => e.kind === 'note' && e.step === step).pop()?.at;
  const redirect = last(STEP.redirectRemoved);
  const tempIp = last(STEP.tempIpRemoved);
  return {
    ...(redirect !== undefined ? { redirectRemovedAt: redirect } : {}),
    ...(tempIp !== undefined ? { tempIpRemovedAt: tempIp } : {}),
  };
}
