import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isFerryError } from '../../common/errors.js';
import {
  decodeMessage,
  encodeMessage,
  makeQuery,
  NO_FLAGS,
  type DnsMessage,
  type ResourceRecord,
} from './message.js';
import { nameKey, packName, parseName, unpackName } from './name.js';
import { formatRdata, parseRdata, rdataToWire, unpackRdata } from './rdata.js';
import { tokenize, formatIPv6, parseIPv6 } from './text.js';
import { RDATA_SAMPLES as SAMPLES } from '../test-fixtures.js';
import { RR_TYPE_TABLE, RRClass, RRType, Rcode, typeCode, typeName } from './types.js';

const malformed = (err: unknown) => isFerryError(err, 'DNS_MALFORMED');

test('every data type of the table has a round-trip sample', () => {
  for (const t of RR_TYPE_TABLE) {
    if (!t.fields) continue;
    assert.ok(
      SAMPLES.some(([n]) => n === t.name),
      `no sample for ${t.name}`,
    );
  }
});

test('rdata round trips: text → wire → text, and through a whole message', () => {
  for (const [tn, text] of SAMPLES) {
    const type = typeCode(tn)!;
    const data = parseRdata(type, tokenize(text));
    const shown = formatRdata(type, data);
    assert.deepEqual(parseRdata(type, tokenize(shown)), data, `${tn} re-parse of ${shown}`);
    const wire = rdataToWire(type, data);
    assert.deepEqual(unpackRdata(wire, 0, wire.length, type), data, `${tn} wire`);
    const rr: ResourceRecord = { name: 'x.example.', type, class: RRClass.IN, ttl: 300, data };
    const msg: DnsMessage = { ...makeQuery(7, 'x.example.', type), answers: [rr] };
    const back = decodeMessage(encodeMessage(msg));
    assert.deepEqual(back.answers[0], rr, `${tn} in a message`);
  }
});

