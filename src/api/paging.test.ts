/**
 * Paging of the control API's lists (GET /v1/servers, /v1/sites, /v1/migrations) on a real
 * controller and journal: every item once in a stable order, `next` only when more follow, the
 * pages after a cursor unchanged by migrations started meanwhile, and bad cursors refused with
 * 400 CURSOR_INVALID. No agent or name server is called by a listing, so their doubles refuse any call.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { ApiClient } from '../cli/client.js';
import { buildApi } from './index.js';
import { Controller } from '../controller/index.js';
import { Journal, STEP, type DnsProvider, type HostDriver, type MigrationPlan } from '../migration/index.js';

const TOKEN = 'paging-test-token-0123456789';

const unused = (what: string) =>
  new Proxy({} as Record<string, unknown>, {
    get: (_t, prop) =>
      prop === 'id'
        ? what
        : prop === 'then'
          ? undefined
          : () => assert.fail(`${what}.${String(prop)} called by a listing`),
  });

function fleet(servers: number, sitesPerServer: number, opts: { eventHistory?: number } = {}) {
  const journal = new Journal(':memory:');
  const ids = Array.from({ length: servers }, (_, i) => `s${String(i).padStart(3, '0')}`);
  const controller = new Controller({
    dns: unused('dns') as unknown as DnsProvider,
    journal,
    servers: ids.map((id, i) => ({
      id,
      driver: unused(id) as unknown as HostDriver,
      sharedIps: [`10.0.${i}.1`],
      tempIpPool: [`10.1.${i}.1`, `10.1.${i}.2`],
    })),
    sites: ids.flatMap((server, i) =>
      Array.from({ length: sitesPerServer }, (_, j) => ({
        domain: `site-${i}-${j}.example`,
        server,
        ports: [80],
      })),
    ),
    ...(opts.eventHistory !== undefined ? { eventHistory: opts.eventHistory } : {}),
  });
  return { journal, controller };
}

/** Journal a migration as the orchestrator would create it (tests: no driver runs it). */
function journalMigration(
  journal: Journal,
  id: string,
  domain: string,
  from: number,
  to: number,
  at: number,
): void {
  const plan = {
    id,
    domain,
    origin: `s${String(from).padStart(3, '0')}`,
    target: `s${String(to).padStart(3, '0')}`,
    originIp: `10.0.${from}.1`,
    targetIp: `10.0.${to}.1`,
    tempIp: `10.1.${from}.1`,
    ports: [80],
    timings: {
      ttl: 1,
      quietWindowMs: 0,
      dnsTempCapMs: 0,
      drainCapMs: 0,
      cutoverDrainTimeoutMs: 0,
      pollMs: 10,
    },
    mode: 'temp-ip',
  } as MigrationPlan;
  journal.create(plan, at);
}

async function api(controller: Controller): Promise<FastifyInstance> {
  return buildApi(controller, {
    tokens: [{ token: TOKEN, scope: 'read', name: 't' }],
    rateLimitPerMinute: 0,
    sampleIntervalMs: 0,
    metrics: false,
    dashboard: false,
  });
}

async function get(
  app: FastifyInstance,
  url: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${TOKEN}` } });
  return { status: res.statusCode, body: res.json() as Record<string, unknown> };
}

/** Follow `next` from the first page; every page's items under `key`. */
async function walk(app: FastifyInstance, path: string, key: string, limit: number, between?: () => void) {
  const pages: unknown[][] = [];
  let cursor: string | undefined;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const r = await get(
      app,
      `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    pages.push(r.body[key] as unknown[]);
    cursor = r.body.next as string | undefined;
    between?.();
  } while (cursor);
  return pages;
}

