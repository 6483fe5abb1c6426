/**
 * The migration state machine. One `run` drives a migration from its current phase to the end:
 *
 *   planned → [ttl-lowered] → temp-ip → dns-temp → syncing → preflight → cutover → draining → completed
 *
 * Contract:
 * - Each phase is entered through the journal before any of its side effects run, and each step
 *   inside a phase is journaled before it runs. Every step is idempotent, so `run` on a migration
 *   that stopped half-way (a crash, a kill) repeats the phase it was in and goes on. Before it
 *   acts, a resumed run reads the real state (DNS answer, site modes, redirect, addresses) and
 *   journals it; the steps that must not be repeated (a DNS change that is already there, the
 *   final sync once the target writes) are decided on that state, not on the journal alone.
 * - Exactly one writer: the target stays `readonly` until the cut-over has drained the origin's
 *   in-flight requests and run the final delta sync; from then on the origin proxies whatever
 *   still reaches it (stale caches on IP1, old keep-alive connections through IPt) to the target.
 *   A web site's databases follow the same rule inside the hold: the origin's site users lose
 *   their writes before the target applies the origin's last write and takes them (databases.md).
 * - Waits on caches start only after every authoritative server shows the change (invariant 5),
 *   and end on observed traffic: quiet for `quietWindowMs`, bounded by a cap.
 * - Every agent and DNS call has a timeout and retries with backoff (resilient.ts).
 * - `completed` is entered only once the redirects and IPt are gone (the end of draining removes
 *   them and journals when), so whoever follows the phase sees a finished migration.
 * - A failure before the switch undoes every step in reverse (`rolling-back` → `rolled-back`); a
 *   failure after it leaves the target as the writer and reports `failed` with the reason, from
 *   where `rollback` (a reverse migration: sync back, then swap roles) or `resume` goes on.
 */
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import { FerryError, errorMessage, isFerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';
import type { SiteMode } from '../host/index.js';
import { removedAt, type JournalStore } from './journal-store.js';
import { planDatabases } from './databases.js';
import { checkParity, describeParity } from './parity.js';
import type {
  DatabaseDeclaration,
  DatabaseLag,
  DatabasePlanOptions,
  DatabaseSource,
  SiteDatabasesPlan,
  DnsProvider,
  HostDriver,
  RedirectStats,
  SyncProgressReport,
  WebSiteOverrides,
} from './ports.js';
import { ProgressThrottle } from './progress.js';
import {
  STEP,
  WAIT,
  familyStep,
  isReverseStep,
  originalRecordNote,
  nameStep,
  syncDoneNote,
  waitEndNote,
  waitPassedNote,
  type JournalStep,
  type Step,
  type SyncPass,
  type Wait,
  type WaitEnd,
} from './steps.js';
import { DEFAULT_RETRY, ResilientDns, ResilientHost, type RetryPolicy } from './resilient.js';
import {
  DEFAULT_BACKUP_KEEP_MS,
  DEFAULT_DATABASE_OPTIONS,
  PHASES,
  type DatabaseOptions,
  type DatabasesPlanned,
  type ForwardPhase,
  type MigrationPlan,
  type MigrationRecord,
  type Phase,
} from './types.js';
import { planWebSite, webParity, type WebSitePlan } from './web.js';

/** Events published while migrations run (the API, CLI and dashboard follow them). */
export interface MigrationEvents {
  phase: [{ id: string; phase: Phase; at: number; detail?: Record<string, unknown> }];
  step: [{ id: string; phase: Phase; step: JournalStep; at: number; detail?: Record<string, unknown> }];
  wait: [
    {
      id: string;
      phase: Phase;
      what: string;
      at: number;
      elapsedMs: number;
      remainingMs: number;
      observed: Record<string, unknown>;
    },
  ];
  error: [{ id: string; phase: Phase; at: number; message: string }];
  /** What the authoritative servers answer, each time the orchestrator looks. */
  dns: [
    {
      id: string;
      phase: Phase;
      at: number;
      name: string;
      type: string;
      expect: string[];
      serial: number | null;
      servers: Array<{ server: string; serial: number | null; rdata: string[] }>;
    },
  ];
  /** Traffic counted by a wait (requests at IP1, connections at IPt, requests at IP2 on reversal). */
  traffic: [{ id: string; phase: Phase; at: number; what: string; observed: Record<string, unknown> }];
  /** Connections and requests held at the switch. */
  held: [
    { id: string; phase: Phase; at: number; redirect: number; site: number; state: 'holding' | 'released' },
  ];
  /**
   * Data sync: a pass `started`, its `progress` while it copies (bytes so far, percent when the
   * driver knows the total, else null, files when known, attempt; throttled, see progress.ts; not
   * journaled), and `done` with files, bytes and ms. A retried pass reports from 0 bytes again with
   * the next `attempt`.
   */
  sync: [
    {
      id: string;
      phase: Phase;
      at: number;
      pass: string;
      from: string;
      to: string;
      state: 'started' | 'progress' | 'done';
      files?: number;
      bytes?: number;
      percent?: number | null;
      attempt?: number;
      ms?: number;
    },
  ];
  /**
   * A web site's databases: `copied` (bytes, ms), `lag` (the target's channel, sampled every few
   * seconds from the copy to the take-over; not journaled), `frozen` (the origin's position),
   * `caught-up` (the target is the writer; waitedMs), `catchup-timeout` (released back to the
   * origin; the next cut-over is tried at `retryAt`). Never carries a credential.
   */
  database: [
    {
      id: string;
      phase: Phase;
      at: number;
      state: 'copied' | 'lag' | 'frozen' | 'caught-up' | 'catchup-timeout';
      lag?: DatabaseLag;
      bytes?: number;
      ms?: number;
      position?: string;
      waitedMs?: number;
      attempt?: number;
      attempts?: number;
      retryAt?: number;
      message?: string;
    },
  ];
  /** An agent or DNS call failed and is retried. */
  retry: [{ id: string; at: number; what: string; attempt: number; message: string }];
}

export interface OrchestratorOptions {
  dns: DnsProvider;
  hosts: Map<string, HostDriver> | Record<string, HostDriver>;
  journal: JournalStore;
  /** Timeouts and retries of agent and DNS calls. */
  retry?: Partial<RetryPolicy>;
}

/** Whether a run was stopped because its controller lost the lead (Controller.stopDriving). */
function lostLead(signal: AbortSignal): boolean {
  return isFerryError(signal.reason, 'NO_LEADER');
}

/** Runs migrations; one instance serves many, each `run` drives one to its end. */
export class Orchestrator extends EventEmitter<MigrationEvents> {
  private readonly dns: DnsProvider;
  private readonly hosts: Map<string, HostDriver>;
  readonly journal: JournalStore;
  readonly retry: RetryPolicy;

  constructor(opts: OrchestratorOptions) {
    super();
    this.retry = { ...DEFAULT_RETRY, ...opts.retry };
    this.dns = new ResilientDns(opts.dns, this.retry);
    this.hosts = opts.hosts instanceof Map ? opts.hosts : new Map(Object.entries(opts.hosts));
    this.journal = opts.journal;
  }

  /** Validate a plan and journal it as `planned`. */
  create(plan: MigrationPlan): MigrationRecord {
    validatePlan(plan, this.hosts);
    this.journal.create(plan);
    this.emit('phase', { id: plan.id, phase: 'planned', at: Date.now() });
    return this.get(plan.id);
  }

  /**
   * Before a web site's migration is created: ask the origin for the site and the target whether
   * it can take it (reads only; see web.ts for the refusals it throws).
   */
  planWebSite(
    origin: string,
    target: string,
    domain: string,
    overrides: WebSiteOverrides = {},
  ): Promise<WebSitePlan> {
    const h = (id: string) => {
      const d = this.hosts.get(id);
      if (!d) throw new FerryError('HOST_UNKNOWN', `no host named ${id}`);
      return new ResilientHost(d, this.retry);
    };
    return planWebSite(h(origin), h(target), domain, overrides);
  }

  /**
   * Before a web site's migration is created: which of its databases move (the origin's agent
   * reads them; `declared` from the config) and whether the target takes them. Undefined when the
   * origin cannot tell (no database support, nothing declared). Reads only; see databases.ts.
   */
  planDatabases(
    origin: string,
    target: string,
    domain: string,
    declared?: DatabaseDeclaration[],
    opts?: DatabasePlanOptions,
  ): Promise<DatabasesPlanned | undefined> {
    const h = (id: string) => {
      const d = this.hosts.get(id);
      if (!d) throw new FerryError('HOST_UNKNOWN', `no host named ${id}`);
      return new ResilientHost(d, this.retry);
    };
    return planDatabases(h(origin), h(target), domain, declared, opts);
  }

  get(id: string): MigrationRecord {
    const rec = this.journal.get(id);
    if (!rec) throw new FerryError('MIGRATION_NOT_FOUND', `no migration with id ${id}`);
    return rec;
  }

  private newRun(plan: MigrationPlan, signal: AbortSignal | undefined): MigrationRun {
    const relayId = plan.mode === 'relay-host' ? plan.relayHost! : plan.origin;
    return new MigrationRun(
      this,
      plan,
      this.dns,
      this.host(plan.origin, plan.id),
      this.host(plan.target, plan.id),
      this.host(relayId, plan.id),
      signal,
    );
  }

  /**
   * Drive migration `id` from its current phase to `completed` (or `rolled-back`/`failed`). A
   * migration found `rolling-back` goes on rolling back.
   */
  async run(id: string, signal?: AbortSignal): Promise<MigrationRecord> {
    const rec = this.get(id);
    if (rec.settled || rec.phase === 'failed' || rec.phase === 'rolled-back') return rec;
    if (rec.phase === 'rolling-back') return this.rollback(id, signal);
    const run = this.newRun(rec.plan, signal);
    try {
      return await this.drive(run, id, rec.phase, signal);
    } finally {
      run.stopLag();
    }
  }

  private async drive(
    run: MigrationRun,
    id: string,
    from: Phase,
    signal: AbortSignal | undefined,
  ): Promise<MigrationRecord> {
    let phase: Phase = from;
    try {
      if (this.journal.entries(id).length > 1) await run.observeState();
      for (let index = PHASES.indexOf(from as ForwardPhase); index < PHASES.length; index++) {
        phase = PHASES[index]!;
        if (await run.skips(phase)) continue;
        await run.phase(phase);
      }
    } catch (err) {
      // The journal cannot take a step any more: stop driving, undo nothing; it stays resumable.
      if (isFerryError(err, 'JOURNAL_LOST')) throw err;
      // This controller lost the lead: the journal is the next leader's now, write nothing to it.
      if (signal?.aborted && lostLead(signal)) throw err;
      const message = errorMessage(err);
      this.journal.append({ migrationId: id, at: Date.now(), phase, kind: 'error', detail: { message } });
      this.emit('error', { id, phase, at: Date.now(), message });
      if (signal?.aborted) throw err; // stopped from outside (shutdown, rollback): undo nothing here
      if (await run.isSwitched().catch(() => true)) {
        await run.enter('failed', { from: phase, message });
      } else {
        run.stopLag();
        await this.undo(run, id, { from: phase, reason: message }, signal);
      }
    }
    return this.get(id);
  }

  /**
   * Roll migration `id` back from wherever it is: before the switch every step is undone in
   * reverse; after it a reverse migration runs (the target's data synced back first, then the
   * roles swapped). Journaled as `rolling-back`, so a restarted controller goes on with it.
   * The caller must have stopped any run of `id` first (the controller does).
   */
  async rollback(id: string, signal?: AbortSignal): Promise<MigrationRecord> {
    const rec = this.get(id);
    if (rec.phase === 'rolled-back') return rec;
    const run = this.newRun(rec.plan, signal);
    await run.refuseReverse(); // before rolling-back is journaled: the migration stays resumable
    const failedFrom = rec.phase === 'failed' ? this.lastEnterDetail(id, 'failed')?.from : undefined;
    const from =
      rec.phase === 'rolling-back' ? undefined : { from: failedFrom ?? rec.phase, reason: 'requested' };
    await this.undo(run, id, from, signal);
    return this.get(id);
  }

  /**
   * Throws `DB_ROLLBACK_AFTER_SWITCH` when migration `id` cannot be rolled back: the target writes
   * its site's databases and they cannot be replicated back (see `refuseReverse`). Changes nothing.
   */
  async refuseRollback(id: string): Promise<void> {
    const rec = this.get(id);
    if (rec.phase === 'rolled-back') return;
    await this.newRun(rec.plan, undefined).refuseReverse();
  }

  /** Go on with a `failed` migration from the phase it failed in (after the cause was fixed). */
  async resume(id: string, signal?: AbortSignal): Promise<MigrationRecord> {
    const rec = this.get(id);
    if (rec.phase !== 'failed') return this.run(id, signal);
    const from = this.lastEnterDetail(id, 'failed')?.from as Phase | undefined;
    if (!from || from === 'rolling-back') return this.rollback(id, signal);
    this.journal.append({
      migrationId: id,
      at: Date.now(),
      phase: from,
      kind: 'enter',
      detail: { resumedAfterFailure: true },
    });
    this.emit('phase', { id, phase: from, at: Date.now() });
    return this.run(id, signal);
  }

  private lastEnterDetail(id: string, phase: Phase): Record<string, unknown> | undefined {
    return this.journal
      .entries(id)
      .filter((e) => e.kind === 'enter' && e.phase === phase)
      .pop()?.detail;
  }

  private async undo(
    run: MigrationRun,
    id: string,
    from: Record<string, unknown> | undefined,
    signal?: AbortSignal,
  ): Promise<void> {
    try {
      if (from) await run.enter('rolling-back', from);
      else await run.enter('rolling-back');
      await run.undo();
      await run.enter('rolled-back');
    } catch (err) {
      if (isFerryError(err, 'JOURNAL_LOST')) throw err; // as in drive: stop, resumable
      if (signal?.aborted && lostLead(signal)) throw err;
      const message = errorMessage(err);
      this.journal.append({
        migrationId: id,
        at: Date.now(),
        phase: 'rolling-back',
        kind: 'error',
        detail: { message },
      });
      this.emit('error', { id, phase: 'rolling-back', at: Date.now(), message });
      if (signal?.aborted) throw err;
      await run.enter('failed', { from: 'rolling-back', message });
    }
  }

  /** Host `id` with timeouts and retries; its retries are published as events of `migrationId`. */
  private host(id: string, migrationId: string): HostDriver {
    const h = this.hosts.get(id);
    if (!h) throw new FerryError('HOST_UNKNOWN', `no host named ${id}`);
    return new ResilientHost(h, this.retry, (what, attempt, err) =>
      this.emit('retry', { id: migrationId, at: Date.now(), what, attempt, message: errorMessage(err) }),
    );
  }
}

/** Checks that a plan names known hosts and distinct addresses before anything is journaled. */
function validatePlan(plan: MigrationPlan, hosts: Map<string, HostDriver>): void {
  const problems: string[] = [];
  const mode = plan.mode ?? 'temp-ip';
  if (!/^[A-Za-z0-9._-]+$/.test(plan.id))
    problems.push(`id "${plan.id}" must be letters, digits, '.', '_' or '-'`);
  if (!plan.domain) problems.push('domain is empty');
  if (!hosts.has(plan.origin)) problems.push(`origin host "${plan.origin}" is unknown`);
  if (!hosts.has(plan.target)) problems.push(`target host "${plan.target}" is unknown`);
  if (plan.origin === plan.target) problems.push('origin and target are the same host');
  if (!['temp-ip', 'relay-host', 'direct'].includes(mode))
    problems.push(`mode "${mode}" must be temp-ip, relay-host or direct`);
  if (mode === 'direct') {
    if (plan.tempIp !== plan.originIp) problems.push('in direct mode tempIp must be the dedicated originIp');
    if (plan.originIp === plan.targetIp) problems.push('originIp and targetIp must differ');
  } else {
    const ips = [plan.originIp, plan.targetIp, plan.tempIp];
    if (new Set(ips).size !== 3)
      problems.push(`originIp, targetIp and tempIp must differ (got ${ips.join(', ')})`);
  }
  if (mode === 'relay-host') {
    if (!plan.relayHost || !hosts.has(plan.relayHost))
      problems.push(`relay-host mode needs a known relayHost (got "${plan.relayHost ?? ''}")`);
    else if (plan.relayHost === plan.origin || plan.relayHost === plan.target)
      problems.push('relayHost must differ from origin and target');
  }
  if (plan.v6) {
    const ips6 = [plan.v6.originIp, plan.v6.targetIp, plan.v6.tempIp];
    if (!ips6.every((ip) => isIP(ip) === 6))
      problems.push(`v6 addresses must be IPv6 (got ${ips6.join(', ')})`);
    if (mode === 'direct' ? plan.v6.tempIp !== plan.v6.originIp : new Set(ips6).size !== 3) {
      problems.push(
        mode === 'direct'
          ? 'in direct mode v6.tempIp must be v6.originIp'
          : `v6 originIp, targetIp and tempIp must differ (got ${ips6.join(', ')})`,
      );
    }
  }
  if (plan.ports.length === 0) problems.push('ports is empty: name at least the HTTP port');
  if (plan.names !== undefined) {
    if (plan.names[0] !== plan.domain) problems.push(`names must begin with the domain ${plan.domain}`);
    if (new Set(plan.names).size !== plan.names.length) problems.push('names lists a name twice');
    if (!plan.names.every((n) => /^([A-Za-z0-9_*-]+\.)+$/.test(n)))
      problems.push(`names must be absolute domain names (got ${plan.names.join(', ')})`);
  }
  if (plan.timings.ttl < 1) problems.push('ttl must be at least 1 second');
  if (plan.kind !== undefined && plan.kind !== 'builtin' && plan.kind !== 'web')
    problems.push(`kind "${String(plan.kind)}" must be builtin or web`);
  if (problems.length) throw new FerryError('PLAN_INVALID', `invalid migration plan: ${problems.join('; ')}`);
}

type QuietSample = { lastActivityAt: number; busy: boolean; observed: Record<string, unknown> };

/** One address family of the domain: its record type, addresses and the redirect at its IPt. */
interface Family {
  type: 'A' | 'AAAA';
  /** Appended to step names of the IPv6 family ('' for IPv4, so journals stay as they were). */
  suffix: '' | '-v6';
  originIp: string;
  targetIp: string;
  tempIp: string;
  redirectId: string;
}

/** The state of one `run`: the phases' steps, waits and undo. */
class MigrationRun {
  private current: Phase = 'planned';
  private readonly mode: NonNullable<MigrationPlan['mode']>;
  /** A first, then AAAA when the plan migrates IPv6 too: both move together, phase by phase. */
  private readonly families: Family[];
  /** Every name of the site that moves, the domain first: each DNS step does all of them. */
  private readonly names: string[];

  constructor(
    private readonly orch: Orchestrator,
    private readonly plan: MigrationPlan,
    private readonly dns: DnsProvider,
    private readonly origin: HostDriver,
    private readonly target: HostDriver,
    /** The host carrying IPt and its redirect: the origin, or the relay host. */
    private readonly relay: HostDriver,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.mode = plan.mode ?? 'temp-ip';
    this.current = orch.journal.get(plan.id)?.phase ?? 'planned';
    const id = `mig-${plan.id}`;
    this.families = [
      {
        type: 'A',
        suffix: '',
        originIp: plan.originIp,
        targetIp: plan.targetIp,
        tempIp: plan.tempIp,
        redirectId: id,
      },
    ];
    if (plan.v6) this.families.push({ type: 'AAAA', suffix: '-v6', ...plan.v6, redirectId: `${id}-v6` });
    this.names = plan.names?.length ? plan.names : [plan.domain];
  }

  private get id(): string {
    return this.plan.id;
  }

  /** Whether IPt carries a redirect of its own (not in direct mode, where the origin's site proxies). */
  private get usesRedirect(): boolean {
    return this.mode !== 'direct';
  }

  /** A site of the server's own web server, moved through its gate (else the built-in app's). */
  private get web(): boolean {
    return this.plan.kind === 'web';
  }

  /** The config's overrides of a web site, passed to the agent. */
  private get overrides(): WebSiteOverrides {
    const w = this.plan.web ?? {};
    return {
      ...(w.declaredRoots ? { declaredRoots: w.declaredRoots } : {}),
      ...(w.dataDir ? { dataDir: w.dataDir } : {}),
      ...(w.mailStays ? { mail: false as const } : {}),
    };
  }

  /** Overrides as the last argument of an agent call: left out when there are none. */
  private withOverrides(): [] | [WebSiteOverrides] {
    const o = this.overrides;
    return Object.keys(o).length ? [o] : [];
  }

  /** `host`'s web-site method `name`, or a clear error when its agent has none. */
  private webCall<K extends WebMethod>(host: HostDriver, name: K): NonNullable<HostDriver[K]> {
    const f = host[name];
    if (!f)
      throw new FerryError(
        'TARGET_LACKS',
        `${host.id} cannot move web sites: its agent has no ${name} (an older version, or no --web-config)`,
      );
    return (f as (...a: unknown[]) => unknown).bind(host) as NonNullable<HostDriver[K]>;
  }

  /** `host`'s database method `name`, or a clear error when its agent has none. */
  private dbCall<K extends DbMethod>(host: HostDriver, name: K): NonNullable<HostDriver[K]> {
    const f = host[name];
    if (!f)
      throw new FerryError(
        'DB_NOT_CONFIGURED',
        `${host.id} cannot move ${this.plan.domain}'s databases: its agent has no ${name} (an older version, or no --mariadb-defaults-file)`,
      );
    return (f as (...a: unknown[]) => unknown).bind(host) as NonNullable<HostDriver[K]>;
  }

  /**
   * The site's databases that move, as the run's own planning journaled them (the plan's
   * `databasePlan` is the controller's answer to the request, for display); undefined when none move.
   */
  private get databases(): DatabasesPlanned | undefined {
    if (!this.web) return undefined;
    const plan = this.entries()
      .filter((e) => e.kind === 'note' && e.step === STEP.dbPlan)
      .pop()?.detail as DatabasesPlanned | undefined;
    return plan?.move.length ? plan : undefined;
  }

  /** The catch-up's bounds: the plan's, else the defaults. */
  private get dbOptions(): DatabaseOptions {
    return { ...DEFAULT_DATABASE_OPTIONS, ...this.plan.web?.database };
  }

  /** The config's declarations as the last argument of an agent call: left out when there are none. */
  private withDeclared(): [] | [DatabaseDeclaration[]] {
    const d = this.plan.web?.databases;
    return d?.length ? [d] : [];
  }

  private lagTimer: NodeJS.Timeout | undefined;

  /** Publish the target's replication lag now and every few seconds, until `stopLag`. */
  private startLag(): void {
    // Copy-in-hold has no channel: no lag.
    if (this.lagTimer || !this.databases || this.databases.mode) return;
    const lag = this.dbCall(this.target, 'databaseLag');
    let busy = false;
    const sample = () => {
      if (busy) return;
      busy = true;
      lag(this.id)
        .then((l) =>
          this.orch.emit('database', {
            id: this.id,
            phase: this.current,
            at: Date.now(),
            state: 'lag',
            lag: { seconds: l.seconds, transactions: l.transactions, error: l.error },
          }),
        )
        .catch(() => undefined) // a missed sample is only a missed sample
        .finally(() => (busy = false));
    };
    this.lagTimer = setInterval(sample, LAG_INTERVAL_MS);
    this.lagTimer.unref();
    sample();
  }

  /** Stop publishing the lag (the take-over is done, or the run ends). */
  stopLag(): void {
    clearInterval(this.lagTimer);
    this.lagTimer = undefined;
  }

  private emitDatabase(
    state: MigrationEvents['database'][0]['state'],
    detail: Omit<MigrationEvents['database'][0], 'id' | 'phase' | 'at' | 'state'> = {},
  ): void {
    this.orch.emit('database', { id: this.id, phase: this.current, at: Date.now(), state, ...detail });
  }

  /** The origin's gate in front of the web site (one web-server reload there, before any traffic moves). */
  private async gate(): Promise<void> {
    const gate = this.webCall(this.origin, 'gateWebSite');
    await this.step(STEP.originGateSite, () => gate(this.plan.domain, ...this.withOverrides()));
  }

  private entries() {
    return this.orch.journal.entries(this.id);
  }

  private note(step: JournalStep, detail: Record<string, unknown>, phase: Phase = this.current): void {
    this.orch.journal.append({ migrationId: this.id, at: Date.now(), phase, kind: 'note', step, detail });
  }

  /** Journal entering `phase` (unless resuming inside it), then publish it. */
  async enter(phase: Phase, detail?: Record<string, unknown>): Promise<void> {
    const rec = this.orch.journal.get(this.id);
    this.current = phase;
    if (phase === 'planned' && rec?.phase === 'planned') return; // entered (and published) by create()
    const at = Date.now();
    if (rec?.phase === phase) {
      this.orch.journal.append({ migrationId: this.id, at, phase, kind: 'note', detail: { resumed: true } });
    } else {
      this.orch.journal.append({
        migrationId: this.id,
        at,
        phase,
        kind: 'enter',
        ...(detail ? { detail } : {}),
      });
    }
    await this.orch.journal.flushed(); // on disk before anything of the phase happens
    this.orch.emit('phase', { id: this.id, phase, at, ...(detail ? { detail } : {}) });
  }

  /** Journal a step, then run it. */
  private async step<T>(
    name: JournalStep,
    fn: () => Promise<T>,
    detail?: Record<string, unknown>,
  ): Promise<T> {
    this.signal?.throwIfAborted();
    const at = Date.now();
    this.orch.journal.append({
      migrationId: this.id,
      at,
      phase: this.current,
      kind: 'step',
      step: name,
      ...(detail ? { detail } : {}),
    });
    await this.orch.journal.flushed(); // on disk before the step acts
    this.orch.emit('step', {
      id: this.id,
      phase: this.current,
      step: name,
      at,
      ...(detail ? { detail } : {}),
    });
    return fn();
  }

  private journaled(step: JournalStep): boolean {
    return this.entries().some((e) => e.kind === 'step' && e.step === step);
  }

  private journaledNote(step: JournalStep): boolean {
    return this.entries().some((e) => e.kind === 'note' && e.step === step);
  }

  private originalNote(f: Family, name: string = this.plan.domain): JournalStep {
    return originalRecordNote(f.type, name, this.plan.domain);
  }

  /** A record of `name` as it was before the migration (journaled at planning). */
  private original(
    f: Family = this.families[0]!,
    name: string = this.plan.domain,
  ): { ttl: number; rdata: string[] } {
    const step = this.originalNote(f, name);
    const e = this.entries().find((x) => x.kind === 'note' && x.step === step);
    const d = e?.detail as { ttl: number; rdata: string[] } | undefined;
    return d ?? { ttl: this.plan.timings.ttl, rdata: [f.originIp] };
  }

  /** The longest TTL the records (every name's) had before the migration. */
  private originalTtl(): number {
    return Math.max(...this.families.flatMap((f) => this.names.map((n) => this.original(f, n).ttl)));
  }

  private async modeOf(host: HostDriver): Promise<SiteMode | null | 'unknown'> {
    return host.siteMode ? host.siteMode(this.plan.domain) : 'unknown';
  }

  /** Read and journal the real state, before a resumed run acts on anything. */
  async observeState(): Promise<void> {
    const { domain } = this.plan;
    // The domain's records by type (as older versions journaled them), another name's by `type name`.
    const [records, originMode, targetMode, redirects, addresses] = await Promise.all([
      Promise.all(
        this.families.flatMap((f) =>
          this.names.map(
            async (n) =>
              [
                n === domain ? f.type : `${f.type} ${n}`,
                (await this.dns.getRRset(n, f.type)) ?? null,
              ] as const,
          ),
        ),
      ),
      this.modeOf(this.origin),
      this.modeOf(this.target),
      Promise.all(
        this.families.map(async (f) => {
          const r = this.usesRedirect ? await this.relay.redirectStats(f.redirectId) : undefined;
          return [f.redirectId, r ? { held: r.held, activeConnections: r.activeConnections } : null] as const;
        }),
      ),
      this.relay.listAddresses ? this.relay.listAddresses() : Promise.resolve(null),
    ]);
    const state = {
      records: Object.fromEntries(records),
      originMode,
      targetMode,
      redirects: Object.fromEntries(redirects),
      tempIpsUp: addresses
        ? this.families.filter((f) => addresses.includes(f.tempIp)).map((f) => f.tempIp)
        : 'unknown',
    };
    this.note(STEP.observedState, state);
    this.orch.emit('step', {
      id: this.id,
      phase: this.current,
      step: STEP.observedState,
      at: Date.now(),
      detail: state,
    });
  }

  /**
   * True once the target has become the writer. The journal says when the step was taken; the
   * target's real mode says whether it ran (a kill between the two leaves it read-only).
   */
  async isSwitched(): Promise<boolean> {
    const m = await this.modeOf(this.target);
    if (m === 'unknown' || m === null) return this.journaled(STEP.targetServe);
    // Only the switch makes the target anything but read-only (planning refuses a target that
    // serves the site already), so its mode tells even if the journal lost its last entries.
    return m !== 'readonly';
  }

  /** Phases this migration passes over. */
  async skips(phase: ForwardPhase): Promise<boolean> {
    if (this.mode === 'direct' && (phase === 'temp-ip' || phase === 'dns-temp')) return true;
    if (phase === 'ttl-lowered')
      return this.originalTtl() <= this.plan.timings.ttl && this.current !== 'ttl-lowered';
    return false;
  }

  async phase(phase: ForwardPhase): Promise<void> {
    // `completed` is announced once the redirect and IPt are gone, with when each went.
    await this.enter(phase, phase === 'completed' ? removedAt(this.entries()) : undefined);
    switch (phase) {
      case 'planned':
        return this.checkPlan();
      case 'ttl-lowered':
        return this.lowerTtl();
      case 'temp-ip':
        return this.tempIp();
      case 'dns-temp':
        return this.dnsTemp();
      case 'syncing':
        return this.syncing();
      case 'preflight':
        if (this.journaledNote(STEP.dbCopied)) this.startLag();
        return this.preflight();
      case 'cutover':
        if (this.journaledNote(STEP.dbCopied) && !this.journaledNote(STEP.dbTookOver)) this.startLag();
        return this.cutover();
      case 'draining':
        await this.draining();
        return this.complete();
      case 'completed':
        // A journal of an older version entered `completed` before its clean-up: finish it here.
        if (!this.journaled(this.web ? STEP.originFinishSite : STEP.originRemoveSite)) await this.complete();
        this.orch.journal.append({ migrationId: this.id, at: Date.now(), phase: 'completed', kind: 'leave' });
        // Settled for every reader, the other controllers too, before this run reports it done.
        await this.orch.journal.flushed();
        return;
    }
  }

  /** planned: each record of each name points at the origin (or, on resume, at an address of this migration). */
  private async checkPlan(): Promise<void> {
    const { domain } = this.plan;
    const first = !this.entries().some((e) => e.step === STEP.originalRecord);
    const originals: Array<[Family, string, { ttl: number; rdata: string[] }]> = [];
    for (const f of this.families) {
      for (const name of this.names) {
        const rr = await this.dns.getRRset(name, f.type);
        const now = rr?.rdata ?? [];
        const allowed = first ? [f.originIp] : [f.originIp, f.tempIp, f.targetIp];
        if (!(rr && now.length === 1 && allowed.includes(now[0]!))) {
          throw new FerryError(
            'PLAN_DNS_MISMATCH',
            `${name} ${f.type} is [${now.join(', ')}], expected [${f.originIp}]`,
          );
        }
        originals.push([f, name, rr]);
      }
    }
    if (this.web) {
      // The web server's own site; the controller asked already, a resumed run asked before it acted.
      if (first) {
        await planWebSite(this.origin, this.target, domain, this.overrides);
        const db = await planDatabases(this.origin, this.target, domain, this.plan.web?.databases, {
          copyInHoldMaxBytes: this.dbOptions.copyInHoldMaxBytes,
        });
        // Journaled for a resumed run: what moves, and where the target replicates from.
        if (db && (db.move.length || db.leftInPlace.length)) this.note(STEP.dbPlan, { ...db });
      }
    } else if (!(await this.origin.hasSite(domain))) {
      throw new FerryError('PLAN_NO_SITE', `origin ${this.origin.id} does not host ${domain}`);
    }
    const onTarget = await this.target.hasSite(domain); // also reachability: throws when the target cannot be asked
    if (first && onTarget) {
      throw new FerryError(
        'PLAN_TARGET_HAS_SITE',
        `target ${this.target.id} hosts ${domain} already; remove it there first`,
      );
    }
    if (this.relay !== this.origin) await this.relay.redirectStats(this.families[0]!.redirectId);
    // Written last, the domain's A record's last of all: its presence means planning passed (and
    // DNS may be touched from here on).
    if (first)
      for (const [f, name, rr] of [...originals].reverse())
        this.note(this.originalNote(f, name), { ttl: rr.ttl, rdata: rr.rdata });
  }

  /** ttl-lowered: the records keep the origin with the plan's short TTL; caches drop the old TTL. */
  private async lowerTtl(): Promise<void> {
    let changedAt = 0;
    for (const f of this.families)
      changedAt = Math.max(changedAt, await this.ensureRecord(f.type, f.originIp, this.plan.timings.ttl));
    await this.waitUntil(WAIT.oldTtl, changedAt, this.originalTtl() * 1000);
  }

  /** temp-ip: IPt up on the origin (or relay host), a redirect on it to the origin's own service. */
  private async tempIp(): Promise<void> {
    const { ports, domain } = this.plan;
    if (this.web) await this.gate();
    for (const f of this.families) {
      await this.step(familyStep(STEP.addAddress, f.suffix), () => this.relay.addAddress(f.tempIp), {
        address: f.tempIp,
        host: this.relay.id,
      });
      await this.step(familyStep(STEP.startRedirect, f.suffix), () =>
        this.relay.startRedirect(f.redirectId, {
          address: f.tempIp,
          ports,
          upstream: f.originIp,
          sourceAddress: f.tempIp,
        }),
      );
      const probe = await this.step(familyStep(STEP.probeTempIp, f.suffix), () =>
        this.relay.probe(domain, f.tempIp, ports[0]!, '/'),
      );
      if (probe.status < 200 || probe.status >= 400) {
        throw new FerryError(
          'TEMP_IP_NOT_SERVING',
          `${domain} answers ${probe.status} on ${f.tempIp} port ${ports[0]}`,
        );
      }
    }
  }

  /** dns-temp: records → IPt, visible everywhere; then wait out caches and direct traffic at the origin. */
  private async dnsTemp(): Promise<void> {
    const { domain, timings } = this.plan;
    let changedAt = 0;
    for (const f of this.families)
      changedAt = Math.max(changedAt, await this.ensureRecord(f.type, f.tempIp, timings.ttl));
    const relayed = new Set(this.families.flatMap((f) => [f.tempIp, `::ffff:${f.tempIp}`]));
    // Caches hold the origin for at most the plan's TTL: the record had it already, or ttl-lowered waited the old one out.
    await this.waitQuiet(WAIT.ip1Quiet, changedAt, timings.ttl * 1000, timings.dnsTempCapMs, async () => {
      const stats = await this.origin.siteStats(domain);
      let lastDirect = 0;
      let direct = 0;
      for (const [source, s] of Object.entries(stats.bySource)) {
        if (relayed.has(source)) continue;
        direct += s.requests;
        lastDirect = Math.max(lastDirect, s.lastAt);
      }
      return {
        lastActivityAt: lastDirect,
        busy: false,
        observed: { directRequests: direct, lastDirectAt: lastDirect || null },
      };
    });
  }

  /** Copy the site's data between servers, publishing progress. */
  private async sync(pass: SyncPass, from: HostDriver, to: HostDriver): Promise<void> {
    const { domain } = this.plan;
    const started = Date.now();
    this.orch.emit('sync', {
      id: this.id,
      phase: this.current,
      at: started,
      pass,
      from: from.id,
      to: to.id,
      state: 'started',
    });
    // Progress goes to listeners only: the journal has the start (the step) and the done (the note).
    const progress = new ProgressThrottle(
      (p) =>
        this.orch.emit('sync', {
          id: this.id,
          phase: this.current,
          at: Date.now(),
          pass,
          from: from.id,
          to: to.id,
          state: 'progress',
          bytes: p.bytes,
          percent: p.percent,
          ...(p.files !== undefined ? { files: p.files } : {}),
          ...(p.attempt !== undefined ? { attempt: p.attempt } : {}),
        }),
      Date.now,
      started,
    );
    let res: { files: number; bytes: number };
    try {
      const onProgress = (p: SyncProgressReport) => progress.report(p);
      res = await this.step(pass, () => from.syncSite(domain, to, { onProgress }), {
        from: from.id,
        to: to.id,
      });
    } catch (err) {
      progress.end(false);
      throw err;
    }
    progress.end(true);
    const ms = Date.now() - started;
    this.note(syncDoneNote(pass), { ...res, ms });
    this.orch.emit('sync', {
      id: this.id,
      phase: this.current,
      at: Date.now(),
      pass,
      from: from.id,
      to: to.id,
      state: 'done',
      ...res,
      ms,
    });
    this.orch.emit('step', {
      id: this.id,
      phase: this.current,
      step: syncDoneNote(pass),
      at: Date.now(),
      detail: res,
    });
  }

  /**
   * syncing: the target gets the site (read-only) and a bulk copy of its data. A web site is
   * recreated there from the origin's bundle, which goes from one agent to the other through this
   * call only: the journal and the events say that the step ran, never what it carried.
   */
  private async syncing(): Promise<void> {
    const { domain } = this.plan;
    if (this.web) {
      if (!this.usesRedirect) await this.gate(); // direct mode has no temp-ip phase
      const exportSite = this.webCall(this.origin, 'exportWebSite');
      const install = this.webCall(this.target, 'installWebSite');
      await this.step(STEP.targetInstallSite, async () =>
        install(await exportSite(domain, ...this.withOverrides())),
      );
    } else await this.step(STEP.targetAddSite, () => this.target.addSite(domain, 'readonly'));
    await this.sync(STEP.initialSync, this.origin, this.target);
    await this.copyDatabases();
  }

  /**
   * A web site's databases: the origin opens a source for the target (a replication user for the
   * target's address), the target copies the databases and starts its channel. The source is a
   * secret: it goes from one call to the other here and nowhere else.
   */
  private async copyDatabases(): Promise<void> {
    const db = this.databases;
    if (!db) return;
    if (!this.journaledNote(STEP.dbCopied)) {
      const { domain } = this.plan;
      const open = this.dbCall(this.origin, 'openDatabaseSource');
      const copy = this.dbCall(this.target, 'copyDatabases');
      const replicaAddress = db.replicaAddress ?? this.plan.targetIp;
      const source = await this.step(
        STEP.dbOpenSource,
        () => open(this.id, domain, replicaAddress, ...this.withDeclared()),
        { replicaAddress },
      );
      // Copy-in-hold: the copy waits for the hold (the origin frozen); the source is kept for it.
      if (db.mode === 'copy-in-hold') {
        this.dbSource = source;
        return;
      }
      const res = await this.step(STEP.dbCopy, () => copy(this.id, domain, source, this.dbPlanForAgent()), {
        databases: db.move.map((m) => m.name),
      });
      // The origin's address (not secret) is where its MariaDB replicates from on a rollback.
      this.note(STEP.dbCopied, { bytes: res.bytes, ms: res.ms, originAddress: source.host });
      this.emitDatabase('copied', { bytes: res.bytes, ms: res.ms });
    }
    this.startLag();
  }

  /** The migration's source while it runs (a secret: memory only; a resumed run opens it again). */
  private dbSource: DatabaseSource | undefined;

  /** The plan as the target's copy takes it (without the controller's own fields). */
  private dbPlanForAgent(): SiteDatabasesPlan {
    const db = this.databases!;
    return {
      move: db.move,
      leftInPlace: db.leftInPlace,
      ...(db.originVersion !== undefined ? { originVersion: db.originVersion } : {}),
      ...(db.mode ? { mode: db.mode } : {}),
    };
  }

  /**
   * Copy-in-hold, inside the hold after the origin's freeze: the target copies the frozen
   * databases (bounded by `catchUpTimeoutMs`; a copy that passes it is stopped and dropped:
   * DB_CATCHUP_TIMEOUT). Measured: a `db-copied` note and a `copied` event.
   */
  private async copyInHold(attempt: number): Promise<void> {
    const db = this.databases!;
    const { domain } = this.plan;
    const timeoutMs = this.dbOptions.catchUpTimeoutMs;
    const replicaAddress = db.replicaAddress ?? this.plan.targetIp;
    if (!this.dbSource) {
      const open = this.dbCall(this.origin, 'openDatabaseSource');
      this.dbSource = await this.step(
        STEP.dbOpenSource,
        () => open(this.id, domain, replicaAddress, ...this.withDeclared()),
        { replicaAddress },
      );
    }
    const source = this.dbSource;
    const copy = this.dbCall(this.target, 'copyDatabases');
    const res = await this.step(
      STEP.dbCopy,
      () => copy(this.id, domain, source, this.dbPlanForAgent(), { timeoutMs }),
      { databases: db.move.map((m) => m.name), timeoutMs, attempt },
    );
    this.note(STEP.dbCopied, {
      bytes: res.bytes,
      ms: res.ms,
      originAddress: source.host,
      inHold: true,
      ...(db.estimatedPauseMs !== undefined ? { estimatedPauseMs: db.estimatedPauseMs } : {}),
    });
    this.emitDatabase('copied', { bytes: res.bytes, ms: res.ms, attempt });
  }

  /** preflight: the target answers like the origin (parity checks, on every family) before anything is switched. */
  private async preflight(): Promise<void> {
    const { domain, ports } = this.plan;
    const checks = this.web ? webParity(this.plan.parity, this.plan.web) : this.plan.parity;
    const results = await this.step(STEP.parity, async () => {
      const all = [];
      for (const f of this.families) {
        const r = await checkParity(
          domain,
          { address: f.originIp },
          { address: f.targetIp },
          ports[0]!,
          checks,
        );
        all.push(...r.map((x) => (f.suffix ? { ...x, check: `${x.check} (IPv6)` } : x)));
      }
      return all;
    });
    this.note(STEP.parityResults, {
      results: results.map((r) => ({
        check: r.check,
        ok: r.ok,
        diff: r.diff,
        origin: r.origin,
        target: r.target,
      })),
    });
    if (results.some((r) => !r.ok)) {
      throw new FerryError(
        'PREFLIGHT_MISMATCH',
        `target ${this.target.id} does not answer like origin ${this.origin.id} for ${domain}:\n${describeParity(results)}`,
      );
    }
  }

  private async emitHeld(state: 'holding' | 'released'): Promise<void> {
    const [rs, s] = await Promise.all([
      Promise.all(
        this.families.map((f) =>
          this.usesRedirect ? this.relay.redirectStats(f.redirectId) : Promise.resolve(undefined),
        ),
      ),
      this.origin.siteStats(this.plan.domain).catch(() => undefined),
    ]);
    const redirect = rs.reduce((n, r) => n + (r?.held ?? 0), 0);
    this.orch.emit('held', {
      id: this.id,
      phase: this.current,
      at: Date.now(),
      redirect,
      site: s?.held ?? 0,
      state,
    });
  }

  /**
   * cutover, in one step as seen from clients: hold new connections at IPt and new requests at
   * the origin, let in-flight requests finish, run the final delta sync, make the target the
   * writer, point the origin's site and the redirects at the target, release, then records → target.
   * Resumed after the target became the writer, it never syncs again (that would overwrite
   * writes the target took): it goes on from the switch.
   */
  private async cutover(): Promise<void> {
    const { domain, targetIp, timings, ports } = this.plan;
    let holding: Promise<void> = Promise.resolve();
    if (!(await this.isSwitched())) {
      // With databases, a hold whose catch-up times out is released back to the origin and tried again.
      for (;;) {
        await this.waitDatabaseRetry();
        await this.waitReplicationCaughtUp();
        if (this.usesRedirect)
          for (const f of this.families)
            await this.step(familyStep(STEP.holdRedirect, f.suffix), () =>
              this.relay.holdRedirect(f.redirectId),
            );
        await this.step(STEP.holdOriginSite, () => this.origin.setSiteMode(domain, 'hold'));
        const idle = await this.step(STEP.waitOriginIdle, () =>
          this.origin.waitSiteIdle(domain, timings.cutoverDrainTimeoutMs),
        );
        if (!idle) {
          throw new FerryError(
            'CUTOVER_DRAIN_TIMEOUT',
            `requests for ${domain} still in flight on the origin after ${timings.cutoverDrainTimeoutMs} ms`,
          );
        }
        // What is held, for the events: read beside the final pass, not before it (it is inside the pause).
        holding = this.emitHeld('holding').catch(() => undefined);
        await this.sync(STEP.finalSync, this.origin, this.target);
        if (await this.takeOverDatabases()) break;
        await holding;
        await this.emitHeld('released');
      }
      await this.step(STEP.targetServe, () => this.target.setSiteMode(domain, 'serve'));
    }
    await this.step(STEP.originProxy, () =>
      this.origin.setSiteMode(domain, { proxy: { address: targetIp, port: ports[0]! } }),
    );
    if (this.usesRedirect) {
      for (const f of this.families) {
        await this.step(familyStep(STEP.redirectToTarget, f.suffix), () =>
          this.relay.setRedirectUpstream(f.redirectId, f.targetIp),
        );
        await this.step(familyStep(STEP.releaseRedirect, f.suffix), () =>
          this.relay.releaseRedirect(f.redirectId),
        );
      }
    }
    await holding;
    await this.emitHeld('released');
    for (const f of this.families) await this.ensureRecord(f.type, f.targetIp, timings.ttl);
  }

  /**
   * Inside the hold, a web site's databases: the origin's site users lose their writes (its
   * position read after that), the target applies that position (bounded) and becomes the only
   * writer. True when done (or nothing moves). When the bound passes with attempts left, the
   * origin writes and serves again and the redirects release to it (their upstream is still the
   * origin): false, and the cut-over is tried again after `retryDelayMs`. The last attempt's
   * timeout fails the migration (its rollback thaws the origin and drops the target's copy).
   */
  private async takeOverDatabases(): Promise<boolean> {
    if (!this.databases) return true;
    const { domain } = this.plan;
    const opts = this.dbOptions;
    const freeze = this.dbCall(this.origin, 'freezeDatabases');
    const takeOver = this.dbCall(this.target, 'takeOverDatabases');
    const attempt = this.entries().filter((e) => e.step === STEP.dbCatchupTimeout).length + 1;
    const { position } = await this.step(STEP.dbFreezeOrigin, () => freeze(this.id, domain), { attempt });
    this.note(STEP.dbFrozen, { position, attempt });
    this.emitDatabase('frozen', { position, attempt });
    const inHold = this.databases.mode === 'copy-in-hold';
    try {
      if (inHold) {
        try {
          await this.copyInHold(attempt);
        } catch (e) {
          // A failed copy (the target dropped its partial copy) releases back like a timed-out one.
          if (isFerryError(e, 'DB_CATCHUP_TIMEOUT') || this.signal?.aborted) throw e;
          throw new FerryError('DB_CATCHUP_TIMEOUT', `the copy inside the hold failed: ${errorMessage(e)}`, {
            cause: e,
          });
        }
      }
      const r = await this.step(
        STEP.dbTakeOver,
        () => takeOver(this.id, domain, position, opts.catchUpTimeoutMs),
        { position, timeoutMs: opts.catchUpTimeoutMs, attempt },
      );
      this.note(STEP.dbTookOver, { waitedMs: r.waitedMs, writerPosition: r.writerPosition, attempt });
      this.stopLag();
      this.emitDatabase('caught-up', { waitedMs: r.waitedMs, attempt });
      return true;
    } catch (err) {
      if (!isFerryError(err, 'DB_CATCHUP_TIMEOUT')) throw err;
      if (attempt >= opts.catchUpAttempts) {
        // Noted too, so that the rollback knows this take-over never made the target a writer.
        const last = { attempt, attempts: opts.catchUpAttempts, message: err.message };
        this.note(STEP.dbCatchupTimeout, last);
        this.emitDatabase('catchup-timeout', last);
        throw new FerryError(
          'DB_CATCHUP_TIMEOUT',
          `${domain}: the target did not ${inHold ? 'copy' : 'catch up with'} the origin's databases within ${opts.catchUpTimeoutMs} ms in ${attempt} cut-over attempt${attempt === 1 ? '' : 's'} (${err.message})`,
          { cause: err },
        );
      }
      const thaw = this.dbCall(this.origin, 'thawDatabases');
      await this.step(STEP.dbThawOrigin, () => thaw(this.id, domain));
      await this.step(STEP.dbRetryOriginServe, () => this.origin.setSiteMode(domain, 'serve'));
      if (this.usesRedirect)
        for (const f of this.families)
          await this.step(familyStep(STEP.dbRetryReleaseRedirect, f.suffix), () =>
            this.relay.releaseRedirect(f.redirectId),
          );
      const retryAt = Date.now() + opts.retryDelayMs;
      const detail = { attempt, attempts: opts.catchUpAttempts, retryAt, message: err.message };
      this.note(STEP.dbCatchupTimeout, detail);
      this.orch.emit('step', {
        id: this.id,
        phase: this.current,
        step: STEP.dbCatchupTimeout,
        at: Date.now(),
        detail,
      });
      this.emitDatabase('catchup-timeout', detail);
      return false;
    }
  }

  /** After a timed-out catch-up (also on a resumed run): wait until the next attempt is due. */
  private async waitDatabaseRetry(): Promise<void> {
    const last = this.entries()
      .filter((e) => e.kind === 'note' && e.step === STEP.dbCatchupTimeout)
      .pop()?.detail as { retryAt?: number } | undefined;
    if (!last?.retryAt || this.journaledAfter(STEP.dbCatchupTimeout, waitPassedNote(WAIT.dbRetry))) return;
    const ms = this.dbOptions.retryDelayMs;
    await this.waitUntil(WAIT.dbRetry, last.retryAt - ms, ms);
  }

  /**
   * Before a hold: wait (at most `lagWaitMs`) until the target's channel is 0 seconds behind, so
   * that the catch-up inside the hold has only the last few transactions to apply. Reads only, so
   * a resumed run simply waits again; a failed read or an error on the channel ends the wait (the
   * take-over reports the channel's error itself).
   */
  private async waitReplicationCaughtUp(): Promise<void> {
    if (!this.databases || this.databases.mode || this.journaledNote(STEP.dbTookOver)) return;
    const lag = this.dbCall(this.target, 'databaseLag');
    const deadline = Date.now() + this.dbOptions.lagWaitMs;
    for (;;) {
      this.signal?.throwIfAborted();
      const l = await lag(this.id).catch(() => undefined);
      if (!l || l.error || l.seconds === 0 || Date.now() >= deadline) return;
      await sleep(Math.min(LAG_POLL_MS, Math.max(1, deadline - Date.now())), this.signal);
    }
  }

  /** Whether note `later` was journaled after the last note `first`. */
  private journaledAfter(first: JournalStep, later: JournalStep): boolean {
    const all = this.entries();
    const i = all.map((e) => e.step).lastIndexOf(first);
    return i >= 0 && all.slice(i + 1).some((e) => e.step === later);
  }

  /** draining: IPt (or, direct, the origin's proxy) keeps redirecting until caches moved and traffic stopped. */
  private async draining(): Promise<void> {
    const { timings, domain } = this.plan;
    const since = Math.max(...this.families.map((f) => this.lastChangeAt(f.targetIp) ?? 0)) || Date.now();
    if (!this.usesRedirect) {
      await this.waitQuiet(WAIT.ip1ProxyQuiet, since, timings.ttl * 1000, timings.drainCapMs, async () => {
        const s = await this.origin.siteStats(domain);
        return {
          lastActivityAt: s.lastRequestAt ?? 0,
          busy: s.inFlight > 0,
          observed: { requests: s.requests, inFlight: s.inFlight },
        };
      });
      return;
    }
    await this.waitQuiet(
      WAIT.iptQuiet,
      since,
      timings.ttl * 1000,
      timings.drainCapMs,
      this.redirectSampler(),
    );
  }

  /** Samples the redirects at IPt (every family): activity is a new connection or bytes moving. */
  private redirectSampler(): () => Promise<QuietSample> {
    const last = new Map<string, { bytes: number; changedAt: number }>();
    return async () => {
      let lastActivityAt = 0;
      let busy = false;
      const observed: Record<string, unknown> = {};
      for (const f of this.families) {
        const s: RedirectStats | undefined = await this.relay.redirectStats(f.redirectId);
        if (!s) {
          observed[f.type] = { redirect: 'absent' };
          continue;
        }
        const bytes = s.bytesToUpstream + s.bytesToClient;
        const prev = last.get(f.redirectId);
        if (!prev || prev.bytes !== bytes) last.set(f.redirectId, { bytes, changedAt: Date.now() });
        lastActivityAt = Math.max(lastActivityAt, s.lastConnectionAt ?? 0, last.get(f.redirectId)!.changedAt);
        // Held: connections a hold still keeps, or (kernel engine) clients whose dropped SYN has
        // not been retransmitted since the release; either comes to IPt yet.
        busy ||= s.activeConnections > 0 || s.held > 0;
        observed[f.type] = {
          activeConnections: s.activeConnections,
          totalConnections: s.totalConnections,
          bytes,
          held: s.held,
        };
      }
      return {
        lastActivityAt,
        busy,
        observed: this.families.length === 1 ? (observed.A as Record<string, unknown>) : observed,
      };
    };
  }

  /**
   * The end of draining, before `completed` is entered: redirects and IPt gone, the origin no
   * longer serves the domain, the TTLs are back.
   */
  private async complete(): Promise<void> {
    const { domain } = this.plan;
    if (this.usesRedirect) {
      for (const f of this.families) {
        await this.stopRedirect(STEP.stopRedirect, f);
        await this.removeAddress(STEP.removeAddress, f);
      }
    }
    if (this.databases) {
      // The migration's replication user goes; the origin's databases stay frozen as their backup.
      const close = this.dbCall(this.origin, 'closeDatabaseSource');
      await this.step(STEP.dbCloseSource, () => close(this.id));
    }
    if (this.web) {
      // The target's gate goes first (its plain vhost serves), then the origin's copy goes into a backup.
      const finish = this.webCall(this.target, 'finishWebSite');
      const finishOrigin = this.webCall(this.origin, 'finishWebSite');
      const backupKeepMs = this.plan.web?.backupKeepMs ?? DEFAULT_BACKUP_KEEP_MS;
      await this.step(STEP.targetFinishSite, () => finish(domain, 'target'));
      await this.step(STEP.originFinishSite, () => finishOrigin(domain, 'origin', { backupKeepMs }), {
        backupKeepMs,
      });
    } else await this.step(STEP.originRemoveSite, () => this.origin.removeSite(domain));
    for (const f of this.families)
      if (this.names.some((n) => this.original(f, n).ttl !== this.plan.timings.ttl))
        await this.ensureRecord(f.type, f.targetIp, 'original');
  }

  /** Stop the redirect at IPt of family `f` (step `name`), then journal when it was gone. */
  private async stopRedirect(name: Step, f: Family): Promise<void> {
    await this.step(familyStep(name, f.suffix), () => this.relay.stopRedirect(f.redirectId));
    this.note(STEP.redirectRemoved, { redirect: f.redirectId, host: this.relay.id });
  }

  /** Take IPt of family `f` down (step `name`), then journal when it was gone. */
  private async removeAddress(name: Step, f: Family): Promise<void> {
    await this.step(familyStep(name, f.suffix), () => this.relay.removeAddress(f.tempIp), {
      address: f.tempIp,
      host: this.relay.id,
    });
    this.note(STEP.tempIpRemoved, { address: f.tempIp, host: this.relay.id });
  }

  /** When a record (of any name) was last changed to `address` (from the journal). */
  private lastChangeAt(address: string): number | undefined {
    const change = (step: string | undefined) =>
      step === STEP.dnsChange || !!step?.startsWith(`${STEP.dnsChange}@`);
    return this.entries()
      .filter((e) => change(e.step) && e.detail?.address === address)
      .pop()?.at;
  }

  /**
   * Make the `type` record of every name `[address]` with `ttl` (`original`: each name's TTL from
   * before the migration) unless it is that already (a resumed run), then wait until every
   * authoritative server shows every name's (invariant 5). Returns when the last change was made.
   */
  private async ensureRecord(
    type: Family['type'],
    address: string,
    ttl: number | 'original',
  ): Promise<number> {
    const { domain } = this.plan;
    const f = this.families.find((x) => x.type === type)!;
    let changedAt = 0;
    const changed: Array<[string, number | null]> = [];
    for (const name of this.names) {
      const want = ttl === 'original' ? this.original(f, name).ttl : ttl;
      const cur = await this.dns.getRRset(name, type);
      const step = nameStep(STEP.dnsChange, name, domain);
      if (cur && cur.ttl === want && cur.rdata.length === 1 && cur.rdata[0] === address) {
        const at = this.entries()
          .filter((e) => e.step === step && e.detail?.address === address && e.detail?.ttl === want)
          .pop()?.at;
        changedAt = Math.max(changedAt, at ?? Date.now());
        changed.push([name, null]);
      } else {
        changedAt = Math.max(changedAt, Date.now());
        const { serial } = await this.step(step, () => this.dns.replaceRRset(name, type, want, [address]), {
          type,
          address,
          ttl: want,
          ...(name === domain ? {} : { name }),
        });
        changed.push([name, serial]);
      }
    }
    for (const [name, serial] of changed) await this.propagated(name, type, address, serial);
    return changedAt;
  }

  /** Wait until every authoritative server answers `[address]` for `name` (with at least `serial` when known). */
  private async propagated(
    name: string,
    type: Family['type'],
    address: string,
    serial: number | null,
  ): Promise<void> {
    const { timings } = this.plan;
    const start = Date.now();
    const deadline = start + Math.max(10_000, timings.dnsTempCapMs);
    for (;;) {
      const seen = await this.dns.observe(name, type);
      const behind = seen.filter(
        (s) =>
          (serial !== null && (s.serial === null || s.serial < serial)) ||
          !(s.rdata.length === 1 && s.rdata[0] === address),
      );
      const now = Date.now();
      this.orch.emit('dns', {
        id: this.id,
        phase: this.current,
        at: now,
        name,
        type,
        expect: [address],
        serial,
        servers: seen,
      });
      this.orch.emit('wait', {
        id: this.id,
        phase: this.current,
        what: WAIT.dnsPropagation,
        at: now,
        elapsedMs: now - start,
        remainingMs: deadline - now,
        observed: { type, serial, servers: seen, ...(name === this.plan.domain ? {} : { name }) },
      });
      if (behind.length === 0) break;
      if (now > deadline) {
        throw new FerryError(
          'DNS_NOT_PROPAGATED',
          `${behind.map((b) => b.server).join(', ')} still do not show ${name} ${type} ${address}${serial !== null ? ` (serial ${serial})` : ''}`,
        );
      }
      await sleep(timings.pollMs, this.signal);
    }
    this.note(nameStep(STEP.dnsPropagated, name, this.plan.domain), {
      type,
      address,
      serial,
      ...(name === this.plan.domain ? {} : { name }),
    });
  }

  /** Wait until `ms` has passed since `since` (a TTL), publishing progress. */
  private async waitUntil(what: Wait, since: number, ms: number): Promise<void> {
    for (;;) {
      const now = Date.now();
      const remainingMs = since + ms - now;
      this.orch.emit('wait', {
        id: this.id,
        phase: this.current,
        what,
        at: now,
        elapsedMs: now - since,
        remainingMs: Math.max(0, remainingMs),
        observed: {},
      });
      if (remainingMs <= 0) break;
      await sleep(Math.min(remainingMs, Math.max(this.plan.timings.pollMs, 500)), this.signal);
    }
    this.note(waitPassedNote(what), { waitedMs: Date.now() - since });
  }

  /**
   * Wait until `minMs` has passed since `since` and traffic has been quiet for the quiet window,
   * but no longer than `capMs` after `minMs`. What was observed is journaled.
   */
  private async waitQuiet(
    what: Wait,
    since: number,
    minMs: number,
    capMs: number,
    sample: () => Promise<QuietSample>,
  ): Promise<void> {
    const { quietWindowMs, pollMs } = this.plan.timings;
    const capAt = since + minMs + capMs;
    let observed: Record<string, unknown> = {};
    let reason: WaitEnd = 'cap';
    let lastTraffic = 0;
    for (;;) {
      const now = Date.now();
      const s = await sample();
      observed = s.observed;
      const quietSince = Math.max(since, s.lastActivityAt);
      const quiet = !s.busy && now - quietSince >= quietWindowMs;
      const done = now - since >= minMs && quiet;
      const remainingMs = Math.max(0, Math.max(since + minMs, quietSince + quietWindowMs) - now);
      this.orch.emit('wait', {
        id: this.id,
        phase: this.current,
        what,
        at: now,
        elapsedMs: now - since,
        remainingMs,
        observed,
      });
      if (now - lastTraffic >= 1000) {
        lastTraffic = now;
        this.orch.emit('traffic', { id: this.id, phase: this.current, at: now, what, observed });
      }
      if (done) {
        reason = 'quiet';
        break;
      }
      if (now >= capAt) break;
      await sleep(pollMs, this.signal);
    }
    this.note(waitEndNote(what, reason), { ...observed, waitedMs: Date.now() - since });
  }

  /** Undo: a reverse migration once the target has written, else every step in reverse. */
  async undo(): Promise<void> {
    const reversing = this.entries().some((e) => e.kind === 'step' && isReverseStep(e.step));
    if (reversing || (await this.isSwitched())) await this.reverse();
    else await this.undoSteps();
  }

  /** Undo a migration that never switched: every step in reverse; DNS, addresses, redirects and vhosts as before. */
  private async undoSteps(): Promise<void> {
    const { domain, timings } = this.plan;
    await this.undoDatabases();
    if (this.usesRedirect)
      for (const f of this.families)
        await this.step(familyStep(STEP.undoReleaseRedirect, f.suffix), () =>
          this.relay.releaseRedirect(f.redirectId),
        );
    const originMode = await this.modeOf(this.origin);
    if (originMode !== null && originMode !== 'serve')
      await this.step(STEP.undoOriginServe, () => this.origin.setSiteMode(domain, 'serve'));
    // Without the original record journaled, planning never finished and DNS was never touched.
    const touched = this.entries().some((e) => e.step === STEP.originalRecord);
    let restoredAt = Date.now();
    if (touched)
      for (const f of this.families)
        restoredAt = Math.max(restoredAt, await this.ensureRecord(f.type, f.originIp, 'original'));
    if (this.web) {
      // Whatever an install began is taken back, also when it failed half-way.
      if (this.journaled(STEP.targetInstallSite) || (await this.target.hasSite(domain))) {
        const uninstall = this.webCall(this.target, 'uninstallWebSite');
        await this.step(STEP.undoTargetUninstallSite, () => uninstall(domain));
      }
    } else if (await this.target.hasSite(domain))
      await this.step(STEP.undoTargetRemoveSite, () => this.target.removeSite(domain));
    if (this.usesRedirect) {
      // The redirects must outlive the records that pointed at IPt: caches may still send clients
      // there. They forward to the origin until quiet, so they stop only after DNS is back.
      if (
        (await Promise.all(this.families.map((f) => this.relay.redirectStats(f.redirectId)))).some(Boolean)
      ) {
        await this.waitQuiet(
          WAIT.rollbackIptQuiet,
          restoredAt,
          timings.ttl * 1000,
          timings.drainCapMs,
          this.redirectSampler(),
        );
      }
      for (const f of this.families) {
        await this.stopRedirect(STEP.undoStopRedirect, f);
        await this.removeAddress(STEP.undoRemoveAddress, f);
      }
    }
    // Last: nothing reaches the site through IPt any more; its own vhost comes back (one reload).
    if (this.web && this.journaled(STEP.originGateSite)) {
      const ungate = this.webCall(this.origin, 'ungateWebSite');
      await this.step(STEP.undoOriginUngateSite, () => ungate(domain));
    }
  }

  /**
   * A web site's databases before the switch, first of all: when the target's take-over ran (the
   * switch after it failed), the target's site users lose their writes; the target's copy and
   * channel go (`dropDatabaseCopy`); only then do the origin's site users get their writes back;
   * last the migration's replication user goes. Never two writers, and each step is idempotent,
   * so a resumed undo repeats it.
   */
  private async undoDatabases(): Promise<void> {
    const db = this.databases;
    if (!db || !this.journaled(STEP.dbOpenSource)) return;
    const { domain } = this.plan;
    const count = (kind: 'step' | 'note', step: JournalStep) =>
      this.entries().filter((e) => e.kind === kind && e.step === step).length;
    if (count('step', STEP.dbTakeOver) > count('note', STEP.dbCatchupTimeout)) {
      // A take-over that did not time out may have made the target the writer (the switch after it
      // failed, or a crash inside it).
      const freeze = this.dbCall(this.target, 'freezeDatabases');
      await this.step(STEP.undoDbFreezeTarget, () => freeze(this.id, domain));
    }
    if (this.journaled(STEP.dbCopy)) {
      const drop = this.dbCall(this.target, 'dropDatabaseCopy');
      await this.step(STEP.undoDbDropCopy, () => drop(this.id, domain));
    }
    if (this.journaled(STEP.dbFreezeOrigin)) {
      const thaw = this.dbCall(this.origin, 'thawDatabases');
      await this.step(STEP.undoDbThawOrigin, () => thaw(this.id, domain));
    }
    const close = this.dbCall(this.origin, 'closeDatabaseSource');
    await this.step(STEP.undoDbCloseSource, () => close(this.id));
  }

  /**
   * `DB_ROLLBACK_AFTER_SWITCH` when the target writes the site's databases and the reverse channel
   * cannot be made: the migration completed (its users are gone, the origin's site is in its
   * backup), or the journal lacks the origin's address. The target then stays the only writer.
   */
  async refuseReverse(): Promise<void> {
    const db = this.databases;
    if (!db || !this.journaled(STEP.dbTakeOver) || !(await this.isSwitched())) return;
    const why =
      db.mode === 'copy-in-hold'
        ? "they were copied inside the hold, with no replication between the servers (the origin's binary log was not usable)"
        : !this.originDbAddress()
          ? "the journal lacks the origin's database address"
          : this.journaled(STEP.dbCloseSource)
            ? 'the migration completed'
            : undefined;
    if (!why) return;
    throw new FerryError(
      'DB_ROLLBACK_AFTER_SWITCH',
      `${this.plan.domain} switched to target ${this.target.id}, which is now the only writer of its databases (${db.move.map((m) => m.name).join(', ')}), and ${why}: Ferry cannot replicate them back, so nothing was rolled back (the origin keeps its copy frozen as their backup)`,
    );
  }

  /** The origin's MariaDB address, as its source said (journaled with the copy). */
  private originDbAddress(): string | undefined {
    const d = this.entries()
      .filter((e) => e.kind === 'note' && e.step === STEP.dbCopied)
      .pop()?.detail as { originAddress?: string } | undefined;
    return d?.originAddress;
  }

  /** The reverse migration's id for the agents' database calls (its own channel, user and state). */
  private get reverseDbId(): string {
    return `${this.id}-reverse`;
  }

  /**
   * A rollback after the switch, for the databases: the target opens a source for the origin's
   * address and the origin starts the reverse channel at the target's position of its take-over.
   * The origin's frozen copy is the state the target started from, so nothing is copied.
   */
  private async openReverseChannel(): Promise<void> {
    const { domain } = this.plan;
    const took = this.entries()
      .filter((e) => e.kind === 'note' && e.step === STEP.dbTookOver)
      .pop()?.detail as { writerPosition?: string } | undefined;
    const position = took?.writerPosition;
    const address = this.originDbAddress();
    if (!position || !address)
      throw new FerryError(
        'DB_ROLLBACK_AFTER_SWITCH',
        `${domain}: the journal lacks the target's position at its take-over or the origin's address; its databases cannot be replicated back`,
      );
    const open = this.dbCall(this.target, 'openDatabaseSource');
    const start = this.dbCall(this.origin, 'startDatabaseChannel');
    const source = await this.step(
      STEP.reverseDbOpenSource,
      () => open(this.reverseDbId, domain, address, ...this.withDeclared()),
      { replicaAddress: address },
    );
    await this.step(STEP.reverseDbStartChannel, () => start(this.reverseDbId, domain, source, position), {
      position,
    });
  }

  /**
   * Inside the reverse hold: the target's site users lose their writes, the origin applies the
   * target's last write (bounded) and becomes the only writer. On a timeout the target writes and
   * serves again and the redirects release to it (their upstream is still the target); the
   * rollback then fails with the reason and can be asked again.
   */
  private async reverseTakeOver(redirects: Family[]): Promise<void> {
    const { domain } = this.plan;
    const freeze = this.dbCall(this.target, 'freezeDatabases');
    const takeOver = this.dbCall(this.origin, 'takeOverDatabases');
    const timeoutMs = this.dbOptions.catchUpTimeoutMs;
    const { position } = await this.step(STEP.reverseDbFreezeTarget, () => freeze(this.reverseDbId, domain));
    this.emitDatabase('frozen', { position });
    try {
      const r = await this.step(
        STEP.reverseDbTakeOver,
        () => takeOver(this.reverseDbId, domain, position, timeoutMs),
        { position, timeoutMs },
      );
      this.emitDatabase('caught-up', { waitedMs: r.waitedMs });
    } catch (err) {
      if (!isFerryError(err, 'DB_CATCHUP_TIMEOUT')) throw err;
      const thaw = this.dbCall(this.target, 'thawDatabases');
      await this.step(STEP.reverseDbThawTarget, () => thaw(this.reverseDbId, domain));
      await this.step(STEP.reverseDbTargetServe, () => this.target.setSiteMode(domain, 'serve'));
      for (const f of redirects)
        await this.step(familyStep(STEP.reverseDbReleaseRedirect, f.suffix), () =>
          this.relay.releaseRedirect(f.redirectId),
        );
      throw new FerryError(
        'DB_CATCHUP_TIMEOUT',
        `${domain}: the origin did not catch up with the target's databases within ${timeoutMs} ms; the target writes and serves again. Ask for the rollback again: ferry rollback ${this.id} (${err.message})`,
        { cause: err },
      );
    }
  }

  /**
   * Undo after the switch: a reverse migration. The origin gets the target's data back (bulk,
   * then a final delta while the target holds), becomes the writer again, and the target proxies
   * what still reaches it to the origin until its traffic is quiet; then IPt and the target's
   * vhost go. Resumed past `reverse-origin-serve` (or finding the origin serving), it never syncs again.
   */
  private async reverse(): Promise<void> {
    const { domain, originIp, ports, timings } = this.plan;
    await this.refuseReverse();
    // The site's databases, when the target took them over: replicated back on a channel of their own.
    const dbBack = this.databases !== undefined && this.journaled(STEP.dbTakeOver);
    const redirects = this.usesRedirect
      ? (
          await Promise.all(
            this.families.map(async (f) => ((await this.relay.redirectStats(f.redirectId)) ? f : undefined)),
          )
        ).filter((f): f is Family => !!f)
      : [];
    const originMode = await this.modeOf(this.origin);
    const back = this.journaled(STEP.reverseOriginServe) || originMode === 'serve';
    if (!back) {
      if (this.web && originMode === null) {
        // Completed: the origin's vhost, pool and data went into its backup folder.
        throw new FerryError(
          'PLAN_NO_SITE',
          `origin ${this.origin.id} no longer has ${domain}'s gate (the migration completed and moved its copy into a backup there); restore it from that backup by hand`,
        );
      }
      if (originMode === null || !(await this.origin.hasSite(domain))) {
        await this.step(STEP.reverseOriginAddSite, () => this.origin.addSite(domain, 'readonly'));
      }
      if (dbBack) await this.openReverseChannel();
      await this.sync(STEP.reverseInitialSync, this.target, this.origin);
      for (const f of redirects)
        await this.step(familyStep(STEP.reverseHoldRedirect, f.suffix), () =>
          this.relay.holdRedirect(f.redirectId),
        );
      await this.step(STEP.reverseHoldTarget, () => this.target.setSiteMode(domain, 'hold'));
      const idle = await this.step(STEP.reverseWaitTargetIdle, () =>
        this.target.waitSiteIdle(domain, timings.cutoverDrainTimeoutMs),
      );
      if (!idle)
        throw new FerryError(
          'CUTOVER_DRAIN_TIMEOUT',
          `requests for ${domain} still in flight on the target after ${timings.cutoverDrainTimeoutMs} ms`,
        );
      await this.sync(STEP.reverseFinalSync, this.target, this.origin);
      if (dbBack) await this.reverseTakeOver(redirects);
      await this.step(STEP.reverseOriginServe, () => this.origin.setSiteMode(domain, 'serve'));
    }
    if (await this.target.hasSite(domain)) {
      await this.step(STEP.reverseTargetProxy, () =>
        this.target.setSiteMode(domain, { proxy: { address: originIp, port: ports[0]! } }),
      );
    }
    for (const f of redirects) {
      await this.step(familyStep(STEP.reverseRedirectToOrigin, f.suffix), () =>
        this.relay.setRedirectUpstream(f.redirectId, f.originIp),
      );
      await this.step(familyStep(STEP.reverseReleaseRedirect, f.suffix), () =>
        this.relay.releaseRedirect(f.redirectId),
      );
    }
    let changedAt = 0;
    let cacheS = timings.ttl;
    for (const f of this.families) {
      for (const n of this.names) cacheS = Math.max(cacheS, (await this.dns.getRRset(n, f.type))?.ttl ?? 0);
      changedAt = Math.max(changedAt, await this.ensureRecord(f.type, f.originIp, 'original'));
    }
    const redirectSample = redirects.length ? this.redirectSampler() : undefined;
    await this.waitQuiet(WAIT.reverseIp2Quiet, changedAt, cacheS * 1000, timings.drainCapMs, async () => {
      const t = (await this.target.hasSite(domain)) ? await this.target.siteStats(domain) : undefined;
      const r = redirectSample ? await redirectSample() : undefined;
      return {
        lastActivityAt: Math.max(t?.lastRequestAt ?? 0, r?.lastActivityAt ?? 0),
        busy: (t?.inFlight ?? 0) > 0 || (r?.busy ?? false),
        observed: {
          targetRequests: t?.requests ?? 0,
          targetInFlight: t?.inFlight ?? 0,
          ...(r ? { redirect: r.observed } : {}),
        },
      };
    });
    if (this.usesRedirect) {
      for (const f of this.families) {
        await this.stopRedirect(STEP.reverseStopRedirect, f);
        await this.removeAddress(STEP.reverseRemoveAddress, f);
      }
    }
    if (dbBack) {
      // Both migration users go; the target keeps its databases frozen, as their copy at the rollback.
      const closeReverse = this.dbCall(this.target, 'closeDatabaseSource');
      const closeForward = this.dbCall(this.origin, 'closeDatabaseSource');
      await this.step(STEP.reverseDbCloseSource, () => closeReverse(this.reverseDbId));
      await this.step(STEP.reverseDbCloseForwardSource, () => closeForward(this.id));
    }
    if (this.web) {
      const uninstall = this.webCall(this.target, 'uninstallWebSite');
      const ungate = this.webCall(this.origin, 'ungateWebSite');
      await this.step(STEP.reverseTargetUninstallSite, () => uninstall(domain));
      await this.step(STEP.reverseOriginUngateSite, () => ungate(domain));
    } else await this.step(STEP.reverseTargetRemoveSite, () => this.target.removeSite(domain));
  }
}

/** How often the target's replication lag is published while the databases replicate. */
const LAG_INTERVAL_MS = 2000;
/** How often the wait before a hold reads the replication lag. */
const LAG_POLL_MS = 200;

/** The HostDriver methods of a web site's databases the orchestrator calls. */
type DbMethod =
  | 'startDatabaseChannel'
  | 'openDatabaseSource'
  | 'copyDatabases'
  | 'databaseLag'
  | 'freezeDatabases'
  | 'thawDatabases'
  | 'takeOverDatabases'
  | 'dropDatabaseCopy'
  | 'closeDatabaseSource';

/** The HostDriver methods of web sites the orchestrator calls. */
type WebMethod =
  'gateWebSite' | 'exportWebSite' | 'installWebSite' | 'ungateWebSite' | 'uninstallWebSite' | 'finishWebSite';
