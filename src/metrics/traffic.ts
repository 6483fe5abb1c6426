/**
 * Traffic sampling: while a migration runs, once a second, ask its origin and target (through the
 * controller's host drivers) how many requests arrived for the domain and from where, read the
 * redirect's counters at the temporary IP, and ask the DNS provider for the A record. The samples
 * feed the dashboard's chart, the CLI's live line and the relay metrics.
 *
 * Where a request counts:
 * - IP1: requests at the origin from any source but IPt (clients with the origin's address);
 * - IPt: requests relayed through the temporary IP (source IPt, at the origin before the cut-over
 *   and at the target after it);
 * - IP2: requests at the target from any source but IPt.
 * Rates are per second, from the difference of two samples.
 */
import { EventEmitter } from 'node:events';
import type { Controller, ControllerEvent } from '../controller/index.js';
import type { MigrationRecord, RedirectStats } from '../migration/index.js';

/** One sample of one migration's traffic. */
export interface TrafficSample {
  migrationId: string;
  at: number;
  phase: string;
  /** Requests per second since the previous sample, by where they arrived. */
  rps: { ip1: number; ipt: number; ip2: number };
  /** Cumulative requests counted so far for the domain (origin and target counters). */
  requests: { ip1: number; ipt: number; ip2: number };
  /** The redirect at IPt: open and held connections, totals; null when there is none. */
  redirect: Pick<
    RedirectStats,
    'activeConnections' | 'totalConnections' | 'bytesToUpstream' | 'bytesToClient' | 'held'
  > | null;
  /** Requests held at the origin's site server (cut-over). */
  heldAtOrigin: number;
  /** The A record's addresses as the DNS provider has them. */
  dns: string[];
}

export interface TrafficSamplerOptions {
  /** Time between samples. Default 1000 ms. */
  intervalMs?: number;
  /** Samples kept per migration (the oldest go). Default 3600. */
  keep?: number;
  /** Migrations whose samples are kept (the oldest go). Default 50. */
  keepMigrations?: number;
  /** Keep sampling a migration this long after it ended, so the chart shows the tail. Default 5000 ms. */
  tailMs?: number;
}

const TERMINAL = new Set(['completed', 'failed', 'rolled-back']);

/** Redirect id the orchestrator gives a migration's relay at IPt. */
export function redirectIdOf(migrationId: string): string {
  return `mig-${migrationId}`;
}

interface Counters {
  ip1: number;
  ipt: number;
  ip2: number;
  at: number;
}

/** Samples the traffic of every running migration of a controller. */
export class TrafficSampler extends EventEmitter<{ sample: [TrafficSample] }> {
  private readonly intervalMs: number;
  private readonly keep: number;
  private readonly keepMigrations: number;
  private readonly tailMs: number;
  private readonly samples = new Map<string, TrafficSample[]>();
  private readonly last = new Map<string, Counters>();
  /** Migrations to sample, with when they ended (null while running). */
  private readonly active = new Map<string, number | null>();
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private readonly onEvent = (e: ControllerEvent) => this.observe(e);

  constructor(
    private readonly controller: Controller,
    opts: TrafficSamplerOptions = {},
  ) {
    super();
    this.intervalMs = opts.intervalMs ?? 1000;
    this.keep = opts.keep ?? 3600;
    this.keepMigrations = opts.keepMigrations ?? 50;
    this.tailMs = opts.tailMs ?? 5000;
  }

