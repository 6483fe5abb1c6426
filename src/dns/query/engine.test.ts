import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeMessage,
  encodeMessage,
  makeQuery,
  type DnsMessage,
  type ResourceRecord,
} from '../wire/message.js';
import { formatRdata } from '../wire/rdata.js';
import { Opcode, RRClass, RRType, Rcode, typeCode, typeName } from '../wire/types.js';
import { parseZone } from '../zone/parser.js';
import { ZoneStore } from '../zone/store.js';
import { QueryEngine } from './engine.js';
import { TEST_ZONE } from '../test-fixtures.js';

export function testEngine(): QueryEngine {
  return new QueryEngine(
    new ZoneStore([
      parseZone(TEST_ZONE),
      parseZone('$ORIGIN other.test.\n@ SOA ns hm 1 2 3 4 5\nx A 198.51.100.1\n'),
    ]),
  );
}

function ask(
  engine: QueryEngine,
  name: string,
  type: string,
  opts: {
    transport?: 'udp' | 'tcp';
    edns?: { udpSize: number } | false;
    mutate?: (m: DnsMessage) => void;
  } = {},
): DnsMessage {
  const q = makeQuery(4242, name, typeCode(type)!, { edns: opts.edns ?? { udpSize: 1232 }, rd: true });
  opts.mutate?.(q);
  const res = engine.answer(encodeMessage(q), opts.transport ?? 'udp');
  assert.ok(res, 'answered');
  return decodeMessage(res);
}

const show = (rrs: ResourceRecord[]) =>
  rrs.map((r) => `${r.name} ${typeName(r.type)} ${formatRdata(r.type, r.data)}`);

test('exact match: AA set, RA never, RD copied, question echoed, nothing extra', () => {
  const r = ask(testEngine(), 'www.example.', 'A');
  assert.equal(r.id, 4242);
  assert.equal(r.rcode, Rcode.NOERROR);
  assert.deepEqual(
    { ...r.flags },
    { qr: true, aa: true, tc: false, rd: true, ra: false, ad: false, cd: false },
  );
  assert.deepEqual(r.questions, [{ name: 'www.example.', type: RRType.A, class: RRClass.IN }]);
  assert.deepEqual(show(r.answers), ['www.example. A 192.0.2.1']);
  assert.deepEqual(r.authority, []);
  assert.deepEqual(r.additional, []);
  assert.equal(r.answers[0]!.ttl, 3600);
});

test('case-insensitive match echoes the question case', () => {
  const r = ask(testEngine(), 'WwW.ExAmPlE.', 'A');
  assert.deepEqual(r.questions[0]!.name, 'WwW.ExAmPlE.');
  assert.deepEqual(show(r.answers), ['WwW.ExAmPlE. A 192.0.2.1']);
});

test('NXDOMAIN and NODATA carry the SOA with the negative TTL', () => {
  const e = testEngine();
  const nx = ask(e, 'nope.example.', 'A');
  assert.equal(nx.rcode, Rcode.NXDOMAIN);
  assert.equal(nx.flags.aa, true);
  assert.deepEqual(show(nx.authority), [
    'example. SOA ns1.example. hostmaster.example. 100 3600 600 1209600 300',
  ]);
  assert.equal(nx.authority[0]!.ttl, 300, 'min(SOA TTL, MINIMUM)');
  const nodata = ask(e, 'www.example.', 'AAAA');
  assert.equal(nodata.rcode, Rcode.NOERROR);
  assert.deepEqual(nodata.answers, []);
  assert.equal(nodata.authority[0]!.type, RRType.SOA);
});

test('empty non-terminals are NODATA, not NXDOMAIN, and block wildcards', () => {
  const e = testEngine();
  for (const n of ['b.ent.example.', 'ent.example.']) {
    const r = ask(e, n, 'A');
    assert.equal(r.rcode, Rcode.NOERROR, n);
    assert.equal(r.authority[0]!.type, RRType.SOA);
  }
  assert.equal(ask(e, 'c.b.ent.example.', 'A').rcode, Rcode.NXDOMAIN);
  // RFC 4592 §2.2.2: "*.ent2" has a child "x.*.ent2"; the wildcard still matches other names.
  assert.deepEqual(show(ask(e, 'q.ent2.example.', 'A').answers), ['q.ent2.example. A 192.0.2.89']);
  assert.deepEqual(show(ask(e, 'x.*.ent2.example.', 'A').answers), ['x.*.ent2.example. A 192.0.2.90']);
});

