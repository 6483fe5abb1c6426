import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeMessage, makeQuery, type DnsMessage } from '../wire/message.js';
import { RRType, typeCode } from '../wire/types.js';
import { parseZone } from '../zone/parser.js';
import { ZoneStore } from '../zone/store.js';
import { TEST_ZONE } from '../test-fixtures.js';
import { probe } from './cache.js';
import { QueryEngine } from './engine.js';
import { fastAnswer } from './fast.js';

function testStore(): ZoneStore {
  const example = parseZone(TEST_ZONE);
  // Names changed after the load live outside the compact base: both kinds are read.
  example.replaceRRset('changed.example.', RRType.A, 60, [['192.0.2.200'], ['192.0.2.201']]);
  example.replaceRRset('deep.ent3.example.', RRType.AAAA, 60, [['2001:db8::7']]);
  return new ZoneStore([
    example,
    parseZone('$ORIGIN other.test.\n@ SOA ns hm 1 2 3 4 5\nx A 198.51.100.1\nx TXT "t"\n'),
    parseZone('$ORIGIN child.other.test.\n@ SOA ns.child hm 1 2 3 4 5\n@ A 198.51.100.2\n'),
  ]);
}

type Edns = { udpSize: number; dnssecOk?: boolean } | false;

function packet(name: string, type: string, edns: Edns, mutate?: (m: DnsMessage) => void): Buffer {
  const q = makeQuery(0x1234, name, typeCode(type)!, { edns, rd: true });
  mutate?.(q);
  return encodeMessage(q);
}

const EDNS: Edns[] = [false, { udpSize: 1232 }, { udpSize: 4096, dnssecOk: true }, { udpSize: 512 }];

/** Shapes the fast path answers itself, each with the rcode and counts it gives. */
const FAST: Array<[string, string]> = [
  ['www.example.', 'A'], // one record from the base
  ['ns1.example.', 'AAAA'],
  ['WwW.ExAmPlE.', 'A'], // the question's case echoed
  ['www.example.', 'AAAA'], // NODATA
  ['www.example.', 'TXT'],
  ['nope.example.', 'A'], // NXDOMAIN
  ['a.b.nope.example.', 'AAAA'],
  ['b.ent.example.', 'A'], // empty non-terminal: NODATA
  ['ent.example.', 'A'],
  ['a.b.ent.example.', 'A'], // below empty non-terminals
  ['example.', 'A'], // the apex (kept outside the base)
  ['EXAMPLE.', 'TXT'],
  ['exists.wild.example.', 'A'], // a name that exists beside a wildcard
  ['*.wild.example.', 'TXT'], // the wildcard's own name, asked literally
  ['changed.example.', 'A'], // changed after the load
  ['ent3.example.', 'A'],
  ['deep.ent3.example.', 'AAAA'],
  ['big.example.', 'TXT'], // 600 bytes: fits with EDNS only
  ['x.other.test.', 'TXT'],
  ['child.other.test.', 'A'], // the longest-match zone
  ['y.other.test.', 'A'],
];

/** Shapes left to the query chain. */
const GENERAL: Array<[string, string, Edns?]> = [
  ['alias.example.', 'A'], // CNAME
  ['chain1.example.', 'AAAA'],
  ['anything.wild.example.', 'TXT'], // wildcard synthesis
  ['x.cwild.example.', 'A'],
  ['q.ent2.example.', 'A'],
  ['sub.example.', 'A'], // delegation
  ['deep.sub.example.', 'A'],
  ['ns.sub.example.', 'A'],
  ['x.dn.example.', 'A'], // DNAME
  ['www.example.', 'ANY'],
  ['www.example.', 'CNAME'],
  ['example.', 'DS'],
  ['example.', 'MX'], // additional-section processing
  ['example.', 'NS'],
  ['sip.example.', 'SRV'],
  ['example.', 'SOA'], // compressed names in rdata
  ['www.example.net.', 'A'], // no zone: REFUSED
  ['.', 'A'],
  ['big.example.', 'TXT', false], // truncated without EDNS
];

test('the fast path answers plain shapes with the bytes the query chain gives', () => {
  const store = testStore();
  const fast = new QueryEngine(store, { answerCacheSize: 0 });
  const general = new QueryEngine(store, { answerCacheSize: 0, fastPath: false });
  let answered = 0;
  for (const [name, type] of FAST)
    for (const edns of EDNS)
      for (const transport of ['udp', 'tcp'] as const) {
        const p = packet(name, type, edns);
        const what = `${name} ${type} ${JSON.stringify(edns)} ${transport}`;
        const want = general.answer(p, transport);
        assert.ok(want, what);
        const hot = probe(p, transport, general.maxUdpPayload);
        assert.ok(hot, what);
        const got = fastAnswer(store, p, hot, general.maxUdpPayload);
        if (name === 'big.example.' && transport === 'udp' && (!edns || edns.udpSize === 512)) {
          assert.equal(got, undefined, `${what}: truncation is the chain's`);
          continue;
        }
        assert.ok(got, `${what}: answered by the fast path`);
        assert.equal(got.toString('hex'), want.toString('hex'), what);
        assert.equal(fast.answer(p, transport)!.toString('hex'), want.toString('hex'), what);
        answered++;
      }
  assert.ok(answered > 150);
});

