/** `RelayProcess`: a userspace redirect in its own process, outliving the process that started it. */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { waitFor } from '../common/time.js';
import { isFerryError } from '../common/errors.js';
import { RelayProcess } from './process.js';
import { client, startEcho, type TestServer } from './testing.js';
import { isAlive } from '../../test/processes.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function echo(address: string, name: string): Promise<TestServer> {
  const s = await startEcho(address, name);
  cleanups.push(() => s.close());
  return s;
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-rp-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Kills a relay child left by a failed test (by its pid, which the test knows). */
function reap(pid: number | undefined): void {
  cleanups.push(() => {
    if (pid !== undefined && isAlive(pid)) process.kill(pid, 'SIGKILL');
  });
}

const STARTER = `
const { RelayProcess } = await import(process.argv[1]);
const [socketPath, port] = process.argv.slice(2);
const rp = new RelayProcess({ relay: { listen: { address: '127.0.62.3', ports: [0] }, upstream: { address: '127.0.62.1', port: Number(port) } }, socketPath });
await rp.start();
console.log(JSON.stringify({ pid: rp.pid, port: rp.ports[0] }));
setInterval(() => {}, 1000);
`;

describe('RelayProcess (a redirect in its own supervised process)', () => {
  it(
    "keeps relaying when its starter and the starter's process group are SIGKILLed; another process adopts it and drives it",
    { timeout: 60_000 },
    async () => {
      const a = await echo('127.0.62.1', 'A');
      const b = await echo('127.0.62.2', 'B');
      const dir = await tempDir();
      const socketPath = join(dir, 'r.sock');
      // The starter runs in a process group of its own, as a daemon under a supervisor would.
      const starter = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          '--input-type=module',
          '-e',
          STARTER,
          pathToFileURL(join(process.cwd(), 'src/relay/process.ts')).href,
          socketPath,
          String(a.port),
        ],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
          detached: true,
        },
      );
      cleanups.push(() => {
        if (starter.exitCode === null && starter.signalCode === null) starter.kill('SIGKILL');
      });
      const line = await new Promise<string>((resolve, reject) => {
        createInterface({ input: starter.stdout! }).once('line', resolve);
        starter.once('exit', (code) => reject(new Error(`starter exited ${String(code)}`)));
      });
      const { pid, port } = JSON.parse(line) as { pid: number; port: number };
      reap(pid);
      assert.notEqual(pid, starter.pid);

      const before = await client('127.0.62.3', port);
      await before.waitFor('A\n');
      process.kill(-starter.pid!, 'SIGKILL');
      await new Promise<void>((r) => starter.once('exit', () => r()));
      assert.ok(isAlive(pid), 'the relay process survived its starter');
      before.socket.write('still');
      await before.waitFor('A\nstill');
      const during = await client('127.0.62.3', port);
      await during.waitFor('A\n');
      during.socket.destroy();

      const rp = await RelayProcess.adopt(socketPath);
      assert.ok(rp, 'a running relay process is adopted');
      cleanups.push(() => rp.close());
      assert.equal(rp.pid, pid);
      assert.deepEqual(rp.ports, [port]);
      assert.equal(rp.holding, false);
      assert.deepEqual(rp.upstream, { address: '127.0.62.1', port: a.port });

      await rp.hold();
      const held = await client('127.0.62.3', port);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(held.received(), '', 'a connection made during hold waits');
      assert.equal((await rp.stats()).held, 1);
      await rp.setUpstream({ address: '127.0.62.2', port: b.port });
      await rp.release();
      await held.waitFor('B\n');
      held.socket.destroy();
      before.socket.destroy();
      const s = await rp.stats();
      assert.equal(s.totalConnections, 3);

      // A second adoption sees what the first one set.
      const again = await RelayProcess.adopt(socketPath);
      assert.ok(again);
      assert.deepEqual(again.upstream, { address: '127.0.62.2', port: b.port });
      again.detach();

      await rp.close();
      await rp.close();
      assert.ok(await waitFor(() => !isAlive(pid), 5000), 'the relay process exits when told to stop');
      assert.equal(existsSync(socketPath), false, 'its control socket is removed');
      assert.equal(await RelayProcess.adopt(socketPath), undefined, 'nothing to adopt once stopped');
      await assert.rejects(client('127.0.62.3', port), /ECONNREFUSED/);
    },
  );

  it(
    'exits by itself once no controller has been connected for orphanTimeoutMs',
    { timeout: 30_000 },
    async () => {
      const a = await echo('127.0.62.1', 'A');
      const dir = await tempDir();
      const rp = new RelayProcess({
        relay: {
          listen: { address: '127.0.62.4', ports: [0] },
          upstream: { address: '127.0.62.1', port: a.port },
        },
        socketPath: join(dir, 'o.sock'),
        orphanTimeoutMs: 1500,
      });
      await rp.start();
      const pid = rp.pid!;
      reap(pid);
      await new Promise((r) => setTimeout(r, 2000));
      assert.ok(isAlive(pid), 'connected: not orphaned');
      rp.detach();
      const c = await client('127.0.62.4', rp.ports[0]!);
      await c.waitFor('A\n');
      c.socket.destroy();
      assert.ok(await waitFor(() => !isAlive(pid), 10_000), 'orphaned: it exits');
    },
  );

  it(
    "reports a bind failure as the relay's own error and leaves no process",
    { timeout: 30_000 },
    async () => {
      const a = await echo('127.0.62.1', 'A');
      const dir = await tempDir();
      const rp = new RelayProcess({
        relay: {
          listen: { address: '127.0.62.1', ports: [a.port] },
          upstream: { address: '127.0.62.1', port: a.port },
        },
        socketPath: join(dir, 'b.sock'),
      });
      await assert.rejects(rp.start(), (e) => isFerryError(e) && /EADDRINUSE|in use/i.test(e.message));
      assert.throws(
        () =>
          new RelayProcess({
            relay: { listen: { address: 'x', ports: [1] }, upstream: { address: '127.0.0.1' } },
            socketPath: join(dir, 'c.sock'),
          }),
        (e) => isFerryError(e, 'RELAY_BAD_OPTION'),
      );
    },
  );
});
