import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { waitFor } from '../common/time.js';
import { isFerryError } from '../common/errors.js';
import { TcpRelay, WorkerRelay, createUserspaceRelay, type RelayOptions } from './index.js';
import { client, startEcho, type TestClient, type TestServer } from './testing.js';

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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('WorkerRelay (userspace relay in worker processes)', () => {
  it('relays through the workers and sums their counters', async () => {
    const a = await echo('127.0.0.2', 'A');
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port } });
    assert.equal(r.workerCount, 2);
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
    for (const c of clients) c.socket.end();
    assert.ok(await r.drain(3000));
    assert.equal((await r.stats()).activeConnections, 0);
  });

  it('holds in every worker, then releases every held connection to the new upstream with no failure', async () => {
    const a = await echo('127.0.0.2', 'A');
    const b = await echo('127.0.0.4', 'B');
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port } });
    await r.hold();
    const clients: TestClient[] = [];
    for (let i = 0; i < 20; i++) {
      const c = await open('127.0.0.3', r.ports[0]!);
      c.socket.write(`req${i};`);
      clients.push(c);
    }
    assert.ok(await waitFor(async () => (await r.stats()).held === 20, 3000));
    const held = await r.stats();
    assert.equal(held.activeConnections, 0);
    assert.equal(held.bytesToUpstream, 0, 'a held client is not read');
    assert.equal(a.peers.length, 0);
    await r.setUpstream({ address: '127.0.0.4', port: b.port });
    await r.release();
    for (let i = 0; i < 20; i++) await clients[i]!.waitFor(`B\nreq${i};`);
    const s = await r.stats();
    assert.equal(s.held, 0);
    assert.equal(s.upstreamFailures, 0);
    assert.equal(s.rejected, 0);
    assert.equal(a.peers.length, 0);
    assert.equal(b.peers.length, 20);
  });

  it('switches and holds under a steady stream of new connections, none failing', async () => {
    const a = await echo('127.0.0.2', 'A');
    const b = await echo('127.0.0.4', 'B');
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port } });
    let stop = false;
    let ok = 0;
    const failures: string[] = [];
    const seen = { A: 0, B: 0 };
    const loop = async () => {
      while (!stop) {
        try {
          const c = await client('127.0.0.3', r.ports[0]!);
          const got = await c.waitFor('\n', 5000);
          seen[got.startsWith('B') ? 'B' : 'A']++;
          c.socket.destroy();
          ok++;
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    const loops = Array.from({ length: 8 }, loop);
    await waitFor(() => ok > 50, 5000, 10);
    await r.hold();
    await new Promise((res) => setTimeout(res, 300));
    await r.setUpstream({ address: '127.0.0.4', port: b.port });
    await r.release();
    const after = ok;
    await waitFor(() => ok > after + 50, 5000, 10);
    stop = true;
    await Promise.all(loops);
    assert.deepEqual(failures, []);
    assert.ok(seen.A > 0 && seen.B > 0, `both upstreams served: ${JSON.stringify(seen)}`);
    const s = await r.stats();
    assert.equal(s.upstreamFailures, 0);
    assert.equal(s.rejected, 0);
    assert.equal(s.holdExpired, 0);
    assert.equal(s.totalConnections, ok);
  });

  it('relays UDP in the engine process alongside the TCP workers', async () => {
    const up = createSocket('udp4');
    up.on('message', (m, from) => up.send(Buffer.concat([Buffer.from('U:'), m]), from.port, from.address));
    await new Promise<void>((res) => up.bind(0, '127.0.0.2', () => res()));
    cleanups.push(() => new Promise<void>((res) => up.close(() => res())));
    const upPort = up.address().port;
    const tcpUp = await startEcho('127.0.0.2', 'T', upPort).catch(() => null);
    if (tcpUp) cleanups.push(() => tcpUp.close());
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: upPort }, udp: true });
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
    const r = new WorkerRelay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port }, workers: 3 });
    await r.start();
    const pids = r.workerPids;
    assert.equal(pids.length, 3);
    const c = await open('127.0.0.3', r.ports[0]!);
    await c.waitFor('A\n');
    await r.close();
    await r.close(); // idempotent
    assert.deepEqual(
      pids.filter((p) => alive(p)),
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
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port } });
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
    const base = { listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: 1 } };
    assert.ok(createUserspaceRelay(base) instanceof TcpRelay);
    assert.ok(createUserspaceRelay({ ...base, workers: 2 }) instanceof WorkerRelay);
    for (const bad of [0, 1.5, 65]) {
      assert.throws(() => createUserspaceRelay({ ...base, workers: bad }), (e: unknown) => isFerryError(e, 'RELAY_BAD_OPTION'));
    }
    assert.throws(() => new TcpRelay({ ...base, workers: 2 }), (e: unknown) => isFerryError(e, 'RELAY_BAD_OPTION') && /createUserspaceRelay/.test(e.message));
  });
});
