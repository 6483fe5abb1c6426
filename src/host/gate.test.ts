/**
 * Gated sites: `SiteServer` in front of a site's own backend (real node HTTP and HTTPS servers),
 * proxying to a target over TLS with SNI, and behind a real nginx front on loopback
 * (127.0.77.0/24). The nginx part is skipped, with the reason, when nginx is not installed; the
 * TLS parts need openssl.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import {
  createServer as createHttpServer,
  request as httpRequest,
  Agent as HttpAgent,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TLSSocket } from 'node:tls';
import { findBinary } from '../../test/e2e/helpers.js';
import { freePort } from '../../test/ports.js';
import { isFerryError } from '../common/errors.js';
import { sleep, waitFor } from '../common/time.js';
import { SiteServer, type SiteUpstream } from './index.js';
import { selfSignedCert } from '../../test/certs.js';

/** The nginx front. */
const FRONT = '127.0.77.1';
/** The gate (SiteServer). */
const GATE = '127.0.77.2';
/** The site's own backend (plain and TLS). */
const BACKEND = '127.0.77.3';
/** The target server (plain and TLS). */
const TARGET = '127.0.77.4';
/** Where the test's clients connect from. */
const CLIENT = '127.0.77.9';
const SITE = 'shop.example';
const MB = 1024 * 1024;

const opensslBin = findBinary('openssl');
const nginxBin = findBinary('nginx');

let dir = '';
let cert = '';
let key = '';
/** A certificate for a name the site does not have (a target that is not the site's). */
let otherCert = '';
let otherKey = '';

function makeCert(name: string, names: string[]): { cert: string; key: string } {
  const c = join(dir, `${name}.crt`);
  const k = join(dir, `${name}.key`);
  selfSignedCert({ keyFile: k, certFile: c, cn: names[0]!, names, rsa: true, openssl: opensslBin! });
  return { cert: c, key: k };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-gate-'));
  if (opensslBin) {
    ({ cert, key } = makeCert('site', [SITE, `www.${SITE}`]));
    ({ cert: otherCert, key: otherKey } = makeCert('other', ['elsewhere.example']));
  }
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** What a backend or target saw of one request. */
interface Seen {
  server: string;
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  servername: string | null;
  bytes: number;
  sha256: string;
}

/** A real HTTP or HTTPS server standing for a site's backend or the target; records every request. */
interface Recorder {
  name: string;
  port: number;
  seen: Seen[];
  /** Bytes of request bodies received so far (also of requests still under way). */
  received: number;
}

async function recorder(
  t: TestContext | null,
  name: string,
  address: string,
  tls?: { cert: string; key: string },
): Promise<Recorder> {
  const r: Recorder = { name, port: 0, seen: [], received: 0 };
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
      r.received += c.length;
      hash.update(c);
    });
    req.on('end', () => {
      const seen: Seen = {
        server: name,
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        servername: tls ? ((req.socket as TLSSocket).servername as string | false) || null : null,
        bytes,
        sha256: hash.digest('hex'),
      };
      r.seen.push(seen);
      const body = JSON.stringify(seen);
      res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': name });
      res.end(body);
    });
  };
  const server: Server = tls
    ? createHttpsServer({ cert: await readFile(tls.cert), key: await readFile(tls.key) }, handler)
    : createHttpServer(handler);
  server.keepAliveTimeout = 10_000;
  await new Promise<void>((resolve) => server.listen(0, address, () => resolve()));
  r.port = (server.address() as AddressInfo).port;
  const close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  if (t) t.after(close);
  else cleanups.push(close);
  return r;
}

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request, plain or over TLS (trusting the test certificate), from CLIENT. */
function send(o: {
  port: number;
  address?: string;
  tls?: boolean;
  host?: string;
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  agent?: HttpAgent | false;
  /** Writes the body itself (e.g. in two halves), then ends the request. */
  write?: (req: import('node:http').ClientRequest) => Promise<void>;
}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const host = o.host ?? SITE;
    const common = {
      host: o.address ?? GATE,
      port: o.port,
      method: o.method ?? 'GET',
      path: o.path ?? '/',
      headers: { host, ...(o.headers ?? {}) },
      agent: o.agent ?? false,
      localAddress: CLIENT,
      timeout: 20_000,
    };
    const onRes = (res: IncomingMessage) => {
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
    };
    const req = o.tls
      ? httpsRequest({ ...common, servername: host, ca: readCa() }, onRes)
      : httpRequest(common, onRes);
    req.on('timeout', () => req.destroy(new Error('test request timed out')));
    req.on('error', reject);
    if (o.write) o.write(req).then(() => req.end(), reject);
    else req.end(o.body);
  });
}