test('GET /v1/sites and /v1/servers: pages in config order, each item once, next only when more follow', async () => {
  const { controller, journal } = fleet(12, 25); // 300 sites
  const app = await api(controller);
  try {
    const first = await get(app, '/v1/sites');
    assert.equal((first.body.sites as unknown[]).length, 100, 'default limit 100');
    assert.equal(typeof first.body.next, 'string');

    const pages = await walk(app, '/v1/sites', 'sites', 7);
    assert.equal(pages.length, Math.ceil(300 / 7));
    assert.ok(pages.slice(0, -1).every((p) => p.length === 7));
    const domains = pages.flat().map((s) => (s as { domain: string }).domain);
    assert.deepEqual(
      domains,
      controller.listSites().map((s) => s.domain),
      'the pages together are the whole list, in order',
    );
    assert.equal(new Set(domains).size, 300);

    const exact = await get(app, '/v1/sites?limit=300');
    assert.equal((exact.body.sites as unknown[]).length, 300);
    assert.equal(exact.body.next, undefined, 'no next when nothing follows');

    const servers = await walk(app, '/v1/servers', 'servers', 5);
    assert.deepEqual(
      servers.flat().map((s) => (s as { id: string }).id),
      controller.listServers().map((s) => s.id),
    );
    const s0 = servers[0]![0] as Record<string, unknown>;
    assert.equal(s0.siteCount, 25);
    assert.equal(s0.sites, undefined, 'a server entry carries a count, not every site name');
    const ofS0 = await walk(app, '/v1/sites?server=s000', 'sites', 10);
    assert.deepEqual(
      ofS0.map((p) => p.length),
      [10, 10, 5],
    );
    assert.deepEqual(
      ofS0.flat().map((x) => (x as { domain: string }).domain),
      Array.from({ length: 25 }, (_, j) => `site-0-${j}.example.`),
    );

    // A migration journaled between two reads: the site and the lease show in the next pages.
    journalMigration(journal, 'm-moved', 'site-0-3.example.', 0, 1, 1000);
    const running = (await get(app, '/v1/servers?limit=1')).body.servers as Array<{ freeTempIps: string[] }>;
    assert.deepEqual(running[0]!.freeTempIps, ['10.1.0.2'], 'the running migration leases 10.1.0.1');
    journal.append({ migrationId: 'm-moved', at: 1001, phase: 'completed', kind: 'enter' });
    journal.append({ migrationId: 'm-moved', at: 1002, phase: 'completed', kind: 'leave' });
    const after = (await get(app, '/v1/servers?limit=2')).body.servers as Array<{ siteCount: number }>;
    assert.deepEqual(
      after.map((x) => x.siteCount),
      [24, 26],
    );
    const on = async (server: string) =>
      (await walk(app, `/v1/sites?server=${server}`, 'sites', 1000))
        .flat()
        .map((x) => (x as { domain: string }).domain);
    assert.ok(!(await on('s000')).includes('site-0-3.example.'));
    assert.deepEqual(
      (await on('s001')).slice(0, 2),
      ['site-0-3.example.', 'site-1-0.example.'],
      'a site moved in is listed in config order',
    );
    const site = (await get(app, '/v1/sites?limit=4')).body.sites as Array<{
      domain: string;
      server: string;
    }>;
    assert.deepEqual(site[3], {
      domain: 'site-0-3.example.',
      server: 's001',
      ports: [80],
      kind: 'builtin',
      migration: null,
    });

    // A server's sites: the cursor names the last one given, which may move away before the next page.
    const two = await get(app, '/v1/sites?server=s000&limit=2');
    const given = (two.body.sites as Array<{ domain: string }>).map((x) => x.domain);
    assert.deepEqual(given, ['site-0-0.example.', 'site-0-1.example.']);
    journalMigration(journal, 'm-away', 'site-0-1.example.', 0, 2, 2000);
    journal.append({ migrationId: 'm-away', at: 2001, phase: 'completed', kind: 'enter' });
    const rest = await get(app, `/v1/sites?server=s000&limit=2&cursor=${two.body.next as string}`);
    assert.deepEqual(
      (rest.body.sites as Array<{ domain: string }>).map((x) => x.domain),
      ['site-0-2.example.', 'site-0-4.example.'],
    );
    const unknown = await get(app, '/v1/sites?server=nowhere');
    assert.deepEqual(
      [unknown.status, (unknown.body.error as { code: string }).code],
      [404, 'SERVER_NOT_FOUND'],
    );
  } finally {
    await app.close();
    journal.close();
  }
});

