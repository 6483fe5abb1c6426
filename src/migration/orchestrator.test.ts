/**
 * The orchestrator's failure handling and modes, on a loopback sandbox: retries with backoff, a
 * step that keeps failing after the switch (failed, with the reason; then rollback or resume),
 * `direct` mode (a dedicated IP redirected itself) and `relay-host` mode (IPt on another host).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { FerryError } from '../common/errors.js';
import { sleep, waitFor } from '../common/time.js';
import type { HostAgent } from '../agent/index.js';
import { Controller, type ControllerEvent } from '../controller/index.js';
import { Sandbox, inProcessAgent } from '../sandbox/index.js';
import { DEFAULT_TIMINGS, STEP, WAIT, EmbeddedDnsProvider, Journal, type HostDriver } from './index.js';
import { PARALLEL_LANE_REQUEST_TIMEOUT_MS } from '../../test/load.js';

/** `inner` with some calls refused while `when(method, args)` says so. */
function flaky(inner: HostDriver, when: (method: string, args: unknown[]) => boolean): HostDriver {
  return new Proxy(inner, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) =>
        when(String(prop), args)
          ? Promise.reject(new FerryError('AGENT_DOWN', `${String(prop)} refused by the test`))
          : (v as (...a: unknown[]) => unknown).apply(target, args);
    },
  });
}

