import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import diagnostics_channel from 'node:diagnostics_channel';
import net from 'node:net';
import type { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { dnsExchangeUdp, dnsQuery } from '../client.js';
import { DNS_QUERY_CHANNEL, type DnsQueryEvent } from '../metrics.js';
import { DnsServer } from '../server.js';
import { TEST_ZONE } from '../test-fixtures.js';
import { encodeUpdate, decodeUpdate } from '../update/wire.js';
import { upd } from '../update/client.js';
import { parseZone } from '../zone/parser.js';
import { isShared } from '../zone/compact.js';
import { Rcode } from '../wire/types.js';
import { dnsTransfer } from '../xfr/client.js';
import { decodeRRsets, encodeRRsets, type RRsetState } from './codec.js';

/** Query threads need the native UDP addon; the fallback without it has its own test below. */
const offNative =
  process.env.FERRY_NATIVE === '0' ? 'FERRY_NATIVE=0: no query threads without the addon' : false;

const OTHER = `$ORIGIN other.test.
@ SOA ns hostmaster 1 3600 600 86400 300
@ NS ns
ns A 192.0.2.200
`;

/** A zone of `n` A records h0 … h{n-1}, big enough for a shared base. */
function bigZoneText(n: number): string {
  const lines = [
    '$ORIGIN big.test.',
    '@ SOA ns hostmaster 1 3600 600 86400 300',
    '@ NS ns',
    'ns A 192.0.2.1',
  ];
  for (let i = 0; i < n; i++) lines.push(`h${i} A 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  return lines.join('\n');
}

/** True when both UDP and TCP on the address and port can be bound again (the server let go). */
async function portFree(address: string, port: number): Promise<boolean> {
  const udp = dgram.createSocket('udp4');
  const udpOk = await new Promise<boolean>((r) => {
    udp.once('error', () => r(false));
    udp.bind({ address, port, exclusive: true }, () => r(true));
  });
  udp.close();
  const tcp = net.createServer();
  const tcpOk = await new Promise<boolean>((r) => {
    tcp.once('error', () => r(false));
    tcp.listen({ host: address, port, exclusive: true }, () => r(true));
  });
  await new Promise<void>((r) => tcp.close(() => r()));
  return udpOk && tcpOk;
}

/** Queries from `n` fresh client sockets: the kernel hashes their ports over both threads. */
async function manyAsk(at: { address: string; port: number }, name: string, n: number): Promise<string[][]> {
  const out: string[][] = [];
  for (let i = 0; i < n; i++) {
    const a = await dnsQuery({ server: at, name, type: 'A' });
    out.push(a.answers.map((r) => r.rdata));
  }
  return out;
}

test('codec: RRset states round-trip, deletions included', () => {
  const zone = parseZone(TEST_ZONE);
  const sets: RRsetState[] = [...zone.rrsets(), { name: 'gone.example.', type: 1, ttl: 0, rdata: [] }];
  const back: RRsetState[] = [];
  decodeRRsets(encodeRRsets(sets), (s) => back.push(s));
  assert.deepEqual(back, sets);
});

test(
  'workers: 2 query threads answer UDP, the main thread TCP; changes reach both; clean stop',
  { skip: offNative },
  async () => {
    const server = new DnsServer({
      address: '127.0.120.1',
      port: 0,
      zones: [parseZone(TEST_ZONE)],
      workers: 2,
    });
    await server.start();
    const at = { address: server.address, port: server.port };
    try {
      assert.ok(at.port > 0);
      for (const tcp of [false, true]) {
        const a = await dnsQuery({ server: at, name: 'www.example.', type: 'A', tcp });
        assert.deepEqual(
          a.answers.map((r) => r.rdata),
          ['192.0.2.1'],
        );
        assert.equal(a.flags.aa, true);
      }
      // A change through the store's API, then enough queries that both threads answer some.
      const { serial } = server.zones.replaceRRset('www.example.', 'A', 30, ['192.0.2.123']);
      await server.sync();
      for (let i = 0; i < 20; i++) {
        const a = await dnsQuery({ server: at, name: 'WWW.example.', type: 'A', tcp: i % 4 === 0 });
        assert.deepEqual(
          a.answers.map((r) => [r.name, r.rdata, r.ttl]),
          [['WWW.example.', '192.0.2.123', 30]],
        );
        const soa = await dnsQuery({ server: at, name: 'example.', type: 'SOA' });
        assert.match(soa.answers[0]!.rdata, new RegExp(` ${serial} `));
      }
      // A CNAME replacing an A (deletion first in the threads), a deletion, a new zone, a removal.
      server.zones.applyChanges([
        { owner: 'www.example.', type: 'A', ttl: 0, rdata: [] },
        { owner: 'www.example.', type: 'CNAME', ttl: 60, rdata: ['mail.example.'] },
      ]);
      server.zones.add(parseZone(OTHER));
      await server.sync();
      for (let i = 0; i < 6; i++) {
        const a = await dnsQuery({ server: at, name: 'www.example.', type: 'A' });
        assert.deepEqual(
          a.answers.map((r) => r.rdata),
          ['mail.example.', '192.0.2.25'],
        );
        const o = await dnsQuery({ server: at, name: 'ns.other.test.', type: 'A' });
        assert.equal(o.answers[0]!.rdata, '192.0.2.200');
      }
      server.zones.remove('other.test.');
      await server.sync();
      for (let i = 0; i < 4; i++) {
        const o = await dnsQuery({ server: at, name: 'ns.other.test.', type: 'A' });
        assert.equal(o.rcodeName, 'REFUSED');
      }
      const stats = await server.workerStats();
      assert.equal(stats.length, 2);
      assert.equal(new Set(stats.map((s) => s.thread)).size, 2);
      assert.ok(
        stats.every((s) => s.udp > 0),
        `both threads answered: ${JSON.stringify(stats)}`,
      );
      assert.equal(
        stats.reduce((n, s) => n + s.udp, 0) + server.received.tcp,
        58,
        `every query counted once: ${JSON.stringify(stats)}, tcp ${server.received.tcp}`,
      );
    } finally {
      await server.stop();
    }
    assert.deepEqual(await server.workerStats(), []);
    assert.ok(await portFree(at.address, at.port), 'the threads and the main thread let go of the port');
  },
);

test(
  'workers: many small zones are served from the zone arena; a lazy first query, a change after sync(), a removal, an addition',
  { skip: offNative },
  async () => {
    const n = 1000;
    const text = (i: number, www: string) =>
      `$ORIGIN s${i}.test.\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 192.0.2.1\nwww A ${www}\n`;
    const zones = Array.from({ length: n }, (_, i) => parseZone(text(i, `10.1.${i >> 8}.${i & 255}`)));
    const server = new DnsServer({ address: '127.0.120.8', port: 0, zones, workers: 2 });
    await server.start();
    const at = { address: server.address, port: server.port };
    const www = async (i: number, times = 4) => (await manyAsk(at, `www.s${i}.test.`, times)).flat();
    try {
      // Never queried before: built on the first query, in whichever thread gets it.
      assert.deepEqual(await www(n - 1), Array(4).fill(`10.1.${(n - 1) >> 8}.${(n - 1) & 255}`));
      assert.deepEqual(await www(0), Array(4).fill('10.1.0.0'));
      // A change to a zone both threads have built, seen by both after sync().
      server.zones.replaceRRset('www.s0.test.', 'A', 60, ['192.0.2.77']);
      await server.sync();
      assert.deepEqual(await www(0, 8), Array(8).fill('192.0.2.77'));
      const soa = await dnsQuery({ server: at, name: 's0.test.', type: 'SOA' });
      assert.match(soa.answers[0]!.rdata, / 2 3600 /);
      // A removal and an addition.
      server.zones.remove('s1.test.');
      server.zones.add(parseZone(text(n, '192.0.2.88')));
      await server.sync();
      for (let i = 0; i < 4; i++) {
        const gone = await dnsQuery({ server: at, name: 'www.s1.test.', type: 'A' });
        assert.equal(gone.rcodeName, 'REFUSED');
      }
      assert.deepEqual(await www(n), Array(4).fill('192.0.2.88'));
      assert.deepEqual(await www(2), Array(4).fill('10.1.0.2'));
    } finally {
      await server.stop();
    }
  },
);

test('metrics: ferry.dns.query events in process and from query threads', async () => {
  for (const workers of [1, 2]) {
    const server = new DnsServer({ address: '127.0.120.1', port: 0, zones: [parseZone(TEST_ZONE)], workers });
    const seen: DnsQueryEvent[] = [];
    const fn = (m: unknown) => seen.push(m as DnsQueryEvent);
    diagnostics_channel.subscribe(DNS_QUERY_CHANNEL, fn);
    await server.start();
    try {
      if (workers > 1) await new Promise((r) => setTimeout(r, 600)); // the threads learn of the subscriber
      await dnsQuery({ server, name: 'www.example.', type: 'A' });
      await dnsQuery({ server, name: 'nope.example.', type: 'AAAA', tcp: true });
      for (let i = 0; i < 50 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 100));
      const byType = Object.fromEntries(seen.map((e) => [e.qtype, e]));
      assert.equal(byType.A?.rcode, 'NOERROR', `workers=${workers}: ${JSON.stringify(seen)}`);
      assert.equal(byType.A?.transport, 'udp');
      assert.equal(byType.AAAA?.rcode, 'NXDOMAIN');
      assert.equal(byType.AAAA?.transport, 'tcp');
      assert.ok(byType.A!.durationMs >= 0);
    } finally {
      diagnostics_channel.unsubscribe(DNS_QUERY_CHANNEL, fn);
      await server.stop();
    }
  }
});

test('workers: bad worker counts are refused with what to write', () => {
  assert.throws(() => new DnsServer({ workers: 0 }), /workers must be an integer from 1 to 64/);
});

test(
  'workers: an UPDATE over UDP is forwarded by a query thread, applied by the main thread, and reaches every thread',
  { skip: offNative },
  async () => {
    const server = new DnsServer({
      address: '127.0.120.2',
      port: 0,
      zones: [parseZone(TEST_ZONE)],
      workers: 2,
      zonePolicies: {
        'example.': {
          allowTransfer: [{ address: '127.0.0.0/8' }],
          allowUpdate: [{ address: '127.0.0.0/8' }],
        },
      },
    });
    await server.start();
    const at = { address: server.address, port: server.port };
    try {
      // From several source ports: whichever thread gets it forwards it.
      for (let i = 0; i < 4; i++) {
        const req = encodeUpdate({
          id: 100 + i,
          zone: 'example.',
          updates: [upd.add(`u${i}.example.`, 'A', 60, `192.0.2.${50 + i}`)],
        });
        const res = decodeUpdate(await dnsExchangeUdp(at, req));
        assert.equal(res.id, 100 + i);
        assert.equal(res.rcode, Rcode.NOERROR);
      }
      await server.sync();
      for (const answers of await manyAsk(at, 'u3.example.', 8)) assert.deepEqual(answers, ['192.0.2.53']);
      // Transfers are TCP: the main thread answers them with the change in.
      const axfr = await dnsTransfer({ server: at, zone: 'example.' });
      assert.equal(axfr.rcode, Rcode.NOERROR);
      assert.equal(axfr.records.length, server.zones.list()[0]!.records().length + 1); // SOA twice (RFC 5936 §2.2)
      assert.ok(axfr.records.some((r) => r.name === 'u0.example.'));
    } finally {
      await server.stop();
    }
  },
);

test(
  'workers: a query thread that dies is replaced and gets the current zones',
  { skip: offNative },
  async () => {
    const server = new DnsServer({
      address: '127.0.120.4',
      port: 0,
      zones: [parseZone(TEST_ZONE)],
      workers: 2,
    });
    await server.start();
    try {
      const before = (await server.workerStats()).map((s) => s.thread);
      // A thread ending on its own (a crash) looks the same to the pool: its `exit` event.
      const pool = (server as unknown as { pool: { slots: Array<{ worker: Worker }> } }).pool;
      const victim = pool.slots[0]!.worker;
      const gone = victim.threadId;
      await victim.terminate();
      server.zones.replaceRRset('www.example.', 'A', 60, ['192.0.2.77']);
      let threads: number[] = [];
      for (let i = 0; i < 100; i++) {
        await new Promise((r) => setTimeout(r, 100));
        threads = (await server.workerStats()).map((s) => s.thread);
        if (threads.length === 2 && !threads.includes(gone)) break;
      }
      assert.equal(threads.length, 2, 'two threads again');
      assert.ok(!threads.includes(gone) && before.includes(gone), `${before} → ${threads}`);
      await server.sync();
      for (const answers of await manyAsk(server, 'www.example.', 10))
        assert.deepEqual(answers, ['192.0.2.77']);
    } finally {
      await server.stop();
    }
  },
);

test(
  "workers: the query threads read the main thread's zone memory, not copies",
  { skip: offNative },
  async () => {
    const server = new DnsServer({
      address: '127.0.120.6',
      port: 0,
      zones: [parseZone(bigZoneText(20_000))],
      workers: 2,
    });
    await server.start();
    try {
      const zone = server.zones.list()[0]!;
      const img = zone.compactImage();
      assert.ok(isShared(img.image.buf) && isShared(img.image.index), 'the base is on SharedArrayBuffers');
      // Change one byte of h123's address in the main thread's buffer (behind the store's back,
      // which nothing but this test does): the threads answer with it, so they read this memory.
      const name = Buffer.from('h123.big.test.');
      const at = Buffer.from(img.base.buffer, img.base.byteOffset, img.base.byteLength).indexOf(
        Buffer.concat([Buffer.from([0, name.length]), name]),
      );
      assert.ok(at >= 0);
      const rdata = at + 2 + name.length + 1 + 8 + 2; // RRset count; TYPE, TTL, records; rdata length
      assert.equal(img.base[rdata + 3], 123);
      img.base[rdata + 3] = 99;
      const answers = await manyAsk(server, 'h123.big.test.', 12);
      assert.deepEqual(new Set(answers.flat()), new Set(['10.0.0.99']));
      const stats = await server.workerStats();
      assert.ok(
        stats.every((s) => s.udp > 0),
        `both threads answered: ${JSON.stringify(stats)}`,
      );
      // A fold makes a new base: it is posted to the threads, which then answer from it.
      img.base[rdata + 3] = 123;
      for (let i = 0; i < 4000; i++) server.zones.replaceRRset(`x${i}.big.test.`, 'A', 60, ['192.0.2.9']);
      await server.sync();
      assert.notEqual(zone.baseImage, img.image, 'the zone folded into a new base');
      assert.deepEqual(new Set((await manyAsk(server, 'x3999.big.test.', 6)).flat()), new Set(['192.0.2.9']));
      assert.deepEqual(new Set((await manyAsk(server, 'h123.big.test.', 6)).flat()), new Set(['10.0.0.123']));
    } finally {
      await server.stop();
    }
  },
);

test('workers without the native UDP addon: one warning, and this thread answers UDP and TCP', async () => {
  const before = process.env.FERRY_NATIVE;
  process.env.FERRY_NATIVE = '0';
  const warnings: Array<{ msg: string; reason?: string }> = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line)) });
  const server = new DnsServer({
    address: '127.0.120.7',
    port: 0,
    zones: [parseZone(TEST_ZONE)],
    workers: 2,
    logger,
  });
  try {
    await server.start();
    for (const tcp of [false, true]) {
      const a = await dnsQuery({ server, name: 'www.example.', type: 'A', tcp });
      assert.deepEqual(
        a.answers.map((r) => r.rdata),
        ['192.0.2.1'],
      );
    }
    server.zones.replaceRRset('www.example.', 'A', 60, ['192.0.2.78']);
    await server.sync();
    assert.equal(
      (await dnsQuery({ server, name: 'www.example.', type: 'A' })).answers[0]!.rdata,
      '192.0.2.78',
    );
    assert.equal(server.udpKind, 'dgram');
    assert.deepEqual(await server.workerStats(), []);
    assert.equal(warnings.length, 1, JSON.stringify(warnings));
    assert.match(warnings[0]!.msg, /dns workers need the native UDP addon/);
    assert.equal(warnings[0]!.reason, 'FERRY_NATIVE=0');
  } finally {
    await server.stop();
    if (before === undefined) delete process.env.FERRY_NATIVE;
    else process.env.FERRY_NATIVE = before;
  }
});
