/**
 * Rollback from every phase (issue 7): ten sites of one origin are migrated at once under load,
 * and each is rolled back at a different point: planned, ttl-lowered, temp-ip, dns-temp,
 * syncing, preflight, cutover before the switch, cutover after it, draining, and after
 * completion. Afterwards DNS (answer and TTL), addresses, redirects and virtual hosts are
 * exactly as before, no request failed, and every acknowledged write is on the origin once.
 * Origin and target are real host agents behind their HTTP API (as `ferry agent` runs them,
 * rsync between them), driven through `HttpHostDriver`. The same runs with the records in
 * PowerDNS, changed through the powerdns provider (its HTTP API).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Sandbox } from '../../src/sandbox/index.js';
import { sleep } from '../../src/common/time.js';
import type { ControllerEvent } from '../../src/controller/index.js';
import { STEP, WAIT, type MigrationRecord } from '../../src/migration/index.js';
import type { DnsProvider } from '../../src/migration/ports.js';
import { normalizeDomain } from '../../src/host/index.js';
import { findBinary } from './helpers.js';
import { underLoadOptions } from './invariants.js';
import { noPowerDns, startPowerDnsZone } from './dns-interop-servers.js';

/** Where each site is rolled back: a phase, and the event inside it that triggers the rollback. */
const POINTS: Array<{ name: string; match: (e: ControllerEvent) => boolean }> = [
  { name: 'planned', match: (e) => e.type === 'phase' && e.data.phase === 'planned' },
  { name: 'ttl-lowered', match: (e) => e.type === 'wait' && e.data.what === WAIT.oldTtl },
  { name: 'temp-ip', match: (e) => e.type === 'step' && e.data.step === STEP.probeTempIp },
  { name: 'dns-temp', match: (e) => e.type === 'wait' && e.data.what === WAIT.ip1Quiet },
  { name: 'syncing', match: (e) => e.type === 'step' && e.data.step === STEP.initialSync },
  { name: 'preflight', match: (e) => e.type === 'step' && e.data.step === STEP.parity },
  { name: 'cutover', match: (e) => e.type === 'step' && e.data.step === STEP.waitOriginIdle },
  { name: 'cutover-switched', match: (e) => e.type === 'step' && e.data.step === STEP.originProxy },
  { name: 'draining', match: (e) => e.type === 'wait' && e.data.what === WAIT.iptQuiet },
  { name: 'completed', match: () => false },
];

/** The records outside the sandbox: a provider for the zone text, served at `address`. */
type ExternalZone = (
  zoneText: string,
  address: string,
) => Promise<{ server: { address: string; port: number }; provider: DnsProvider; stop(): Promise<void> }>;

