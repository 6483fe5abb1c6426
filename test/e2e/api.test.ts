/**
 * The control API on a sandbox controller: tokens and scopes, validation errors, error codes,
 * OpenAPI, metrics, and the Server-Sent Events stream (replay with Last-Event-ID, bounded
 * subscribers, cleanup on disconnect).
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { request, type IncomingMessage } from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { buildApi, generateToken, startApi, type StartedApi } from '../../src/api/index.js';
import { Sandbox } from '../../src/sandbox/index.js';
import { waitFor } from '../../src/common/time.js';

const OPERATOR = generateToken();
const READER = generateToken();
const tokens = [
  { token: OPERATOR, scope: 'operator' as const, name: 'ops' },
  { token: READER, scope: 'read' as const, name: 'viewer' },
];
const auth = (t: string) => ({ authorization: `Bearer ${t}` });

interface SseEvent {
  id?: number;
  event: string;
  data: Record<string, unknown>;
}

/** Open an SSE stream; collects parsed events until `close()`. */
function openStream(url: string, headers: Record<string, string>) {
  const events: SseEvent[] = [];
  let res: IncomingMessage | undefined;
  const ready = new Promise<IncomingMessage>((resolve, reject) => {
    const req = request(url, { headers: { accept: 'text/event-stream', ...headers } }, (r) => {
      res = r;
      let buf = '';
      r.setEncoding('utf8');
      r.on('data', (chunk: string) => {
        buf += chunk;
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const ev: Partial<SseEvent> = {};
          for (const line of block.split('\n')) {
            if (line.startsWith('id: ')) ev.id = Number(line.slice(4));
            if (line.startsWith('event: ')) ev.event = line.slice(7);
            if (line.startsWith('data: ')) ev.data = JSON.parse(line.slice(6)) as Record<string, unknown>;
          }
          if (ev.event && ev.data) events.push(ev as SseEvent);
        }
      });
      r.on('error', () => undefined);
      resolve(r);
    });
    req.on('error', reject);
    req.end();
  });
  return { events, ready, close: () => res?.destroy() };
}

