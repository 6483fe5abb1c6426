/**
 * `GET /v1/servers/{id}/web-sites` and `ferry sites SERVER` through a real controller and API, to
 * a real agent over its HTTPS-less test listener whose `--web-config` reads a real `nginx -T` of a
 * config this test writes; and the plan-time refusal of a web site the origin cannot move, which
 * answers 409 `SITE_NOT_MOVABLE` and changes nothing. Skipped, with the reason, without nginx.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { findBinary } from '../../test/e2e/helpers.js';
import { HostAgent, HttpHostDriver, LoopbackAddresses, buildAgentServer } from '../agent/index.js';
import type { WebSitesReport } from '../agent/index.js';
import { generateToken, startApi, type StartedApi } from '../api/index.js';
import { Controller } from '../controller/index.js';
import { DnsServer, parseZone } from '../dns/index.js';
import { EmbeddedDnsProvider, Journal } from '../migration/index.js';

const nginxBin = findBinary('nginx');
const run = promisify(execFile);
const IP = '127.0.64.1';
const TARGET_IP = '127.0.64.2';

describe('ferry sites and web-site planning', { skip: nginxBin ? false : 'nginx is not installed' }, () => {
  const AGENT_TOKEN = 'sites-test-agent-token-0123456789';
  const READER = generateToken();
  const OPERATOR = generateToken();
  let dir = '';
  let conf = '';
  let www = '';
  let dns: DnsServer;
  let journal: Journal;
  let ctl: Controller;
  let api: StartedApi;
  const agents: FastifyInstance[] = [];
  const drivers: HttpHostDriver[] = [];

  /** An agent on `ip` behind its HTTP API, reading `conf` with nginx -T when given. */
  async function agent(id: string, ip: string, withConfig: boolean): Promise<HttpHostDriver> {
    const a = new HostAgent({
      id,
      dataDir: join(dir, id),
      sharedIps: [ip],
      httpPort: 0,
      addresses: new LoopbackAddresses(),
      web: { kind: 'builtin' },
      ...(withConfig
        ? {
            webConfig: {
              kind: 'nginx' as const,
              command: [nginxBin!, '-T', '-c', conf, '-p', join(dir, 'prefix')],
              poolDirs: [join(dir, 'pool.d')],
              declaredRoots: [www],
            },
          }
        : {}),
    });
    const app = buildAgentServer(a, { token: AGENT_TOKEN });
    await app.listen({ host: ip, port: 0 });
    agents.push(app);
    const url = `http://${ip}:${(app.server.address() as AddressInfo).port}`;
    const d = new HttpHostDriver({ id, url, token: AGENT_TOKEN, attempts: 1 });
    drivers.push(d);
    return d;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-sites-'));
    www = join(dir, 'www');
    await mkdir(join(www, 'shop'), { recursive: true });
    await mkdir(join(dir, 'elsewhere'));
    await mkdir(join(dir, 'prefix'));
    await mkdir(join(dir, 'pool.d'));
    conf = join(dir, 'nginx.conf');
    await writeFile(
      conf,
      `pid ${dir}/prefix/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n` +
        `  server {\n    listen ${IP}:8091;\n    server_name shop.example www.shop.example;\n    root ${www}/shop;\n  }\n` +
        `  server {\n    listen ${IP}:8091;\n    server_name outside.example;\n    root ${dir}/elsewhere;\n  }\n}\n`,
    );
    dns = new DnsServer({
      address: '127.0.64.53',
      port: 0,
      zones: [
        parseZone(
          `$ORIGIN example.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 127.0.64.53\n` +
            `shop 60 IN A ${IP}\noutside 60 IN A ${IP}\n`,
          { origin: 'example.' },
        ),
      ],
    });
    await dns.start();
    journal = new Journal(join(dir, 'journal.sqlite'), { durability: 'process' });
    ctl = new Controller({
      dns: new EmbeddedDnsProvider({ server: dns }),
      servers: [
        {
          id: 'origin',
          driver: await agent('origin', IP, true),
          sharedIps: [IP],
          tempIpPool: ['127.0.64.100'],
        },
        {
          id: 'target',
          driver: await agent('target', TARGET_IP, false),
          sharedIps: [TARGET_IP],
          tempIpPool: [],
        },
      ],
      sites: [
        { domain: 'shop.example', server: 'origin', ports: [8091], kind: 'web' },
        { domain: 'outside.example', server: 'origin', ports: [8091], kind: 'web' },
      ],
      journal,
      retry: { attempts: 1 },
    });
    api = await startApi(ctl, {
      tokens: [
        { token: READER, scope: 'read', name: 'viewer' },
        { token: OPERATOR, scope: 'operator', name: 'ops' },
      ],
      host: '127.0.64.1',
      port: 0,
      sampleIntervalMs: 0,
      dashboard: false,
      metrics: false,
    });
  });

  after(async () => {
    await api?.close();
    await ctl?.close();
    journal?.close();
    for (const d of drivers) d.close();
    for (const a of agents) await a.close();
    await dns?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const get = (path: string, token = READER) =>
    fetch(`${api.url}${path}`, { headers: { authorization: `Bearer ${token}` } });

  test("GET /v1/servers/{id}/web-sites: the agent's report; WEBCONFIG_NONE without --web-config; SERVER_NOT_FOUND; a token needed; in OpenAPI", async () => {
    const res = await get('/v1/servers/origin/web-sites');
    assert.equal(res.status, 200);
    const r = (await res.json()) as WebSitesReport & { serverId: string };
    assert.equal(r.serverId, 'origin');
    assert.equal(r.server, 'nginx');
    assert.deepEqual(r.declaredRoots, [www]);
    const shop = r.sites.find((s) => s.names.includes('shop.example'))!;
    assert.deepEqual(shop.names, ['shop.example', 'www.shop.example']);
    assert.deepEqual(
      shop.listens.map((l) => [l.address, l.port, l.tls]),
      [[IP, 8091, false]],
    );
    assert.equal(shop.application, 'static');
    assert.equal(shop.movable, true);
    const out = r.sites.find((s) => s.names.includes('outside.example'))!;
    assert.equal(out.movable, false);
    assert.equal(out.refusals[0]!.code, 'PATH_OUTSIDE_ROOTS');
    assert.deepEqual(out.refusals[0]!.at, { file: conf, line: 13 });
    const none = await get('/v1/servers/target/web-sites');
    assert.equal(none.status, 409);
    assert.equal(((await none.json()) as { error: { code: string } }).error.code, 'WEBCONFIG_NONE');
    const unknown = await get('/v1/servers/nope/web-sites');
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as { error: { code: string } }).error.code, 'SERVER_NOT_FOUND');
    assert.equal((await fetch(`${api.url}/v1/servers/origin/web-sites`)).status, 401);
    const spec = (await (await get('/openapi.json')).json()) as { paths: Record<string, unknown> };
    assert.ok(spec.paths['/v1/servers/{id}/web-sites'], Object.keys(spec.paths).join(' '));
  });

  test('ferry sites SERVER: a table with names, listens, application, movable and each refusal with its file and line; --json', async () => {
    const main = join(import.meta.dirname, 'main.ts');
    const ferry = (...args: string[]) =>
      run(process.execPath, ['--import', 'tsx', main, ...args, '--controller', api.url], {
        env: { ...process.env, FERRY_TOKEN: READER },
      });
    const { stdout } = await ferry('sites', 'origin');
    assert.match(stdout, /^server origin: nginx sites, from /);
    assert.match(
      stdout,
      new RegExp(`shop\\.example www\\.shop\\.example +${IP}:8091 +static +${www}/shop +yes`),
    );
    assert.ok(
      stdout.includes(
        `outside.example: PATH_OUTSIDE_ROOTS: root ${dir}/elsewhere is outside every declared root (${www}) (${conf}:13)`,
      ),
      stdout,
    );
    const json = JSON.parse((await ferry('sites', 'origin', '--json')).stdout) as WebSitesReport;
    assert.deepEqual(
      json.sites.map((s) => [s.names[0], s.movable]),
      [
        ['shop.example', true],
        ['outside.example', false],
      ],
    );
    // A server without --web-config: exit 1 and the reason.
    const failed = await ferry('sites', 'target').then(
      () => assert.fail('exit 0'),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /--web-config/);
  });

  test('planning a web site that cannot be moved: 409 SITE_NOT_MOVABLE with each refusal, file and line; nothing journaled, DNS and addresses as they were', async () => {
    const before = await drivers[0]!.listAddresses();
    const res = await fetch(`${api.url}/v1/migrations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${OPERATOR}`, 'content-type': 'application/json' },
      body: JSON.stringify({ domain: 'outside.example', to: 'target' }),
    });
    assert.equal(res.status, 409);
    const { error } = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(error.code, 'SITE_NOT_MOVABLE');
    assert.ok(error.message.includes(`PATH_OUTSIDE_ROOTS: root ${dir}/elsewhere`), error.message);
    assert.ok(error.message.includes(`(${conf}:13)`), error.message);
    // An unknown target: refused before the origin is asked.
    const missing = await fetch(`${api.url}/v1/migrations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${OPERATOR}`, 'content-type': 'application/json' },
      body: JSON.stringify({ domain: 'outside.example', to: 'nope' }),
    });
    assert.equal(missing.status, 404);
    assert.deepEqual(journal.list(), []);
    assert.deepEqual(dns.zones.getRRset('outside.example.', 'A')?.rdata, [IP]);
    assert.deepEqual(await drivers[0]!.listAddresses(), before);
  });
});
