/**
 * Preflight parity (issue 7): a target that serves a different page is refused before the
 * cut-over, with a readable diff, and the migration is rolled back with nothing switched. The
 * default checks (GET /healthz with body, GET /orders status) pass for an honest target. The
 * hosts are real agents driven through their HTTP API, so the probes are the agents' own.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Sandbox } from '../../src/sandbox/index.js';
import { sleep } from '../../src/common/time.js';
import { STEP, type MigrationRecord } from '../../src/migration/index.js';
import { findBinary } from './helpers.js';
import { PARALLEL_LANE_REQUEST_TIMEOUT_MS } from '../load.js';

describe(
  'preflight parity refuses a target that answers differently (agents over HTTP)',
  { skip: findBinary('rsync') ? false : 'rsync is not installed' },
  () => {
    const sb = new Sandbox({
      requestTimeoutMs: PARALLEL_LANE_REQUEST_TIMEOUT_MS,
      agents: 'http',
      dnsAddress: '127.0.42.53',
      dnsPort: 0,
      httpPort: 0,
      originIp: '127.0.42.1',
      targetIp: '127.0.42.2',
      tempIp: '127.0.42.100',
      tempIpPool: ['127.0.42.100', '127.0.42.101'],
      sites: ['page.example.', 'honest.example.', 'bystander.example.'],
      ttl: 1,
      rate: 40,
      clients: 12,
      staleShare: 0.2,
      staleOverstayMs: 1500,
      quietWindowMs: 800,
      dnsTempCapMs: 10_000,
      drainCapMs: 10_000,
    });
    let refused: MigrationRecord;
    let honest: MigrationRecord;
    const before0: Record<string, unknown> = {};

    before(async () => {
      await sb.start();
      before0.record = sb.dns.zones.getRRset('page.example.', 'A');
      sb.startLoad();
      await sleep(800);
      // GET / names the server that answers it: the target's page differs from the origin's.
      const a = await sb.controller.startMigration({
        domain: 'page.example.',
        to: 'target',
        id: 'parity-page',
        parity: { http: [{ path: '/healthz' }, { path: '/' }] },
      });
      const b = await sb.controller.startMigration({
        domain: 'honest.example.',
        to: 'target',
        id: 'parity-honest',
      });
      [refused, honest] = await Promise.all([sb.controller.wait(a.plan.id), sb.controller.wait(b.plan.id)]);
      await sleep(1000);
      await sb.load.stop();
    });

    after(() => sb.stop());

    it('refuses the different page before the cut-over and rolls back', () => {
      assert.equal(refused.phase, 'rolled-back');
      const steps = sb.orchestrator.journal.entries('parity-page').map((e) => e.step);
      assert.ok(steps.includes(STEP.parity));
      for (const s of [STEP.holdRedirect, STEP.finalSync, STEP.targetServe])
        assert.ok(!steps.includes(s), `${s} ran`);
      assert.equal(sb.dns.zones.getRRset('page.example.', 'A')?.rdata[0], sb.opts.originIp);
      assert.deepEqual(sb.dns.zones.getRRset('page.example.', 'A'), before0.record);
      assert.equal(sb.targetSites.hasSite('page.example.'), false);
      assert.equal(sb.originSites.mode('page.example.'), 'serve');
    });

    it('says what differs, readably', (t) => {
      const error = refused.error ?? '';
      t.diagnostic(error);
      assert.match(error, /does not answer like origin/);
      assert.match(error, /http GET \/ :\d+: body sha256: origin [0-9a-f]{12}…, target [0-9a-f]{12}…/);
      assert.match(error, /first difference at byte \d+: origin …".*origin.*", target …".*target.*"/);
      assert.doesNotMatch(error, /healthz/, 'the /healthz check passed and is not listed');
      const results = sb.orchestrator.journal
        .entries('parity-page')
        .find((e) => e.step === STEP.parityResults)?.detail?.results as Array<{ check: string; ok: boolean }>;
      assert.deepEqual(
        results.map((r) => [r.check.replace(/:\d+$/, ''), r.ok]),
        [
          ['http GET /healthz ', true],
          ['http GET / ', false],
        ],
      );
    });

    it('lets an honest target through with the default checks', () => {
      assert.equal(honest.phase, 'completed', honest.error);
    });

    it('failed no request meanwhile', () => {
      const failed = sb.load.results().filter((r) => !r.ok);
      assert.equal(failed.length, 0, JSON.stringify(failed.slice(0, 5)));
    });
  },
);