describe('control API', () => {
  const sb = new Sandbox({
    dnsAddress: '127.0.80.53',
    dnsPort: 0,
    httpPort: 0,
    originIp: '127.0.80.1',
    targetIp: '127.0.80.2',
    tempIp: '127.0.80.100',
    ttl: 1,
    quietWindowMs: 300,
    dnsTempCapMs: 5000,
    drainCapMs: 5000,
  });
  let app: FastifyInstance;
  let live: StartedApi;

  before(async () => {
    await sb.start();
    app = await buildApi(sb.controller, {
      tokens,
      sampleIntervalMs: 250,
      rateLimitPerMinute: 0,
      dashboard: false,
    });
    live = await startApi(sb.controller, {
      tokens,
      host: '127.0.80.10',
      port: 0,
      sampleIntervalMs: 250,
      sse: { maxSubscribers: 2, heartbeatMs: 200 },
    });
  });
  after(async () => {
    await app?.close();
    await live?.close();
    await sb.stop();
  });

  describe('tokens and scopes', () => {
    it('401 without a token, with a clear message and a WWW-Authenticate header', async () => {
      const res = await app.inject({ method: 'GET', url: '/v1/servers' });
      assert.equal(res.statusCode, 401);
      assert.equal(res.json().error.code, 'AUTH_MISSING_TOKEN');
      assert.match(res.headers['www-authenticate'] as string, /Bearer/);
    });

    it('401 with a wrong token, and the token is not echoed', async () => {
      const wrong = generateToken();
      const res = await app.inject({ method: 'GET', url: '/v1/sites', headers: auth(wrong) });
      assert.equal(res.statusCode, 401);
      assert.equal(res.json().error.code, 'AUTH_INVALID_TOKEN');
      assert.ok(!res.body.includes(wrong));
    });

    it('a read token reads everything, metrics and OpenAPI included', async () => {
      for (const url of [
        '/v1/servers',
        '/v1/sites',
        '/v1/migrations',
        '/v1/records/shop.example',
        '/v1/sites/shop.example',
        '/metrics',
        '/openapi.json',
      ]) {
        const res = await app.inject({ method: 'GET', url, headers: auth(READER) });
        assert.equal(res.statusCode, 200, `${url}: ${res.body}`);
      }
      const servers = (await app.inject({ method: 'GET', url: '/v1/servers', headers: auth(READER) })).json();
      assert.deepEqual(
        servers.servers.map((s: { id: string }) => s.id),
        ['origin', 'target'],
      );
      const rec = (
        await app.inject({ method: 'GET', url: '/v1/records/shop.example', headers: auth(READER) })
      ).json();
      assert.deepEqual(rec.A.rdata, ['127.0.80.1']);
    });

    it('403 when a read token tries to write', async () => {
      for (const [url, payload] of [
        ['/v1/migrations', { domain: 'shop.example', to: 'target' }],
        ['/v1/migrations/x/rollback', undefined],
        ['/v1/evacuations', { from: 'origin', to: 'target' }],
      ] as const) {
        const res = await app.inject({
          method: 'POST',
          url,
          headers: auth(READER),
          ...(payload ? { payload } : {}),
        });
        assert.equal(res.statusCode, 403, url);
        assert.equal(res.json().error.code, 'AUTH_FORBIDDEN');
        assert.match(res.json().error.message, /operator/);
      }
      assert.equal(sb.controller.listMigrations().length, 0);
    });

    it('the dashboard page is public', async () => {
      const page = await live.app.inject({ method: 'GET', url: '/' });
      assert.equal(page.statusCode, 200);
      assert.match(page.body, /<title>Ferry<\/title>/);
    });
  });

  describe('bad requests', () => {
    const post = (payload: unknown) =>
      app.inject({
        method: 'POST',
        url: '/v1/migrations',
        headers: auth(OPERATOR),
        payload: payload as object,
      });

    it('400 with the missing field named', async () => {
      const res = await post({ domain: 'shop.example' });
      assert.equal(res.statusCode, 400);
      assert.equal(res.json().error.code, 'VALIDATION');
      assert.match(res.json().error.message, /must have required property 'to'/);
    });

    it('400 for an unknown field, a wrong type and an out-of-range timing', async () => {
      let res = await post({ domain: 'shop.example', to: 'target', force: true });
      assert.equal(res.statusCode, 400);
      assert.match(res.json().error.message, /additional properties/);
      res = await post({ domain: 'shop.example', to: 'target', timings: { ttl: 'soon' } });
      assert.equal(res.statusCode, 400);
      assert.match(res.json().error.message, /timings\/ttl must be integer/);
      res = await post({ domain: 'shop.example', to: 'target', timings: { ttl: 0 } });
      assert.equal(res.statusCode, 400);
      assert.match(res.json().error.message, /timings\/ttl must be >= 1/);
    });

    it('400 for a body that is not JSON', async () => {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/migrations',
        headers: { ...auth(OPERATOR), 'content-type': 'application/json' },
        payload: '{"domain":',
      });
      assert.equal(res.statusCode, 400);
      assert.ok(res.json().error.message.length > 0);
    });

    it('404 for unknown sites, servers, migrations and routes, with the code', async () => {
      let res = await post({ domain: 'nope.example', to: 'target' });
      assert.equal(res.statusCode, 404);
      assert.equal(res.json().error.code, 'SITE_NOT_FOUND');
      res = await post({ domain: 'shop.example', to: 'mars' });
      assert.equal(res.statusCode, 404);
      assert.equal(res.json().error.code, 'SERVER_NOT_FOUND');
      assert.match(res.json().error.message, /known: origin, target/);
      res = await app.inject({ method: 'GET', url: '/v1/migrations/none', headers: auth(READER) });
      assert.equal(res.statusCode, 404);
      assert.equal(res.json().error.code, 'MIGRATION_NOT_FOUND');
      res = await app.inject({
        method: 'POST',
        url: '/v1/migrations/none/rollback',
        headers: auth(OPERATOR),
      });
      assert.equal(res.statusCode, 404);
      res = await app.inject({ method: 'GET', url: '/v1/nothing', headers: auth(READER) });
      assert.equal(res.statusCode, 404);
      assert.equal(res.json().error.code, 'ROUTE_NOT_FOUND');
    });

    it('409 when the site is on the target already', async () => {
      const res = await post({ domain: 'shop.example', to: 'origin' });
      assert.equal(res.statusCode, 409);
      assert.equal(res.json().error.code, 'MIGRATION_SAME_SERVER');
    });

    it('429 past the rate limit', async () => {
      const limited = await buildApi(sb.controller, {
        tokens,
        rateLimitPerMinute: 3,
        sampleIntervalMs: 0,
        dashboard: false,
        metrics: false,
      });
      try {
        const codes: number[] = [];
        for (let i = 0; i < 5; i++)
          codes.push(
            (await limited.inject({ method: 'GET', url: '/v1/servers', headers: auth(READER) })).statusCode,
          );
        assert.deepEqual(codes, [200, 200, 200, 429, 429]);
        const res = await limited.inject({ method: 'GET', url: '/v1/servers', headers: auth(READER) });
        assert.equal(res.json().error.code, 'RATE_LIMITED');
      } finally {
        await limited.close();
      }
    });
  });

  it('logs requests through the pino logger it is given (as `ferry controller` passes it), never a token', async () => {
    let log = '';
    const logger = pino({ level: 'info' }, { write: (line: string) => void (log += line) });
    const logged = await buildApi(sb.controller, {
      tokens,
      logger,
      rateLimitPerMinute: 0,
      sampleIntervalMs: 0,
      dashboard: false,
      metrics: false,
    });
    try {
      assert.equal(
        (await logged.inject({ method: 'GET', url: '/v1/servers', headers: auth(READER) })).statusCode,
        200,
      );
      assert.equal(
        (await logged.inject({ method: 'GET', url: '/v1/servers', headers: auth('not-a-token') })).statusCode,
        401,
      );
      assert.match(log, /"url":"\/v1\/servers"/);
      assert.match(log, /"statusCode":401/);
      assert.ok(!log.includes(READER), 'the token never reaches the log');
    } finally {
      await logged.close();
    }
  });

  it('OpenAPI describes every route with bearer security', async () => {
    const spec = (await app.inject({ method: 'GET', url: '/openapi.json', headers: auth(READER) })).json();
    assert.equal(spec.openapi, '3.1.0');
    for (const path of [
      '/v1/servers',
      '/v1/sites',
      '/v1/records/{domain}',
      '/v1/migrations',
      '/v1/migrations/{id}',
      '/v1/migrations/{id}/rollback',
      '/v1/evacuations',
      '/v1/events',
      '/metrics',
    ]) {
      assert.ok(spec.paths[path], path);
    }
    assert.ok(spec.components.securitySchemes.bearer);
    assert.deepEqual(
      spec.paths['/v1/migrations'].post.requestBody.content['application/json'].schema.required,
      ['domain', 'to'],
    );
  });

  it('metrics count DNS queries published on ferry.dns.query', async () => {
    diagnostics
      .channel('ferry.dns.query')
      .publish({ qtype: 'AAAA', rcode: 'NXDOMAIN', transport: 'tcp', durationMs: 0.4 });
    diagnostics.channel('ferry.dns.update').publish({ rcode: 'NOERROR' });
    const text = (await app.inject({ method: 'GET', url: '/metrics', headers: auth(READER) })).body;
    assert.match(text, /ferry_dns_queries_total\{qtype="AAAA",rcode="NXDOMAIN",transport="tcp"\} 1/);
    assert.match(text, /ferry_dns_query_duration_seconds_count\{transport="tcp"\} 1/);
    assert.match(text, /ferry_dns_updates_total\{rcode="NOERROR"\} 1/);
    assert.match(text, /# TYPE ferry_relay_connections_held gauge/);
  });

  describe('events (SSE)', () => {
    let migrationId = '';

    it('streams a migration from start to end: phases in order, waits, traffic; rejects without a token', async () => {
      const noToken = await fetch(`${live.url}/v1/events`);
      assert.equal(noToken.status, 401);
      await noToken.body?.cancel();

      const stream = openStream(`${live.url}/v1/events`, auth(READER));
      const res = await stream.ready;
      assert.equal(res.statusCode, 200);
      assert.match(String(res.headers['content-type']), /text\/event-stream/);
      const created = await fetch(`${live.url}/v1/migrations`, {
        method: 'POST',
        headers: { ...auth(OPERATOR), 'content-type': 'application/json' },
        body: JSON.stringify({ domain: 'shop.example', to: 'target' }),
      });
      assert.equal(created.status, 201);
      migrationId = ((await created.json()) as { id: string }).id;
      const ended = await waitFor(
        () =>
          stream.events.some(
            (e) =>
              e.event === 'phase' &&
              ['completed', 'failed', 'rolled-back'].includes(
                String(e.data.data && (e.data.data as { phase: string }).phase),
              ),
          ),
        60_000,
        100,
      );
      stream.close();
      assert.ok(ended, 'the migration ended within a minute');
      const phases = stream.events
        .filter((e) => e.event === 'phase')
        .map((e) => (e.data.data as { phase: string }).phase);
      assert.deepEqual(phases, [
        'planned',
        'temp-ip',
        'dns-temp',
        'syncing',
        'preflight',
        'cutover',
        'draining',
        'completed',
      ]);
      const ids = stream.events.filter((e) => e.id !== undefined).map((e) => e.id!);
      assert.deepEqual(
        ids,
        [...ids].sort((a, b) => a - b),
        'ids increase',
      );
      assert.ok(
        stream.events.some(
          (e) =>
            e.event === 'wait' && typeof (e.data.data as { remainingMs: number }).remainingMs === 'number',
        ),
      );
      assert.ok(
        stream.events.some(
          (e) => e.event === 'sample' && e.id === undefined && e.data.migrationId === migrationId,
        ),
        'traffic samples, without ids',
      );

      const detail = (await (
        await fetch(`${live.url}/v1/migrations/${migrationId}`, { headers: auth(READER) })
      ).json()) as {
        phase: string;
        journal: Array<{ kind: string }>;
        phases: unknown[];
      };
      assert.equal(detail.phase, 'completed');
      assert.ok(detail.journal.length > 10 && detail.phases.length === 8);
    });

    it('replays after Last-Event-ID, filtered by migration', async () => {
      const all = sb.controller.eventsSince(0, migrationId);
      const mid = all[Math.floor(all.length / 2)]!.seq;
      const stream = openStream(`${live.url}/v1/events?migration=${migrationId}`, {
        ...auth(READER),
        'last-event-id': String(mid),
      });
      await stream.ready;
      await waitFor(
        () => stream.events.filter((e) => e.id !== undefined).length >= all.filter((e) => e.seq > mid).length,
        5000,
        50,
      );
      stream.close();
      const replayed = stream.events.filter((e) => e.id !== undefined);
      assert.equal(replayed[0]!.id, all.find((e) => e.seq > mid)!.seq);
      assert.deepEqual(
        replayed.map((e) => e.id),
        all.filter((e) => e.seq > mid).map((e) => e.seq),
      );
      assert.ok(replayed.every((e) => e.data.migrationId === migrationId));
    });

    it('bounds subscribers (503 past the limit) and frees a slot when a client goes away', async () => {
      const a = openStream(`${live.url}/v1/events`, auth(READER));
      const b = openStream(`${live.url}/v1/events`, auth(READER));
      await Promise.all([a.ready, b.ready]);
      const third = await fetch(`${live.url}/v1/events`, { headers: auth(READER) });
      assert.equal(third.status, 503);
      assert.equal(((await third.json()) as { error: { code: string } }).error.code, 'SSE_FULL');
      a.close();
      const ok = await waitFor(
        async () => {
          const r = await fetch(`${live.url}/v1/events`, { headers: auth(READER) });
          await r.body?.cancel();
          return r.status === 200;
        },
        5000,
        100,
      );
      assert.ok(ok, 'a slot came free after a disconnect');
      b.close();
    });

    it('sends heartbeats', async () => {
      const got = await new Promise<string>((resolve, reject) => {
        const req = request(`${live.url}/v1/events`, { headers: auth(READER) }, (r) => {
          let text = '';
          r.setEncoding('utf8');
          r.on('data', (c: string) => {
            text += c;
            if (/: heartbeat \d+/.test(text)) {
              r.destroy();
              resolve(text);
            }
          });
        });
        req.on('error', reject);
        req.end();
      });
      assert.match(got, /: heartbeat/);
    });
  });
});
