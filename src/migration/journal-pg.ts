/**
 * The journal in PostgreSQL (`JournalStore`), for controllers that share their state.
 *
 * Every row is loaded at open into a copy in memory that serves all reads, so reads and `append`
 * stay synchronous as with SQLite. `append` updates the copy and queues the row; `flushed()`
 * resolves once everything appended before it is committed (one statement in flight, the rows
 * appended meanwhile batched into the next, as SQLite's group fsync). A failed commit or a lost
 * connection rejects `flushed()` with JOURNAL_LOST, emits `lost` once and refuses further appends
 * (a commit cut off by the connection's loss may or may not have landed: reopen to know).
 *
 * The writer numbers entries itself (seq = the newest it knows + 1, a primary key), so `append`
 * can answer at once, and two writers that believe they lead collide on the key instead of
 * interleaving: the second commit fails and that journal is lost; a writer paused mid-commit holds
 * nothing up, as each commit is one statement. `refresh()` loads the rows with
 * a seq above the newest known, for a follower or a new leader catching up.
 */
import { EventEmitter } from 'node:events';
import pg from 'pg';
import { FerryError, errorMessage, isFerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';
import {
  buildRecord,
  isSettled,
  type JournalEvents,
  type JournalStore,
  type MigrationBrief,
} from './journal-store.js';
import type { JournalStep } from './steps.js';
import {
  TERMINAL_PHASES,
  type JournalEntry,
  type MigrationPlan,
  type MigrationRecord,
  type Phase,
} from './types.js';

/** Tables are created once, whichever controller comes first (the lock keeps two from racing). */
const SCHEMA = `
SELECT pg_advisory_xact_lock(4650520001);
CREATE TABLE IF NOT EXISTS ferry_migrations (
  id TEXT PRIMARY KEY,
  plan TEXT NOT NULL,
  phase TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  error TEXT
);
CREATE TABLE IF NOT EXISTS ferry_journal (
  seq BIGINT PRIMARY KEY,
  migration_id TEXT NOT NULL REFERENCES ferry_migrations(id),
  at BIGINT NOT NULL,
  phase TEXT NOT NULL,
  kind TEXT NOT NULL,
  step TEXT,
  detail TEXT
);
CREATE INDEX IF NOT EXISTS ferry_journal_by_migration ON ferry_journal(migration_id, seq);
`;

/** SQLSTATE classes that retrying cannot fix: bad password or user (28), no such database (3D). */
const FATAL_SQLSTATE = /^(28|3D)/;

/** `postgres://user:***@host:port/db`: a connection URL fit for a log or an error. */
export function redactPostgresUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const k of [...u.searchParams.keys()]) if (/pass/i.test(k)) u.searchParams.set(k, '***');
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:***@');
  }
}

