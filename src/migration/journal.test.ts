import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { postgresInstalled, startPostgres, type PostgresServer } from '../../test/postgres.js';
import { freePort } from '../../test/ports.js';
import { samplePlan } from '../../test/plans.js';
import { isFerryError } from '../common/errors.js';
import { sleep, waitFor } from '../common/time.js';
import { Journal } from './journal.js';
import { PgJournal } from './journal-pg.js';
import type { JournalStore } from './journal-store.js';
import { STEP } from './steps.js';

const plan = (id: string) => samplePlan(id);

/**
 * The contract every journal store keeps, run against SQLite and PostgreSQL. `open(name)` opens
 * the store called `name`: the same name again is the same storage (a reopen, a second controller).
 */
function journalContract(open: (name: string) => Promise<JournalStore>): void {
  it('keeps migrations, phases and steps across a reopen, as a resumed controller needs', async () => {
    const j = await open('reopen');
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
    await j.flushed();
    await j.close();

    const again = await open('reopen');
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
    // Seqs go on after a reopen.
    const seq = again.append({
      migrationId: 'm1',
      at: 3100,
      phase: 'dns-temp',
      kind: 'note',
      detail: { x: 1 },
    });
    assert.ok(seq > steps[0]!.seq);
    assert.equal(again.lastSeq(), seq);
    await again.flushed();
    await again.close();
  });

  it('refuses a second migration with the same id', async () => {
    const j = await open('dup');
    j.create(plan('dup'));
    assert.throws(
      () => j.create(plan('dup')),
      (e) => isFerryError(e, 'JOURNAL_DUPLICATE'),
    );
    await j.close();
  });

  it('records the error of a migration and lists migrations', async () => {
    const j = await open('errors');
    j.create(plan('a'), 1);
    j.create(plan('b'), 2);
    j.append({ migrationId: 'a', at: 3, phase: 'planned', kind: 'error', detail: { message: 'boom' } });
    assert.equal(j.get('a')?.error, 'boom');
    assert.deepEqual(j.list(), ['b', 'a']);
    assert.equal(j.get('nope'), undefined);
    assert.deepEqual(j.entries('nope'), []);
    await j.flushed();
    await j.close();
    const again = await open('errors');
    assert.equal(again.get('a')?.error, 'boom');
    assert.equal(again.get('a')?.updatedAt, 3);
    await again.close();
  });

  it('settles, pages and briefs as the controller lists them', async () => {
    const j = await open('listing');
    j.create(plan('old'), 10);
    j.create({ ...plan('done'), domain: 'blog.example.' }, 20);
    j.create(plan('new'), 30);
    for (const phase of ['completed'] as const)
      j.append({ migrationId: 'done', at: 40, phase, kind: 'enter' });
    assert.equal(j.get('done')?.settled, false, 'completed but not left: clean-up may remain');
    const before = j.lastSeq();
    j.append({ migrationId: 'done', at: 50, phase: 'completed', kind: 'leave' });
    j.append({
      migrationId: 'old',
      at: 60,
      phase: 'temp-ip',
      kind: 'note',
      step: STEP.tempIpRemoved,
      detail: {},
    });
    assert.equal(j.get('done')?.settled, true);
    assert.equal(j.get('old')?.tempIpRemovedAt, 60);
    assert.deepEqual(
      j.briefs().map((b) => [b.id, b.phase, b.settled, b.createdAt]),
      [
        ['old', 'planned', false, 10],
        ['done', 'completed', true, 20],
        ['new', 'planned', false, 30],
      ],
    );
    assert.deepEqual(
      j.briefs({ changedAfter: before }).map((b) => b.id),
      ['old', 'done'],
    );
    assert.deepEqual(
      j.page({ limit: 2 }).map((r) => r.plan.id),
      ['new', 'done'],
    );
    assert.deepEqual(
      j.page({ limit: 2, after: { createdAt: 20, id: 'done' } }).map((r) => r.plan.id),
      ['old'],
    );
    assert.deepEqual(
      j.page({ limit: 10, active: false }).map((r) => r.plan.id),
      ['done'],
    );
    assert.deepEqual(
      j.page({ limit: 10, domain: 'blog.example.' }).map((r) => r.plan.id),
      ['done'],
    );
    assert.deepEqual(
      j.getMany(['new', 'nope', 'old']).map((r) => r.plan.id),
      ['new', 'old'],
    );
    await j.flushed();
    await j.close();
  });

  it('a second store on the same storage sees what the first committed after refresh()', async () => {
    const writer = await open('shared');
    const reader = await open('shared');
    writer.create(plan('s'), 1);
    writer.append({ migrationId: 's', at: 2, phase: 'temp-ip', kind: 'enter' });
    await writer.flushed();
    await reader.refresh();
    assert.equal(reader.get('s')?.phase, 'temp-ip');
    assert.equal(reader.lastSeq(), writer.lastSeq());
    writer.append({ migrationId: 's', at: 3, phase: 'dns-temp', kind: 'enter', detail: { n: 1 } });
    await writer.flushed();
    await reader.refresh();
    assert.equal(reader.get('s')?.phase, 'dns-temp');
    assert.deepEqual(reader.entries('s').at(-1)?.detail, { n: 1 });
    await reader.close();
    await writer.close();
  });
}

