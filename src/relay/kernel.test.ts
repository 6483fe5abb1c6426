/** The kernel engine in network namespaces the test creates (client → relay → upstream). */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { waitFor } from '../common/time.js';
import { isFerryError } from '../common/errors.js';
import { KernelRelay } from './kernel.js';
import {
  ADDR,
  clientSource,
  createTopology,
  kernelSkipReason,
  runInNs,
  upstreamSource,
  type NsProcess,
  type Topology,
} from './netns-testing.js';

const skip = kernelSkipReason() ?? false;
if (skip) console.log(`# skipping kernel engine tests: ${skip}`);

function tables(ns: string): string {
  return execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables'], { encoding: 'utf8' });
}

describe('KernelRelay (nftables) in network namespaces', { skip }, () => {
  let topo: Topology | null = null;
  let upstream: NsProcess | null = null;
  let clientProc: NsProcess | null = null;
  const engines: KernelRelay[] = [];

  before(async () => {
    topo = createTopology();
    upstream = runInNs(topo.upstream, upstreamSource, [
      `A:${ADDR.upstreamA}:80`,
      `A:${ADDR.upstreamA}:8080`,
      `B:${ADDR.upstreamB}:80`,
      `B:${ADDR.upstreamB}:8080`,
    ]);
    await upstream.next('ready');
    clientProc = runInNs(topo.client, clientSource);
    await clientProc.next('ready');
  });

  after(async () => {
    for (const e of engines) await e.close().catch(() => undefined);
    clientProc?.kill();
    upstream?.kill();
    const names = topo ? [topo.client, topo.relay, topo.upstream] : [];
    topo?.destroy();
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const n of names) assert.ok(!left.includes(n), `namespace ${n} left behind`);
  });

  function engine(opts: Partial<ConstructorParameters<typeof KernelRelay>[0]> = {}): KernelRelay {
    const e = new KernelRelay({
      listen: { address: ADDR.tempIp, ports: [80, 8080] },
      upstream: { address: ADDR.upstreamA },
      netns: topo!.relay,
      pollMs: 50,
      ...opts,
    });
    engines.push(e);
    return e;
  }

  it('redirects port-preserving, keeps old flows on a switch, counts, and tears down', async () => {
    const c = clientProc!;
    const e = engine({ id: 'test1', udp: true });
    await e.start();
    assert.match(tables(topo!.relay), /table ip ferry_test1/);

    c.send(`open 1 ${ADDR.tempIp} 80`);
    assert.match(await c.next('open 1'), / A peer=10\.99\.2\.1$/, 'masqueraded to the relay address');
    c.send(`open 2 ${ADDR.tempIp} 8080`);
    assert.match(await c.next('open 2'), / A peer=/);

    await e.setUpstream({ address: ADDR.upstreamB });
    c.send(`open 3 ${ADDR.tempIp} 80`);
    assert.match(await c.next('open 3'), / B peer=/);
    c.send('send 1 still-on-a');
    assert.equal(await c.next('echo 1'), 'echo 1 still-on-a');

    c.send(`udp ${ADDR.tempIp} 8080 dgram`);
    assert.equal(await c.next('udp'), 'udp B:dgram');

    const s = await e.stats();
    assert.equal(s.activeConnections, 3);
    assert.equal(s.udpSessions, 1);
    assert.equal(s.listeners!.find((l) => l.protocol === 'tcp' && l.port === 80)!.totalConnections, 2);
    assert.ok(s.bytesToUpstream > 0 && s.bytesToClient > 0);
    assert.ok(s.lastConnectionAt !== null);

    assert.equal(await e.drain(200), false);
    for (const id of [1, 2, 3]) {
      c.send(`close ${id}`);
      await c.next(`closed ${id}`);
    }
    const drained = await e.drain(1000);
    // The UDP flow stays in conntrack until its timeout (30 s): only TCP is drained here.
    assert.equal((await e.stats()).activeConnections, 0);
    assert.equal(drained, false);

    await e.close();
    assert.doesNotMatch(tables(topo!.relay), /ferry_test1/);
  });

  it('holds new connections by dropping SYNs and releases them to the new upstream with no failure', async () => {
    const c = clientProc!;
    const e = engine({ id: 'test2', masquerade: false, listen: { address: ADDR.tempIp, ports: [80] } });
    await e.start();
    await e.hold();
    const t0 = Date.now();
    c.send(`open 10 ${ADDR.tempIp} 80`);
    c.send(`open 11 ${ADDR.tempIp} 80`);
    assert.ok(await waitFor(async () => (await e.stats()).held === 2, 3000), 'both clients are held');
    await e.setUpstream({ address: ADDR.upstreamB });
    await new Promise((r) => setTimeout(r, 1500));
    await e.release();
    // Their SYNs were dropped: they come only at their next retransmission, so a drain must still
    // count them as held, or it could take the address away before they are back.
    assert.equal((await e.stats()).held, 2, 'counted until their retransmissions are due');
    const l10 = await c.next('open 10', 10_000);
    const l11 = await c.next('open 11', 10_000);
    assert.match(l10, / B peer=10\.99\.1\.2$/, 'not masqueraded: the upstream sees the client');
    assert.match(l11, / B peer=/);
    const waited = Date.now() - t0;
    assert.ok(waited >= 1500, `held for ${waited} ms`);
    assert.ok(await waitFor(async () => (await e.stats()).held === 0, 10_000), 'no longer held once due');
    const s = await e.stats();
    assert.equal(s.totalConnections, 2, 'each held client counted once, when it finally connected');
    c.send('close 10');
    c.send('close 11');
    await e.close();
    assert.doesNotMatch(tables(topo!.relay), /ferry_/);
  });

  it('refuses held connections once maxHoldMs has passed', async () => {
    const c = clientProc!;
    const e = engine({ id: 'test3', maxHoldMs: 200, listen: { address: ADDR.tempIp, ports: [80] } });
    await e.start();
    await e.hold();
    await new Promise((r) => setTimeout(r, 400));
    c.send(`open 20 ${ADDR.tempIp} 80`);
    assert.equal(await c.next('error 20', 5000), 'error 20 ECONNREFUSED');
    assert.equal((await e.stats()).holdExpired, 1);
    await e.close();
  });

  it('adopts the table an engine left behind (its process gone): same rules, upstream, hold state and counters, one table, and close removes it', async () => {
    const c = clientProc!;
    const first = engine({ id: 'test4', listen: { address: ADDR.tempIp, ports: [80] } });
    await first.start();
    await first.setUpstream({ address: ADDR.upstreamB });
    c.send(`open 30 ${ADDR.tempIp} 80`);
    assert.match(await c.next('open 30'), / B peer=/);
    await first.hold();
    first.detach(); // as when the agent that ran it is killed
    c.send(`open 31 ${ADDR.tempIp} 80`); // held by the table alone
    await new Promise((r) => setTimeout(r, 300));

    const second = engine({ id: 'test4', adopt: true, listen: { address: ADDR.tempIp, ports: [80] } });
    await second.start();
    assert.equal(second.adopted, true);
    assert.deepEqual(
      second.currentUpstream,
      { address: ADDR.upstreamB },
      'the upstream is read from the table, not from the options',
    );
    assert.equal(second.isHolding, true);
    assert.equal(tables(topo!.relay).match(/ferry_test4/g)?.length, 1, 'one table, not two');
    const s = await second.stats();
    assert.equal(s.held, 1);
    assert.equal(s.listeners![0]!.totalConnections, 1, 'counters kept');
    assert.ok(
      s.lastConnectionAt !== null && Date.now() - s.lastConnectionAt < 5000,
      'a quiet window restarts at adoption',
    );
    c.send('send 30 kept');
    assert.equal(await c.next('echo 30'), 'echo 30 kept', 'an established flow is untouched');
    await second.release();
    assert.match(await c.next('open 31', 10_000), / B peer=/, 'the held client goes through at release');
    for (const id of [30, 31]) {
      c.send(`close ${id}`);
      await c.next(`closed ${id}`);
    }
    await second.close();
    assert.doesNotMatch(tables(topo!.relay), /ferry_test4/);

    // With no table to adopt, start() creates one from the options.
    const fresh = engine({ id: 'test5', adopt: true, listen: { address: ADDR.tempIp, ports: [80] } });
    await fresh.start();
    assert.equal(fresh.adopted, false);
    assert.equal(fresh.isHolding, false);
    assert.deepEqual(fresh.currentUpstream, { address: ADDR.upstreamA });
    await fresh.close();
    assert.doesNotMatch(tables(topo!.relay), /ferry_/);
  });

  it('validates options', () => {
    const bad = (o: unknown) =>
      assert.throws(
        () => new KernelRelay(o as ConstructorParameters<typeof KernelRelay>[0]),
        (err) => isFerryError(err, 'RELAY_BAD_OPTION'),
      );
    bad({ listen: { address: ADDR.tempIp, ports: [0] }, upstream: { address: ADDR.upstreamA } });
    bad({ listen: { address: ADDR.tempIp, ports: [80] }, upstream: { address: '2001:db8::1' } });
    bad({
      listen: { address: ADDR.tempIp, ports: [80] },
      upstream: { address: ADDR.upstreamA },
      id: 'Bad-Id',
    });
    bad({
      listen: { address: ADDR.tempIp, ports: [80] },
      upstream: { address: ADDR.upstreamA },
      netns: 'x; rm',
    });
  });
});
