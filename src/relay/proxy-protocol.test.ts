import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { waitFor } from '../common/time.js';
import {
  encodeProxyV1,
  encodeProxyV2,
  parseProxyHeader,
  ProxyHeaderError,
  TcpRelay,
  type RelayOptions,
} from './index.js';
import { client } from './testing.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const v4 = {
  sourceAddress: '192.0.2.10',
  sourcePort: 51234,
  destinationAddress: '198.51.100.1',
  destinationPort: 443,
};
const v6 = {
  sourceAddress: '2001:db8::10',
  sourcePort: 51234,
  destinationAddress: '2001:db8:0:1::1',
  destinationPort: 25,
};

describe('PROXY protocol codec', () => {
  it('encodes v1 as the spec line', () => {
    assert.equal(encodeProxyV1(v4).toString(), 'PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\n');
    assert.equal(encodeProxyV1(v6).toString(), 'PROXY TCP6 2001:db8::10 2001:db8:0:1::1 51234 25\r\n');
    // Mixed families are expressed in IPv6 with the v4-mapped form.
    assert.equal(
      encodeProxyV1({ ...v6, destinationAddress: '::ffff:198.51.100.1' }).toString(),
      'PROXY TCP6 2001:db8::10 ::ffff:198.51.100.1 51234 25\r\n',
    );
    assert.equal(
      encodeProxyV1({ ...v4, sourceAddress: '::ffff:192.0.2.10' })
        .toString()
        .slice(0, 10),
      'PROXY TCP4',
    );
  });

  it('encodes v2 with the signature, PROXY command, family and addresses', () => {
    const h = encodeProxyV2(v4);
    assert.equal(h.length, 28);
    assert.equal(h.subarray(0, 12).toString('hex'), '0d0a0d0a000d0a515549540a');
    assert.equal(h[12], 0x21);
    assert.equal(h[13], 0x11);
    assert.equal(h.readUInt16BE(14), 12);
    assert.equal(h.subarray(16, 20).join('.'), '192.0.2.10');
    assert.equal(h.readUInt16BE(26), 443);
    const h6 = encodeProxyV2(v6);
    assert.equal(h6.length, 52);
    assert.equal(h6[13], 0x21);
    assert.equal(h6.subarray(16, 32).toString('hex'), '20010db8000000000000000000000010');
  });

  it('round-trips v1 and v2 over both families, with payload after the header', () => {
    for (const enc of [encodeProxyV1, encodeProxyV2]) {
      for (const a of [v4, v6]) {
        const buf = Buffer.concat([enc(a), Buffer.from('GET / HTTP/1.0\r\n')]);
        const p = parseProxyHeader(buf)!;
        assert.deepEqual(p.addresses, a);
        assert.equal(buf.subarray(p.length).toString(), 'GET / HTTP/1.0\r\n');
      }
    }
  });

  it('asks for more bytes on a partial header, at every cut', () => {
    for (const full of [encodeProxyV1(v6), encodeProxyV2(v6)]) {
      for (let i = 0; i < full.length; i++)
        assert.equal(parseProxyHeader(full.subarray(0, i)), null, `cut at ${i}`);
    }
  });

  it('parses UNKNOWN and LOCAL as no addresses and skips v2 TLVs', () => {
    assert.deepEqual(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\nxyz')), {
      version: 1,
      addresses: null,
      length: 15,
    });
    const local = encodeProxyV2(v4);
    local[12] = 0x20;
    assert.equal(parseProxyHeader(local)!.addresses, null);
    const base = encodeProxyV2(v4);
    const tlv = Buffer.from([0x04, 0x00, 0x02, 0xab, 0xcd]); // PP2_TYPE_NOOP
    const withTlv = Buffer.concat([base, tlv]);
    withTlv.writeUInt16BE(12 + tlv.length, 14);
    const p = parseProxyHeader(withTlv)!;
    assert.equal(p.length, 28 + 5);
    assert.deepEqual(p.addresses, v4);
  });

  it('rejects malformed headers', () => {
    const bad = [
      'GET / HTTP/1.1\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n',
      'PROXY TCP4 ::1 5.6.7.8 1 2\r\n',
      'PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n',
      `PROXY ${'x'.repeat(120)}`,
    ];
    for (const b of bad) assert.throws(() => parseProxyHeader(Buffer.from(b)), ProxyHeaderError, b);
    const v = encodeProxyV2(v4);
    v[12] = 0x11;
    assert.throws(() => parseProxyHeader(v), ProxyHeaderError);
    const long = encodeProxyV2(v4);
    long.writeUInt16BE(60000, 14);
    assert.throws(() => parseProxyHeader(long), ProxyHeaderError);
  });
});

