/**
 * Prometheus metrics of a controller (prom-client, one registry per controller):
 * - DNS, from `node:diagnostics_channel` (`ferry.dns.query`, `ferry.dns.transfer`,
 *   `ferry.dns.update`), which the DNS server publishes to;
 * - relay, from the traffic sampler's reads of each migration's redirect at IPt;
 * - migrations, from the controller's events and journal.
 */
import diagnostics from 'node:diagnostics_channel';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Controller, ControllerEvent } from '../controller/index.js';
import type { TrafficSample, TrafficSampler } from './traffic.js';

/** Channel names the DNS server publishes on. */
export const DNS_CHANNELS = {
  query: 'ferry.dns.query',
  transfer: 'ferry.dns.transfer',
  update: 'ferry.dns.update',
} as const;

/** A `ferry.dns.query` message. */
export interface DnsQueryMessage {
  qtype: string;
  rcode: string;
  transport: 'udp' | 'tcp';
  durationMs: number;
}

export interface MetricsOptions {
  /** Also export Node's process metrics (CPU, memory, event loop). Default true. */
  processMetrics?: boolean;
  /** Prefix of every metric name. Default `ferry_`. */
  prefix?: string;
  /** Migrations whose last relay counters are remembered (the least recently sampled go first). Default 1000. */
  keepMigrations?: number;
}

/** The metrics of one controller; `close()` unsubscribes from everything. */
export interface FerryMetrics {
  registry: Registry;
  close(): void;
}

function label(v: unknown, fallback = 'unknown'): string {
  return typeof v === 'string' && v.length > 0 && v.length <= 32 ? v : fallback;
}

/**
 * A DNS mnemonic as a label: numbered ones (`TYPE65534`, `RCODE3841`) are all `other`, so that
 * clients asking for every type number cannot add series to the metrics without a bound.
 */
function dnsLabel(v: unknown): string {
  const l = label(v);
  return /^(TYPE|RCODE)\d+$/.test(l) ? 'other' : l;
}

const processRegistries = new Map<string, Registry>();

/**
 * Node's process metrics under `prefix`, collected once per process: prom-client's collector of
 * them never lets go of its registry (its GC observer is never disconnected), so a registry per
 * controller would keep every closed controller in memory through its metrics' closures.
 */
function processRegistry(prefix: string): Registry {
  let r = processRegistries.get(prefix);
  if (!r) {
    r = new Registry();
    collectDefaultMetrics({ register: r, prefix });
    processRegistries.set(prefix, r);
  }
  return r;
}

