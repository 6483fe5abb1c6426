/** `ferry relay` as an operator runs it: a separate process, forwarding until SIGTERM. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createConnection, createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';

function echoServer(address: string): Promise<Server> {
  const server = createServer((s) => s.pipe(s));
  return new Promise((resolve) => server.listen(0, address, () => resolve(server)));
}

function roundTrip(address: string, port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: address, port }, () => s.end(text));
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.on('end', () => resolve(got));
    s.on('error', reject);
  });
}

describe('ferry relay', () => {
  let upstream: Server;
  before(async () => {
    upstream = await echoServer('127.0.33.2');
  });
  after(() => new Promise<void>((r) => upstream.close(() => r())));

  for (const plane of ['native', 'js'] as const) {
    it(
      `--data-plane ${plane}: forwards to --to until SIGTERM, then exits 0 printing its counters`,
      {
        timeout: 60_000,
        skip: plane === 'native' && process.env.FERRY_NATIVE === '0' ? 'FERRY_NATIVE=0' : false,
      },
      async () => {
        const port = (upstream.address() as { port: number }).port;
        const child = spawn(
          process.execPath,
          [
            '--import',
            'tsx',
            'src/cli/main.ts',
            'relay',
            '--listen',
            '127.0.33.1:0',
            '--to',
            `127.0.33.2:${port}`,
            '--json',
            '--drain-timeout',
            '0',
            '--data-plane',
            plane,
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        try {
          let out = '';
          child.stdout.setEncoding('utf8');
          child.stdout.on('data', (d: string) => (out += d));
          while (!out.includes('\n')) await once(child.stdout, 'data');
          const ready = JSON.parse(out.split('\n')[0]!) as { listening: { ports: number[] } };
          const relayPort = ready.listening.ports[0]!;
          assert.equal(
            await roundTrip('127.0.33.1', relayPort, 'hello through ferry'),
            'hello through ferry',
          );
          child.kill('SIGTERM');
          const [code] = (await once(child, 'exit')) as [number | null];
          assert.equal(code, 0);
          const last = JSON.parse(out.trim().split('\n').pop()!) as {
            stats: { totalConnections: number; bytesToUpstream: number };
          };
          assert.equal(last.stats.totalConnections, 1);
          assert.equal(last.stats.bytesToUpstream, 'hello through ferry'.length);
        } finally {
          if (child.exitCode === null) child.kill('SIGKILL');
        }
      },
    );
  }

  it('refuses a bad --listen with exit code 2 and says what to write', async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'relay', '--listen', '127.0.33.1', '--to', '127.0.33.2'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let err = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (err += d));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 2);
    assert.match(err, /ADDR:PORT/);
  });
});
