/**
 * Tracked sync passes with real files, real inotify (inotifywait) and real rsync between two
 * agents on loopback (127.0.67.0/24): after the first full pass, a pass copies exactly what
 * changed (written, created in new subfolders, deleted, renamed, chmod'ed), a change made while a
 * pass runs is in the next one, an overflowed or killed watch falls back to a full pass with the
 * same result, and the target ends equal to a plain `rsync -a --delete` copy of the source. The
 * same with the sandbox's in-process copy; the watch ends when the site is removed or proxied.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import {
  appendFile,
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rename,
  rm,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from '../../test/e2e/helpers.js';
import { freePort } from '../../test/ports.js';
import { waitFor } from '../common/time.js';
import { LoopbackAddresses } from './addresses.js';
import { HostAgent } from './agent.js';
import { ChangeTracker } from './tracker.js';
import { InProcessTransport } from './transport.js';

const SITE_IP = 'inproc.example';
/** The kernel's inotify queue size (the overflow test writes more events than this). */
const QUEUE = Number(readFileSync('/proc/sys/fs/inotify/max_queued_events', 'utf8').trim());

const missing = !findBinary('rsync')
  ? 'rsync is not installed'
  : !findBinary('inotifywait')
    ? 'inotifywait (Debian inotify-tools) is not installed'
    : false;

/** Every entry under `dir`: type, mode, and for files size, mtime and content hash. */
async function tree(dir: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    const s = await lstat(join(dir, p));
    const mode = (s.mode & 0o7777).toString(8);
    if (e.isDirectory()) {
      out[p] = `dir ${mode}`;
      Object.assign(out, await tree(dir, p));
    } else {
      const sha = createHash('sha256')
        .update(await readFile(join(dir, p)))
        .digest('hex')
        .slice(0, 16);
      out[p] = `file ${mode} ${s.size} ${Math.floor(s.mtimeMs)} ${sha}`;
    }
  }
  return out;
}

