import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isFerryError } from '../common/errors.js';
import { Journal } from './journal.js';
import { STEP } from './steps.js';
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
    j.append({
      migrationId: 'm1',
      at: 2100,
      phase: 'temp-ip',
      kind: 'step',
      step: STEP.addAddress,
      detail: { address: '192.0.2.100' },
    });
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
    assert.deepEqual(
      steps.map((s) => [s.step, s.detail]),
      [[STEP.addAddress, { address: '192.0.2.100' }]],
    );
    again.close();
  });

  it('refuses a second migration with the same id', () => {
    const j = new Journal(':memory:');
    j.create(plan('dup'));
    assert.throws(
      () => j.create(plan('dup')),
      (e) => isFerryError(e, 'JOURNAL_DUPLICATE'),
    );
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
    assert.throws(
      () => new Journal(join(file, 'j.sqlite')),
      (e) => isFerryError(e, 'JOURNAL_OPEN'),
    );
  });

  it('fsyncs off the event loop: the loop runs while the disk is slow, and flushed() waits for it', async () => {
    const synced: number[] = [];
    let release: () => void = () => undefined;
    const j = new Journal(join(dir, 'slow.sqlite'), {
      fsync: (fd) =>
        new Promise<void>((resolve) => {
          synced.push(fd);
          release = resolve;
        }),
    });
    try {
      j.create(plan('s1'), 1);
      j.append({ migrationId: 's1', at: 2, phase: 'temp-ip', kind: 'enter' });
      let done = false;
      const flushed = j.flushed().then(() => (done = true));
      // The disk has not answered: the event loop still turns, and the entry is not yet durable.
      let turns = 0;
      for (let i = 0; i < 5; i++)
        await new Promise<void>((r) =>
          setImmediate(() => {
            turns++;
            r();
          }),
        );
      assert.equal(turns, 5);
      assert.equal(done, false, 'flushed() must wait for the fsync');
      assert.equal(synced.length, 1, 'one fsync for both entries');
      release();
      await flushed;
      assert.equal(done, true);
      // Nothing new appended: nothing to fsync.
      await j.flushed();
      assert.equal(synced.length, 1);
    } finally {
      release();
      j.close();
    }
  });

  it('group commit: appends made while an fsync runs share one more fsync, never zero', async () => {
    let calls = 0;
    const pending: Array<() => void> = [];
    const j = new Journal(join(dir, 'group.sqlite'), {
      fsync: () =>
        new Promise<void>((resolve) => {
          calls++;
          pending.push(resolve);
        }),
    });
    try {
      j.create(plan('g'), 1);
      const first = j.flushed();
      // Ten migrations append and wait while the first fsync is in flight.
      const waits: Array<Promise<void>> = [];
      for (let i = 0; i < 10; i++) {
        j.append({
          migrationId: 'g',
          at: 10 + i,
          phase: 'temp-ip',
          kind: 'step',
          step: STEP.dnsChange,
          detail: { i },
        });
        waits.push(j.flushed());
      }
      let settled = 0;
      for (const w of waits) void w.then(() => settled++);
      pending.shift()!(); // the first fsync returns: it did not cover the ten
      await first;
      await new Promise<void>((r) => setImmediate(r));
      assert.equal(settled, 0, 'appends after the first fsync began wait for the next');
      assert.equal(calls, 2, 'one queued fsync covers all ten');
      pending.shift()!();
      await Promise.all(waits);
      assert.equal(calls, 2);
    } finally {
      for (const r of pending) r();
      j.close();
    }
  });

  it('a failing disk rejects flushed(), so the step it guards does not run', async () => {
    const j = new Journal(join(dir, 'eio.sqlite'), {
      fsync: () => Promise.reject(new Error('EIO: i/o error')),
    });
    try {
      j.create(plan('e'), 1);
      await assert.rejects(j.flushed(), /EIO/);
    } finally {
      j.close();
    }
  });

  it('the real fsync works on a reopened journal, and process durability never waits', async () => {
    const path = join(dir, 'real.sqlite');
    new Journal(path).close();
    const j = new Journal(path);
    j.create(plan('r'), 1);
    await j.flushed();
    j.close();
    const p = new Journal(join(dir, 'proc.sqlite'), {
      durability: 'process',
      fsync: () => Promise.reject(new Error('must not be called')),
    });
    p.create(plan('p'), 1);
    await p.flushed();
    p.close();
  });

  it('a journal of an earlier version (no summary columns) gives the same records, and keeps them after appends', () => {
    const path = join(dir, 'older.sqlite');
    // The tables as earlier versions made them: a migration re-entering `cutover` on resume,
    // completed with its removal notes and settled; another still running.
    const old = new Database(path);
    old.exec(`CREATE TABLE migrations (id TEXT PRIMARY KEY, plan TEXT NOT NULL, phase TEXT NOT NULL,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, error TEXT);
      CREATE TABLE journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, migration_id TEXT NOT NULL REFERENCES migrations(id),
        at INTEGER NOT NULL, phase TEXT NOT NULL, kind TEXT NOT NULL, step TEXT, detail TEXT);`);
    const row = old.prepare('INSERT INTO migrations VALUES (?, ?, ?, ?, ?, NULL)');
    const entry = old.prepare(
      'INSERT INTO journal (migration_id, at, phase, kind, step) VALUES (?, ?, ?, ?, ?)',
    );
    row.run('done', JSON.stringify(plan('done')), 'completed', 10, 90);
    row.run('open', JSON.stringify(plan('open')), 'sync', 20, 21);
    for (const [id, at, phase, kind, step] of [
      ['done', 10, 'planned', 'enter', null],
      ['open', 20, 'planned', 'enter', null],
      ['done', 30, 'cutover', 'enter', null],
      ['done', 35, 'cutover', 'step', STEP.dnsChange],
      ['done', 40, 'cutover', 'enter', null],
      ['open', 21, 'sync', 'enter', null],
      ['done', 50, 'completed', 'enter', null],
      ['done', 60, 'completed', 'note', STEP.redirectRemoved],
      ['done', 70, 'completed', 'note', STEP.tempIpRemoved],
      ['done', 90, 'completed', 'leave', null],
    ] as const)
      entry.run(id, at, phase, kind, step);
    old.close();

    const j = new Journal(path, { durability: 'process' });
    const [done, open] = j.getMany(['done', 'open']);
    assert.deepEqual(
      { ...done, plan: undefined },
      {
        plan: undefined,
        phase: 'completed',
        settled: true,
        createdAt: 10,
        updatedAt: 90,
        phases: [
          { name: 'planned', startedAt: 10, endedAt: 30 },
          { name: 'cutover', startedAt: 30, endedAt: 50 },
          { name: 'completed', startedAt: 50, endedAt: null },
        ],
        redirectRemovedAt: 60,
        tempIpRemovedAt: 70,
      },
    );
    assert.deepEqual(
      [open!.phase, open!.settled, open!.phases.map((p) => p.name)],
      ['sync', false, ['planned', 'sync']],
    );
    assert.deepEqual(
      j.briefs().map((b) => [b.id, b.settled]),
      [
        ['done', true],
        ['open', false],
      ],
    );
    // Appends after the upgrade go on from the filled summary.
    j.append({ migrationId: 'open', at: 100, phase: 'completed', kind: 'enter' });
    j.append({ migrationId: 'open', at: 110, phase: 'completed', kind: 'note', step: STEP.tempIpRemoved });
    assert.deepEqual(
      j.get('open')!.phases.map((p) => [p.name, p.endedAt]),
      [
        ['planned', 21],
        ['sync', 100],
        ['completed', null],
      ],
    );
    assert.deepEqual([j.get('open')!.settled, j.get('open')!.tempIpRemovedAt], [false, 110]);
    j.append({ migrationId: 'open', at: 120, phase: 'completed', kind: 'leave' });
    assert.equal(j.get('open')!.settled, true);
    assert.deepEqual(
      j.page({ limit: 1 }).map((r) => r.plan.id),
      ['open'],
    );
    j.close();
  });
});
