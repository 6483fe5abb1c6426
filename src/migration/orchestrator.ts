/**
 * The migration state machine. One `run` drives a migration from its current phase to the end:
 *
 *   planned → temp-ip → dns-temp → syncing → preflight → cutover → draining → completed
 *
 * Contract:
 * - Each phase is entered through the journal before any of its side effects run, and each step
 *   inside a phase is journaled before it runs. Every step is idempotent, so `run` on a migration
 *   that stopped half-way (a crash, a kill) repeats the phase it was in and goes on.
 * - Exactly one writer: the target stays `readonly` until the cut-over has drained the origin's
 *   in-flight requests and run the final delta sync; from then on the origin proxies whatever
 *   still reaches it (stale caches on IP1, old keep-alive connections through IPt) to the target.
 * - Waits on caches start only after every authoritative server shows the change (invariant 5),
 *   and end on observed traffic: quiet for `quietWindowMs`, bounded by a cap.
 * - A failure before the cut-over's switch undoes every step in reverse (`rolled-back`); a failure
 *   after it leaves the target as the writer and reports `failed` with the reason.
 */
import { EventEmitter } from 'node:events';
import { FerryError, errorMessage } from '../common/errors.js';
import { sleep } from '../common/time.js';
import type { Journal } from './journal.js';
import type { DnsProvider, HostDriver } from './ports.js';
import { PHASES, type MigrationPlan, type MigrationRecord, type Phase } from './types.js';

/** Events published while migrations run (the API, CLI and dashboard follow them). */
export interface MigrationEvents {
  phase: [{ id: string; phase: Phase; at: number }];
  step: [{ id: string; phase: Phase; step: string; at: number; detail?: Record<string, unknown> }];
  wait: [{ id: string; phase: Phase; what: string; at: number; elapsedMs: number; remainingMs: number; observed: Record<string, unknown> }];
  error: [{ id: string; phase: Phase; at: number; message: string }];
}

export interface OrchestratorOptions {
  dns: DnsProvider;
  hosts: Map<string, HostDriver> | Record<string, HostDriver>;
  journal: Journal;
}

const RECORD_TYPE = 'A';

/** Runs migrations; one instance serves many, each `run` drives one to its end. */
export class Orchestrator extends EventEmitter<MigrationEvents> {
  private readonly dns: DnsProvider;
  private readonly hosts: Map<string, HostDriver>;
  readonly journal: Journal;

  constructor(opts: OrchestratorOptions) {
    super();
    this.dns = opts.dns;
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

  get(id: string): MigrationRecord {
    const rec = this.journal.get(id);
    if (!rec) throw new FerryError('MIGRATION_NOT_FOUND', `no migration with id ${id}`);
    return rec;
  }

  /** Drive migration `id` from its current phase to `completed` (or `rolled-back`/`failed`). */
  async run(id: string, signal?: AbortSignal): Promise<MigrationRecord> {
    const rec = this.get(id);
    const run = new MigrationRun(this, rec.plan, this.dns, this.host(rec.plan.origin), this.host(rec.plan.target), signal);
    let phase = rec.phase;
    if (phase === 'completed' || phase === 'failed' || phase === 'rolled-back') return rec;
    let index = PHASES.indexOf(phase as (typeof PHASES)[number]);
    try {
      for (; index < PHASES.length; index++) {
        phase = PHASES[index]!;
        await run.phase(phase);
      }
    } catch (err) {
      const message = errorMessage(err);
      this.journal.append({ migrationId: id, at: Date.now(), phase, kind: 'error', detail: { message } });
      this.emit('error', { id, phase, at: Date.now(), message });
      if (signal?.aborted) throw err; // stopped from outside (shutdown): resume later, undo nothing
      if (run.switched) {
        await run.enter('failed');
      } else {
        await run.rollBack();
      }
    }
    return this.get(id);
  }

  private host(id: string): HostDriver {
    const h = this.hosts.get(id);
    if (!h) throw new FerryError('HOST_UNKNOWN', `no host named ${id}`);
    return h;
  }
}

/** Checks that a plan names known hosts and distinct addresses before anything is journaled. */
function validatePlan(plan: MigrationPlan, hosts: Map<string, HostDriver>): void {
  const problems: string[] = [];
  if (!/^[A-Za-z0-9._-]+$/.test(plan.id)) problems.push(`id "${plan.id}" must be letters, digits, '.', '_' or '-'`);
  if (!plan.domain) problems.push('domain is empty');
  if (!hosts.has(plan.origin)) problems.push(`origin host "${plan.origin}" is unknown`);
  if (!hosts.has(plan.target)) problems.push(`target host "${plan.target}" is unknown`);
  if (plan.origin === plan.target) problems.push('origin and target are the same host');
  const ips = [plan.originIp, plan.targetIp, plan.tempIp];
  if (new Set(ips).size !== 3) problems.push(`originIp, targetIp and tempIp must differ (got ${ips.join(', ')})`);
  if (plan.ports.length === 0) problems.push('ports is empty: name at least the HTTP port');
  if (plan.timings.ttl < 1) problems.push('ttl must be at least 1 second');
  if (problems.length) throw new FerryError('PLAN_INVALID', `invalid migration plan: ${problems.join('; ')}`);
}

/** The state of one `run`: the phases' steps, waits and undo. */
class MigrationRun {
  /** True once the target has become the writer: from then on, undo means a reverse migration. */
  switched = false;
  private current: Phase = 'planned';

