/**
 * The agent with nginx in front (a private nginx on loopback 127.0.62.0/24) and the agent API
 * over TLS. Skipped, with the reason, when nginx or openssl is not installed.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostAgent } from './agent.js';
import { LoopbackAddresses } from './addresses.js';
import { HttpHostDriver } from './client.js';
import { buildAgentServer } from './server.js';
import { findBinary } from '../../test/e2e/helpers.js';
import { waitFor } from '../common/time.js';
import { freePort } from '../../test/ports.js';
import { selfSignedCert } from '../../test/certs.js';

const TOKEN = 'nginx-test-token-0123456789';
const IP = '127.0.62.1';
/** Source address of the test's requests, as nginx should report it. */
const CLIENT = '127.0.62.9';
const nginxBin = findBinary('nginx');
const opensslBin = findBinary('openssl');

function send(
  port: number,
  host: string,
  method = 'GET',
  path = '/',
  body?: string,
): Promise<{ status: number; servedBy: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: IP,
        port,
        path,
        method,
        localAddress: CLIENT,
        headers: { host, ...(body ? { 'content-type': 'application/json' } : {}) },
        agent: false,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            servedBy: res.headers['x-served-by'] as string | undefined,
            body: text,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe(
  'agent with nginx in front',
  { skip: nginxBin ? false : 'nginx is not installed (apt-get install nginx-light)' },
  () => {
    let dir: string;
    let nginx: ChildProcess;
    let agent: HostAgent;
    let port: number;
    let conf: string;
    let confDir: string;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'ferry-nginx-'));
      confDir = join(dir, 'ferry.d');
      await mkdir(confDir);
      await mkdir(join(dir, 'tmp'));
      conf = join(dir, 'nginx.conf');
      const root = process.getuid?.() === 0;
      await writeFile(
        conf,
        `${root ? 'user root;\n' : ''}worker_processes 1;\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\n` +
          `events { worker_connections 128; }\nhttp {\n  access_log off;\n  client_body_temp_path ${dir}/tmp/body;\n  proxy_temp_path ${dir}/tmp/proxy;\n` +
          `  fastcgi_temp_path ${dir}/tmp/f;\n  uwsgi_temp_path ${dir}/tmp/u;\n  scgi_temp_path ${dir}/tmp/s;\n  include ${confDir}/*.conf;\n}\n`,
      );
      nginx = spawn(nginxBin!, ['-c', conf, '-e', join(dir, 'error.log')], { stdio: 'ignore' });
      assert.ok(
        await waitFor(
          () =>
            stat(join(dir, 'nginx.pid')).then(
              () => true,
              () => false,
            ),
          10_000,
        ),
        'nginx started',
      );
      port = await freePort(IP);
      agent = new HostAgent({
        id: 'edge',
        dataDir: join(dir, 'data'),
        sharedIps: [IP],
        httpPort: port,
        addresses: new LoopbackAddresses(),
        web: {
          kind: 'nginx',
          confDir,
          command: [nginxBin!, '-c', conf, '-e', join(dir, 'error.log')],
          appAddress: '127.0.62.2',
          appPort: await freePort('127.0.62.2'),
          proxyWith: 'nginx',
        },
      });
      await agent.start();
    });

    after(async () => {
      await agent?.stop();
      if (nginx && nginx.exitCode === null) {
        const exited = new Promise((r) => nginx.once('exit', r));
        nginx.kill('SIGQUIT');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    });

    test('a site gets a checked server block; the app answers behind nginx; nginx counts by client address', async () => {
      await agent.addSite('shop.example', 'serve');
      const text = await readFile(join(confDir, 'site-shop.example.conf'), 'utf8');
      assert.match(text, new RegExp(`listen ${IP.replace(/\./g, '\\.')}:${port};`));
      assert.match(text, /server_name shop\.example;/);
      assert.match(text, /proxy_pass http:\/\/127\.0\.62\.2:\d+;/);
      const page = await send(port, 'shop.example');
      assert.equal(page.status, 200);
      assert.equal(page.servedBy, 'edge');
      const order = await send(port, 'shop.example', 'POST', '/orders', JSON.stringify({ key: 'a1' }));
      assert.equal(order.status, 201);
      assert.ok(
        await waitFor(async () => (await agent.siteStats('shop.example')).requests >= 2, 5000),
        'nginx reported both requests',
      );
      const stats = await agent.siteStats('shop.example');
      assert.equal(stats.writes, 1);
      assert.deepEqual(
        Object.keys(stats.bySource),
        [CLIENT],
        'sources are clients as nginx saw them, not nginx as the app saw it',
      );
    });

    test('repeating a site operation does not rewrite or reload', async () => {
      const file = join(confDir, 'site-shop.example.conf');
      const before = (await stat(file)).mtimeMs;
      const reloads = () =>
        readFile(join(dir, 'error.log'), 'utf8').then(
          (t) => (t.match(/signal process started/g) ?? []).length,
          () => 0,
        );
      const r0 = await reloads();
      await agent.addSite('shop.example', 'serve');
      await agent.setSiteMode('shop.example', 'readonly');
      await agent.setSiteMode('shop.example', 'readonly');
      assert.equal((await stat(file)).mtimeMs, before);
      assert.equal(await reloads(), r0);
      assert.equal(
        (await send(port, 'shop.example', 'POST', '/orders', JSON.stringify({ key: 'a2' }))).status,
        503,
        'readonly in the app',
      );
    });

    test('proxyWith nginx: the proxy mode turns the block into a proxy_pass to the target', async () => {
      const http = await import('node:http');
      const upstream = http.createServer((req, res) =>
        res.writeHead(200, { 'x-served-by': 'new-home' }).end(`host=${req.headers.host}`),
      );
      await new Promise<void>((r) => upstream.listen(0, '127.0.62.3', () => r()));
      const upPort = (upstream.address() as AddressInfo).port;
      try {
        await agent.setSiteMode('shop.example', { proxy: { address: '127.0.62.3', port: upPort } });
        assert.match(
          await readFile(join(confDir, 'site-shop.example.conf'), 'utf8'),
          new RegExp(`proxy_pass http://127\\.0\\.62\\.3:${upPort};`),
        );
        const res = await send(port, 'shop.example');
        assert.equal(res.servedBy, 'new-home');
        assert.equal(res.body, 'host=shop.example', 'the Host header is kept');
      } finally {
        upstream.closeAllConnections();
        await new Promise<void>((r) => upstream.close(() => r()));
      }
    });

    test("a config nginx -t refuses is rolled back, with nginx's reason", async () => {
      await writeFile(join(confDir, 'zz-broken.conf'), 'this is not nginx;\n');
      try {
        await assert.rejects(
          agent.addSite('blog.example', 'serve'),
          (err: Error & { code?: string }) =>
            err.code === 'NGINX_CONFIG_INVALID' && /unknown directive "this"/.test(err.message),
        );
        await assert.rejects(
          stat(join(confDir, 'site-blog.example.conf')),
          'the new block was removed again',
        );
      } finally {
        await rm(join(confDir, 'zz-broken.conf'));
      }
      await agent.addSite('blog.example', 'serve');
      // Seen once under load: a 502 on the first request right after putSite returned (nginx could
      // not reach the app yet). Give it a bounded moment, and fail with the last answer if it stays.
      let status = 0;
      const served = await waitFor(
        async () => (status = (await send(port, 'blog.example')).status) === 200,
        5000,
        100,
      );
      assert.ok(served, `blog.example answered ${status} after the fixed config was loaded`);
    });

    test('removing a site removes its block (nginx drops it at its next reload); repeating is a no-op', async () => {
      await agent.removeSite('blog.example');
      await agent.removeSite('blog.example');
      await assert.rejects(stat(join(confDir, 'site-blog.example.conf')));
      // nginx still has the block until its next reload, so the request reaches the app, which
      // answers 421. A 502 (nginx could not reach the app for a moment) was seen once under CI
      // load: retry a bounded moment on 502 only, never accept a 200, and fail with nginx's log.
      const answers: number[] = [];
      await waitFor(
        async () => {
          const status = (await send(port, 'blog.example')).status;
          answers.push(status);
          return status !== 502;
        },
        5000,
        100,
      );
      const errorLog = await readFile(join(dir, 'error.log'), 'utf8').catch(() => '');
      assert.equal(
        answers.at(-1),
        421,
        `the app no longer serves it (answers ${answers.join(', ')}; nginx error.log: ${errorLog.slice(-1500)})`,
      );
      execFileSync(nginxBin!, ['-c', conf, '-e', join(dir, 'error.log'), '-t'], { stdio: 'ignore' });
    });
  },
);

