import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isFerryError } from '../common/errors.js';
import { Journal } from './journal.js';
import { DEFAULT_TIMINGS, type MigrationPlan } from './types.js';

const plan = (id: string): MigrationPlan => ({
  id,
  domain: 'shop.example.',
  origin: 'origin',
  target: 'target',
  originIp: '192.0.2.1',
  targetIp: '192.0.2.2',
  tempIp: '192.0.2.100',
  ports: [80],
  timings: DEFAULT_TIMINGS,
});

describe('Journal', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-journal-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps migrations, phases and steps across a reopen, as a resumed controller needs', () => {
    const path = join(dir, 'j.sqlite');
    const j = new Journal(path);
    j.create(plan('m1'), 1000);
    j.append({ migrationId: 'm1', at: 2000, phase: 'temp-ip', kind: 'enter' });
    j.append({ migrationId: 'm1', at: 2100, phase: 'temp-ip', kind: 'step', step: 'add-address', detail: { address: '192.0.2.100' } });
    j.append({ migrationId: 'm1', at: 3000, phase: 'dns-temp', kind: 'enter' });
    j.close();

    const again = new Journal(path);
    const rec = again.get('m1');
    assert.ok(rec);
    assert.equal(rec.phase, 'dns-temp');
    assert.deepEqual(rec.plan, plan('m1'));
    assert.deepEqual(rec.phases, [
      { name: 'planned', startedAt: 1000, endedAt: 2000 },
      { name: 'temp-ip', startedAt: 2000, endedAt: 3000 },
      { name: 'dns-temp', startedAt: 3000, endedAt: null },
    ]);
    const steps = again.entries('m1').filter((e) => e.kind === 'step');
    assert.deepEqual(steps.map((s) => [s.step, s.detail]), [['add-address', { address: '192.0.2.100' }]]);
    again.close();
  });

  it('refuses a second migration with the same id', () => {
    const j = new Journal(':memory:');
    j.create(plan('dup'));
    assert.throws(() => j.create(plan('dup')), (e) => isFerryError(e, 'JOURNAL_DUPLICATE'));
    j.close();
  });

  it('records the error of a migration and lists migrations', () => {
    const j = new Journal(':memory:');
    j.create(plan('a'), 1);
    j.create(plan('b'), 2);
    j.append({ migrationId: 'a', at: 3, phase: 'planned', kind: 'error', detail: { message: 'boom' } });
    assert.equal(j.get('a')?.error, 'boom');
    assert.deepEqual(j.list(), ['b', 'a']);
    assert.equal(j.get('nope'), undefined);
    j.close();
  });

  it('fails with a clear error when the database cannot be opened', () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'not a folder');
    assert.throws(() => new Journal(join(file, 'j.sqlite')), (e) => isFerryError(e, 'JOURNAL_OPEN'));
  });
});
