import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Agent as HttpAgent, createServer, request, type IncomingHttpHeaders, type Agent } from 'node:http';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { sleep, waitFor } from '../common/time.js';
import { SiteServer, syncDirectory, type SiteServerOptions } from './index.js';

const A = '127.0.20.1';
const B = '127.0.20.2';

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function call(o: {
  port: number;
  address?: string;
  host: string;
  method?: string;
  path?: string;
  body?: string | Buffer;
  localAddress?: string;
  headers?: Record<string, string>;
  agent?: Agent | false;
}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: o.address ?? A,
        port: o.port,
        method: o.method ?? 'GET',
        path: o.path ?? '/',
        headers: { host: o.host, ...(o.headers ?? {}) },
        agent: o.agent ?? false,
        ...(o.localAddress ? { localAddress: o.localAddress } : {}),
        timeout: 5000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('test request timed out')));
    req.on('error', reject);
    req.end(o.body);
  });
}

function postOrder(port: number, host: string, key: string, address = A): Promise<Reply> {
  return call({
    port,
    address,
    host,
    method: 'POST',
    path: '/orders',
    body: JSON.stringify({ key }),
    headers: { 'content-type': 'application/json' },
  });
}

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-host-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function startServer(
  t: TestContext,
  name: string,
  address: string,
  extra: Partial<SiteServerOptions> = {},
): Promise<SiteServer> {
  const server = new SiteServer({
    name,
    addresses: [address],
    port: 0,
    dataDir: join(await tempDir(t), name),
    ...extra,
  });
  t.after(() => server.stop());
  await server.start();
  return server;
}

test('routes: page, health, orders, errors, unknown host', async (t) => {
  const s = await startServer(t, 'origin', A);
  await s.addSite('shop.example');
  const p = s.port;
  assert.ok(p > 0);

  const agent = new HttpAgent({ keepAlive: true });
  t.after(() => agent.destroy());
  const home = await call({ port: p, host: 'shop.example', agent });
  assert.equal(home.status, 200);
  assert.equal(home.headers['x-served-by'], 'origin');
  assert.match(home.body, /shop\.example/);
  assert.match(home.body, /origin/);
  assert.match(String(home.headers['keep-alive']), /timeout=65/);

  // Host matching ignores case, port and a trailing dot.
  assert.equal((await call({ port: p, host: `SHOP.example.:${p}` })).status, 200);
  assert.equal((await call({ port: p, host: 'shop.example', path: '/healthz' })).status, 200);

  const o1 = await postOrder(p, 'shop.example', 'k1');
  assert.equal(o1.status, 201);
  assert.equal(o1.headers['x-served-by'], 'origin');
  assert.deepEqual({ id: JSON.parse(o1.body).id, key: JSON.parse(o1.body).key }, { id: 1, key: 'k1' });
  const o2 = await postOrder(p, 'shop.example', 'k1'); // duplicates are kept, never merged
  assert.equal(JSON.parse(o2.body).id, 2);

  const list = await call({ port: p, host: 'shop.example', path: '/orders' });
  assert.equal(list.status, 200);
  const orders = JSON.parse(list.body) as Array<{ id: number; key: string; server: string; at: string }>;
  assert.deepEqual(
    orders.map((o) => [o.id, o.key, o.server]),
    [
      [1, 'k1', 'origin'],
      [2, 'k1', 'origin'],
    ],
  );
  assert.ok(!Number.isNaN(Date.parse(orders[0]!.at)));
  assert.deepEqual(
    (await s.readOrders('shop.example')).map((o) => o.id),
    [1, 2],
  );

  const bad = await call({ port: p, host: 'shop.example', method: 'POST', path: '/orders', body: '{nope' });
  assert.equal(bad.status, 400);
  assert.match(JSON.parse(bad.body).error, /JSON/);
  assert.equal(
    (await call({ port: p, host: 'shop.example', method: 'POST', path: '/orders', body: '{"x":1}' })).status,
    400,
  );
  assert.equal(
    (
      await call({
        port: p,
        host: 'shop.example',
        method: 'POST',
        path: '/orders',
        body: Buffer.alloc(70 * 1024, 'a'),
      })
    ).status,
    413,
  );
  assert.equal((await call({ port: p, host: 'shop.example', path: '/nothing' })).status, 404);
  assert.equal(
    (await call({ port: p, host: 'shop.example', method: 'DELETE', path: '/orders' })).status,
    405,
  );

  const unknown = await call({ port: p, host: 'other.example' });
  assert.equal(unknown.status, 421);
  assert.equal((await call({ port: p, host: '' })).status, 421);

  const st = s.siteStats('shop.example');
  assert.equal(st.inFlight, 0);
  assert.equal(st.held, 0);
  assert.ok(st.requests >= 10);
  assert.equal(st.writes, 6);
  assert.ok(st.lastRequestAt !== null);
});

