import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isFerryError } from '../../common/errors.js';
import { parseRdata } from '../wire/rdata.js';
import { tokenize } from '../wire/text.js';
import { RRType } from '../wire/types.js';
import { ZoneFiles, zoneFilePaths } from './files.js';
import { parseZone } from './parser.js';
import { ZoneStore } from './store.js';

function zoneText(origin: string, serial: number, www = '192.0.2.80'): string {
  return `$ORIGIN ${origin}\n$TTL 300\n@ SOA ns1 hostmaster ${serial} 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.53\nwww A ${www}\n`;
}

test('findZone: longest match among 10,000 zones, nested zones, names many labels deep', () => {
  const zones = [];
  for (let i = 0; i < 10_000; i++) zones.push(parseZone(zoneText(`z${i}.example.`, 1)));
  zones.push(parseZone(zoneText('example.', 1)));
  zones.push(parseZone(zoneText('deep.z7.example.', 1)));
  const store = new ZoneStore(zones);
  assert.equal(store.findZone('www.z9999.example.')?.origin, 'z9999.example.');
  assert.equal(store.findZone('WWW.Z5.EXAMPLE.')?.origin, 'z5.example.');
  assert.equal(store.findZone('a.b.c.d.e.f.g.h.deep.z7.example.')?.origin, 'deep.z7.example.');
  assert.equal(store.findZone('z7.example.')?.origin, 'z7.example.');
  assert.equal(store.findZone('x.deeper.z7.example.')?.origin, 'z7.example.');
  assert.equal(store.findZone('z10000.example.')?.origin, 'example.', 'not a zone: its parent is');
  assert.equal(store.findZone('example.org.'), undefined);
  assert.equal(store.findZone('.'), undefined);
  assert.ok(store.remove('z5.example.'));
  assert.equal(store.findZone('www.z5.example.')?.origin, 'example.', 'after removal the parent answers');
});

test('a bad line in a zone file of 50,000 records is refused with the file name and that line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-zone-files-'));
  try {
    const lines = [
      '$ORIGIN big.example.',
      '$TTL 300',
      '@ SOA ns1 hostmaster 1 3600 600 86400 300',
      '@ NS ns1',
      'ns1 A 192.0.2.53',
    ];
    for (let i = 0; i < 50_000; i++) lines.push(`h${i} A 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    lines[45_004] = 'h45000 A 10.0.175.300'; // line 45,005
    const file = join(dir, 'big.example.zone');
    writeFileSync(file, lines.join('\n') + '\n');
    await assert.rejects(
      new ZoneFiles({ dirs: [dir] }).loadAll(),
      (e) => isFerryError(e, 'ZONE_SYNTAX') && e.message.startsWith(`${file}:45005: bad IPv4`),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ZoneFiles: a directory of *.zone files; reload adds, replaces on a higher serial, keeps on a refusal, removes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-zone-files-'));
  try {
    writeFileSync(join(dir, 'a.example.zone'), zoneText('a.example.', 1));
    writeFileSync(join(dir, 'b.example.zone'), zoneText('b.example.', 1));
    writeFileSync(join(dir, 'notes.txt'), 'not a zone');
    writeFileSync(join(dir, '.c.example.zone'), 'hidden: not read');
    assert.deepEqual(
      (await zoneFilePaths({ dirs: [dir] })).map((p) => p.slice(dir.length + 1)),
      ['a.example.zone', 'b.example.zone'],
    );
    const files = new ZoneFiles({ dirs: [dir] });
    const store = new ZoneStore(await files.loadAll());
    const www = (o: string) => store.getRRset(`www.${o}`, 'A')?.rdata;

    // Same serial: the served copy stays (it may hold dynamic updates).
    writeFileSync(join(dir, 'a.example.zone'), zoneText('a.example.', 1, '192.0.2.81'));
    // A bad line: refused with its line, the served copy stays.
    writeFileSync(join(dir, 'b.example.zone'), zoneText('b.example.', 2).replace('192.0.2.80', '192.0.2.'));
    writeFileSync(join(dir, 'c.example.zone'), zoneText('c.example.', 1));
    let r = await files.reload(store);
    assert.deepEqual(r.added, ['c.example.']);
    assert.deepEqual(r.replaced, []);
    assert.equal(r.unchanged, 1);
    assert.equal(r.refused.length, 1);
    assert.match(r.refused[0]!.error.message, /b\.example\.zone:6: /);
    assert.deepEqual(www('a.example.'), ['192.0.2.80']);
    assert.deepEqual(www('b.example.'), ['192.0.2.80']);
    assert.equal(store.serial('b.example.'), 1);

    // Fixed with a higher serial: replaced. A file gone: its zone goes. A duplicate origin: refused.
    writeFileSync(join(dir, 'b.example.zone'), zoneText('b.example.', 2, '192.0.2.82'));
    unlinkSync(join(dir, 'a.example.zone'));
    writeFileSync(join(dir, 'd.example.zone'), zoneText('c.example.', 9));
    r = await files.reload(store);
    assert.deepEqual(r.replaced, ['b.example.']);
    assert.deepEqual(r.removed, ['a.example.']);
    assert.equal(r.refused.length, 1);
    assert.match(
      r.refused[0]!.error.message,
      /d\.example\.zone: zone c\.example\. is also in .*c\.example\.zone/,
    );
    assert.deepEqual(www('b.example.'), ['192.0.2.82']);
    assert.equal(store.findZone('www.a.example.'), undefined);
    assert.equal(store.serial('c.example.'), 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('recordCount follows changes made through the store, and recounts after one made outside it', () => {
  const zone = parseZone(zoneText('n.example.', 1));
  const store = new ZoneStore([zone]);
  assert.equal(store.recordCount(zone), 4);
  store.replaceRRset('www.n.example.', 'A', 300, ['192.0.2.1', '192.0.2.2', '192.0.2.3']);
  assert.equal(store.recordCount(zone), 6);
  store.replaceRRset('ns1.n.example.', 'A', 300, []);
  assert.equal(store.recordCount(zone), 5);
  zone.replaceRRset('x.n.example.', RRType.TXT, 300, [
    parseRdata(RRType.TXT, tokenize('"a"'), '.'),
    parseRdata(RRType.TXT, tokenize('"b"'), '.'),
  ]);
  assert.equal(store.recordCount(zone), 7);
});