test('CNAME is followed inside the zone; RFC 6604 rcode of the last name', () => {
  const e = testEngine();
  assert.deepEqual(show(ask(e, 'alias.example.', 'A').answers), [
    'alias.example. CNAME www.example.',
    'www.example. A 192.0.2.1',
  ]);
  assert.deepEqual(show(ask(e, 'chain1.example.', 'A').answers), [
    'chain1.example. CNAME chain2.example.',
    'chain2.example. CNAME www.example.',
    'www.example. A 192.0.2.1',
  ]);
  assert.deepEqual(
    show(ask(e, 'alias.example.', 'CNAME').answers),
    ['alias.example. CNAME www.example.'],
    'QTYPE CNAME is not followed',
  );
  const dangling = ask(e, 'dangling.example.', 'A');
  assert.equal(dangling.rcode, Rcode.NXDOMAIN);
  assert.equal(dangling.answers.length, 1);
  assert.equal(dangling.authority[0]!.type, RRType.SOA);
  const out = ask(e, 'outside.example.', 'A');
  assert.equal(out.rcode, Rcode.NOERROR);
  assert.deepEqual(show(out.answers), ['outside.example. CNAME www.example.net.']);
  const loop = ask(e, 'loop1.example.', 'A');
  assert.deepEqual(show(loop.answers), [
    'loop1.example. CNAME loop2.example.',
    'loop2.example. CNAME loop1.example.',
  ]);
});

test('wildcards synthesize the query name; existing names are never covered', () => {
  const e = testEngine();
  const r = ask(e, 'Any.Thing.wild.example.', 'TXT');
  assert.deepEqual(show(r.answers), ['Any.Thing.wild.example. TXT "wildcard"']);
  assert.equal(r.flags.aa, true);
  const mx = ask(e, 'host.wild.example.', 'MX');
  assert.deepEqual(show(mx.additional), ['mail.example. A 192.0.2.25'], 'additional for a synthesized MX');
  const nodata = ask(e, 'host.wild.example.', 'A');
  assert.equal(nodata.rcode, Rcode.NOERROR);
  assert.equal(nodata.answers.length, 0);
  assert.equal(nodata.authority[0]!.type, RRType.SOA);
  const exists = ask(e, 'exists.wild.example.', 'TXT');
  assert.equal(exists.rcode, Rcode.NOERROR);
  assert.equal(exists.answers.length, 0, 'an existing name is not a wildcard match');
  assert.equal(
    ask(e, 'below.exists.wild.example.', 'TXT').rcode,
    Rcode.NXDOMAIN,
    'closest encloser is exists.wild',
  );
  assert.deepEqual(show(ask(e, 'x.cwild.example.', 'A').answers), [
    'x.cwild.example. CNAME www.example.',
    'www.example. A 192.0.2.1',
  ]);
});

test('delegations: referral with glue and AA clear; DS answered by the parent', () => {
  const e = testEngine();
  for (const n of ['sub.example.', 'deep.host.sub.example.']) {
    const r = ask(e, n, 'A');
    assert.equal(r.rcode, Rcode.NOERROR);
    assert.equal(r.flags.aa, false, n);
    assert.deepEqual(r.answers, []);
    assert.deepEqual(show(r.authority).sort(), [
      'sub.example. NS ns.elsewhere.example.net.',
      'sub.example. NS ns.sub.example.',
    ]);
    assert.deepEqual(show(r.additional), ['ns.sub.example. A 192.0.2.99']);
  }
  const sibling = ask(e, 'x.sub2.example.', 'A');
  assert.deepEqual(show(sibling.additional), ['ns1.example. A 192.0.2.53', 'ns1.example. AAAA 2001:db8::53']);
  const ds = ask(e, 'sub.example.', 'DS');
  assert.equal(ds.flags.aa, true);
  assert.equal(ds.authority[0]!.type, RRType.SOA, 'NODATA from the parent side');
  assert.equal(ask(e, 'ns.sub.example.', 'A').flags.aa, false, 'glue is not authoritative data');
});