describe('tracked sync passes', { skip: missing }, () => {
  let dir: string;
  let a: HostAgent;
  let b: HostAgent;
  let src: string;
  const site = 'tracked.example';
  const logs: string[] = [];

  /** One pass from a to b, as the orchestrator's syncSite runs it, with the pass kind. */
  async function pass(onProgress?: () => void) {
    const to = await b.openSyncReceiver(site);
    const res = await a.pushSite(site, to, undefined, onProgress);
    await b.reloadSite(site);
    return res;
  }

  /** The target equals the source, and equals what a plain full rsync of the source makes. */
  async function assertSameAsFullRsync() {
    const ref = join(dir, 'ref');
    const r = spawnSync('rsync', ['-a', '--delete', `${src}/`, `${ref}/`]);
    assert.equal(r.status, 0, r.stderr?.toString());
    const want = await tree(ref);
    assert.deepEqual(await tree(b.siteDataDir(site)), want);
    assert.deepEqual(await tree(src), want);
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-tracker-'));
    const agent = async (id: string, ip: string) =>
      new HostAgent({
        id,
        dataDir: join(dir, id),
        sharedIps: [ip],
        httpPort: 0,
        addresses: new LoopbackAddresses(),
        web: { kind: 'builtin' },
        rsync: { port: await freePort(ip) },
        log: (m) => logs.push(m),
      });
    a = await agent('alpha', '127.0.67.1');
    b = await agent('beta', '127.0.67.2');
    await a.start();
    await b.start();
    await a.addSite(site, 'serve');
    await b.addSite(site, 'readonly');
    src = a.siteDataDir(site);
    for (let i = 0; i < 30; i++) {
      await mkdir(join(src, `d${i % 5}`, `e${i % 3}`), { recursive: true });
      await writeFile(join(src, `d${i % 5}`, `e${i % 3}`, `f${i}.txt`), `file ${i}\n`.repeat(50));
    }
    await mkdir(join(src, 'gone-dir', 'inner'), { recursive: true });
    await writeFile(join(src, 'gone-dir', 'inner', 'x'), 'x');
    await mkdir(join(src, 'moved-dir'), { recursive: true });
    await writeFile(join(src, 'moved-dir', 'y'), 'y');
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('after a full first pass, a pass copies exactly what changed, new subfolders, deletions and renames included', async () => {
    const first = await pass();
    assert.equal(first.pass, 'full');
    assert.equal(first.files, 32);
    assert.ok(a.tracking(site)?.running, 'the first pass starts the watch');
    await assertSameAsFullRsync();

    const unchanged = await pass();
    assert.deepEqual([unchanged.pass, unchanged.files], ['tracked', 0]);

    await appendFile(join(src, 'd0', 'e0', 'f0.txt'), 'more\n'); // written
    await mkdir(join(src, 'new', 'deep', 'er'), { recursive: true }); // created with a new subtree
    await writeFile(join(src, 'new', 'deep', 'er', 'n.txt'), 'new');
    await writeFile(join(src, 'top.txt'), 'top'); // created
    await rm(join(src, 'd1', 'e1', 'f1.txt')); // deleted
    await rename(join(src, 'd2', 'e2', 'f2.txt'), join(src, 'd3', 'renamed.txt')); // renamed across folders
    await rm(join(src, 'gone-dir'), { recursive: true }); // a folder deleted
    await rename(join(src, 'moved-dir'), join(src, 'd4', 'moved-here')); // a folder renamed
    await chmod(join(src, 'd4', 'e1', 'f4.txt'), 0o600); // attributes only
    const delta = await pass();
    assert.equal(delta.pass, 'tracked');
    // f0, n.txt, top.txt, renamed.txt, moved-here/y; f4 only had its mode changed.
    assert.equal(delta.files, 5);
    await assertSameAsFullRsync();
  });

  test('a change made while a pass runs is in the next pass', async () => {
    await writeFile(join(src, 'big.bin'), Buffer.alloc(64 << 20, 7));
    let written: Promise<void> | undefined;
    const res = await pass(() => {
      written ??= writeFile(join(src, 'during.txt'), 'written while the pass ran');
    });
    assert.ok(written, 'the pass reported progress while it ran');
    await written;
    assert.equal(res.pass, 'tracked');
    const next = await pass();
    assert.equal(next.pass, 'tracked');
    assert.ok(next.files >= 1);
    assert.equal(
      await readFile(join(b.siteDataDir(site), 'during.txt'), 'utf8'),
      'written while the pass ran',
    );
    await assertSameAsFullRsync();
  });

  test('a killed watch falls back to a full pass, logged with the reason, and tracking resumes', async () => {
    const pid = a.tracking(site)!.pid!;
    process.kill(pid, 'SIGKILL');
    assert.ok(await waitFor(() => a.tracking(site)?.running === false, 5000));
    await writeFile(join(src, 'after-kill.txt'), 'k');
    await rm(join(src, 'top.txt'));
    logs.length = 0;
    const full = await pass();
    assert.equal(full.pass, 'full');
    assert.ok(
      logs.some((l) => l.includes(site) && l.includes('full pass') && l.includes('watch exited')),
      logs.join('\n'),
    );
    await assertSameAsFullRsync();
    assert.notEqual(a.tracking(site)?.pid, pid, 'a new watch runs');
    await writeFile(join(src, 'after-restart.txt'), 'r');
    const next = await pass();
    assert.deepEqual([next.pass, next.files], ['tracked', 1]);
    await assertSameAsFullRsync();
  });

  test(
    'an overflowed inotify queue falls back to a full pass with the same result',
    {
      skip:
        QUEUE > 100_000
          ? `fs.inotify.max_queued_events is ${QUEUE}: overflowing it takes too many writes`
          : false,
    },
    async () => {
      const pid = a.tracking(site)!.pid!;
      const max = QUEUE;
      // A stopped watcher reads nothing: more events than the kernel queues make it overflow for real.
      await mkdir(join(src, 'flood'), { recursive: true });
      assert.equal((await pass()).pass, 'tracked'); // the new folder is watched from here on
      process.kill(pid, 'SIGSTOP');
      try {
        for (let i = 0; i <= max; i++) await writeFile(join(src, 'flood', `f${i % 500}`), String(i));
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      logs.length = 0;
      const full = await pass();
      assert.equal(full.pass, 'full');
      assert.ok(
        logs.some((l) => l.includes('overflow')),
        logs.join('\n'),
      );
      await assertSameAsFullRsync();
      // The overflowed queue's events may straddle two passes: the next one is full as well.
      await rm(join(src, 'flood'), { recursive: true });
      assert.equal((await pass()).pass, 'full');
      await assertSameAsFullRsync();
      await writeFile(join(src, 'after-overflow.txt'), 'o');
      const next = await pass();
      assert.deepEqual([next.pass, next.files], ['tracked', 1]);
      await assertSameAsFullRsync();
    },
  );

  test('the watch stops when the site is removed', async () => {
    const pid = a.tracking(site)!.pid!;
    await a.removeSite(site);
    assert.equal(a.tracking(site), undefined);
    assert.ok(
      await waitFor(() => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      }, 5000),
      'the watcher exited',
    );
  });
});

describe('tracked passes in-process (the sandbox)', { skip: missing }, () => {
  test('copy only the changed paths with the in-process copy, ending equal to the source', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-tracker-inproc-'));
    const agent = (id: string, ip: string) =>
      new HostAgent({
        id,
        dataDir: join(dir, id),
        sharedIps: [ip],
        httpPort: 0,
        addresses: new LoopbackAddresses(),
        web: { kind: 'builtin' },
        transport: new InProcessTransport(ip),
      });
    const a = agent('alpha', '127.0.67.3');
    const b = agent('beta', '127.0.67.4');
    try {
      await a.start();
      await b.start();
      await a.addSite(SITE_IP, 'serve');
      await b.addSite(SITE_IP, 'readonly');
      const src = a.siteDataDir(SITE_IP);
      await mkdir(join(src, 'x', 'y'), { recursive: true });
      for (let i = 0; i < 10; i++) await writeFile(join(src, 'x', 'y', `f${i}`), `f${i}`);
      await mkdir(join(src, 'old'));
      await writeFile(join(src, 'old', 'o'), 'o');
      const to = await b.openSyncReceiver(SITE_IP);
      assert.equal((await a.pushSite(SITE_IP, to)).pass, 'full');
      await writeFile(join(src, 'x', 'y', 'f0'), 'changed');
      await mkdir(join(src, 'n1', 'n2'), { recursive: true });
      await writeFile(join(src, 'n1', 'n2', 'n'), 'n');
      await rm(join(src, 'old'), { recursive: true });
      await rename(join(src, 'x', 'y', 'f1'), join(src, 'f1-moved'));
      const delta = await a.pushSite(SITE_IP, to);
      assert.deepEqual([delta.pass, delta.files], ['tracked', 3]);
      const strip = (t: Record<string, string>) =>
        Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.startsWith('dir') ? 'dir' : v]));
      assert.deepEqual(strip(await tree(b.siteDataDir(SITE_IP))), strip(await tree(src)));
      // The cut-over done, the origin proxies to the target: its watch ends, just after the mode
      // switch answers (the cut-over does not wait for that cleanup).
      const pid = a.tracking(SITE_IP)!.pid!;
      await a.setSiteMode(SITE_IP, { proxy: { address: '127.0.67.4', port: b.sites.port } });
      assert.ok(await waitFor(() => a.tracking(SITE_IP) === undefined, 5000), 'tracking ended');
      assert.ok(
        await waitFor(() => {
          try {
            process.kill(pid, 0);
            return false;
          } catch {
            return true;
          }
        }, 5000),
        'the watcher exited',
      );
    } finally {
      await a.stop();
      await b.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('ChangeTracker', { skip: missing }, () => {
  test('a change written just before take() is in that set; one after, in the next', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-tracker-unit-'));
    const root = join(dir, 'root');
    await mkdir(root);
    const t = new ChangeTracker({ root, barrierDir: join(dir, 'barrier') });
    try {
      await t.start();
      await writeFile(join(root, 'a'), 'a');
      assert.deepEqual(await t.take(), { kind: 'paths', paths: ['a'] });
      await writeFile(join(root, 'b'), 'b');
      assert.deepEqual(await t.take(), { kind: 'paths', paths: ['b'] });
      assert.deepEqual(await t.take(), { kind: 'paths', paths: [] });
    } finally {
      await t.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
