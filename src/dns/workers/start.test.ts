import { test } from 'node:test';
import assert from 'node:assert/strict';
import cluster, { type Worker } from 'node:cluster';
import net from 'node:net';
import { isFerryError } from '../../common/errors.js';
import { silentLogger } from '../../common/log.js';
import { dnsQuery } from '../client.js';
import { ZoneStore } from '../zone/store.js';
import { parseZone } from '../zone/parser.js';
import { DnsWorkerPool, type WorkerPoolOptions } from './pool.js';
import type { FromWorker } from './protocol.js';
import { isAlive } from '../../../test/processes.js';

const ADDRESS = '127.0.120.5';

/** A zone of `n` A records (h0 … h{n-1}): n / 10000 pieces and more for a starting worker. */
function bigZone(n: number): ZoneStore {
  const lines = [
    '$ORIGIN big.test.',
    '@ SOA ns hostmaster 1 3600 600 86400 300',
    '@ NS ns',
    'ns A 192.0.2.1',
  ];
  for (let i = 0; i < n; i++) lines.push(`h${i} A 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  return new ZoneStore([parseZone(lines.join('\n'))]);
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, ADDRESS, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function options(stallMs: number): Promise<WorkerPoolOptions> {
  return {
    count: 2,
    address: ADDRESS,
    port: await freePort(),
    tcpIdleTimeoutMs: 10_000,
    maxTcpConnections: 10,
    logger: silentLogger,
    forward: () => undefined,
    stallMs,
  };
}

test('workers: a load slower than the stall bound starts, as long as progress comes', async () => {
  // The bound leaves room for loading the worker's code through tsx on a busy machine.
  const stallMs = 10_000;
  const pause = 5_500;
  const store = bigZone(40_000);
  // Each starting worker is frozen for over half the bound when it comes up and after each zone
  // piece it reports, until the start has taken longer than the bound: progress keeps coming.
  let stops = 0;
  const t0 = Date.now();
  const onMessage = (w: Worker, m: FromWorker) => {
    if ((m.op !== 'up' && m.op !== 'progress') || Date.now() - t0 > stallMs + 1000) return;
    const pid = w.process.pid!;
    process.kill(pid, 'SIGSTOP');
    stops++;
    setTimeout(() => isAlive(pid) && process.kill(pid, 'SIGCONT'), pause);
  };
  cluster.on('message', onMessage);
  const opts = await options(stallMs);
  let pool: DnsWorkerPool;
  try {
    pool = await DnsWorkerPool.start(store, opts);
  } finally {
    cluster.off('message', onMessage);
  }
  try {
    const elapsed = Date.now() - t0;
    assert.ok(elapsed > stallMs, `the start took ${elapsed} ms (${stops} pauses of ${pause} ms)`);
    // Both workers serve the whole zone, the last piece included.
    for (const tcp of [false, true]) {
      const a = await dnsQuery({
        server: { address: ADDRESS, port: opts.port },
        name: 'h39999.big.test.',
        type: 'A',
        tcp,
      });
      assert.deepEqual(
        a.answers.map((r) => r.rdata),
        ['10.0.156.63'],
      );
    }
  } finally {
    await pool.stop();
  }
});

test('workers: a starting worker that stops making progress fails the start, clearly and in time', async () => {
  const stallMs = 10_000;
  const store = bigZone(30_000);
  const pids: number[] = [];
  // The first worker freezes as it comes up, before it has applied any zone piece.
  const onMessage = (w: Worker, m: FromWorker) => {
    pids.push(w.process.pid!);
    if (m.op === 'up' && pids.length === 1) process.kill(w.process.pid!, 'SIGSTOP');
  };
  cluster.on('message', onMessage);
  const t0 = Date.now();
  try {
    await assert.rejects(DnsWorkerPool.start(store, await options(stallMs)), (err: unknown) => {
      assert.ok(isFerryError(err, 'DNS_WORKER'), String(err));
      assert.match(
        err.message,
        /^DNS worker \d+ made no progress for 10000 ms while loading zones \(0 of 4 pieces applied\)$/,
      );
      return true;
    });
  } finally {
    cluster.off('message', onMessage);
  }
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= stallMs && elapsed < stallMs + 20_000, `failed after ${elapsed} ms`);
  // Nothing is left running: the stalled worker is killed, the other one closed.
  for (const pid of new Set(pids)) assert.equal(isAlive(pid), false, `worker ${pid} is gone`);
});
