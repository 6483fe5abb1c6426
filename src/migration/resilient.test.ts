import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';
import type { HostDriver, SyncProgressReport, SyncSiteOptions } from './ports.js';
import { ResilientHost, withRetry } from './resilient.js';

const POLICY = { attempts: 3, baseDelayMs: 5, maxDelayMs: 10, callTimeoutMs: 1000, syncTimeoutMs: 1000 };

/** A driver whose syncSite runs `impl`; nothing else is called. */
function driver(
  impl: (domain: string, to: HostDriver, opts?: SyncSiteOptions) => Promise<{ files: number; bytes: number }>,
): HostDriver {
  return { id: 'fake', syncSite: impl } as unknown as HostDriver;
}

test('ResilientHost.syncSite passes onProgress through, numbering the attempt', async () => {
  const seen: SyncProgressReport[] = [];
  const calls: Array<SyncSiteOptions | undefined> = [];
  const host = new ResilientHost(
    driver(async (_d, _to, opts) => {
      calls.push(opts);
      opts?.onProgress?.({ bytes: 10, percent: 50, files: 1 });
      opts?.onProgress?.({ bytes: 20, percent: null });
      return { files: 2, bytes: 20 };
    }),
    POLICY,
  );
  const res = await host.syncSite(
    'a.example',
    driver(async () => ({ files: 0, bytes: 0 })),
    { onProgress: (p) => seen.push(p) },
  );
  assert.deepEqual(res, { files: 2, bytes: 20 });
  assert.equal(typeof calls[0]?.onProgress, 'function');
  assert.deepEqual(seen, [
    { bytes: 10, percent: 50, files: 1, attempt: 1 },
    { bytes: 20, percent: null, attempt: 1 },
  ]);
  // Without onProgress the inner driver is called as before.
  await host.syncSite(
    'a.example',
    driver(async () => ({ files: 0, bytes: 0 })),
  );
  assert.equal(calls[1], undefined);
});

test('a retried sync reports from 0 with the next attempt; an abandoned attempt and a settled sync report nothing', async () => {
  const seen: SyncProgressReport[] = [];
  const late: Array<(p: SyncProgressReport) => void> = [];
  let n = 0;
  const host = new ResilientHost(
    driver(async (_d, _to, opts) => {
      const report = opts!.onProgress!;
      late.push(report);
      if (++n === 1) {
        report({ bytes: 700, percent: 70 });
        throw new FerryError('AGENT_DOWN', 'lost the agent');
      }
      report({ bytes: 0, percent: 0 });
      late[0]!({ bytes: 999, percent: 99 }); // the first attempt, still running somewhere
      report({ bytes: 1000, percent: 100 });
      return { files: 1, bytes: 1000 };
    }),
    POLICY,
  );
  const res = await host.syncSite(
    'b.example',
    driver(async () => ({ files: 0, bytes: 0 })),
    { onProgress: (p) => seen.push(p) },
  );
  assert.deepEqual(res, { files: 1, bytes: 1000 });
  late[1]!({ bytes: 1, percent: 1 }); // after the sync settled
  await sleep(5);
  assert.deepEqual(
    seen.map((p) => [p.attempt, p.bytes]),
    [
      [1, 700],
      [2, 0],
      [2, 1000],
    ],
  );
});

test(
  'reports of an attempt that timed out are dropped while the next one runs',
  { timeout: 10_000 },
  async () => {
    const seen: SyncProgressReport[] = [];
    let n = 0;
    const host = new ResilientHost(
      driver(async (_d, _to, opts) => {
        const report = opts!.onProgress!;
        if (++n === 1) {
          // Outlives its timeout and keeps reporting.
          const t = setInterval(() => report({ bytes: 5, percent: null }), 5);
          await sleep(400);
          clearInterval(t);
          return { files: 0, bytes: 0 };
        }
        report({ bytes: 1, percent: null });
        await sleep(20); // attempt 1 is still reporting meanwhile
        report({ bytes: 2, percent: null });
        return { files: 1, bytes: 2 };
      }),
      { ...POLICY, syncTimeoutMs: 150 },
    );
    await host.syncSite(
      'c.example',
      driver(async () => ({ files: 0, bytes: 0 })),
      { onProgress: (p) => seen.push(p) },
    );
    await sleep(300); // until attempt 1 stops
    assert.ok(seen.length >= 2, JSON.stringify(seen));
    const second = seen.findIndex((p) => p.attempt === 2);
    assert.ok(second > 0, 'attempt 2 reported');
    assert.ok(
      seen.slice(second).every((p) => p.attempt === 2),
      JSON.stringify(seen),
    );
  },
);