test('options and modes are validated with a clear message', async (t) => {
  assert.throws(
    () => new SiteServer({ name: '', addresses: ['nope'], port: 70000, dataDir: '' }),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, 'SITE_SERVER_OPTIONS');
      assert.match(err.message, /name/);
      assert.match(err.message, /"nope" is not an IP/);
      assert.match(err.message, /port/);
      return true;
    },
  );
  const s = await startServer(t, 'origin', A);
  await assert.rejects(s.addSite('../etc'), { code: 'SITE_DOMAIN_INVALID' });
  await s.addSite('shop.example');
  assert.throws(() => s.setMode('shop.example', { proxy: { address: 'x', port: 0 } }), {
    code: 'SITE_MODE_INVALID',
  });
  assert.throws(() => s.setMode('none.example', 'serve'), { code: 'SITE_NOT_FOUND' });
});

test('readonly serves reads and refuses writes until switched to serve', async (t) => {
  const s = await startServer(t, 'target', A);
  await s.addSite('shop.example', 'readonly');
  assert.equal(s.mode('shop.example'), 'readonly');
  assert.equal((await call({ port: s.port, host: 'shop.example' })).status, 200);
  assert.equal((await call({ port: s.port, host: 'shop.example', path: '/orders' })).status, 200);
  const refused = await postOrder(s.port, 'shop.example', 'k1');
  assert.equal(refused.status, 503);
  assert.equal(refused.headers['x-served-by'], 'target');
  assert.deepEqual(await s.readOrders('shop.example'), []);
  s.setMode('shop.example', 'serve');
  assert.equal((await postOrder(s.port, 'shop.example', 'k1')).status, 201);
});

test('hold queues new requests and releases them into serve', async (t) => {
  const s = await startServer(t, 'origin', A);
  await s.addSite('shop.example');
  s.setMode('shop.example', 'hold');
  const pending = [call({ port: s.port, host: 'shop.example' }), postOrder(s.port, 'shop.example', 'held-1')];
  assert.ok(await waitFor(() => s.siteStats('shop.example').held === 2, 2000));
  assert.equal(s.siteStats('shop.example').inFlight, 0);
  assert.equal(await s.waitIdle('shop.example', 100), true);
  let settled = false;
  void Promise.all(pending).then(() => (settled = true));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(settled, false, 'held requests must not be answered while held');
  s.setMode('shop.example', 'serve');
  const [page, order] = await Promise.all(pending);
  assert.equal(page!.status, 200);
  assert.equal(order!.status, 201);
  assert.equal(s.siteStats('shop.example').held, 0);
});

test('hold is bounded: a full queue and an overlong hold answer 503', async (t) => {
  const s = await startServer(t, 'origin', A, { holdQueueLimit: 1, maxHoldMs: 300 });
  await s.addSite('shop.example', 'hold');
  const first = call({ port: s.port, host: 'shop.example' });
  assert.ok(await waitFor(() => s.siteStats('shop.example').held === 1, 2000));
  const second = await call({ port: s.port, host: 'shop.example' });
  assert.equal(second.status, 503);
  assert.match(second.body, /queue full/);
  const r = await first;
  assert.equal(r.status, 503);
  assert.match(r.body, /held longer/);
  assert.equal(s.siteStats('shop.example').held, 0);
});