test('the fast path leaves other shapes to the chain, whose answers stay as they were', () => {
  const store = testStore();
  const fast = new QueryEngine(store, { answerCacheSize: 0 });
  const general = new QueryEngine(store, { answerCacheSize: 0, fastPath: false });
  const cases: Array<[string, Buffer]> = [];
  for (const [name, type, only] of GENERAL)
    for (const edns of only === undefined ? EDNS : [only])
      cases.push([`${name} ${type}`, packet(name, type, edns)]);
  // EDNS options, another EDNS version, class ANY, a name that needs escaping
  const opt = (m: DnsMessage) => m.edns!.options.push({ code: 10, data: Buffer.alloc(8, 1) });
  cases.push(['options', packet('www.example.', 'A', { udpSize: 1232 }, opt)]);
  cases.push(['version 1', packet('www.example.', 'A', { udpSize: 1232 }, (m) => (m.edns!.version = 1))]);
  cases.push(['class ANY', packet('www.example.', 'A', false, (m) => (m.questions[0]!.class = 255))]);
  cases.push(['escaped', packet('a\\.b.example.', 'A', false)]);
  cases.push(['space', packet('a\\032b.example.', 'A', false)]);
  for (const [what, p] of cases)
    for (const transport of what.startsWith('big.') ? (['udp'] as const) : (['udp', 'tcp'] as const)) {
      const hot = probe(p, transport, general.maxUdpPayload);
      assert.ok(hot, what);
      assert.equal(fastAnswer(store, p, hot, general.maxUdpPayload), undefined, `${what} ${transport}`);
      const want = general.answer(p, transport)!;
      assert.equal(fast.answer(p, transport)!.toString('hex'), want.toString('hex'), `${what} ${transport}`);
    }
});

test('answers from the fast path are cached and follow changes to the zone', () => {
  const store = testStore();
  const engine = new QueryEngine(store);
  const p = packet('www.example.', 'A', { udpSize: 1232 });
  const first = engine.answer(p, 'udp')!;
  assert.equal(engine.cache!.size, 1);
  assert.deepEqual(engine.answer(p, 'udp'), first);
  store.findZone('example.')!.replaceRRset('www.example.', RRType.A, 3600, [['192.0.2.99']]);
  const after = engine.answer(p, 'udp')!;
  assert.notDeepEqual(after, first);
  assert.ok(after.includes(Buffer.from([192, 0, 2, 99])));
  store.findZone('example.')!.replaceRRset('www.example.', RRType.A, 3600, []);
  const gone = engine.answer(p, 'udp')!;
  assert.equal(gone[3]! & 0x0f, 3, 'NXDOMAIN once the name owns nothing');
});

test('seeded random questions: the engine with the fast path answers as the chain alone does', () => {
  const store = testStore();
  const fast = new QueryEngine(store, { answerCacheSize: 0 });
  const cached = new QueryEngine(store);
  const general = new QueryEngine(store, { answerCacheSize: 0, fastPath: false });
  const owners = [
    'example.',
    'www.example.',
    'ns1.example.',
    'mail.example.',
    'alias.example.',
    'chain1.example.',
    'dangling.example.',
    'x.wild.example.',
    'exists.wild.example.',
    'a.b.ent.example.',
    'b.ent.example.',
    'q.ent2.example.',
    'x.q.ent2.example.',
    'sub.example.',
    'ns.sub.example.',
    'sub2.example.',
    'x.dn.example.',
    'big.example.',
    'changed.example.',
    'deep.ent3.example.',
    'ent3.example.',
    'x.other.test.',
    'child.other.test.',
    'z.child.other.test.',
    'nope.example.',
    'other.test.',
  ];
  const types = ['A', 'AAAA', 'TXT', 'MX', 'NS', 'SOA', 'CNAME', 'SRV', 'DS', 'ANY', 'PTR', 'CAA', 'HTTPS'];
  let s = 17;
  const rnd = (n: number) => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8) % n;
  let fastAnswers = 0;
  for (let i = 0; i < 3000; i++) {
    let name = owners[rnd(owners.length)]!;
    if (rnd(4) === 0) name = `r${rnd(50)}.${name}`;
    name = [...name].map((c) => (rnd(3) === 0 ? c.toUpperCase() : c)).join('');
    const choices: Edns[] = [false, { udpSize: 512 + rnd(4000) }, { udpSize: 1232, dnssecOk: true }];
    const edns = choices[rnd(3)]!;
    const p = packet(name, types[rnd(types.length)]!, edns, (m) => (m.flags.cd = rnd(2) === 1));
    const transport = rnd(3) === 0 ? 'tcp' : 'udp';
    const want = general.answer(p, transport)!.toString('hex');
    const what = `${name} ${JSON.stringify(edns)} ${transport}`;
    assert.equal(fast.answer(p, transport)!.toString('hex'), want, what);
    assert.equal(cached.answer(p, transport)!.toString('hex'), want, what);
    const hot = probe(p, transport, general.maxUdpPayload);
    if (hot && fastAnswer(store, p, hot, general.maxUdpPayload)) fastAnswers++;
  }
  assert.ok(fastAnswers > 500, `the fast path answered ${fastAnswers} of them`);
});
