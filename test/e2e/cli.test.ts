/**
 * The operator CLI as scripts run it, against a sandbox with its control API: `ferry migrate
 * --watch --json` streams the migration and exits 0 when it completed; a rolled-back one exits 1;
 * an unreachable controller exits 3 and a wrong or missing token 4, with friendly messages;
 * `ferry evacuate` through the API moves every remaining site.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { generateToken, startApi, type StartedApi } from '../../src/api/index.js';
import { Sandbox } from '../../src/sandbox/index.js';
import { waitFor } from '../../src/common/time.js';
import { PARALLEL_LANE_REQUEST_TIMEOUT_MS } from '../load.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  lines: Array<Record<string, unknown>>;
}

const OPERATOR = generateToken();

function ferry(
  args: string[],
  env: Record<string, string>,
  opts: { timeoutMs?: number; onLine?: (l: Record<string, unknown>) => void } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FERRY_CONTROLLER: '', FERRY_TOKEN: '', ...env },
    });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
      partial += c.toString();
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        try {
          opts.onLine?.(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // not a JSON line
        }
      }
    });
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const lines = stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      resolve({ code, stdout, stderr, lines });
    });
  });
}

describe('ferry CLI against a sandbox controller', () => {
  const sb = new Sandbox({
    requestTimeoutMs: PARALLEL_LANE_REQUEST_TIMEOUT_MS,
    dnsAddress: '127.0.84.53',
    dnsPort: 0,
    httpPort: 0,
    originIp: '127.0.84.1',
    targetIp: '127.0.84.2',
    tempIp: '127.0.84.100',
    ttl: 1,
    rate: 20,
    clients: 8,
    staleShare: 0.2,
    staleOverstayMs: 1000,
    quietWindowMs: 600,
    dnsTempCapMs: 8000,
    drainCapMs: 8000,
  });
  let api: StartedApi;
  let env: Record<string, string>;

  before(async () => {
    await sb.start();
    sb.startLoad();
    api = await startApi(sb.controller, {
      tokens: [{ token: OPERATOR, scope: 'operator' }],
      host: '127.0.84.10',
      port: 0,
      sampleIntervalMs: 500,
    });
    env = { FERRY_CONTROLLER: api.url, FERRY_TOKEN: OPERATOR };
  });
  after(async () => {
    await api?.close();
    await sb.stop();
  });

  it('migrate --dry-run says what would move and starts nothing; a refusal is the same as a real start', async () => {
    const dry = await ferry(['migrate', 'shop.example', '--to', 'target', '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(
      dry.stdout,
      /Would move shop\.example\. origin → target \(the agent's site app, ports \d+\); nothing was started/,
    );
    const json = await ferry(['migrate', 'shop.example', '--to', 'target', '--dry-run', '--json'], env);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(
      { ...json.lines[0], ports: undefined },
      { domain: 'shop.example.', from: 'origin', to: 'target', kind: 'builtin', ports: undefined },
    );
    const same = await ferry(['migrate', 'shop.example', '--to', 'origin', '--dry-run', '--json'], env);
    assert.equal(same.code, 1);
    assert.match(same.stdout + same.stderr, /MIGRATION_SAME_SERVER/);
    assert.equal(sb.controller.listMigrations().length, 0, 'no migration was created');
  });

  it('servers and records, as tables and as JSON', async () => {
    const servers = await ferry(['servers', '--json'], env);
    assert.equal(servers.code, 0, servers.stderr);
    assert.deepEqual(
      (servers.lines[0]!.servers as Array<{ id: string }>).map((s) => s.id),
      ['origin', 'target'],
    );
    const table = await ferry(['servers'], env);
    assert.match(table.stdout, /^SERVER\s+SHARED IPS/m);
    assert.match(table.stdout, /^SERVER\s+SHARED IPS\s+FREE TEMP IPS\s+SITES$/m);
    const originCount = (servers.lines[0]!.servers as Array<{ id: string; siteCount: number }>).find(
      (x) => x.id === 'origin',
    )!.siteCount;
    assert.match(table.stdout, new RegExp(`origin\\s+127\\.0\\.84\\.1\\s+1/1\\s+${originCount}$`, 'm'));
    const sites = await ferry(['servers', 'origin'], env);
    assert.equal(sites.code, 0, sites.stderr);
    assert.match(sites.stdout, /^SITE\s+PORTS\s+KIND\s+MIGRATION$/m);
    assert.match(sites.stdout, /^shop\.example\.\s+\d+/m);
    assert.equal(sites.stdout.trim().split('\n').length, originCount + 1, 'one line per site');
    const records = await ferry(['records', 'shop.example', '--json'], env);
    assert.equal(records.code, 0, records.stderr);
    assert.deepEqual((records.lines[0]!.A as { rdata: string[] }).rdata, ['127.0.84.1']);
  });

  it(
    'migrate --watch --json streams the migration and exits 0 when it completed',
    { timeout: 90_000 },
    async () => {
      const res = await ferry(['migrate', 'shop.example', '--to', 'target', '--watch', '--json'], env, {
        timeoutMs: 80_000,
      });
      assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
      assert.equal(res.stdout.split('\n').filter(Boolean).length, res.lines.length, 'every line is JSON');
      assert.equal(res.lines[0]!.event, 'created');
      const id = String(res.lines[0]!.id);
      const phases = res.lines
        .filter((l) => l.event === 'phase')
        .map((l) => (l.data as { phase: string }).phase);
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
      assert.ok(
        res.lines.every((l) => l.event === 'created' || l.summary || l.migrationId === id),
        'only this migration',
      );
      const waits = res.lines.filter((l) => l.event === 'wait');
      assert.ok(
        waits.length > 0 &&
          waits.every((w) => typeof (w.data as { remainingMs: unknown }).remainingMs === 'number'),
        'waits carry a countdown',
      );
      assert.ok(
        res.lines.some((l) => l.event === 'sample' && typeof (l.rps as { ipt: number }).ipt === 'number'),
        'traffic samples',
      );
      const summary = res.lines[res.lines.length - 1]!.summary as {
        id: string;
        phase: string;
        phases: Array<{ name: string; ms: number | null }>;
      };
      assert.equal(summary.id, id);
      assert.equal(summary.phase, 'completed');
      assert.equal(summary.phases.length, 8);

      const status = await ferry(['status', id, '--json'], env);
      assert.equal(status.code, 0);
      assert.equal(status.lines[0]!.phase, 'completed');
      const list = await ferry(['status'], env);
      assert.match(
        list.stdout,
        new RegExp(`${id.replace(/\./g, '\\.')}\\s+shop\\.example\\.\\s+origin → target\\s+completed`),
      );
      const watchEnded = await ferry(['watch', id, '--json'], env);
      assert.equal(watchEnded.code, 0);
      assert.equal((watchEnded.lines[0]!.summary as { phase: string }).phase, 'completed');
    },
  );

  it(
    'a migration rolled back while watched exits 1; the rollback command exits 0',
    { timeout: 90_000 },
    async () => {
      let id = '';
      let rollback: Promise<Run> | undefined;
      const watched = ferry(
        [
          'migrate',
          'blog.example',
          '--to',
          'target',
          '--watch',
          '--json',
          '--quiet-window',
          '30000',
          '--dns-temp-cap',
          '30000',
        ],
        env,
        {
          timeoutMs: 80_000,
          onLine: (l) => {
            if (l.event === 'created') id = String(l.id);
            if (!rollback && l.event === 'phase' && (l.data as { phase: string }).phase === 'dns-temp') {
              rollback = ferry(['rollback', id, '--json'], env, { timeoutMs: 60_000 });
            }
          },
        },
      );
      const res = await watched;
      assert.ok(rollback, `the migration reached dns-temp:\n${res.stdout}\n${res.stderr}`);
      const rb = await rollback;
      assert.equal(rb.code, 0, `${rb.stdout}\n${rb.stderr}`);
      assert.equal(res.code, 1, res.stdout);
      const summary = res.lines[res.lines.length - 1]!.summary as { phase: string };
      assert.equal(summary.phase, 'rolled-back');
      const status = await ferry(['status', id], env);
      assert.equal(status.code, 1);
      assert.match(status.stdout, /phase\s+rolled-back/);
      assert.ok(
        await waitFor(
          async () => (await ferry(['records', 'blog.example', '--json'], env)).lines[0]?.A !== undefined,
          5000,
        ),
      );
    },
  );

  it(
    'evacuate through the API: every remaining site of the origin moves, exit 0',
    { timeout: 120_000 },
    async () => {
      const sitesOf = async (server: string) =>
        ((await ferry(['servers', server, '--json'], env)).lines[0]!.sites as Array<{ domain: string }>)
          .map((x) => x.domain)
          .sort();
      const onOrigin = await sitesOf('origin');
      assert.ok(onOrigin.length >= 2, `sites left on the origin: ${onOrigin.join(', ')}`);
      const res = await ferry(['evacuate', 'origin', '--to', 'target', '--json'], env, {
        timeoutMs: 110_000,
      });
      assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
      const report = res.lines[res.lines.length - 1] as {
        sites: Array<{ domain: string; phase: string }>;
        totalMs: number;
      };
      assert.deepEqual(report.sites.map((x) => x.domain).sort(), onOrigin);
      assert.ok(
        report.sites.every((x) => x.phase === 'completed'),
        JSON.stringify(report.sites),
      );
      assert.deepEqual(await sitesOf('origin'), []);
      const after = (await ferry(['servers', '--json'], env)).lines[0]!.servers as Array<{
        id: string;
        siteCount: number;
      }>;
      assert.equal(after.find((x) => x.id === 'origin')!.siteCount, 0);
    },
  );

  it('friendly errors: unreachable controller 3, wrong or missing token 4, unknown site 1, bad option 2 (a JSON error with --json)', async () => {
    const down = await ferry(['servers'], {
      FERRY_CONTROLLER: 'http://127.0.84.99:9',
      FERRY_TOKEN: OPERATOR,
    });
    assert.equal(down.code, 3);
    assert.match(down.stderr, /cannot reach the controller at http:\/\/127\.0\.84\.99:9/);
    const wrong = await ferry(['servers', '--json'], { ...env, FERRY_TOKEN: generateToken() });
    assert.equal(wrong.code, 4);
    assert.match(wrong.stderr, /refused the token/);
    assert.equal((wrong.lines[0]!.error as { code: string }).code, 'AUTH_INVALID_TOKEN');
    const none = await ferry(['servers'], { FERRY_CONTROLLER: api.url });
    assert.equal(none.code, 4);
    assert.match(none.stderr, /no API token/);
    const unknown = await ferry(['migrate', 'nope.example', '--to', 'target'], env);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no site nope\.example\. is configured/);
    const usage = await ferry(['migrate', 'shop.example'], env);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--to/);
    // With --json, a usage error is also a JSON error object on stdout.
    const usageJson = await ferry(['migrate', 'shop.example', '--json'], env);
    assert.equal(usageJson.code, 2);
    assert.equal(usageJson.lines.length, 1, usageJson.stdout);
    assert.deepEqual(Object.keys(usageJson.lines[0]!), ['error']);
    const e = usageJson.lines[0]!.error as { code: string; message: string; exitCode: number };
    assert.equal(e.code, 'USAGE');
    assert.equal(e.exitCode, 2);
    assert.match(e.message, /--to/);
    const badValue = await ferry(
      ['migrate', 'shop.example', '--to', 'target', '--ttl', 'soon', '--json'],
      env,
    );
    assert.equal(badValue.code, 2);
    assert.equal((badValue.lines[0]!.error as { code: string }).code, 'USAGE');
    // The controller's 400 for a malformed domain (it answered 500 before) is exit 2 with its code.
    const badDomain = await ferry(['migrate', 'blog..example', '--to', 'target', '--json'], env);
    assert.equal(badDomain.code, 2, badDomain.stderr);
    assert.equal((badDomain.lines[0]!.error as { code: string }).code, 'VALIDATION');
  });
});