  constructor(
    private readonly orch: Orchestrator,
    private readonly plan: MigrationPlan,
    private readonly dns: DnsProvider,
    private readonly origin: HostDriver,
    private readonly target: HostDriver,
    private readonly signal: AbortSignal | undefined,
  ) {
    // A resumed run that finds the journal past the switch must not roll back.
    const done = orch.journal.entries(plan.id).some((e) => e.kind === 'step' && e.step === 'target-serve');
    this.switched = done;
  }

  private get redirectId(): string {
    return `mig-${this.plan.id}`;
  }

  private get upstreamOrigin(): string {
    return this.plan.originIp;
  }

  /** Journal entering `phase` (unless resuming inside it), then publish it. */
  async enter(phase: Phase): Promise<void> {
    const rec = this.orch.journal.get(this.plan.id);
    this.current = phase;
    if (phase === 'planned' && rec?.phase === 'planned') return; // entered (and published) by create()
    if (rec?.phase === phase) {
      this.orch.journal.append({ migrationId: this.plan.id, at: Date.now(), phase, kind: 'note', detail: { resumed: true } });
    } else {
      this.orch.journal.append({ migrationId: this.plan.id, at: Date.now(), phase, kind: 'enter' });
    }
    this.orch.emit('phase', { id: this.plan.id, phase, at: Date.now() });
  }

  /** Journal a step, then run it. */
  private async step<T>(name: string, fn: () => Promise<T>, detail?: Record<string, unknown>): Promise<T> {
    this.signal?.throwIfAborted();
    const at = Date.now();
    this.orch.journal.append({ migrationId: this.plan.id, at, phase: this.current, kind: 'step', step: name, ...(detail ? { detail } : {}) });
    this.orch.emit('step', { id: this.plan.id, phase: this.current, step: name, at, ...(detail ? { detail } : {}) });
    return fn();
  }

  async phase(phase: (typeof PHASES)[number]): Promise<void> {
    await this.enter(phase);
    switch (phase) {
      case 'planned':
        return this.checkPlan();
      case 'temp-ip':
        return this.tempIp();
      case 'dns-temp':
        return this.dnsTemp();
      case 'syncing':
        return this.syncing();
      case 'preflight':
        return this.preflight();
      case 'cutover':
        return this.cutover();
      case 'draining':
        return this.draining();
      case 'completed':
        return this.complete();
    }
  }

