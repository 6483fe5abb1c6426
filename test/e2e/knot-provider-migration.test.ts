/**
 * The demo migration with Knot DNS as the authoritative server, driven through the rfc2136
 * provider as `provider: rfc2136` in the config builds it (TSIG-signed UPDATE), under the same
 * load and with the same invariants as migration.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createRfc2136Provider } from '../../src/migration/index.js';
import { Sandbox, type DemoSummary, type SandboxOptions } from '../../src/sandbox/index.js';
import { sleep } from '../../src/common/time.js';
import { have, startKnot, type ExternalDns } from './dns-interop-servers.js';
import { digShort, realDnsClient } from './helpers.js';

const KNOT = '127.0.105.53';
const KEY = {
  name: 'ferry-migrate.',
  algorithm: 'hmac-sha256',
  secret: Buffer.alloc(32, 31).toString('base64'),
};
const OPTS: Partial<SandboxOptions> = {
  dnsAddress: KNOT, // the zone's NS glue: the name server the propagation check asks is Knot
  dnsPort: 0,
  httpPort: 0,
  originIp: '127.0.105.1',
  targetIp: '127.0.105.2',
  tempIp: '127.0.105.100',
  ttl: 2,
  rate: 80,
  clients: 24,
  staleShare: 0.25,
  staleOverstayMs: 2500,
  keepAliveShare: 0.5,
  writeShare: 0.4,
  quietWindowMs: 1000,
  dnsTempCapMs: 15_000,
  drainCapMs: 15_000,
};

describe(
  'migration of one site with Knot as the authoritative server (rfc2136 provider)',
  { skip: have('knotd') ? false : 'knotd is not installed (apt-get install knot)' },
  () => {
    let knot: ExternalDns;
    let sb: Sandbox;
    let summary: DemoSummary;
    const digAnswers: Array<{ phase: string; answer: string[] }> = [];
    const client = realDnsClient();

    before(async () => {
      knot = await startKnot({
        address: KNOT,
        primaryZones: [{ origin: 'example.', text: new Sandbox(OPTS).zoneText() }],
        updateKey: KEY,
      });
      const server = { address: KNOT, port: knot.port };
      const provider = createRfc2136Provider({ server, zone: 'example.', tsig: KEY });
      sb = new Sandbox({ ...OPTS, externalDns: { server, provider } });
      await sb.start();
      if (client)
        digAnswers.push({ phase: 'before', answer: await digShort(server, sb.migratedDomain, 'A') });
      const pending: Array<Promise<void>> = [];
      sb.orchestrator.on('phase', (e) => {
        if (!client || (e.phase !== 'syncing' && e.phase !== 'draining')) return;
        pending.push(
          digShort(server, sb.migratedDomain, 'A').then(
            (answer) => void digAnswers.push({ phase: e.phase, answer }),
          ),
        );
      });
      sb.watchDns(100);
      sb.startLoad();
      await sleep(1500);
      const rec = await sb.migrate();
      await sleep(1500);
      await sb.load.stop();
      await Promise.all(pending);
      summary = await sb.summarize(rec);
    });

    after(async () => {
      await sb?.stop();
      await knot?.stop();
    });

    it('completes through every phase in order', () => {
      assert.equal(summary.finalPhase, 'completed', JSON.stringify(summary.phases));
      assert.deepEqual(
        summary.phases.map((p) => p.name),
        ['planned', 'temp-ip', 'dns-temp', 'syncing', 'preflight', 'cutover', 'draining', 'completed'],
      );
    });

    it('fails no request, on the migrated site or on the others of the shared IP', () => {
      assert.ok(summary.requests.total > 100, `only ${summary.requests.total} requests were made`);
      assert.equal(summary.requests.failed, 0, JSON.stringify(summary.failures));
      assert.ok(summary.otherSites.requests > 100);
      assert.equal(summary.otherSites.failed, 0, JSON.stringify(summary.failures));
    });

    it('keeps every acknowledged write on the target exactly once, and none on the origin after cut-over', () => {
      assert.ok(summary.writes.acknowledged > 20, `only ${summary.writes.acknowledged} writes`);
      assert.equal(summary.writes.missing, 0);
      assert.equal(summary.writes.duplicated, 0);
      assert.equal(summary.writes.onTarget, summary.writes.acknowledged);
      assert.equal(summary.writes.onOriginAfterCutover, 0);
    });

    it('had both servers serve the site', () => {
      assert.ok(summary.servedBy.origin > 0);
      assert.ok(summary.servedBy.target > 0);
    });

    it('Knot answered IP1 → IPt → IP2 (own client)', () => {
      assert.deepEqual(
        summary.dnsAnswers.map((a) => a.address),
        [sb.opts.originIp, sb.opts.tempIp, sb.opts.targetIp],
      );
    });

    it(
      'Knot answered IP1 → IPt → IP2 (kdig or dig)',
      { skip: client ? false : 'no kdig or dig installed' },
      () => {
        assert.deepEqual(digAnswers, [
          { phase: 'before', answer: [sb.opts.originIp] },
          { phase: 'syncing', answer: [sb.opts.tempIp] },
          { phase: 'draining', answer: [sb.opts.targetIp] },
        ]);
      },
    );

    it('changed the records in Knot by signed UPDATE (its serial went up at each change)', () => {
      assert.match(knot.log(), /DDNS, finished/);
    });

    it('left the other sites on the origin and removed the migrated one from it', () => {
      const [, ...others] = sb.opts.sites;
      for (const site of others) assert.ok(sb.originSites.hasSite(site), site);
      assert.equal(sb.originSites.hasSite(sb.migratedDomain), false);
      assert.ok(sb.targetSites.hasSite(sb.migratedDomain));
    });
  },
);