test('presentation details: canonical forms', () => {
  const f = (tn: string, text: string) =>
    formatRdata(typeCode(tn)!, parseRdata(typeCode(tn)!, tokenize(text)));
  assert.equal(f('AAAA', '2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
  assert.equal(f('AAAA', '::ffff:192.0.2.1'), '::ffff:c000:201');
  assert.equal(f('AAAA', '2001:db8:0:1:0:0:0:1'), '2001:db8:0:1::1');
  assert.equal(f('TXT', 'unquoted'), '"unquoted"');
  assert.equal(f('SOA', 'ns. host. 1 1h 10m 2w 1d'), 'ns. host. 1 3600 600 1209600 86400');
  assert.equal(f('A', '\\# 4 C0000201'), '192.0.2.1', 'RFC 3597 form accepted for a known type');
  assert.equal(
    f('SVCB', '1 . port=53 alpn=dot mandatory=port'),
    '1 . mandatory=port alpn=dot port=53',
    'params sorted by key',
  );
  assert.equal(f('CAA', '128 iodef "mailto:a@example"'), '128 iodef "mailto:a@example"');
  assert.equal(formatIPv6(parseIPv6('1:0:0:2:0:0:0:3')), '1:0:0:2::3');
});

test('bad rdata text is DNS_BAD_TEXT', () => {
  const bad: Array<[string, string]> = [
    ['A', '192.0.2.256'],
    ['A', '192.0.2'],
    ['AAAA', '2001:db8:::1'],
    ['AAAA', '1:2:3:4:5:6:7:8:9'],
    ['MX', 'mail.example.'],
    ['MX', '70000 mail.example.'],
    ['TXT', `"${'x'.repeat(256)}"`],
    ['A', '192.0.2.1 extra'],
    ['SVCB', '1 . port=1 port=2'],
    ['SVCB', '1 . bogus=1'],
    ['DS', '1 2 3 XYZ'],
    ['A', '\\# 3 C00002'],
    ['TYPE999', '1 2 3'],
    ['CNAME', '"quoted.example."'],
  ];
  for (const [tn, text] of bad) {
    assert.throws(
      () => parseRdata(typeCode(tn)!, tokenize(text)),
      (e: unknown) => isFerryError(e, 'DNS_BAD_TEXT'),
      `${tn} ${text}`,
    );
  }
});

test('type table: names and TYPEnnn forms', () => {
  assert.equal(typeCode('a'), RRType.A);
  assert.equal(typeCode('TYPE1'), 1);
  assert.equal(typeName(1), 'A');
  assert.equal(typeName(65280), 'TYPE65280');
  assert.equal(typeCode('TYPE70000'), undefined);
  assert.equal(typeCode('NOPE'), undefined);
});

test('names: escapes, case folding, limits', () => {
  assert.equal(parseName('www.example'), 'www.example.');
  assert.equal(parseName('www', 'example.'), 'www.example.');
  assert.equal(parseName('a\\.b.example.'), 'a\\.b.example.');
  assert.equal(parseName('\\065.example.'), 'A.example.');
  assert.equal(parseName('sp\\032ace.'), 'sp\\032ace.');
  assert.equal(nameKey('WwW.Example.'), 'www.example.');
  assert.equal(parseName('.'), '.');
  assert.throws(() => parseName('a..b.'), /empty label/);
  assert.throws(() => parseName(`${'a'.repeat(64)}.`), /longer than 63/);
  assert.throws(() => parseName(`${'a'.repeat(60)}.`.repeat(5)), /longer than 255/);
});

test('compression: encode emits pointers, decode follows them', () => {
  const msg: DnsMessage = {
    ...makeQuery(1, 'www.example.', RRType.MX),
    answers: [
      { name: 'www.example.', type: RRType.MX, class: 1, ttl: 60, data: [10, 'mail.example.'] },
      { name: 'WWW.EXAMPLE.', type: RRType.MX, class: 1, ttl: 60, data: [20, 'mx2.www.example.'] },
    ],
  };
  const wire = encodeMessage(msg);
  const plain = encodeMessage(msg, { compress: false });
  assert.ok(wire.length < plain.length, 'compressed is shorter');
  // The answer owner right after the question (offset 12 + 13 + 4 = 29) is a pointer to offset 12.
  assert.equal(wire[29], 0xc0);
  assert.equal(wire[30], 12);
  const back = decodeMessage(wire);
  assert.equal(back.answers[0]!.name, 'www.example.');
  assert.equal(
    back.answers[1]!.name,
    'www.example.',
    'case-insensitive compression points at the first spelling',
  );
  assert.deepEqual(back.answers[1]!.data, [20, 'mx2.www.example.']);
  assert.deepEqual(decodeMessage(plain).answers[1]!.name, 'WWW.EXAMPLE.');
});

test('SRV and DNAME targets are not compressed (RFC 3597 §4)', () => {
  const msg: DnsMessage = {
    ...makeQuery(1, 'sip.example.', RRType.SRV),
    answers: [{ name: 'sip.example.', type: RRType.SRV, class: 1, ttl: 60, data: [1, 2, 3, 'sip.example.'] }],
  };
  const wire = encodeMessage(msg);
  // rdata = last 6 + 13 bytes; the target is spelled out, ending in a root label.
  assert.equal(wire.subarray(wire.length - 13).toString('latin1'), '\x03sip\x07example\x00');
});

test('name decoding rejects loops, forward pointers, bad label types and overlong names', () => {
  const loop = Buffer.from([0xc0, 0x00]);
  assert.throws(() => unpackName(loop, 0), malformed);
  const forward = Buffer.from([0xc0, 0x02, 0x01, 0x61, 0x00]);
  assert.throws(() => unpackName(forward, 0), malformed);
  const mutual = Buffer.from([0x01, 0x61, 0xc0, 0x04, 0x01, 0x62, 0xc0, 0x00]);
  assert.throws(() => unpackName(mutual, 4), malformed);
  assert.throws(() => unpackName(Buffer.from([0x41, 0x00]), 0), malformed);
  assert.throws(() => unpackName(Buffer.from([0x03, 0x61]), 0), malformed);
  const long = Buffer.alloc(300);
  let off = 0;
  for (let i = 0; i < 4; i++) {
    long[off++] = 63;
    off += 63;
  }
  long[off] = 0;
  assert.throws(() => unpackName(long, 0), /longer than 255/);
  // A valid backward pointer chain decodes.
  const ok = Buffer.alloc(64);
  let o = packName(ok, 0, 'example.');
  const start = o;
  o = packName(ok, o, 'www.example.', new Map([['example.', 0]]));
  assert.deepEqual(unpackName(ok, start), ['www.example.', o]);
});

test('decodeMessage rejects truncated and malformed messages', () => {
  const good = encodeMessage({
    ...makeQuery(9, 'www.example.', RRType.A, { edns: { udpSize: 1232 } }),
    answers: [{ name: 'www.example.', type: RRType.A, class: 1, ttl: 5, data: ['192.0.2.1'] }],
  });
  decodeMessage(good);
  for (let n = 0; n < good.length; n++)
    assert.throws(() => decodeMessage(good.subarray(0, n)), malformed, `prefix ${n}`);
  assert.throws(() => decodeMessage(Buffer.concat([good, Buffer.from([0])])), /trailing/);
  // Two OPT records.
  const twoOpt = Buffer.from(good);
  twoOpt[11] = 2;
  assert.throws(
    () => decodeMessage(Buffer.concat([twoOpt, good.subarray(good.length - 11)])),
    /more than one OPT/,
  );
  // A's RDLENGTH 5.
  const badLen = Buffer.from(good);
  const rdlenAt = good.length - 11 - 4 - 2;
  badLen[rdlenAt + 1] = 5;
  assert.throws(() => decodeMessage(badLen), malformed);
});

test('EDNS: OPT encodes and decodes with extended rcode, version and DO', () => {
  const msg: DnsMessage = {
    id: 3,
    opcode: 0,
    rcode: Rcode.BADVERS,
    flags: { ...NO_FLAGS, qr: true },
    questions: [],
    answers: [],
    authority: [],
    additional: [],
    edns: {
      udpSize: 4096,
      version: 0,
      dnssecOk: true,
      options: [{ code: 10, data: Buffer.from('0123456789abcdef', 'hex') }],
    },
  };
  const back = decodeMessage(encodeMessage(msg));
  assert.equal(back.rcode, Rcode.BADVERS);
  assert.deepEqual(back.edns, msg.edns);
  assert.equal(back.additional.length, 0, 'OPT is not an additional record');
  assert.throws(() => encodeMessage({ ...msg, edns: undefined }), /needs EDNS/);
});

test('truncation keeps whole RRsets, sets TC, and keeps the OPT', () => {
  const answers: ResourceRecord[] = [];
  for (let i = 0; i < 60; i++)
    answers.push({ name: 'big.example.', type: RRType.A, class: 1, ttl: 60, data: [`192.0.2.${i}`] });
  const msg: DnsMessage = { ...makeQuery(4, 'big.example.', RRType.A, { edns: { udpSize: 512 } }), answers };
  msg.flags = { ...msg.flags, qr: true };
  const full = encodeMessage(msg);
  assert.ok(full.length > 512);
  const cut = encodeMessage(msg, { maxSize: 512 });
  assert.ok(cut.length <= 512);
  const back = decodeMessage(cut);
  assert.equal(back.flags.tc, true);
  assert.equal(back.answers.length, 0, 'the one RRset did not fit whole');
  assert.ok(back.edns, 'OPT kept');
  // Optional additional data is dropped silently; required glue sets TC.
  const extra: DnsMessage = {
    ...msg,
    answers: [],
    authority: [{ name: 'sub.example.', type: RRType.NS, class: 1, ttl: 60, data: ['ns.sub.example.'] }],
    additional: answers.map((a) => ({ ...a, name: 'ns.sub.example.' })),
  };
  const opt = decodeMessage(encodeMessage(extra, { maxSize: 512 }));
  assert.equal(opt.flags.tc, false);
  assert.equal(opt.authority.length, 1);
  assert.equal(opt.additional.length, 0);
  const req = decodeMessage(encodeMessage(extra, { maxSize: 512, requiredAdditional: 60 }));
  assert.equal(req.flags.tc, true);
});
