/** `ferry watch` rendering sync progress, fed by a fake API client (no network). */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import type { ApiClient, MigrationView, StreamEvent } from './client.js';
import { progressText, watchMigration } from './watch.js';

const VIEW: MigrationView = {
  id: 'm1',
  domain: 'shop.example.',
  from: 'origin',
  to: 'target',
  phase: 'syncing',
  createdAt: Date.now() - 1000,
  plan: { originIp: '127.0.0.1', tempIp: '127.0.0.3', targetIp: '127.0.0.2' },
  phases: [{ name: 'syncing', startedAt: Date.now() - 1000, endedAt: null }],
} as unknown as MigrationView;

let seq = 0;
const ev = (event: string, data: Record<string, unknown>): StreamEvent => ({
  id: ++seq,
  event,
  data: { seq, at: Date.now(), migrationId: 'm1', type: event, data },
});

const EVENTS: StreamEvent[] = [
  ev('phase', { phase: 'syncing' }),
  ev('sync', { phase: 'syncing', pass: 'initial-sync', from: 'origin', to: 'target', state: 'started' }),
  ev('sync', {
    phase: 'syncing',
    pass: 'initial-sync',
    from: 'origin',
    to: 'target',
    state: 'progress',
    bytes: 1_200_000_000,
    percent: 42,
    attempt: 1,
  }),
  ev('sync', {
    phase: 'syncing',
    pass: 'initial-sync',
    from: 'origin',
    to: 'target',
    state: 'progress',
    bytes: 1_500_000_000,
    percent: 55,
    attempt: 1,
  }),
  ev('sync', {
    phase: 'syncing',
    pass: 'initial-sync',
    from: 'origin',
    to: 'target',
    state: 'done',
    files: 12,
    bytes: 2_000_000_000,
    ms: 4000,
  }),
  ev('database', { phase: 'syncing', state: 'copied', bytes: 3_000_000, ms: 1500 }),
  ev('database', { phase: 'preflight', state: 'lag', lag: { seconds: 2, transactions: 17, error: '' } }),
  ev('database', {
    phase: 'cutover',
    state: 'catchup-timeout',
    attempt: 1,
    attempts: 3,
    retryAt: Date.UTC(2026, 0, 1, 12, 30, 5),
  }),
  ev('database', { phase: 'cutover', state: 'frozen', position: '0-11-4077' }),
  ev('database', { phase: 'cutover', state: 'caught-up', waitedMs: 120 }),
  ev('phase', { phase: 'completed' }),
];

function fakeClient(): ApiClient {
  let gets = 0;
  return {
    get: async () =>
      gets++ === 0
        ? VIEW
        : {
            ...VIEW,
            phase: 'completed',
            phases: [{ name: 'completed', startedAt: Date.now(), endedAt: null }],
          },
    stream: async function* () {
      for (const e of EVENTS) yield e;
    },
  } as unknown as ApiClient;
}

async function render(
  out: PassThrough & { isTTY?: boolean; columns?: number },
  json = false,
): Promise<string> {
  let text = '';
  out.on('data', (c: Buffer) => (text += c.toString('utf8')));
  await watchMigration(fakeClient(), 'm1', { out, json });
  return text;
}

test('progressText: bar, percent, bytes; no percent when unknown; the attempt of a retried pass', () => {
  assert.equal(progressText({ bytes: 1_200_000_000, percent: 42 }), '████▒▒▒▒▒▒ 42% 1.20 GB');
  assert.equal(progressText({ bytes: 5000, percent: null, files: 3 }), '▒▒▒▒▒▒▒▒▒▒ 5.0 kB, 3 files');
  assert.equal(progressText({ bytes: 10, percent: 1, attempt: 2 }), '▒▒▒▒▒▒▒▒▒▒ 1% 10 B (attempt 2, from 0)');
});

test(
  'on a terminal, progress redraws the status line in place; the pass done gets its line',
  { timeout: 10_000 },
  async () => {
    const out = Object.assign(new PassThrough(), { isTTY: true, columns: 200 });
    const text = await render(out);
    // Every redraw starts with carriage return + erase line.
    const redraws = text.split('\r\u001b[K');
    assert.ok(
      redraws.some((r) => /^\[syncing [^\]]*· sync initial-sync ████▒▒▒▒▒▒ 42% 1\.20 GB\]/.test(r)),
      text,
    );
    assert.ok(
      redraws.some((r) => /^\[syncing [^\]]*· sync initial-sync ██████▒▒▒▒ 55% 1\.50 GB\]/.test(r)),
      text,
    );
    assert.ok(!redraws.some((r) => /^\d\d:\d\d:\d\d {2}.*42%/.test(r)), 'no progress line of its own');
    assert.match(text, /sync initial-sync ██████████ 12 files, 2\.00 GB in/);
  },
);

test('without a terminal, progress is a line at most every 5 s', { timeout: 10_000 }, async () => {
  const text = await render(new PassThrough());
  const progressLines = text.split('\n').filter((l) => /sync initial-sync .*%/.test(l));
  assert.equal(progressLines.length, 1, text);
  assert.match(progressLines[0]!, /^\d\d:\d\d:\d\d {2} {2}sync initial-sync ████▒▒▒▒▒▒ 42% 1\.20 GB$/);
  assert.ok(!text.includes('\x1b['), 'no terminal codes');
});

test('--json passes progress events through as they come', { timeout: 10_000 }, async () => {
  const text = await render(new PassThrough(), true);
  const objs = text
    .trim()
    .split('\n')
    .map(
      (l) => JSON.parse(l) as { event?: string; data?: { state?: string; bytes?: number; percent?: number } },
    );
  const progress = objs.filter((o) => o.event === 'sync' && o.data?.state === 'progress');
  assert.deepEqual(
    progress.map((o) => [o.data?.bytes, o.data?.percent]),
    [
      [1_200_000_000, 42],
      [1_500_000_000, 55],
    ],
  );
});

test(
  "a web site's databases: the lag on the status line, the copy, freeze, retry and take-over as lines",
  { timeout: 10_000 },
  async () => {
    const out = Object.assign(new PassThrough(), { isTTY: true, columns: 200 });
    const text = await render(out);
    const redraws = text.split('\r\u001b[K');
    assert.ok(
      redraws.some((r) => /^\[[^\]]*· db lag 2 s, 17 tx\]/.test(r)),
      text,
    );
    assert.match(text, /databases copied: 3\.0 MB in 1\.5 s, replicating/);
    assert.match(
      text,
      /databases: the catch-up timed out \(attempt 1 of 3\); released back to the origin, next cut-over at 12:30:05/,
    );
    assert.match(text, /databases frozen on the origin at 0-11-4077/);
    assert.match(text, /databases caught up in 120 ms: the target is the writer/);
  },
);
