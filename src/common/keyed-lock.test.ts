import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyedLock } from './keyed-lock.js';
import { sleep } from './time.js';

test('KeyedLock: one key runs in order, a failure does not block the next, other keys run meanwhile', async () => {
  const lock = new KeyedLock();
  const seen: string[] = [];
  const job =
    (name: string, ms: number, fail = false) =>
    async () => {
      seen.push(`start ${name}`);
      await sleep(ms);
      seen.push(`end ${name}`);
      if (fail) throw new Error(name);
      return name;
    };
  const a1 = lock.run('a', job('a1', 30, true));
  const a2 = lock.run('a', job('a2', 1));
  const b1 = lock.run('b', job('b1', 1));
  await assert.rejects(a1, /a1/);
  assert.equal(await a2, 'a2');
  assert.equal(await b1, 'b1');
  assert.deepEqual(
    seen.filter((s) => s.endsWith('a1') || s.endsWith('a2')),
    ['start a1', 'end a1', 'start a2', 'end a2'],
  );
  assert.ok(seen.indexOf('end b1') < seen.indexOf('end a1'), 'b did not wait for a');
});