/** Build the registry and subscribe it to the DNS channels, the controller and the sampler. */
export function createMetrics(
  controller: Controller,
  sampler: TrafficSampler | undefined,
  opts: MetricsOptions = {},
): FerryMetrics {
  const p = opts.prefix ?? 'ferry_';
  const registry = new Registry();
  const registers = [registry];

  // DNS
  const dnsQueries = new Counter({
    name: `${p}dns_queries_total`,
    help: 'DNS queries answered, by query type, response code and transport',
    labelNames: ['qtype', 'rcode', 'transport'],
    registers,
  });
  const dnsLatency = new Histogram({
    name: `${p}dns_query_duration_seconds`,
    help: 'Time from a DNS query received to its answer sent',
    labelNames: ['transport'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
    registers,
  });
  const dnsTransfers = new Counter({
    name: `${p}dns_transfers_total`,
    help: 'Zone transfers (AXFR, IXFR), by type and outcome',
    labelNames: ['type', 'result'],
    registers,
  });
  const dnsUpdates = new Counter({
    name: `${p}dns_updates_total`,
    help: 'RFC 2136 dynamic updates, by response code',
    labelNames: ['rcode'],
    registers,
  });
  const onQuery = (msg: unknown) => {
    const m = (msg ?? {}) as Partial<DnsQueryMessage>;
    const transport = m.transport === 'tcp' ? 'tcp' : 'udp';
    dnsQueries.inc({ qtype: dnsLabel(m.qtype), rcode: dnsLabel(m.rcode), transport });
    if (typeof m.durationMs === 'number' && m.durationMs >= 0)
      dnsLatency.observe({ transport }, m.durationMs / 1000);
  };
  const onTransfer = (msg: unknown) => {
    const m = (msg ?? {}) as Record<string, unknown>;
    dnsTransfers.inc({
      type: label(m.type ?? m.qtype ?? m.kind),
      result: label(m.result ?? m.rcode ?? m.outcome, 'ok'),
    });
  };
  const onUpdate = (msg: unknown) => {
    const m = (msg ?? {}) as Record<string, unknown>;
    dnsUpdates.inc({ rcode: label(m.rcode ?? m.result, 'NOERROR') });
  };
  diagnostics.subscribe(DNS_CHANNELS.query, onQuery);
  diagnostics.subscribe(DNS_CHANNELS.transfer, onTransfer);
  diagnostics.subscribe(DNS_CHANNELS.update, onUpdate);

  // Relay (the redirect at each migration's temporary IP)
  const relayConnections = new Counter({
    name: `${p}relay_connections_total`,
    help: 'Connections accepted by redirects at temporary IPs',
    registers,
  });
  const relayBytes = new Counter({
    name: `${p}relay_bytes_total`,
    help: 'Bytes relayed by redirects at temporary IPs',
    labelNames: ['direction'],
    registers,
  });
  // Bounded: a migration sampled again moves to the end, the least recently sampled go first.
  const seen = new Map<string, { conns: number; up: number; down: number }>();
  const keepMigrations = opts.keepMigrations ?? 1000;
  const onSample = (s: TrafficSample) => {
    if (!s.redirect) return;
    const prev = seen.get(s.migrationId) ?? { conns: 0, up: 0, down: 0 };
    const r = s.redirect;
    // A restarted redirect starts from zero: count its totals afresh.
    const d = (now: number, before: number) => (now >= before ? now - before : now);
    relayConnections.inc(d(r.totalConnections, prev.conns));
    relayBytes.inc({ direction: 'upstream' }, d(r.bytesToUpstream, prev.up));
    relayBytes.inc({ direction: 'client' }, d(r.bytesToClient, prev.down));
    seen.delete(s.migrationId);
    seen.set(s.migrationId, { conns: r.totalConnections, up: r.bytesToUpstream, down: r.bytesToClient });
    while (seen.size > keepMigrations) seen.delete(seen.keys().next().value!);
  };
  sampler?.on('sample', onSample);
  const current = () => sampler?.latest() ?? [];
  new Gauge({
    name: `${p}relay_connections_active`,
    help: 'Connections open at redirects now',
    registers,
    collect() {
      this.set(current().reduce((n, s) => n + (s.redirect?.activeConnections ?? 0), 0));
    },
  });
  new Gauge({
    name: `${p}relay_connections_held`,
    help: 'Connections held at redirects (and requests held at origins) now, during cut-over',
    registers,
    collect() {
      this.set(current().reduce((n, s) => n + (s.redirect?.held ?? 0) + s.heldAtOrigin, 0));
    },
  });

  // Migrations
  new Gauge({
    name: `${p}migrations`,
    help: 'Migrations in the journal, by current phase',
    labelNames: ['phase'],
    registers,
    collect() {
      this.reset();
      for (const rec of controller.journal.briefs()) this.inc({ phase: rec.phase });
    },
  });
  const phaseDuration = new Histogram({
    name: `${p}migration_phase_duration_seconds`,
    help: 'How long migrations stayed in each phase',
    labelNames: ['phase'],
    buckets: [0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800],
    registers,
  });
  const started = new Counter({
    name: `${p}migrations_started_total`,
    help: 'Migrations started',
    registers,
  });
  const completed = new Counter({
    name: `${p}migrations_completed_total`,
    help: 'Migrations that completed',
    registers,
  });
  const failures = new Counter({
    name: `${p}migration_failures_total`,
    help: 'Migrations that ended failed',
    registers,
  });
  const rollbacks = new Counter({
    name: `${p}migration_rollbacks_total`,
    help: 'Migrations that ended rolled back',
    registers,
  });
  const errors = new Counter({
    name: `${p}migration_errors_total`,
    help: 'Errors reported while migrations ran',
    registers,
  });
  const inPhase = new Map<string, { phase: string; since: number }>();
  const onEvent = (e: ControllerEvent) => {
    if (e.type === 'migration' && e.data.created) started.inc();
    if (e.type === 'error') errors.inc();
    if (e.type !== 'phase') return;
    const phase = String(e.data.phase);
    const prev = inPhase.get(e.migrationId);
    if (prev && prev.phase !== phase)
      phaseDuration.observe({ phase: prev.phase }, Math.max(0, (e.at - prev.since) / 1000));
    if (phase === 'completed') completed.inc();
    if (phase === 'failed') failures.inc();
    if (phase === 'rolled-back') rollbacks.inc();
    if (phase === 'completed' || phase === 'failed' || phase === 'rolled-back') inPhase.delete(e.migrationId);
    else if (!prev || prev.phase !== phase) inPhase.set(e.migrationId, { phase, since: e.at });
  };
  controller.on('event', onEvent);

  return {
    registry: opts.processMetrics === false ? registry : Registry.merge([processRegistry(p), registry]),
    close() {
      diagnostics.unsubscribe(DNS_CHANNELS.query, onQuery);
      diagnostics.unsubscribe(DNS_CHANNELS.transfer, onTransfer);
      diagnostics.unsubscribe(DNS_CHANNELS.update, onUpdate);
      sampler?.off('sample', onSample);
      controller.off('event', onEvent);
    },
  };
}