test('hold releases into proxy: the upstream serves, Host and X-Served-By kept', async (t) => {
  const origin = await startServer(t, 'origin', A);
  const target = await startServer(t, 'target', B);
  await origin.addSite('shop.example');
  await target.addSite('shop.example');
  origin.setMode('shop.example', 'hold');
  const pending = [
    call({ port: origin.port, host: 'shop.example' }),
    postOrder(origin.port, 'shop.example', 'held-1'),
  ];
  assert.ok(await waitFor(() => origin.siteStats('shop.example').held === 2, 2000));
  origin.setMode('shop.example', { proxy: { address: B, port: target.port, localAddress: '127.0.20.3' } });
  const [page, order] = await Promise.all(pending);
  assert.equal(page!.status, 200);
  assert.equal(page!.headers['x-served-by'], 'target');
  assert.match(page!.body, /Served by target/);
  assert.equal(order!.status, 201);
  assert.equal(order!.headers['x-served-by'], 'target');
  assert.deepEqual(
    (await target.readOrders('shop.example')).map((o) => [o.key, o.server]),
    [['held-1', 'target']],
  );
  assert.deepEqual(await origin.readOrders('shop.example'), []);
  // The target sees the proxy's bound source address; the origin counts the client.
  assert.deepEqual(Object.keys(target.siteStats('shop.example').bySource), ['127.0.20.3']);
  assert.equal(origin.siteStats('shop.example').writes, 1);
  // New requests keep going through the proxy.
  const again = await call({ port: origin.port, host: 'shop.example', path: '/orders' });
  assert.equal(again.headers['x-served-by'], 'target');
  assert.equal(JSON.parse(again.body).length, 1);
});

test('proxy forwards Host, adds X-Forwarded-For and streams the answer', async (t) => {
  const seen: IncomingHttpHeaders[] = [];
  const upstream = createServer((req, res) => {
    seen.push(req.headers);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.writeHead(200, { 'x-served-by': 'echo', 'content-type': 'text/plain' });
      res.end(`${req.method} ${req.url} ${Buffer.concat(chunks).length}`);
    });
  });
  await new Promise<void>((r) => upstream.listen(0, B, r));
  t.after(() => new Promise<void>((r) => upstream.close(() => r())));
  const up = upstream.address() as AddressInfo;

  const s = await startServer(t, 'origin', A);
  await s.addSite('shop.example', { proxy: { address: B, port: up.port } });
  const r = await call({
    port: s.port,
    host: 'shop.example',
    method: 'POST',
    path: '/x?y=1',
    body: Buffer.alloc(200_000, 'b'),
    localAddress: '127.0.0.9',
    headers: { 'x-forwarded-for': '192.0.2.7' },
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-served-by'], 'echo');
  assert.equal(r.body, 'POST /x?y=1 200000');
  assert.equal(seen[0]!.host, 'shop.example');
  assert.equal(seen[0]!['x-forwarded-for'], '192.0.2.7, 127.0.0.9');
  assert.equal(s.siteStats('shop.example').inFlight, 0);
});

test('proxy retries idempotent requests once when the upstream fails before answering', async (t) => {
  let requests = 0;
  const upstream = createServer((req, res) => {
    requests += 1;
    if (requests % 2 === 1) {
      req.socket.destroy(); // fail before any response byte
      return;
    }
    res.end('second try');
  });
  await new Promise<void>((r) => upstream.listen(0, B, r));
  t.after(() => new Promise<void>((r) => upstream.close(() => r())));
  const up = upstream.address() as AddressInfo;

  const s = await startServer(t, 'origin', A);
  await s.addSite('shop.example', { proxy: { address: B, port: up.port } });
  const get = await call({ port: s.port, host: 'shop.example' });
  assert.equal(get.status, 200);
  assert.equal(get.body, 'second try');
  assert.equal(requests, 2);

  // A POST that reached the upstream is never replayed: the client gets 502, the upstream saw it once.
  const post = await postOrder(s.port, 'shop.example', 'k1');
  assert.equal(post.status, 502);
  assert.equal(post.headers['x-served-by'], 'origin');
  assert.equal(requests, 3);
});

