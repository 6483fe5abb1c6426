/**
 * Fuzz-ish robustness: random and mutated-valid packets at the engine (with and without the
 * answer cache, which must agree byte for byte) and at a live server over UDP and TCP. Seeded,
 * so a failure is reproducible; bounded so the unit suite stays fast (issue 3 wants far more in a
 * long run: set FERRY_FUZZ_PACKETS).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import { dnsQuery } from './client.js';
import { QueryEngine } from './query/engine.js';
import { DnsServer } from './server.js';
import { TEST_ZONE } from './test-fixtures.js';
import { decodeMessage, encodeMessage, makeQuery, type DnsMessage } from './wire/message.js';
import { RRType, Rcode } from './wire/types.js';
import { parseZone } from './zone/parser.js';
import { ZoneStore } from './zone/store.js';
import { mulberry32 as rng } from '../common/random.js';

const PACKETS = Number(process.env.FERRY_FUZZ_PACKETS ?? 20_000);
/**
 * Bound on the server's memory growth under the fuzz (V8 heap + Buffers, after a full GC),
 * measured from the first quarter of the run, when its answer cache is warm, to the end.
 */
const MEMORY_BOUND_MB = 24;

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** Heap and Buffer bytes in use after a full collection. */
function liveBytes(): number {
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external + m.arrayBuffers;
}

const NAMES = [
  'example.',
  'www.example.',
  'WWW.Example.',
  'alias.example.',
  'chain1.example.',
  'loop1.example.',
  'x.wild.example.',
  'y.cwild.example.',
  'b.ent.example.',
  'a.b.ent.example.',
  'q.sub.example.',
  'sub.example.',
  'a.dn.example.',
  'big.example.',
  'nope.example.',
  'sip.example.',
  'example.net.',
  '.',
];
const TYPES = [1, 2, 5, 6, 15, 16, 28, 33, 39, 43, 41, 250, 251, 252, 253, 255, 65, 0, 999];

/** A packet generator: valid queries, mutated queries, and noise. */
function generator(seed: number): () => Buffer {
  const r = rng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const pick = <T>(a: readonly T[]): T => a[int(a.length)]!;
  const valid = (): Buffer => {
    const ednsChoice = int(5);
    const q: DnsMessage = makeQuery(int(65536), pick(NAMES), pick(TYPES), {
      rd: r() < 0.5,
      edns: ednsChoice === 0 ? false : { udpSize: pick([0, 512, 1232, 4096, 65535]), dnssecOk: r() < 0.3 },
      cls: r() < 0.95 ? 1 : pick([3, 255, 254]),
    });
    if (q.edns && r() < 0.1) q.edns.version = 1;
    if (q.edns && r() < 0.2) q.edns.options.push({ code: 10, data: Buffer.alloc(8, int(256)) });
    if (r() < 0.03) q.opcode = pick([1, 2, 4, 5, 15]);
    if (r() < 0.03) q.questions = r() < 0.5 ? [] : [q.questions[0]!, q.questions[0]!];
    q.flags.cd = r() < 0.1;
    return encodeMessage(q);
  };
  return () => {
    const kind = int(10);
    if (kind < 3) return valid();
    if (kind < 4) {
      const b = Buffer.alloc(int(600));
      for (let i = 0; i < b.length; i++) b[i] = int(256);
      return b;
    }
    const b = Buffer.from(valid());
    const edits = 1 + int(4);
    let out = b;
    for (let e = 0; e < edits; e++) {
      switch (int(6)) {
        case 0:
          if (out.length) out[int(out.length)]! ^= 1 << int(8);
          break;
        case 1:
          if (out.length) out[int(out.length)] = int(256);
          break;
        case 2:
          out = out.subarray(0, int(out.length + 1));
          break;
        case 3:
          out = Buffer.concat([out, Buffer.from([int(256), int(256), int(256)])]);
          break;
        case 4: {
          // A compression pointer somewhere, often a loop.
          const at = int(Math.max(1, out.length - 1));
          if (out.length > 2) {
            out[at] = 0xc0 | int(0x40);
            out[at + 1] = int(out.length);
          }
          break;
        }
        case 5:
          if (out.length > 12) out[4 + int(8)] = int(4);
          break;
      }
    }
    return Buffer.from(out);
  };
}

function store(): ZoneStore {
  return new ZoneStore([parseZone(TEST_ZONE)]);
}

test(`engine: ${PACKETS} random and mutated packets; cached and uncached answers agree`, () => {
  const s1 = store();
  const s2 = store();
  const cached = new QueryEngine(s1, { answerCacheSize: 500 });
  const plain = new QueryEngine(s2, { answerCacheSize: 0 });
  const next = generator(1);
  let answered = 0;
  for (let i = 0; i < PACKETS; i++) {
    if (i % 2500 === 1) {
      for (const s of [s1, s2]) s.replaceRRset('www.example.', 'A', 60, [`192.0.2.${i % 250}`]);
    }
    const p = next();
    const transport = i % 3 === 0 ? 'tcp' : 'udp';
    const a = cached.answer(p, transport);
    const b = plain.answer(p, transport);
    assert.deepEqual(a, b, `packet ${i} ${p.toString('hex')}`);
    if (!a) {
      assert.ok(
        p.length < 12 || (p[2]! & 0x80) !== 0,
        `only runts and responses are dropped: ${p.toString('hex')}`,
      );
      continue;
    }
    answered++;
    const m = decodeMessage(a);
    assert.equal(m.id, (p[0]! << 8) | p[1]!);
    assert.equal(m.flags.qr, true);
    assert.equal(m.flags.ra, false);
    if (transport === 'udp') assert.ok(a.length <= 1232, `UDP answer of ${a.length} bytes`);
    assert.ok(
      [
        Rcode.NOERROR,
        Rcode.FORMERR,
        Rcode.NXDOMAIN,
        Rcode.NOTIMP,
        Rcode.REFUSED,
        Rcode.BADVERS,
        Rcode.YXDOMAIN,
      ].includes(m.rcode as 0),
      `rcode ${m.rcode}`,
    );
  }
  assert.ok(answered > PACKETS / 2);
  assert.ok(cached.cache!.size <= 500, 'cache stays bounded');
});

