import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { promisify } from 'node:util';
import { isFerryError } from '../common/errors.js';
import { dnsExchangeTcp, dnsExchangeUdp, dnsQuery } from './client.js';
import { DnsServer } from './server.js';
import { decodeMessage, encodeMessage, makeQuery } from './wire/message.js';
import { RRType, Rcode } from './wire/types.js';
import { parseZone } from './zone/parser.js';
import { TEST_ZONE, withTestServer } from './test-fixtures.js';

const run = promisify(execFile);

function withServer(
  fn: (s: DnsServer) => Promise<void>,
  opts: { tcpIdleTimeoutMs?: number; maxTcpConnections?: number } = {},
): Promise<void> {
  return withTestServer(opts, fn);
}

for (const tcp of [false, true]) {
  const via = tcp ? 'TCP' : 'UDP';
  test(`answers over ${via}: positive, negative, referral`, async () => {
    await withServer(async (s) => {
      assert.ok(s.port > 0);
      const server = { address: s.address, port: s.port };
      const a = await dnsQuery({ server, name: 'www.example.', type: 'A', tcp });
      assert.equal(a.rcodeName, 'NOERROR');
      assert.equal(a.flags.aa, true);
      assert.equal(a.flags.ra, false);
      assert.equal(a.tcp, tcp);
      assert.deepEqual(
        a.answers.map((r) => r.rdata),
        ['192.0.2.1'],
      );
      const nx = await dnsQuery({ server, name: 'nope.example.', type: 'A', tcp });
      assert.equal(nx.rcodeName, 'NXDOMAIN');
      assert.equal(nx.authority[0]!.typeName, 'SOA');
      const ref = await dnsQuery({ server, name: 'a.sub.example.', type: 'A', tcp });
      assert.equal(ref.flags.aa, false);
      assert.equal(ref.additional[0]!.rdata, '192.0.2.99');
      const refused = await dnsQuery({ server, name: 'example.net.', type: 'A', tcp });
      assert.equal(refused.rcodeName, 'REFUSED');
    });
  });
}

test('UDP and TCP share the bound port; port 0 picks one', async () => {
  await withServer(async (s) => {
    const q = encodeMessage(makeQuery(1, 'www.example.', RRType.A));
    const server = { address: s.address, port: s.port };
    assert.equal(decodeMessage(await dnsExchangeUdp(server, q)).answers.length, 1);
    assert.equal(decodeMessage(await dnsExchangeTcp(server, q)).answers.length, 1);
  });
});

test('a truncated UDP answer is retried over TCP by the client', async () => {
  await withServer(async (s) => {
    const r = await dnsQuery({ server: s, name: 'big.example.', type: 'TXT', edns: false });
    assert.equal(r.tcp, true);
    assert.equal(r.answers.length, 3);
  });
});

test('change API: the next query sees the new data and serial', async () => {
  await withServer(async (s) => {
    const { serial } = s.zones.replaceRRset('www.example.', 'A', 30, ['192.0.2.123']);
    const a = await dnsQuery({ server: s, name: 'www.example.', type: 'A' });
    assert.deepEqual(
      a.answers.map((r) => [r.rdata, r.ttl]),
      [['192.0.2.123', 30]],
    );
    const soa = await dnsQuery({ server: s, name: 'example.', type: 'SOA' });
    assert.equal(Number(soa.answers[0]!.rdata.split(' ')[2]), serial);
    assert.equal(serial, s.zones.serial('example.'));
  });
});