describe('Journal contract on SQLite', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-journal-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  journalContract((name) => Promise.resolve(new Journal(join(dir, `${name}.sqlite`))));
});

describe(
  'Journal contract on PostgreSQL',
  { skip: postgresInstalled ? false : 'PostgreSQL is not installed (Debian package postgresql)' },
  () => {
    let server: PostgresServer;
    const made = new Set<string>();
    before(async () => {
      server = await startPostgres();
    });
    after(() => server?.stop());
    journalContract((name) => {
      if (!made.has(name)) {
        server.sql(`CREATE DATABASE ${name} OWNER ${server.user}`);
        made.add(name);
      }
      return PgJournal.open(server.url.replace(/\/[^/]*$/, `/${name}`));
    });

    // PostgreSQL's own: what a killed or absent server does to the journal. Each test leaves it running.
    const urlOf = (name: string) => server.url.replace(/\/[^/]*$/, `/${name}`);
    const fresh = async (name: string): Promise<PgJournal> => {
      server.sql(`CREATE DATABASE ${name} OWNER ${server.user}`);
      return PgJournal.open(urlOf(name));
    };

    it('PostgreSQL SIGKILLed mid-step: the acknowledged entry survives, the unacknowledged one rejects, says lost and is refused after; a journal opened meanwhile retries until it is back', async () => {
      const j = await fresh('killed');
      const lost: Error[] = [];
      j.on('lost', (e) => lost.push(e));
      j.create(plan('k'), 1);
      j.append({ migrationId: 'k', at: 2, phase: 'temp-ip', kind: 'step', step: STEP.addAddress });
      await j.flushed();
      // Killed between a step's append and its acknowledgement: the step must not be acknowledged.
      server.kill();
      j.append({ migrationId: 'k', at: 3, phase: 'temp-ip', kind: 'step', step: STEP.startRedirect });
      await assert.rejects(j.flushed(), (e) => isFerryError(e, 'JOURNAL_LOST'));
      assert.equal(lost.length, 1, 'lost is said once');
      assert.ok(isFerryError(lost[0], 'JOURNAL_LOST'));
      assert.equal(j.lost, true);
      assert.throws(
        () => j.append({ migrationId: 'k', at: 4, phase: 'temp-ip', kind: 'note' }),
        (e) => isFerryError(e, 'JOURNAL_LOST'),
      );
      await assert.rejects(j.refresh(), (e) => isFerryError(e, 'JOURNAL_LOST'));
      assert.equal(j.get('k')?.phase, 'planned', 'reads go on from the copy');
      await j.close();

      // Opened while PostgreSQL is down: retries with backoff, naming host:port and never the
      // password, and connects once it is back.
      const retries: Array<{ attempt: number; delayMs: number; message: string }> = [];
      let sawTwo: () => void = () => undefined;
      const two = new Promise<void>((r) => (sawTwo = r));
      const opening = PgJournal.open(urlOf('killed'), {
        retryInitialMs: 100,
        retryMaxMs: 400,
        onRetry: (r) => {
          retries.push(r);
          if (retries.length === 2) sawTwo();
        },
      });
      await two;
      await server.restart();
      const again = await opening;
      assert.deepEqual(
        again.entries('k').map((e) => e.step ?? e.kind),
        ['enter', STEP.addAddress],
        'the acknowledged step is there, the unacknowledged one is not',
      );
      again.append({ migrationId: 'k', at: 5, phase: 'temp-ip', kind: 'step', step: STEP.startRedirect });
      await again.flushed();
      await again.close();
      assert.deepEqual(
        retries.map((r) => r.delayMs),
        retries.map((_, i) => Math.min(100 * 2 ** i, 400)),
        'doubling up to retryMaxMs',
      );
      for (const r of retries) {
        assert.ok(r.message.includes(`cannot reach PostgreSQL at 127.0.0.1:${server.port}: `), r.message);
        assert.ok(!r.message.includes(server.password), 'the password stays out');
      }
    });

    it('a writer paused mid-commit (SIGSTOP) neither blocks the next writer nor wins over it when woken: the woken one is lost, every entry it had acknowledged is kept', async () => {
      server.sql(`CREATE DATABASE paused OWNER ${server.user}`);
      // The first writer in a process of its own, committing without pause, as a leader mid-migration.
      const moduleUrl = new URL('./journal-pg.js', import.meta.url).href;
      const code = `
        const { PgJournal } = await import(${JSON.stringify(moduleUrl)});
        const j = await PgJournal.open(process.argv[1]);
        j.create(${JSON.stringify(plan('p'))}, 1);
        await j.flushed();
        console.log('ready');
        for (let at = 2; ; at++) {
          const seq = j.append({ migrationId: 'p', at, phase: 'temp-ip', kind: 'note' });
          try {
            await j.flushed();
          } catch (e) {
            console.log('lost ' + e.code);
            process.exit(0);
          }
          console.log('acked ' + seq);
        }`;
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', code, urlOf('paused')],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      const acked: number[] = [];
      let said = '';
      let ready: () => void = () => undefined;
      const isReady = new Promise<void>((r) => (ready = r));
      createInterface({ input: child.stdout! }).on('line', (l) => {
        if (l === 'ready') ready();
        else if (l.startsWith('acked ')) acked.push(Number(l.slice(6)));
        else said = l;
      });
      const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      let opening: Promise<PgJournal> | undefined;
      const within = <T>(p: Promise<T>, what: string): Promise<T> =>
        Promise.race([
          p,
          sleep(3000).then(() => {
            throw new Error(`${what}: still waiting after 3 s`);
          }),
        ]);
      try {
        await isReady;
        assert.ok(await waitFor(() => acked.length >= 20, 10_000), 'the first writer commits');
        child.kill('SIGSTOP');
        await sleep(200);
        const seen = acked.length;
        // The next writer (a new leader) opens, takes in what landed and writes: none of it held up
        // by the paused one (bounded: a lock it held would hold these up for as long as it sleeps).
        opening = PgJournal.open(urlOf('paused'));
        const next = await within(opening, 'the next writer opens while the first is paused');
        next.append({ migrationId: 'p', at: 1e6, phase: 'temp-ip', kind: 'step', step: STEP.addAddress });
        await within(next.flushed(), 'the next writer commits while the first is paused');
        child.kill('SIGCONT');
        assert.equal(await exited, 0);
        assert.equal(said, 'lost JOURNAL_LOST', 'the woken writer finds its journal lost');
        assert.equal(next.lost, false);
        next.append({ migrationId: 'p', at: 1e6 + 1, phase: 'temp-ip', kind: 'note' });
        await next.flushed();
        await next.refresh();
        const seqs = new Set(next.entries('p').map((e) => e.seq));
        for (const s of acked.slice(0, seen)) assert.ok(seqs.has(s), `acknowledged entry ${s} is kept`);
        assert.equal(next.entries('p').at(-2)?.step, STEP.addAddress);
      } finally {
        // First the paused writer, whose locks may hold up what closing waits for.
        child.kill('SIGCONT');
        child.kill('SIGKILL');
        await opening?.then((j) => j.close()).catch(() => undefined);
      }
    });

    it('gives up after giveUpAfterMs, stops on its signal, and fails at once on a refused password', async () => {
      const nowhere = `postgres://ferry:s3cret-pw@127.0.0.1:${await freePort('127.0.0.1')}/ferry`;
      await assert.rejects(
        PgJournal.open(nowhere, { retryInitialMs: 50, giveUpAfterMs: 300 }),
        (e) =>
          isFerryError(e, 'JOURNAL_UNREACHABLE') &&
          /cannot reach PostgreSQL at 127\.0\.0\.1:\d+/.test(e.message) &&
          !e.message.includes('s3cret'),
      );
      const stop = new AbortController();
      await assert.rejects(
        PgJournal.open(nowhere, {
          retryInitialMs: 50,
          signal: stop.signal,
          onRetry: () => stop.abort(new Error('stopped by the test')),
        }),
        /stopped by the test/,
      );
      const bad = server.url.replace(`:${server.password}@`, ':wrong-pw-42@');
      let tries = 0;
      await assert.rejects(
        PgJournal.open(bad, { onRetry: () => tries++ }),
        (e) =>
          isFerryError(e, 'JOURNAL_OPEN') &&
          /password authentication failed/.test(e.message) &&
          !e.message.includes('wrong-pw-42'),
      );
      assert.equal(tries, 0, 'a refused password is not retried');
    });
  },
);

describe('Journal on SQLite', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-journal-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

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
