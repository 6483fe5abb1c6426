import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { waitFor } from '../common/time.js';
import { isFerryError } from '../common/errors.js';
import { NativeRelay, TcpRelay, WorkerRelay, createUserspaceRelay, type RelayOptions } from './index.js';
import { nativeUnsupported } from './native-relay.js';
import { resolveRelayOptions } from './options.js';
import { client, startEcho, type TestClient, type TestServer } from './testing.js';
import { isAlive } from '../../test/processes.js';

const nativeMissing = nativeUnsupported(
  resolveRelayOptions({ listen: { address: '127.0.0.1', ports: [0] }, upstream: { address: '127.0.0.1' } }),
);

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function echo(address: string, name: string): Promise<TestServer> {
  const s = await startEcho(address, name);
  cleanups.push(() => s.close());
  return s;
}

async function relay(opts: RelayOptions): Promise<WorkerRelay> {
  const r = new WorkerRelay({ workers: 2, ...opts });
  cleanups.push(() => r.close());
  await r.start();
  return r;
}

async function open(address: string, port: number): Promise<TestClient> {
  const c = await client(address, port);
  cleanups.push(() => void c.socket.destroy());
  return c;
}

describe('WorkerRelay (userspace relay in worker processes)', () => {
  it('relays through the workers and sums their counters', async () => {
    const a = await echo('127.0.0.2', 'A');
    const r = await relay({
      listen: { address: '127.0.0.3', ports: [0] },
      upstream: { address: '127.0.0.2', port: a.port },
    });
    assert.equal(r.workerCount, 2);
    assert.equal(r.dataPlane, nativeMissing ? 'js' : 'native');
    const clients = await Promise.all(Array.from({ length: 40 }, () => open('127.0.0.3', r.ports[0]!)));
    await Promise.all(clients.map((c) => c.waitFor('A\n')));
    for (const c of clients) c.socket.write('hi');
    await Promise.all(clients.map((c) => c.waitFor('A\nhi')));
    const s = await r.stats();
    assert.equal(s.totalConnections, 40);
    assert.equal(s.activeConnections, 40);
    assert.equal(s.bytesToUpstream, 80);
    assert.equal(s.bytesToClient, 160);
    assert.equal(s.listeners?.length, 1);
    assert.equal(s.listeners?.[0]?.totalConnections, 40);
    assert.ok(s.lastConnectionAt !== null);
    assert.equal(new Set(a.peers).size, 1);
    // The per-worker counters add up to the totals.
    const perWorker = r.workerStats.map((w) => w?.totalConnections ?? 0);
    assert.equal(
      perWorker.reduce((x, y) => x + y, 0),
      40,
    );
    for (const c of clients) c.socket.end();
    assert.ok(await r.drain(3000));
    assert.equal((await r.stats()).activeConnections, 0);
  });

  it('relays UDP in the engine process alongside the TCP workers', async () => {
    const up = createSocket('udp4');
    up.on('message', (m, from) => up.send(Buffer.concat([Buffer.from('U:'), m]), from.port, from.address));
    await new Promise<void>((res) => up.bind(0, '127.0.0.2', () => res()));
    cleanups.push(() => new Promise<void>((res) => up.close(() => res())));
    const upPort = up.address().port;
    const tcpUp = await startEcho('127.0.0.2', 'T', upPort).catch(() => null);
    if (tcpUp) cleanups.push(() => tcpUp.close());
    const r = await relay({
      listen: { address: '127.0.0.3', ports: [0] },
      upstream: { address: '127.0.0.2', port: upPort },
      udp: true,
    });
    const c = createSocket('udp4');
    cleanups.push(() => new Promise<void>((res) => c.close(() => res())));
    const got = new Promise<string>((res) => c.once('message', (m) => res(m.toString())));
    c.send('ping', r.ports[0]!, '127.0.0.3');
    assert.equal(await got, 'U:ping');
    const s = await r.stats();
    assert.equal(s.udpSessions, 1);
    assert.equal(s.listeners?.find((l) => l.protocol === 'udp')?.totalConnections, 1);
  });

  it('close ends every worker and frees the port', async () => {
    const a = await echo('127.0.0.2', 'A');
    const r = new WorkerRelay({
      listen: { address: '127.0.0.3', ports: [0] },
      upstream: { address: '127.0.0.2', port: a.port },
      workers: 3,
    });
    await r.start();
    const pids = r.workerPids;
    assert.equal(pids.length, 3);
    const c = await open('127.0.0.3', r.ports[0]!);
    await c.waitFor('A\n');
    await r.close();
    await r.close(); // idempotent
    assert.deepEqual(
      pids.filter((p) => isAlive(p)),
      [],
    );
    await c.ended;
    const s = createServer();
    await new Promise<void>((res, rej) => {
      s.once('error', rej);
      s.listen(r.ports[0], '127.0.0.3', () => res());
    });
    await new Promise<void>((res) => s.close(() => res()));
  });

  it('keeps serving when a worker dies', async () => {
    const a = await echo('127.0.0.2', 'A');
    const r = await relay({
      listen: { address: '127.0.0.3', ports: [0] },
      upstream: { address: '127.0.0.2', port: a.port },
    });
    process.kill(r.workerPids[0]!, 'SIGKILL');
    assert.ok(await waitFor(() => r.workerCount === 1, 3000));
    for (let i = 0; i < 10; i++) {
      const c = await open('127.0.0.3', r.ports[0]!);
      await c.waitFor('A\n');
      c.socket.destroy();
    }
    await r.hold();
    await r.release();
    assert.ok((await r.stats()).totalConnections >= 10);
  });

  it('chooses the engine by workers and validates the count', () => {
    const base = {
      listen: { address: '127.0.0.3', ports: [0] },
      upstream: { address: '127.0.0.2', port: 1 },
    };
    assert.ok(createUserspaceRelay(base) instanceof (nativeMissing ? TcpRelay : NativeRelay));
    assert.ok(createUserspaceRelay({ ...base, workers: 2 }) instanceof WorkerRelay);
    for (const bad of [0, 1.5, 65]) {
      assert.throws(
        () => createUserspaceRelay({ ...base, workers: bad }),
        (e: unknown) => isFerryError(e, 'RELAY_BAD_OPTION'),
      );
    }
    assert.throws(
      () => new TcpRelay({ ...base, workers: 2 }),
      (e: unknown) => isFerryError(e, 'RELAY_BAD_OPTION') && /createUserspaceRelay/.test(e.message),
    );
  });
});
