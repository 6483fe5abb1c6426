/**
 * The migration journal in SQLite (better-sqlite3). Migrations and their entries live in one
 * file; a resumed controller rebuilds each migration's state from it.
 *
 * Durability without stalling the event loop: an append is a synchronous SQLite commit in WAL
 * mode with synchronous=NORMAL, so the entry has reached the OS (it survives the controller being
 * killed) when `append` returns. `flushed()` then fsyncs the WAL file on libuv's thread pool, so it
 * survives a power loss too; the orchestrator awaits it before any side effect of a step
 * ("journal, then act"). Concurrent migrations share fsyncs (group commit): one in flight, at
 * most one queued behind it covering every append made meanwhile. SQLite's own synchronous=FULL
 * would fsync inside each commit on the event loop; under disk contention that stalled the
 * controller (its API, its embedded DNS) for seconds.
 */
import Database from 'better-sqlite3';
import { EventEmitter } from 'node:events';
import { closeSync, fsync, fsyncSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { FerryError } from '../common/errors.js';
import {
  buildRecord,
  isSettled,
  type JournalEvents,
  type JournalStore,
  type MigrationBrief,
} from './journal-store.js';
import { STEP, type JournalStep } from './steps.js';
import {
  TERMINAL_PHASES,
  type JournalEntry,
  type MigrationPlan,
  type MigrationRecord,
  type Phase,
} from './types.js';

export { removedAt, type MigrationBrief } from './journal-store.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS migrations (
  id TEXT PRIMARY KEY,
  plan TEXT NOT NULL,
  phase TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  error TEXT,
  marks TEXT,
  last_kind TEXT,
  last_phase TEXT
);
CREATE TABLE IF NOT EXISTS journal (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  migration_id TEXT NOT NULL REFERENCES migrations(id),
  at INTEGER NOT NULL,
  phase TEXT NOT NULL,
  kind TEXT NOT NULL,
  step TEXT,
  detail TEXT
);
CREATE INDEX IF NOT EXISTS journal_by_migration ON journal(migration_id, seq);
CREATE INDEX IF NOT EXISTS migrations_by_age ON migrations(created_at, id);
CREATE INDEX IF NOT EXISTS journal_marks ON journal(migration_id, kind, seq, at, phase, step);
`;

interface JournalRow {
  seq: number;
  migration_id: string;
  at: number;
  phase: string;
  kind: string;
  step: string | null;
  detail: string | null;
}

export interface JournalOptions {
  /**
   * Every entry reaches the OS before `append` returns (SQLite WAL, synchronous=NORMAL), so it
   * survives the controller being killed. `full` (default): `flushed()` also fsyncs it, off the
   * event loop, so it survives a power loss. `process`: `flushed()` resolves at once; for the
   * in-process sandbox, whose hosts share the controller's event loop and should not wait on the disk.
   */
  durability?: 'full' | 'process';
  /** Replaces the fsync of the WAL file (tests: a slow or failing disk). */
  fsync?: (fd: number) => Promise<void>;
}

function fsyncAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsync(fd, (err) => (err ? reject(err) : resolve())));
}

/** A row of the migrations table. */
interface MigrationRow {
  id: string;
  plan: string;
  phase: string;
  created_at: number;
  updated_at: number;
  error: string | null;
  marks: string;
  last_kind: string | null;
  last_phase: string | null;
}

/** The record of a migration from its row alone (its summary columns: phases, removal notes, last entry). */
function recordOf(row: MigrationRow): MigrationRecord {
  // Marks are appended in seq order (and filled in seq order for older journals).
  const marks = (
    JSON.parse(row.marks) as Array<[number, number, Phase, JournalEntry['kind'], JournalStep | null]>
  ).map(([seq, at, phase, kind, step]) => ({
    seq,
    migrationId: row.id,
    at,
    phase,
    kind,
    ...(step !== null ? { step } : {}),
  }));
  return buildRecord(
    {
      plan: JSON.parse(row.plan) as MigrationPlan,
      phase: row.phase as Phase,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
      error: row.error,
    },
    marks,
    { kind: row.last_kind, phase: row.last_phase },
  );
}

/** The journal in a SQLite file (`JournalStore`). `path` ':memory:' keeps it in memory (tests). */
export class Journal extends EventEmitter<JournalEvents> implements JournalStore {
  private readonly db: Database.Database;
  /** The WAL file, fsync'd by `flushed()` (null: nothing to fsync, `process` or in memory). */
  private walFd: number | null = null;
  private readonly fsyncFn: (fd: number) => Promise<void>;
  /** Appends not yet covered by a started fsync. */
  private dirty = false;
  private inflight: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  private lastSeqStmt: Database.Statement | undefined;
  private rowsStmt: Database.Statement | undefined;
  private readonly statements = new Map<string, Database.Statement>();

  constructor(path: string, opts: JournalOptions = {}) {
    super();
    try {
      if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
      this.db = new Database(path);
    } catch (err) {
      throw new FerryError('JOURNAL_OPEN', `cannot open the journal database at ${path}`, { cause: err });
    }
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(SCHEMA);
    this.summarizeOlder();
    this.fsyncFn = opts.fsync ?? fsyncAsync;
    if (path !== ':memory:' && opts.durability !== 'process') {
      try {
        this.walFd = openSync(`${path}-wal`, 'r');
        // Once: the WAL file's directory entry (and the database's) must survive a power loss too.
        const dir = openSync(dirname(path), 'r');
        try {
          fsyncSync(dir);
        } finally {
          closeSync(dir);
        }
      } catch (err) {
        this.db.close();
        throw new FerryError('JOURNAL_OPEN', `cannot open the journal's write-ahead log at ${path}-wal`, {
          cause: err,
        });
      }
    }
  }

  /**
   * Resolves once every entry appended so far is on stable storage (`full`), at once otherwise.
   * Never blocks the event loop; rejects if the disk reports an error.
   */
  flushed(): Promise<void> {
    if (this.walFd === null || (!this.dirty && !this.inflight)) return Promise.resolve();
    if (!this.inflight) return this.startFsync();
    if (!this.dirty) return this.inflight; // the running fsync covers every append
    // Appends after the running fsync began: one more fsync after it covers them all.
    this.queued ??= this.inflight.then(
      () => this.startFsync(),
      () => this.startFsync(),
    );
    return this.queued;
  }

  private startFsync(): Promise<void> {
    this.queued = null;
    this.dirty = false;
    const p: Promise<void> = this.fsyncFn(this.walFd!).finally(() => {
      if (this.inflight === p) this.inflight = null;
    });
    this.inflight = p;
    return p;
  }

  /**
   * A journal of an earlier version: each migration's summary columns (`marks`: its phase entries
   * and removal notes as [seq, at, phase, kind, step]; `last_kind`, `last_phase`: its last entry),
   * which every append keeps since, are filled once from its entries.
   */
  private summarizeOlder(): void {
    const columns = new Set(
      (this.db.prepare('PRAGMA table_info(migrations)').all() as Array<{ name: string }>).map((c) => c.name),
    );
    for (const c of ['marks', 'last_kind', 'last_phase'])
      if (!columns.has(c)) this.db.exec(`ALTER TABLE migrations ADD COLUMN ${c} TEXT`);
    this.db.exec(`UPDATE migrations SET
        marks = (SELECT json_group_array(json_array(seq, at, phase, kind, step) ORDER BY seq) FROM journal
          WHERE migration_id = migrations.id
            AND (kind = 'enter' OR (kind = 'note' AND step IN ('${STEP.redirectRemoved}', '${STEP.tempIpRemoved}')))),
        last_kind = (SELECT kind FROM journal WHERE migration_id = migrations.id ORDER BY seq DESC LIMIT 1),
        last_phase = (SELECT phase FROM journal WHERE migration_id = migrations.id ORDER BY seq DESC LIMIT 1)
      WHERE marks IS NULL`);
  }

  /** Record a new migration in phase `planned`. Fails with JOURNAL_DUPLICATE if the id exists. */
  create(plan: MigrationPlan, at = Date.now()): void {
    const tx = this.db.transaction(() => {
      const exists = this.stmt('SELECT 1 FROM migrations WHERE id = ?').get(plan.id);
      if (exists) throw new FerryError('JOURNAL_DUPLICATE', `migration ${plan.id} exists already`);
      this.stmt(
        "INSERT INTO migrations (id, plan, phase, created_at, updated_at, marks) VALUES (?, ?, ?, ?, ?, '[]')",
      ).run(plan.id, JSON.stringify(plan), 'planned', at, at);
      this.insert({ migrationId: plan.id, at, phase: 'planned', kind: 'enter' });
    });
    tx();
    this.dirty = true;
  }

  /** Append an entry; `enter` also moves the migration's current phase. Returns the entry's seq. */
  append(entry: Omit<JournalEntry, 'seq'>): number {
    const seq = this.appendTx(entry);
    this.dirty = true;
    return seq;
  }

  private readonly appendTx = (entry: Omit<JournalEntry, 'seq'>): number =>
    this.db.transaction(() => this.insert(entry))();

  /**
   * Insert `entry` and bring its migration's row along in one statement: its phase (an `enter`),
   * last change, error (an `error`) and summary columns (see `summarizeOlder`).
   */
  private insert(entry: Omit<JournalEntry, 'seq'>): number {
    const res = this.stmt(
      'INSERT INTO journal (migration_id, at, phase, kind, step, detail) VALUES (?, ?, ?, ?, ?, ?)',
    ).run(
      entry.migrationId,
      entry.at,
      entry.phase,
      entry.kind,
      entry.step ?? null,
      entry.detail ? JSON.stringify(entry.detail) : null,
    );
    const seq = Number(res.lastInsertRowid);
    const mark =
      entry.kind === 'enter' ||
      (entry.kind === 'note' && (entry.step === STEP.redirectRemoved || entry.step === STEP.tempIpRemoved));
    this.stmt(
      `UPDATE migrations SET updated_at = @at, last_kind = @kind, last_phase = @phase,
         phase = CASE WHEN @enter THEN @phase ELSE phase END,
         error = CASE WHEN @error IS NOT NULL THEN @error ELSE error END,
         marks = CASE WHEN @mark THEN json_insert(marks, '$[#]', json(@entry)) ELSE marks END
       WHERE id = @id`,
    ).run({
      id: entry.migrationId,
      at: entry.at,
      kind: entry.kind,
      phase: entry.phase,
      enter: entry.kind === 'enter' ? 1 : 0,
      error: entry.kind === 'error' ? String(entry.detail?.message ?? 'error') : null,
      mark: mark ? 1 : 0,
      entry: mark ? JSON.stringify([seq, entry.at, entry.phase, entry.kind, entry.step ?? null]) : null,
    });
    return seq;
  }

  /** The statement of `sql`, compiled once (a journal runs a few fixed ones, and the page variants). */
  private stmt(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) this.statements.set(sql, (st = this.db.prepare(sql)));
    return st;
  }

  /** Every entry of one migration, oldest first. */
  entries(migrationId: string): JournalEntry[] {
    const rows = this.stmt('SELECT * FROM journal WHERE migration_id = ? ORDER BY seq').all(
      migrationId,
    ) as JournalRow[];
    return rows.map((r) => ({
      seq: r.seq,
      migrationId: r.migration_id,
      at: r.at,
      phase: r.phase as Phase,
      kind: r.kind as JournalEntry['kind'],
      ...(r.step !== null ? { step: r.step as JournalStep } : {}),
      ...(r.detail !== null ? { detail: JSON.parse(r.detail) as Record<string, unknown> } : {}),
    }));
  }

  /** The migration as the journal knows it, or undefined. */
  get(id: string): MigrationRecord | undefined {
    return this.getMany([id])[0];
  }

  /**
   * The migrations of `ids` as the journal knows them, in that order (unknown ids left out). One
   * query whatever their number, of each migration's row alone: its summary columns (kept by every
   * append) hold what a record is made of, so a page of records stays cheap however long each
   * journal is.
   */
  getMany(ids: readonly string[]): MigrationRecord[] {
    if (ids.length === 0) return [];
    this.rowsStmt ??= this.db.prepare(
      'SELECT * FROM migrations WHERE id IN (SELECT value FROM json_each(?))',
    );
    const rows = new Map((this.rowsStmt.all(JSON.stringify(ids)) as MigrationRow[]).map((r) => [r.id, r]));
    const out: MigrationRecord[] = [];
    for (const id of ids) {
      const row = rows.get(id);
      if (row) out.push(recordOf(row));
    }
    return out;
  }

  /**
   * Every migration in brief (no journal entries parsed), oldest first; with `changedAfter`, only
   * those with an entry after that seq (see `lastSeq`).
   */
  briefs(opts: { changedAfter?: number } = {}): MigrationBrief[] {
    const changed = opts.changedAfter !== undefined;
    const rows = this.stmt(
      `SELECT m.id, m.plan, m.phase, m.created_at, m.last_kind, m.last_phase
         FROM migrations m
         ${changed ? 'WHERE m.id IN (SELECT DISTINCT migration_id FROM journal WHERE seq > ?)' : ''}
         ORDER BY m.created_at, m.id`,
    ).all(...(changed ? [opts.changedAfter] : [])) as Array<{
      id: string;
      plan: string;
      phase: string;
      created_at: number;
      last_kind: string | null;
      last_phase: string | null;
    }>;
    return rows.map((r) => {
      const phase = r.phase as Phase;
      const settled = isSettled(phase, { kind: r.last_kind, phase: r.last_phase });
      return { id: r.id, plan: JSON.parse(r.plan) as MigrationPlan, phase, settled, createdAt: r.created_at };
    });
  }

  /** The seq of the newest entry (0 when none): it changes with every write, so a copy can tell it is stale. */
  lastSeq(): number {
    this.lastSeqStmt ??= this.db.prepare('SELECT MAX(seq) AS seq FROM journal');
    return (this.lastSeqStmt.get() as { seq: number | null }).seq ?? 0;
  }

  /**
   * Migrations, newest first (created_at, then id), at most `limit`, after the one created at
   * `after.createdAt` with id `after.id`; only those of `domain`, and with `active`, only those
   * not ended (true) or only ended ones (false). One query, each record from its row alone.
   */
  page(opts: {
    limit: number;
    after?: { createdAt: number; id: string };
    domain?: string;
    active?: boolean;
  }): MigrationRecord[] {
    const where: string[] = [];
    const args: Array<string | number> = [];
    if (opts.after) {
      where.push('(created_at < ? OR (created_at = ? AND id > ?))');
      args.push(opts.after.createdAt, opts.after.createdAt, opts.after.id);
    }
    if (opts.domain !== undefined) {
      where.push("json_extract(plan, '$.domain') = ?");
      args.push(opts.domain);
    }
    if (opts.active !== undefined) {
      const ended = [...TERMINAL_PHASES];
      where.push(`phase ${opts.active ? 'NOT IN' : 'IN'} (${ended.map(() => '?').join(', ')})`);
      args.push(...ended);
    }
    const sql = `SELECT * FROM migrations ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY created_at DESC, id LIMIT ?`;
    return (this.stmt(sql).all(...args, opts.limit) as MigrationRow[]).map(recordOf);
  }

  /** Ids of every migration, newest first. */
  list(): string[] {
    return (
      this.stmt('SELECT id FROM migrations ORDER BY created_at DESC, id').all() as Array<{ id: string }>
    ).map((r) => r.id);
  }

  /** Every read queries the file itself: nothing to take in. */
  refresh(): Promise<number> {
    return Promise.resolve(0);
  }

  close(): void {
    this.db.close();
    if (this.walFd !== null) closeSync(this.walFd);
    this.walFd = null;
  }
}
