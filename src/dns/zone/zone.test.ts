import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isFerryError } from '../../common/errors.js';
import { formatRdata } from '../wire/rdata.js';
import { RRType } from '../wire/types.js';
import { exportZone } from './export.js';
import { loadZoneFile, parseZone } from './parser.js';
import { ZoneStore, nextSerial, serialGreater } from './store.js';
import { Zone as ZoneClass, type Zone } from './zone.js';
import { TEST_ZONE } from '../test-fixtures.js';

const ZONE = `; a zone exercising the master-file features
$ORIGIN example.
$TTL 1h
@   IN  SOA ns1 hostmaster (
            2024010101 ; serial
            3600       ; refresh
            600 1209600
            300 )      ; minimum
    IN  NS  ns1
    NS  ns2.example.net.
ns1 300 IN A 192.0.2.53
ns1 IN 300 AAAA 2001:db8::53
www     A   192.0.2.1
        A   192.0.2.2
txt     TXT "a \\"quoted\\" string; not a comment" plain \\065BC "\\228\\189\\160"
mail    MX  10 mx.example.net.
$ORIGIN sub.example.
deep    CNAME www.example.
@       TXT "apex of sub"
$TTL 42
ttl42   A 192.0.2.42
ttlprev 7 A 192.0.2.7
        A 192.0.2.8
`;

function rr(zone: Zone, name: string, type: number): string[] {
  return (zone.getRRset(name, type)?.rdata ?? []).map((d) => formatRdata(type, d));
}

test('master file: directives, relative names, @, omitted fields, parentheses, comments, escapes', () => {
  const z = parseZone(ZONE);
  assert.equal(z.origin, 'example.');
  assert.equal(z.serial, 2024010101);
  assert.equal(z.soa.ttl, 3600);
  assert.deepEqual(rr(z, 'example.', RRType.NS), ['ns1.example.', 'ns2.example.net.']);
  assert.equal(z.getRRset('ns1.example.', RRType.A)!.ttl, 300);
  assert.equal(z.getRRset('ns1.example.', RRType.AAAA)!.ttl, 300, 'TTL and class in either order');
  assert.deepEqual(rr(z, 'www.example.', RRType.A), ['192.0.2.1', '192.0.2.2']);
  assert.deepEqual(rr(z, 'txt.example.', RRType.TXT), [
    '"a \\"quoted\\" string; not a comment" "plain" "ABC" "\\228\\189\\160"',
  ]);
  assert.deepEqual(rr(z, 'deep.sub.example.', RRType.CNAME), ['www.example.']);
  assert.deepEqual(rr(z, 'sub.example.', RRType.TXT), ['"apex of sub"']);
  assert.equal(z.getRRset('ttl42.sub.example.', RRType.A)!.ttl, 42);
  assert.equal(z.getRRset('ttlprev.sub.example.', RRType.A)!.ttl, 7);
  assert.equal(z.getRRset('ttlprev.sub.example.', RRType.A)!.rdata.length, 2);
});

test('export writes a file that re-imports to the same records', () => {
  const z = parseZone(ZONE);
  const text = exportZone(z);
  assert.match(text, /^\$ORIGIN example\.\n@\t3600\tIN\tSOA\t/);
  const again = parseZone(text);
  assert.deepEqual(again.records(), z.records());
  assert.equal(exportZone(again), text);
});

test('origin comes from the option or the SOA owner; names need one', () => {
  const z = parseZone('@ SOA ns hm 1 2 3 4 5\nwww A 192.0.2.1\n', { origin: 'Example.Org' });
  assert.equal(z.origin, 'Example.Org.');
  assert.deepEqual(rr(z, 'www.example.org.', RRType.A), ['192.0.2.1']);
  const y = parseZone('example.com. 60 IN SOA ns.example.com. hm.example.com. 1 2 3 4 5\n');
  assert.equal(y.origin, 'example.com.');
  assert.equal(y.soa.ttl, 60);
});

function syntaxError(text: string, line: number, pattern: RegExp, fileName?: string) {
  assert.throws(
    () => parseZone(text, fileName ? { fileName } : {}),
    (e: unknown) =>
      isFerryError(e, 'ZONE_SYNTAX') &&
      e.message.includes(`${fileName ?? '<zone>'}:${line}:`) &&
      pattern.test(e.message),
    `expected ${pattern} at line ${line}`,
  );
}