test('server: random and mutated packets over UDP and TCP do not crash it', async () => {
  const server = new DnsServer({ port: 0, zones: [parseZone(TEST_ZONE)], tcpIdleTimeoutMs: 2000 });
  await server.start();
  const next = generator(2);
  const udpCount = Math.floor(PACKETS * 0.75);
  const tcpCount = PACKETS - udpCount;
  let received = 0;
  const udp = dgram.createSocket('udp4');
  udp.on('message', () => received++);
  try {
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    let warm = 0;
    for (let i = 0; i < udpCount; i++) {
      if (i === Math.floor(udpCount / 4)) {
        await new Promise((r) => setTimeout(r, 50));
        warm = liveBytes();
      }
      udp.send(next(), server.port, server.address);
      // Paced so the socket buffers, not the server, are not what drops packets.
      if (i % 50 === 49) await new Promise((r) => setTimeout(r, 1));
    }
    // TCP: frames of random packets; the server closes streams that are garbage, so reconnect.
    let sent = 0;
    while (sent < tcpCount) {
      const sock = net.connect({ host: server.address, port: server.port });
      sock.on('error', () => undefined);
      sock.on('data', () => undefined);
      await new Promise<void>((r) => sock.once('connect', () => r()));
      const frames: Buffer[] = [];
      for (let i = 0; i < 500 && sent < tcpCount; i++, sent++) {
        const p = next();
        const f = Buffer.alloc(2 + p.length);
        f.writeUInt16BE(p.length);
        p.copy(f, 2);
        frames.push(f);
      }
      // Sometimes a lying length prefix at the end, to leave a partial frame behind.
      if (sent % 1000 === 0) frames.push(Buffer.from([0xff, 0xff, 1, 2, 3]));
      sock.end(Buffer.concat(frames));
      await new Promise<void>((r) => sock.once('close', () => r()));
    }
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(received > udpCount / 2, `got ${received} UDP answers`);
    const growth = (liveBytes() - warm) / 1048576;
    process.stdout.write(
      `# fuzz: ${udpCount} UDP + ${tcpCount} TCP packets, ${received} UDP answers; live memory ${growth.toFixed(1)} MB ` +
        `since warm-up (bound ${MEMORY_BOUND_MB} MB), answer cache ${server.engine.cache?.size} entries\n`,
    );
    assert.ok(growth < MEMORY_BOUND_MB, `memory grew ${growth.toFixed(1)} MB under the fuzz`);
    for (const tcp of [false, true]) {
      const a = await dnsQuery({ server, name: 'www.example.', type: 'A', tcp });
      assert.equal(a.answers[0]!.rdata, '192.0.2.1', 'still answering');
    }
    const q = await dnsQuery({ server, name: 'example.', type: 'SOA' });
    assert.equal(q.answers[0]!.type, RRType.SOA);
  } finally {
    udp.close();
    await server.stop();
  }
});

test('many idle TCP clients cannot starve the server: UDP answers at once, TCP after the idle timeout', async () => {
  const server = new DnsServer({
    address: '127.0.120.3',
    port: 0,
    zones: [parseZone(TEST_ZONE)],
    tcpIdleTimeoutMs: 1000,
    maxTcpConnections: 100,
  });
  await server.start();
  const idle: net.Socket[] = [];
  try {
    // 300 connections that never send a byte (or send half a length prefix): more than the cap.
    for (let i = 0; i < 300; i++) {
      const c = net.connect({ host: server.address, port: server.port });
      c.on('error', () => undefined);
      await new Promise<void>((r) => {
        c.once('connect', () => r());
        c.once('close', () => r());
      });
      if (i % 2 === 0) c.write(Buffer.from([0]));
      idle.push(c);
    }
    const udp = await dnsQuery({ server, name: 'www.example.', type: 'A' });
    assert.equal(udp.answers[0]!.rdata, '192.0.2.1', 'UDP is answered while TCP is full');
    // The idle ones are closed by the server within the timeout; a fresh TCP client then gets in.
    let answered = false;
    for (let i = 0; i < 30 && !answered; i++) {
      answered = await dnsQuery({ server, name: 'www.example.', type: 'A', tcp: true, timeoutMs: 500 }).then(
        (r) => r.answers[0]?.rdata === '192.0.2.1',
        () => false,
      );
      if (!answered) await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(answered, 'a fresh TCP query is answered once idle clients time out');
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(
      idle.every((c) => c.destroyed || c.readableEnded),
      'every idle client was disconnected by the server',
    );
  } finally {
    for (const c of idle) c.destroy();
    await server.stop();
  }
});
