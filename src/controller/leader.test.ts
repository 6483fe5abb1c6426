/**
 * The leader lease against a private PostgreSQL (one server for the file): one leader among
 * several, renewal keeping its token, takeover once the lease expired by PostgreSQL's clock, a
 * paused leader stepping down by its own clock, the token growing at every change of holder,
 * and the timers doing all that by themselves.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LeaderLease, type LeaderLeaseOptions } from './leader.js';
import { postgresInstalled, startPostgres, type PostgresServer } from '../../test/postgres.js';
import { sleep, waitFor } from '../common/time.js';
import { isFerryError } from '../common/errors.js';
import { PgJournal } from '../migration/index.js';
import { samplePlan } from '../../test/plans.js';

const TTL = 900;

describe(
  'leader lease',
  { skip: postgresInstalled ? false : 'PostgreSQL is not installed (Debian package postgresql)' },
  () => {
    let pgs: PostgresServer;
    const leases: LeaderLease[] = [];
    let name = 0;

    before(async () => {
      pgs = await startPostgres();
    });
    after(async () => {
      await Promise.all(leases.map((l) => l.close()));
      await pgs?.stop();
    });

    /** A lease on its own row (each test its own name), driven by hand unless `autoRenew`. */
    function lease(id: string, row: string, opts: Partial<LeaderLeaseOptions> = {}): LeaderLease {
      const l = new LeaderLease({
        url: pgs.url,
        id,
        advertise: `http://127.0.0.1:7${id.length}00/${id}`,
        ttlMs: TTL,
        name: row,
        autoRenew: false,
        ...opts,
      });
      leases.push(l);
      return l;
    }

    function roles(l: LeaderLease, log: string[]): void {
      l.on('elected', (t) => log.push(`${l.id} elected ${t}`));
      l.on('deposed', (r) => log.push(`${l.id} deposed: ${r}`));
    }

    test('of several racing at once exactly one leads; the others see it, its URL and token', async () => {
      const row = `race-${name++}`;
      const all = ['a', 'b', 'c', 'd', 'e'].map((id) => lease(id, row));
      await Promise.all(all.map((l) => l.start()));
      const leaders = all.filter((l) => l.isLeader);
      assert.equal(leaders.length, 1);
      const leader = leaders[0]!;
      assert.equal(leader.fence(), 1n);
      for (const l of all) {
        await l.tick();
        const s = l.status();
        assert.equal(s.role, l === leader ? 'leader' : 'follower');
        assert.equal(s.leader?.id, leader.id);
        assert.equal(s.leader?.url, leader.advertise);
        assert.equal(s.leader?.token, '1');
        assert.ok(Date.parse(s.leader!.expiresAt) > Date.now() - 1000);
        if (l !== leader) assert.equal(l.fence(), undefined, 'a controller that never led sends no token');
      }
    });

    test('renewal keeps the token; a dead leader (no renewal) is replaced after the expiry with a higher token', async () => {
      const row = `takeover-${name++}`;
      const log: string[] = [];
      const a = lease('a', row);
      const b = lease('b', row);
      roles(a, log);
      roles(b, log);
      await a.start();
      await b.start();
      assert.ok(a.isLeader && !b.isLeader);
      // Renewed within the ttl, three times over: the same tenure.
      for (let i = 0; i < 4; i++) {
        await sleep(TTL / 3);
        await a.tick();
        await b.tick();
      }
      assert.ok(a.isLeader && !b.isLeader);
      assert.equal(a.fence(), 1n);
      // a stops renewing (dead): before the expiry nobody takes over, after it b does.
      await b.tick();
      assert.ok(!b.isLeader);
      await sleep(TTL + 100);
      await b.tick();
      assert.ok(b.isLeader);
      assert.equal(b.fence(), 2n);
      assert.equal(b.status().leader?.id, 'b');
      // a wakes: its own clock tells it first, and its token stays the old one for the agents to refuse.
      await a.tick();
      assert.ok(!a.isLeader);
      assert.equal(a.fence(), 1n);
      assert.match(
        log.find((l) => l.startsWith('a deposed'))!,
        /not renewed within 900 ms by this controller's own clock/,
      );
      assert.deepEqual(
        log.filter((l) => l.includes('elected')),
        ['a elected 1', 'b elected 2'],
      );
    });

    test('a paused leader steps down by its own clock while PostgreSQL still shows its lease; it gives the lease back', async () => {
      const row = `paused-${name++}`;
      let skew = 0;
      const clock = () => performance.now() + skew;
      const a = lease('a', row, { clock });
      const b = lease('b', row);
      const log: string[] = [];
      roles(a, log);
      await a.start();
      await b.start();
      assert.ok(a.isLeader);
      // The process was stopped for longer than the ttl (its monotonic clock jumped); no renewal ran.
      skew = TTL + 1;
      await a.tick();
      assert.ok(!a.isLeader);
      assert.match(log.at(-1)!, /a deposed: the lease was not renewed within 900 ms/);
      // It gave the lease back: b takes over at once, not one ttl later, with a new token.
      assert.ok(
        await waitFor(async () => {
          await b.tick();
          return b.isLeader;
        }, TTL / 2),
      );
      assert.equal(b.fence(), 2n);
      // a stays out of the race for a ttl, then follows.
      await a.tick();
      assert.ok(!a.isLeader);
      assert.equal(a.status().leader?.id, 'b');
    });

    test('stepDown (fenced, journal lost) and a clean close hand over at once; the token only grows', async () => {
      const row = `handover-${name++}`;
      // a's monotonic clock can be stopped: PostgreSQL's expiry then comes before a's own deadline.
      const frozen: { at?: number } = {};
      const a = lease('a', row, { clock: () => frozen.at ?? performance.now() });
      const b = lease('b', row);
      const log: string[] = [];
      roles(a, log);
      await a.start();
      await b.start();
      const tokens = [a.fence()!];
      a.stepDown('fenced by agent origin: token 1 < 2');
      assert.ok(!a.isLeader, 'a stepped down');
      assert.ok(
        await waitFor(async () => {
          await b.tick();
          return b.isLeader;
        }, TTL / 2),
        'b took over at once',
      );
      tokens.push(b.fence()!);
      await b.close();
      await sleep(TTL); // a's quiet time after stepping down
      await a.tick();
      assert.ok(a.isLeader, 'a took the lease b gave back');
      tokens.push(a.fence()!);
      // The same holder taking the lease again after PostgreSQL expired it is a new tenure too.
      frozen.at = performance.now();
      await sleep(TTL + 100);
      await a.tick();
      assert.ok(a.isLeader, 'a leads again');
      tokens.push(a.fence()!);
      assert.match(
        log.at(-2)!,
        /a deposed: the lease expired before it was renewed; taken again with token 4/,
      );
      assert.equal(log.at(-1), 'a elected 4');
      assert.deepEqual(tokens, [1n, 2n, 3n, 4n]);
    });

    test('with its timers, the leader renews by itself and a follower takes over by itself after a dead leader stopped renewing', async () => {
      const row = `timers-${name++}`;
      const a = lease('a', row, { autoRenew: true });
      const b = lease('b', row, { autoRenew: true });
      await a.start();
      await b.start();
      await sleep(TTL * 2);
      assert.ok(a.isLeader && !b.isLeader, 'renewed by the timer');
      // a dies without giving the lease back: its timers stop, its row stays until the expiry.
      (a as unknown as { timers: NodeJS.Timeout[] }).timers.forEach((t) => clearInterval(t));
      assert.ok(!b.isLeader);
      assert.ok(await waitFor(() => b.isLeader, TTL * 3), 'b took over');
      assert.equal(b.fence(), 2n);
    });

    test('the journal takes writes from the lease holder only: a controller that never led, and a leader whose lease another took, are refused and write nothing', async () => {
      const row = `journal-${name++}`;
      const a = lease('a', row);
      const b = lease('b', row);
      const fenced = async (l: LeaderLease): Promise<PgJournal> => {
        const j = await PgJournal.open(pgs.url);
        j.on('lost', () => undefined);
        j.fenceWith({ lease: row, holder: l.id, token: () => l.fence() });
        return j;
      };
      const plan = (id: string) => samplePlan(id, 'fenced.example.');
      await a.start();
      await b.start();
      assert.ok(a.isLeader && !b.isLeader);
      const ja = await fenced(a);
      const jb = await fenced(b);
      try {
        ja.create(plan(`${row}-1`));
        await ja.flushed();
        jb.create(plan(`${row}-never`));
        await assert.rejects(
          jb.flushed(),
          (e) =>
            isFerryError(e, 'JOURNAL_LOST') &&
            /b last led with token none, the lease is a's with token 1/.test(e.message),
        );
        // a stops renewing (paused); b takes the lease once it expired by PostgreSQL's clock.
        await sleep(TTL + 200);
        await b.tick();
        assert.ok(b.isLeader);
        assert.equal(b.fence(), 2n);
        // a, not knowing yet, writes what it had appended: refused, not mixed into b's journal.
        ja.append({
          migrationId: `${row}-1`,
          at: Date.now(),
          phase: 'temp-ip',
          kind: 'note',
          detail: { stale: true },
        });
        await assert.rejects(
          ja.flushed(),
          (e) =>
            isFerryError(e, 'JOURNAL_LOST') &&
            /a last led with token 1, the lease is b's with token 2/.test(e.message),
        );
        const jb2 = await fenced(b);
        try {
          assert.equal(jb2.get(`${row}-never`), undefined, 'nothing of the refused creation landed');
          assert.deepEqual(
            jb2.entries(`${row}-1`).map((e) => e.kind),
            ['enter'],
            'the stale note did not land',
          );
          jb2.append({ migrationId: `${row}-1`, at: Date.now(), phase: 'temp-ip', kind: 'note' });
          await jb2.flushed();
        } finally {
          await jb2.close();
        }
      } finally {
        await ja.close();
        await jb.close();
      }
    });

    test('bad options and an unreachable PostgreSQL are clear errors without the password', async () => {
      assert.throws(
        () => new LeaderLease({ url: pgs.url, id: 'has space', advertise: 'http://x' }),
        (e: unknown) => isFerryError(e, 'LEADER_OPTIONS'),
      );
      assert.throws(
        () => new LeaderLease({ url: pgs.url, id: 'a', advertise: 'http://x', ttlMs: 10 }),
        /leader.ttl must be between/,
      );
      const dead = new LeaderLease({
        url: `postgres://ferry:s3cret@127.0.0.1:1/ferry`,
        id: 'a',
        advertise: 'http://x',
        autoRenew: false,
      });
      await assert.rejects(dead.start(), (e: unknown) => {
        assert.ok(isFerryError(e, 'JOURNAL_OPEN'));
        assert.match(e.message, /127\.0\.0\.1:1/);
        assert.doesNotMatch(e.message, /s3cret/);
        return true;
      });
      await dead.close();
    });
  },
);