test('GET /v1/migrations: newest first, and the pages after a cursor stay the same while migrations start', async () => {
  const { controller, journal } = fleet(4, 30);
  const app = await api(controller);
  try {
    // 40 migrations, created in pairs at the same millisecond (the id orders those).
    for (let i = 0; i < 40; i++)
      journalMigration(
        journal,
        `m-${String(i).padStart(2, '0')}`,
        `site-${i % 4}-${i}.example.`,
        i % 4,
        (i + 1) % 4,
        10_000 + Math.floor(i / 2),
      );
    const expected = Array.from({ length: 40 }, (_, i) => `m-${String(i).padStart(2, '0')}`).sort((a, b) => {
      const ta = Math.floor(Number(a.slice(2)) / 2);
      const tb = Math.floor(Number(b.slice(2)) / 2);
      return tb - ta || a.localeCompare(b);
    });
    let added = 0;
    const pages = await walk(app, '/v1/migrations', 'migrations', 6, () => {
      // Two newer migrations after every page: they belong before the first page, not in the rest.
      for (let k = 0; k < 2; k++, added++)
        journalMigration(journal, `new-${added}`, `site-0-${added}.example.`, 0, 1, 20_000 + added);
    });
    const ids = pages.flat().map((m) => (m as { id: string }).id);
    assert.deepEqual(ids, expected, 'each migration present at the start exactly once, in order');

    const newest = (await get(app, '/v1/migrations?limit=1')).body.migrations as Array<{ id: string }>;
    assert.equal(newest[0]!.id, `new-${added - 1}`);

    journal.append({ migrationId: 'm-05', at: 30_000, phase: 'completed', kind: 'enter' });
    const ended = await walk(app, '/v1/migrations?active=false', 'migrations', 1);
    assert.deepEqual(
      ended.flat().map((m) => (m as { id: string }).id),
      ['m-05'],
    );
    const active = await walk(app, '/v1/migrations?active=true', 'migrations', 100);
    assert.equal(active.flat().length, 40 + added - 1);
    const one = await walk(app, '/v1/migrations?domain=SITE-1-9.example', 'migrations', 5);
    assert.deepEqual(
      one.flat().map((m) => (m as { id: string }).id),
      ['m-09'],
    );
  } finally {
    await app.close();
    journal.close();
  }
});

test('a bad cursor or limit is a 400 that says what is wrong', async () => {
  const { controller, journal } = fleet(3, 3);
  const app = await api(controller);
  try {
    const serversCursor = (await get(app, '/v1/servers?limit=1')).body.next as string;
    const cases: Array<[string, string]> = [
      ['/v1/sites?cursor=not-a-cursor', 'CURSOR_INVALID'],
      ['/v1/sites?cursor=%25%25', 'CURSOR_INVALID'],
      [`/v1/sites?cursor=${serversCursor}`, 'CURSOR_INVALID'],
      [
        `/v1/sites?cursor=${Buffer.from('["sites","nowhere.example."]').toString('base64url')}`,
        'CURSOR_INVALID',
      ],
      [
        `/v1/migrations?cursor=${Buffer.from('["migrations","x",1]').toString('base64url')}`,
        'CURSOR_INVALID',
      ],
      ['/v1/servers?limit=0', 'VALIDATION'],
      ['/v1/servers?limit=1001', 'VALIDATION'],
      ['/v1/migrations?limit=abc', 'VALIDATION'],
    ];
    for (const [url, code] of cases) {
      const r = await get(app, url);
      assert.equal(r.status, 400, url);
      const err = r.body.error as { code: string; message: string };
      assert.equal(err.code, code, url);
      assert.ok(err.message.length > 10, err.message);
    }
    const r = await get(app, '/v1/sites?cursor=not-a-cursor');
    assert.match((r.body.error as { message: string }).message, /not a cursor of the sites list/);
    assert.equal((await get(app, '/v1/sites?limit=1000')).status, 200, 'the controller still answers');
  } finally {
    await app.close();
    journal.close();
  }
});

test('the controller keeps at most eventHistory events for replay, the newest', () => {
  const { controller, journal } = fleet(1, 1, { eventHistory: 5 });
  try {
    for (let i = 0; i < 12; i++)
      controller.orchestrator.emit('retry', {
        id: `m-${i}`,
        at: Date.now(),
        what: 'call',
        attempt: i,
        message: 'x',
      });
    const kept = controller.eventsSince(0);
    assert.deepEqual(
      kept.map((e) => e.seq),
      [8, 9, 10, 11, 12],
    );
    // Past the point where the dropped events are let go in one copy: still the newest five.
    for (let i = 12; i < 23; i++)
      controller.orchestrator.emit('retry', {
        id: `m-${i}`,
        at: Date.now(),
        what: 'call',
        attempt: i,
        message: 'x',
      });
    assert.deepEqual(
      controller.eventsSince(0).map((e) => e.seq),
      [19, 20, 21, 22, 23],
    );
    assert.deepEqual(
      controller.eventsSince(21).map((e) => e.seq),
      [22, 23],
    );
    assert.deepEqual(
      controller.eventsSince(0, 'm-20').map((e) => e.seq),
      [21],
    );
  } finally {
    journal.close();
  }
});