let caText: string | undefined;
function readCa(): string {
  caText ??= readFileSync(cert, 'utf8');
  return caText;
}

function seenOf(reply: Reply): Seen {
  assert.equal(reply.status, 200, `expected 200, got ${reply.status}: ${reply.body}`);
  return JSON.parse(reply.body) as Seen;
}

async function startGate(t: TestContext, extra: { maxHoldMs?: number } = {}): Promise<SiteServer> {
  const gate = new SiteServer({
    name: 'gate',
    addresses: [GATE],
    port: 0,
    dataDir: join(dir, `gate-${Math.random().toString(36).slice(2)}`),
    ...extra,
  });
  t.after(() => gate.stop());
  await gate.start();
  return gate;
}

function sha(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

describe('gated site', { skip: opensslBin ? false : 'openssl is not installed' }, () => {
  test('serve forwards to the backend for the scheme a loopback front reports, stripping its headers', async (t) => {
    const plain = await recorder(t, 'backend-http', BACKEND);
    const secure = await recorder(t, 'backend-https', BACKEND, { cert, key });
    const gate = await startGate(t);
    const upstream: SiteUpstream = {
      http: { address: BACKEND, port: plain.port },
      https: { address: BACKEND, port: secure.port },
      aliases: [`www.${SITE}`],
    };
    await gate.addSite(SITE, 'serve', { upstream });
    assert.deepEqual(gate.upstream(SITE), upstream);
    assert.deepEqual(gate.sites(), [SITE]);

    // Plain: the client address the front claims is what the backend and the stats get.
    const r1 = await send({
      port: gate.port,
      path: '/page?x=1',
      headers: { 'x-ferry-client': '198.51.100.7', 'x-ferry-scheme': 'http', 'x-forwarded-for': '10.1.1.1' },
    });
    assert.equal(r1.headers['x-served-by'], 'backend-http', 'the backend answered');
    const s1 = seenOf(r1);
    assert.equal(s1.url, '/page?x=1');
    assert.equal(s1.headers.host, SITE);
    assert.equal(s1.headers['x-ferry-client'], undefined);
    assert.equal(s1.headers['x-ferry-scheme'], undefined);
    assert.equal(s1.headers['x-forwarded-for'], '10.1.1.1, 198.51.100.7');

    // Came over TLS at the front: TLS to the https backend, SNI = the Host name (any alias).
    const s2 = seenOf(
      await send({
        port: gate.port,
        host: `WWW.${SITE}:443`,
        headers: { 'x-ferry-client': '2001:db8::5', 'x-ferry-scheme': 'HTTPS' },
      }),
    );
    assert.equal(s2.server, 'backend-https');
    assert.equal(s2.servername, `www.${SITE}`);
    assert.equal(s2.headers['x-ferry-scheme'], undefined);
    assert.equal(plain.seen.length, 1);
    assert.equal(secure.seen.length, 1);

    // A client header that is not an IP address is not believed: the TCP peer counts.
    seenOf(await send({ port: gate.port, headers: { 'x-ferry-client': 'evil; rm -rf' } }));
    const stats = gate.siteStats(SITE);
    assert.deepEqual(Object.keys(stats.bySource).sort(), ['127.0.77.9', '198.51.100.7', '2001:db8::5']);
    assert.equal(stats.requests, 3);
    assert.equal(stats.inFlight, 0);

    // readonly: reads go through, writes are refused as the built-in readonly refuses them.
    await gate.addSite(SITE, 'readonly');
    seenOf(await send({ port: gate.port, method: 'GET' }));
    const refused = await send({ port: gate.port, method: 'POST', body: 'x=1' });
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['retry-after'], '1');
    assert.match(refused.body, /read-only/);
    assert.ok(
      plain.seen.every((s) => s.method === 'GET'),
      'the refused write never reached the backend',
    );

    // hold: queued at the gate, released to the backend in the new mode.
    gate.setMode(SITE, 'hold');
    const held = send({ port: gate.port, method: 'POST', body: 'held=1' });
    assert.ok(await waitFor(() => gate.siteStats(SITE).held === 1, 5000), 'the request is held');
    const before = plain.seen.length;
    await sleep(100);
    assert.equal(plain.seen.length, before, 'nothing reached the backend while held');
    gate.setMode(SITE, 'serve');
    const s3 = seenOf(await held);
    assert.equal(s3.method, 'POST');
    assert.equal(s3.bytes, 6);
    assert.equal(await gate.waitIdle(SITE, 1000), true);
  });

  test('a site without a backend for the scheme answers 502; bad upstreams are refused', async (t) => {
    const secure = await recorder(t, 'backend-https', BACKEND, { cert, key });
    const gate = await startGate(t);
    await gate.addSite(SITE, 'serve', { upstream: { https: { address: BACKEND, port: secure.port } } });
    const r = await send({ port: gate.port });
    assert.equal(r.status, 502);
    assert.match(r.body, /no backend for http requests/);
    assert.equal(
      seenOf(await send({ port: gate.port, headers: { 'x-ferry-scheme': 'https' } })).server,
      'backend-https',
    );

    const bad: Array<[unknown, RegExp]> = [
      [{}, /needs a backend/],
      [{ http: { address: 'localhost', port: 80 } }, /upstream\.http must be/],
      [{ http: { address: BACKEND, port: 0 } }, /upstream\.http must be/],
      [{ http: { address: BACKEND, port: 80 }, tlsPort: 70000 }, /tlsPort/],
      [{ http: { address: BACKEND, port: 80 }, ca: 'not pem' }, /PEM/],
      [
        {
          http: { address: BACKEND, port: 80 },
          ca: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
        },
        /cannot be read/,
      ],
    ];
    for (const [upstream, message] of bad) {
      await assert.rejects(
        gate.addSite('bad.example', 'serve', { upstream: upstream as SiteUpstream }),
        (e: unknown) => isFerryError(e) && e.code === 'SITE_UPSTREAM_INVALID' && message.test(e.message),
        `refused: ${JSON.stringify(upstream)}`,
      );
    }
    assert.equal(gate.hasSite('bad.example'), false);

    // Other names: exact, wildcard (longest first) and nginx's `.suffix`; no name belongs to two sites.
    await gate.addSite('wild.example', 'serve', {
      upstream: {
        https: { address: BACKEND, port: secure.port },
        aliases: ['*.wild.example', '.dot.example', 'Alias.Example.'],
      },
    });
    assert.deepEqual(gate.upstream('wild.example')?.aliases, [
      '*.wild.example',
      '.dot.example',
      'alias.example',
    ]);
    await gate.addSite('deep.wild.example', 'serve', {
      upstream: { https: { address: BACKEND, port: secure.port }, aliases: ['*.deep.wild.example'] },
    });
    const routed = async (host: string) => {
      const before = gate.sites().map((d) => [d, gate.siteStats(d).requests] as const);
      await send({ port: gate.port, host, headers: { 'x-ferry-scheme': 'https' } });
      const after = gate.sites().map((d) => [d, gate.siteStats(d).requests] as const);
      return after.filter(([, n], i) => n !== before[i]![1]).map(([d]) => d);
    };
    assert.deepEqual(await routed('a.b.wild.example'), ['wild.example']);
    assert.deepEqual(await routed('x.deep.wild.example'), ['deep.wild.example']);
    assert.deepEqual(await routed('dot.example'), ['wild.example']);
    assert.deepEqual(await routed('w.dot.example'), ['wild.example']);
    assert.deepEqual(await routed('alias.example'), ['wild.example']);
    assert.equal((await send({ port: gate.port, host: 'wild.example.org' })).status, 421);
    await assert.rejects(
      gate.addSite('third.example', 'serve', {
        upstream: { http: { address: BACKEND, port: 80 }, aliases: ['alias.example'] },
      }),
      (e: unknown) => isFerryError(e) && e.code === 'SITE_NAME_TAKEN' && /wild\.example/.test(e.message),
    );
    await assert.rejects(
      gate.addSite('alias.example'),
      (e: unknown) => isFerryError(e) && e.code === 'SITE_NAME_TAKEN',
    );
    await assert.rejects(
      gate.addSite('fourth.example', 'serve', {
        upstream: { http: { address: BACKEND, port: 80 }, aliases: ['*'] },
      }),
      (e: unknown) => isFerryError(e) && e.code === 'SITE_UPSTREAM_INVALID',
    );
    await gate.removeSite('wild.example');
    assert.equal(
      (await send({ port: gate.port, host: 'alias.example' })).status,
      421,
      'its names went with it',
    );
    // A built-in site beside the gated one keeps its own app.
    await gate.addSite('app.example', 'serve');
    assert.equal(gate.upstream('app.example'), undefined);
    const home = await send({ port: gate.port, host: 'app.example' });
    assert.equal(home.status, 200);
    assert.equal(home.headers['x-served-by'], 'gate');
  });

  test('proxy: plain to the target, TLS with SNI = Host and a verified certificate for TLS requests', async (t) => {
    const plain = await recorder(t, 'backend-http', BACKEND);
    const targetHttp = await recorder(t, 'target-http', TARGET);
    const targetHttps = await recorder(t, 'target-https', TARGET, { cert, key });
    const wrongName = await recorder(t, 'target-wrong-name', TARGET, { cert: otherCert, key: otherKey });
    const gate = await startGate(t);
    const ca = await readFile(cert, 'utf8');
    const upstream: SiteUpstream = {
      http: { address: BACKEND, port: plain.port },
      tlsPort: targetHttps.port,
      ca,
      aliases: [`*.${SITE}`],
    };
    await gate.addSite(SITE, { proxy: { address: TARGET, port: targetHttp.port } }, { upstream });

    const p = seenOf(await send({ port: gate.port, headers: { 'x-ferry-client': '198.51.100.8' } }));
    assert.equal(p.server, 'target-http');
    assert.equal(p.headers['x-forwarded-for'], '198.51.100.8');
    const s = seenOf(
      await send({ port: gate.port, host: `www.${SITE}`, headers: { 'x-ferry-scheme': 'https' } }),
    );
    assert.equal(s.server, 'target-https');
    assert.equal(s.servername, `www.${SITE}`);
    assert.equal(s.headers['x-ferry-scheme'], undefined);
    assert.equal(plain.seen.length, 0, 'the backend saw nothing in proxy mode');

    // Without the test CA the target's certificate is not trusted: refused, nothing reaches it.
    await gate.addSite(
      SITE,
      { proxy: { address: TARGET, port: targetHttp.port } },
      {
        upstream: { http: upstream.http!, tlsPort: targetHttps.port },
      },
    );
    assert.equal(
      (await send({ port: gate.port, host: `www.${SITE}` })).status,
      421,
      'its aliases went with it',
    );
    const untrusted = await send({ port: gate.port, headers: { 'x-ferry-scheme': 'https' } });
    assert.equal(untrusted.status, 502);
    assert.match(untrusted.body, /self-signed|unable to verify|certificate/i);
    // A target whose certificate is trusted but for other names: refused as well.
    const both = ca + (await readFile(otherCert, 'utf8'));
    await gate.addSite(SITE, 'serve', { upstream: { ...upstream, ca: both, tlsPort: wrongName.port } });
    gate.setMode(SITE, { proxy: { address: TARGET, port: targetHttp.port } });
    const mismatch = await send({ port: gate.port, headers: { 'x-ferry-scheme': 'https' } });
    assert.equal(mismatch.status, 502);
    assert.match(mismatch.body, /altnames|does not match|Hostname/i);
    assert.equal(targetHttps.seen.length, 1);
    assert.equal(wrongName.seen.length, 0);
  });

  test('request bodies stream through the gate to the backend and to the target (1 MB)', async (t) => {
    const plain = await recorder(t, 'backend-http', BACKEND);
    const targetHttp = await recorder(t, 'target-http', TARGET);
    const targetHttps = await recorder(t, 'target-https', TARGET, { cert, key });
    const gate = await startGate(t);
    const upstream: SiteUpstream = {
      http: { address: BACKEND, port: plain.port },
      tlsPort: targetHttps.port,
      ca: await readFile(cert, 'utf8'),
    };
    await gate.addSite(SITE, 'serve', { upstream });
    const body = Buffer.alloc(MB);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7919) % 251;

    /** Sends the first half, waits until the far end has bytes of it, then the rest. */
    const halves = (far: Recorder) => async (req: import('node:http').ClientRequest) => {
      const start = far.received;
      req.write(body.subarray(0, MB / 2));
      assert.ok(
        await waitFor(() => far.received > start, 10_000),
        `${far.name} received part of the body before the client sent the rest`,
      );
      req.write(body.subarray(MB / 2));
    };
    const post = (headers: Record<string, string>, far: Recorder) =>
      send({
        port: gate.port,
        method: 'POST',
        path: '/upload',
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(MB), ...headers },
        write: halves(far),
      });

    const s1 = seenOf(await post({}, plain));
    assert.deepEqual([s1.server, s1.bytes, s1.sha256], ['backend-http', MB, sha(body)]);

    gate.setMode(SITE, { proxy: { address: TARGET, port: targetHttp.port } });
    const s2 = seenOf(await post({}, targetHttp));
    assert.deepEqual([s2.server, s2.bytes, s2.sha256], ['target-http', MB, sha(body)]);
    const s3 = seenOf(await post({ 'x-ferry-scheme': 'https' }, targetHttps));
    assert.deepEqual([s3.server, s3.bytes, s3.sha256, s3.servername], ['target-https', MB, sha(body), SITE]);
  });
});

