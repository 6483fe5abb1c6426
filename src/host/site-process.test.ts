/** `SiteProcess`: the built-in site app in its own process, outliving the agent that started it. */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, request } from 'node:http';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../common/time.js';
import { isFerryError } from '../common/errors.js';
import { SiteProcess } from './site-process.js';
import type { SiteServerOptions, SiteUpstream } from './site-server.js';

const ADDRESS = '127.0.73.1';
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Kills a child left by a failed test (by its pid, which the test knows). */
function reap(pid: number | undefined): void {
  cleanups.push(() => {
    if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
  });
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-sp-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function call(
  port: number,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string; servedBy: string | null }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        host: ADDRESS,
        port,
        method,
        path,
        agent: false,
        headers: {
          host: 'shop.example',
          ...(data
            ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(data)) }
            : {}),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            text,
            servedBy: (res.headers['x-served-by'] as string | undefined) ?? null,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

function options(
  dir: string,
  site: Partial<SiteServerOptions> = {},
): ConstructorParameters<typeof SiteProcess>[0] {
  return {
    site: { name: 'origin', addresses: [ADDRESS], port: 0, dataDir: join(dir, 'sites'), ...site },
    socketPath: join(dir, 'app', 'control.sock'),
    logFile: join(dir, 'app.log'),
  };
}

