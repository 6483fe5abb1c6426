/**
 * Sync progress, end to end in the orchestrator: a driver that reports progress very often while
 * it copies, and one whose first attempt fails; the controller's events show `sync` `progress`
 * with growing bytes, throttled, between `started` and `done`, and none of it in the journal.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';
import { Controller, type ControllerEvent } from '../controller/index.js';
import { Sandbox } from '../sandbox/index.js';
import {
  STEP,
  syncDoneNote,
  EmbeddedDnsProvider,
  Journal,
  type HostDriver,
  type SyncSiteOptions,
} from './index.js';

describe('orchestrator: sync progress events', () => {
  const sb = new Sandbox({
    dnsAddress: '127.0.57.53',
    dnsPort: 0,
    httpPort: 0,
    originIp: '127.0.57.1',
    targetIp: '127.0.57.2',
    tempIp: '127.0.57.100',
    sites: ['chatty.example.', 'retried.example.'],
    ttl: 1,
    rate: 10,
    clients: 2,
    quietWindowMs: 300,
    dnsTempCapMs: 4000,
    drainCapMs: 4000,
  });
  let ctl: Controller;
  let journal: Journal;
  const events: ControllerEvent[] = [];
  const REPORTS = 4000;
  let firstAttempts = 0;

  before(async () => {
    await sb.start();
    const inner = sb.origin;
    // The origin's sync: for chatty.example., thousands of progress reports over ~1.6 s before the
    // real copy; for retried.example., a first attempt that reports, fails, and reports once more late.
    const syncSite = async (
      domain: string,
      to: HostDriver,
      opts?: SyncSiteOptions,
    ): Promise<{ files: number; bytes: number }> => {
      const report = opts?.onProgress;
      if (domain === 'chatty.example.') {
        for (let i = 1; i <= REPORTS; i++) {
          report?.({ bytes: i * 1000, percent: (i * 100) / REPORTS, files: Math.floor(i / 100) });
          if (i % 100 === 0) await sleep(40);
        }
        return inner.syncSite(domain, to);
      }
      if (domain === 'retried.example.' && firstAttempts++ === 0) {
        report?.({ bytes: 5_000_000, percent: 80 });
        setTimeout(() => report?.({ bytes: 6_000_000, percent: 90 }), 5); // the failed attempt, still talking
        throw new FerryError('AGENT_DOWN', 'connection reset during the push');
      }
      return inner.syncSite(domain, to, opts);
    };
    const origin = new Proxy(inner, {
      get(target, prop) {
        if (prop === 'syncSite') return syncSite;
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    journal = new Journal(join(sb.dataDir, 'progress-journal.sqlite'), { durability: 'process' });
    ctl = new Controller({
      dns: new EmbeddedDnsProvider({ server: sb.dns }),
      servers: [
        {
          id: 'origin',
          driver: origin,
          sharedIps: [sb.opts.originIp],
          tempIpPool: ['127.0.57.100', '127.0.57.101'],
        },
        { id: 'target', driver: sb.target, sharedIps: [sb.opts.targetIp], tempIpPool: [] },
      ],
      sites: sb.opts.sites.map((domain) => ({ domain, server: 'origin', ports: [sb.httpPort] })),
      journal,
      defaults: { ttl: 1, quietWindowMs: 300, dnsTempCapMs: 4000, drainCapMs: 4000, pollMs: 100 },
      retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 50, callTimeoutMs: 3000, syncTimeoutMs: 20_000 },
    });
    ctl.on('event', (e) => events.push(e));
  });

  after(async () => {
    await ctl?.close();
    journal?.close();
    await sb.stop();
  });

  const syncOf = (id: string, pass: string) =>
    events.filter((e) => e.migrationId === id && e.type === 'sync' && e.data.pass === pass);

  it(
    'publishes progress between started and done, throttled, with growing bytes and the final figure',
    { timeout: 60_000 },
    async () => {
      await ctl.startMigration({ domain: 'chatty.example.', to: 'target', id: 'chatty' });
      const rec = await ctl.wait('chatty');
      assert.equal(rec.phase, 'completed', rec.error);

      const sync = syncOf('chatty', STEP.initialSync);
      const states = sync.map((e) => e.data.state);
      assert.equal(states[0], 'started');
      assert.equal(states.at(-1), 'done');
      const progress = sync.filter((e) => e.data.state === 'progress');
      assert.deepEqual(
        states.slice(1, -1),
        progress.map(() => 'progress'),
        'progress only between started and done',
      );

      // Throttled: the first at once, then at most one a second, plus the final one.
      const spanMs = sync.at(-1)!.at - sync[0]!.at;
      assert.ok(progress.length >= 2, `${progress.length} progress events`);
      assert.ok(
        progress.length <= Math.floor(spanMs / 1000) + 2,
        `${progress.length} progress events in ${spanMs} ms for ${REPORTS} reports`,
      );
      for (let i = 1; i < progress.length; i++) {
        assert.ok(Number(progress[i]!.data.bytes) > Number(progress[i - 1]!.data.bytes), 'bytes grow');
        assert.ok(
          progress[i]!.at - progress[i - 1]!.at >= 990 || i === progress.length - 1,
          'a second apart, but for the final one',
        );
      }
      const first = progress[0]!.data;
      assert.deepEqual(
        {
          from: first.from,
          to: first.to,
          pass: first.pass,
          bytes: first.bytes,
          percent: first.percent,
          attempt: first.attempt,
        },
        {
          from: 'origin',
          to: 'target',
          pass: STEP.initialSync,
          bytes: 1000,
          percent: 100 / REPORTS,
          attempt: 1,
        },
      );
      assert.equal(progress.at(-1)!.data.bytes, REPORTS * 1000, 'the final figure');
      assert.equal(progress.at(-1)!.data.percent, 100);

      // The final pass went through the in-process sync: its progress carries bytes and percent too.
      const finalProgress = syncOf('chatty', STEP.finalSync).filter((e) => e.data.state === 'progress');
      assert.ok(finalProgress.length >= 1);
      assert.equal(finalProgress.at(-1)!.data.percent, 100);

      // The journal has the passes' steps and their done notes, no progress.
      const entries = journal.entries('chatty');
      assert.ok(
        entries.some((e) => e.step === STEP.initialSync) &&
          entries.some((e) => e.step === syncDoneNote(STEP.initialSync)),
      );
      assert.ok(!entries.some((e) => JSON.stringify(e.detail ?? {}).includes('progress')));
    },
  );

  it(
    'a retried pass reports from 0 with the next attempt, and nothing from the failed attempt afterwards',
    { timeout: 60_000 },
    async () => {
      await ctl.startMigration({ domain: 'retried.example.', to: 'target', id: 'retried' });
      const rec = await ctl.wait('retried');
      assert.equal(rec.phase, 'completed', rec.error);
      await sleep(50);
      const progress = syncOf('retried', STEP.initialSync).filter((e) => e.data.state === 'progress');
      assert.deepEqual(progress[0]!.data.attempt, 1);
      assert.equal(progress[0]!.data.bytes, 5_000_000);
      const second = progress.slice(1);
      assert.ok(second.length >= 1, 'the second attempt reported');
      assert.ok(
        second.every((e) => e.data.attempt === 2),
        JSON.stringify(progress.map((e) => e.data)),
      );
      assert.ok(
        !progress.some((e) => e.data.bytes === 6_000_000),
        'the late report of the failed attempt was dropped',
      );
      assert.ok(
        events.some((e) => e.type === 'retry' && String(e.data.what).includes('syncSite(retried.example.')),
      );
    },
  );
});
