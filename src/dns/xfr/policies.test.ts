import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mergeZonePolicies, zoneOverride } from './policies.js';
import type { ZonePolicy } from './primary.js';

const xfr = { key: 'xfr.' };
const lan = { address: '192.0.2.0/24' };

test('zone policies: nothing set is no policy at all (refused), the default is *', () => {
  assert.equal(mergeZonePolicies({}, [{ origin: 'example.', policy: {} }]), undefined);
  assert.deepEqual(mergeZonePolicies({ allowTransfer: [xfr] }, [{ origin: 'example.', policy: {} }]), {
    '*': { allowTransfer: [xfr] },
  });
});

test('zone policies: a zone overrides the keys it sets and inherits the others; an empty list refuses', () => {
  const base: ZonePolicy = { allowTransfer: [xfr], notify: [{ address: '192.0.2.54', port: 53 }] };
  const merged = mergeZonePolicies(base, [
    { origin: 'a.example.', policy: { allowUpdate: [lan] } },
    { origin: 'b.example.', policy: { allowTransfer: [] } },
    { origin: 'c.example.', policy: {} },
  ]);
  assert.deepEqual(merged, {
    '*': base,
    'a.example.': { ...base, allowUpdate: [lan] },
    'b.example.': { ...base, allowTransfer: [] },
  });
  assert.equal(zoneOverride(base, {}), undefined);
});
