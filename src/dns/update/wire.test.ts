import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RRClass, RRType } from '../wire/types.js';
import { upd } from './client.js';
import { decodeUpdate, encodeUpdate } from './wire.js';

test('UPDATE messages round-trip, including the empty rdata of class ANY and NONE records (RFC 2136 §2.4-2.5)', () => {
  const prerequisites = [
    upd.exists('www.example.', 'A'),
    upd.nameNotInUse('new.example.'),
    upd.existsValue('www.example.', 'A', '192.0.2.1'),
  ];
  const updates = [
    upd.deleteRRset('www.example.', 'A'),
    upd.add('www.example.', 'A', 60, '192.0.2.2'),
    upd.deleteRR('mx.example.', 'MX', '10 mail.example.'),
    upd.deleteName('old.example.'),
  ];
  const m = decodeUpdate(encodeUpdate({ id: 99, zone: 'example.', prerequisites, updates }));
  assert.equal(m.id, 99);
  assert.equal(m.opcode, 5);
  assert.deepEqual(m.zone, [{ name: 'example.', type: RRType.SOA, class: RRClass.IN }]);
  assert.deepEqual(m.prerequisites, prerequisites);
  assert.deepEqual(m.updates, updates);
});

test('truncated or padded UPDATE messages are DNS_MALFORMED', () => {
  const wire = encodeUpdate({
    id: 1,
    zone: 'example.',
    updates: [upd.add('www.example.', 'A', 60, '192.0.2.2')],
  });
  for (let cut = 1; cut < wire.length; cut += 3)
    assert.throws(() => decodeUpdate(wire.subarray(0, cut)), { code: 'DNS_MALFORMED' });
  assert.throws(() => decodeUpdate(Buffer.concat([wire, Buffer.from([0])])), { code: 'DNS_MALFORMED' });
});