describe(
  'gated site behind a real nginx front',
  {
    skip: !opensslBin
      ? 'openssl is not installed'
      : !nginxBin
        ? 'nginx is not installed (apt-get install nginx-light)'
        : false,
  },
  () => {
    let nginx: ChildProcess | undefined;
    let front: { http: number; https: number };
    let gatePort: number;
    let gate: SiteServer;
    let backendHttp: Recorder;
    let backendHttps: Recorder;
    let targetHttp: Recorder;
    let targetHttps: Recorder;
    let upstream: SiteUpstream;

    before(async () => {
      const ndir = join(dir, 'nginx');
      await mkdir(join(ndir, 'tmp'), { recursive: true });
      backendHttp = await recorder(null, 'backend-http', BACKEND);
      backendHttps = await recorder(null, 'backend-https', BACKEND, { cert, key });
      targetHttp = await recorder(null, 'target-http', TARGET);
      targetHttps = await recorder(null, 'target-https', TARGET, { cert, key });
      gate = new SiteServer({ name: 'gate', addresses: [GATE], port: 0, dataDir: join(dir, 'gate-nginx') });
      cleanups.push(() => gate.stop());
      await gate.start();
      gatePort = gate.port;
      upstream = {
        http: { address: BACKEND, port: backendHttp.port },
        https: { address: BACKEND, port: backendHttps.port },
        tlsPort: targetHttps.port,
        ca: await readFile(cert, 'utf8'),
        aliases: [`www.${SITE}`],
      };
      await gate.addSite(SITE, 'serve', { upstream });
      front = { http: await freePort(FRONT), https: await freePort(FRONT) };
      const conf = join(ndir, 'nginx.conf');
      const root = process.getuid?.() === 0;
      await writeFile(
        conf,
        [
          root ? 'user root;' : '',
          'worker_processes 1;',
          'daemon off;',
          `pid ${ndir}/nginx.pid;`,
          `error_log ${ndir}/error.log warn;`,
          'events { worker_connections 256; }',
          'http {',
          '  access_log off;',
          `  client_body_temp_path ${ndir}/tmp/body;`,
          `  proxy_temp_path ${ndir}/tmp/proxy;`,
          `  fastcgi_temp_path ${ndir}/tmp/f;`,
          `  uwsgi_temp_path ${ndir}/tmp/u;`,
          `  scgi_temp_path ${ndir}/tmp/s;`,
          `  upstream ferry_gate { server ${GATE}:${gatePort}; keepalive 16; }`,
          '  server {',
          `    listen ${FRONT}:${front.http};`,
          `    listen ${FRONT}:${front.https} ssl;`,
          `    server_name ${SITE} www.${SITE};`,
          `    ssl_certificate ${cert};`,
          `    ssl_certificate_key ${key};`,
          '    client_max_body_size 0;',
          '    proxy_request_buffering off;',
          '    proxy_buffering off;',
          '    proxy_read_timeout 60s;',
          '    location / {',
          '      proxy_pass http://ferry_gate;',
          '      proxy_http_version 1.1;',
          '      proxy_set_header Connection "";',
          '      proxy_set_header Host $host;',
          '      proxy_set_header X-Ferry-Client $remote_addr;',
          '      proxy_set_header X-Ferry-Scheme $scheme;',
          '    }',
          '  }',
          '}',
          '',
        ].join('\n'),
      );
      const n = spawn(nginxBin!, ['-c', conf, '-e', join(ndir, 'error.log')], { stdio: 'ignore' });
      nginx = n;
      cleanups.push(async () => {
        if (n.exitCode === null && n.signalCode === null) {
          const exited = new Promise((resolve) => n.once('exit', resolve));
          n.kill('SIGTERM');
          await exited;
        }
      });
      const up = await waitFor(
        () =>
          stat(join(ndir, 'nginx.pid')).then(
            () => true,
            () => false,
          ),
        10_000,
      );
      assert.ok(up, `nginx started: ${await readFile(join(ndir, 'error.log'), 'utf8').catch(() => '')}`);
      assert.ok(
        await waitFor(
          () =>
            send({ address: FRONT, port: front.http }).then(
              (r) => r.status === 200,
              () => false,
            ),
          10_000,
        ),
        'the front answers',
      );
    });

    test('the front reaches the backend by the scheme it was reached by; the gate counts the real client', async () => {
      assert.ok(nginx);
      gate.setMode(SITE, 'serve');
      const a = seenOf(await send({ address: FRONT, port: front.http }));
      assert.equal(a.server, 'backend-http');
      const b = seenOf(await send({ address: FRONT, port: front.https, tls: true, host: `www.${SITE}` }));
      assert.equal(b.server, 'backend-https');
      assert.equal(b.servername, `www.${SITE}`);
      for (const s of [a, b]) {
        assert.equal(s.headers['x-ferry-client'], undefined);
        assert.equal(s.headers['x-ferry-scheme'], undefined);
        assert.equal(s.headers['x-forwarded-for'], CLIENT);
      }
      // nginx connects from another loopback address; the gate counts the client it names.
      assert.deepEqual(Object.keys(gate.siteStats(SITE).bySource), [CLIENT]);
    });

    test('1 MB uploads over TLS through the front reach the backend, then the target, intact', async () => {
      const body = Buffer.alloc(MB, 'u');
      const post = () =>
        send({
          address: FRONT,
          port: front.https,
          tls: true,
          method: 'POST',
          path: '/upload',
          headers: { 'content-type': 'application/octet-stream' },
          body,
        });
      gate.setMode(SITE, 'serve');
      const s1 = seenOf(await post());
      assert.deepEqual([s1.server, s1.bytes, s1.sha256], ['backend-https', MB, sha(body)]);
      gate.setMode(SITE, { proxy: { address: TARGET, port: targetHttp.port } });
      const s2 = seenOf(await post());
      assert.deepEqual(
        [s2.server, s2.bytes, s2.sha256, s2.servername],
        ['target-https', MB, sha(body), SITE],
      );
      gate.setMode(SITE, 'serve');
    });

    test('held requests over TLS are released to the target over TLS with SNI', async () => {
      gate.setMode(SITE, 'serve');
      gate.setMode(SITE, 'hold');
      const n = targetHttps.seen.length;
      const held = [0, 1, 2].map((i) =>
        send({
          address: FRONT,
          port: front.https,
          tls: true,
          method: 'POST',
          path: `/held/${i}`,
          body: `n=${i}`,
        }),
      );
      assert.ok(await waitFor(() => gate.siteStats(SITE).held === 3, 10_000), 'three requests held');
      gate.setMode(SITE, { proxy: { address: TARGET, port: targetHttp.port } });
      const seen = (await Promise.all(held)).map(seenOf);
      assert.deepEqual(
        seen.map((s) => [s.server, s.servername, s.url]).sort(),
        [0, 1, 2].map((i) => ['target-https', SITE, `/held/${i}`]),
      );
      assert.equal(targetHttps.seen.length, n + 3);
      gate.setMode(SITE, 'serve');
    });

    test(
      'no request is lost across serve → hold → proxy under keep-alive load',
      { timeout: 60_000 },
      async () => {
        gate.setMode(SITE, 'serve');
        const clients = 3;
        const perClient = 40;
        let answered = 0;
        const failures: string[] = [];
        const loop = async (c: number) => {
          const tls = c !== 0; // one client in plain HTTP, the others over TLS
          const agent = tls
            ? new HttpsAgent({ keepAlive: true, maxSockets: 1 })
            : new HttpAgent({ keepAlive: true, maxSockets: 1 });
          try {
            for (let i = 0; i < perClient; i++) {
              const r = await send({
                address: FRONT,
                port: tls ? front.https : front.http,
                tls,
                agent,
                method: 'POST',
                path: `/k/${c}-${i}`,
                body: `c=${c}&i=${i}`,
              }).catch((err: Error) => ({ status: 0, headers: {}, body: err.message }));
              if (r.status !== 200) failures.push(`${c}-${i}: ${r.status} ${r.body}`);
              answered += 1;
            }
          } finally {
            agent.destroy();
          }
        };
        const keys = (rs: Recorder[]) =>
          rs.flatMap((r) => r.seen.map((s) => s.url)).filter((u) => u.startsWith('/k/'));
        const running = Promise.all([...Array(clients).keys()].map(loop));
        assert.ok(await waitFor(() => answered >= 30, 20_000), 'load runs in serve mode');
        gate.setMode(SITE, 'hold');
        assert.ok(await waitFor(() => gate.siteStats(SITE).held === clients, 10_000), 'every client is held');
        gate.setMode(SITE, { proxy: { address: TARGET, port: targetHttp.port } });
        await running;
        gate.setMode(SITE, 'serve');
        assert.deepEqual(failures, []);
        const atBackend = keys([backendHttp, backendHttps]);
        const atTarget = keys([targetHttp, targetHttps]);
        assert.ok(
          atBackend.length >= 30 && atTarget.length >= clients,
          `${atBackend.length} / ${atTarget.length}`,
        );
        const all = [...atBackend, ...atTarget].sort();
        const expected = [...Array(clients).keys()]
          .flatMap((c) => [...Array(perClient).keys()].map((i) => `/k/${c}-${i}`))
          .sort();
        assert.deepEqual(all, expected, 'every request reached the backend or the target exactly once');
      },
    );
  },
);

