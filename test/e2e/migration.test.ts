/**
 * The whole patented migration on loopback, under load with stale clients: the invariants of
 * ../../../shared/design/system.md, checked on what really happened.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Sandbox, type DemoSummary } from '../../src/sandbox/index.js';
import { sleep } from '../../src/common/time.js';
import { digShort, realDnsClient } from './helpers.js';

describe('migration of one site under live load (sandbox on loopback)', () => {
  const sb = new Sandbox({
    dnsAddress: '127.0.31.53',
    dnsPort: 0,
    httpPort: 0,
    originIp: '127.0.31.1',
    targetIp: '127.0.31.2',
    tempIp: '127.0.31.100',
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
  });
  let summary: DemoSummary;
  const digAnswers: Array<{ phase: string; answer: string[] }> = [];
  const client = realDnsClient();

  before(async () => {
    await sb.start();
    const dns = { address: sb.dns.address, port: sb.dns.port };
    if (client) digAnswers.push({ phase: 'before', answer: await digShort(dns, sb.migratedDomain, 'A') });
    // Ask the real client right after each record change has propagated.
    const pending: Array<Promise<void>> = [];
    sb.orchestrator.on('phase', (e) => {
      if (!client || (e.phase !== 'syncing' && e.phase !== 'draining')) return;
      pending.push(digShort(dns, sb.migratedDomain, 'A').then((answer) => void digAnswers.push({ phase: e.phase, answer })));
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

  after(() => sb.stop());

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

  it('answered IP1 → IPt → IP2 in DNS (own client)', () => {
    assert.deepEqual(
      summary.dnsAnswers.map((a) => a.address),
      [sb.opts.originIp, sb.opts.tempIp, sb.opts.targetIp],
    );
  });

  it('answered IP1 → IPt → IP2 in DNS (kdig or dig)', { skip: client ? false : 'no kdig or dig installed (apt-get install knot-dnsutils)' }, () => {
    assert.deepEqual(digAnswers, [
      { phase: 'before', answer: [sb.opts.originIp] },
      { phase: 'syncing', answer: [sb.opts.tempIp] },
      { phase: 'draining', answer: [sb.opts.targetIp] },
    ]);
  });

  it('left the other sites on the origin and removed the migrated one from it', () => {
    const [, ...others] = sb.opts.sites;
    for (const site of others) assert.ok(sb.originSites.hasSite(site), site);
    assert.equal(sb.originSites.hasSite(sb.migratedDomain), false);
    assert.ok(sb.targetSites.hasSite(sb.migratedDomain));
  });
});