/** An upstream that records the first bytes of each connection, then answers `ok`. */
async function recorder(address: string): Promise<{ port: number; heads: Buffer[] }> {
  const heads: Buffer[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.includes('END')) {
        heads.push(buf);
        s.end('ok');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, address, () => r()));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as AddressInfo).port, heads };
}

async function relay(opts: RelayOptions): Promise<TcpRelay> {
  const r = new TcpRelay(opts);
  cleanups.push(() => r.close());
  await r.start();
  return r;
}

describe('TcpRelay PROXY protocol', () => {
  for (const version of ['v1', 'v2'] as const) {
    it(`sends a ${version} header with the real client first on each upstream connection`, async () => {
      const up = await recorder('127.0.0.2');
      const r = await relay({
        listen: { address: '127.0.0.3', ports: [0] },
        upstream: { address: '127.0.0.2', port: up.port },
        proxyProtocol: version,
      });
      const c = await client('127.0.0.3', r.ports[0]!);
      cleanups.push(() => void c.socket.destroy());
      c.socket.write('hello END');
      await c.waitFor('ok');
      const p = parseProxyHeader(up.heads[0]!)!;
      assert.equal(p.version, version === 'v1' ? 1 : 2);
      assert.deepEqual(p.addresses, {
        sourceAddress: '127.0.0.1',
        sourcePort: c.socket.localPort,
        destinationAddress: '127.0.0.3',
        destinationPort: r.ports[0],
      });
      assert.equal(up.heads[0]!.subarray(p.length).toString(), 'hello END');
    });
  }

  it('accepts a header from a proxy in front and passes the original client on (chained relays)', async () => {
    const up = await recorder('127.0.0.2');
    const inner = await relay({
      listen: { address: '127.0.0.4', ports: [0] },
      upstream: { address: '127.0.0.2', port: up.port },
      acceptProxyProtocol: true,
      proxyProtocol: 'v1',
    });
    const outer = await relay({
      listen: { address: '::1', ports: [0] },
      upstream: { address: '127.0.0.4', port: inner.ports[0]! },
      proxyProtocol: 'v2',
    });
    const c = await client('::1', outer.ports[0]!);
    cleanups.push(() => void c.socket.destroy());
    c.socket.write('data END');
    await c.waitFor('ok');
    const head = up.heads[0]!.toString();
    assert.equal(head, `PROXY TCP6 ::1 ::1 ${c.socket.localPort} ${outer.ports[0]}\r\ndata END`);
  });

  it('closes a client whose PROXY header is malformed, and one that sends none in time', async () => {
    const up = await recorder('127.0.0.2');
    const r = await relay({
      listen: { address: '127.0.0.3', ports: [0] },
      upstream: { address: '127.0.0.2', port: up.port },
      acceptProxyProtocol: true,
      proxyHeaderTimeoutMs: 200,
    });
    const c1 = await client('127.0.0.3', r.ports[0]!);
    c1.socket.write('GET / HTTP/1.0\r\n\r\n');
    await c1.ended;
    const c2 = await client('127.0.0.3', r.ports[0]!);
    await c2.ended;
    assert.equal(up.heads.length, 0);
    assert.ok(await waitFor(() => r.stats().activeConnections === 0, 1000));
  });
});