test('proxy: reads reuse kept-alive upstream connections, a write always gets a connection of its own', async (t) => {
  const ports: number[] = [];
  const upstream = createServer((req, res) => {
    ports.push(req.socket.remotePort!);
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  await new Promise<void>((r) => upstream.listen(0, B, r));
  t.after(() => {
    upstream.closeAllConnections();
    return new Promise<void>((r) => upstream.close(() => r()));
  });
  const up = upstream.address() as AddressInfo;
  const s = await startServer(t, 'origin', A);
  await s.addSite('shop.example', { proxy: { address: B, port: up.port } });
  assert.equal((await call({ port: s.port, host: 'shop.example' })).status, 200);
  assert.equal((await call({ port: s.port, host: 'shop.example' })).status, 200);
  assert.equal(ports[1], ports[0], 'the second read reused the first connection');
  assert.equal((await postOrder(s.port, 'shop.example', 'k1')).status, 200);
  assert.equal((await postOrder(s.port, 'shop.example', 'k2')).status, 200);
  assert.equal(new Set(ports).size, 3, `the writes came on connections of their own: ${ports.join(' ')}`);
});

test('proxy to a closed port answers 502 after one retry', async (t) => {
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, B, r));
  const closedPort = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const s = await startServer(t, 'origin', A);
  await s.addSite('shop.example', { proxy: { address: B, port: closedPort } });
  const r = await call({ port: s.port, host: 'shop.example' });
  assert.equal(r.status, 502);
  assert.match(r.body, /ECONNREFUSED/);
  assert.equal(s.siteStats('shop.example').inFlight, 0);
});

test('stats count requests by source address', async (t) => {
  const s = await startServer(t, 'origin', A);
  await s.addSite('shop.example');
  await s.addSite('blog.example');
  const before = Date.now();
  for (let i = 0; i < 3; i++) await call({ port: s.port, host: 'shop.example', localAddress: '127.0.0.9' });
  await call({ port: s.port, host: 'shop.example', localAddress: '127.0.0.10' });
  await postOrder(s.port, 'blog.example', 'b1');
  const st = s.siteStats('shop.example');
  assert.equal(st.requests, 4);
  assert.equal(st.writes, 0);
  assert.equal(st.bySource['127.0.0.9']!.requests, 3);
  assert.equal(st.bySource['127.0.0.10']!.requests, 1);
  assert.ok(st.bySource['127.0.0.9']!.lastAt >= before);
  assert.equal(s.siteStats('blog.example').writes, 1);
  assert.equal(s.siteStats('blog.example').requests, 1);
});

test('waitIdle waits for in-flight requests only', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const slow = createServer((_req, res) => void gate.then(() => res.end('late')));
  await new Promise<void>((r) => slow.listen(0, B, r));
  t.after(() => new Promise<void>((r) => slow.close(() => r())));
  const s = await startServer(t, 'origin', A);
  await s.addSite('shop.example', { proxy: { address: B, port: (slow.address() as AddressInfo).port } });
  const pending = call({ port: s.port, host: 'shop.example' });
  assert.ok(await waitFor(() => s.siteStats('shop.example').inFlight === 1, 2000));
  assert.equal(await s.waitIdle('shop.example', 100), false);
  const idle = s.waitIdle('shop.example', 2000);
  release();
  assert.equal(await idle, true);
  assert.equal((await pending).body, 'late');
});

test('sites and addresses come and go at runtime', async (t) => {
  const s = await startServer(t, 'origin', A);
  await s.addSite('shop.example');
  await s.addSite('SHOP.example.'); // idempotent, normalized
  assert.deepEqual(s.sites(), ['shop.example']);
  assert.equal(s.hasSite('shop.example.'), true);
  await postOrder(s.port, 'shop.example', 'k1');

  await s.addAddress('127.0.20.4');
  assert.equal((await call({ port: s.port, address: '127.0.20.4', host: 'shop.example' })).status, 200);
  await s.removeAddress('127.0.20.4');
  await assert.rejects(call({ port: s.port, address: '127.0.20.4', host: 'shop.example' }), {
    code: 'ECONNREFUSED',
  });
  assert.equal((await call({ port: s.port, host: 'shop.example' })).status, 200);

  await s.removeSite('shop.example');
  await s.removeSite('shop.example');
  assert.equal(s.hasSite('shop.example'), false);
  assert.equal((await call({ port: s.port, host: 'shop.example' })).status, 421);
  // The data stays until asked to delete it.
  assert.deepEqual(
    (await s.readOrders('shop.example')).map((o) => o.key),
    ['k1'],
  );
  await s.removeSite('shop.example', { deleteData: true });
  await assert.rejects(stat(s.siteDataDir('shop.example')), { code: 'ENOENT' });
});