test('syntax errors name the file and line', () => {
  const head = '$ORIGIN example.\n@ SOA ns hm 1 2 3 4 5\n';
  syntaxError(head + 'www A 192.0.2.300\n', 3, /IPv4/);
  syntaxError(head + 'www BOGUS 1\n', 3, /unknown type/);
  syntaxError(head + '\n\nwww TXT "open\n', 5, /unterminated/);
  syntaxError(head + 'www A (\n192.0.2.1\n', 3, /unbalanced/);
  syntaxError(head + 'www A 192.0.2.1 )\n', 3, /unbalanced/);
  syntaxError(head + '$BOGUS x\n', 3, /unknown directive/);
  syntaxError(head + 'www CH A 192.0.2.1\n', 3, /class IN/);
  syntaxError(head + 'www.other. A 192.0.2.1\n', 3, /outside zone/);
  syntaxError(head + 'c CNAME www\nc A 192.0.2.1\n', 4, /CNAME/);
  syntaxError(head + '@ SOA ns hm 2 2 3 4 5\n', 3, /more than one SOA/);
  syntaxError('www A 192.0.2.1\n', 1, /no origin/);
  syntaxError('$ORIGIN example.\nwww A 192.0.2.1\n', 1, /no SOA/);
  syntaxError(head + '$INCLUDE other.zone\n', 3, /\$INCLUDE needs a file/);
  syntaxError(head + 'x MX 10\n', 3, /missing/, 'zones/x.zone');
});

