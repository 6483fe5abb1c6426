import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isFerryError } from '../common/errors.js';
import { waitFor } from '../common/time.js';
import { parseListen, parseUpstream, runRelay, createEngine } from './cli.js';
import type { RedirectEngine } from './engine.js';
import { client, startEcho } from './testing.js';

describe('relay CLI helpers', () => {
  it('parses --listen and --to, IPv4 and IPv6', () => {
    assert.deepEqual(parseListen('192.0.2.1:80,443'), { address: '192.0.2.1', ports: [80, 443] });
    assert.deepEqual(parseListen('[2001:db8::1]:25'), { address: '2001:db8::1', ports: [25] });
    assert.deepEqual(parseUpstream('192.0.2.2'), { address: '192.0.2.2' });
    assert.deepEqual(parseUpstream('192.0.2.2:8080'), { address: '192.0.2.2', port: 8080 });
    assert.deepEqual(parseUpstream('2001:db8::2'), { address: '2001:db8::2' });
    assert.deepEqual(parseUpstream('[2001:db8::2]:443'), { address: '2001:db8::2', port: 443 });
    for (const bad of ['192.0.2.1', 'example.com:80', '192.0.2.1:x', '192.0.2.1:70000']) {
      assert.throws(
        () => parseListen(bad),
        (e) => isFerryError(e, 'RELAY_BAD_OPTION'),
        bad,
      );
    }
    assert.throws(
      () => parseUpstream('192.0.2.2:0'),
      (e) => isFerryError(e, 'RELAY_BAD_OPTION'),
    );
  });

  it('refuses PROXY protocol with the kernel engine, saying what to use', () => {
    assert.throws(
      () =>
        createEngine({
          engine: 'kernel',
          listen: { address: '127.0.0.3', ports: [80] },
          upstream: { address: '127.0.0.2' },
          proxyProtocol: 'v1',
        }),
      /use --engine userspace/,
    );
    assert.throws(
      () =>
        createEngine({
          engine: 'kernel',
          listen: { address: '127.0.0.3', ports: [80] },
          upstream: { address: '127.0.0.2' },
          dataPlane: 'native',
        }),
      /--data-plane applies to --engine userspace only/,
    );
  });

  it('runs in the foreground until aborted, then closes cleanly', async () => {
    const up = await startEcho('127.0.0.2', 'U');
    const ac = new AbortController();
    let engine: RedirectEngine | null = null;
    const done = runRelay(
      {
        engine: 'userspace',
        udp: true,
        listen: { address: '127.0.0.3', ports: [0] },
        upstream: { address: '127.0.0.2', port: up.port },
        onReady: (e) => (engine = e),
      },
      ac.signal,
    );
    assert.ok(await waitFor(() => engine !== null, 2000));
    const c = await client('127.0.0.3', engine!.ports[0]!);
    await c.waitFor('U\n');
    ac.abort();
    const stats = await done;
    assert.equal(stats.totalConnections, 1);
    await c.ended;
    await up.close();
  });
});
