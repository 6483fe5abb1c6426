/** Retired sites' backups are removed once their keep time is over, and not before. */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { NginxFlavor } from './nginx.js';
import { WebStack } from './stack.js';

let dir = '';
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('pruneBackups removes the backups whose keep time is over and keeps the others', async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-backups-'));
  const stack = new WebStack({
    flavor: new NginxFlavor(),
    webConfig: { kind: 'nginx' },
    dataDir: dir,
    includeDir: join(dir, 'conf.d'),
    gate: { address: '127.0.0.1', port: 8080 },
    sharedIp: '127.0.0.1',
  });
  const now = 1_800_000_000_000;
  const backup = async (name: string, keepUntil: number | null) => {
    const d = join(dir, 'backups', name);
    await mkdir(join(d, 'data'), { recursive: true });
    await writeFile(join(d, 'data', 'index.html'), 'kept\n');
    if (keepUntil !== null)
      await writeFile(
        join(d, 'manifest.json'),
        JSON.stringify({ domain: name, createdAt: 0, keepUntil, items: [] }),
      );
  };
  await backup('old.example-1', now - 1);
  await backup('due.example-1', now);
  await backup('new.example-1', now + 60_000);
  await backup('no-manifest', null);
  const removed = await stack.pruneBackups(now);
  assert.deepEqual(removed.map((p) => p.split('/').at(-1)).sort(), ['due.example-1', 'old.example-1']);
  assert.deepEqual((await readdir(join(dir, 'backups'))).sort(), ['new.example-1', 'no-manifest']);
  assert.deepEqual(await stack.pruneBackups(now), []);
});
