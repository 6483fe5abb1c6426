import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { waitFor } from '../common/time.js';
import { TcpRelay, type RelayOptions } from './index.js';
import { client, startEcho, type TestClient } from './testing.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function relay(opts: RelayOptions): Promise<TcpRelay> {
  const r = new TcpRelay(opts);
  cleanups.push(() => r.close());
  await r.start();
  return r;
}

async function open(address: string, port: number, allowHalfOpen = false): Promise<TestClient> {
  const c = await client(address, port, { allowHalfOpen });
  cleanups.push(() => void c.socket.destroy());
  return c;
}

function serve(address: string, handler: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    handler(s);
  });
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return new Promise((resolve) => server.listen(0, address, () => resolve({ server, port: (server.address() as AddressInfo).port })));
}

/** A port on `address` with nothing listening. */
async function deadPort(address: string): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, address, () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('TcpRelay robustness', () => {
  it('relays half-close: the client ends its side and still gets the reply', async () => {
    const up = await serve('127.0.0.2', (s) => {
      let got = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => (got += d));
      s.on('end', () => s.end(`bye:${got}`));
    });
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: up.port } });
    const c = await open('127.0.0.3', r.ports[0]!, true);
    c.socket.end('question');
    await c.waitFor('bye:question');
    await c.ended;
    assert.ok(await r.drain(2000));
  });

  it('closes the client cleanly (FIN) and counts the failure when the upstream is down', async () => {
    const port = await deadPort('127.0.0.2');
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port } });
    const c = await open('127.0.0.3', r.ports[0]!);
    let reset = false;
    c.socket.on('error', () => (reset = true));
    await c.ended;
    assert.equal(reset, false);
    assert.ok(await waitFor(() => r.stats().upstreamFailures === 1, 2000));
    assert.ok(await r.drain(1000));
  });

  it('refuses connections beyond maxConnections and counts them', async () => {
    const a = await startEcho('127.0.0.2', 'A');
    cleanups.push(() => a.close());
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port }, maxConnections: 2 });
    const c1 = await open('127.0.0.3', r.ports[0]!);
    const c2 = await open('127.0.0.3', r.ports[0]!);
    await c1.waitFor('A');
    await c2.waitFor('A');
    const c3 = await open('127.0.0.3', r.ports[0]!);
    await c3.ended;
    assert.equal(r.stats().rejected, 1);
    assert.equal(r.stats().activeConnections, 2);
  });

  it('bounds the hold queue and the hold time', async () => {
    const a = await startEcho('127.0.0.2', 'A');
    cleanups.push(() => a.close());
    const r = await relay({
      listen: { address: '127.0.0.3', ports: [0] },
      upstream: { address: '127.0.0.2', port: a.port },
      holdQueueLimit: 2,
      maxHoldMs: 300,
    });
    r.hold();
    const c1 = await open('127.0.0.3', r.ports[0]!);
    const c2 = await open('127.0.0.3', r.ports[0]!);
    await waitFor(() => r.stats().held === 2, 1000);
    const c3 = await open('127.0.0.3', r.ports[0]!);
    await c3.ended;
    assert.equal(r.stats().rejected, 1);
    const t0 = Date.now();
    await Promise.all([c1.ended, c2.ended]);
    assert.ok(Date.now() - t0 >= 200, 'held until maxHoldMs');
    assert.equal(r.stats().holdExpired, 2);
    assert.equal(r.stats().held, 0);
  });

  it('a held client that gives up is carried through at release and then closes', async () => {
    const a = await startEcho('127.0.0.2', 'A');
    cleanups.push(() => a.close());
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port } });
    r.hold();
    const c = await open('127.0.0.3', r.ports[0]!);
    await waitFor(() => r.stats().held === 1, 1000);
    c.socket.end('late');
    // Held sockets are paused, so the relay sees the FIN only when it reads again, at release.
    r.release();
    assert.ok(await r.drain(2000));
    assert.equal(r.stats().upstreamFailures, 0);
    assert.equal(r.stats().bytesToUpstream, 4);
  });

  it('closes idle connections after idleTimeoutMs', async () => {
    const a = await startEcho('127.0.0.2', 'A');
    cleanups.push(() => a.close());
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: a.port }, idleTimeoutMs: 200 });
    const c = await open('127.0.0.3', r.ports[0]!);
    await c.waitFor('A');
    await c.ended;
    assert.equal(r.stats().idleTimeouts, 1);
    assert.ok(await r.drain(1000));
  });

  it('applies backpressure: a slow upstream stops the relay reading from the client', async () => {
    let upstreamSocket: Socket | null = null;
    const up = await serve('127.0.0.2', (s) => {
      upstreamSocket = s;
      s.pause(); // reads nothing
    });
    const r = await relay({ listen: { address: '127.0.0.3', ports: [0] }, upstream: { address: '127.0.0.2', port: up.port } });
    const c = await open('127.0.0.3', r.ports[0]!);
    const chunk = Buffer.alloc(1 << 20, 0x61);
    for (let i = 0; i < 64; i++) c.socket.write(chunk); // 64 MiB queued at the client
    await waitFor(() => false, 1000);
    const stalled = r.stats().bytesToUpstream;
    await waitFor(() => false, 300);
    assert.equal(r.stats().bytesToUpstream, stalled, 'the relay stopped reading');
    assert.ok(stalled < 32 << 20, `relay read ${stalled} bytes: only kernel buffers' worth may be in flight`);
    assert.ok(c.socket.writableLength > 16 << 20, 'the client is the one buffering');
    (upstreamSocket as Socket | null)?.resume();
    assert.ok(await waitFor(() => r.stats().bytesToUpstream === 64 << 20, 10_000));
  });

  it('relays IPv6, with several listen addresses counted apart', async () => {
    const a = await startEcho('::1', 'A6');
    cleanups.push(() => a.close());
    const r = await relay({
      listen: [
        { address: '::1', ports: [0] },
        { address: '127.0.0.3', ports: [0] },
      ],
      upstream: { address: '::1', port: a.port },
    });
    const c6 = await open('::1', r.ports[0]!);
    await c6.waitFor('A6');
    const c4 = await open('127.0.0.3', r.ports[1]!);
    await c4.waitFor('A6');
    const l = r.stats().listeners!;
    assert.deepEqual(
      l.map((x) => [x.address, x.totalConnections, x.bytesToClient]),
      [
        ['::1', 1, 3],
        ['127.0.0.3', 1, 3],
      ],
    );
  });
});
