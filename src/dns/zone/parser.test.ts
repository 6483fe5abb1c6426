import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rdataToWire } from '../wire/rdata.js';
import { RRType } from '../wire/types.js';
import { loadZoneFile, parseZone, parseZoneByRecord, type ParseZoneOptions } from './parser.js';
import type { Zone } from './zone.js';

/** Every RRset of a zone as `owner type ttl rdata-hex…` lines (rdata in zone order), sorted. */
function records(zone: Zone): string[] {
  const out: string[] = [];
  for (const set of zone.rrsets()) {
    const rd = set.rdata.map((d) => rdataToWire(set.type, d).toString('hex')).join(',');
    out.push(`${set.name} ${set.type} ${set.ttl} ${rd}`);
  }
  return out.sort();
}

/** The zone's records, or the error both readers must give. */
function read(parse: typeof parseZone, text: string, opts?: ParseZoneOptions): string[] {
  try {
    const z = parse(text, opts);
    return [`origin ${z.origin} names ${z.size}`, ...records(z)];
  } catch (err) {
    return [`error ${(err as { code?: string }).code} ${(err as Error).message}`];
  }
}

function sameAsRecordByRecord(text: string, opts?: ParseZoneOptions): string[] {
  const fast = read(parseZone, text, opts);
  assert.deepEqual(fast, read(parseZoneByRecord, text, opts), text);
  return fast;
}

const TRICKY = [
  '$ORIGIN Example.COM.',
  '$TTL 1h30m',
  '@ IN SOA ns1 hostmaster ( 2024010101 ; serial',
  '  3600 600 86400 300 )',
  '@ NS ns1',
  '  NS ns2.other.org.',
  'ns1 300 IN A 192.0.2.1',
  'NS2 in 1W a 010.0.2.2',
  'www IN 2d AAAA 2001:DB8::1',
  '    AAAA ::ffff:192.0.2.9',
  'Www A 192.0.2.3 ; mixed case joins www',
  'www A 192.0.2.3',
  '*.wild 60 A 192.0.2.4',
  'alias CNAME www',
  'abs.example.com. CNAME target.other.org.',
  'mail MX 10 @',
  '@ MX ( 20',
  '  mx2.other.org. )',
  '_sip._tcp SRV 0 5 5060 sip',
  '1.2 PTR host.Example.COM.',
  'txt TXT "hello world" "a;b" plain',
  'txt TXT "esc \\"q\\" \\059 \\255\\000" \\065BC',
  'txt TXT ""',
  'esc\\.dot A 192.0.2.5',
  'e\\065sc A 192.0.2.6',
  'hinfo HINFO "cpu" "os"',
  'caa CAA 0 issue "ca.example"',
  'generic TYPE65280 \\# 3 ABCDEF',
  'genA A \\# 4 C0000208',
  'class1 CLASS1 TYPE1 192.0.2.9',
  'quoted-a A "192.0.2.10"',
  'mixq TXT a"b c"d',
  '$ORIGIN sub.Example.COM.',
  'deep A 192.0.2.11',
  '@ TXT "at sub"',
  '$ORIGIN a\\.b.example.com.',
  'x A 192.0.2.12',
  '  NS y',
  '$ORIGIN example.com.',
  'last 1h A 192.0.2.13',
  '  A 192.0.2.14',
  'ttlnext A 192.0.2.15',
  'longttl 2147483647 A 192.0.2.16',
  'l' + 'a'.repeat(62) + ' A 192.0.2.17',
  'utf TXT "ünïcode"',
  'crlf A 192.0.2.18\r',
];

test('fast path: tricky master-file text reads into the same zone as record by record', () => {
  const text = TRICKY.join('\n') + '\n';
  const got = sameAsRecordByRecord(text);
  // And the values a user relies on, not only agreement between the two.
  const find = (prefix: string) => got.filter((l) => l.startsWith(prefix));
  assert.equal(find('www.Example.COM. 1 ')[0], 'www.Example.COM. 1 5400 c0000203'); // 1h30m
  assert.deepEqual(find('NS2.Example.COM. 1 '), ['NS2.Example.COM. 1 604800 0a000202']);
  assert.deepEqual(find('txt.Example.COM. 16 '), [
    'txt.Example.COM. 16 5400 0b68656c6c6f20776f726c6403613b6205706c61696e,' +
      '0c65736320227122203b20ff0003414243,00',
  ]);
  assert.deepEqual(find('esc\\.dot.Example.COM. 1 '), ['esc\\.dot.Example.COM. 1 5400 c0000205']);
  assert.deepEqual(find('eAsc.Example.COM. 1 '), ['eAsc.Example.COM. 1 5400 c0000206']);
  assert.deepEqual(find('x.a\\.b.example.com. 2 '), [
    'x.a\\.b.example.com. 2 5400 017903612e62076578616d706c6503636f6d00',
  ]);
  assert.deepEqual(find('last.example.com. 1 '), ['last.example.com. 1 3600 c000020d,c000020e']);
  assert.deepEqual(find('ttlnext.example.com. 1 '), ['ttlnext.example.com. 1 5400 c000020f']);
  assert.deepEqual(find('mixq.Example.COM. 16 '), ['mixq.Example.COM. 16 5400 056162206364']);
  assert.deepEqual(find('Example.COM. 15 '), ['Example.COM. 15 5400 0014036d7832056f74686572036f726700']);
  assert.deepEqual(find('mail.Example.COM. 15 '), [
    'mail.Example.COM. 15 5400 000a074578616d706c6503434f4d00',
  ]);
  assert.deepEqual(find('utf.example.com. 16 '), ['utf.example.com. 16 5400 09c3bc6ec3af636f6465']);
});