test('DNAME substitution synthesizes a CNAME', () => {
  const r = ask(testEngine(), 'a.b.dn.example.', 'A');
  assert.deepEqual(show(r.answers), [
    'dn.example. DNAME target.example.net.',
    'a.b.dn.example. CNAME a.b.target.example.net.',
  ]);
});

test('additional section for NS, MX and SRV targets', () => {
  const e = testEngine();
  const ns = ask(e, 'example.', 'NS');
  assert.deepEqual(show(ns.additional), ['ns1.example. A 192.0.2.53', 'ns1.example. AAAA 2001:db8::53']);
  assert.deepEqual(show(ask(e, 'example.', 'MX').additional), ['mail.example. A 192.0.2.25']);
  assert.deepEqual(show(ask(e, 'sip.example.', 'SRV').additional), ['mail.example. A 192.0.2.25']);
});

test('ANY gets one RRset (RFC 8482)', () => {
  const r = ask(testEngine(), 'example.', 'ANY');
  assert.equal(r.answers.length, 1);
  assert.equal(r.answers[0]!.type, RRType.A);
  assert.deepEqual(show(ask(testEngine(), 'alias.example.', 'ANY').answers), [
    'alias.example. CNAME www.example.',
  ]);
});

test('names outside every zone are REFUSED without AA; the other zone is served', () => {
  const e = testEngine();
  const r = ask(e, 'www.example.net.', 'A');
  assert.equal(r.rcode, Rcode.REFUSED);
  assert.equal(r.flags.aa, false);
  assert.deepEqual(show(ask(e, 'X.other.test.', 'A').answers), ['X.other.test. A 198.51.100.1']);
});

test('EDNS: OPT answered, DO copied, BADVERS for version 1, no OPT without one', () => {
  const e = testEngine();
  const r = ask(e, 'www.example.', 'A');
  assert.deepEqual(r.edns, { udpSize: 1232, version: 0, dnssecOk: false, options: [] });
  const d = ask(e, 'www.example.', 'A', { mutate: (m) => (m.edns!.dnssecOk = true) });
  assert.equal(d.edns!.dnssecOk, true);
  const bad = ask(e, 'www.example.', 'A', { mutate: (m) => (m.edns!.version = 1) });
  assert.equal(bad.rcode, Rcode.BADVERS);
  assert.equal(bad.answers.length, 0);
  assert.equal(bad.edns!.version, 0);
  assert.equal(ask(e, 'www.example.', 'A', { edns: false }).edns, undefined);
});

test('truncation: TC over UDP within the advertised size, full answer over TCP', () => {
  const e = testEngine();
  const small = ask(e, 'big.example.', 'TXT', { edns: false });
  assert.equal(small.flags.tc, true);
  assert.equal(small.answers.length, 0);
  const larger = ask(e, 'big.example.', 'TXT', { edns: { udpSize: 1232 } });
  assert.equal(larger.flags.tc, false);
  assert.equal(larger.answers.length, 3);
  const tiny = ask(e, 'big.example.', 'TXT', { edns: { udpSize: 100 } });
  assert.equal(tiny.flags.tc, true, 'sizes below 512 are treated as 512');
  const tcp = ask(e, 'big.example.', 'TXT', { edns: false, transport: 'tcp' });
  assert.equal(tcp.flags.tc, false);
  assert.equal(tcp.answers.length, 3);
});