  /** Follow the controller's events and sample running migrations (those in the journal too). */
  start(): void {
    if (this.timer) return;
    this.controller.on('event', this.onEvent);
    for (const rec of this.controller.journal.briefs())
      if (!TERMINAL.has(rec.phase)) this.active.set(rec.id, null);
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.controller.off('event', this.onEvent);
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Samples kept for one migration, oldest first. */
  history(migrationId: string): TrafficSample[] {
    return [...(this.samples.get(migrationId) ?? [])];
  }

  /** The latest sample of every migration sampled now. */
  latest(): TrafficSample[] {
    const out: TrafficSample[] = [];
    for (const id of this.active.keys()) {
      const s = this.samples.get(id);
      if (s?.length) out.push(s[s.length - 1]!);
    }
    return out;
  }

  private observe(e: ControllerEvent): void {
    if (e.type === 'migration' && e.data.created) this.active.set(e.migrationId, null);
    if (e.type === 'phase') {
      const phase = String(e.data.phase);
      if (TERMINAL.has(phase)) {
        if (this.active.has(e.migrationId)) this.active.set(e.migrationId, e.at);
      } else if (!this.active.has(e.migrationId)) {
        this.active.set(e.migrationId, null);
      } else {
        this.active.set(e.migrationId, null); // a rollback or resume brings it back
      }
    }
  }

  /** Take one sample of every active migration now (the timer calls it; tests may too). */
  async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const now = Date.now();
      for (const [id, endedAt] of [...this.active]) {
        if (endedAt !== null && now - endedAt > this.tailMs) {
          this.active.delete(id);
          this.last.delete(id);
          continue;
        }
        let rec: MigrationRecord;
        try {
          rec = this.controller.migration(id);
        } catch {
          this.active.delete(id);
          continue;
        }
        const sample = await this.sampleOne(rec).catch(() => undefined);
        if (sample) this.record(sample);
      }
    } finally {
      this.busy = false;
    }
  }

  private record(sample: TrafficSample): void {
    let list = this.samples.get(sample.migrationId);
    if (!list) {
      list = [];
      this.samples.set(sample.migrationId, list);
      while (this.samples.size > this.keepMigrations) this.samples.delete(this.samples.keys().next().value!);
    }
    list.push(sample);
    if (list.length > this.keep) list.splice(0, list.length - this.keep);
    this.emit('sample', sample);
  }

  private async sampleOne(rec: MigrationRecord): Promise<TrafficSample> {
    const { plan } = rec;
    const origin = this.controller.server(plan.origin).driver;
    const target = this.controller.server(plan.target).driver;
    const isTemp = (src: string) => src === plan.tempIp || src === `::ffff:${plan.tempIp}`;
    const count = async (driver: typeof origin) => {
      try {
        const st = await driver.siteStats(plan.domain);
        let viaTemp = 0;
        let direct = 0;
        for (const [src, s] of Object.entries(st.bySource)) {
          if (isTemp(src)) viaTemp += s.requests;
          else direct += s.requests;
        }
        return { viaTemp, direct, held: st.held };
      } catch {
        return { viaTemp: 0, direct: 0, held: 0 }; // the site is not (or no longer) there
      }
    };
    const [o, t, redirect, rr] = await Promise.all([
      count(origin),
      count(target),
      origin.redirectStats(redirectIdOf(plan.id)).catch(() => undefined),
      this.controller.dns.getRRset(plan.domain, 'A').catch(() => undefined),
    ]);
    const now = Date.now();
    const cur: Counters = { ip1: o.direct, ipt: o.viaTemp + t.viaTemp, ip2: t.direct, at: now };
    const prev = this.last.get(plan.id);
    this.last.set(plan.id, cur);
    const rate = (k: 'ip1' | 'ipt' | 'ip2') => {
      if (!prev) return 0;
      const secs = Math.max(0.001, (cur.at - prev.at) / 1000);
      // Counters restart when a site is removed and added back: never report a negative rate.
      return Math.max(0, Math.round(((cur[k] - prev[k]) / secs) * 10) / 10);
    };
    return {
      migrationId: plan.id,
      at: now,
      phase: rec.phase,
      rps: { ip1: rate('ip1'), ipt: rate('ipt'), ip2: rate('ip2') },
      requests: { ip1: cur.ip1, ipt: cur.ipt, ip2: cur.ip2 },
      redirect: redirect
        ? {
            activeConnections: redirect.activeConnections,
            totalConnections: redirect.totalConnections,
            bytesToUpstream: redirect.bytesToUpstream,
            bytesToClient: redirect.bytesToClient,
            held: redirect.held,
          }
        : null,
      heldAtOrigin: o.held,
      dns: rr?.rdata ?? [],
    };
  }
}
