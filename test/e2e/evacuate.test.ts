/**
 * Batch evacuation (issue 7): 50 sites of one origin evacuated to the target under load with a
 * pool of 8 temporary IPs: all complete, no request fails, every acknowledged write is on the
 * target once, never more than 8 run at once. Peak memory and total time are reported. A site
 * that cannot be migrated does not stop the others (there through real agents' HTTP API).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runSandboxEvacuation } from '../../src/cli/evacuate.js';
import { Sandbox } from '../../src/sandbox/index.js';
import { findBinary } from './helpers.js';

/** Most intervals overlapping at one instant. */
function peakOverlap(spans: Array<{ startedAt: number; endedAt: number }>): number {
  const edges = spans.flatMap((s) => [
    [s.startedAt, 1],
    [s.endedAt, -1],
  ]) as Array<[number, number]>;
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let peak = 0;
  for (const [, d] of edges) peak = Math.max(peak, (now += d));
  return peak;
}

describe('batch evacuation', () => {
  it('evacuates 50 sites under load with a pool of 8 temporary IPs, failing no request', async (t) => {
    const r = await runSandboxEvacuation({
      sites: 50,
      pool: 8,
      block: '127.0.44',
      rate: 100,
      ttl: 1,
      quietWindowMs: 1500,
    });
    t.diagnostic(
      `50 sites, pool 8: total ${(r.totalMs / 1000).toFixed(1)} s, peak RSS ${(r.peakRssBytes / 1048576).toFixed(0)} MiB, peak heap ${(r.peakHeapBytes / 1048576).toFixed(0)} MiB, ${r.requests.total} requests, ${r.writes.acknowledged} writes`,
    );
    assert.equal(r.concurrency, 8);
    assert.equal(r.completed, 50, JSON.stringify(r.perSite.filter((s) => s.phase !== 'completed')));
    assert.equal(r.requests.failed, 0, JSON.stringify(r.failures));
    assert.ok(r.requests.total > 1000, `only ${r.requests.total} requests`);
    assert.equal(r.writes.missing, 0);
    assert.equal(r.writes.duplicated, 0);
    assert.equal(r.writes.onTarget, r.writes.acknowledged);
    assert.ok(peakOverlap(r.perSite) <= 8, `more than 8 migrations ran at once`);
  });

  it(
    'goes on with the other sites when one cannot be migrated (agents over HTTP)',
    { skip: findBinary('rsync') ? false : 'rsync is not installed' },
    async () => {
      const sb = new Sandbox({
        agents: 'http',
        dnsAddress: '127.0.45.53',
        dnsPort: 0,
        httpPort: 0,
        originIp: '127.0.45.1',
        targetIp: '127.0.45.2',
        tempIp: '127.0.45.100',
        tempIpPool: ['127.0.45.100', '127.0.45.101'],
        sites: ['a.example.', 'b.example.', 'broken.example.', 'c.example.'],
        ttl: 1,
        quietWindowMs: 300,
        dnsTempCapMs: 5000,
        drainCapMs: 5000,
      });
      await sb.start();
      try {
        // broken.example. points elsewhere already: its plan is refused, the others go on.
        sb.dns.zones.replaceRRset('broken.example.', 'A', 1, ['192.0.2.7']);
        const res = await sb.controller.evacuate({ from: 'origin', to: 'target', concurrency: 5 });
        const by = Object.fromEntries(res.sites.map((s) => [s.domain, s]));
        assert.equal(res.sites.length, 4);
        for (const d of ['a.example.', 'b.example.', 'c.example.'])
          assert.equal(by[d]?.phase, 'completed', d);
        assert.equal(by['broken.example.']?.phase, 'rolled-back');
        assert.match(by['broken.example.']?.error ?? '', /expected \[127\.0\.45\.1\]/);
        assert.ok(peakOverlap(res.sites) <= 2, 'concurrency is capped by the pool of 2');
        assert.deepEqual(sb.controller.freeTempIps('origin'), ['127.0.45.100', '127.0.45.101']);
        assert.deepEqual(
          sb.controller.listSites().map((s) => [s.domain, s.server]),
          [
            ['a.example.', 'target'],
            ['b.example.', 'target'],
            ['broken.example.', 'origin'],
            ['c.example.', 'target'],
          ],
        );
      } finally {
        await sb.stop();
      }
    },
  );
});
