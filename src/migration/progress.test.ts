import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SyncProgressReport } from './ports.js';
import { PROGRESS_MAX_PER_PASS, ProgressThrottle } from './progress.js';

function throttle(start = 0) {
  let now = start;
  const out: Array<SyncProgressReport & { at: number }> = [];
  const t = new ProgressThrottle(
    (p) => out.push({ ...p, at: now }),
    () => now,
    start,
  );
  return { t, out, advance: (ms: number) => (now += ms), at: () => now };
}

test('the first report goes at once, then one a second, and the held-back last one at the end', () => {
  const { t, out, advance } = throttle();
  for (let i = 1; i <= 2500; i++) {
    t.report({ bytes: i, percent: i / 25, attempt: 1 });
    advance(1); // 2500 reports over 2.5 s
  }
  assert.deepEqual(
    out.map((p) => p.bytes),
    [1, 1001, 2001],
  );
  t.end(true);
  assert.deepEqual(
    out.map((p) => p.bytes),
    [1, 1001, 2001, 2500],
    'the final figure',
  );
  t.report({ bytes: 9999, percent: 100 });
  assert.equal(out.length, 4, 'nothing after the end');
});

test('a failed pass drops what was held back', () => {
  const { t, out, advance } = throttle();
  t.report({ bytes: 1, percent: null });
  advance(10);
  t.report({ bytes: 2, percent: null });
  t.end(false);
  assert.deepEqual(
    out.map((p) => p.bytes),
    [1],
  );
});

test('a new attempt is published at once, so the restart from 0 shows with its number', () => {
  const { t, out, advance } = throttle();
  t.report({ bytes: 500, percent: 50, attempt: 1 });
  advance(100);
  t.report({ bytes: 10, percent: 1, attempt: 2 });
  advance(100);
  t.report({ bytes: 20, percent: 2, attempt: 2 });
  assert.deepEqual(
    out.map((p) => [p.attempt, p.bytes]),
    [
      [1, 500],
      [2, 10],
    ],
  );
});

test('the spacing grows with the pass age: a day-long pass stays well inside the event history', () => {
  const { t, out, advance } = throttle();
  const day = 24 * 3600 * 1000;
  for (let ms = 0; ms < day; ms += 250) {
    t.report({ bytes: ms, percent: null });
    advance(250);
  }
  t.end(true);
  assert.ok(out.length <= PROGRESS_MAX_PER_PASS, `${out.length} events`);
  assert.ok(out.length < 1000 && out.length > 300, `${out.length} events in a day`);
  // Still at most one a second at the start.
  const first = out.filter((p) => p.at < 60_000);
  assert.ok(first.length <= 60 && first.length >= 55, `${first.length} in the first minute`);
});