test('TCP: several queries on one connection, pipelined, answered in full', async () => {
  await withServer(async (s) => {
    const sock = net.connect({ host: s.address, port: s.port });
    await new Promise<void>((r) => sock.once('connect', () => r()));
    const names = ['www.example.', 'mail.example.', 'ns1.example.', 'nope.example.', 'alias.example.'];
    // All queries in one write, each split across the boundary with the next to test reassembly.
    const frames = names.map((n, i) => {
      const q = encodeMessage(makeQuery(100 + i, n, RRType.A));
      const f = Buffer.alloc(2 + q.length);
      f.writeUInt16BE(q.length);
      q.copy(f, 2);
      return f;
    });
    const all = Buffer.concat(frames);
    sock.write(all.subarray(0, 7));
    await new Promise((r) => setTimeout(r, 20));
    sock.write(all.subarray(7));
    const got = new Map<number, number>();
    let pending = Buffer.alloc(0);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timeout')), 2000);
      sock.on('data', (c: Buffer) => {
        pending = Buffer.concat([pending, c]);
        while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
          const m = decodeMessage(pending.subarray(2, 2 + pending.readUInt16BE(0)));
          pending = pending.subarray(2 + pending.readUInt16BE(0));
          got.set(m.id, m.rcode);
        }
        if (got.size === names.length) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    sock.destroy();
    assert.deepEqual([...got.keys()].sort(), [100, 101, 102, 103, 104]);
    assert.equal(got.get(103), Rcode.NXDOMAIN);
  });
});

test('TCP: idle connections are closed; the connection cap holds', async () => {
  await withServer(
    async (s) => {
      const sock = net.connect({ host: s.address, port: s.port });
      const start = Date.now();
      await new Promise<void>((r) => sock.once('close', () => r()));
      assert.ok(Date.now() - start < 2000, 'closed by the idle timeout');
      const conns: net.Socket[] = [];
      for (let i = 0; i < 3; i++) {
        const c = net.connect({ host: s.address, port: s.port });
        c.on('error', () => undefined);
        await new Promise<void>((r) => c.once('connect', () => r()));
        conns.push(c);
      }
      const closed = await Promise.race([
        new Promise<boolean>((r) => conns[2]!.once('close', () => r(true))),
        new Promise<boolean>((r) => setTimeout(() => r(false), 150)),
      ]);
      assert.equal(closed, true, 'the third connection is dropped');
      // The first two still answer.
      for (const c of conns) c.destroy();
    },
    { tcpIdleTimeoutMs: 150, maxTcpConnections: 2 },
  );
});

test('TCP: a client trickling one message byte by byte is cut off (slowloris)', async () => {
  await withServer(
    async (s) => {
      const q = encodeMessage(makeQuery(1, 'www.example.', RRType.A));
      const framed = Buffer.concat([Buffer.from([0, q.length]), q]);
      const sock = net.connect({ host: s.address, port: s.port });
      sock.on('error', () => undefined);
      await new Promise<void>((r) => sock.once('connect', () => r()));
      let closed = false;
      sock.once('close', () => (closed = true));
      // One byte every 60 ms keeps the socket active, but the message takes far over 200 ms.
      for (let i = 0; i < framed.length && !closed; i++) {
        sock.write(framed.subarray(i, i + 1));
        await new Promise((r) => setTimeout(r, 60));
      }
      assert.equal(closed, true, 'closed before the message was complete');
      sock.destroy();
    },
    { tcpIdleTimeoutMs: 200 },
  );
});

test('garbage never crashes the server, over UDP and TCP', async () => {
  await withServer(async (s) => {
    const udp = dgram.createSocket('udp4');
    const junk = [
      Buffer.alloc(0),
      Buffer.from([1]),
      Buffer.alloc(12, 0xff),
      Buffer.alloc(600, 0x41),
      Buffer.from('GET / HTTP/1.1\r\n\r\n'),
    ];
    for (const j of junk) udp.send(j, s.port, s.address);
    await new Promise((r) => setTimeout(r, 50));
    udp.close();
    for (const j of junk) {
      const c = net.connect({ host: s.address, port: s.port });
      c.on('error', () => undefined);
      await new Promise<void>((r) => c.once('connect', () => r()));
      c.write(j);
      c.end();
      await new Promise<void>((r) => c.once('close', () => r()));
    }
    const a = await dnsQuery({ server: s, name: 'www.example.', type: 'A' });
    assert.equal(a.answers.length, 1, 'still serving');
    const t = await dnsQuery({ server: s, name: 'www.example.', type: 'A', tcp: true });
    assert.equal(t.answers.length, 1);
  });
});

test('client: timeout and bad options', async () => {
  const silent = dgram.createSocket('udp4');
  await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
  try {
    await assert.rejects(
      dnsQuery({
        server: { address: '127.0.0.1', port: silent.address().port },
        name: 'x.',
        type: 'A',
        timeoutMs: 100,
      }),
      (e: unknown) => isFerryError(e, 'DNS_TIMEOUT'),
    );
  } finally {
    silent.close();
  }
  await assert.rejects(
    dnsQuery({ server: { address: '127.0.0.1', port: 1 }, name: 'x.', type: 'NOPE' }),
    (e: unknown) => isFerryError(e, 'DNS_BAD_TEXT'),
  );
  assert.throws(() => new DnsServer({ port: 70000 }), /port must be/);
  assert.throws(() => new DnsServer({ address: 'localhost' }), /IP address/);
});

test('start fails clearly when the port is taken', async () => {
  await withServer(async (s) => {
    const other = new DnsServer({ port: s.port, zones: [parseZone(TEST_ZONE)] });
    await assert.rejects(other.start(), (e: unknown) => isFerryError(e, 'DNS_BIND_FAILED'));
  });
});

async function which(bin: string): Promise<string | undefined> {
  try {
    return (await run('which', [bin])).stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

for (const tool of ['dig', 'kdig']) {
  test(`${tool} reads our answers over UDP and TCP`, async (t) => {
    const bin = await which(tool);
    if (!bin) {
      t.skip(`${tool} is not installed`);
      return;
    }
    await withServer(async (s) => {
      const limits = tool === 'dig' ? ['+time=2', '+tries=1'] : ['+timeout=2', '+retry=0'];
      const base = ['@' + s.address, '-p', String(s.port), '+norec', ...limits];
      const udp = (await run(bin, [...base, 'www.example.', 'A'])).stdout;
      assert.match(udp, /status: NOERROR/);
      assert.match(udp, /flags: qr aa;/i);
      assert.match(udp, /www\.example\.\s+3600\s+IN\s+A\s+192\.0\.2\.1/);
      const tcp = (await run(bin, [...base, '+tcp', 'example.', 'MX'])).stdout;
      assert.match(tcp, /mail\.example\.\s+3600\s+IN\s+A\s+192\.0\.2\.25/);
      const nx = (await run(bin, [...base, 'nope.example.', 'A'])).stdout;
      assert.match(nx, /status: NXDOMAIN/);
      const tc = (await run(bin, [...base, '+ignore', '+noedns', 'big.example.', 'TXT'])).stdout;
      assert.match(tc, /flags: qr aa tc/i);
    });
  });
}