  /** planned: the record points at IP1 (or, on resume, at an address of this migration). */
  private async checkPlan(): Promise<void> {
    const { domain, originIp, tempIp, targetIp } = this.plan;
    const rr = await this.dns.getRRset(domain, RECORD_TYPE);
    const now = rr?.rdata ?? [];
    if (!(now.length === 1 && [originIp, tempIp, targetIp].includes(now[0]!))) {
      throw new FerryError('PLAN_DNS_MISMATCH', `${domain} ${RECORD_TYPE} is [${now.join(', ')}], expected [${originIp}]`);
    }
    if (!(await this.origin.hasSite(domain))) {
      throw new FerryError('PLAN_NO_SITE', `origin ${this.origin.id} does not host ${domain}`);
    }
    await this.target.hasSite(domain); // reachability: throws when the target cannot be asked
  }

  /** temp-ip: IPt up on the origin, a redirect on it to the origin's own service on IP1. */
  private async tempIp(): Promise<void> {
    const { tempIp, ports, domain } = this.plan;
    await this.step('add-address', () => this.origin.addAddress(tempIp), { address: tempIp });
    await this.step('start-redirect', () =>
      this.origin.startRedirect(this.redirectId, { address: tempIp, ports, upstream: this.upstreamOrigin, sourceAddress: tempIp }),
    );
    const probe = await this.step('probe-temp-ip', () => this.origin.probe(domain, tempIp, ports[0]!, '/'));
    if (probe.status < 200 || probe.status >= 400) {
      throw new FerryError('TEMP_IP_NOT_SERVING', `${domain} answers ${probe.status} on ${tempIp}:${ports[0]}`);
    }
  }

  /** dns-temp: A → IPt, visible everywhere; then wait out caches and traffic at IP1. */
  private async dnsTemp(): Promise<void> {
    const { domain, tempIp, timings } = this.plan;
    const before = await this.dns.getRRset(domain, RECORD_TYPE);
    const oldTtl = before?.ttl ?? timings.ttl;
    const changedAt = await this.changeRecord(tempIp);
    await this.waitQuiet('ip1-quiet', changedAt, Math.max(oldTtl, timings.ttl) * 1000, timings.dnsTempCapMs, async () => {
      const stats = await this.origin.siteStats(domain);
      let lastDirect = 0;
      let direct = 0;
      for (const [source, s] of Object.entries(stats.bySource)) {
        if (source === tempIp || source === `::ffff:${tempIp}`) continue;
        direct += s.requests;
        lastDirect = Math.max(lastDirect, s.lastAt);
      }
      return { lastActivityAt: lastDirect, busy: false, observed: { directRequests: direct, lastDirectAt: lastDirect || null } };
    });
  }

  /** syncing: the target gets the site (read-only) and a bulk copy of its data. */
  private async syncing(): Promise<void> {
    const { domain } = this.plan;
    await this.step('target-add-site', () => this.target.addSite(domain, 'readonly'));
    const res = await this.step('initial-sync', () => this.origin.syncSite(domain, this.target));
    this.orch.emit('step', { id: this.plan.id, phase: 'syncing', step: 'initial-sync-done', at: Date.now(), detail: res });
  }

  /** preflight: the target answers like the origin before anything is switched. */
  private async preflight(): Promise<void> {
    const { domain, originIp, targetIp, ports } = this.plan;
    const [o, t] = await this.step('parity', () =>
      Promise.all([this.origin.probe(domain, originIp, ports[0]!, '/'), this.target.probe(domain, targetIp, ports[0]!, '/')]),
    );
    if (o.status !== t.status) {
      throw new FerryError('PREFLIGHT_MISMATCH', `GET / on ${domain}: origin answers ${o.status}, target answers ${t.status}`);
    }
  }

