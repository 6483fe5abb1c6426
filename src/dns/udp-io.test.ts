import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import type { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { isFerryError } from '../common/errors.js';
import { dnsExchangeUdp } from './client.js';
import { DnsServer } from './server.js';
import type { WorkerStats } from './workers/pool.js';
import { nativeUdp } from './udp-io.js';
import { decodeMessage, encodeMessage, makeQuery } from './wire/message.js';
import { Opcode, RRType, Rcode } from './wire/types.js';
import { withTestServer } from './test-fixtures.js';

/** Native-only tests skip when the whole suite runs on the portable paths (FERRY_NATIVE=0 npm test). */
const offNative = process.env.FERRY_NATIVE === '0' ? 'FERRY_NATIVE=0' : false;
const FORMS = offNative ? (['dgram'] as const) : (['native', 'dgram'] as const);

/** The native path must be built here: CI builds it at `npm ci`, and a silent fallback would hide a broken build. */
test('the native UDP addon is built and loads (unless FERRY_NATIVE=0)', { skip: offNative }, () => {
  const r = nativeUdp();
  assert.ok(r.ok, r.ok ? '' : `native UDP unavailable: ${r.reason}`);
});

const withServer = withTestServer;

/**
 * Sends `count` queries from `sockets` client sockets, keeping `window` outstanding (more than one
 * recvmmsg batch), and resolves with every answer by query id, or rejects naming the ids never
 * answered, or an answer that reached another client socket than its query's.
 */
async function burst(
  server: { address: string; port: number },
  count: number,
  sockets: number,
  window = 160,
  timeoutMs = 5000,
): Promise<Map<number, Buffer>> {
  const answers = new Map<number, Buffer>();
  const socks = Array.from({ length: sockets }, () =>
    dgram.createSocket(server.address.includes(':') ? 'udp6' : 'udp4'),
  );
  let next = 1;
  const sendNext = () => {
    if (next > count) return;
    const id = next++;
    const name = id % 3 === 0 ? 'nope.example.' : id % 3 === 1 ? 'www.example.' : 'WWW.Example.';
    socks[id % sockets]!.send(encodeMessage(makeQuery(id, name, RRType.A)), server.port, server.address);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const missing = [];
        for (let id = 1; id < next; id++) if (!answers.has(id)) missing.push(id);
        reject(
          new Error(
            `${count - answers.size} of ${count} queries unanswered, e.g. ids ${missing.slice(0, 5).join(', ')}`,
          ),
        );
      }, timeoutMs);
      socks.forEach((s, i) => {
        s.on('message', (buf) => {
          const id = buf.readUInt16BE(0);
          if (id % sockets !== i) {
            clearTimeout(timer);
            reject(new Error(`the answer to query ${id} reached client socket ${i}, not its sender`));
            return;
          }
          if (answers.has(id)) return;
          answers.set(id, buf);
          if (answers.size === count) {
            clearTimeout(timer);
            resolve();
          } else sendNext();
        });
      });
      for (let i = 0; i < window; i++) sendNext();
    });
  } finally {
    for (const s of socks) s.close();
  }
  return answers;
}

for (const io of FORMS) {
  test(`${io} UDP: 600 queries from 6 sockets, 160 outstanding, are answered in full, each by its id`, async () => {
    await withServer({ udpIo: io }, async (s) => {
      assert.equal(s.udpKind, io);
      const answers = await burst({ address: s.address, port: s.port }, 600, 6);
      for (const [id, buf] of answers) {
        const m = decodeMessage(buf);
        assert.equal(m.id, id);
        if (id % 3 === 0) assert.equal(m.rcode, Rcode.NXDOMAIN);
        else {
          assert.equal(m.rcode, Rcode.NOERROR);
          // The question's case is echoed in each answer of the batch.
          assert.equal(m.answers[0]!.name, id % 3 === 1 ? 'www.example.' : 'WWW.Example.');
        }
      }
    });
  });
}

test('native and dgram UDP send the same bytes for the same queries', { skip: offNative }, async () => {
  const queries = [
    makeQuery(7, 'www.example.', RRType.A),
    makeQuery(8, 'example.', RRType.MX),
    makeQuery(9, 'a.sub.example.', RRType.A),
    makeQuery(10, 'example.net.', RRType.A),
    makeQuery(11, 'www.example.', RRType.AAAA, { edns: { udpSize: 1232 } }),
  ].map((q) => encodeMessage(q));
  const seen: Record<string, string[]> = {};
  for (const io of FORMS) {
    await withServer({ udpIo: io }, async (s) => {
      seen[io] = [];
      for (const q of queries) seen[io]!.push((await dnsExchangeUdp(s, q)).toString('hex'));
    });
  }
  assert.deepEqual(seen.native, seen.dgram);
});

