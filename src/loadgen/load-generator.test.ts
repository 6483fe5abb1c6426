import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { sleep, waitFor } from '../common/time.js';
import { SiteServer, syncDirectory } from '../host/index.js';
import { LoadGenerator, type LoadOptions, type RequestResult } from './index.js';

const ORIGIN = '127.0.21.1';
const TARGET = '127.0.21.2';

async function server(t: TestContext, name: string, address: string, port = 0): Promise<SiteServer> {
  const dir = await mkdtemp(join(tmpdir(), `ferry-loadgen-${name}-`));
  const s = new SiteServer({ name, addresses: [address], port, dataDir: dir });
  t.after(async () => {
    await s.stop();
    await rm(dir, { recursive: true, force: true });
  });
  await s.start();
  return s;
}

function load(
  t: TestContext,
  opts: Partial<LoadOptions> & Pick<LoadOptions, 'sites' | 'port' | 'resolve'>,
): LoadGenerator {
  const gen = new LoadGenerator({ seed: 7, ...opts });
  t.after(() => gen.stop());
  return gen;
}

test('options are validated with a clear message', () => {
  assert.throws(
    () =>
      new LoadGenerator({
        sites: [],
        port: 0,
        resolve: async () => ({ address: ORIGIN, ttl: 1 }),
        staleShare: 2,
        rate: 0,
      }),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, 'LOADGEN_OPTIONS');
      for (const word of ['sites', 'port', 'staleShare', 'rate']) assert.match(err.message, new RegExp(word));
      return true;
    },
  );
});

test('clients are spread over sites, stale and keep-alive traits evenly', () => {
  const gen = new LoadGenerator({
    sites: ['a.example', 'b.example'],
    port: 80,
    resolve: async () => ({ address: ORIGIN, ttl: 1 }),
    clients: 10,
    staleShare: 0.2,
    keepAliveShare: 0.5,
  });
  const cs = gen.clients();
  assert.deepEqual(cs.map((c) => c.domain).slice(0, 4), ['a.example', 'b.example', 'a.example', 'b.example']);
  assert.equal(cs.filter((c) => c.stale).length, 2);
  assert.equal(cs.filter((c) => c.keepAlive).length, 5);
  assert.ok(cs.some((c) => c.stale && c.keepAlive) && cs.some((c) => c.stale && !c.keepAlive));
});

test('reads and writes on several sites; acknowledged writes are on the server exactly once', async (t) => {
  const s = await server(t, 'origin', ORIGIN);
  await s.addSite('shop.example');
  await s.addSite('blog.example');
  const resolved: string[] = [];
  const gen = load(t, {
    sites: ['shop.example', 'blog.example.'],
    port: s.port,
    resolve: async (name) => {
      resolved.push(name);
      return { address: ORIGIN, ttl: 60 };
    },
    rate: 100,
    clients: 6,
    writeShare: 0.5,
  });
  const events: RequestResult[] = [];
  gen.on('result', (r: RequestResult) => events.push(r));
  gen.start();
  await sleep(800);
  await gen.stop();

  const sum = gen.summary();
  assert.ok(sum.total >= 40, `only ${sum.total} requests`);
  assert.equal(
    sum.failed,
    0,
    JSON.stringify(
      gen
        .results()
        .filter((r) => !r.ok)
        .slice(0, 3),
    ),
  );
  assert.equal(sum.servedBy.origin, sum.total);
  assert.ok(sum.byDomain['shop.example']!.total > 0 && sum.byDomain['blog.example.']!.total > 0);
  assert.equal(events.length, sum.total);
  assert.equal(resolved.length, 6, 'each client resolves once while its answer is fresh');
  const r = gen.results()[0]!;
  assert.equal(r.address, ORIGIN);
  assert.equal(r.servedBy, 'origin');
  assert.ok(r.latencyMs >= 0 && r.at > 0);

  for (const domain of ['shop.example', 'blog.example']) {
    const acked = sum.acknowledgedWrites.filter((w) => w.domain.replace(/\.$/, '') === domain);
    const onDisk = await s.readOrders(domain);
    assert.ok(acked.length > 0);
    assert.deepEqual(
      onDisk.map((o) => `${o.key}#${o.id}`).sort(),
      acked.map((w) => `${w.key}#${w.id}`).sort(),
    );
  }
  const keys = sum.acknowledgedWrites.map((w) => w.key);
  assert.equal(new Set(keys).size, keys.length);
});

test('keep-alive clients reuse one connection; the others open one per request', async (t) => {
  const s = await server(t, 'origin', ORIGIN);
  await s.addSite('shop.example');
  const base = {
    sites: ['shop.example'],
    port: s.port,
    resolve: async () => ({ address: ORIGIN, ttl: 60 }),
    rate: 100,
    clients: 4,
  };

  const keep = load(t, { ...base, keepAliveShare: 1 });
  keep.start();
  await sleep(500);
  await keep.stop();
  const kept = keep.summary().total;
  assert.ok(kept >= 20);
  assert.ok(
    s.connectionStats().total <= 4,
    `${s.connectionStats().total} connections for 4 keep-alive clients`,
  );
  assert.ok(await waitFor(() => s.connectionStats().open === 0, 2000), 'stop closes kept connections');

  const before = s.connectionStats().total;
  const fresh = load(t, { ...base, keepAliveShare: 0 });
  fresh.start();
  await sleep(500);
  await fresh.stop();
  assert.equal(s.connectionStats().total - before, fresh.summary().total);
  assert.equal(fresh.summary().failed, 0);
});