describe('agent API over TLS', { skip: opensslBin ? false : 'openssl is not installed' }, () => {
  test('the driver trusts the agent through the given CA; without it the call fails', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-tls-'));
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    selfSignedCert({
      keyFile: key,
      certFile: cert,
      cn: 'agent',
      names: ['127.0.61.9'],
      openssl: opensslBin!,
    });
    const agent = new HostAgent({
      id: 'tls',
      dataDir: join(dir, 'data'),
      sharedIps: ['127.0.61.9'],
      httpPort: 0,
      addresses: new LoopbackAddresses(),
      web: { kind: 'builtin' },
    });
    await agent.start();
    const app = buildAgentServer(agent, { token: TOKEN, tls: { certFile: cert, keyFile: key } });
    await app.listen({ host: '127.0.61.9', port: 0 });
    const url = `https://127.0.61.9:${(app.server.address() as AddressInfo).port}`;
    const good = new HttpHostDriver({ id: 'tls', url, token: TOKEN, ca: await readFile(cert), attempts: 1 });
    const untrusted = new HttpHostDriver({ id: 'tls', url, token: TOKEN, attempts: 1 });
    const wrongToken = new HttpHostDriver({
      id: 'tls',
      url,
      token: TOKEN + 'x',
      ca: await readFile(cert),
      attempts: 1,
    });
    try {
      assert.equal((await good.info()).id, 'tls');
      await assert.rejects(untrusted.info(), /self-signed|certificate/i);
      await assert.rejects(
        wrongToken.info(),
        (err: Error & { code?: string }) => err.code === 'UNAUTHORIZED',
      );
    } finally {
      good.close();
      untrusted.close();
      wrongToken.close();
      await app.close();
      await agent.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