test('removeSite answers held requests 421', async (t) => {
  const s = await startServer(t, 'origin', A);
  await s.addSite('shop.example', 'hold');
  const pending = call({ port: s.port, host: 'shop.example' });
  assert.ok(await waitFor(() => s.siteStats('shop.example').held === 1, 2000));
  await s.removeSite('shop.example');
  assert.equal((await pending).status, 421);
});

test('ids keep increasing on the other server after sync and reload', async (t) => {
  const origin = await startServer(t, 'origin', A);
  const target = await startServer(t, 'target', B);
  await origin.addSite('shop.example');
  await target.addSite('shop.example', 'readonly');
  for (const k of ['a', 'b', 'c']) await postOrder(origin.port, 'shop.example', k);

  const first = await syncDirectory(origin.siteDataDir('shop.example'), target.siteDataDir('shop.example'), {
    delete: true,
  });
  assert.equal(first.files, 1);
  await target.reloadSite('shop.example');
  await postOrder(origin.port, 'shop.example', 'd');
  const delta = await syncDirectory(origin.siteDataDir('shop.example'), target.siteDataDir('shop.example'), {
    delete: true,
  });
  assert.equal(delta.files, 1);
  const again = await syncDirectory(origin.siteDataDir('shop.example'), target.siteDataDir('shop.example'), {
    delete: true,
  });
  assert.equal(again.files, 0);
  // No reloadSite after the delta: the order log notices the file changed under it.
  target.setMode('shop.example', 'serve');
  const r = await postOrder(target.port, 'shop.example', 'e', B);
  assert.equal(r.status, 201);
  assert.equal(JSON.parse(r.body).id, 5);
  assert.deepEqual(
    (await target.readOrders('shop.example')).map((o) => [o.id, o.key, o.server]),
    [
      [1, 'a', 'origin'],
      [2, 'b', 'origin'],
      [3, 'c', 'origin'],
      [4, 'd', 'origin'],
      [5, 'e', 'target'],
    ],
  );
});

test('stop answers held requests and closes keep-alive connections', async (t) => {
  const dir = await tempDir(t);
  const s = new SiteServer({ name: 'origin', addresses: [A], port: 0, dataDir: dir });
  await s.start();
  await s.addSite('shop.example', 'hold');
  const pending = call({ port: s.port, host: 'shop.example' });
  assert.ok(await waitFor(() => s.siteStats('shop.example').held === 1, 2000));
  const t0 = Date.now();
  await s.stop();
  assert.equal((await pending).status, 503);
  assert.ok(Date.now() - t0 < 2000);
  assert.ok(await waitFor(() => s.connectionStats().open === 0, 1000));
});

test('removeAddress lets a request in flight finish and closes its keep-alive connection', async (t) => {
  const s = await startServer(t, 'origin', A);
  await s.addAddress('127.0.20.5');
  await s.addSite('shop.example', 'hold');
  const agent = new HttpAgent({ keepAlive: true });
  t.after(() => agent.destroy());
  const pending = call({ port: s.port, address: '127.0.20.5', host: 'shop.example', agent });
  assert.ok(await waitFor(() => s.siteStats('shop.example').held === 1, 2000));
  const t0 = Date.now();
  const removed = s.removeAddress('127.0.20.5');
  await sleep(50);
  s.setMode('shop.example', 'serve');
  const r = await pending;
  assert.equal(r.status, 200);
  assert.equal(r.headers.connection, 'close');
  await removed;
  assert.ok(Date.now() - t0 < 1000, 'no wait for the keep-alive timeout');
  assert.deepEqual(s.addresses(), [A]);
});

test('hold released into readonly serves the reads and refuses the writes', async (t) => {
  const s = await startServer(t, 'target', A);
  await s.addSite('shop.example', 'hold');
  const pending = [call({ port: s.port, host: 'shop.example' }), postOrder(s.port, 'shop.example', 'k1')];
  assert.ok(await waitFor(() => s.siteStats('shop.example').held === 2, 2000));
  await s.addSite('shop.example', 'readonly'); // on an existing site, addSite sets the mode
  const [page, order] = await Promise.all(pending);
  assert.equal(page!.status, 200);
  assert.equal(order!.status, 503);
});
