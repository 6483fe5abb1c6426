/** `ferry relay` as an operator runs it: a separate process, forwarding until SIGTERM. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createConnection, createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { waitFor } from '../../src/common/time.js';
import {
  ADDR,
  clientSource,
  createTopology,
  kernelSkipReason,
  runInNs,
  upstreamSource,
} from '../../src/relay/netns-testing.js';

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

const kernelSkip = kernelSkipReason() ?? false;

describe('ferry relay --engine kernel', { skip: kernelSkip }, () => {
  it(
    'runs until SIGTERM, forwarding through its nftables table, then removes the table',
    { timeout: 60_000 },
    async () => {
      const topo = createTopology();
      const upstream = runInNs(topo.upstream, upstreamSource, [`A:${ADDR.upstreamA}:80`]);
      const clientProc = runInNs(topo.client, clientSource);
      const tables = () =>
        execFileSync('ip', ['netns', 'exec', topo.relay, 'nft', 'list', 'tables'], { encoding: 'utf8' });
      const child = spawn(
        'ip',
        [
          'netns',
          'exec',
          topo.relay,
          process.execPath,
          '--import',
          'tsx',
          'src/cli/main.ts',
          'relay',
          '--engine',
          'kernel',
          '--listen',
          `${ADDR.tempIp}:80`,
          '--to',
          ADDR.upstreamA,
          '--json',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      try {
        await upstream.next('ready');
        await clientProc.next('ready');
        let out = '';
        child.stdout.setEncoding('utf8');
        child.stdout.on('data', (d: string) => (out += d));
        let exited = false;
        child.once('exit', () => (exited = true));
        assert.ok(
          await waitFor(() => out.includes('\n') || exited, 30_000),
          'the relay printed that it listens',
        );
        assert.deepEqual(JSON.parse(out.split('\n')[0]!).listening, { address: ADDR.tempIp, ports: [80] });
        assert.match(tables(), /table ip ferry_\w+/);
        // Still running (it used to exit at once with status 13) and forwarding.
        await new Promise((r) => setTimeout(r, 1500));
        assert.equal(child.exitCode, null, 'the relay keeps running until a signal');
        clientProc.send(`open 1 ${ADDR.tempIp} 80`);
        assert.match(await clientProc.next('open 1'), / A peer=/);
        clientProc.send('close 1');
        await clientProc.next('closed 1');
        child.kill('SIGTERM');
        const [code] = (await once(child, 'exit')) as [number | null];
        assert.equal(code, 0);
        assert.doesNotMatch(tables(), /ferry_/, 'the table is removed at exit');
        const last = JSON.parse(out.trim().split('\n').pop()!) as { stats: { totalConnections: number } };
        assert.equal(last.stats.totalConnections, 1);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
        clientProc.kill();
        upstream.kill();
        topo.destroy();
      }
    },
  );
});