test('an idle keep-alive connection is closed by the client after idleSocketTimeoutMs', async (t) => {
  const s = await server(t, 'origin', ORIGIN);
  await s.addSite('shop.example');
  const gen = load(t, {
    sites: ['shop.example'],
    port: s.port,
    resolve: async () => ({ address: ORIGIN, ttl: 60 }),
    rate: 4,
    clients: 1,
    keepAliveShare: 1,
    idleSocketTimeoutMs: 100,
  });
  gen.start();
  await sleep(900);
  await gen.stop();
  const n = gen.summary().total;
  assert.ok(n >= 3);
  assert.equal(s.connectionStats().total, n, 'a request 250 ms after the last finds its socket closed');
  assert.equal(gen.summary().failed, 0);
});

test('a switch of the answer: fresh clients follow the TTL, stale ones overstay it, no request fails', async (t) => {
  const origin = await server(t, 'origin', ORIGIN);
  const target = await server(t, 'target', TARGET, origin.port);
  await origin.addSite('shop.example');
  await origin.addSite('blog.example');
  await target.addSite('shop.example', 'readonly');
  let answer = ORIGIN;
  const ttl = 1;
  const overstay = 1500;
  const gen = load(t, {
    sites: ['shop.example', 'blog.example'],
    port: origin.port,
    resolve: async (name) => ({ address: name === 'shop.example' ? answer : ORIGIN, ttl }),
    rate: 80,
    clients: 10,
    staleShare: 0.4,
    staleOverstayMs: overstay,
    keepAliveShare: 0.5,
    writeShare: 0.4,
  });
  gen.start();
  await sleep(300);

  // Cut-over, as the orchestrator does it: hold, drain, final sync, target writes, origin proxies.
  origin.setMode('shop.example', 'hold');
  assert.equal(await origin.waitIdle('shop.example', 2000), true);
  await syncDirectory(origin.siteDataDir('shop.example'), target.siteDataDir('shop.example'), {
    delete: true,
  });
  await target.reloadSite('shop.example');
  target.setMode('shop.example', 'serve');
  origin.setMode('shop.example', { proxy: { address: TARGET, port: target.port } });
  answer = TARGET;
  const switchAt = Date.now();

  await sleep(ttl * 1000 + overstay + 700);
  await gen.stop();

  const sum = gen.summary();
  const results = gen.results();
  assert.equal(sum.failed, 0, JSON.stringify(results.filter((r) => !r.ok).slice(0, 3)));
  assert.ok(sum.servedBy.origin! > 0 && sum.servedBy.target! > 0);
  assert.ok(results.some((r) => r.domain === 'shop.example' && r.address === TARGET));

  const slack = 200;
  for (const c of gen.clients().filter((x) => x.domain === 'shop.example')) {
    const mine = results.filter((r) => r.client === c.client);
    const firstAt = mine[0]!.at;
    assert.ok(firstAt < switchAt, 'every client resolved before the switch');
    const keep = ttl * 1000 + (c.stale ? overstay : 0);
    const lateOld = mine.filter((r) => r.address === ORIGIN && r.at > firstAt + keep + slack);
    assert.deepEqual(lateOld, [], `client ${c.client} (stale=${c.stale}) kept the old answer too long`);
    if (c.stale) {
      assert.ok(
        mine.some((r) => r.address === ORIGIN && r.at > firstAt + ttl * 1000 + slack),
        `stale client ${c.client} should keep the old answer past the TTL`,
      );
      // ... and through the origin's proxy it is the target that answers after the switch.
      assert.ok(mine.filter((r) => r.at > switchAt + 100).every((r) => r.servedBy === 'target'));
    }
    assert.ok(
      mine.some((r) => r.address === TARGET),
      `client ${c.client} never moved to the new answer`,
    );
  }

  // Every acknowledged write is on the target exactly once; none on the origin after the switch.
  const acked = sum.acknowledgedWrites.filter((w) => w.domain === 'shop.example');
  const onTarget = await target.readOrders('shop.example');
  assert.ok(acked.length > 0);
  assert.deepEqual(
    onTarget.map((o) => `${o.key}#${o.id}`).sort(),
    acked.map((w) => `${w.key}#${w.id}`).sort(),
  );
  const ids = onTarget.map((o) => o.id);
  assert.deepEqual(
    ids,
    [...ids].sort((a, b) => a - b),
  );
  assert.equal(new Set(ids).size, ids.length);
  assert.ok((await origin.readOrders('shop.example')).every((o) => Date.parse(o.at) <= switchAt));
  // The other site on the shared address was never touched.
  assert.equal(sum.byDomain['blog.example']!.failed, 0);
  assert.ok(results.filter((r) => r.domain === 'blog.example').every((r) => r.servedBy === 'origin'));
});