test('NOTIMP for other opcodes, FORMERR for QDCOUNT ≠ 1 and garbage, drop for responses', () => {
  const e = testEngine();
  const notify = ask(e, 'example.', 'SOA', { mutate: (m) => (m.opcode = Opcode.NOTIFY) });
  assert.equal(notify.rcode, Rcode.NOTIMP);
  assert.equal(notify.opcode, Opcode.NOTIFY);
  const none = ask(e, 'example.', 'SOA', { mutate: (m) => (m.questions = []) });
  assert.equal(none.rcode, Rcode.FORMERR);
  const two = ask(e, 'example.', 'SOA', { mutate: (m) => m.questions.push({ ...m.questions[0]! }) });
  assert.equal(two.rcode, Rcode.FORMERR);
  const q = encodeMessage(makeQuery(77, 'www.example.', RRType.A));
  const garbage = decodeMessage(
    e.answer(Buffer.concat([q.subarray(0, 20), Buffer.from([0xff, 0xff])]), 'udp')!,
  );
  assert.equal(garbage.rcode, Rcode.FORMERR);
  assert.equal(garbage.id, 77);
  assert.equal(e.answer(q.subarray(0, 11), 'udp'), undefined, 'shorter than a header: dropped');
  const resp = Buffer.from(q);
  resp[2]! |= 0x80;
  assert.equal(e.answer(resp, 'udp'), undefined, 'QR set: dropped');
  assert.equal(
    ask(e, 'example.', 'SOA', { mutate: (m) => (m.questions[0]!.class = RRClass.CH) }).rcode,
    Rcode.REFUSED,
  );
  assert.equal(ask(e, 'example.', 'AXFR').rcode, Rcode.REFUSED);
  assert.equal(ask(e, 'example.', 'OPT').rcode, Rcode.FORMERR);
});

test('a change through the store is visible to the next query, with the serial bumped', () => {
  const e = testEngine();
  assert.deepEqual(show(ask(e, 'www.example.', 'A').answers), ['www.example. A 192.0.2.1']);
  const { serial } = e.store.replaceRRset('www.example.', 'A', 30, ['192.0.2.200']);
  assert.equal(serial, 101);
  const r = ask(e, 'www.example.', 'A');
  assert.deepEqual(show(r.answers), ['www.example. A 192.0.2.200']);
  assert.equal(r.answers[0]!.ttl, 30);
  assert.match(show(ask(e, 'example.', 'SOA').answers)[0]!, / 101 3600 /);
  e.store.replaceRRset('www.example.', 'A', 30, []);
  assert.equal(ask(e, 'www.example.', 'A').rcode, Rcode.NXDOMAIN);
});

test('answer cache: a hit echoes id, RD, CD and the question case; changes invalidate it', () => {
  const e = testEngine();
  ask(e, 'www.example.', 'A');
  assert.equal(e.cache!.size, 1);
  const hit = ask(e, 'WWW.EXAMPLE.', 'A', {
    mutate: (m) => {
      m.id = 9;
      m.flags.rd = false;
      m.flags.cd = true;
    },
  });
  assert.equal(e.cache!.size, 1, 'served from the cache');
  assert.equal(hit.id, 9);
  assert.equal(hit.flags.rd, false);
  assert.equal(hit.flags.cd, true);
  assert.deepEqual(show(hit.answers), ['WWW.EXAMPLE. A 192.0.2.1']);
  assert.equal(hit.questions[0]!.name, 'WWW.EXAMPLE.');
  e.store.replaceRRset('www.example.', 'A', 30, ['192.0.2.5']);
  assert.deepEqual(show(ask(e, 'www.example.', 'A').answers), ['www.example. A 192.0.2.5']);
  // Zones changed directly (not through the store) invalidate too.
  e.store.findZone('example.')!.replaceRRset('www.example.', RRType.A, 30, [['192.0.2.6']]);
  assert.deepEqual(show(ask(e, 'www.example.', 'A').answers), ['www.example. A 192.0.2.6']);
  // DNAME answers spell the question out, so they are not cached.
  ask(e, 'a.dn.example.', 'A');
  assert.deepEqual(
    show(ask(e, 'A.dn.example.', 'A').answers)[1],
    'A.dn.example. CNAME A.target.example.net.',
  );
});
