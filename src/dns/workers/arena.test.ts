/**
 * The zone arena and a thread's zone set, in this thread: small zones written as slices and
 * served lazily through a bounded cache answer byte for byte as the zones themselves do.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QueryEngine } from '../query/engine.js';
import { encodeMessage, makeQuery } from '../wire/message.js';
import { RRType } from '../wire/types.js';
import { ZoneStore } from '../zone/store.js';
import { parseZone } from '../zone/parser.js';
import type { RRset, Zone } from '../zone/zone.js';
import { ZoneArena } from './arena.js';
import { encodeRRsets } from './codec.js';
import { ThreadZones } from './thread-zones.js';

const ZONES = 300;

function zoneText(i: number, www = `198.51.100.${i % 250}`): string {
  return (
    `$ORIGIN Z${i}.example.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n@ NS ns2\n` +
    `ns1 A 192.0.2.53\nns2 A 192.0.2.54\n@ A 198.51.100.1\nwww A ${www}\nmail A 198.51.100.25\n` +
    `@ MX 10 mail\n@ TXT "zone ${i}"\na.b.deep AAAA 2001:db8::1\n*.wild A 192.0.2.9\n`
  );
}

/** Writes a zone's slice as the pool does (its base folded, the RRsets outside it). */
function write(arena: ZoneArena, zone: Zone): number {
  const img = zone.compactImage();
  const sets: RRset[] = [];
  for (const n of img.overlay) for (const t of n.rrsets.keys()) sets.push(n.rrsets.get(t)!);
  return arena.write(zone.origin, img.image, encodeRRsets(sets)).ref;
}

/** Both servers' answers to a set of questions about zone `i`. */
function ask(engine: QueryEngine, i: number): Buffer[] {
  const qs: Array<[string, number]> = [
    [`z${i}.example.`, RRType.SOA],
    [`z${i}.example.`, RRType.MX],
    [`WWW.z${i}.example.`, RRType.A],
    [`www.z${i}.example.`, RRType.AAAA],
    [`nope.z${i}.example.`, RRType.A],
    [`deep.z${i}.example.`, RRType.A],
    [`x.wild.z${i}.example.`, RRType.A],
    [`z${i}.example.`, RRType.ANY],
  ];
  return qs.map(([name, type], n) => {
    const q = encodeMessage(makeQuery(n + 1, name, type, { edns: { udpSize: 1232 } }));
    return engine.answer(q, 'udp')!;
  });
}

function setup(cache: number) {
  const arena = new ZoneArena();
  const ref = new ZoneStore();
  const thread = new ThreadZones(cache);
  thread.addChunks(arena.list());
  for (let i = 0; i < ZONES; i++) {
    const z = parseZone(zoneText(i));
    ref.add(z);
    thread.setSlice(z.origin, write(arena, z));
  }
  thread.addChunks(arena.takeNew());
  // No answer cache: every answer is computed from the zones.
  const opts = { answerCacheSize: 0 };
  return { arena, ref, thread, a: new QueryEngine(ref, opts), b: new QueryEngine(thread, opts) };
}

test('arena: a zone first queried after many others answers as the zone itself; the cache stays bounded', () => {
  const { thread, a, b } = setup(16);
  assert.equal(thread.builtCount, 0, 'nothing is built before a query');
  for (let i = 1; i < ZONES; i++) assert.deepEqual(ask(b, i), ask(a, i), `zone ${i}`);
  assert.ok(thread.builtCount <= 16, `built ${thread.builtCount}`);
  // Zone 0 last (lazy), then again after every other zone evicted it.
  assert.deepEqual(ask(b, 0), ask(a, 0));
  for (let i = 1; i < ZONES; i++) ask(b, i);
  assert.deepEqual(ask(b, 0), ask(a, 0));
  assert.equal(thread.findZone('z7.example.')?.origin, 'Z7.example.', 'the origin keeps its case');
  assert.equal(thread.serial('z7.example.'), 1);
});

test('arena: a changed zone is a new slice, a removed zone is gone, and compaction keeps every answer', () => {
  const { arena, ref, thread, a, b } = setup(8);
  ask(b, 5); // built and cached before the change
  const changed = parseZone(zoneText(5, '203.0.113.5'));
  ref.add(changed);
  thread.setSlice(changed.origin, write(arena, changed));
  thread.addChunks(arena.takeNew());
  assert.deepEqual(ask(b, 5), ask(a, 5));
  assert.ok(ask(b, 5)[2]!.includes(Buffer.from([203, 0, 113, 5])), 'the new address is served');

  ref.remove('z6.example.');
  assert.equal(thread.remove('z6.example.'), true);
  assert.equal(thread.remove('z6.example.'), false);
  assert.equal(thread.findZone('www.z6.example.'), undefined);
  assert.deepEqual(ask(b, 6), ask(a, 6));

  // Compaction copies the live slices into fresh chunks; the old ones can go.
  const live = [...Array(ZONES).keys()].filter((i) => i !== 6);
  const refs = live.map((i) => {
    const z = ref.findZone(`z${i}.example.`)!;
    return { origin: z.origin, ref: write(arena, z) };
  });
  const moved = arena.compact(refs.map((r) => r.ref));
  assert.ok(arena.garbage === 0 && arena.live > 0);
  thread.addChunks(arena.takeNew());
  refs.forEach((r, n) => thread.setSlice(r.origin, moved.refs[n]!));
  thread.dropChunks(moved.dropped);
  for (const i of [0, 5, 6, 150, ZONES - 1]) assert.deepEqual(ask(b, i), ask(a, i), `zone ${i}`);
});

test('arena: a thread cache size that is not a positive integer is refused', () => {
  assert.throws(() => new ThreadZones(0), { code: 'DNS_BAD_OPTIONS' });
});
