/**
 * The leader lease: of several controllers on one PostgreSQL, the one holding the lease row drives
 * migrations; the others follow (they serve reads and forward writes).
 *
 * The lease is one row of `ferry_leader`: the holder's id and API URL, a fencing token and an
 * expiry computed by PostgreSQL's own clock (`now()`), so the controllers' clocks never matter.
 * One atomic UPDATE takes it (when expired) or renews it (when still ours, with our token) and
 * returns the token; the token grows by one at every change of holder and at every taking after
 * an expiry, so a token names one uninterrupted tenure. The holder renews every ttl/3.
 *
 * The leader steps down by itself when it has not renewed within ttl by its own monotonic clock
 * (a paused or cut-off process must assume another took over), and when told to (`stepDown`: the
 * journal lost its connection, an agent refused the token). Agents refuse a token older than the
 * newest they have seen (src/agent/fence.ts), which covers the moments this process cannot know
 * it lost: a command sent by an ex-leader that wakes after a pause is refused, not carried out.
 *
 * Not a PostgreSQL advisory lock: a session advisory lock lives as long as one server connection,
 * and a pooler in transaction mode (PgBouncer) hands that connection to other clients between
 * transactions, so the lock would be held by nobody or by the wrong process. A row with an expiry
 * needs no session: every statement stands alone.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { FerryError, errorMessage } from '../common/errors.js';
import { redactPostgresUrl, withPassword } from '../migration/index.js';

/** The lease row's holder as PostgreSQL has it. */
export interface LeaseHolder {
  /** The holding controller's id. */
  id: string;
  /** Its control API URL (where followers forward writes). */
  url: string;
  /** The fencing token of its tenure (a decimal string: a bigint). */
  token: string;
  /** When the lease ends unless renewed (PostgreSQL's clock, ISO 8601). */
  expiresAt: string;
}

/** What `GET /v1/controller` answers. */
export interface LeaderStatus {
  /** This controller's role now. */
  role: 'leader' | 'follower';
  /** This controller. */
  self: { id: string; url: string };
  /** The lease's live holder, or null when nobody holds it (expired, never taken, PostgreSQL unreachable). */
  leader: LeaseHolder | null;
  ttlMs: number;
}

/** The part of the lease the API reads: who leads, and where to forward writes. */
export interface LeaderView {
  status(): LeaderStatus;
}

export interface LeaderLeaseOptions {
  /** PostgreSQL URL (the journal's). */
  url: string;
  /** The password when the URL has none (the journal's `passwordFile`). */
  password?: string;
  /** This controller's id: unique among the controllers of one database. */
  id: string;
  /** This controller's API URL, which the others forward writes to. */
  advertise: string;
  /** Lease time. Default 6000 ms: renewed every 2 s, taken over within ttl + ttl/3 of a leader's death. */
  ttlMs?: number;
  /** The lease's name, one row per name (default `controller`). */
  name?: string;
  /** Monotonic milliseconds (tests: a paused process). Default `performance.now`. */
  clock?: () => number;
  /** False: no timers, the caller calls `tick()` (tests). Default true. */
  autoRenew?: boolean;
}

/** Default lease time. */
export const DEFAULT_LEADER_TTL_MS = 6000;

const SCHEMA = `CREATE TABLE IF NOT EXISTS ferry_leader (
  name text PRIMARY KEY,
  holder text,
  url text,
  token bigint NOT NULL DEFAULT 0,
  acquired_at timestamptz,
  expires_at timestamptz NOT NULL DEFAULT '-infinity'
)`;

/**
 * Take or renew: when the lease is expired (anyone may take it) or ours with our token (renewal).
 * A renewal in time keeps the token; anything else is a new tenure and a new token.
 */
const ACQUIRE = `UPDATE ferry_leader SET
  token = CASE WHEN holder = $2 AND token = $4 AND expires_at > now() THEN token ELSE token + 1 END,
  acquired_at = CASE WHEN holder = $2 AND token = $4 AND expires_at > now() THEN acquired_at ELSE now() END,
  holder = $2, url = $3,
  expires_at = now() + $5::bigint * interval '1 millisecond'
WHERE name = $1 AND (expires_at <= now() OR (holder = $2 AND token = $4))
RETURNING token::text AS token`;