function rollbackFromEveryPhase(
  label: string,
  net: string,
  external?: ExternalZone,
  skip: string | false = false,
) {
  describe(`rollback from every phase, under load (agents over HTTP on loopback${label})`, { skip }, () => {
    const sites = [...POINTS.map((p) => `${p.name}.example.`), 'bystander.example.'];
    const opts = {
      ...underLoadOptions(net),
      agents: 'http' as const,
      tempIpPool: POINTS.map((_, i) => `${net}.${100 + i}`),
      sites,
      ttl: 2,
      recordTtl: 3,
      rate: 90,
      clients: 33,
      staleOverstayMs: 2000,
      // Ten migrations, the DNS server, both site servers, their relays and 33 users share one
      // event loop and the disk here; on a loaded two-core machine an fsync'd order or a GC pause
      // has stalled everyone (bystander site included) past 5 s. Users wait 15 s, as browsers do.
      requestTimeoutMs: 15_000,
    };
    let sb: Sandbox;
    let ext: Awaited<ReturnType<ExternalZone>> | undefined;
    const beforeState = new Map<string, unknown>();
    const rolledAt = new Map<string, string>();
    const records = new Map<string, MigrationRecord>();

    async function siteState(domain: string): Promise<unknown> {
      return {
        record: ext ? await ext.provider.getRRset(domain, 'A') : sb.dns.zones.getRRset(domain, 'A'),
        origin: sb.originSites.hasSite(domain) ? sb.originSites.mode(domain) : null,
        target: sb.targetSites.hasSite(domain) ? sb.targetSites.mode(domain) : null,
      };
    }

    before(async () => {
      ext = external ? await external(new Sandbox(opts).zoneText(), opts.dnsAddress) : undefined;
      sb = new Sandbox({
        ...opts,
        ...(ext ? { externalDns: { server: ext.server, provider: ext.provider } } : {}),
      });
      await sb.start();
      for (const s of sites) beforeState.set(s, await siteState(s));
      beforeState.set('addresses', await sb.origin.listAddresses());
      sb.startLoad();
      await sleep(1500);
      const ctl = sb.controller;
      const ids = new Map<string, string>();
      const rollbacks: Array<Promise<MigrationRecord>> = [];
      ctl.on('event', (e) => {
        const name = [...ids].find(([, id]) => id === e.migrationId)?.[0];
        const point = POINTS.find((p) => p.name === name);
        if (!point || rolledAt.has(point.name) || !point.match(e)) return;
        rolledAt.set(point.name, `${e.type}:${String(e.data.phase ?? e.data.step ?? e.data.what)}`);
        rollbacks.push(ctl.rollback(e.migrationId));
      });
      const started = POINTS.map(async (p) => {
        const id = `rb-${p.name}`;
        ids.set(p.name, id);
        await ctl.startMigration({ domain: `${p.name}.example.`, to: 'target', id });
        const rec = await ctl.wait(id);
        if (p.name === 'completed') {
          assert.equal(
            rec.phase,
            'completed',
            JSON.stringify(sb.orchestrator.journal.entries(id).slice(-12)),
          );
          rolledAt.set(p.name, 'after completion');
          rollbacks.push(ctl.rollback(id));
        }
      });
      await Promise.all(started);
      // Every rollback was requested by now (each run ended); wait for them all.
      for (let i = 0; i < 100 && rollbacks.length < POINTS.length; i++) await sleep(100);
      await Promise.all(rollbacks);
      for (const p of POINTS) records.set(p.name, ctl.migration(`rb-${p.name}`));
      await sleep(1500);
      await sb.load.stop();
    });

    after(async () => {
      await sb?.stop();
      await ext?.stop();
    });

    it('rolled back at every point', () => {
      for (const p of POINTS) {
        assert.ok(rolledAt.has(p.name), `never rolled back at ${p.name}`);
        assert.equal(
          records.get(p.name)?.phase,
          'rolled-back',
          `${p.name}: ${JSON.stringify(records.get(p.name))}`,
        );
      }
    });

    it('went through a reverse migration only where the target had become the writer', () => {
      for (const p of POINTS) {
        const reversed = sb.orchestrator.journal
          .entries(`rb-${p.name}`)
          .some((e) => e.step === STEP.reverseFinalSync);
        assert.equal(reversed, ['cutover-switched', 'draining', 'completed'].includes(p.name), p.name);
      }
    });

    it('left DNS (answer and TTL), site modes and vhosts exactly as before', async () => {
      for (const s of sites) assert.deepEqual(await siteState(s), beforeState.get(s), s);
    });

    it('left no temporary address and no redirect behind', async () => {
      assert.deepEqual(await sb.origin.listAddresses(), beforeState.get('addresses'));
      for (const p of POINTS)
        assert.equal(await sb.origin.redirectStats(`mig-rb-${p.name}`), undefined, p.name);
      assert.deepEqual(sb.controller.freeTempIps('origin').length, POINTS.length);
    });

    it('failed no request', () => {
      const results = sb.load.results();
      const failed = results.filter((r) => !r.ok);
      assert.ok(results.length > 300, `only ${results.length} requests`);
      assert.equal(failed.length, 0, JSON.stringify(failed.slice(0, 10)));
    });

    it('kept every acknowledged write on the origin, exactly once', async () => {
      const acked = sb.load.summary().acknowledgedWrites;
      assert.ok(acked.length > 50);
      for (const s of sites) {
        const keys = new Map<string, number>();
        for (const o of await sb.originSites.readOrders(s)) keys.set(o.key, (keys.get(o.key) ?? 0) + 1);
        for (const w of acked.filter((x) => normalizeDomain(x.domain) === normalizeDomain(s))) {
          assert.equal(
            keys.get(w.key),
            1,
            `${s}: write ${w.key} is on the origin ${keys.get(w.key) ?? 0} times`,
          );
        }
      }
    });
  });
}

const rsync = findBinary('rsync') ? false : 'rsync is not installed';
rollbackFromEveryPhase('', '127.0.40', undefined, rsync);
rollbackFromEveryPhase(', records in PowerDNS', '127.0.110', startPowerDnsZone, rsync || noPowerDns());