test(
  'native UDP: an oversized datagram is dropped, and the server goes on answering',
  { skip: offNative },
  async () => {
    await withServer({ udpIo: 'native' }, async (s) => {
      const big = Buffer.alloc(6000);
      encodeMessage(makeQuery(1, 'www.example.', RRType.A)).copy(big);
      await assert.rejects(
        dnsExchangeUdp(s, big, 300),
        (e: unknown) => isFerryError(e) && e.code === 'DNS_TIMEOUT',
      );
      const ok = decodeMessage(
        await dnsExchangeUdp(s, encodeMessage(makeQuery(2, 'www.example.', RRType.A))),
      );
      assert.equal(ok.rcode, Rcode.NOERROR);
    });
  },
);

test('native UDP over IPv6 (::1)', { skip: offNative }, async () => {
  await withServer({ udpIo: 'native', address: '::1' }, async (s) => {
    const answers = await burst({ address: '::1', port: s.port }, 100, 2);
    assert.equal(answers.size, 100);
  });
});

test(
  'native UDP: a NOTIFY, answered by the primary role, gets its reply (also through a worker)',
  { skip: offNative },
  async () => {
    for (const workers of [1, 2]) {
      await withServer({ udpIo: 'native', workers, address: '127.0.121.1' }, async (s) => {
        const notify = makeQuery(99, 'example.', RRType.SOA);
        notify.opcode = Opcode.NOTIFY;
        notify.flags.aa = true;
        const res = decodeMessage(await dnsExchangeUdp(s, encodeMessage(notify)));
        assert.equal(res.id, 99);
        assert.equal(res.rcode, Rcode.NOTIMP, `workers=${workers}`);
      });
    }
  },
);

/**
 * After answering a batch a query thread waits a moment for the next datagram instead of going
 * back to epoll (udp_batch.c, wait_next). One query at a time, each sent as the last answer
 * arrives, makes every query land in that wait (or, once waiting stopped paying, in epoll): none
 * may be lost, answered twice or sent to the wrong client socket.
 */
test(
  'native UDP with 2 workers: one query at a time from each of 2 sockets, each arriving while a thread waits after its last batch, is answered once and to its sender',
  { skip: offNative },
  async () => {
    await withServer({ udpIo: 'native', workers: 2, address: '127.0.121.3' }, async (s) => {
      const answers = await burst({ address: s.address, port: s.port }, 600, 2, 2, 30_000);
      assert.equal(answers.size, 600);
      for (const [id, buf] of answers) assert.equal(decodeMessage(buf).id, id);
    });
  },
);

/**
 * Answers per thread (by threadId) between two `workerStats()` snapshots; a thread that is new
 * in `after` counts from zero.
 */
function shares(before: WorkerStats[], after: WorkerStats[]): number[] {
  return after.map((w) => w.udp - (before.find((b) => b.thread === w.thread)?.udp ?? 0));
}

/**
 * The kernel's SO_REUSEPORT hash sends every datagram of one client address and port to the same
 * socket, so one busy client kept one thread saturated and the other idle (dnsperf's 8 sockets
 * split 34/66). The reuseport program deals datagrams at random: even one client socket reaches
 * both threads, also after a thread died and its replacement bound the port again.
 */