/** `host:port` of a connection URL (for messages). */
export function postgresEndpoint(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname || 'localhost'}:${u.port || '5432'}`;
  } catch {
    return 'an unparsable URL';
  }
}

/** How `PgJournal.open` connects. */
export interface PgJournalOptions {
  /** The password, when not in the URL (else `PGPASSWORD`, as for psql). */
  password?: string;
  /** First wait between attempts to connect (default 500 ms), doubled up to `retryMaxMs` (default 10 s). */
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** Stop retrying after this long and throw JOURNAL_UNREACHABLE (default: retry until `signal`). */
  giveUpAfterMs?: number;
  /** Told of every failed attempt before the wait (the controller logs it; the message holds no secret). */
  onRetry?: (info: { attempt: number; delayMs: number; message: string }) => void;
  /** Aborts the retries (SIGTERM while PostgreSQL is unreachable). */
  signal?: AbortSignal;
  /** Per attempt (default 5 s). */
  connectTimeoutMs?: number;
}

/** Whose writes the journal takes (`fenceWith`): the lease row `lease` of the `ferry_leader` table. */
export interface JournalWriter {
  /** The lease's name (its row). */
  lease: string;
  /** This controller's id in the lease. */
  holder: string;
  /** The token of this controller's tenure, the last one when it stepped down; undefined when it never led. */
  token: () => bigint | undefined;
}

interface MigrationCopy {
  plan: string;
  phase: Phase;
  createdAt: number;
  updatedAt: number;
  error: string | null;
  /** Entries, oldest first; `detail` kept as its JSON text and parsed on read, as SQLite does. */
  entries: StoredEntry[];
}

interface StoredEntry {
  seq: number;
  at: number;
  phase: Phase;
  kind: JournalEntry['kind'];
  step: JournalStep | null;
  detail: string | null;
}

type Pending =
  | { kind: 'migration'; id: string; plan: string; at: number }
  | { kind: 'entry'; migrationId: string; entry: StoredEntry };

interface Waiter {
  upTo: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** The journal in PostgreSQL; open it with `PgJournal.open`. */
export class PgJournal extends EventEmitter<JournalEvents> implements JournalStore {
  private readonly migrations = new Map<string, MigrationCopy>();
  private newest = 0;
  /** Rows appended and not yet sent. */
  private pending: Pending[] = [];
  /** A commit is scheduled for what was appended (see `append`). */
  private commitSoon = false;
  /** Appends made so far (a counter), and how many of them are committed. */
  private appended = 0;
  private committed = 0;
  private committing = false;
  private waiters: Waiter[] = [];
  private lostError: FerryError | null = null;
  private closed = false;
  private writer: JournalWriter | undefined;

  private constructor(
    private readonly client: pg.Client,
    private readonly where: string,
  ) {
    super();
    client.on('error', (err) => this.lose(err));
    client.on('end', () => {
      if (!this.closed) this.lose(new Error('the connection ended'));
    });
  }

  /**
   * Connect (retrying with backoff while PostgreSQL is unreachable), create the tables if need be
   * and load every migration. Throws JOURNAL_OPEN for what retrying cannot fix (refused
   * password, no such database), JOURNAL_UNREACHABLE after `giveUpAfterMs`, or the signal's reason.
   */
  static async open(url: string, opts: PgJournalOptions = {}): Promise<PgJournal> {
    const where = `PostgreSQL at ${postgresEndpoint(url)}`;
    const started = Date.now();
    let delay = opts.retryInitialMs ?? 500;
    for (let attempt = 1; ; attempt++) {
      opts.signal?.throwIfAborted();
      const client = new pg.Client({
        connectionString: withPassword(url, opts.password),
        connectionTimeoutMillis: opts.connectTimeoutMs ?? 5000,
        application_name: 'ferry-controller',
      });
      // An error between attempts (a reset socket) must not be an unhandled 'error' event.
      const early = (): void => undefined;
      client.on('error', early);
      try {
        await client.connect();
        await client.query(`BEGIN; ${SCHEMA} COMMIT;`);
        const journal = new PgJournal(client, where);
        client.off('error', early);
        await journal.load();
        return journal;
      } catch (err) {
        await client.end().catch(() => undefined);
        const message = `cannot reach ${where}: ${pgMessage(err)}`;
        const code = (err as { code?: unknown }).code;
        // Refused credentials or database, or a password the client cannot use: retrying will not help.
        if (
          (typeof code === 'string' && FATAL_SQLSTATE.test(code)) ||
          /SASL|password/i.test(errorMessage(err))
        )
          throw new FerryError('JOURNAL_OPEN', `${where} refused the journal: ${pgMessage(err)}`, {
            cause: err,
          });
        if (opts.giveUpAfterMs !== undefined && Date.now() - started + delay > opts.giveUpAfterMs)
          throw new FerryError('JOURNAL_UNREACHABLE', `${message} (gave up after ${attempt} attempts)`, {
            cause: err,
          });
        opts.onRetry?.({ attempt, delayMs: delay, message });
        await sleep(delay, opts.signal);
        delay = Math.min(delay * 2, opts.retryMaxMs ?? 10_000);
      }
    }
  }

  /** Load the rows this copy has not seen (all of them at open). */
  private async load(): Promise<number> {
    // Entries first, then the migrations they name: a migration committed between the two reads
    // is found either way (its row commits with its first entry), never skipped.
    const rows = await this.client.query<{
      seq: string;
      migration_id: string;
      at: string;
      phase: string;
      kind: string;
      step: string | null;
      detail: string | null;
    }>(
      'SELECT seq, migration_id, at, phase, kind, step, detail FROM ferry_journal WHERE seq > $1 ORDER BY seq',
      [this.newest],
    );
    const unknown = [...new Set(rows.rows.map((r) => r.migration_id))].filter(
      (id) => !this.migrations.has(id),
    );
    if (unknown.length > 0) {
      const migs = await this.client.query<{ id: string; plan: string; created_at: string }>(
        'SELECT id, plan, created_at FROM ferry_migrations WHERE id = ANY($1::text[])',
        [unknown],
      );
      for (const r of migs.rows) {
        const at = Number(r.created_at);
        this.migrations.set(r.id, {
          plan: r.plan,
          phase: 'planned',
          createdAt: at,
          updatedAt: at,
          error: null,
          entries: [],
        });
      }
    }
    for (const r of rows.rows) {
      const m = this.migrations.get(r.migration_id);
      if (!m) continue; // cannot happen (foreign key), but a copy must not crash on it
      this.apply(m, {
        seq: Number(r.seq),
        at: Number(r.at),
        phase: r.phase as Phase,
        kind: r.kind as JournalEntry['kind'],
        step: r.step as JournalStep | null,
        detail: r.detail,
      });
    }
    return rows.rows.length;
  }

  /** An entry into the copy: the migration's phase, time and error move as in the table. */
  private apply(m: MigrationCopy, e: StoredEntry): void {
    m.entries.push(e);
    if (e.kind === 'enter') m.phase = e.phase;
    m.updatedAt = e.at;
    if (e.kind === 'error') {
      const detail = e.detail ? (JSON.parse(e.detail) as Record<string, unknown>) : undefined;
      m.error = String(detail?.message ?? 'error');
    }
    if (e.seq > this.newest) this.newest = e.seq;
  }

  private refuseIfLost(): void {
    if (this.lostError) throw this.lostError;
    if (this.closed) throw new FerryError('JOURNAL_LOST', `the journal on ${this.where} is closed`);
  }

  create(plan: MigrationPlan, at = Date.now()): void {
    this.refuseIfLost();
    if (this.migrations.has(plan.id))
      throw new FerryError('JOURNAL_DUPLICATE', `migration ${plan.id} exists already`);
    const text = JSON.stringify(plan);
    this.migrations.set(plan.id, {
      plan: text,
      phase: 'planned',
      createdAt: at,
      updatedAt: at,
      error: null,
      entries: [],
    });
    this.pending.push({ kind: 'migration', id: plan.id, plan: text, at });
    this.append({ migrationId: plan.id, at, phase: 'planned', kind: 'enter' });
  }

  append(entry: Omit<JournalEntry, 'seq'>): number {
    this.refuseIfLost();
    const m = this.migrations.get(entry.migrationId);
    if (!m) throw new FerryError('MIGRATION_NOT_FOUND', `no migration with id ${entry.migrationId}`);
    const stored: StoredEntry = {
      seq: this.newest + 1,
      at: entry.at,
      phase: entry.phase,
      kind: entry.kind,
      step: entry.step ?? null,
      detail: entry.detail ? JSON.stringify(entry.detail) : null,
    };
    this.apply(m, stored);
    this.pending.push({ kind: 'entry', migrationId: entry.migrationId, entry: stored });
    this.appended++;
    // Committed soon even when nobody waits on it (a last entry, a note): other controllers then
    // see it, and a crash does not lose it. flushed() stays the wait before a side effect.
    if (!this.commitSoon) {
      this.commitSoon = true;
      setImmediate(() => {
        this.commitSoon = false;
        void this.commitLoop();
      });
    }
    return stored.seq;
  }

  flushed(): Promise<void> {
    if (this.committed >= this.appended) return Promise.resolve();
    if (this.lostError) return Promise.reject(this.lostError);
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ upTo: this.appended, resolve, reject });
      void this.commitLoop();
    });
  }

  /** One transaction at a time, each carrying every row appended before it began. */
  private async commitLoop(): Promise<void> {
    if (this.committing) return;
    this.committing = true;
    try {
      while (this.pending.length > 0 && !this.lostError) {
        const batch = this.pending;
        const upTo = this.appended;
        this.pending = [];
        try {
          await this.commit(batch);
        } catch (err) {
          this.lose(err);
          return;
        }
        this.committed = upTo;
        const done = this.waiters.filter((w) => w.upTo <= upTo);
        this.waiters = this.waiters.filter((w) => w.upTo > upTo);
        for (const w of done) w.resolve();
      }
    } finally {
      this.committing = false;
    }
  }

  /**
   * One statement, so one implicit transaction with no moment in between: with BEGIN … COMMIT as
   * separate round trips, a controller paused between them (SIGSTOP, a VM frozen) holds its
   * uncommitted rows' keys, the next leader's insert of the same seq waits on them, and when the
   * paused one wakes and commits, the next leader's journal is the one lost. A statement sent is
   * carried out by PostgreSQL whether or not its sender is still running.
   * The rows of the migrations the batch touches go in as the copy has them now (a new one with its
   * phase so far; later appends only move them further).
   */
  private async commit(batch: Pending[]): Promise<void> {
    const fresh = new Set<string>();
    for (const p of batch) if (p.kind === 'migration') fresh.add(p.id);
    const entries = batch.filter((p): p is Extract<Pending, { kind: 'entry' }> => p.kind === 'entry');
    const touched = new Set<string>(entries.map((e) => e.migrationId));
    const created = [...fresh].map((id) => [id, this.migrations.get(id)!] as const);
    const updated = [...touched]
      .filter((id) => !fresh.has(id))
      .map((id) => [id, this.migrations.get(id)!] as const);
    const w = this.writer;
    const token = w?.token();
    const r = await this.client.query<{ held: boolean; holder: string | null; token: string | null }>(
      `WITH lease AS (
         ${w ? 'SELECT holder, token FROM ferry_leader WHERE name = $18' : 'SELECT NULL::text AS holder, NULL::bigint AS token'}
       ), allowed AS (
         SELECT 1 FROM lease WHERE ${w ? 'holder = $19 AND token = $20::bigint' : 'true'}
       ), created AS (
         INSERT INTO ferry_migrations (id, plan, phase, created_at, updated_at, error)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[])
         WHERE EXISTS (SELECT 1 FROM allowed)
       ), updated AS (
         UPDATE ferry_migrations m SET phase = u.phase, updated_at = u.updated_at, error = u.error
         FROM unnest($7::text[], $8::text[], $9::bigint[], $10::text[]) AS u(id, phase, updated_at, error)
         WHERE m.id = u.id AND EXISTS (SELECT 1 FROM allowed)
       ), entries AS (
         INSERT INTO ferry_journal (seq, migration_id, at, phase, kind, step, detail)
         SELECT * FROM unnest($11::bigint[], $12::text[], $13::bigint[], $14::text[], $15::text[], $16::text[], $17::text[])
         WHERE EXISTS (SELECT 1 FROM allowed)
       )
       SELECT EXISTS (SELECT 1 FROM allowed) AS held, lease.holder, lease.token::text AS token
       FROM (SELECT 1) AS one LEFT JOIN lease ON true`,
      [
        created.map(([id]) => id),
        created.map(([, c]) => c.plan),
        created.map(([, c]) => c.phase),
        created.map(([, c]) => c.createdAt),
        created.map(([, c]) => c.updatedAt),
        created.map(([, c]) => c.error),
        updated.map(([id]) => id),
        updated.map(([, c]) => c.phase),
        updated.map(([, c]) => c.updatedAt),
        updated.map(([, c]) => c.error),
        entries.map((e) => e.entry.seq),
        entries.map((e) => e.migrationId),
        entries.map((e) => e.entry.at),
        entries.map((e) => e.entry.phase),
        entries.map((e) => e.entry.kind),
        entries.map((e) => e.entry.step),
        entries.map((e) => e.entry.detail),
        ...(w ? [w.lease, w.holder, (token ?? -1n).toString()] : []),
      ],
    );
    if (!r.rows[0]?.held)
      throw new FerryError(
        'JOURNAL_LOST',
        `the journal on ${this.where} refused ${entries.length} entries: ${w!.holder} last led with token ${token ?? 'none'}, the lease is ${r.rows[0]?.holder ? `${r.rows[0].holder}'s with token ${r.rows[0].token}` : 'held by nobody'}; another controller leads`,
      );
  }

  /**
   * Write only while `writer` holds its lease: every commit checks, in its own statement, that the
   * lease row still carries the token this controller last held. A leader that was paused past its
   * lease and wakes with entries not yet sent finds them refused (the journal is then lost to it)
   * instead of landing among the next leader's.
   */
  fenceWith(writer: JournalWriter): void {
    this.writer = writer;
  }

  /** The storage is gone: reject every waiter, refuse appends, say so once. */
  private lose(err: unknown): void {
    if (this.lostError || this.closed) return;
    this.lostError = isFerryError(err)
      ? err
      : new FerryError(
          'JOURNAL_LOST',
          `the journal on ${this.where} is lost (${pgMessage(err)}); nothing more is acknowledged until it is reopened`,
          { cause: err },
        );
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(this.lostError);
    this.emit('lost', this.lostError);
  }

  /** Whether the journal lost its connection (then reads still answer from the copy). */
  get lost(): boolean {
    return this.lostError !== null;
  }

  async refresh(): Promise<number> {
    this.refuseIfLost();
    try {
      return await this.load();
    } catch (err) {
      this.lose(err);
      throw this.lostError!;
    }
  }

  entries(migrationId: string): JournalEntry[] {
    const m = this.migrations.get(migrationId);
    if (!m) return [];
    return m.entries.map((e) => toEntry(migrationId, e));
  }

  get(id: string): MigrationRecord | undefined {
    return this.getMany([id])[0];
  }

  getMany(ids: readonly string[]): MigrationRecord[] {
    const out: MigrationRecord[] = [];
    for (const id of ids) {
      const m = this.migrations.get(id);
      if (!m) continue;
      const marks = m.entries
        .filter((e) => e.kind === 'enter' || (e.kind === 'note' && e.step !== null))
        .map((e) => toEntry(id, { ...e, detail: null }));
      const last = m.entries[m.entries.length - 1];
      out.push(
        buildRecord(
          {
            plan: JSON.parse(m.plan) as MigrationPlan,
            phase: m.phase,
            createdAt: m.createdAt,
            updatedAt: m.updatedAt,
            error: m.error,
          },
          marks,
          last ? { kind: last.kind, phase: last.phase } : undefined,
        ),
      );
    }
    return out;
  }

  briefs(opts: { changedAfter?: number } = {}): MigrationBrief[] {
    const after = opts.changedAfter;
    return this.sorted()
      .filter(([, m]) => after === undefined || (m.entries[m.entries.length - 1]?.seq ?? 0) > after)
      .map(([id, m]) => {
        const last = m.entries[m.entries.length - 1];
        return {
          id,
          plan: JSON.parse(m.plan) as MigrationPlan,
          phase: m.phase,
          settled: isSettled(m.phase, last ? { kind: last.kind, phase: last.phase } : undefined),
          createdAt: m.createdAt,
        };
      });
  }

  /** Oldest first (created_at, then id), as SQLite's listing. */
  private sorted(): Array<[string, MigrationCopy]> {
    return [...this.migrations].sort(
      ([a, x], [b, y]) => x.createdAt - y.createdAt || (a < b ? -1 : a > b ? 1 : 0),
    );
  }

  lastSeq(): number {
    return this.newest;
  }

  page(opts: {
    limit: number;
    after?: { createdAt: number; id: string };
    domain?: string;
    active?: boolean;
  }): MigrationRecord[] {
    const newestFirst = [...this.migrations].sort(
      ([a, x], [b, y]) => y.createdAt - x.createdAt || (a < b ? -1 : a > b ? 1 : 0),
    );
    const out: string[] = [];
    for (const [id, m] of newestFirst) {
      if (out.length >= opts.limit) break;
      const a = opts.after;
      if (a && !(m.createdAt < a.createdAt || (m.createdAt === a.createdAt && id > a.id))) continue;
      if (opts.domain !== undefined && (JSON.parse(m.plan) as MigrationPlan).domain !== opts.domain) continue;
      if (opts.active !== undefined && TERMINAL_PHASES.has(m.phase) === opts.active) continue;
      out.push(id);
    }
    return this.getMany(out);
  }

  list(): string[] {
    return this.sorted()
      .reverse()
      .map(([id]) => id);
  }

  /**
   * Wait for what is appended to commit (if the connection holds), then disconnect. Appends are
   * refused from then on.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    if (!this.lostError) await this.flushed().catch(() => undefined);
    this.closed = true;
    await this.client.end().catch(() => undefined);
  }
}

/** The URL with `password` in it (node-postgres lets the URL's own fields win over separate ones). */
export function withPassword(url: string, password: string | undefined): string {
  if (password === undefined) return url;
  const u = new URL(url);
  u.password = encodeURIComponent(password);
  return u.toString();
}

function toEntry(migrationId: string, e: StoredEntry): JournalEntry {
  return {
    seq: e.seq,
    migrationId,
    at: e.at,
    phase: e.phase,
    kind: e.kind,
    ...(e.step !== null ? { step: e.step } : {}),
    ...(e.detail !== null ? { detail: JSON.parse(e.detail) as Record<string, unknown> } : {}),
  };
}

/** PostgreSQL's own words (node-postgres puts them in `message`), without the connection string. */
function pgMessage(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const m = errorMessage(err) || (typeof e.code === 'string' ? e.code : 'unknown error');
  return m.replace(/postgres(ql)?:\/\/\S+/g, (u) => redactPostgresUrl(u));
}