describe('SiteProcess (the site app in its own process)', () => {
  it(
    'serves on when its agent lets go; a new one adopts it with its sites and modes, drives it, and stops it',
    { timeout: 60_000 },
    async () => {
      const dir = await tempDir();
      const first = new SiteProcess(options(dir));
      await first.start();
      reap(first.pid);
      assert.notEqual(first.pid, process.pid);
      assert.equal(first.adopted, false);
      const port = first.port;
      assert.ok(port > 0);
      await first.addSite('Shop.Example.', 'serve');
      assert.deepEqual(first.sites(), ['shop.example']);
      assert.equal((await call(port, 'POST', '/orders', { key: 'k1' })).status, 201);
      first.detach();

      // No agent connected: it still serves, and keeps its data.
      const served = await call(port, 'POST', '/orders', { key: 'k2' });
      assert.equal(served.status, 201);
      assert.equal(served.servedBy, 'origin');

      const second = new SiteProcess(options(dir, { port }));
      await second.start();
      assert.equal(second.adopted, true);
      assert.equal(second.pid, first.pid, 'the same process, adopted');
      assert.deepEqual(second.sites(), ['shop.example']);
      assert.equal(second.mode('shop.example'), 'serve');
      const stats = await second.siteStats('shop.example');
      assert.equal(stats.requests, 2);
      assert.equal(stats.writes, 2);

      await second.addSite('shop.example', 'readonly');
      assert.equal((await call(port, 'POST', '/orders', { key: 'k3' })).status, 503);
      assert.equal((await call(port, 'GET', '/orders')).status, 200);
      assert.equal(await second.waitIdle('shop.example', 1000), true);
      assert.deepEqual(
        (await second.readOrders('shop.example')).map((o) => o.key),
        ['k1', 'k2'],
      );
      assert.equal(second.siteDataDir('shop.example'), join(dir, 'sites', 'shop.example'));

      // Hold queues requests in the child; leaving hold releases them.
      await second.addSite('shop.example', 'hold');
      const held = call(port, 'POST', '/orders', { key: 'k4' });
      assert.ok(
        await waitFor(async () => (await second.siteStats('shop.example')).held === 1, 5000),
        'the request is held',
      );
      await second.addSite('shop.example', 'serve');
      assert.equal((await held).status, 201);

      // Errors keep their code across the socket.
      await assert.rejects(
        second.siteStats('none.example'),
        (e: unknown) => isFerryError(e) && e.code === 'SITE_NOT_FOUND',
      );
      await assert.rejects(
        second.addSite('bad..example'),
        (e: unknown) => isFerryError(e) && e.code === 'SITE_DOMAIN_INVALID',
      );

      await second.removeSite('shop.example');
      assert.equal(second.hasSite('shop.example'), false);
      assert.equal((await call(port, 'GET', '/')).status, 421);

      await second.stop();
      assert.ok(await waitFor(() => !alive(first.pid!), 5000), 'the process exited');
      assert.equal(existsSync(join(dir, 'app', 'control.sock')), false, 'its socket is gone');
      await assert.rejects(call(port, 'GET', '/'), 'nothing listens any more');
    },
  );

  it(
    'replaces a process started with other options, and exits by itself once orphaned for orphanTimeoutMs',
    { timeout: 60_000 },
    async () => {
      const dir = await tempDir();
      const first = new SiteProcess(options(dir));
      await first.start();
      reap(first.pid);
      first.detach();
      const other = new SiteProcess({ ...options(dir, { name: 'renamed' }), orphanTimeoutMs: 500 });
      await other.start();
      reap(other.pid);
      assert.equal(other.adopted, false);
      assert.notEqual(other.pid, first.pid);
      assert.ok(await waitFor(() => !alive(first.pid!), 5000), 'the process with other options was stopped');
      other.detach();
      assert.ok(await waitFor(() => !alive(other.pid!), 10_000), 'the orphaned process exited by itself');
      assert.equal(existsSync(other.socketPath), false);
    },
  );

  it(
    'a child killed under its agent is replaced, serving the same sites in their last modes at the same port',
    { timeout: 60_000 },
    async () => {
      const dir = await tempDir();
      const sp = new SiteProcess(options(dir));
      await sp.start();
      const first = sp.pid!;
      reap(first);
      cleanups.push(() => sp.stop());
      const port = sp.port;
      await sp.addSite('shop.example', 'readonly');
      await sp.addSite('other.example', 'serve');
      process.kill(first, 'SIGKILL');
      assert.ok(
        await waitFor(
          async () =>
            sp.pid !== first && (await call(port, 'GET', '/').catch(() => ({ status: 0 }))).status === 200,
          15_000,
        ),
        'a new child serves',
      );
      reap(sp.pid);
      assert.equal((await call(port, 'POST', '/orders', { key: 'k' })).status, 503, 'still read-only');
      assert.equal(sp.mode('shop.example'), 'readonly');
      assert.deepEqual((await sp.siteStats('other.example')).requests, 0);
      await sp.stop();
      assert.ok(await waitFor(() => !alive(sp.pid!), 5000));
    },
  );

  it(
    "carries a gated site's upstream: forwards to the backend, reports it when adopted and after a crash",
    { timeout: 60_000 },
    async () => {
      const dir = await tempDir();
      const backend = createHttpServer((req, res) => {
        res.writeHead(200, { 'x-served-by': 'backend' });
        res.end(`backend saw ${req.method} ${req.url}`);
      });
      await new Promise<void>((r) => backend.listen(0, ADDRESS, () => r()));
      cleanups.push(
        () =>
          new Promise<void>((r) => {
            backend.closeAllConnections();
            backend.close(() => r());
          }),
      );
      const upstream: SiteUpstream = {
        http: { address: ADDRESS, port: (backend.address() as { port: number }).port },
        tlsPort: 8443,
        aliases: ['www.shop.example'],
      };
      const first = new SiteProcess(options(dir));
      await first.start();
      reap(first.pid);
      const port = first.port;
      await first.addSite('shop.example', 'serve', { upstream });
      assert.deepEqual(first.upstream('shop.example'), upstream);
      const r1 = await call(port, 'GET', '/page');
      assert.deepEqual([r1.status, r1.servedBy, r1.text], [200, 'backend', 'backend saw GET /page']);
      await assert.rejects(
        first.addSite('bad.example', 'serve', { upstream: { tlsPort: 1 } }),
        (e: unknown) => isFerryError(e) && e.code === 'SITE_UPSTREAM_INVALID',
      );
      assert.equal(first.hasSite('bad.example'), false);
      assert.throws(() => first.upstream('none.example'), { code: 'SITE_NOT_FOUND' });
      first.detach();

      const second = new SiteProcess(options(dir, { port }));
      await second.start();
      assert.equal(second.adopted, true);
      assert.deepEqual(second.upstream('shop.example'), upstream, 'the adopted child reports the upstream');
      await second.addSite('shop.example', 'readonly');
      assert.deepEqual(second.upstream('shop.example'), upstream, 'a mode change keeps it');

      const pid = second.pid!;
      process.kill(pid, 'SIGKILL');
      assert.ok(
        await waitFor(
          async () =>
            second.pid !== pid &&
            (await call(port, 'GET', '/again').catch(() => ({ status: 0 }))).status === 200,
          15_000,
        ),
        'a new child serves',
      );
      reap(second.pid);
      const r2 = await call(port, 'GET', '/again');
      assert.deepEqual(
        [r2.servedBy, r2.text],
        ['backend', 'backend saw GET /again'],
        'still gated after a crash',
      );
      assert.equal((await call(port, 'POST', '/orders', { key: 'k' })).status, 503, 'still read-only');
      await second.stop();
    },
  );

  it(
    "reports a listen failure as the site server's own error and leaves no process",
    { timeout: 30_000 },
    async () => {
      const dir = await tempDir();
      const busy: Server = createServer();
      await new Promise<void>((r) => busy.listen(0, ADDRESS, () => r()));
      cleanups.push(() => new Promise<void>((r) => busy.close(() => r())));
      const port = (busy.address() as { port: number }).port;
      const sp = new SiteProcess(options(dir, { port }));
      await assert.rejects(sp.start(), (e: unknown) => isFerryError(e) && e.code === 'SITE_LISTEN');
      assert.equal(existsSync(sp.socketPath), false);
    },
  );
});
