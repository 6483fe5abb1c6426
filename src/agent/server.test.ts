/**
 * The agent API on real sockets (loopback 127.0.61.0/24, port 0): auth, bad input, idempotency
 * of every operation through `HttpHostDriver`, a redirect that forwards, and rsync between two
 * agents (initial and delta passes).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, appendFile, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { HostAgent } from './agent.js';
import { LoopbackAddresses } from './addresses.js';
import { HttpHostDriver } from './client.js';
import { buildAgentServer } from './server.js';
import { findBinary } from '../../test/e2e/helpers.js';
import { freePort } from '../../test/ports.js';
import { waitFor } from '../common/time.js';
import { isAlive } from '../../test/processes.js';
import { startAgentApi } from '../../test/agent-api.js';

const TOKEN = 'test-token-0123456789abcdef';

interface Running {
  agent: HostAgent;
  app: FastifyInstance;
  driver: HttpHostDriver;
  dir: string;
  sharedIp: string;
  close(): Promise<void>;
}

async function startAgent(id: string, sharedIp: string): Promise<Running> {
  const dir = await mkdtemp(join(tmpdir(), `ferry-agent-${id}-`));
  const a = await startAgentApi({ id, sharedIp, dataDir: dir, token: TOKEN, driver: { timeoutMs: 5000 } });
  return {
    ...a,
    dir,
    sharedIp,
    close: async () => {
      await a.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function get(
  address: string,
  port: number,
  host: string,
  path = '/',
): Promise<{ status: number; servedBy: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: address, port, path, headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          servedBy: res.headers['x-served-by'] as string | undefined,
          body,
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

describe('HttpHostDriver', () => {
  test('retries a call that got no answer, then fails with AGENT_UNREACHABLE; an agent error is not retried', async () => {
    const port = await freePort('127.0.61.20');
    const d = new HttpHostDriver({
      id: 'gone',
      url: `http://127.0.61.20:${port}`,
      token: TOKEN,
      attempts: 3,
    });
    const t0 = Date.now();
    await assert.rejects(
      d.hasSite('shop.example'),
      (err: Error & { code?: string }) =>
        err.code === 'AGENT_UNREACHABLE' && /127\.0\.61\.20/.test(err.message),
    );
    assert.ok(Date.now() - t0 >= 700, 'two backoffs (250 + 500 ms) before giving up');
    d.close();

    let hits = 0;
    const failing = (await import('node:http')).createServer((_req, res) => {
      hits += 1;
      res
        .writeHead(500, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: { code: 'NGINX_RELOAD_FAILED', message: 'nginx: no pid' } }));
    });
    await new Promise<void>((r) => failing.listen(0, '127.0.61.22', () => r()));
    const e = new HttpHostDriver({
      id: 'failing',
      url: `http://127.0.61.22:${(failing.address() as AddressInfo).port}`,
      token: TOKEN,
      attempts: 3,
    });
    try {
      await assert.rejects(
        e.addSite('shop.example', 'serve'),
        (err: Error & { code?: string }) =>
          err.code === 'NGINX_RELOAD_FAILED' &&
          /agent failing: PUT \/v1\/sites\/shop\.example: nginx: no pid/.test(err.message),
      );
      assert.equal(hits, 1, 'an answer, even an error, is not retried');
    } finally {
      e.close();
      failing.closeAllConnections();
      await new Promise<void>((r) => failing.close(() => r()));
    }
  });

  test('a silent agent times out', async () => {
    const held = new Set<import('node:net').Socket>();
    const silent = createServer((sock) => held.add(sock));
    await new Promise<void>((r) => silent.listen(0, '127.0.61.21', () => r()));
    const d = new HttpHostDriver({
      id: 'silent',
      url: `http://127.0.61.21:${(silent.address() as AddressInfo).port}`,
      token: TOKEN,
      timeoutMs: 300,
      attempts: 1,
    });
    try {
      await assert.rejects(
        d.siteStats('shop.example'),
        (err: Error & { code?: string }) => err.code === 'AGENT_TIMEOUT',
      );
    } finally {
      d.close();
      for (const sock of held) sock.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  test('bad options are refused with what to write', () => {
    assert.throws(
      () => new HttpHostDriver({ id: 'x', url: 'agent:7070', token: TOKEN }),
      /must start with http:\/\/ or https:\/\//,
    );
    assert.throws(
      () => new HttpHostDriver({ id: 'x', url: 'not a url', token: TOKEN }),
      /is not a URL; write e\.g\. https:\/\/192\.0\.2\.10:7070/,
    );
    assert.throws(
      () => new HttpHostDriver({ id: 'x', url: 'http://127.0.0.1:1', token: '' }),
      /token is empty/,
    );
  });
});

describe('agent API', () => {
  let a: Running;
  let b: Running;

  before(async () => {
    a = await startAgent('alpha', '127.0.61.1');
    b = await startAgent('beta', '127.0.61.2');
  });
  after(async () => {
    await a?.close();
    await b?.close();
  });

  test('every route needs the bearer token: missing or wrong gets 401', async () => {
    const routes: Array<[string, string]> = [
      ['GET', '/v1/info'],
      ['GET', '/v1/addresses'],
      ['PUT', '/v1/addresses/127.0.61.50'],
      ['PUT', '/v1/redirects/x'],
      ['GET', '/v1/sites'],
      ['DELETE', '/v1/sites/shop.example'],
      ['PUT', '/v1/sync-receivers/shop.example'],
      ['GET', '/v1/no-such-route'],
    ];
    for (const [method, url] of routes) {
      const none = await a.app.inject({ method: method as 'GET', url });
      assert.equal(none.statusCode, 401, `${method} ${url} without a token`);
      assert.match(none.headers['www-authenticate'] as string, /^Bearer/);
      assert.equal(none.json().error.code, 'UNAUTHORIZED');
      const wrong = await a.app.inject({
        method: method as 'GET',
        url,
        headers: { authorization: `Bearer ${TOKEN}x` },
      });
      assert.equal(wrong.statusCode, 401, `${method} ${url} with a wrong token`);
      const short = await a.app.inject({
        method: method as 'GET',
        url,
        headers: { authorization: 'Bearer a' },
      });
      assert.equal(short.statusCode, 401);
      const basic = await a.app.inject({
        method: method as 'GET',
        url,
        headers: { authorization: `Basic ${TOKEN}` },
      });
      assert.equal(basic.statusCode, 401);
    }
    const ok = await a.app.inject({
      method: 'GET',
      url: '/v1/info',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(ok.statusCode, 200);
    assert.equal(ok.json().id, 'alpha');
  });

  test('an agent not told which web server to read answers WEBCONFIG_NONE for the web-site routes', async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    for (const [method, url] of [
      ['GET', '/v1/web-sites/shop.example'],
      ['POST', '/v1/web-sites/shop.example/gate'],
      ['GET', '/v1/web-sites/shop.example/bundle'],
      ['DELETE', '/v1/web-sites/shop.example/install'],
    ] as const) {
      const res = await a.app.inject({
        method,
        url,
        headers: auth,
        ...(method === 'POST' ? { payload: {} } : {}),
      });
      assert.equal(res.statusCode, 409, `${method} ${url}`);
      assert.equal(res.json().error.code, 'WEBCONFIG_NONE');
    }
  });

  test("the routes that carry a site's private keys answer SECRETS_NEED_TLS over plain HTTP from another host", async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    for (const [method, url] of [
      ['GET', '/v1/web-sites/shop.example/bundle'],
      ['PUT', '/v1/web-sites/shop.example/install'],
    ] as const) {
      const res = await a.app.inject({
        method,
        url,
        headers: auth,
        remoteAddress: '192.0.2.10',
        ...(method === 'PUT' ? { payload: { domain: 'shop.example' } } : {}),
      });
      assert.equal(res.statusCode, 409, `${method} ${url}`);
      assert.equal(res.json().error.code, 'SECRETS_NEED_TLS');
      assert.match(res.json().error.message, /--tls-cert/);
    }
    // The rest of the API stays usable over plain HTTP from another host.
    const site = await a.app.inject({
      method: 'GET',
      url: '/v1/web-sites/shop.example',
      headers: auth,
      remoteAddress: '192.0.2.10',
    });
    assert.equal(site.json().error.code, 'WEBCONFIG_NONE');
  });

  test('a token shorter than 16 characters is refused at construction', () => {
    assert.throws(() => buildAgentServer(a.agent, { token: 'short' }), /at least 16 characters/);
  });

  test('bad input gets 400 naming the field and what to send', async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    const cases: Array<{
      method: 'PUT' | 'POST' | 'DELETE' | 'GET';
      url: string;
      body?: unknown;
      expect: RegExp;
    }> = [
      {
        method: 'PUT',
        url: '/v1/addresses/not-an-ip',
        expect: /params\.address: must be an IPv4 or IPv6 address/,
      },
      {
        method: 'PUT',
        url: '/v1/redirects/r1',
        body: { address: 'nope', ports: [], upstream: '127.0.61.1' },
        expect: /body\.address: must be an IPv4.*body\.ports: must list at least one port/,
      },
      {
        method: 'PUT',
        url: '/v1/redirects/r1',
        body: { address: '127.0.61.9', ports: [70000], upstream: '127.0.61.1' },
        expect: /body\.ports\[0\]: .*65535/,
      },
      {
        method: 'PUT',
        url: '/v1/redirects/r1',
        body: { address: '127.0.61.9', ports: [80], upstream: '127.0.61.1', engine: 'ebpf' },
        expect: /body\.engine: must be "userspace" or "kernel"/,
      },
      {
        method: 'PUT',
        url: '/v1/redirects/bad%20id',
        body: { address: '127.0.61.9', ports: [80], upstream: '127.0.61.1' },
        expect: /params\.id/,
      },
      {
        method: 'PUT',
        url: '/v1/redirects/r1',
        body: { address: '127.0.61.9', ports: [80], upstream: '127.0.61.1', extra: 1 },
        expect: /body: Unrecognized key.*extra/i,
      },
      {
        method: 'PUT',
        url: '/v1/sites/shop.example',
        body: { mode: 'sleep' },
        expect: /body\.mode: must be "serve", "readonly", "hold" or \{"proxy"/,
      },
      {
        method: 'PUT',
        url: '/v1/sites/shop.example/mode',
        body: { mode: { proxy: { address: '127.0.61.2' } } },
        expect: /body\.mode/,
      },
      {
        method: 'PUT',
        url: '/v1/sites/-bad-.example',
        body: { mode: 'serve' },
        expect: /params\.domain: must be a domain name/,
      },
      {
        method: 'PUT',
        url: '/v1/web-sites/shop.example/install',
        body: {
          domain: 'shop.example',
          server: 'nginx',
          site: { server: 'nginx', names: ['shop.example'], listens: [], paths: [], certificates: [] },
          files: [{ path: '/etc/nginx/../shadow', text: '', blocks: [] }],
          pool: null,
          certificates: [],
          user: { name: '-o', uid: 1000, gid: 1000, home: '/var/www/shop', shell: '/bin/sh' },
          group: null,
          crontab: '',
          dataDir: null,
        },
        expect:
          /body\.files\[0\]\.path: must be an absolute path without "\.\.".*body\.user\.name: must be a system user/,
      },
      {
        method: 'PUT',
        url: '/v1/web-sites/shop.example/install',
        body: {
          domain: 'shop.example',
          server: 'nginx',
          site: { server: 'nginx', names: ['shop.example'], listens: [], paths: [], certificates: [] },
          files: [],
          pool: null,
          certificates: [],
          user: null,
          group: null,
          crontab: '',
          dataDir: null,
          mail: {
            domain: 'shop.example',
            postfix: {
              domains: ['shop.example'],
              mailboxes: ['a@shop.example shop.example/a/\nevil OK'],
              aliases: [],
            },
            users: [],
            maildirs: [],
          },
        },
        expect: /body\.mail\.postfix\.mailboxes\[0\]: must be one line/,
      },
      {
        method: 'POST',
        url: '/v1/web-sites/shop.example/finish',
        body: { role: 'both' },
        expect: /body\.role: must be "origin" or "target"/,
      },
      { method: 'POST', url: '/v1/sites/shop.example/wait-idle', body: {}, expect: /body\.timeoutMs/ },
      {
        method: 'POST',
        url: '/v1/sites/shop.example/probe',
        body: { address: '127.0.61.1', port: 80, path: 'x' },
        expect: /body\.path: must start with "\/"/,
      },
      {
        method: 'POST',
        url: '/v1/sites/shop.example/push',
        body: { to: { address: '127.0.61.2', port: 873, module: 'm', user: 'u', secret: 'short' } },
        expect: /body\.to\.secret/,
      },
      { method: 'DELETE', url: '/v1/sites/shop.example?deleteData=yes', expect: /query\.deleteData/ },
    ];
    for (const c of cases) {
      const res = await a.app.inject({
        method: c.method,
        url: c.url,
        headers: auth,
        ...(c.body !== undefined ? { payload: c.body as object } : {}),
      });
      assert.equal(res.statusCode, 400, `${c.method} ${c.url}: ${res.body}`);
      assert.equal(res.json().error.code, 'BAD_REQUEST');
      assert.match(res.json().error.message, c.expect, `${c.method} ${c.url}`);
    }
    const badJson = await a.app.inject({
      method: 'PUT',
      url: '/v1/sites/shop.example',
      headers: { ...auth, 'content-type': 'application/json' },
      payload: '{"mode":',
    });
    assert.equal(badJson.statusCode, 400);
    assert.deepEqual(Object.keys(badJson.json().error).sort(), ['code', 'message']);
    assert.equal(badJson.json().error.code, 'BAD_JSON');
    const textBody = await a.app.inject({
      method: 'PUT',
      url: '/v1/sites/shop.example',
      headers: { ...auth, 'content-type': 'application/xml' },
      payload: '<mode/>',
    });
    assert.equal(textBody.statusCode, 415);
    assert.equal(textBody.json().error.code, 'UNSUPPORTED_MEDIA_TYPE');
    // The router takes a 253-character domain (it reaches the agent: not served here), refuses 300 characters in the error shape.
    const long = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
    const served = await a.app.inject({ method: 'GET', url: `/v1/sites/${long}`, headers: auth });
    assert.notEqual(served.statusCode, 400, served.body);
    const tooLong = await a.app.inject({ method: 'GET', url: `/v1/sites/${'a'.repeat(300)}`, headers: auth });
    assert.equal(tooLong.statusCode, 400);
    assert.equal(tooLong.json().error.code, 'VALIDATION');
    const notFound = await a.app.inject({ method: 'GET', url: '/v1/redirects/none', headers: auth });
    assert.equal(notFound.statusCode, 404);
    assert.equal(notFound.json().error.code, 'REDIRECT_NOT_FOUND');
  });

  test('addresses: add, list, remove, each repeated; shared IPs are protected', async () => {
    const d = a.driver;
    await d.addAddress('127.0.61.100');
    await d.addAddress('127.0.61.100');
    assert.deepEqual(
      (await d.listAddresses()).filter((x) => x === '127.0.61.100'),
      ['127.0.61.100'],
    );
    await d.removeAddress('127.0.61.100');
    await d.removeAddress('127.0.61.100');
    assert.ok(!(await d.listAddresses()).includes('127.0.61.100'));
    await assert.rejects(
      d.removeAddress(a.sharedIp),
      (err: Error & { code?: string }) => err.code === 'ADDRESS_PROTECTED',
    );
    const res = await a.app.inject({
      method: 'DELETE',
      url: `/v1/addresses/${a.sharedIp}`,
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(res.statusCode, 409);
    await assert.rejects(
      d.addAddress('192.0.2.1'),
      (err: Error & { code?: string }) => err.code === 'ADDRESS_NOT_LOOPBACK',
    );
    // An address someone else brought up is not the agent's to take down.
    await (a.agent as unknown as { opts: { addresses: LoopbackAddresses } }).opts.addresses.add(
      '127.0.61.101',
    );
    await d.addAddress('127.0.61.101');
    await assert.rejects(
      d.removeAddress('127.0.61.101'),
      (err: Error & { code?: string }) =>
        err.code === 'ADDRESS_PROTECTED' && /not brought up by this agent/.test(err.message),
    );
  });

  test('sites and a redirect: every operation repeated leaves the same state', async () => {
    const d = a.driver;
    const port = a.agent.sites.port;
    await d.addSite('shop.example', 'serve');
    await d.addSite('shop.example', 'serve');
    assert.equal(await d.hasSite('shop.example'), true);
    assert.equal(await d.siteMode('shop.example'), 'serve');
    assert.equal(await d.hasSite('other.example'), false);
    assert.equal(await d.siteMode('other.example'), null);

    await d.addAddress('127.0.61.100');
    const spec = {
      address: '127.0.61.100',
      ports: [port],
      upstream: a.sharedIp,
      sourceAddress: '127.0.61.100',
    };
    await d.startRedirect('mig-1', spec);
    await d.startRedirect('mig-1', spec);
    await assert.rejects(
      d.startRedirect('mig-1', { ...spec, ports: [port + 1] }),
      (err: Error & { code?: string }) => err.code === 'REDIRECT_CONFLICT',
    );
    await assert.rejects(
      d.removeAddress('127.0.61.100'),
      (err: Error & { code?: string }) => err.code === 'ADDRESS_IN_USE',
    );

    const through = await get('127.0.61.100', port, 'shop.example');
    assert.equal(through.status, 200);
    assert.equal(through.servedBy, 'alpha');
    const stats = await d.siteStats('shop.example');
    assert.ok(stats.bySource['127.0.61.100']!.requests >= 1, JSON.stringify(stats));
    const rs = await d.redirectStats('mig-1');
    assert.ok(rs && rs.totalConnections >= 1);

    await d.holdRedirect('mig-1');
    await d.holdRedirect('mig-1');
    await d.setRedirectUpstream('mig-1', b.sharedIp);
    await d.setRedirectUpstream('mig-1', b.sharedIp);
    await d.releaseRedirect('mig-1');
    await d.releaseRedirect('mig-1');
    await d.setSiteMode('shop.example', 'readonly');
    await d.setSiteMode('shop.example', 'readonly');
    assert.equal(await d.siteMode('shop.example'), 'readonly');
    await d.setSiteMode('shop.example', { proxy: { address: b.sharedIp, port: b.agent.sites.port } });
    await d.setSiteMode('shop.example', { proxy: { address: b.sharedIp, port: b.agent.sites.port } });
    assert.deepEqual(await d.siteMode('shop.example'), {
      proxy: { address: b.sharedIp, port: b.agent.sites.port },
    });
    assert.equal(await d.waitSiteIdle('shop.example', 1000), true);
    const probe = await d.probe('shop.example', a.sharedIp, port, '/healthz');
    assert.equal(probe.status, 421, 'beta does not serve the site yet, so the proxy passes its 421 on');

    await d.stopRedirect('mig-1');
    await d.stopRedirect('mig-1');
    assert.equal(await d.redirectStats('mig-1'), undefined);
    await d.releaseRedirect('mig-1');
    await assert.rejects(
      d.holdRedirect('mig-1'),
      (err: Error & { code?: string }) => err.code === 'REDIRECT_NOT_FOUND',
    );
    await d.removeAddress('127.0.61.100');
    await d.removeSite('shop.example');
    await d.removeSite('shop.example');
    assert.equal(await d.hasSite('shop.example'), false);
    await assert.rejects(
      d.setSiteMode('shop.example', 'serve'),
      (err: Error & { code?: string }) => err.code === 'SITE_NOT_FOUND',
    );
  });

  test('state survives an agent restart: sites and redirects come back', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-agent-restart-'));
    const mk = async () =>
      new HostAgent({
        id: 'gamma',
        dataDir: dir,
        sharedIps: ['127.0.61.3'],
        httpPort: 0,
        addresses: new LoopbackAddresses(),
        web: { kind: 'builtin' },
      });
    const one = await mk();
    try {
      await one.start();
      await one.addSite('blog.example', 'readonly');
      await one.startRedirect('r', {
        address: '127.0.61.103',
        ports: [await freePort('127.0.61.103')],
        upstream: '127.0.61.3',
      });
      await one.holdRedirect('r');
    } finally {
      await one.stop();
    }
    const two = await mk();
    try {
      await two.start();
      assert.deepEqual(two.listSites(), [{ domain: 'blog.example', mode: 'readonly' }]);
      assert.deepEqual(
        two.listRedirects().map((r) => [r.id, r.holding]),
        [['r', true]],
      );
    } finally {
      await two.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a redirect outlives its agent: it forwards while the agent is down, the restarted agent adopts it as it is, and only stopRedirect ends it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-agent-adopt-'));
    const echo = createServer((c) => c.end('hello from upstream\n'));
    await new Promise<void>((r) => echo.listen(0, '127.0.61.4', () => r()));
    const upstreamPort = (echo.address() as AddressInfo).port;
    const mk = () =>
      new HostAgent({
        id: 'delta',
        dataDir: dir,
        sharedIps: ['127.0.61.4'],
        httpPort: 0,
        addresses: new LoopbackAddresses(),
        web: { kind: 'builtin' },
      });
    const port = upstreamPort; // port-preserving: the redirect listens on the upstream's port
    const through = () =>
      new Promise<string>((resolve, reject) => {
        const c = createConnection({ host: '127.0.61.104', port });
        let got = '';
        c.setEncoding('utf8');
        c.on('data', (d: string) => (got += d));
        c.on('end', () => resolve(got));
        c.on('error', reject);
      });
    const statePid = async () =>
      (
        JSON.parse(await readFile(join(dir, 'agent-state.json'), 'utf8')) as {
          redirects: Array<{ pid?: number }>;
        }
      ).redirects[0]?.pid;
    let pid: number | undefined;
    const one = mk();
    try {
      await one.start();
      await one.startRedirect('r', { address: '127.0.61.104', ports: [port], upstream: '127.0.61.4' });
      pid = await statePid();
      assert.ok(pid !== undefined && pid !== process.pid, 'the redirect runs in a process of its own');
      await one.holdRedirect('r');
    } finally {
      await one.stop({ keepRedirects: true });
    }
    const two = mk();
    let running: HostAgent | undefined = two;
    try {
      // Agent down: the held redirect still holds, and forwards once the next agent releases it.
      const held = through();
      await new Promise((r) => setTimeout(r, 200));
      await two.start();
      assert.deepEqual(two.listRedirects(), [
        {
          id: 'r',
          address: '127.0.61.104',
          ports: [port],
          upstream: '127.0.61.4',
          engine: 'userspace',
          holding: true,
        },
      ]);
      assert.equal(await statePid(), pid, 'adopted, not started again');
      assert.equal((await two.redirectStats('r'))!.held, 1);
      await two.releaseRedirect('r');
      assert.equal(await held, 'hello from upstream\n');
      await two.startRedirect('r', { address: '127.0.61.104', ports: [port], upstream: '127.0.61.4' });
      await assert.rejects(
        two.startRedirect('r', { address: '127.0.61.105', ports: [port], upstream: '127.0.61.4' }),
        (err: Error & { code?: string }) => err.code === 'REDIRECT_CONFLICT',
      );
      // An agent killed after starting a redirect but before saving it: the next start of that
      // redirect replaces the relay it left, which still holds the port.
      running = undefined;
      await two.stop({ keepRedirects: true });
      await writeFile(join(dir, 'agent-state.json'), JSON.stringify({ sites: [], redirects: [] }));
      const three = mk();
      running = three;
      await three.start();
      assert.deepEqual(three.listRedirects(), []);
      await three.startRedirect('r', { address: '127.0.61.104', ports: [port], upstream: '127.0.61.4' });
      assert.ok(await waitFor(() => !isAlive(pid!), 5000), 'the relay left behind is stopped');
      pid = await statePid();
      assert.equal(await through(), 'hello from upstream\n');
      await three.stopRedirect('r');
      running = undefined;
      await three.stop();
      assert.ok(await waitFor(() => !isAlive(pid!), 5000), "a stopped redirect's process exits");
      await assert.rejects(through(), /ECONNREFUSED/);
    } finally {
      await running?.stop();
      if (pid !== undefined && isAlive(pid)) process.kill(pid, 'SIGKILL');
      await new Promise<void>((r) => echo.close(() => r()));
      await rm(dir, { recursive: true, force: true });
    }
  });

  test(
    'sync: rsync pushes a site to another agent, initial then delta, one secret per migration, never into a live site',
    { skip: findBinary('rsync') ? false : 'rsync is not installed' },
    async () => {
      await a.driver.addSite('sync.example', 'serve');
      await b.driver.addSite('sync.example', 'readonly');
      const port = a.agent.sites.port;
      const post = (key: string) =>
        new Promise<number>((resolve, reject) => {
          const body = JSON.stringify({ key });
          const req = request(
            {
              host: a.sharedIp,
              port,
              path: '/orders',
              method: 'POST',
              headers: { host: 'sync.example', 'content-type': 'application/json' },
              agent: false,
            },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
            },
          );
          req.on('error', reject);
          req.end(body);
        });
      for (let i = 0; i < 5; i++) assert.equal(await post(`k${i}`), 201);
      await appendFile(join(a.agent.siteDataDir('sync.example'), 'extra.txt'), 'x'.repeat(10_000));

      const first = await a.driver.syncSite('sync.example', b.driver);
      assert.ok(first.files >= 2, JSON.stringify(first));
      assert.ok(first.bytes >= 10_000);
      assert.equal(
        (await b.agent.sites.readOrders('sync.example')).length,
        5,
        'the target reloaded the data',
      );

      for (let i = 5; i < 8; i++) assert.equal(await post(`k${i}`), 201);
      const delta = await a.driver.syncSite('sync.example', b.driver);
      assert.equal(delta.files, 1, 'only the order log changed');
      assert.equal(
        (await b.agent.sites.readOrders('sync.example')).map((o) => o.key).join(','),
        'k0,k1,k2,k3,k4,k5,k6,k7',
      );
      const none = await a.driver.syncSite('sync.example', b.driver);
      assert.equal(none.files, 0);
      assert.deepEqual(
        b.agent.info().syncSessions,
        ['sync.example'],
        'one session, one secret, for every pass',
      );

      // Progress of a push, by job id, after it ran (and while it runs).
      const session = await b.driver.openSyncReceiver('sync.example');
      await a.driver.call('POST', '/v1/sites/sync.example/push', { jobId: 'job-1', to: session });
      const progress = await a.driver.syncProgress('job-1');
      assert.equal(progress?.state, 'done');
      assert.equal(progress?.domain, 'sync.example');
      assert.equal(progress?.percent, 100);
      assert.equal(await a.driver.syncProgress('job-none'), undefined);

      // The session is the same when opened again; its secret file is private; a wrong secret fails with rsync's reason.
      const again = await b.driver.openSyncReceiver('sync.example');
      assert.equal(again.secret, session.secret, 'opening twice gives the same session');
      const { stat } = await import('node:fs/promises');
      assert.equal((await stat(join(b.dir, 'rsyncd', `ferry-sync.example.secret`))).mode & 0o777, 0o600);
      await assert.rejects(
        a.driver.call('POST', '/v1/sites/sync.example/push', { to: { ...session, secret: 'w'.repeat(24) } }),
        (err: Error & { code?: string }) => err.code === 'RSYNC_FAILED' && /auth/i.test(err.message),
      );

      // Once the site takes writes on the receiver, its session is gone and none can open.
      await b.driver.setSiteMode('sync.example', 'serve');
      assert.deepEqual(b.agent.info().syncSessions, []);
      const conf = await readFile(join(b.dir, 'rsyncd', 'rsyncd.conf'), 'utf8');
      assert.doesNotMatch(conf, /ferry-sync\.example/, 'no module left for a live site');
      await assert.rejects(
        a.driver.call('POST', '/v1/sites/sync.example/push', { to: session }),
        (err: Error & { code?: string }) => err.code === 'RSYNC_FAILED',
      );
      await assert.rejects(
        b.driver.openSyncReceiver('sync.example'),
        (err: Error & { code?: string }) =>
          err.code === 'SYNC_TARGET_LIVE' && /Set it readonly first/.test(err.message),
      );
      await assert.rejects(
        a.driver.syncSite('sync.example', b.driver),
        (err: Error & { code?: string }) => err.code === 'SYNC_TARGET_LIVE',
      );
      // A site that proxies its requests elsewhere takes no writes here: it may receive (an origin
      // getting the target's data back when a migration is rolled back during draining).
      await b.driver.setSiteMode('sync.example', { proxy: { address: '127.0.0.1', port: 9 } });
      await a.driver.syncSite('sync.example', b.driver); // rejects with SYNC_TARGET_LIVE if refused
      await b.driver.closeSyncReceiver('sync.example');
    },
  );
});

describe('agent API: can this server host a site (POST /v1/web-sites/{domain}/check)', () => {
  // A server whose web server is nginx with PHP-FPM 8.2 installed (its layout in a folder of the test).
  let dir = '';
  let agent: HostAgent;
  let app: FastifyInstance;
  let driver: HttpHostDriver;
  const auth = { authorization: `Bearer ${TOKEN}` };
  const needs = (version: string, server = 'nginx') => ({
    server,
    requires: [
      {
        kind: 'php-fpm',
        name: version,
        neededBy: `pool [shop] of /etc/php/${version}/fpm/pool.d/shop.conf`,
      },
    ],
  });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-agent-check-'));
    await mkdir(join(dir, 'php', '8.2', 'fpm', 'pool.d'), { recursive: true });
    await mkdir(join(dir, 'php', '8.1', 'fpm', 'pool.d'), { recursive: true }); // left over, no binary
    await mkdir(join(dir, 'bin'));
    await writeFile(join(dir, 'bin', 'php-fpm8.2'), '', { mode: 0o755 });
    await mkdir(join(dir, 'include'));
    agent = new HostAgent({
      id: 'gamma',
      dataDir: join(dir, 'data'),
      sharedIps: ['127.0.61.3'],
      httpPort: 0,
      addresses: new LoopbackAddresses(),
      web: { kind: 'nginx', confDir: join(dir, 'nginx'), appAddress: '127.0.0.1', appPort: await freePort() },
      webConfig: { kind: 'nginx' },
      webStack: {
        includeDir: join(dir, 'include'),
        phpLayout: { phpRoot: join(dir, 'php'), binDirs: [join(dir, 'bin')] },
      },
      rsync: { port: await freePort('127.0.61.3') },
    });
    await agent.start();
    app = buildAgentServer(agent, { token: TOKEN });
    await app.listen({ host: '127.0.61.3', port: 0 });
    const url = `http://127.0.61.3:${(app.server.address() as AddressInfo).port}`;
    driver = new HttpHostDriver({ id: 'gamma', url, token: TOKEN, timeoutMs: 5000 });
  });
  after(async () => {
    driver?.close();
    await app?.close();
    await agent?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('what the server has: 200, through the driver too, and nothing written', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/web-sites/shop.example/check',
      headers: auth,
      payload: needs('8.2'),
    });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(res.json(), { ok: true });
    await driver.checkWebSite('shop.example', { server: 'nginx', requires: [] });
    assert.deepEqual(await readdir(join(dir, 'include')), [], 'the check writes no configuration');
    assert.equal(agent.listSites().length, 0, 'nor adds a site');
  });

  test('what it lacks: 409 TARGET_LACKS naming the version and what needs it; another kind of web server too', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/web-sites/shop.example/check',
      headers: auth,
      payload: needs('8.1'),
    });
    assert.equal(res.statusCode, 409, res.body);
    assert.equal(res.json().error.code, 'TARGET_LACKS');
    assert.match(
      res.json().error.message,
      /shop\.example: it lacks PHP-FPM 8\.1 \(pool \[shop\] of \/etc\/php\/8\.1\/fpm\/pool\.d\/shop\.conf\)/,
      'a pool folder without its php-fpm8.1 binary is no PHP 8.1',
    );
    await assert.rejects(
      driver.checkWebSite('shop.example', {
        server: 'nginx',
        requires: [{ kind: 'module', name: 'rewrite_module', neededBy: 'RewriteEngine at /x.conf:3' }],
      }),
      (err: Error & { code?: string }) =>
        err.code === 'TARGET_LACKS' &&
        /Apache module rewrite_module \(RewriteEngine at \/x\.conf:3\)/.test(err.message),
    );
    await assert.rejects(
      driver.checkWebSite('shop.example', { server: 'apache', requires: [] }),
      (err: Error & { code?: string }) =>
        err.code === 'TARGET_LACKS' && /runs on apache, this server's web server is nginx/.test(err.message),
    );
    assert.deepEqual(await readdir(join(dir, 'include')), []);
  });

  test('a bad body: 400 naming the field; no token: 401', async () => {
    for (const [payload, expect] of [
      [{ requires: [] }, /body\.server: must be "nginx" or "apache"/],
      [{ server: 'nginx' }, /body\.requires/],
      [
        { server: 'nginx', requires: [{ kind: 'perl', name: '5', neededBy: 'x' }] },
        /body\.requires\[0\]\.kind: must be "php-fpm" or "module"/,
      ],
      [
        { server: 'nginx', requires: [{ kind: 'php-fpm', name: '../8.2', neededBy: 'x' }] },
        /body\.requires\[0\]\.name: must be a PHP version/,
      ],
      [{ ...needs('8.2'), extra: 1 }, /body: Unrecognized key.*extra/i],
    ] as const) {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/web-sites/shop.example/check',
        headers: auth,
        payload,
      });
      assert.equal(res.statusCode, 400, `${JSON.stringify(payload)}: ${res.body}`);
      assert.equal(res.json().error.code, 'BAD_REQUEST');
      assert.match(res.json().error.message, expect);
    }
    const bad = await app.inject({
      method: 'POST',
      url: '/v1/web-sites/-bad-/check',
      headers: auth,
      payload: needs('8.2'),
    });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().error.message, /params\.domain/);
    for (const headers of [{}, { authorization: `Bearer ${TOKEN}x` }]) {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/web-sites/shop.example/check',
        headers,
        payload: needs('8.2'),
      });
      assert.equal(res.statusCode, 401);
      assert.equal(res.json().error.code, 'UNAUTHORIZED');
    }
  });
});
