import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { isFerryError } from '../../common/errors.js';
import { silentLogger } from '../../common/log.js';
import { dnsQuery } from '../client.js';
import { ZoneStore } from '../zone/store.js';
import { parseZone } from '../zone/parser.js';
import { DnsWorkerPool, type WorkerPoolOptions } from './pool.js';

/** Query threads need the native UDP addon (the server falls back to one thread without it). */
const offNative =
  process.env.FERRY_NATIVE === '0' ? 'FERRY_NATIVE=0: no query threads without the addon' : false;

const ADDRESS = '127.0.120.5';

/** Zones of `n` A records each (h0 … h{n-1}): one start piece per 10,000 names or more. */
function bigZones(n: number, zones = 1): ZoneStore {
  const list = [];
  for (let z = 0; z < zones; z++) {
    const lines = [
      `$ORIGIN big${z}.test.`,
      '@ SOA ns hostmaster 1 3600 600 86400 300',
      '@ NS ns',
      'ns A 192.0.2.1',
    ];
    for (let i = 0; i < n; i++) lines.push(`h${i} A 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    list.push(parseZone(lines.join('\n')));
  }
  return new ZoneStore(list);
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
    logger: silentLogger,
    forward: () => undefined,
    stallMs,
  };
}

/** Runs `fn` with FERRY_DNS_THREAD_PAUSE set (worker-main.ts: the threads started meanwhile pause). */
async function withPause<T>(spec: string, fn: () => Promise<T>): Promise<T> {
  process.env.FERRY_DNS_THREAD_PAUSE = spec;
  try {
    return await fn();
  } finally {
    delete process.env.FERRY_DNS_THREAD_PAUSE;
  }
}

/** OS threads of this process. */
function osThreads(): number {
  return readdirSync('/proc/self/task').length;
}

test(
  'workers: a load slower than the stall bound starts, as long as progress comes',
  { skip: offNative },
  async () => {
    const stallMs = 10_000;
    const pause = 5_500;
    const store = bigZones(12_000, 3);
    // Each starting thread blocks for over half the bound when it comes up and after each piece it
    // reports, until it has run longer than the bound: progress keeps coming.
    const opts = await options(stallMs);
    const t0 = Date.now();
    const pool = await withPause(`${pause},${stallMs + 1000}`, () => DnsWorkerPool.start(store, opts));
    try {
      const elapsed = Date.now() - t0;
      assert.ok(elapsed > stallMs, `the start took ${elapsed} ms`);
      // Both threads serve every zone, the last piece included.
      for (let i = 0; i < 8; i++) {
        const a = await dnsQuery({
          server: { address: ADDRESS, port: opts.port },
          name: 'h11999.big2.test.',
          type: 'A',
        });
        assert.deepEqual(
          a.answers.map((r) => r.rdata),
          ['10.0.46.223'],
        );
      }
      assert.equal((await pool.workerStats()).filter((s) => s.udp > 0).length, 2, 'both threads answered');
    } finally {
      await pool.stop();
    }
  },
);

test(
  'workers: a starting thread that stops making progress fails the start, clearly and in time',
  { skip: offNative },
  async () => {
    const stallMs = 10_000;
    const store = bigZones(10_000, 3);
    const threadsBefore = osThreads();
    // The threads block as they come up, before they have applied any piece, for longer than the bound.
    const t0 = Date.now();
    await withPause(`${3 * stallMs},${3 * stallMs}`, async () => {
      await assert.rejects(DnsWorkerPool.start(store, await options(stallMs)), (err: unknown) => {
        assert.ok(isFerryError(err, 'DNS_WORKER'), String(err));
        assert.match(
          err.message,
          /^DNS query thread \d+ made no progress for 10000 ms while loading zones \(0 of 3 pieces applied\)$/,
        );
        return true;
      });
    });
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= stallMs && elapsed < stallMs + 20_000, `failed after ${elapsed} ms`);
    // Nothing is left running: the stalled threads are terminated, the others closed.
    for (let i = 0; i < 50 && osThreads() > threadsBefore; i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(osThreads() <= threadsBefore, `OS threads ${osThreads()}, before the start ${threadsBefore}`);
  },
);
