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
  error TEXT
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
  private marksStmt: Database.Statement | undefined;
  private lastStmt: Database.Statement | undefined;
  private rowsStmt: Database.Statement | undefined;

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

  /** Record a new migration in phase `planned`. Fails with JOURNAL_DUPLICATE if the id exists. */
  create(plan: MigrationPlan, at = Date.now()): void {
    const tx = this.db.transaction(() => {
      const exists = this.db.prepare('SELECT 1 FROM migrations WHERE id = ?').get(plan.id);
      if (exists) throw new FerryError('JOURNAL_DUPLICATE', `migration ${plan.id} exists already`);
      this.db
        .prepare('INSERT INTO migrations (id, plan, phase, created_at, updated_at) VALUES (?, ?, ?, ?, ?)')
        .run(plan.id, JSON.stringify(plan), 'planned', at, at);
      this.insert({ migrationId: plan.id, at, phase: 'planned', kind: 'enter' });
    });
    tx();
    this.dirty = true;
  }

  /** Append an entry; `enter` also moves the migration's current phase. Returns the entry's seq. */
  append(entry: Omit<JournalEntry, 'seq'>): number {
    const tx = this.db.transaction(() => {
      const seq = this.insert(entry);
      if (entry.kind === 'enter') {
        this.db
          .prepare('UPDATE migrations SET phase = ?, updated_at = ? WHERE id = ?')
          .run(entry.phase, entry.at, entry.migrationId);
      } else {
        this.db.prepare('UPDATE migrations SET updated_at = ? WHERE id = ?').run(entry.at, entry.migrationId);
      }
      if (entry.kind === 'error') {
        this.db
          .prepare('UPDATE migrations SET error = ? WHERE id = ?')
          .run(String(entry.detail?.message ?? 'error'), entry.migrationId);
      }
      return seq;
    });
    const seq = tx();
    this.dirty = true;
    return seq;
  }

  private insert(entry: Omit<JournalEntry, 'seq'>): number {
    const res = this.db
      .prepare('INSERT INTO journal (migration_id, at, phase, kind, step, detail) VALUES (?, ?, ?, ?, ?, ?)')
      .run(
        entry.migrationId,
        entry.at,
        entry.phase,
        entry.kind,
        entry.step ?? null,
        entry.detail ? JSON.stringify(entry.detail) : null,
      );
    return Number(res.lastInsertRowid);
  }

  /** Every entry of one migration, oldest first. */
  entries(migrationId: string): JournalEntry[] {
    const rows = this.db
      .prepare('SELECT * FROM journal WHERE migration_id = ? ORDER BY seq')
      .all(migrationId) as JournalRow[];
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
   * The migrations of `ids` as the journal knows them, in that order (unknown ids left out). Read
   * in three queries whatever their number, from what a record is made of only: the phase
   * entries, the removal notes and each one's last entry (no detail parsed), so that a page of
   * records stays cheap however long each journal is.
   */
  getMany(ids: readonly string[]): MigrationRecord[] {
    if (ids.length === 0) return [];
    const list = JSON.stringify(ids);
    this.rowsStmt ??= this.db.prepare(
      'SELECT * FROM migrations WHERE id IN (SELECT value FROM json_each(?))',
    );
    // One row per migration (rows cost more than their content): its marks as a JSON array.
    this.marksStmt ??= this.db.prepare(
      `SELECT migration_id, json_group_array(json_array(seq, at, phase, kind, step)) AS marks FROM (
         SELECT migration_id, seq, at, phase, kind, step FROM journal
           WHERE migration_id IN (SELECT value FROM json_each(@list)) AND kind = 'enter'
         UNION ALL
         SELECT migration_id, seq, at, phase, kind, step FROM journal
           WHERE migration_id IN (SELECT value FROM json_each(@list)) AND kind = 'note' AND step IN (@redirect, @tempIp)
       ) GROUP BY migration_id`,
    );
    this.lastStmt ??= this.db.prepare(
      `SELECT value AS id,
         (SELECT kind FROM journal WHERE migration_id = value ORDER BY seq DESC LIMIT 1) AS kind,
         (SELECT phase FROM journal WHERE migration_id = value ORDER BY seq DESC LIMIT 1) AS phase
       FROM json_each(?)`,
    );
    const rows = new Map(
      (
        this.rowsStmt.all(list) as Array<{
          id: string;
          plan: string;
          phase: string;
          created_at: number;
          updated_at: number;
          error: string | null;
        }>
      ).map((r) => [r.id, r]),
    );
    const marks = new Map<string, JournalEntry[]>();
    for (const r of this.marksStmt.all({
      list,
      redirect: STEP.redirectRemoved,
      tempIp: STEP.tempIpRemoved,
    }) as Array<{
      migration_id: string;
      marks: string;
    }>) {
      const parsed = JSON.parse(r.marks) as Array<
        [number, number, Phase, JournalEntry['kind'], JournalStep | null]
      >;
      parsed.sort((a, b) => a[0] - b[0]);
      marks.set(
        r.migration_id,
        parsed.map(([seq, at, phase, kind, step]) => ({
          seq,
          migrationId: r.migration_id,
          at,
          phase,
          kind,
          ...(step !== null ? { step } : {}),
        })),
      );
    }
    const lasts = new Map(
      (this.lastStmt.all(list) as Array<{ id: string; kind: string | null; phase: string | null }>).map(
        (r) => [r.id, r],
      ),
    );
    const out: MigrationRecord[] = [];
    for (const id of ids) {
      const row = rows.get(id);
      if (!row) continue;
      out.push(
        buildRecord(
          {
            plan: JSON.parse(row.plan) as MigrationPlan,
            phase: row.phase as Phase,
            createdAt: row.created_at,
            updatedAt: row.updated_at,
            error: row.error,
          },
          marks.get(id) ?? [],
          lasts.get(id),
        ),
      );
    }
    return out;
  }

  /**
   * Every migration in brief (no journal entries parsed), oldest first; with `changedAfter`, only
   * those with an entry after that seq (see `lastSeq`).
   */
  briefs(opts: { changedAfter?: number } = {}): MigrationBrief[] {
    const changed = opts.changedAfter !== undefined;
    const rows = this.db
      .prepare(
        `SELECT m.id, m.plan, m.phase, m.created_at,
           (SELECT kind FROM journal j WHERE j.migration_id = m.id ORDER BY seq DESC LIMIT 1) AS last_kind,
           (SELECT phase FROM journal j WHERE j.migration_id = m.id ORDER BY seq DESC LIMIT 1) AS last_phase
         FROM migrations m
         ${changed ? 'WHERE m.id IN (SELECT DISTINCT migration_id FROM journal WHERE seq > ?)' : ''}
         ORDER BY m.created_at, m.id`,
      )
      .all(...(changed ? [opts.changedAfter] : [])) as Array<{
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
   * Ids of migrations, newest first (created_at, then id), at most `limit`, after the one created
   * at `after.createdAt` with id `after.id`; only those of `domain`, and with `active`, only those
   * not ended (true) or only ended ones (false).
   */
  page(opts: {
    limit: number;
    after?: { createdAt: number; id: string };
    domain?: string;
    active?: boolean;
  }): Array<{ id: string; createdAt: number }> {
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
    const sql = `SELECT id, created_at FROM migrations ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY created_at DESC, id LIMIT ?`;
    return (this.db.prepare(sql).all(...args, opts.limit) as Array<{ id: string; created_at: number }>).map(
      (r) => ({ id: r.id, createdAt: r.created_at }),
    );
  }

  /** Ids of every migration, newest first. */
  list(): string[] {
    return (
      this.db.prepare('SELECT id FROM migrations ORDER BY created_at DESC, id').all() as Array<{ id: string }>
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