test('the CLI client follows next: every item once up to --limit, and says when more were left', async () => {
  const { controller, journal } = fleet(5, 500); // 2,500 sites: three pages of 1000
  const app = await api(controller);
  try {
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as AddressInfo;
    const client = new ApiClient(`http://127.0.0.1:${port}`, TOKEN);
    const all = await client.list<{ domain: string }>('/v1/sites', 'sites');
    assert.equal(all.more, false);
    assert.deepEqual(
      all.items.map((s) => s.domain),
      controller.listSites().map((s) => s.domain),
    );
    const some = await client.list<{ domain: string }>('/v1/sites', 'sites', 1200);
    assert.equal(some.items.length, 1200);
    assert.equal(some.more, true);
    assert.deepEqual(some.items, all.items.slice(0, 1200));
    const exact = await client.list<{ id: string }>('/v1/servers', 'servers', 5);
    assert.deepEqual([exact.items.length, exact.more], [5, false]);
    assert.throws(() => ApiClient.listLimit({ limit: '0' }, 50), /--limit must be a positive integer/);
    assert.equal(ApiClient.listLimit({}, 50), 50);
    assert.equal(ApiClient.listLimit({ all: true }, 50), Infinity);
  } finally {
    await app.close();
    journal.close();
  }
});

test('where sites are follows the journal: a failed migration places its site where DNS points, a rollback puts it back, a late-settling older migration does not undo a newer one', () => {
  const { controller, journal } = fleet(3, 2);
  try {
    const at = (d: string) => controller.site(d);
    const on = (server: string) => controller.sitesPage({ server, limit: 1000 }).items.map((x) => x.domain);
    // Failed after its DNS change to the target: the site is the target's, the migration in charge.
    journalMigration(journal, 'f1', 'site-0-0.example.', 0, 1, 100);
    journal.append({
      migrationId: 'f1',
      at: 101,
      phase: 'cutover',
      kind: 'step',
      step: STEP.dnsChange,
      detail: { type: 'A', address: '10.0.1.1' },
    });
    journal.append({ migrationId: 'f1', at: 102, phase: 'failed', kind: 'enter' });
    assert.deepEqual([at('site-0-0.example').server, at('site-0-0.example').migration], ['s001', 'f1']);
    assert.ok(on('s001').includes('site-0-0.example.'));
    assert.ok(!on('s000').includes('site-0-0.example.'));
    assert.deepEqual(
      [controller.serverView('s000').siteCount, controller.serverView('s001').siteCount],
      [1, 3],
    );
    assert.deepEqual(controller.freeTempIps('s000'), ['10.1.0.2'], 'a failed migration keeps its lease');
    journal.append({ migrationId: 'f1', at: 103, phase: 'rolled-back', kind: 'enter' });
    assert.deepEqual([at('site-0-0.example').server, at('site-0-0.example').migration], ['s000', null]);
    assert.deepEqual(on('s000'), ['site-0-0.example.', 'site-0-1.example.']);
    assert.equal(controller.serverView('s001').siteCount, 2);
    assert.deepEqual(controller.freeTempIps('s000'), ['10.1.0.1', '10.1.0.2']);

    // m1 completes (not yet settled), m2 moves the site on and settles, then m1 settles.
    journalMigration(journal, 'm1', 'site-0-1.example.', 0, 1, 200);
    journal.append({ migrationId: 'm1', at: 201, phase: 'completed', kind: 'enter' });
    assert.equal(at('site-0-1.example').server, 's001');
    journalMigration(journal, 'm2', 'site-0-1.example.', 1, 2, 300);
    journal.append({ migrationId: 'm2', at: 301, phase: 'completed', kind: 'enter' });
    journal.append({ migrationId: 'm2', at: 302, phase: 'completed', kind: 'leave' });
    assert.equal(at('site-0-1.example').server, 's002');
    journal.append({ migrationId: 'm1', at: 400, phase: 'completed', kind: 'leave' });
    assert.equal(at('site-0-1.example').server, 's002');
    assert.deepEqual(
      controller.listServers().map((s) => [s.id, s.siteCount, on(s.id)]),
      [
        ['s000', 1, ['site-0-0.example.']],
        ['s001', 2, ['site-1-0.example.', 'site-1-1.example.']],
        ['s002', 3, ['site-0-1.example.', 'site-2-0.example.', 'site-2-1.example.']],
      ],
    );
  } finally {
    journal.close();
  }
});