test('withRetry: a bad request (a 400 code of the error table) is not repeated; a flaky peer is', async () => {
  let calls = 0;
  await assert.rejects(
    withRetry(
      'bad',
      async () => {
        calls++;
        throw new FerryError('VALIDATION', 'body/mode must be equal to one of the allowed values');
      },
      POLICY,
    ),
    (err: unknown) => err instanceof FerryError && err.code === 'VALIDATION',
  );
  assert.equal(calls, 1);
  calls = 0;
  await assert.rejects(
    withRetry(
      'flaky',
      async () => {
        calls++;
        throw new FerryError('AGENT_UNREACHABLE', 'connection refused');
      },
      POLICY,
    ),
    (err: unknown) => err instanceof FerryError && err.code === 'CALL_FAILED',
  );
  assert.equal(calls, POLICY.attempts);
});

test('ResilientHost: the web-site calls only when the agent has them, retried alike, a bundle never in a label; refusals not repeated', async () => {
  assert.equal(
    new ResilientHost(
      driver(async () => ({ files: 0, bytes: 0 })),
      POLICY,
    ).installWebSite,
    undefined,
  );
  const secret = 'PRIVATE-KEY-BYTES-0123456789';
  let installs = 0;
  let inspects = 0;
  const finishes: unknown[][] = [];
  const retries: string[] = [];
  const inner = {
    id: 'web',
    installWebSite: async (b: { domain: string }) => {
      if (++installs === 1) throw new FerryError('AGENT_DOWN', `connection reset (${b.domain})`);
    },
    inspectWebSite: async () => {
      inspects++;
      throw new FerryError('WEBCONFIG_NONE', 'no --web-config');
    },
    finishWebSite: async (...args: unknown[]) => void finishes.push(args),
  } as unknown as HostDriver;
  const host = new ResilientHost(inner, POLICY, (what, _n, err) => retries.push(`${what}: ${String(err)}`));
  assert.equal(host.gateWebSite, undefined);
  await host.installWebSite!({ domain: 'shop.example', key: secret } as { domain: string });
  assert.equal(installs, 2);
  assert.equal(retries.length, 1);
  assert.match(retries[0]!, /^host web: installWebSite\(shop\.example\): /);
  assert.ok(!retries[0]!.includes(secret));
  await assert.rejects(
    host.inspectWebSite!('shop.example'),
    (e: unknown) => (e as FerryError).code === 'WEBCONFIG_NONE',
  );
  assert.equal(inspects, 1, 'a server without a web server is not asked again');
  await host.finishWebSite!('shop.example', 'target');
  await host.finishWebSite!('shop.example', 'origin', { backupKeepMs: 5 });
  assert.deepEqual(finishes, [
    ['shop.example', 'target'],
    ['shop.example', 'origin', { backupKeepMs: 5 }],
  ]);
});

test("ResilientHost's database calls: a copy is tried once, a catch-up timeout is not repeated, the rest ride out a lost agent", async () => {
  const calls: string[] = [];
  const lost = () => new FerryError('AGENT_UNREACHABLE', 'connection refused');
  const source = { host: '192.0.2.1', port: 3306, user: 'ferry_m1', password: 'secret-pw-123' };
  const plan = { move: [{ name: 'wp', bytes: 1, users: ['wp'], source: 'ferry.yaml' }], leftInPlace: [] };
  let opens = 0;
  const inner = {
    id: 'fake',
    copyDatabases: async () => {
      calls.push('copy');
      throw lost();
    },
    takeOverDatabases: async () => {
      calls.push('takeOver');
      throw new FerryError('DB_CATCHUP_TIMEOUT', 'not there within 10 ms');
    },
    openDatabaseSource: async () => {
      calls.push('open');
      if (++opens < 3) throw lost();
      return source;
    },
  } as unknown as HostDriver;
  const host = new ResilientHost(inner, POLICY);
  assert.equal(host.freezeDatabases, undefined, 'only what the inner driver has is wrapped');
  await assert.rejects(host.copyDatabases!('m1', 'a.example', source, plan), (e: FerryError) => {
    assert.equal(e.code, 'AGENT_UNREACHABLE');
    assert.ok(!e.message.includes(source.password));
    return true;
  });
  await assert.rejects(
    host.takeOverDatabases!('m1', 'a.example', '1-1-5', 10),
    (e: FerryError) => e.code === 'DB_CATCHUP_TIMEOUT',
  );
  assert.deepEqual(await host.openDatabaseSource!('m1', 'a.example', '192.0.2.2'), source);
  assert.deepEqual(calls, ['copy', 'takeOver', 'open', 'open', 'open']);
});