test('fast path: the same records and errors as record by record over generated variations', () => {
  // A deterministic walk over owners, TTLs, classes, types and rdata, good and bad.
  const owners = ['@', 'h', 'H.sub', 'abs.example.', ' ', '*', 'a\\.b', '"q"', 'a..b', '.', 'x.other.'];
  const ttls = ['', '300', '1d', '1h30', '2147483648', '99999999999', '0'];
  const classes = ['', 'IN', 'in', 'CH', 'CLASS1'];
  const rdata: Array<[string, string[]]> = [
    ['A', ['192.0.2.1', '1.2.3', '256.0.0.1', '1.2.3.4 5', '"1.2.3.4"', '\\# 4 01020304', '']],
    ['aaaa', ['::1', 'zz::', '1:2:3:4:5:6:7:8:9']],
    ['NS', ['ns1', '@', 'ns.other.', 'a..b', 'a\\.b', '"q"', 'x'.repeat(64)]],
    ['CNAME', ['t', 't.other.']],
    ['MX', ['10 mx', '65536 mx', 'x mx', '10', '010 @']],
    ['SRV', ['0 5 5060 sip', '1 2 3', '1 2 70000 a']],
    ['TXT', ['a', '"a b"', '"\\256"', '"' + 'z'.repeat(256) + '"', 'a"b', '"ü"', '\\ü']],
    ['PTR', ['p.other.']],
    ['TYPE1', ['192.0.2.2']],
    ['BOGUS', ['x']],
  ];
  let cases = 0;
  let loaded = 0;
  for (const owner of owners)
    for (const ttl of ttls)
      for (const cls of classes)
        for (const [type, values] of rdata)
          for (const value of values) {
            if ((cases++ * 7919) % 8 !== 0) continue; // an eighth of the combinations, spread out
            const rec = [owner, ttl, cls, type, value].filter((p) => p !== '').join(' ');
            const text = `$ORIGIN example.\n@ SOA ns1 h 1 2 3 4 5\nprev A 192.0.2.9\n${rec}\n`;
            if (!sameAsRecordByRecord(text)[0]!.startsWith('error')) loaded++;
            // Also with the record before the apex is known, and with no origin at all.
            sameAsRecordByRecord(`${rec}\nexample. SOA ns1.example. h. 1 2 3 4 5\n`);
          }
  assert.ok(loaded > 100, `only ${loaded} of the variations loaded`);
});

test('zone rules: a CNAME beside other data is refused with the line, as before', () => {
  const lines = ['$ORIGIN example.', '@ SOA ns1 h 1 2 3 4 5'];
  for (let i = 0; i < 1000; i++) lines.push(`h${i} A 192.0.2.1`);
  lines.push('h500 CNAME x');
  const got = sameAsRecordByRecord(lines.join('\n'));
  assert.match(got[0]!, /^error ZONE_SYNTAX <zone>:1003: CNAME record at h500\.example\./);
});

test('a large file with one bad line is refused with that line number (start, middle, end)', () => {
  const n = 100_000;
  const lines = ['$ORIGIN big.example.', '$TTL 300', '@ SOA ns1 hostmaster 1 3600 600 86400 300', '@ NS ns1'];
  for (let i = 0; i < n; i++) lines.push(`h${i} A 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  const good = parseZone(lines.join('\n') + '\n');
  assert.equal(good.size, n + 1);
  for (const [at, bad, message] of [
    [5, 'h0 A 10.0.0.256', 'bad IPv4 address "10.0.0.256"'],
    [4 + n / 2, 'h1 MX 10', 'MX rdata is missing its domain name'],
    [4 + n, 'h2 TXT "unterminated', 'unterminated quoted string'],
    [4 + n, 'h3 IN WAT x', 'unknown type "WAT"'],
  ] as const) {
    const copy = lines.slice();
    copy[at - 1] = bad;
    assert.throws(
      () => parseZone(copy.join('\n') + '\n', { fileName: '/zones/big.zone' }),
      (err: Error) => err.message === `/zones/big.zone:${at}: ${message}`,
      bad,
    );
  }
});

test('loadZoneFile reads bytes, $INCLUDE included, into the same zone as text', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-parse-'));
  try {
    writeFileSync(join(dir, 'inc.zone'), 'inc A 192.0.2.20\n  TXT "from include"\n');
    const text = `$ORIGIN example.\n@ SOA ns1 h 1 2 3 4 5\nbefore A 192.0.2.1\n$INCLUDE inc.zone sub.example.\n  A 192.0.2.2\n`;
    writeFileSync(join(dir, 'main.zone'), text);
    const zone = await loadZoneFile(join(dir, 'main.zone'));
    const got = records(zone);
    assert.deepEqual(got, records(parseZoneByRecord(text, { fileName: join(dir, 'main.zone') })));
    // The blank owner after $INCLUDE is the including file's previous owner (RFC 1035 §5.1).
    assert.ok(got.includes('before.example. 1 3600 c0000201,c0000202'), got.join('\n'));
    assert.ok(got.includes('inc.sub.example. 16 3600 0c66726f6d20696e636c756465'), got.join('\n'));
    assert.equal(zone.getRRset('inc.sub.example.', RRType.A)?.rdata.length, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
