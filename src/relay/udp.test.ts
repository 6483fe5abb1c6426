import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { waitFor } from '../common/time.js';
import { TcpRelay, type RelayOptions } from './index.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A UDP server replying `name:payload` and recording the peers it saw. */
async function udpEcho(address: string, name: string, port = 0): Promise<{ port: number; peers: string[] }> {
  const s = createSocket(address.includes(':') ? 'udp6' : 'udp4');
  const peers: string[] = [];
  s.on('message', (msg, rinfo) => {
    peers.push(rinfo.address);
    s.send(Buffer.concat([Buffer.from(`${name}:`), msg]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => s.bind(port, address, () => r()));
  cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
  return { port: s.address().port, peers };
}

async function udpClient(
  address: string,
): Promise<{ socket: Socket; ask(port: number, text: string, timeoutMs?: number): Promise<string> }> {
  const socket = createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((r) => socket.bind(0, address.includes(':') ? '::1' : '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => socket.close(() => r())));
  return {
    socket,
    ask: (port, text, timeoutMs = 2000) =>
      new Promise((resolve, reject) => {
        const t = setTimeout(() => {
          socket.off('message', on);
          reject(new Error(`no UDP reply to ${text}`));
        }, timeoutMs);
        const on = (msg: Buffer) => {
          clearTimeout(t);
          socket.off('message', on);
          resolve(msg.toString());
        };
        socket.on('message', on);
        socket.send(text, port, address);
      }),
  };
}

async function relay(opts: RelayOptions): Promise<TcpRelay> {
  const r = new TcpRelay({ udp: true, ...opts });
  cleanups.push(() => r.close());
  await r.start();
  return r;
}

describe('TcpRelay UDP', () => {
  it('relays datagrams through one session per client, which expires when idle', async () => {
    const up = await udpEcho('127.0.0.2', 'U');
    const r = await relay({
      listen: { address: '127.0.0.3', ports: [0] },
      upstream: { address: '127.0.0.2', port: up.port },
      sourceAddress: '127.0.0.7',
      udpIdleTimeoutMs: 200,
    });
    const a = await udpClient('127.0.0.3');
    const b = await udpClient('127.0.0.3');
    assert.equal(await a.ask(r.ports[0]!, 'a1'), 'U:a1');
    assert.equal(await a.ask(r.ports[0]!, 'a2'), 'U:a2');
    assert.equal(await b.ask(r.ports[0]!, 'b1'), 'U:b1');
    let s = r.stats();
    assert.equal(s.udpSessions, 2);
    const udp = s.listeners!.find((l) => l.protocol === 'udp')!;
    assert.equal(udp.totalConnections, 2);
    assert.equal(udp.bytesToUpstream, 6);
    assert.equal(udp.bytesToClient, 12);
    assert.deepEqual(new Set(up.peers), new Set(['127.0.0.7']));
    assert.ok(await r.drain(2000), 'sessions expire when idle');
    s = r.stats();
    assert.equal(s.udpSessions, 0);
    assert.equal(s.idleTimeouts, 2);
  });

  it('sends new sessions to a switched upstream; holds and releases new sessions', async () => {
    const u1 = await udpEcho('127.0.0.2', 'one');
    const u2 = await udpEcho('127.0.0.4', 'two', u1.port).catch(() => udpEcho('127.0.0.4', 'two'));
    const r = await relay({
      listen: { address: '127.0.0.3', ports: [0] },
      upstream: { address: '127.0.0.2', port: u1.port },
    });
    const a = await udpClient('127.0.0.3');
    assert.equal(await a.ask(r.ports[0]!, 'x'), 'one:x');
    r.hold();
    const b = await udpClient('127.0.0.3');
    const pending = b.ask(r.ports[0]!, 'y', 3000);
    await waitFor(() => r.stats().held === 1, 1000);
    assert.equal(await a.ask(r.ports[0]!, 'x2'), 'one:x2', 'existing sessions keep flowing while held');
    r.setUpstream({ address: '127.0.0.4', port: u2.port });
    r.release();
    assert.equal(await pending, 'two:y');
    assert.equal(r.stats().held, 0);
  });

  it('relays UDP over IPv6', async () => {
    const up = await udpEcho('::1', 'six');
    const r = await relay({
      listen: { address: '::1', ports: [0] },
      upstream: { address: '::1', port: up.port },
    });
    const c = await udpClient('::1');
    assert.equal(await c.ask(r.ports[0]!, 'v6'), 'six:v6');
  });

  it('counts an unreachable upstream and removes the session', async () => {
    const probe = createSocket('udp4');
    await new Promise<void>((res) => probe.bind(0, '127.0.0.2', () => res()));
    const port = probe.address().port;
    await new Promise<void>((res) => probe.close(() => res()));
    const r = await relay({
      listen: { address: '127.0.0.3', ports: [0] },
      upstream: { address: '127.0.0.2', port },
    });
    const c = await udpClient('127.0.0.3');
    await c.ask(r.ports[0]!, 'nobody', 300).catch(() => undefined);
    await c.ask(r.ports[0]!, 'nobody2', 300).catch(() => undefined);
    assert.ok(await waitFor(() => r.stats().upstreamFailures >= 1, 2000));
    assert.ok(await r.drain(1000));
  });
});
