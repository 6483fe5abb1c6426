/**
 * The catalog zone (RFC 9432 v2): its content, its serial on every add and remove, NOTIFY and
 * transfers (AXFR, IXFR) under the catalog's policy, and the same ids after a restart from SQLite.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isFerryError } from '../../common/errors.js';
import { dnsQuery } from '../client.js';
import { DnsServer } from '../server.js';
import { formatRdata } from '../wire/rdata.js';
import { decodeMessage, encodeMessage, type ResourceRecord } from '../wire/message.js';
import { Opcode, RRType, Rcode, typeName } from '../wire/types.js';
import { parseZone } from '../zone/parser.js';
import { ZoneStore } from '../zone/store.js';
import { dnsTransfer } from '../xfr/client.js';
import { Catalog, catalogMemberId } from './catalog.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-catalog-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const ADDR = '127.0.116.1';
const SECONDARY = '127.0.116.2';
const CAT = 'catalog.ferry.invalid.';

const zone = (origin: string, serial = 1) =>
  parseZone(`@ 300 SOA ns1 hm ${serial} 3600 600 86400 60\n@ 300 NS ns1\nns1 300 A 192.0.2.53\n`, { origin });

/** The catalog's records as sorted `name TYPE rdata` lines (SOA left out). */
function content(records: Iterable<{ name: string; type: number; data: unknown[] }>): string[] {
  const out: string[] = [];
  for (const r of records)
    if (r.type !== RRType.SOA)
      out.push(`${r.name} ${typeName(r.type)} ${formatRdata(r.type, r.data as ResourceRecord['data'])}`);
  return out.sort();
}
const member = (origin: string) => `${catalogMemberId(origin)}.zones.${CAT} PTR ${origin}`;
const fixed = [`${CAT} NS invalid.`, `version.${CAT} TXT "2"`];

describe('catalog zone content', () => {
  it('lists every zone but itself with a stable id, and follows adds and removes with one serial step each', () => {
    const store = new ZoneStore([zone('a.example.'), zone('b.example.')]);
    const cat = new Catalog(store);
    const z = cat.zone!;
    assert.equal(z.origin, CAT);
    const expect = (...members: string[]) =>
      assert.deepEqual(content(z.records()), [...fixed, ...members.map(member)].sort());
    expect('a.example.', 'b.example.');
    assert.match(catalogMemberId('a.example.'), /^[0-9a-f]{32}$/);
    assert.equal(catalogMemberId('A.Example.'), catalogMemberId('a.example.'), 'ids ignore case');
    assert.notEqual(catalogMemberId('a.example.'), catalogMemberId('b.example.'));
    const soa = formatRdata(RRType.SOA, z.soa.rdata[0]!).split(' ');
    assert.deepEqual([soa[0], soa[1]], ['invalid.', 'invalid.']);
    const s0 = z.serial;
    assert.ok(Math.abs(s0 - Date.now() / 1000) < 60, 'a new catalog starts at the current Unix time');

    store.add(zone('c.example.'));
    assert.equal(z.serial, s0 + 1);
    expect('a.example.', 'b.example.', 'c.example.');
    assert.deepEqual(
      cat.members(),
      new Map(['a', 'b', 'c'].map((l) => [`${l}.example.`, catalogMemberId(`${l}.example.`)])),
    );

    // Replacing a zone (a new version of its file) is no change of membership.
    store.add(zone('c.example.', 2));
    assert.equal(z.serial, s0 + 1);

    assert.equal(store.remove('b.example.'), true);
    assert.equal(z.serial, s0 + 2);
    expect('a.example.', 'c.example.');
    assert.equal(store.remove('nothing.example.'), false);
    assert.equal(z.serial, s0 + 2);

    // Removed and added again: the same id as before.
    store.add(zone('b.example.'));
    assert.equal(z.serial, s0 + 3);
    expect('a.example.', 'b.example.', 'c.example.');

    // Zones at or below the catalog's own name are never members.
    store.add(zone(`sub.${CAT}`));
    assert.equal(z.serial, s0 + 3);
    expect('a.example.', 'b.example.', 'c.example.');
    cat.close();
  });

  it('takes a configured name and refuses one that is no domain name', () => {
    const store = new ZoneStore([zone('a.example.')]);
    const cat = new Catalog(store, { zone: 'Cat.Example.NET' });
    assert.equal(cat.origin, 'Cat.Example.NET.');
    assert.deepEqual([...cat.members().keys()], ['a.example.']);
    assert.throws(
      () => new Catalog(new ZoneStore(), { zone: 'bad..name' }),
      (e: unknown) => isFerryError(e, 'DNS_BAD_OPTIONS'),
    );
    assert.throws(
      () => new Catalog(new ZoneStore(), { zone: '.' }),
      (e: unknown) => isFerryError(e, 'DNS_BAD_OPTIONS'),
    );
    // A zone of that name that is no catalog stays as it is.
    const taken = new ZoneStore([zone('cat.example.')]);
    assert.throws(
      () => new Catalog(taken, { zone: 'cat.example.' }),
      (e: unknown) => isFerryError(e, 'DNS_BAD_OPTIONS') && /ordinary zone/.test((e as Error).message),
    );
    assert.deepEqual(
      taken.list().map((z) => z.records().length),
      [3],
    );
  });
});

