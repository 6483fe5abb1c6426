/**
 * The design's invariants for one migration under load, shared by every e2e test that migrates a
 * sandbox site (whatever DNS server or provider it uses): run the migration with load around it,
 * then register one test per invariant.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { sleep } from '../../src/common/time.js';
import { dnsQuery } from '../../src/dns/index.js';
import { LoadGenerator } from '../../src/loadgen/index.js';
import type { DemoSummary, Sandbox, SandboxOptions } from '../../src/sandbox/index.js';
import { digShort, realDnsClient } from './helpers.js';

export interface MigrationRun {
  summary: DemoSummary;
  /** What Debian's kdig/dig answered before, after the change to IPt, and after the change to IP2. */
  digAnswers: Array<{ phase: string; answer: string[] }>;
}

/**
 * A sandbox's addresses on the loopback /24 `net` (e.g. `127.0.31`): name server at `.53` (also
 * the zone's NS glue, so an external server there is what the propagation check asks), origin
 * `.1`, target `.2`, temporary IP `.100`; ports chosen by the system.
 */
export function loopbackNet(
  net: string,
): Pick<SandboxOptions, 'dnsAddress' | 'dnsPort' | 'httpPort' | 'originIp' | 'targetIp' | 'tempIp'> {
  return {
    dnsAddress: `${net}.53`,
    dnsPort: 0,
    httpPort: 0,
    originIp: `${net}.1`,
    targetIp: `${net}.2`,
    tempIp: `${net}.100`,
  };
}

/** The sandbox of a run under load on `net` (loopbackNet): stale and keep-alive clients, and writes. */
export function underLoadOptions(
  net: string,
): Partial<SandboxOptions> & Pick<SandboxOptions, 'dnsAddress' | 'originIp' | 'targetIp' | 'tempIp' | 'ttl'> {
  return {
    ...loopbackNet(net),
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
}

/**
 * Under load, migrate the sandbox's first site; `dns` is the server a real client asks (right
 * after each record change has propagated). The sandbox must be started.
 */
export async function migrateUnderLoad(
  sb: Sandbox,
  dns: { address: string; port: number },
): Promise<MigrationRun> {
  const client = realDnsClient();
  const digAnswers: MigrationRun['digAnswers'] = [];
  if (client) digAnswers.push({ phase: 'before', answer: await digShort(dns, sb.migratedDomain, 'A') });
  const pending: Array<Promise<void>> = [];
  sb.orchestrator.on('phase', (e) => {
    if (!client || (e.phase !== 'syncing' && e.phase !== 'draining')) return;
    pending.push(
      digShort(dns, sb.migratedDomain, 'A').then(
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
  return { summary: await sb.summarize(rec), digAnswers };
}

/** One test per invariant, reading the run (and sandbox) once `before` has produced them. */
export function itKeepsTheInvariants(get: () => { run: MigrationRun; sb: Sandbox }, dnsName = 'DNS'): void {
  it('completes through every phase in order', () => {
    const { summary } = get().run;
    assert.equal(summary.finalPhase, 'completed', JSON.stringify(summary.phases));
    assert.deepEqual(
      summary.phases.map((p) => p.name),
      ['planned', 'temp-ip', 'dns-temp', 'syncing', 'preflight', 'cutover', 'draining', 'completed'],
    );
  });

  it('fails no request, on the migrated site or on the others of the shared IP', () => {
    const { summary } = get().run;
    assert.ok(summary.requests.total > 100, `only ${summary.requests.total} requests were made`);
    assert.equal(summary.requests.failed, 0, JSON.stringify(summary.failures));
    assert.ok(summary.otherSites.requests > 100);
    assert.equal(summary.otherSites.failed, 0, JSON.stringify(summary.failures));
  });

  it('keeps every acknowledged write on the target exactly once, and none on the origin after cut-over', () => {
    const { summary } = get().run;
    assert.ok(summary.writes.acknowledged > 20, `only ${summary.writes.acknowledged} writes`);
    assert.equal(summary.writes.missing, 0);
    assert.equal(summary.writes.duplicated, 0);
    assert.equal(summary.writes.onTarget, summary.writes.acknowledged);
    assert.equal(summary.writes.onOriginAfterCutover, 0);
  });

  it('had both servers serve the site', () => {
    const { summary } = get().run;
    assert.ok(summary.servedBy.origin > 0);
    assert.ok(summary.servedBy.target > 0);
  });

  it(`${dnsName} answered IP1 → IPt → IP2 (own client)`, () => {
    const { run, sb } = get();
    assert.deepEqual(
      run.summary.dnsAnswers.map((a) => a.address),
      [sb.opts.originIp, sb.opts.tempIp, sb.opts.targetIp],
    );
  });

  const client = realDnsClient();
  it(
    `${dnsName} answered IP1 → IPt → IP2 (kdig or dig)`,
    { skip: client ? false : 'no kdig or dig installed (apt-get install knot-dnsutils)' },
    () => {
      const { run, sb } = get();
      assert.deepEqual(run.digAnswers, [
        { phase: 'before', answer: [sb.opts.originIp] },
        { phase: 'syncing', answer: [sb.opts.tempIp] },
        { phase: 'draining', answer: [sb.opts.targetIp] },
      ]);
    },
  );

  it('left the other sites on the origin and removed the migrated one from it', () => {
    const { sb } = get();
    const [, ...others] = sb.opts.sites;
    for (const site of others) assert.ok(sb.originSites.hasSite(site), site);
    assert.equal(sb.originSites.hasSite(sb.migratedDomain), false);
    assert.ok(sb.targetSites.hasSite(sb.migratedDomain));
  });
}

/**
 * Start the load of a run in which a controller is killed: clients resolve through `dns` as a
 * stub resolver does (a few seconds per try, two tries: the 2-core machine is shared) and wait up
 * to 20 s for an answer, since requests held at the switch wait for the controller that takes over.
 */
export function startLoadThroughKills(sb: Sandbox, dns: { address: string; port: number }): void {
  const resolve = async (name: string): Promise<{ address: string; ttl: number }> => {
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await dnsQuery({ server: dns, name, type: 'A', timeoutMs: 3000 });
        const a = res.answers.find((r) => r.typeName === 'A');
        if (!a) throw new Error(`${name}: no A record (${res.rcodeName})`);
        return { address: a.rdata, ttl: a.ttl };
      } catch (err) {
        if (attempt >= 2) throw err;
      }
    }
  };
  sb.load = new LoadGenerator({
    sites: sb.opts.sites,
    port: sb.httpPort,
    resolve,
    rate: 60,
    clients: 24,
    staleShare: 0.25,
    staleOverstayMs: 2000,
    keepAliveShare: 0.5,
    writeShare: 0.4,
    requestTimeoutMs: 20_000,
  });
  sb.watchDns(100);
  sb.load.start();
}
