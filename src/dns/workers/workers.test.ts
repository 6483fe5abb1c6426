import { test } from 'node:test';
import assert from 'node:assert/strict';
import diagnostics_channel from 'node:diagnostics_channel';
import { dnsQuery } from '../client.js';
import { DNS_QUERY_CHANNEL, type DnsQueryEvent } from '../metrics.js';
import { DnsServer } from '../server.js';
import { TEST_ZONE } from '../test-fixtures.js';
import { parseZone } from '../zone/parser.js';
import { Rcode } from '../wire/types.js';
import { dnsTransfer } from '../xfr/client.js';
import { decodeRRsets, encodeRRsets, type RRsetState } from './codec.js';
import { isAlive } from '../../../test/processes.js';

const OTHER = `$ORIGIN other.test.
@ SOA ns hostmaster 1 3600 600 86400 300
@ NS ns
ns A 192.0.2.200
`;

test('codec: RRset states round-trip, deletions included', () => {
  const zone = parseZone(TEST_ZONE);
  const sets: RRsetState[] = [...zone.rrsets(), { name: 'gone.example.', type: 1, ttl: 0, rdata: [] }];
  const back: RRsetState[] = [];
  decodeRRsets(encodeRRsets(sets), (s) => back.push(s));
  assert.deepEqual(back, sets);
});

test('workers: 2 processes answer over UDP and TCP; changes reach both; clean stop', async () => {
  const server = new DnsServer({
    address: '127.0.120.1',
    port: 0,
    zones: [parseZone(TEST_ZONE)],
    workers: 2,
  });
  await server.start();
  let pids: number[] = [];
  try {
    const at = { address: server.address, port: server.port };
    assert.ok(at.port > 0);
    for (const tcp of [false, true]) {
      const a = await dnsQuery({ server: at, name: 'www.example.', type: 'A', tcp });
      assert.deepEqual(
        a.answers.map((r) => r.rdata),
        ['192.0.2.1'],
      );
      assert.equal(a.flags.aa, true);
    }
    // A change through the store's API, then enough queries that both workers answer some.
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
    // A CNAME replacing an A (deletion first in the workers), a deletion, a new zone, a removal.
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
    pids = stats.map((s) => s.pid);
    assert.equal(stats.length, 2);
    assert.ok(
      stats.reduce((n, s) => n + s.udp + s.tcp, 0) === 58,
      `every query counted once: ${JSON.stringify(stats)}`,
    );
  } finally {
    await server.stop();
  }
  assert.ok(
    pids.every((p) => !isAlive(p)),
    'workers are gone after stop()',
  );
});

test('metrics: ferry.dns.query events in process and from workers', async () => {
  for (const workers of [1, 2]) {
    const server = new DnsServer({ address: '127.0.120.1', port: 0, zones: [parseZone(TEST_ZONE)], workers });
    const seen: DnsQueryEvent[] = [];
    const fn = (m: unknown) => seen.push(m as DnsQueryEvent);
    diagnostics_channel.subscribe(DNS_QUERY_CHANNEL, fn);
    await server.start();
    try {
      if (workers > 1) await new Promise((r) => setTimeout(r, 600)); // the workers learn of the subscriber
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

test('workers: a zone transfer is answered by the primary process through a worker', async () => {
  const server = new DnsServer({
    address: '127.0.120.2',
    port: 0,
    zones: [parseZone(TEST_ZONE)],
    workers: 2,
    zonePolicies: { 'example.': { allowTransfer: [{ address: '127.0.0.0/8' }] } },
  });
  await server.start();
  try {
    server.zones.replaceRRset('new.example.', 'A', 60, ['192.0.2.222']);
    const axfr = await dnsTransfer({
      server: { address: server.address, port: server.port },
      zone: 'example.',
    });
    assert.equal(axfr.rcode, Rcode.NOERROR);
    const expected = server.zones.list()[0]!.records().length + 1; // the SOA twice (RFC 5936 §2.2)
    assert.equal(axfr.records.length, expected);
    assert.ok(axfr.records.some((r) => r.name === 'new.example.'));
  } finally {
    await server.stop();
  }
});

test('workers: a worker that dies is replaced and gets the current zones', async () => {
  const server = new DnsServer({
    address: '127.0.120.4',
    port: 0,
    zones: [parseZone(TEST_ZONE)],
    workers: 2,
  });
  await server.start();
  try {
    const [victim] = await server.workerStats();
    process.kill(victim!.pid, 'SIGKILL');
    server.zones.replaceRRset('www.example.', 'A', 60, ['192.0.2.77']);
    let pids: number[] = [];
    for (let i = 0; i < 100; i++) {
      await new Promise((r) => setTimeout(r, 100));
      pids = (await server.workerStats()).map((s) => s.pid);
      if (pids.length === 2 && !pids.includes(victim!.pid)) break;
    }
    assert.equal(pids.length, 2, 'two workers again');
    assert.ok(!pids.includes(victim!.pid));
    await server.sync();
    for (let i = 0; i < 10; i++) {
      const a = await dnsQuery({ server, name: 'www.example.', type: 'A' });
      assert.equal(a.answers[0]!.rdata, '192.0.2.77');
    }
  } finally {
    await server.stop();
  }
});