describe('catalog zone served', () => {
  it('NOTIFYs its secondaries on an add and a remove, serves AXFR and IXFR by the ACL, and keeps its ids across a restart', async () => {
    const sec = dgram.createSocket('udp4');
    await new Promise<void>((r) => sec.bind(0, SECONDARY, () => r()));
    const notified: Array<{ zone: string; serial: number }> = [];
    sec.on('message', (buf, rinfo) => {
      const m = decodeMessage(buf);
      if (m.opcode !== Opcode.NOTIFY) return;
      notified.push({ zone: m.questions[0]!.name, serial: m.answers[0]?.data[2] as number });
      const res = encodeMessage({ ...m, flags: { ...m.flags, qr: true }, answers: [], additional: [] });
      sec.send(res, rinfo.port, rinfo.address);
    });
    const db = join(dir, 'served.sqlite');
    const opts = {
      address: ADDR,
      port: 0,
      db,
      catalog: {},
      zonePolicies: {
        [CAT]: {
          allowTransfer: [{ address: '127.0.0.1' }], // where the test's transfers come from
          notify: [{ address: SECONDARY, port: sec.address().port }],
        },
      },
      notify: { coalesceMs: 20, retryMs: 200, retries: 2 },
    };
    let s = new DnsServer({ ...opts, zones: [zone('a.example.')] });
    const at = () => ({ address: s.address, port: s.port });
    try {
      await s.start();
      const s0 = s.zones.serial(CAT);
      const waitNotify = async (serial: number) => {
        const end = Date.now() + 3000;
        while (!notified.some((n) => n.zone === CAT && n.serial === serial) && Date.now() < end)
          await new Promise((r) => setTimeout(r, 20));
        assert.ok(
          notified.some((n) => n.zone === CAT && n.serial === serial),
          `NOTIFY for ${CAT} serial ${serial}: got ${JSON.stringify(notified)}`,
        );
      };

      s.zones.add(zone('b.example.'));
      assert.equal(s.zones.serial(CAT), s0 + 1);
      await waitNotify(s0 + 1);
      const axfr = await dnsTransfer({ server: at(), zone: CAT });
      assert.equal(axfr.rcode, Rcode.NOERROR);
      assert.deepEqual(content(axfr.records), [...fixed, member('a.example.'), member('b.example.')].sort());

      s.zones.remove('a.example.');
      assert.equal(s.zones.serial(CAT), s0 + 2);
      await waitNotify(s0 + 2);
      // IXFR from before the add: the add, then the remove (RFC 1995 form: SOA, -, SOA, +, ...).
      const ixfr = await dnsTransfer({ server: at(), zone: CAT, serial: s0 });
      assert.equal(ixfr.rcode, Rcode.NOERROR);
      const ptrs = ixfr.records.filter((r) => r.type === RRType.PTR).map((r) => String(r.data[0]));
      assert.deepEqual(ptrs, ['b.example.', 'a.example.']);
      assert.equal(ixfr.records.filter((r) => r.type === RRType.SOA).length, 6);

      // The catalog's ACL is its own: a member zone keeps its policy (here none: refused).
      const other = await dnsTransfer({ server: at(), zone: 'b.example.' });
      assert.equal(other.rcode, Rcode.REFUSED);

      await s.stop();
      // Back from the database: same ids, same serial, and a zone given at start joins in one step.
      s = new DnsServer({ ...opts, zones: [] });
      assert.equal(s.zones.serial(CAT), s0 + 2);
      assert.deepEqual(content(s.catalog!.zone!.records()), [...fixed, member('b.example.')].sort());
      await s.stop();
      s = new DnsServer({ ...opts, zones: [zone('c.example.')] });
      await s.start();
      assert.equal(s.zones.serial(CAT), s0 + 3);
      assert.deepEqual(
        content(s.catalog!.zone!.records()),
        [...fixed, member('b.example.'), member('c.example.')].sort(),
      );
      const inc = await dnsTransfer({ server: at(), zone: CAT, serial: s0 + 2 });
      assert.deepEqual(
        inc.records.filter((r) => r.type === RRType.PTR).map((r) => String(r.data[0])),
        ['c.example.'],
        'IXFR across the restart',
      );
    } finally {
      await s.stop();
      sec.close();
    }
  });
});

describe('catalog zone with query workers', () => {
  it('answers from every worker with the members as they are after an add and a remove', async () => {
    const s = new DnsServer({ address: ADDR, port: 0, workers: 2, catalog: {}, zones: [zone('a.example.')] });
    await s.start();
    try {
      const ptr = async (origin: string) => {
        const r = await dnsQuery({
          server: { address: s.address, port: s.port },
          name: `${catalogMemberId(origin)}.zones.${CAT}`,
          type: 'PTR',
        });
        return r.answers.map((a) => a.rdata);
      };
      assert.deepEqual(await ptr('a.example.'), ['a.example.']);
      s.zones.add(zone('b.example.'));
      s.zones.remove('a.example.');
      await s.sync();
      // Several queries, so that both workers (spread by source port) answer.
      for (let i = 0; i < 8; i++) {
        assert.deepEqual(await ptr('b.example.'), ['b.example.']);
        assert.deepEqual(await ptr('a.example.'), []);
      }
    } finally {
      await s.stop();
    }
  });
});