describe('orchestrator: retries, failures, direct and relay-host modes', () => {
  const sites = [
    'retry.example.',
    'stuck.example.',
    'resume.example.',
    'direct.example.',
    'relayed.example.',
    'bystander.example.',
    'legacy.example.',
  ];
  const sb = new Sandbox({
    requestTimeoutMs: PARALLEL_LANE_REQUEST_TIMEOUT_MS,
    dnsAddress: '127.0.47.53',
    dnsPort: 0,
    httpPort: 0,
    originIp: '127.0.47.1',
    targetIp: '127.0.47.2',
    tempIp: '127.0.47.100',
    sites,
    ttl: 1,
    rate: 60,
    clients: 24,
    staleShare: 0.2,
    staleOverstayMs: 1000,
    quietWindowMs: 1200,
    dnsTempCapMs: 8000,
    drainCapMs: 8000,
  });
  const DEDICATED = '127.0.47.9';
  const RELAY_IP = '127.0.47.30';
  let relay: HostAgent;
  let ctl: Controller;
  const events: ControllerEvent[] = [];
  let journal: Journal;
  const broken = { startRedirect: 2, upstream: true };

  before(async () => {
    await sb.start();
    // direct.example. has an address of its own on the origin.
    await sb.originSites.addAddress(DEDICATED);
    sb.dns.zones.replaceRRset('direct.example.', 'A', 1, [DEDICATED]);
    relay = inProcessAgent({
      id: 'relay',
      ip: RELAY_IP,
      port: sb.httpPort,
      dataDir: join(sb.dataDir, 'relay'),
    });
    await relay.start();
    const origin = flaky(sb.origin, (method, args) => {
      if (method === 'startRedirect' && args[0] === 'mig-retry' && broken.startRedirect > 0)
        return broken.startRedirect-- > 0;
      return (
        method === 'setRedirectUpstream' &&
        (args[0] === 'mig-stuck' || args[0] === 'mig-resume') &&
        broken.upstream
      );
    });
    journal = new Journal(join(sb.dataDir, 'test-journal.sqlite'), { durability: 'process' });
    ctl = new Controller({
      dns: new EmbeddedDnsProvider({ server: sb.dns }),
      servers: [
        {
          id: 'origin',
          driver: origin,
          sharedIps: [sb.opts.originIp],
          tempIpPool: ['127.0.47.100', '127.0.47.101', '127.0.47.102', '127.0.47.103'],
        },
        { id: 'target', driver: sb.target, sharedIps: [sb.opts.targetIp], tempIpPool: [] },
        { id: 'relay', driver: relay, sharedIps: [RELAY_IP], tempIpPool: ['127.0.47.150'] },
      ],
      sites: sites.map((domain) => ({ domain, server: 'origin', ports: [sb.httpPort] })),
      journal,
      defaults: { ttl: 1, quietWindowMs: 1200, dnsTempCapMs: 8000, drainCapMs: 8000, pollMs: 100 },
      retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 100, callTimeoutMs: 3000 },
    });
    ctl.on('event', (e) => events.push(e));
    sb.startLoad();
    await sleep(500);
  });

  after(async () => {
    await ctl?.close();
    journal?.close();
    await relay?.stop();
    await sb.stop();
  });

  it('retries a call that fails and then succeeds, publishing each retry', async () => {
    await ctl.startMigration({ domain: 'retry.example.', to: 'target', id: 'retry' });
    const rec = await ctl.wait('retry');
    assert.equal(rec.phase, 'completed', rec.error);
    const retries = events.filter(
      (e) => e.type === 'retry' && String(e.data.what).includes('startRedirect(mig-retry)'),
    );
    assert.equal(retries.length, 2);
    // Published as events of their migration, so `ferry watch retry` shows them.
    assert.ok(
      retries.every((e) => e.migrationId === 'retry'),
      JSON.stringify(retries.map((e) => e.migrationId)),
    );
  });

  it('publishes phases, DNS answers seen, traffic counts, held connections and sync progress', () => {
    const mine = events.filter((e) => e.migrationId === 'retry');
    const types = new Set(mine.map((e) => e.type));
    for (const t of [
      'migration',
      'phase',
      'step',
      'wait',
      'dns',
      'traffic',
      'held',
      'sync',
      'retry',
    ] as const)
      assert.ok(types.has(t), `no ${t} event`);
    assert.deepEqual(
      mine.filter((e) => e.type === 'phase').map((e) => e.data.phase),
      ['planned', 'temp-ip', 'dns-temp', 'syncing', 'preflight', 'cutover', 'draining', 'completed'],
    );
    const dns = mine
      .filter((e) => e.type === 'dns')
      .map((e) => (e.data.servers as Array<{ rdata: string[] }>)[0]!.rdata[0]);
    assert.deepEqual(
      [...new Set(dns)],
      ['127.0.47.100', sb.opts.targetIp],
      'the answers the name server gave, as they changed',
    );
    assert.deepEqual(
      mine.filter((e) => e.type === 'held').map((e) => e.data.state),
      ['holding', 'released'],
    );
    // Each pass: started, progress (at least the final figure, from the in-process sync), done.
    const sync = mine
      .filter((e) => e.type === 'sync')
      .map((e) => `${String(e.data.pass)} ${String(e.data.state)}`);
    assert.deepEqual(
      sync.filter((x, i) => !(x.endsWith(' progress') && sync[i - 1] === x)),
      [
        'initial-sync started',
        'initial-sync progress',
        'initial-sync done',
        'final-sync started',
        'final-sync progress',
        'final-sync done',
      ],
    );
    const traffic = mine.filter((e) => e.type === 'traffic');
    assert.ok(
      traffic.some(
        (e) =>
          e.data.what === WAIT.ip1Quiet &&
          typeof (e.data.observed as { directRequests?: number }).directRequests === 'number',
      ),
    );
    assert.ok(
      traffic.some(
        (e) =>
          e.data.what === WAIT.iptQuiet &&
          typeof (e.data.observed as { totalConnections?: number }).totalConnections === 'number',
      ),
    );
    // `completed` is announced only once the redirect and IPt are gone; the record says when each went.
    const rec = ctl.migration('retry');
    const completedAt = rec.phases.find((p) => p.name === 'completed')!.startedAt;
    assert.ok(
      rec.redirectRemovedAt !== undefined && rec.redirectRemovedAt <= completedAt,
      `redirect removed at ${rec.redirectRemovedAt}, completed at ${completedAt}`,
    );
    assert.ok(
      rec.tempIpRemovedAt !== undefined && rec.tempIpRemovedAt <= completedAt,
      `IPt removed at ${rec.tempIpRemovedAt}, completed at ${completedAt}`,
    );
    const completedEvent = mine.findIndex((e) => e.type === 'phase' && e.data.phase === 'completed');
    const removeStep = mine.findIndex((e) => e.type === 'step' && e.data.step === STEP.removeAddress);
    assert.ok(
      removeStep >= 0 && removeStep < completedEvent,
      'IPt is taken down before completed is published',
    );
    const seqs = mine.map((e) => e.seq);
    assert.deepEqual(
      seqs,
      [...seqs].sort((a, b) => a - b),
      'one ordered stream',
    );
  });

  it('fails with the reason when a step keeps failing after the switch, and rolls back from there', async () => {
    await ctl.startMigration({ domain: 'stuck.example.', to: 'target', id: 'stuck' });
    let rec = await ctl.wait('stuck');
    assert.equal(rec.phase, 'failed');
    assert.match(
      rec.error ?? '',
      /setRedirectUpstream\(mig-stuck, 127\.0\.47\.2\) failed 3 times: setRedirectUpstream refused by the test/,
    );
    assert.equal(sb.targetSites.mode('stuck.example.'), 'serve', 'the target stays the writer');
    // Until an operator resolves it, the failed migration keeps its temporary IP (still up on the
    // origin) and its site: neither is handed to another migration.
    const stuckIp = rec.plan.tempIp;
    assert.ok((await sb.origin.listAddresses()).includes(stuckIp), 'IPt still up');
    assert.ok(
      !ctl.freeTempIps('origin').includes(stuckIp),
      'the failed migration keeps its temporary IP leased',
    );
    assert.ok(
      !ctl
        .listServers()
        .find((s) => s.id === 'origin')!
        .freeTempIps.includes(stuckIp),
    );
    assert.equal(ctl.listSites().find((s) => s.domain === 'stuck.example.')?.migration, 'stuck');
    await assert.rejects(
      ctl.startMigration({ domain: 'stuck.example.', to: 'target' }),
      /failed migration \(stuck\); resolve it first with: ferry rollback stuck/,
    );
    // The next migration gets another temporary IP (it fails the same way; the next test resumes it).
    const next = await ctl.startMigration({ domain: 'resume.example.', to: 'target', id: 'resume' });
    assert.notEqual(next.plan.tempIp, stuckIp, "the failed migration's temporary IP is not handed out again");
    assert.equal((await ctl.wait('resume')).phase, 'failed');
    broken.upstream = false;
    rec = await ctl.rollback('stuck');
    assert.equal(rec.phase, 'rolled-back', rec.error);
    assert.deepEqual(sb.dns.zones.getRRset('stuck.example.', 'A'), { ttl: 1, rdata: [sb.opts.originIp] });
    assert.equal(sb.originSites.mode('stuck.example.'), 'serve');
    assert.equal(sb.targetSites.hasSite('stuck.example.'), false);
    assert.equal(await sb.origin.redirectStats('mig-stuck'), undefined);
    assert.ok(!(await sb.origin.listAddresses()).includes(stuckIp), 'IPt down once rolled back');
    assert.ok(ctl.freeTempIps('origin').includes(stuckIp), 'and free again');
    assert.ok(
      rec.tempIpRemovedAt !== undefined && rec.redirectRemovedAt !== undefined,
      'the record says when IPt and its redirect went',
    );
  });

  it('resumes a failed migration once the cause is gone', async () => {
    assert.equal(ctl.migration('resume').phase, 'failed');
    const rec = await ctl.resume('resume');
    assert.equal(rec.phase, 'completed', rec.error);
    assert.equal(sb.originSites.hasSite('resume.example.'), false);
  });

  it('migrates a site with a dedicated IP in direct mode, without a temporary IP', async () => {
    await ctl.startMigration({ domain: 'direct.example.', to: 'target', id: 'direct', mode: 'direct' });
    const rec = await ctl.wait('direct');
    assert.equal(rec.phase, 'completed', rec.error);
    assert.deepEqual(
      rec.phases.map((p) => p.name),
      ['planned', 'syncing', 'preflight', 'cutover', 'draining', 'completed'],
    );
    assert.equal(rec.plan.tempIp, DEDICATED);
    assert.ok(
      !journal.entries('direct').some((e) => e.step === STEP.addAddress || e.step === STEP.startRedirect),
    );
    assert.deepEqual(sb.dns.zones.getRRset('direct.example.', 'A')?.rdata, [sb.opts.targetIp]);
  });

  it('carries IPt on a relay host in relay-host mode', async () => {
    await ctl.startMigration({
      domain: 'relayed.example.',
      to: 'target',
      id: 'relayed',
      mode: 'relay-host',
      relayHost: 'relay',
    });
    let sawRelay = false;
    const poll = setInterval(
      () => void relay.redirectStats('mig-relayed').then((s) => (sawRelay ||= s !== undefined)),
      100,
    );
    const rec = await ctl.wait('relayed');
    clearInterval(poll);
    assert.equal(rec.phase, 'completed', rec.error);
    assert.equal(rec.plan.tempIp, '127.0.47.150');
    assert.ok(sawRelay, 'the redirect ran on the relay host');
    assert.equal(await sb.origin.redirectStats('mig-relayed'), undefined, 'and not on the origin');
    assert.deepEqual(await relay.listAddresses(), []);
  });

  it('finishes the clean-up of a migration that an older version journaled as completed before it', async () => {
    const orch = ctl.orchestrator;
    const tempIp = '127.0.47.103';
    orch.create({
      id: 'legacy',
      domain: 'legacy.example.',
      origin: 'origin',
      target: 'target',
      originIp: sb.opts.originIp,
      targetIp: sb.opts.targetIp,
      tempIp,
      ports: [sb.httpPort],
      timings: {
        ...DEFAULT_TIMINGS,
        ttl: 1,
        quietWindowMs: 300,
        dnsTempCapMs: 8000,
        drainCapMs: 8000,
        pollMs: 50,
      },
    });
    // Stopped in draining, as a controller killed there would be; then `completed` entered the
    // way the previous version did, before removing anything.
    const abort = new AbortController();
    const running = orch.run('legacy', abort.signal).catch(() => undefined);
    await waitFor(() => orch.get('legacy').phase === 'draining', 60_000, 10);
    abort.abort();
    await running;
    assert.ok((await sb.origin.listAddresses()).includes(tempIp), 'IPt still up when stopped in draining');
    journal.append({ migrationId: 'legacy', at: Date.now(), phase: 'completed', kind: 'enter' });
    assert.equal(orch.get('legacy').settled, false);
    const rec = await orch.run('legacy');
    assert.equal(rec.phase, 'completed');
    assert.equal(rec.settled, true);
    assert.ok(!(await sb.origin.listAddresses()).includes(tempIp), 'IPt removed by the resumed run');
    assert.equal(await sb.origin.redirectStats('mig-legacy'), undefined);
    assert.equal(sb.originSites.hasSite('legacy.example.'), false);
    assert.ok(rec.tempIpRemovedAt !== undefined && rec.redirectRemovedAt !== undefined);
  });

  it('failed no request on the sites that completed and on the bystander', async () => {
    await sleep(1500);
    await sb.load.stop();
    const failed = sb.load
      .results()
      .filter(
        (r) => !r.ok && ['direct', 'relayed', 'bystander', 'retry'].some((p) => r.domain.startsWith(p)),
      );
    assert.equal(failed.length, 0, JSON.stringify(failed.slice(0, 5)));
  });
});
