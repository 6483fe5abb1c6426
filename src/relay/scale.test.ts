/**
 * Issue 5 acceptance: 5,000 concurrent connections pass through the relay and the process's open
 * file descriptors return to their baseline afterwards, on both data planes (TypeScript and
 * native). The upstream server and the clients run in a child process so that this process holds
 * only the relay's two sockets per connection.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { waitFor } from '../common/time.js';
import { NativeRelay, TcpRelay, type RedirectEngine } from './index.js';
import { nativeUnsupported } from './native-relay.js';
import { resolveRelayOptions } from './options.js';

const N = 5000;

/** Child: an echo server on 127.0.0.2 plus a client pool driven by stdin commands. */
const childSource = `
import { createServer, connect } from 'node:net';
import { createInterface } from 'node:readline';
const server = createServer((s) => { s.on('error', () => {}); s.pipe(s); });
server.listen(0, '127.0.0.2', () => console.log('port ' + server.address().port));
let clients = [];
createInterface({ input: process.stdin }).on('line', async (line) => {
  const [cmd, a, b] = line.split(' ');
  if (cmd === 'open') {
    const port = Number(a), n = Number(b);
    let echoed = 0, failed = 0;
    for (let i = 0; i < n; i += 250) {
      await Promise.all(Array.from({ length: Math.min(250, n - i) }, () => new Promise((resolve) => {
        const s = connect({ host: '127.0.0.3', port });
        clients.push(s);
        s.on('error', () => { failed++; resolve(); });
        s.once('data', () => { echoed++; resolve(); });
        s.write('ping');
      })));
    }
    console.log('opened ' + echoed + ' ' + failed);
  } else if (cmd === 'close') {
    await Promise.all(clients.map((s) => new Promise((r) => { if (s.destroyed) return r(); s.once('close', r); s.end(); })));
    clients = [];
    console.log('closed');
  } else if (cmd === 'exit') {
    for (const s of clients) s.destroy();
    server.close(); process.exit(0);
  }
});
`;

function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

const nativeMissing = nativeUnsupported(
  resolveRelayOptions({ listen: { address: '127.0.0.1', ports: [0] }, upstream: { address: '127.0.0.1' } }),
);
const planes = [
  {
    name: 'TcpRelay (TypeScript data plane)',
    make: (port: number) =>
      new TcpRelay({
        listen: { address: '127.0.0.3', ports: [0] },
        upstream: { address: '127.0.0.2', port },
      }),
    skip: false as const,
  },
  {
    name: 'NativeRelay (native data plane)',
    make: (port: number) =>
      new NativeRelay({
        listen: { address: '127.0.0.3', ports: [0] },
        upstream: { address: '127.0.0.2', port },
      }),
    skip: nativeMissing ?? false,
  },
];

for (const plane of planes)
  describe(`${plane.name} at scale`, { skip: plane.skip }, () => {
    let child: ChildProcess | null = null;
    let relay: RedirectEngine | null = null;
    after(async () => {
      await relay?.close();
      if (child && child.exitCode === null) child.kill('SIGKILL');
    });

    it(
      `carries ${N} concurrent connections and returns to the baseline fd count`,
      { timeout: 120_000 },
      async () => {
        const needed = 2 * N + 100;
        const limit = Number(/Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]);
        assert.ok(limit >= needed, `open-file limit ${limit} < ${needed}; raise ulimit -n`);

        const c = spawn(process.execPath, ['--input-type=module', '-e', childSource], {
          stdio: ['pipe', 'pipe', 'inherit'],
        });
        child = c;
        const lines: string[] = [];
        const waiters: Array<() => void> = [];
        createInterface({ input: c.stdout! }).on('line', (l) => {
          lines.push(l);
          for (const w of waiters.splice(0)) w();
        });
        const next = async (prefix: string, timeoutMs: number): Promise<string> => {
          const ok = await waitFor(() => lines.some((l) => l.startsWith(prefix)), timeoutMs, 20);
          assert.ok(ok, `child did not answer ${prefix}`);
          const i = lines.findIndex((l) => l.startsWith(prefix));
          return lines.splice(i, 1)[0]!;
        };
        const upPort = Number((await next('port', 5000)).split(' ')[1]);

        const baseline = fdCount();
        relay = plane.make(upPort);
        await relay.start();

        c.stdin!.write(`open ${relay.ports[0]} ${N}\n`);
        const [, echoed, failed] = (await next('opened', 90_000)).split(' ');
        assert.equal(Number(failed), 0);
        assert.equal(Number(echoed), N);
        const s = await relay.stats();
        assert.equal(s.activeConnections, N);
        assert.equal(s.totalConnections, N);
        assert.equal(s.bytesToUpstream, 4 * N);
        assert.equal(s.bytesToClient, 4 * N);
        assert.ok(fdCount() >= baseline + 2 * N, `fds while open: ${fdCount()}`);

        c.stdin!.write('close\n');
        await next('closed', 60_000);
        assert.ok(await relay.drain(30_000), 'every connection finished');

        // Close with connections still open: close() must free them too.
        c.stdin!.write(`open ${relay.ports[0]} 500\n`);
        await next('opened', 30_000);
        assert.equal((await relay.stats()).activeConnections, 500);
        await relay.close();
        relay = null;
        const back = await waitFor(() => fdCount() <= baseline, 5000);
        assert.ok(back, `fds ${fdCount()} vs baseline ${baseline}`);
        c.stdin!.write('exit\n');
      },
    );
  });