/** Why the non-loopback peer test cannot run here, or false. */
function netnsSkip(): string | false {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'not root: creating a network namespace needs root';
  if (!findBinary('ip')) return 'iproute2 is not installed (apt-get install iproute2)';
  return false;
}

test(
  'front headers from a non-loopback peer are ignored and stripped; from loopback they are believed',
  { skip: netnsSkip(), timeout: 60_000 },
  async (t) => {
    // A namespace of its own, where 192.0.2.10 (not loopback) sits on `lo`: the gate and its
    // clients run there, so nothing is added to this host's own network.
    const ns = `ferry-gate-${process.pid}`;
    const peer = '192.0.2.10';
    const ip = findBinary('ip')!;
    execFileSync(ip, ['netns', 'add', ns]);
    t.after(() => execFileSync(ip, ['netns', 'del', ns]));
    execFileSync(ip, ['-n', ns, 'link', 'set', 'lo', 'up']);
    execFileSync(ip, ['-n', ns, 'addr', 'add', `${peer}/32`, 'dev', 'lo']);
    const child = spawn(
      ip,
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        '--import',
        'tsx',
        fileURLToPath(new URL('./fixtures/gate-peer.ts', import.meta.url)),
        peer,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    t.after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0, `the fixture ran: ${err}`);
    const r = JSON.parse(out.trim()) as {
      untrusted: { status: number };
      untrustedSaw: IncomingHttpHeaders;
      trusted: { status: number; body: string };
      trustedPlain: { status: number };
      trustedPlainSaw: IncomingHttpHeaders;
      backendRequests: number;
      sources: Record<string, { requests: number }>;
    };
    // Not believed: the plain backend answered, which saw the peer, not the claimed client.
    assert.equal(r.untrusted.status, 200);
    assert.equal(r.untrustedSaw['x-forwarded-for'], peer);
    assert.equal(r.untrustedSaw['x-ferry-client'], undefined);
    assert.equal(r.untrustedSaw['x-ferry-scheme'], undefined);
    // Believed: "came over TLS", and this site has no TLS backend.
    assert.equal(r.trusted.status, 502);
    assert.match(r.trusted.body, /no backend for https requests/);
    assert.equal(r.trustedPlain.status, 200);
    assert.equal(r.trustedPlainSaw['x-forwarded-for'], '203.0.113.9');
    assert.equal(r.trustedPlainSaw['x-ferry-client'], undefined);
    assert.equal(r.backendRequests, 2);
    assert.deepEqual(Object.fromEntries(Object.entries(r.sources).map(([k, v]) => [k, v.requests])), {
      [peer]: 1,
      '203.0.113.9': 2,
    });
  },
);
