/**
 * The primary role on real sockets: persistence across restarts, AXFR/IXFR with the journal and
 * its AXFR fallback, transfer and update ACLs, every RFC 2136 prerequisite form, TSIG on
 * requests and on every message of a transfer, NOTIFY coalescing and retries.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dnsExchangeUdp } from '../client.js';
import { DnsServer, type DnsServerOptions } from '../server.js';
import { signMessage, TsigKey, TsigKeyring, verifyMessage } from '../tsig/tsig.js';
import { sendUpdate, upd } from '../update/client.js';
import { decodeMessage, encodeMessage, makeQuery } from '../wire/message.js';
import { Opcode, RRType, Rcode } from '../wire/types.js';
import { parseZone } from '../zone/parser.js';
import { dnsTransfer } from './client.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-primary-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const SECRET = Buffer.alloc(32, 3).toString('base64');
const KEY = { name: 'xfr.example.', algorithm: 'hmac-sha256', secret: SECRET };
const key = new TsigKey(KEY);
const ADDR = '127.0.101.1';

const zoneText = (extra = '') =>
  `$ORIGIN example.\n$TTL 300\n@ SOA ns1 hm 10 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.53\nwww A 192.0.2.1\n${extra}`;

async function server(opts: DnsServerOptions = {}, text = zoneText()): Promise<DnsServer> {
  const s = new DnsServer({
    address: ADDR,
    port: 0,
    zones: [parseZone(text, { origin: 'example.' })],
    tsigKeys: [KEY],
    ...opts,
  });
  await s.start();
  return s;
}
const at = (s: DnsServer) => ({ address: s.address, port: s.port });
const open = {
  'example.': { allowTransfer: [{ address: '127.0.0.0/8' }], allowUpdate: [{ key: 'xfr.example.' }] },
};

describe('persistence', () => {
  it('brings zones, changes and serials back after a restart, and a failed change leaves no trace', async () => {
    const db = join(dir, 'p1.db');
    const a = await server({ db, zonePolicies: open });
    a.zones.replaceRRset('www.example.', 'A', 60, ['192.0.2.7', '192.0.2.8']);
    a.zones.applyChanges([
      { owner: 'mail.example.', type: 'A', ttl: 300, rdata: ['192.0.2.25'] },
      { owner: 'www.example.', type: 'TXT', ttl: 300, rdata: ['"hi"'] },
    ]);
    // One bad record in a change of several: nothing of it is applied or stored.
    assert.throws(() =>
      a.zones.applyChanges([
        { owner: 'ok.example.', type: 'A', ttl: 300, rdata: ['192.0.2.9'] },
        { owner: 'www.example.', type: 'CNAME', ttl: 300, rdata: ['x.example.'] },
      ]),
    );
    const r = await sendUpdate({
      server: at(a),
      zone: 'example.',
      updates: [upd.add('u.example.', 'A', 30, '192.0.2.30')],
      key,
    });
    assert.equal(r.rcode, Rcode.NOERROR);
    assert.ok(r.verified);
    const serial = a.zones.serial('example.');
    assert.equal(serial, 13);
    await a.stop();
    // Restarted from the same database and the original file (serial 10): the stored zone wins.
    const b = await server({ db, zonePolicies: open });
    assert.equal(b.zones.serial('example.'), serial);
    assert.deepEqual(b.zones.getRRset('www.example.', 'A'), { ttl: 60, rdata: ['192.0.2.7', '192.0.2.8'] });
    assert.deepEqual(b.zones.getRRset('u.example.', 'A'), { ttl: 30, rdata: ['192.0.2.30'] });
    assert.equal(b.zones.getRRset('ok.example.', 'A'), undefined);
    // The journal survived too: IXFR from 10 is answered incrementally.
    const x = await dnsTransfer({ server: at(b), zone: 'example.', serial: 10 });
    assert.equal(x.records.filter((rr) => rr.type === RRType.SOA).length, 2 + 2 * 3);
    // A change after the restart goes up from the stored serial.
    assert.equal(b.zones.replaceRRset('www.example.', 'A', 60, ['192.0.2.9']).serial, serial + 1);
    await b.stop();
    // A zone file with a greater serial than the stored copy replaces it.
    const c = await server({ db }, zoneText().replace(' 10 3600', ' 100 3600'));
    assert.equal(c.zones.serial('example.'), 100);
    assert.equal(c.zones.getRRset('u.example.', 'A'), undefined);
    await c.stop();
  });

  it('restarts from the zone image, and from the rows when a change came after the image (a crash)', async () => {
    const db = join(dir, 'p3.db');
    const hosts = Array.from({ length: 50 }, (_, i) => `h${i} A 192.0.2.${i}\n`).join('');
    const a = await server({ db }, zoneText(hosts));
    a.zones.replaceRRset('h1.example.', 'A', 60, ['198.51.100.1']);
    // No stop: the process died after the change. A new server on the file sees the change.
    const b = new DnsServer({ address: ADDR, port: 0, db });
    assert.deepEqual(b.zones.getRRset('h1.example.', 'A'), { ttl: 60, rdata: ['198.51.100.1'] });
    assert.deepEqual(b.zones.getRRset('h2.example.', 'A'), { ttl: 300, rdata: ['192.0.2.2'] });
    b.zones.replaceRRset('h3.example.', 'A', 60, []);
    await b.stop(); // writes the image again
    await a.stop(); // its copy is older than the stored zone: it writes no image
    const c = new DnsServer({ address: ADDR, port: 0, db });
    assert.equal(c.zones.serial('example.'), 12);
    assert.equal(c.zones.getRRset('h3.example.', 'A'), undefined);
    assert.deepEqual(c.zones.getRRset('h1.example.', 'A'), { ttl: 60, rdata: ['198.51.100.1'] });
    assert.equal(c.zones.findZone('example.')!.size, 52); // apex, ns1, www, h0-h49 but h3
    await c.stop();
  });

  it('keeps the journal bounded and falls back to AXFR when it does not reach back', async () => {
    const s = await server({ db: join(dir, 'p2.db'), journalLimit: 3, zonePolicies: open });
    for (let i = 1; i <= 5; i++) s.zones.replaceRRset('www.example.', 'A', 300, [`192.0.2.${i + 10}`]);
    assert.equal(s.primary.db!.journalLength('example.'), 3);
    const full = await dnsTransfer({ server: at(s), zone: 'example.', serial: 10 });
    assert.equal(full.records.filter((rr) => rr.type === RRType.SOA).length, 2, 'AXFR form');
    assert.equal(full.records.length, 5);
    const inc = await dnsTransfer({ server: at(s), zone: 'example.', serial: 13 });
    assert.equal(inc.records.filter((rr) => rr.type === RRType.SOA).length, 2 + 2 * 2, 'IXFR form');
    const upToDate = await dnsTransfer({ server: at(s), zone: 'example.', serial: 15 });
    assert.equal(upToDate.records.length, 1);
    await s.stop();
  });
});

describe('transfers', () => {
  it('refuses by default, allows by address or by key as configured', async () => {
    const s = await server();
    assert.equal((await dnsTransfer({ server: at(s), zone: 'example.' })).rcode, Rcode.REFUSED);
    assert.equal((await dnsTransfer({ server: at(s), zone: 'example.', key })).rcode, Rcode.REFUSED);
    s.primary.setPolicy('example.', { allowTransfer: [{ key: 'xfr.example.' }] });
    assert.equal((await dnsTransfer({ server: at(s), zone: 'example.' })).rcode, Rcode.REFUSED);
    assert.equal((await dnsTransfer({ server: at(s), zone: 'example.', key })).records.length, 5);
    s.primary.setPolicy('example.', { allowTransfer: [{ address: '10.0.0.0/8' }] });
    assert.equal((await dnsTransfer({ server: at(s), zone: 'example.' })).rcode, Rcode.REFUSED);
    s.primary.setPolicy('example.', { allowTransfer: [{ address: '127.0.0.1' }] }); // the client's source on loopback
    assert.equal((await dnsTransfer({ server: at(s), zone: 'example.' })).records.length, 5);
    await s.stop();
  });

  it('signs every message of a long transfer (RFC 8945 §5.3.1) and sends every record once', async () => {
    const many = Array.from({ length: 3000 }, (_, i) => `h${i} A 198.51.100.${i % 250}`).join('\n') + '\n';
    const s = await server(
      { zonePolicies: { 'example.': { allowTransfer: [{ key: 'xfr.example.' }] } } },
      zoneText(many),
    );
    const x = await dnsTransfer({ server: at(s), zone: 'example.', key });
    assert.ok(x.messages > 1, `${x.messages} messages`);
    assert.equal(x.records.length, 3000 + 3 + 2);
    const wrong = new TsigKey({ ...KEY, secret: Buffer.alloc(32, 4).toString('base64') });
    await assert.rejects(dnsTransfer({ server: at(s), zone: 'example.', key: wrong }), /TSIG/);
    await s.stop();
  });
});

describe('dynamic update', () => {
  it('checks every prerequisite form, applies adds and deletes atomically and bumps the serial once', async () => {
    const s = await server(
      { zonePolicies: open },
      zoneText('mx MX 10 mail\nold A 192.0.2.99\nold TXT "x"\n'),
    );
    const send = (
      updates: Parameters<typeof upd.add>[] | never[],
      prerequisites = [] as ReturnType<typeof upd.exists>[],
      u = [] as ReturnType<typeof upd.exists>[],
    ) =>
      sendUpdate({
        server: at(s),
        zone: 'example.',
        prerequisites,
        updates: [...(updates as never[]), ...u],
        key,
      });
    const serial0 = s.zones.serial('example.');
    const cases: Array<[ReturnType<typeof upd.exists>, number]> = [
      [upd.exists('www.example.', 'A'), Rcode.NOERROR],
      [upd.exists('www.example.', 'MX'), Rcode.NXRRSET],
      [upd.existsValue('www.example.', 'A', '192.0.2.1'), Rcode.NOERROR],
      [upd.existsValue('www.example.', 'A', '192.0.2.2'), Rcode.NXRRSET],
      [upd.notExists('www.example.', 'MX'), Rcode.NOERROR],
      [upd.notExists('www.example.', 'A'), Rcode.YXRRSET],
      [upd.nameInUse('www.example.'), Rcode.NOERROR],
      [upd.nameInUse('nope.example.'), Rcode.NXDOMAIN],
      [upd.nameNotInUse('nope.example.'), Rcode.NOERROR],
      [upd.nameNotInUse('www.example.'), Rcode.YXDOMAIN],
      [upd.exists('www.other.', 'A'), Rcode.NOTZONE],
    ];
    for (const [p, want] of cases) assert.equal((await send([], [p])).rcode, want, JSON.stringify(p));
    assert.equal(s.zones.serial('example.'), serial0, 'prerequisite-only updates change nothing');
    // A failed prerequisite stops the whole update.
    assert.equal(
      (await send([], [upd.exists('www.example.', 'MX')], [upd.add('new.example.', 'A', 60, '192.0.2.5')]))
        .rcode,
      Rcode.NXRRSET,
    );
    assert.equal(s.zones.getRRset('new.example.', 'A'), undefined);
    const r = await send(
      [],
      [upd.existsValue('www.example.', 'A', '192.0.2.1')],
      [
        upd.deleteRRset('www.example.', 'A'),
        upd.add('www.example.', 'A', 120, '192.0.2.10'),
        upd.add('www.example.', 'A', 120, '192.0.2.11'),
        upd.deleteRR('mx.example.', 'MX', '10 mail.example.'),
        upd.deleteName('old.example.'),
        upd.add('new.example.', 'AAAA', 60, '2001:db8::1'),
      ],
    );
    assert.equal(r.rcode, Rcode.NOERROR);
    assert.equal(s.zones.serial('example.'), serial0 + 1);
    assert.deepEqual(s.zones.getRRset('www.example.', 'A'), {
      ttl: 120,
      rdata: ['192.0.2.10', '192.0.2.11'],
    });
    assert.equal(s.zones.getRRset('mx.example.', 'MX'), undefined);
    assert.equal(s.zones.getRRset('old.example.', 'TXT'), undefined);
    assert.equal(s.zones.getRRset('old.example.', 'A'), undefined);
    // The apex SOA and NS survive a delete of everything at the apex (RFC 2136 §3.4.2.3).
    assert.equal((await send([], [], [upd.deleteName('example.')])).rcode, Rcode.NOERROR);
    assert.ok(s.zones.getRRset('example.', 'NS'));
    // Outside the zone: NOTZONE; a zone we do not serve: NOTAUTH.
    assert.equal((await send([], [], [upd.add('x.other.', 'A', 60, '192.0.2.1')])).rcode, Rcode.NOTZONE);
    assert.equal(
      (await sendUpdate({ server: at(s), zone: 'other.', updates: [], key })).rcode,
      Rcode.NOTAUTH,
    );
    await s.stop();
  });

  it('refuses updates by default and answers TSIG errors with NOTAUTH, leaving the zone unchanged', async () => {
    const s = await server();
    const add = [upd.add('x.example.', 'A', 60, '192.0.2.1')];
    assert.equal(
      (await sendUpdate({ server: at(s), zone: 'example.', updates: add, key })).rcode,
      Rcode.REFUSED,
    );
    s.primary.setPolicy('example.', open['example.']);
    assert.equal(
      (await sendUpdate({ server: at(s), zone: 'example.', updates: add })).rcode,
      Rcode.REFUSED,
      'unsigned',
    );
    const other = new TsigKey({ ...KEY, name: 'other.' });
    const badKey = await sendUpdate({ server: at(s), zone: 'example.', updates: add, key: other });
    assert.deepEqual([badKey.rcode, badKey.tsigError], [Rcode.NOTAUTH, 17]);
    const wrong = new TsigKey({ ...KEY, secret: Buffer.alloc(32, 5).toString('base64') });
    const badSig = await sendUpdate({ server: at(s), zone: 'example.', updates: add, key: wrong });
    assert.deepEqual([badSig.rcode, badSig.tsigError], [Rcode.NOTAUTH, 16]);
    const stale = await sendUpdate({
      server: at(s),
      zone: 'example.',
      updates: add,
      key,
      now: Math.floor(Date.now() / 1000) - 3600,
    });
    assert.deepEqual([stale.rcode, stale.tsigError, stale.verified], [Rcode.NOTAUTH, 18, true]);
    assert.equal(s.zones.getRRset('x.example.', 'A'), undefined);
    assert.equal(s.zones.serial('example.'), 10);
    await s.stop();
  });
});

describe('notify', () => {
  it('coalesces a burst into one NOTIFY per secondary and retries one that gets no answer', async () => {
    const sec = dgram.createSocket('udp4');
    await new Promise<void>((r) => sec.bind(0, '127.0.101.2', () => r()));
    const got: Array<{ serial: number; signed: boolean }> = [];
    sec.on('message', (buf, rinfo) => {
      const m = decodeMessage(buf);
      assert.equal(m.opcode, Opcode.NOTIFY);
      got.push({
        serial: m.answers[0]?.data[2] as number,
        signed: m.additional.some((a) => a.type === RRType.TSIG),
      });
      if (got.length === 1) return; // the first one is "lost"
      const res = encodeMessage({ ...m, flags: { ...m.flags, qr: true }, answers: [], additional: [] });
      sec.send(res, rinfo.port, rinfo.address);
    });
    const s = await server({
      zonePolicies: { 'example.': { notify: [{ address: '127.0.101.2', port: sec.address().port }] } },
      notify: { coalesceMs: 100, retryMs: 200, retries: 3 },
    });
    try {
      for (let i = 0; i < 5; i++) s.zones.replaceRRset('www.example.', 'A', 300, [`192.0.2.${i + 11}`]);
      await new Promise((r) => setTimeout(r, 1200));
      assert.equal(got.length, 2, JSON.stringify(got));
      assert.deepEqual(
        got.map((g) => g.serial),
        [15, 15],
      );
      assert.equal(s.primary.notifiesSent, 2);
    } finally {
      await s.stop();
      sec.close();
    }
  });
});

describe('signed queries', () => {
  it('answers a signed SOA query with a signed answer', async () => {
    const s = await server();
    const { packet, mac } = signMessage(encodeMessage(makeQuery(7, 'www.example.', RRType.A)), key);
    const raw = await dnsExchangeUdp(at(s), packet);
    const v = verifyMessage(raw, new TsigKeyring([key]), { requestMac: mac });
    assert.equal(v.status, 'ok');
    assert.equal(decodeMessage(v.message).answers[0]?.data[0], '192.0.2.1');
    await s.stop();
  });
});