const RELEASE = `UPDATE ferry_leader SET expires_at = now() WHERE name = $1 AND holder = $2 AND token = $3`;

const READ = `SELECT holder, url, token::text AS token, expires_at, expires_at > now() AS live
FROM ferry_leader WHERE name = $1`;

/** The lease of one controller; `elected` and `deposed` are emitted synchronously on each change of role. */
export class LeaderLease
  extends EventEmitter<{ elected: [token: bigint]; deposed: [reason: string]; warning: [message: string] }>
  implements LeaderView
{
  readonly id: string;
  readonly advertise: string;
  readonly ttlMs: number;
  /** The lease's row in `ferry_leader`. */
  readonly name: string;
  private readonly clock: () => number;
  private readonly pool: pg.Pool;
  private readonly url: string;
  private token: bigint | undefined;
  private lastHeld: bigint | undefined;
  /** Monotonic time by which the lease must have been renewed. */
  private deadline = 0;
  /** No campaign before this (monotonic): after stepping down, the others get their turn. */
  private quietUntil = 0;
  private holder: LeaseHolder | null = null;
  private timers: NodeJS.Timeout[] = [];
  private ticking: Promise<void> | undefined;
  private closed = false;
  private unreachable = false;
  private retired = false;
  private readonly autoRenew: boolean;

  constructor(opts: LeaderLeaseOptions) {
    super();
    if (!opts.id || !/^[A-Za-z0-9._:@-]{1,128}$/.test(opts.id))
      throw new FerryError(
        'LEADER_OPTIONS',
        `leader.id must be 1-128 letters, digits or . _ : @ -; got "${opts.id}"`,
      );
    this.ttlMs = opts.ttlMs ?? DEFAULT_LEADER_TTL_MS;
    if (!Number.isInteger(this.ttlMs) || this.ttlMs < 300 || this.ttlMs > 600_000)
      throw new FerryError(
        'LEADER_OPTIONS',
        `leader.ttl must be between 300ms and 10m; got ${this.ttlMs} ms`,
      );
    this.id = opts.id;
    this.advertise = opts.advertise;
    this.name = opts.name ?? 'controller';
    this.clock = opts.clock ?? (() => performance.now());
    this.url = opts.url;
    this.autoRenew = opts.autoRenew ?? true;
    const third = Math.max(100, Math.floor(this.ttlMs / 3));
    this.pool = new pg.Pool({
      // In the URL: node-postgres lets the URL's own fields win over a separate password.
      connectionString: withPassword(opts.url, opts.password),
      max: 2,
      connectionTimeoutMillis: third,
      query_timeout: third,
      idleTimeoutMillis: 30_000,
    });
    // A broken idle connection is replaced at the next query; the tick reports the failure.
    this.pool.on('error', () => undefined);
  }

  /** True while this controller leads. */
  get isLeader(): boolean {
    return this.token !== undefined;
  }

  /**
   * The token agents must see on every command: the current one while leading, after that the
   * last one held (so that an ex-leader's stray command is refused by an agent that saw a newer
   * one, never sent unfenced); undefined only for a controller that never led.
   */
  fence(): bigint | undefined {
    return this.token ?? this.lastHeld;
  }

  /** Create the table and its row if missing, make the first attempt, then renew every ttl/3. */
  async start(): Promise<void> {
    try {
      // Concurrent CREATE TABLE IF NOT EXISTS can collide in PostgreSQL's catalog: one at a time
      // (a transaction-scoped lock, which a transaction-mode pooler keeps correctly).
      const c = await this.pool.connect();
      try {
        await c.query('BEGIN');
        await c.query(`SELECT pg_advisory_xact_lock(hashtext('ferry_leader'))`);
        await c.query(SCHEMA);
        await c.query(`INSERT INTO ferry_leader (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, [
          this.name,
        ]);
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        c.release();
      }
    } catch (err) {
      throw new FerryError(
        'JOURNAL_OPEN',
        `the leader lease in ${redactPostgresUrl(this.url)} cannot be created: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    await this.tick();
    if (!this.autoRenew) return;
    const third = Math.max(100, Math.floor(this.ttlMs / 3));
    this.timers.push(setInterval(() => void this.tick(), third));
    // The own-clock check runs apart from the renewals, which may hang on an unreachable server.
    this.timers.push(setInterval(() => this.checkClock(), Math.max(50, Math.floor(this.ttlMs / 10))));
  }

  /** This controller's view of the lease. */
  status(): LeaderStatus {
    return {
      role: this.isLeader ? 'leader' : 'follower',
      self: { id: this.id, url: this.advertise },
      leader: this.holder,
      ttlMs: this.ttlMs,
    };
  }

  /**
   * Stop leading now (`reason` says why, e.g. fenced by an agent, the journal's connection lost);
   * the lease is given back when PostgreSQL can be reached, and this controller stays out of the
   * race for one ttl (with `retire`, for good: its journal is gone). Nothing happens when it does not lead.
   */
  stepDown(reason: string, opts: { retire?: boolean } = {}): void {
    if (opts.retire) this.retired = true;
    const t = this.token;
    if (t === undefined) return;
    this.token = undefined;
    this.quietUntil = this.clock() + this.ttlMs;
    this.emit('deposed', reason);
    void this.pool.query(RELEASE, [this.name, this.id, t.toString()]).then(
      () => this.read(),
      () => undefined,
    );
  }

  /** Attempt or renew now (the timer does it every ttl/3); resolves when done. */
  tick(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.ticking ??= this.attempt().finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private checkClock(): void {
    if (this.token !== undefined && this.clock() >= this.deadline)
      this.stepDown(
        `the lease was not renewed within ${this.ttlMs} ms by this controller's own clock (paused, or cut off from PostgreSQL); another controller may lead now`,
      );
  }

  private async attempt(): Promise<void> {
    this.checkClock();
    const sentAt = this.clock();
    if (this.token !== undefined || (sentAt >= this.quietUntil && !this.retired)) {
      let won: bigint | undefined;
      try {
        const r = await this.pool.query<{ token: string }>(ACQUIRE, [
          this.name,
          this.id,
          this.advertise,
          (this.token ?? -1n).toString(),
          this.ttlMs,
        ]);
        won = r.rows[0] ? BigInt(r.rows[0].token) : undefined;
        if (this.unreachable) this.emit('warning', `the leader lease's PostgreSQL answers again`);
        this.unreachable = false;
      } catch (err) {
        if (!this.unreachable)
          this.emit('warning', `cannot renew or take the leader lease: ${errorMessage(err)}`);
        this.unreachable = true;
        this.holder = null;
        this.checkClock();
        return;
      }
      if (this.closed) return;
      if (won === undefined) {
        this.stepDown('another controller holds the lease');
      } else if (won !== this.token) {
        // A new tenure: a previous one (if any) ended without this process noticing in time.
        if (this.token !== undefined)
          this.stepDown(`the lease expired before it was renewed; taken again with token ${won}`);
        this.token = won;
        this.lastHeld = won;
        this.deadline = sentAt + this.ttlMs;
        this.emit('elected', won);
      } else {
        this.deadline = sentAt + this.ttlMs;
      }
    }
    await this.read().catch(() => undefined);
  }

  private async read(): Promise<void> {
    const r = await this.pool.query<{
      holder: string | null;
      url: string | null;
      token: string;
      expires_at: Date;
      live: boolean;
    }>(READ, [this.name]);
    const row = r.rows[0];
    this.holder =
      row && row.live && row.holder
        ? { id: row.holder, url: row.url ?? '', token: row.token, expiresAt: row.expires_at.toISOString() }
        : null;
  }

  /** Stop renewing; a leader gives the lease back so that another takes over at once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.ticking?.catch(() => undefined);
    const t = this.token;
    if (t !== undefined) {
      this.token = undefined;
      this.emit('deposed', 'the controller is shutting down');
      await this.pool.query(RELEASE, [this.name, this.id, t.toString()]).catch(() => undefined);
    }
    await this.pool.end().catch(() => undefined);
  }
}
