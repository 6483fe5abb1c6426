/**
 * Many zones through the real server (issue 17): 5,000 zone files in a directory, served with the
 * SQLite store and the catalog; queries, an UPDATE, AXFR and IXFR of a few; a restart from the
 * store alone; a reload with a bad file keeping the old copy; the zone size limit refusing a real
 * UPDATE with REFUSED and a log line.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { dnsQuery } from './client.js';
import { DnsServer } from './server.js';
import { sendUpdate, upd } from './update/client.js';
import { Rcode, RRType } from './wire/types.js';
import { dnsTransfer } from './xfr/client.js';
import { ZoneFiles } from './zone/files.js';

const ZONES = 5000;
const ADDR = '127.0.118.1';
const dir = mkdtempSync(join(tmpdir(), 'ferry-many-zones-'));
const zoneDir = join(dir, 'zones');
after(() => rmSync(dir, { recursive: true, force: true }));

function zoneText(i: number, serial = 1, www = `198.51.100.${i % 250}`): string {
  return (
    `$ORIGIN z${i}.example.\n$TTL 300\n@ SOA ns1 hostmaster ${serial} 3600 600 86400 300\n@ NS ns1\n@ NS ns2\n` +
    `ns1 A 192.0.2.53\nns2 A 192.0.2.54\n@ A 198.51.100.1\nwww A ${www}\nmail A 198.51.100.25\n` +
    `@ MX 10 mail\n@ TXT "zone ${i}"\n`
  );
}

/** A logger whose lines the test reads. */
function capture(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n'))
        if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

const policy = {
  '*': {
    allowTransfer: [{ address: '127.0.0.0/8' }],
    allowUpdate: [{ address: '127.0.0.0/8' }],
    maxRecords: 12,
  },
};

describe(`${ZONES} zones from a directory`, () => {
  let server: DnsServer;
  const files = new ZoneFiles({ dirs: [zoneDir] });
  const log = capture();
  const at = () => ({ address: server.address, port: server.port });
  const www = async (i: number) =>
    (await dnsQuery({ server: at(), name: `www.z${i}.example.`, type: 'A' })).answers.map((a) => a.rdata);

  before(async () => {
    mkdirSync(zoneDir);
    for (let i = 0; i < ZONES; i++) writeFileSync(join(zoneDir, `z${i}.example.zone`), zoneText(i));
    server = new DnsServer({
      address: ADDR,
      port: 0,
      zones: await files.loadAll(),
      db: join(dir, 'zones.db'),
      catalog: {},
      zonePolicies: policy,
      logger: log.logger,
    });
    await server.start();
  });
  after(() => server?.stop());

  it('answers every zone it was given, first to last, and the catalog lists them all', async () => {
    assert.equal(server.zones.list().length, ZONES + 1);
    for (const i of [0, 1, 2500, ZONES - 1]) assert.deepEqual(await www(i), [`198.51.100.${i % 250}`]);
    const nx = await dnsQuery({ server: at(), name: `z${ZONES}.example.`, type: 'A' });
    assert.equal(nx.rcode, Rcode.REFUSED, 'a name in no zone');
    const cat = await dnsTransfer({ server: at(), zone: 'catalog.ferry.invalid.' });
    assert.equal(cat.rcode, Rcode.NOERROR);
    assert.equal(cat.records.filter((r) => r.type === RRType.PTR).length, ZONES);
  });

  it('takes an UPDATE, then serves the change by query, AXFR and IXFR', async () => {
    const r = await sendUpdate({
      server: at(),
      zone: 'z4321.example.',
      updates: [upd.add('new.z4321.example.', 'A', 60, '192.0.2.99')],
    });
    assert.equal(r.rcode, Rcode.NOERROR);
    const a = await dnsQuery({ server: at(), name: 'new.z4321.example.', type: 'A' });
    assert.deepEqual(
      a.answers.map((x) => x.rdata),
      ['192.0.2.99'],
    );
    const axfr = await dnsTransfer({ server: at(), zone: 'z4321.example.' });
    assert.equal(axfr.rcode, Rcode.NOERROR);
    assert.equal(axfr.records.length, 12, 'SOA, 10 records and the closing SOA');
    const ixfr = await dnsTransfer({ server: at(), zone: 'z4321.example.', serial: 1 });
    assert.equal(ixfr.rcode, Rcode.NOERROR);
    assert.deepEqual(
      ixfr.records.map((x) =>
        x.type === RRType.SOA ? `SOA ${String(x.data[2])}` : `${x.name} ${String(x.data[0])}`,
      ),
      ['SOA 2', 'SOA 1', 'SOA 2', 'new.z4321.example. 192.0.2.99', 'SOA 2'],
    );
    // Another zone is untouched.
    assert.equal(server.zones.serial('z4320.example.'), 1);
  });

  it('refuses an UPDATE that would grow a zone past maxRecords, logs zone, limit and size, changes nothing', async () => {
    // z4321 holds 11 records now; the limit is 12.
    const two = [
      upd.add('a.z4321.example.', 'A', 60, '192.0.2.1'),
      upd.add('b.z4321.example.', 'A', 60, '192.0.2.2'),
    ];
    const r = await sendUpdate({ server: at(), zone: 'z4321.example.', updates: two });
    assert.equal(r.rcode, Rcode.REFUSED);
    assert.equal(server.zones.serial('z4321.example.'), 2, 'serial unchanged');
    const q = await dnsQuery({ server: at(), name: 'a.z4321.example.', type: 'A' });
    assert.equal(q.rcode, Rcode.NXDOMAIN, 'nothing of the update applied');
    const line = log.lines.find((l) => l.zone === 'z4321.example.' && l.limit !== undefined);
    assert.ok(line, 'a log line');
    assert.equal(line.limit, 12);
    assert.equal(line.size, 13);
    assert.match(String(line.msg), /z4321\.example\. would hold 13 records, over its limit of 12/);
    // Up to the limit is fine; a replacement that does not grow the zone is too.
    const one = await sendUpdate({ server: at(), zone: 'z4321.example.', updates: [two[0]!] });
    assert.equal(one.rcode, Rcode.NOERROR);
    const swap = await sendUpdate({
      server: at(),
      zone: 'z4321.example.',
      updates: [upd.deleteRRset('a.z4321.example.', 'A'), upd.add('c.z4321.example.', 'A', 60, '192.0.2.3')],
    });
    assert.equal(swap.rcode, Rcode.NOERROR);
    assert.equal(server.zones.recordCount(server.zones.findZone('z4321.example.')!), 12);
  });

  it('a reload with a bad file refuses it (file and line) and keeps answering from the old copy', async () => {
    writeFileSync(
      join(zoneDir, 'z17.example.zone'),
      zoneText(17, 2, '192.0.2.217').replace('ns2 A 192.0.2.54', 'ns2 A 192.0.2.'),
    );
    writeFileSync(join(zoneDir, 'z18.example.zone'), zoneText(18, 2, '192.0.2.218'));
    const r = await files.reload(server.zones);
    assert.deepEqual(r.replaced, ['z18.example.']);
    assert.equal(r.refused.length, 1);
    assert.match(r.refused[0]!.error.message, /z17\.example\.zone:7: bad IPv4 address/);
    assert.equal(r.unchanged, ZONES - 2);
    assert.deepEqual(await www(17), ['198.51.100.17'], 'the old copy');
    assert.deepEqual(await www(18), ['192.0.2.218'], 'the new copy');
  });

  it('restarts from the SQLite store alone with every zone and change', async () => {
    await server.stop();
    server = new DnsServer({
      address: ADDR,
      port: 0,
      db: join(dir, 'zones.db'),
      catalog: {},
      zonePolicies: policy,
    });
    await server.start();
    assert.equal(server.zones.list().length, ZONES + 1);
    assert.deepEqual(await www(ZONES - 1), [`198.51.100.${(ZONES - 1) % 250}`]);
    assert.deepEqual(await www(18), ['192.0.2.218']);
    const c = await dnsQuery({ server: at(), name: 'c.z4321.example.', type: 'A' });
    assert.deepEqual(
      c.answers.map((x) => x.rdata),
      ['192.0.2.3'],
    );
    const ixfr = await dnsTransfer({ server: at(), zone: 'z4321.example.', serial: 2 });
    assert.equal(ixfr.rcode, Rcode.NOERROR);
    assert.equal(ixfr.records[0]?.type, RRType.SOA);
    assert.equal(ixfr.records[0]?.data[2], 4, 'the journal survived');
  });
});
