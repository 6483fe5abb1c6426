import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../common/time.js';
import { isFerryError } from '../common/errors.js';
import { TcpRelay, type RelayOptions } from './index.js';
import { client, startEcho, type TestClient, type TestServer } from './testing.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function echo(address: string, name: string, port = 0): Promise<TestServer> {
  const s = await startEcho(address, name, port);
  cleanups.push(() => s.close());
  return s;
}

async function relay(opts: RelayOptions): Promise<TcpRelay> {
  const r = new TcpRelay(opts);
  cleanups.push(() => r.close());
  await r.start();
  return r;
}

async function open(address: string, port: number): Promise<TestClient> {
  const c = await client(address, port);
  cleanups.push(() => void c.socket.destroy());
  return c;
}

describe('TcpRelay', () => {
  it('forwards both ways and counts bytes, connections and arrival time', async () => {
    const a = await echo('127.0.0.2', 'A');
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port } });
    const before = Date.now();
    const c = await open('127.0.0.3', r.ports[0]!);
    await c.waitFor('A\n');
    c.socket.write('hello');
    await c.waitFor('A\nhello');
    const s = r.stats();
    assert.equal(s.activeConnections, 1);
    assert.equal(s.totalConnections, 1);
    assert.equal(s.bytesToUpstream, 5);
    assert.equal(s.bytesToClient, 7);
    assert.ok(s.lastConnectionAt !== null && s.lastConnectionAt >= before);
    assert.equal(s.listeners?.[0]?.bytesToClient, 7);
    c.socket.end();
    assert.ok(await r.drain(2000));
    assert.equal(r.stats().activeConnections, 0);
  });

  it('switches upstream: established connections stay, new ones go to the new upstream', async () => {
    const a = await echo('127.0.0.2', 'A');
    const b = await echo('127.0.0.4', 'B', a.port).catch(() => echo('127.0.0.4', 'B'));
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port } });
    const c1 = await open('127.0.0.3', r.ports[0]!);
    await c1.waitFor('A\n');
    r.setUpstream({ address: '127.0.0.4', port: b.port });
    const c2 = await open('127.0.0.3', r.ports[0]!);
    await c2.waitFor('B\n');
    c1.socket.write('still-a');
    await c1.waitFor('A\nstill-a');
    assert.equal(r.stats().activeConnections, 2);
  });

  it('holds new connections (reading nothing) and releases them to the current upstream in order', async () => {
    const a = await echo('127.0.0.2', 'A');
    const b = await echo('127.0.0.4', 'B');
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port } });
    r.hold();
    const clients: TestClient[] = [];
    for (let i = 0; i < 5; i++) {
      const c = await open('127.0.0.3', r.ports[0]!);
      c.socket.write(`req${i};`);
      clients.push(c);
    }
    await waitFor(() => r.stats().held === 5, 2000);
    assert.equal(r.stats().held, 5);
    assert.equal(r.stats().activeConnections, 0);
    assert.equal(r.stats().bytesToUpstream, 0, 'a held client is not read');
    assert.equal(a.peers.length, 0);
    r.setUpstream({ address: '127.0.0.4', port: b.port });
    r.release();
    for (let i = 0; i < 5; i++) await clients[i]!.waitFor(`B\nreq${i};`);
    const s = r.stats();
    assert.equal(s.held, 0);
    assert.equal(s.upstreamFailures, 0);
    assert.equal(a.peers.length, 0);
    assert.equal(b.peers.length, 5);
  });

  it('binds sourceAddress for upstream connections', async () => {
    const a = await echo('127.0.0.2', 'A');
    const r = await relay({
      listen: { address: '127.0.0.3', ports: [0] },
      upstream: { address: '127.0.0.2', port: a.port },
      sourceAddress: '127.0.0.7',
    });
    const c = await open('127.0.0.3', r.ports[0]!);
    await c.waitFor('A\n');
    assert.deepEqual(a.peers, ['127.0.0.7']);
  });

  it('preserves the port on several listen ports when upstream.port is omitted', async () => {
    const a = await echo('127.0.0.2', 'A1');
    const b = await echo('127.0.0.2', 'A2');
    const r = await relay({ listen: { address: '127.0.0.3', ports: [a.port, b.port] }, upstream: { address: '127.0.0.2' } });
    assert.deepEqual(r.ports, [a.port, b.port]);
    const c1 = await open('127.0.0.3', a.port);
    const c2 = await open('127.0.0.3', b.port);
    await c1.waitFor('A1\n');
    await c2.waitFor('A2\n');
    const l = r.stats().listeners!;
    assert.deepEqual(
      l.map((x) => [x.port, x.totalConnections]),
      [
        [a.port, 1],
        [b.port, 1],
      ],
    );
  });

  it('returns several ephemeral ports in listen order', async () => {
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0, 0, 0] }, upstream: { address: '127.0.0.2' } });
    assert.equal(r.ports.length, 3);
    assert.equal(new Set(r.ports).size, 3);
    assert.ok(r.ports.every((p) => p > 0));
  });

  it('drain resolves false on timeout while a connection is open', async () => {
    const a = await echo('127.0.0.2', 'A');
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port } });
    const c = await open('127.0.0.3', r.ports[0]!);
    await c.waitFor('A\n');
    const t0 = Date.now();
    assert.equal(await r.drain(150), false);
    assert.ok(Date.now() - t0 >= 140);
    c.socket.destroy();
    assert.equal(await r.drain(2000), true);
  });

  it('rejects bad options with RELAY_BAD_OPTION', () => {
    const bad = (o: unknown) => assert.throws(() => new TcpRelay(o as RelayOptions), (e) => isFerryError(e, 'RELAY_BAD_OPTION'));
    bad({ listen: { address: 'localhost', ports: [1] }, upstream: { address: '127.0.0.1' } });
    bad({ listen: { address: '127.0.0.1', ports: [] }, upstream: { address: '127.0.0.1' } });
    bad({ listen: { address: '127.0.0.1', ports: [70000] }, upstream: { address: '127.0.0.1' } });
    bad({ listen: { address: '127.0.0.1', ports: [1] }, upstream: { address: '::1' }, sourceAddress: '127.0.0.7' });
    bad({ listen: { address: '127.0.0.1', ports: [1] }, upstream: { address: '127.0.0.1' }, maxHoldMs: -1 });
    bad({ listen: { address: '127.0.0.1', ports: [1] }, upstream: { address: '127.0.0.1' }, proxyProtocol: 'v3' });
  });
});
