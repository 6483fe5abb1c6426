import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import {
  appendFile,
  chmod,
  chown,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { syncDirectory, syncPaths } from './sync.js';

async function dirs(t: TestContext): Promise<{ src: string; dst: string }> {
  const root = await mkdtemp(join(tmpdir(), 'ferry-sync-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const src = join(root, 'src');
  await mkdir(join(src, 'sub', 'deeper'), { recursive: true });
  await writeFile(join(src, 'orders.jsonl'), '{"id":1}\n');
  await writeFile(join(src, 'sub', 'a.txt'), 'aaa');
  await writeFile(join(src, 'sub', 'deeper', 'b.txt'), 'bbbb');
  return { src, dst: join(root, 'dst') };
}

test('initial sync copies everything and preserves mtimes', async (t) => {
  const { src, dst } = await dirs(t);
  const old = new Date('2020-01-02T03:04:05.678Z');
  await utimes(join(src, 'sub', 'a.txt'), old, old);
  const r = await syncDirectory(src, dst);
  assert.deepEqual(r, { files: 3, bytes: 9 + 3 + 4, deleted: 0 });
  assert.equal(await readFile(join(dst, 'sub', 'deeper', 'b.txt'), 'utf8'), 'bbbb');
  // utimes() goes through a double of seconds: microsecond precision, not nanosecond.
  assert.ok(Math.abs((await stat(join(dst, 'sub', 'a.txt'))).mtimeMs - old.getTime()) < 0.01);
  const s = await stat(join(src, 'orders.jsonl'));
  const d = await stat(join(dst, 'orders.jsonl'));
  assert.ok(Math.abs(s.mtimeMs - d.mtimeMs) < 0.01);
});

test('a second pass copies only what changed, and nothing when nothing did', async (t) => {
  const { src, dst } = await dirs(t);
  await syncDirectory(src, dst);
  assert.deepEqual(await syncDirectory(src, dst), { files: 0, bytes: 0, deleted: 0 });
  await appendFile(join(src, 'orders.jsonl'), '{"id":2}\n');
  const r = await syncDirectory(src, dst);
  assert.deepEqual(r, { files: 1, bytes: 18, deleted: 0 });
  assert.equal(await readFile(join(dst, 'orders.jsonl'), 'utf8'), '{"id":1}\n{"id":2}\n');
  // Same size, different mtime: copied.
  await writeFile(join(src, 'sub', 'a.txt'), 'AAA');
  await utimes(join(src, 'sub', 'a.txt'), new Date(), new Date(Date.now() + 5000));
  assert.equal((await syncDirectory(src, dst)).files, 1);
  assert.equal(await readFile(join(dst, 'sub', 'a.txt'), 'utf8'), 'AAA');
  // No temporary files are left behind.
  assert.deepEqual((await readdir(join(dst, 'sub'))).sort(), ['a.txt', 'deeper']);
});

test('checksum catches a change that kept size and mtime', async (t) => {
  const { src, dst } = await dirs(t);
  await syncDirectory(src, dst);
  const st = await stat(join(src, 'sub', 'a.txt'));
  await writeFile(join(dst, 'sub', 'a.txt'), 'zzz');
  await utimes(join(dst, 'sub', 'a.txt'), st.atime, st.mtimeMs / 1000);
  assert.equal((await syncDirectory(src, dst)).files, 0);
  assert.equal((await syncDirectory(src, dst, { checksum: true })).files, 1);
  assert.equal(await readFile(join(dst, 'sub', 'a.txt'), 'utf8'), 'aaa');
});

test('delete removes what the source no longer has; without it extra files stay', async (t) => {
  const { src, dst } = await dirs(t);
  await syncDirectory(src, dst);
  await rm(join(src, 'sub', 'deeper'), { recursive: true });
  await writeFile(join(dst, 'stray.txt'), 'x');
  assert.equal((await syncDirectory(src, dst)).deleted, 0);
  assert.ok(await stat(join(dst, 'stray.txt')));
  const r = await syncDirectory(src, dst, { delete: true });
  assert.equal(r.deleted, 2);
  assert.deepEqual((await readdir(dst)).sort(), ['orders.jsonl', 'sub']);
  assert.deepEqual(await readdir(join(dst, 'sub')), ['a.txt']);
});

test('a missing source is an error with a code', async (t) => {
  const { dst } = await dirs(t);
  await assert.rejects(syncDirectory(join(dst, 'nope'), dst), { code: 'SYNC_SOURCE' });
});

test('progress: bytes copied so far add up to the total, percent of the source examined, 100 at the end', async (t) => {
  const { src, dst } = await dirs(t);
  await writeFile(join(src, 'big.bin'), Buffer.alloc(100_000, 7));
  const seen: Array<{ bytes: number; files: number; percent: number }> = [];
  const r = await syncDirectory(src, dst, { delete: true, onProgress: (p) => seen.push({ ...p }) });
  assert.equal(r.bytes, 100_000 + 9 + 3 + 4);
  assert.equal(seen.length, 4 + 1, 'one report per file and one at the end');
  for (let i = 1; i < seen.length; i++) {
    assert.ok(seen[i]!.bytes >= seen[i - 1]!.bytes, 'bytes never go back');
    assert.ok(seen[i]!.percent >= seen[i - 1]!.percent, 'percent never goes back');
  }
  assert.ok(seen.every((p) => p.percent >= 0 && p.percent <= 100));
  assert.deepEqual(seen.at(-1), { bytes: r.bytes, files: r.files, percent: 100 });
  // The bytes of each report are the sizes of the files copied before it.
  const steps = seen.map((p, i) => p.bytes - (seen[i - 1]?.bytes ?? 0)).filter((b) => b > 0);
  assert.deepEqual(
    [...steps].sort((a, b) => a - b),
    [3, 4, 9, 100_000],
  );

  // A delta pass examines everything (percent moves) and copies only what changed.
  await appendFile(join(src, 'sub', 'a.txt'), 'a');
  const delta: Array<{ bytes: number; percent: number }> = [];
  const r2 = await syncDirectory(src, dst, { onProgress: (p) => delta.push(p) });
  assert.deepEqual(r2, { files: 1, bytes: 4, deleted: 0 });
  assert.equal(delta.at(-1)!.bytes, 4);
  assert.equal(delta.at(-1)!.percent, 100);
  assert.equal(delta.length, 4 + 1, 'a report for each file examined, copied or not');
  assert.ok(delta.every((p, i) => i === 0 || p.percent >= delta[i - 1]!.percent));
});

test('progress of an empty source: one report, 0 bytes, 100 percent', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'ferry-sync-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  await mkdir(join(root, 'src'));
  const seen: unknown[] = [];
  await syncDirectory(join(root, 'src'), join(root, 'dst'), { onProgress: (p) => seen.push(p) });
  assert.deepEqual(seen, [{ bytes: 0, files: 0, percent: 100 }]);
});

test(
  'modes are kept, and owners as root: an application writing as its own user still can on the copy',
  { skip: process.getuid?.() === 0 ? false : 'changing owners needs root' },
  async (t) => {
    const { src, dst } = await dirs(t);
    // 65534: nobody, on every Linux; any owner other than root shows it.
    await chown(join(src, 'sub'), 65534, 65534);
    await chown(join(src, 'sub', 'a.txt'), 65534, 65534);
    await chmod(join(src, 'sub', 'deeper'), 0o750);
    await chmod(join(src, 'orders.jsonl'), 0o640);
    await syncDirectory(src, dst);
    const sub = await stat(join(dst, 'sub'));
    const a = await stat(join(dst, 'sub', 'a.txt'));
    assert.deepEqual([sub.uid, sub.gid, a.uid, a.gid], [65534, 65534, 65534, 65534]);
    assert.equal((await stat(join(dst, 'orders.jsonl'))).uid, 0);
    assert.equal((await stat(join(dst, 'sub', 'deeper'))).mode & 0o777, 0o750);
    assert.equal((await stat(join(dst, 'orders.jsonl'))).mode & 0o777, 0o640);
    // A tracked pass (syncPaths) keeps them too.
    await writeFile(join(src, 'sub', 'a.txt'), 'changed');
    await chown(join(src, 'sub', 'a.txt'), 65534, 65534);
    await syncPaths(src, dst, ['sub/a.txt']);
    assert.equal((await stat(join(dst, 'sub', 'a.txt'))).uid, 65534);
  },
);