test('loadZoneFile follows $INCLUDE relative to the including file, with an origin argument', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-zone-'));
  try {
    mkdirSync(join(dir, 'inc'));
    writeFileSync(
      join(dir, 'main.zone'),
      '$ORIGIN example.\n@ SOA ns hm 1 2 3 4 5\n$INCLUDE inc/hosts.zone hosts.example.\nafter A 192.0.2.9\n',
    );
    writeFileSync(join(dir, 'inc', 'hosts.zone'), 'a A 192.0.2.1\n$INCLUDE more.zone\n');
    writeFileSync(join(dir, 'inc', 'more.zone'), 'b A 192.0.2.2\nbad A 1.2.3\n');
    await assert.rejects(
      loadZoneFile(join(dir, 'main.zone')),
      (e: unknown) => isFerryError(e, 'ZONE_SYNTAX') && /more\.zone:2:/.test(e.message),
    );
    writeFileSync(join(dir, 'inc', 'more.zone'), 'b A 192.0.2.2\n');
    const z = await loadZoneFile(join(dir, 'main.zone'));
    assert.deepEqual(rr(z, 'a.hosts.example.', RRType.A), ['192.0.2.1']);
    assert.deepEqual(rr(z, 'b.hosts.example.', RRType.A), ['192.0.2.2']);
    assert.deepEqual(rr(z, 'after.example.', RRType.A), ['192.0.2.9'], 'origin restored after $INCLUDE');
    writeFileSync(join(dir, 'loop.zone'), '$ORIGIN example.\n@ SOA ns hm 1 2 3 4 5\n$INCLUDE loop.zone\n');
    await assert.rejects(loadZoneFile(join(dir, 'loop.zone')), /nested more than 10/);
    await assert.rejects(loadZoneFile(join(dir, 'missing.zone')), (e: unknown) =>
      isFerryError(e, 'ZONE_SYNTAX'),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('zone store: longest match, RRset replace with one serial bump, validation', () => {
  const parent = parseZone(ZONE);
  const child = parseZone('$ORIGIN sub.example.\n@ SOA ns hm 7 2 3 4 5\nx A 192.0.2.77\n');
  const store = new ZoneStore([parent, child]);
  assert.equal(store.findZone('WWW.example')!.origin, 'example.');
  assert.equal(store.findZone('a.b.sub.example.')!.origin, 'sub.example.');
  assert.equal(store.findZone('example.net.'), undefined);
  assert.deepEqual(store.getRRset('www.example.', 'A'), { ttl: 3600, rdata: ['192.0.2.1', '192.0.2.2'] });
  assert.equal(store.getRRset('nothing.example.', 'A'), undefined);

  assert.deepEqual(store.replaceRRset('www.example', 'A', 30, ['192.0.2.10']), { serial: 2024010102 });
  assert.deepEqual(store.getRRset('www.example.', 'A'), { ttl: 30, rdata: ['192.0.2.10'] });
  assert.deepEqual(
    store.replaceRRset('www.example.', 'A', 30, ['192.0.2.10']),
    { serial: 2024010102 },
    'no change, no bump',
  );
  assert.deepEqual(store.replaceRRset('new.example.', 'MX', 60, ['10 mail.example.', '20 mail2.example']), {
    serial: 2024010103,
  });
  assert.deepEqual(store.getRRset('new.example.', 'MX')!.rdata, ['10 mail.example.', '20 mail2.example.']);
  assert.deepEqual(
    store.replaceRRset('new.example.', 'MX', 60, []),
    { serial: 2024010104 },
    'empty rdata deletes',
  );
  assert.equal(store.getRRset('new.example.', 'MX'), undefined);
  assert.equal(store.serial('sub.example.'), 7);
  store.replaceRRset('x.sub.example.', 'A', 60, ['192.0.2.78']);
  assert.equal(store.serial('sub.example.'), 8);
  assert.equal(store.serial('example.'), 2024010104, 'other zone untouched');

  const before = store.generation;
  assert.throws(
    () => store.replaceRRset('www.example.net.', 'A', 60, ['192.0.2.1']),
    (e: unknown) => isFerryError(e, 'DNS_NOT_AUTHORITATIVE'),
  );
  assert.throws(
    () => store.replaceRRset('www.example.', 'A', 60, ['nope']),
    (e: unknown) => isFerryError(e, 'DNS_BAD_TEXT'),
  );
  assert.throws(
    () => store.replaceRRset('www.example.', 'CNAME', 60, ['x.example.']),
    (e: unknown) => isFerryError(e, 'DNS_INVALID_DATA'),
  );
  assert.throws(
    () => store.replaceRRset('www.example.', 'BOGUS', 60, ['1']),
    (e: unknown) => isFerryError(e, 'DNS_BAD_TEXT'),
  );
  assert.throws(
    () => store.serial('nope.'),
    (e: unknown) => isFerryError(e, 'DNS_NOT_AUTHORITATIVE'),
  );
  assert.equal(store.generation, before, 'failed changes change nothing');

  // Several RRsets in one change: all or nothing, one bump.
  assert.throws(() =>
    store.applyChanges([
      { owner: 'p.example.', type: 'A', ttl: 60, rdata: ['192.0.2.5'] },
      { owner: 'p.example.', type: 'CNAME', ttl: 60, rdata: ['www.example.'] },
    ]),
  );
  assert.equal(store.getRRset('p.example.', 'A'), undefined, 'rolled back');
  const r = store.applyChanges([
    { owner: 'p.example.', type: 'A', ttl: 60, rdata: ['192.0.2.5'] },
    { owner: 'p.example.', type: 'AAAA', ttl: 60, rdata: ['2001:db8::5'] },
  ]);
  assert.equal(r.serial, 2024010105);

  // Serial wraps per RFC 1982; a given SOA serial is kept only when it is greater.
  store.replaceRRset('example.', 'SOA', 3600, ['ns1.example. hostmaster.example. 1 3600 600 1209600 300']);
  assert.equal(store.serial('example.'), 2024010106, '1 is not greater than 2024010105: incremented instead');
  store.replaceRRset('example.', 'SOA', 3600, [
    'ns1.example. hostmaster.example. 3000000000 3600 600 1209600 300',
  ]);
  store.replaceRRset('example.', 'SOA', 3600, [
    'ns1.example. hostmaster.example. 4294967295 3600 600 1209600 300',
  ]);
  assert.equal(store.serial('example.'), 4294967295);
  store.replaceRRset('www.example.', 'A', 30, ['192.0.2.11']);
  assert.equal(store.serial('example.'), 0);
  assert.ok(serialGreater(0, 4294967295));
  assert.ok(store.remove('sub.example.'));
  assert.equal(store.findZone('x.sub.example.')!.origin, 'example.');
});

function which(bin: string): string | undefined {
  try {
    return execFileSync('which', [bin], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

for (const [tool, args] of [
  ['named-checkzone', (origin: string, file: string) => [origin, file]],
  ['kzonecheck', (origin: string, file: string) => ['-o', origin, file]],
] as const) {
  test(`${tool} accepts exported zones`, (t) => {
    const bin = which(tool);
    if (!bin) {
      t.skip(`${tool} is not installed`);
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'ferry-export-'));
    try {
      for (const text of [ZONE, TEST_ZONE]) {
        const z = parseZone(text);
        const file = join(dir, 'zone');
        writeFileSync(file, exportZone(z));
        execFileSync(bin, args(z.origin, file), { stdio: 'pipe' }); // throws on a non-zero exit
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('serial policies: increment, or unixtime with increment fallback (RFC 1982)', () => {
  const at = Date.UTC(2026, 0, 1);
  const now = at / 1000;
  assert.equal(nextSerial(5), 6);
  assert.equal(nextSerial(5, 'unixtime', at), now, 'jumps to the clock');
  assert.equal(nextSerial(now, 'unixtime', at), now + 1, 'same second: increment');
  assert.equal(nextSerial(now + 10, 'unixtime', at), now + 11, 'ahead of the clock: increment');
  assert.equal(
    nextSerial(2024010101, 'unixtime', at),
    2024010102,
    'date-style serials are ahead of Unix time',
  );
  const store = new ZoneStore([parseZone(ZONE)], { serialPolicy: 'unixtime' });
  const { serial } = store.replaceRRset('www.example.', 'A', 60, ['192.0.2.99']);
  assert.ok(serial >= Math.floor(Date.now() / 1000) - 5);
  assert.throws(() => new ZoneStore([], { serialPolicy: 'bogus' as 'increment' }), /serialPolicy/);
});

/** Every RRset of a zone as text lines, in canonical order (what transfers and export see). */
function dump(z: Zone): string[] {
  return z
    .rrsets()
    .map((s) => `${s.name} ${s.ttl} ${s.type} ${s.rdata.map((d) => formatRdata(s.type, d)).join(' | ')}`);
}

test('compact zones: a loaded zone, its changes and its copy in a worker read like the zone built record by record', () => {
  const lines = [
    '$ORIGIN big.test.',
    '@ SOA ns hm 1 2 3 4 5',
    '@ NS ns',
    'ns A 192.0.2.1',
    'a.b.c TXT "deep"',
  ];
  for (let i = 0; i < 3000; i++)
    lines.push(`h${i} A 10.0.${i >> 8}.${i & 255}`, ...(i % 7 ? [] : [`h${i} MX 10 H${i}`]));
  lines.push('h5 A 10.0.0.5', 'H5 A 10.9.9.9'); // a duplicate, and a record of an earlier owner in another case
  const text = lines.join('\n') + '\n';
  const fast = parseZone(text);
  // A rule broken anywhere sends the file through Zone.addRecord, which names the line.
  assert.throws(
    () => parseZone(text + 'h1 CNAME elsewhere.\n'),
    /<zone>:3437: CNAME record at h1.big.test.: CNAME at h1.big.test. cannot coexist/,
  );
  assert.equal(fast.size, 3003);
  assert.deepEqual(
    fast.getRRset('H5.BIG.TEST.', RRType.A)?.rdata.map((d) => formatRdata(RRType.A, d)),
    ['10.0.0.5', '10.9.9.9'],
  );
  assert.ok(
    fast.existsKey('b.c.big.test.') && fast.existsKey('c.big.test.') && !fast.existsKey('x.big.test.'),
  );
  assert.equal(fast.nodeByKey('b.c.big.test.'), undefined); // an empty non-terminal
  // Changes land in the overlay; enough of them fold it into a new base; reads see one zone.
  const store = new ZoneStore([fast]);
  store.replaceRRset('h1.big.test.', 'A', 60, []);
  store.replaceRRset('new.x.big.test.', 'AAAA', 60, ['2001:db8::1']);
  store.replaceRRset('a.b.c.big.test.', 'TXT', 60, []);
  assert.ok(
    !fast.existsKey('h1.big.test.') && fast.existsKey('x.big.test.') && !fast.existsKey('b.c.big.test.'),
  );
  assert.throws(() => store.replaceRRset('h2.big.test.', 'CNAME', 60, ['x.']), /CNAME/);
  for (let i = 10; i < 1500; i++) store.replaceRRset(`h${i}.big.test.`, 'A', 30, [`192.0.2.${i & 255}`]);
  assert.equal(fast.size, 3002);
  assert.equal(store.getRRset('h1499.big.test.', 'A')?.rdata[0], '192.0.2.219');
  // A copy made from the compact image (as a query worker makes it) holds the same data.
  const img = fast.compactImage();
  const copy = ZoneClass.fromImage(
    fast.origin,
    img.chunks(700),
    img.overlay.flatMap((n) => n.rrsets.keys().map((t) => n.rrsets.get(t)!)),
  );
  assert.deepEqual(dump(copy), dump(fast));
  assert.equal(copy.size, fast.size);
  assert.ok(copy.existsKey('x.big.test.') && !copy.existsKey('h1.big.test.'));
});

test('a small zone from a file (its apex kept compact) reads, changes and copies like one built record by record', () => {
  const text =
    '$ORIGIN small.test.\n$TTL 300\n@ SOA ns1 hostmaster 7 3600 600 86400 300\n@ NS ns1\n@ NS ns2\n' +
    'ns1 A 192.0.2.53\nns2 A 192.0.2.54\n@ A 198.51.100.1\n@ MX 10 mail\n@ TXT "zone small"\nmail A 198.51.100.25\n';
  const show = (z: Zone, type: number) =>
    z.getRRset('SMALL.test.', type)?.rdata.map((d) => formatRdata(type, d));
  // The reference: the same records added one by one.
  const ref = new ZoneClass('small.test.');
  for (const rr of parseZone(text).records()) ref.addRecord(rr.name, rr.type, rr.ttl, rr.data);
  const z = parseZone(text);
  assert.equal(z.serial, 7);
  assert.deepEqual(dump(z), dump(ref));
  // Read often (as queries do), the apex reads the same every time.
  for (let i = 0; i < 40; i++) assert.deepEqual(show(z, RRType.NS), ['ns1.small.test.', 'ns2.small.test.']);
  assert.deepEqual(dump(z), dump(ref));

  // A change at the apex, through the store: one serial bump, the rest of the apex kept.
  const a = parseZone(text);
  const store = new ZoneStore([a]);
  const gen = store.generation;
  assert.equal(store.replaceRRset('small.test.', 'TXT', 60, ['"changed"']).serial, 8);
  assert.ok(store.generation > gen, 'the store sees the change');
  assert.deepEqual(show(a, RRType.TXT), ['"changed"']);
  assert.deepEqual(show(a, RRType.MX), ['10 mail.small.test.']);
  assert.equal(a.records().filter((r) => r.type !== RRType.SOA).length, 8);
  // A change below the apex bumps the serial kept in the compact apex.
  const b = parseZone(text);
  new ZoneStore([b]).replaceRRset('www.small.test.', 'A', 60, ['192.0.2.80']);
  assert.equal(b.serial, 8);
  assert.deepEqual(show(b, RRType.NS), ['ns1.small.test.', 'ns2.small.test.']);
  // A record added at the apex through the zone stays.
  const c = parseZone(text);
  c.addRecord('small.test.', RRType.NS, 300, ['ns3.small.test.']);
  assert.deepEqual(show(c, RRType.NS), ['ns1.small.test.', 'ns2.small.test.', 'ns3.small.test.']);
  // A worker's copy of a zone whose apex was never decoded holds the same data.
  const d = parseZone(text);
  const img = d.compactImage();
  const copy = ZoneClass.fromImage(
    d.origin,
    img.chunks(2),
    img.overlay.flatMap((n) => n.rrsets.keys().map((t) => n.rrsets.get(t)!)),
  );
  assert.deepEqual(dump(copy), dump(ref));
  // A store that drops a zone stops following it.
  const s2 = new ZoneStore([d]);
  s2.remove('small.test.');
  const g2 = s2.generation;
  d.replaceRRset('www.small.test.', RRType.A, 60, []);
  assert.equal(s2.generation, g2);
});

test('300 small zones (their bases sharing buffers) each keep their own records through changes and copies', () => {
  const text = (i: number) =>
    `$ORIGIN s${i}.test.\n$TTL 300\n@ SOA ns1 hm ${i} 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.${i & 255}\n` +
    `www A 198.51.100.${i & 255}\nmail A 198.51.100.25\n@ MX 10 mail\nh${i} TXT "zone ${i}"\n`;
  const zones = Array.from({ length: 300 }, (_, i) => parseZone(text(i)));
  const store = new ZoneStore(zones);
  const www = (z: Zone) =>
    z.getRRset(`www.${z.origin}`, RRType.A)?.rdata.map((d) => formatRdata(RRType.A, d));
  // Change every third zone below its apex and fold it; its neighbours stay as loaded.
  for (let i = 0; i < 300; i += 3) {
    store.replaceRRset(`www.s${i}.test.`, 'A', 60, ['192.0.2.200']);
    store.replaceRRset(`h${i}.s${i}.test.`, 'TXT', 60, []);
    zones[i]!.compact();
  }
  for (let i = 0; i < 300; i++) {
    const z = zones[i]!;
    const changed = i % 3 === 0;
    assert.deepEqual(www(z), [changed ? '192.0.2.200' : `198.51.100.${i & 255}`]);
    assert.equal(z.existsKey(`h${i}.s${i}.test.`), !changed);
    assert.equal(z.nodeByKey(`h${i + 1}.s${i}.test.`), undefined);
    // A query thread's copy, read from the same memory.
    const img = z.compactImage();
    const copy = ZoneClass.fromImage(
      z.origin,
      img.image,
      img.overlay.flatMap((n) => n.rrsets.keys().map((t) => n.rrsets.get(t)!)),
    );
    assert.deepEqual(dump(copy), dump(z));
  }
});