  /**
   * cutover, in one step as seen from clients: hold new connections at IPt and new requests at
   * the origin, let in-flight requests finish, run the final delta sync, make the target the
   * writer, point the origin's site and the redirect at the target, release, then A → IP2.
   */
  private async cutover(): Promise<void> {
    const { domain, targetIp, timings } = this.plan;
    await this.step('hold-redirect', () => this.origin.holdRedirect(this.redirectId));
    await this.step('hold-origin-site', () => this.origin.setSiteMode(domain, 'hold'));
    const idle = await this.step('wait-origin-idle', () => this.origin.waitSiteIdle(domain, timings.cutoverDrainTimeoutMs));
    if (!idle) {
      throw new FerryError(
        'CUTOVER_DRAIN_TIMEOUT',
        `requests for ${domain} still in flight on the origin after ${timings.cutoverDrainTimeoutMs} ms`,
      );
    }
    const res = await this.step('final-sync', () => this.origin.syncSite(domain, this.target));
    this.orch.emit('step', { id: this.plan.id, phase: 'cutover', step: 'final-sync-done', at: Date.now(), detail: res });
    await this.step('target-serve', () => this.target.setSiteMode(domain, 'serve'));
    this.switched = true;
    await this.step('origin-proxy', () =>
      this.origin.setSiteMode(domain, { proxy: { address: targetIp, port: this.plan.ports[0]! } }),
    );
    await this.step('redirect-to-target', () => this.origin.setRedirectUpstream(this.redirectId, targetIp));
    await this.step('release-redirect', () => this.origin.releaseRedirect(this.redirectId));
    await this.changeRecord(targetIp);
  }

  /** draining: IPt keeps redirecting until caches moved and no connection has come for a while. */
  private async draining(): Promise<void> {
    const { timings } = this.plan;
    const changed = this.orch.journal
      .entries(this.plan.id)
      .filter((e) => e.step === 'dns-change' && e.detail?.address === this.plan.targetIp)
      .pop();
    const since = changed?.at ?? Date.now();
    let lastBytes = -1;
    let lastBytesChangeAt = since;
    await this.waitQuiet('ipt-quiet', since, timings.ttl * 1000, timings.drainCapMs, async () => {
      const s = await this.origin.redirectStats(this.redirectId);
      if (!s) return { lastActivityAt: 0, busy: false, observed: { redirect: 'absent' } };
      const bytes = s.bytesToUpstream + s.bytesToClient;
      if (bytes !== lastBytes) {
        lastBytes = bytes;
        lastBytesChangeAt = Date.now();
      }
      return {
        lastActivityAt: Math.max(s.lastConnectionAt ?? 0, lastBytesChangeAt),
        busy: s.activeConnections > 0,
        observed: { activeConnections: s.activeConnections, totalConnections: s.totalConnections, bytes },
      };
    });
  }

  /** completed: redirect and IPt gone, the origin no longer serves the domain. */
  private async complete(): Promise<void> {
    const { domain, tempIp } = this.plan;
    await this.step('stop-redirect', () => this.origin.stopRedirect(this.redirectId));
    await this.step('remove-address', () => this.origin.removeAddress(tempIp), { address: tempIp });
    await this.step('origin-remove-site', () => this.origin.removeSite(domain));
  }

  /** Change the A record, then wait until every authoritative server shows it (invariant 5). */
  private async changeRecord(address: string): Promise<number> {
    const { domain, timings } = this.plan;
    const { serial } = await this.step('dns-change', () => this.dns.replaceRRset(domain, RECORD_TYPE, timings.ttl, [address]), {
      address,
    });
    const start = Date.now();
    const deadline = start + Math.max(10_000, timings.dnsTempCapMs);
    for (;;) {
      const seen = await this.dns.observe(domain, RECORD_TYPE);
      const behind = seen.filter((s) => s.serial === null || s.serial < serial || !(s.rdata.length === 1 && s.rdata[0] === address));
      this.orch.emit('wait', {
        id: this.plan.id,
        phase: this.current,
        what: 'dns-propagation',
        at: Date.now(),
        elapsedMs: Date.now() - start,
        remainingMs: deadline - Date.now(),
        observed: { serial, servers: seen },
      });
      if (behind.length === 0) break;
      if (Date.now() > deadline) {
        throw new FerryError(
          'DNS_NOT_PROPAGATED',
          `${behind.map((b) => b.server).join(', ')} still do not show ${domain} ${RECORD_TYPE} ${address} (serial ${serial})`,
        );
      }
      await sleep(timings.pollMs, this.signal);
    }
    this.orch.journal.append({ migrationId: this.plan.id, at: Date.now(), phase: this.current, kind: 'note', step: 'dns-propagated', detail: { address, serial } });
    return start;
  }