test(
  'native UDP with 2 workers: queries from one client socket are shared fairly by both threads, also after a thread is replaced',
  { skip: offNative },
  async () => {
    await withServer({ udpIo: 'native', workers: 2, address: '127.0.121.2' }, async (s) => {
      const QUERIES = 2000;
      const fair = async (label: string) => {
        const before = await s.workerStats();
        // Bounded by a generous guard (a loaded machine), not timed: every query must be answered.
        const answers = await burst({ address: s.address, port: s.port }, QUERIES, 1, 160, 60_000);
        assert.equal(answers.size, QUERIES);
        const after = await s.workerStats();
        assert.equal(after.length, 2, label);
        const split = shares(before, after);
        assert.equal(
          split.reduce((a, b) => a + b, 0),
          QUERIES,
        );
        // Random dealing: each share is Binomial(2000, 1/2); below 25% has odds under 1e-100.
        assert.ok(
          split.every((n) => n >= QUERIES / 4),
          `${label}: each thread answered at least 25%: ${split.join(' / ')}`,
        );
      };
      await fair('two threads');
      const pool = (s as unknown as { pool: { slots: Array<{ worker: Worker }> } }).pool;
      const gone = pool.slots[0]!.worker.threadId;
      await pool.slots[0]!.worker.terminate();
      for (let i = 0; i < 300; i++) {
        const threads = (await s.workerStats()).map((w) => w.thread);
        if (threads.length === 2 && !threads.includes(gone)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await fair('after a thread was replaced');
    });
  },
);

test(
  'native UDP addon: spread() names what the kernel refused, and refuses an unknown rule',
  { skip: offNative },
  async () => {
    const { loadNative } = await import('../common/native.js');
    type Addon = {
      bind(h: string, p: number, r: boolean): [number, number];
      spread(fd: number, count: number, mode: string): void;
      closeFd(fd: number): void;
    };
    const r = loadNative<Addon>('ferry_dns_udp');
    assert.ok('binding' in r);
    const a = r.binding;
    const [plain] = a.bind('127.0.0.1', 0, false);
    const [shared] = a.bind('127.0.0.1', 0, true);
    try {
      // A socket outside any SO_REUSEPORT group has no group to attach the program to.
      assert.throws(() => a.spread(plain, 2, 'random'), /SO_ATTACH_REUSEPORT_CBPF/);
      assert.throws(() => a.spread(shared, 2, 'round-robin'), RangeError);
      assert.throws(() => a.spread(shared, 0, 'random'), RangeError);
      a.spread(shared, 2, 'random');
      a.spread(shared, 2, 'cpu');
    } finally {
      a.closeFd(plain);
      a.closeFd(shared);
    }
  },
);

test(
  "workers: a query thread's warning reaches the server's logger (here: an unknown FERRY_DNS_UDP_SPREAD, which falls back to random)",
  { skip: offNative },
  async () => {
    const before = process.env.FERRY_DNS_UDP_SPREAD;
    process.env.FERRY_DNS_UDP_SPREAD = 'evenly'; // threads copy the environment when they start
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
    try {
      await withServer({ udpIo: 'native', workers: 2, address: '127.0.121.3', logger }, async (s) => {
        const warned = lines.filter((l) => /FERRY_DNS_UDP_SPREAD must be random, cpu or hash/.test(l));
        assert.equal(warned.length, 2, `one warning per thread: ${lines.join('')}`);
        assert.ok(warned.every((l) => typeof (JSON.parse(l) as { thread?: unknown }).thread === 'number'));
        const answers = await burst({ address: s.address, port: s.port }, 400, 1, 160, 60_000);
        assert.equal(answers.size, 400);
        const split = (await s.workerStats()).map((w) => w.udp);
        assert.ok(
          split.every((n) => n >= 100),
          `random spread still: ${split.join(' / ')}`,
        );
      });
    } finally {
      if (before === undefined) delete process.env.FERRY_DNS_UDP_SPREAD;
      else process.env.FERRY_DNS_UDP_SPREAD = before;
    }
  },
);

test('FERRY_NATIVE=0: auto falls back to dgram; asking for native fails clearly', async () => {
  const before = process.env.FERRY_NATIVE;
  process.env.FERRY_NATIVE = '0';
  try {
    await withServer({}, async (s) => assert.equal(s.udpKind, 'dgram'));
    const s = new DnsServer({ address: '127.0.0.1', port: 0, udpIo: 'native' });
    await assert.rejects(s.start(), (e: unknown) => isFerryError(e) && /FERRY_NATIVE=0/.test(e.message));
    await s.stop();
  } finally {
    if (before === undefined) delete process.env.FERRY_NATIVE;
    else process.env.FERRY_NATIVE = before;
  }
});

test('udpIo: a bad value is refused', () => {
  assert.throws(
    () => new DnsServer({ udpIo: 'fast' as 'native' }),
    (e: unknown) => isFerryError(e) && e.code === 'DNS_BAD_OPTIONS' && /udpIo/.test(e.message),
  );
});

/**
 * The addon frees a channel once libuv has closed its poll handle; a call on the channel object
 * after that read freed memory (ASan: heap-use-after-free in unwrap, from stats()). close()
 * now removes the wrap, so every later call says "channel is closed" and close() stays idempotent.
 */
test(
  'native UDP addon: calls on a channel closed a loop turn ago throw "channel is closed"',
  { skip: offNative },
  async () => {
    const { loadNative } = await import('../common/native.js');
    type Addon = {
      ADDR_SLOT: number;
      bind(h: string, p: number, r: boolean): [number, number];
      open(
        fd: number,
        rx: Buffer,
        lens: Int32Array,
        addrs: Buffer,
        slot: number,
        cb: (n: number) => void,
      ): object;
      reply(ch: object, a: unknown[], n: number): void;
      stats(ch: object): unknown;
      close(ch: object): void;
    };
    const r = loadNative<Addon>('ferry_dns_udp');
    assert.ok('binding' in r);
    const a = r.binding;
    const [fd] = a.bind('127.0.0.1', 0, false);
    const ch = a.open(
      fd,
      Buffer.alloc(8 * 512),
      new Int32Array(8),
      Buffer.alloc(8 * a.ADDR_SLOT),
      512,
      () => {},
    );
    a.close(ch);
    await new Promise((res) => setTimeout(res, 20)); // the poll handle's close callback has freed the record
    assert.throws(() => a.stats(ch), /channel is closed/);
    assert.throws(() => a.reply(ch, [Buffer.from('x')], 1), /channel is closed/);
    a.close(ch); // still idempotent
  },
);