test('a failed lookup is a failed request', async (t) => {
  let calls = 0;
  const gen = load(t, {
    sites: ['nowhere.example'],
    port: 9,
    resolve: async () => {
      calls += 1;
      throw new Error('NXDOMAIN');
    },
    rate: 50,
    clients: 2,
  });
  gen.start();
  await waitFor(() => gen.summary().total >= 3, 2000);
  await gen.stop();
  const r = gen.results()[0]!;
  assert.equal(r.ok, false);
  assert.equal(r.status, null);
  assert.equal(r.address, '');
  assert.match(r.error ?? '', /resolve nowhere\.example: NXDOMAIN/);
  assert.equal(calls, gen.summary().total, 'a failed answer is not cached');
});

test('requests are bounded by their timeout and stop waits for them', async (t) => {
  const s = await server(t, 'origin', ORIGIN);
  await s.addSite('shop.example', 'hold');
  const gen = load(t, {
    sites: ['shop.example'],
    port: s.port,
    resolve: async () => ({ address: ORIGIN, ttl: 60 }),
    rate: 50,
    clients: 3,
    requestTimeoutMs: 300,
  });
  gen.start();
  await sleep(100);
  const t0 = Date.now();
  await gen.stop();
  assert.ok(Date.now() - t0 < 1000);
  const sum = gen.summary();
  assert.equal(sum.total, 3, 'one request per client: the others found every client busy');
  assert.ok(sum.skipped > 0);
  assert.equal(sum.failed, 3);
  assert.match(gen.results()[0]!.error ?? '', /no complete answer within 300 ms/);
});

test('maxResults bounds the kept results, not the summary', async (t) => {
  const s = await server(t, 'origin', ORIGIN);
  await s.addSite('shop.example');
  const gen = load(t, {
    sites: ['shop.example'],
    port: s.port,
    resolve: async () => ({ address: ORIGIN, ttl: 60 }),
    rate: 200,
    clients: 4,
    maxResults: 10,
  });
  gen.start();
  await waitFor(() => gen.summary().total >= 30, 3000);
  await gen.stop();
  assert.ok(gen.results().length <= 10);
  assert.ok(gen.summary().total >= 30);
  assert.equal(gen.summary().acknowledgedWrites.length, (await s.readOrders('shop.example')).length);
});

test("a static site's users only read its home page; the other sites still take writes", async (t) => {
  const s = await server(t, 'origin', ORIGIN);
  await s.addSite('shop.example', 'serve');
  await s.addSite('news.example', 'serve');
  const gen = load(t, {
    sites: ['shop.example', 'news.example'],
    staticSites: ['news.example'],
    port: s.port,
    resolve: async () => ({ address: ORIGIN, ttl: 60 }),
    rate: 100,
    clients: 4,
    writeShare: 0.5,
  });
  gen.start();
  await waitFor(() => gen.results().filter((r) => r.domain === 'news.example').length >= 20, 10_000);
  await gen.stop();
  const news = gen.results().filter((r) => r.domain === 'news.example');
  const shop = gen.results().filter((r) => r.domain === 'shop.example');
  assert.deepEqual([...new Set(news.map((r) => `${r.method} ${r.path}`))], ['GET /']);
  assert.ok(
    shop.some((r) => r.method === 'POST'),
    'the other site took writes',
  );
});

test('a kept-alive connection closed before any answer (a reload) is sent again only with resendOnClosedKeepAlive', async (t) => {
  // Answers the first request of each connection and closes the connection on the second unread,
  // as a web server's reload closes its idle connections.
  const seen = new WeakMap<object, number>();
  const srv = createServer((req, res) => {
    const n = (seen.get(req.socket) ?? 0) + 1;
    seen.set(req.socket, n);
    if (n > 1) return req.socket.destroy();
    res.writeHead(200, { 'x-served-by': 'origin', 'content-type': 'text/plain' });
    res.end('ok');
  });
  await new Promise<void>((resolve) => srv.listen(0, ORIGIN, resolve));
  t.after(() => new Promise<void>((resolve) => srv.close(() => resolve())));
  const port = (srv.address() as { port: number }).port;
  const run = async (resend: boolean) => {
    const gen = load(t, {
      sites: ['shop.example'],
      port,
      resolve: async () => ({ address: ORIGIN, ttl: 60 }),
      rate: 20,
      clients: 1,
      keepAliveShare: 1,
      writeShare: 0,
      resendOnClosedKeepAlive: resend,
    });
    gen.start();
    await waitFor(() => gen.results().length >= 6, 10_000);
    await gen.stop();
    return gen;
  };
  const without = await run(false);
  assert.ok(without.summary().failed > 0, 'without it, the closed connection fails the request');
  const withIt = await run(true);
  assert.equal(withIt.summary().failed, 0);
  assert.ok(withIt.summary().resent > 0);
  assert.ok(withIt.results().some((r) => r.resent && r.ok));
});