  /**
   * Wait until `minMs` has passed since `since` and traffic has been quiet for the quiet window,
   * but no longer than `capMs` after `minMs`. What was observed is journaled.
   */
  private async waitQuiet(
    what: string,
    since: number,
    minMs: number,
    capMs: number,
    sample: () => Promise<{ lastActivityAt: number; busy: boolean; observed: Record<string, unknown> }>,
  ): Promise<void> {
    const { quietWindowMs, pollMs } = this.plan.timings;
    const capAt = since + minMs + capMs;
    let observed: Record<string, unknown> = {};
    let reason = 'cap';
    for (;;) {
      const now = Date.now();
      const s = await sample();
      observed = s.observed;
      const quietSince = Math.max(since, s.lastActivityAt);
      const quiet = !s.busy && now - quietSince >= quietWindowMs;
      const done = now - since >= minMs && quiet;
      const remainingMs = Math.max(0, Math.max(since + minMs, quietSince + quietWindowMs) - now);
      this.orch.emit('wait', { id: this.plan.id, phase: this.current, what, at: now, elapsedMs: now - since, remainingMs, observed });
      if (done) {
        reason = 'quiet';
        break;
      }
      if (now >= capAt) break;
      await sleep(pollMs, this.signal);
    }
    this.orch.journal.append({
      migrationId: this.plan.id,
      at: Date.now(),
      phase: this.current,
      kind: 'note',
      step: `${what}-${reason}`,
      detail: { ...observed, waitedMs: Date.now() - since },
    });
  }

  /** Undo a migration that never switched: every step in reverse, ending `rolled-back`. */
  async rollBack(): Promise<void> {
    const { domain, originIp, tempIp, timings } = this.plan;
    await this.enter('rolled-back');
    const undo: Array<[string, () => Promise<unknown>]> = [
      ['release-redirect', () => this.origin.releaseRedirect(this.redirectId)],
      ['origin-serve', async () => (await this.origin.hasSite(domain)) && this.origin.setSiteMode(domain, 'serve')],
      ['dns-restore', () => this.dns.replaceRRset(domain, RECORD_TYPE, timings.ttl, [originIp])],
      ['target-remove-site', () => this.target.removeSite(domain)],
      ['stop-redirect', () => this.origin.stopRedirect(this.redirectId)],
      ['remove-address', () => this.origin.removeAddress(tempIp)],
    ];
    // The redirect must outlive the record that points at IPt: caches may still send clients there.
    // It keeps forwarding to the origin until its quiet window, so stop it only after DNS is back.
    for (const [name, fn] of undo) {
      try {
        if (name === 'stop-redirect') await this.waitRedirectQuiet();
        await this.step(`undo-${name}`, fn);
      } catch (err) {
        this.orch.journal.append({ migrationId: this.plan.id, at: Date.now(), phase: 'rolled-back', kind: 'error', step: name, detail: { message: errorMessage(err) } });
      }
    }
  }

  private async waitRedirectQuiet(): Promise<void> {
    const stats = await this.origin.redirectStats(this.redirectId);
    if (!stats) return;
    const { timings } = this.plan;
    const since = Date.now();
    await this.waitQuiet('rollback-ipt-quiet', since, timings.ttl * 1000, timings.drainCapMs, async () => {
      const s = await this.origin.redirectStats(this.redirectId);
      return {
        lastActivityAt: s?.lastConnectionAt ?? 0,
        busy: (s?.activeConnections ?? 0) > 0,
        observed: { activeConnections: s?.activeConnections ?? 0 },
      };
    });
  }
}
