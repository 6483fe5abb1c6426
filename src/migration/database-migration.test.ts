/**
 * The orchestrator moving a web site's databases, with the agents simulated at the HostDriver
 * boundary: the sandbox's in-process agents serve and sync the site (a web site's gate, bundle and
 * finish reduced to the built-in app's calls), and each site's databases live in memory here: who
 * accepts the site's writes, the channel's applied position, a catch-up that can be stalled. Every
 * call checks that never both servers accept the site's writes. (A test against real MariaDB
 * servers through the agents' API is the end-to-end one.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { FerryError, isFerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';
import type { WebSite } from '../agent/webconfig/model.js';
import { Controller, type ControllerEvent } from '../controller/index.js';
import { Sandbox } from '../sandbox/index.js';
import {
  DEFAULT_TIMINGS,
  EmbeddedDnsProvider,
  Journal,
  Orchestrator,
  STEP,
  describeDatabases,
  type DatabaseDeclaration,
  type DatabaseSource,
  type HostDriver,
  type MigrationPlan,
  type SiteDatabasesPlan,
} from './index.js';
import { estimateCopyInHoldMs } from './ports.js';

const SECRET = `pw-${Math.random().toString(36).slice(2)}-not-for-journals`;

/** One site's databases on both servers. */
class SiteDb {
  /** Who accepts the site's writes now. */
  readonly writers = new Set<'origin' | 'target'>(['origin']);
  /** The origin's last write (a GTID sequence number); the app writes while the origin is a writer. */
  originSeq = 100;
  channel: { applied: number } | null = null;
  copied = false;
  sourceOpen = false;
  /** Take-overs that will time out (the channel does not apply while one is waiting). */
  stalled = 0;
  /** After the copy, the channel reports seconds behind for this long (the backlog of the copy). */
  backlogMs = 0;
  lagUntil = 0;
  tookOver: { waitedMs: number; writerPosition: string } | null = null;
  /** A rollback after the switch: the reverse source (on the target) and channel (on the origin). */
  reverse: { sourceOpen: boolean; address?: string; channelFrom?: string; tookOver: boolean } = {
    sourceOpen: false,
    tookOver: false,
  };
  readonly violations: string[] = [];
  declared: DatabaseDeclaration[] | undefined;
  /** The origin's binary log is off: planned as copy-in-hold within copyInHoldMaxBytes, else refused. */
  binlogOff = false;
  /** Copies inside the hold that will fail. */
  failCopies = 0;

  constructor(readonly plan: SiteDatabasesPlan) {}

  /** The invariant, checked on every call: at no instant do both servers accept writes. */
  check(where: string): void {
    if (this.writers.size > 1) this.violations.push(`two writers at ${where}`);
  }

  tick(): void {
    if (this.writers.has('origin')) this.originSeq++;
    if (this.channel && this.stalled === 0) this.channel.applied = this.originSeq;
    this.check('tick');
  }
}

type Call = { at: number; host: string; method: string; args: unknown[] };

/** The simulated database methods of one side, over `dbs` (by domain; migration ids learnt on use). */
function databaseMethods(
  role: 'origin' | 'target',
  dbs: Map<string, SiteDb>,
  byMigration: Map<string, SiteDb>,
  opts: { replicaAddress: string; noCheck?: Set<string> },
): Partial<HostDriver> {
  const of = (domain: string, id?: string): SiteDb => {
    const d = dbs.get(domain.toLowerCase().replace(/\.$/, ''));
    if (!d) throw new FerryError('DB_MISSING', `no database for ${domain}`);
    if (id) byMigration.set(id, d);
    return d;
  };
  const byId = (id: string): SiteDb => {
    const d = byMigration.get(id);
    if (!d) throw new FerryError('DB_MISSING', `no channel ${id}`);
    return d;
  };
  if (role === 'origin')
    return {
      planDatabases: async (domain, declared, planOpts) => {
        const d = dbs.get(domain.toLowerCase().replace(/\.$/, ''));
        if (d) d.declared = declared;
        if (d?.binlogOff) {
          const bytes = d.plan.move.reduce((n, m) => n + m.bytes, 0);
          if (!planOpts?.copyInHoldMaxBytes || bytes > planOpts.copyInHoldMaxBytes)
            throw new FerryError('DB_BINLOG_OFF', "the origin's binary log is off. What to do: set log_bin");
          return {
            ...structuredClone(d.plan),
            mode: 'copy-in-hold' as const,
            estimatedPauseMs: estimateCopyInHoldMs(bytes),
            binlogProblem: "the origin's binary log is off (log_bin=OFF)",
          };
        }
        return d ? structuredClone(d.plan) : { move: [], leftInPlace: [] };
      },
      openDatabaseSource: async (id, domain) => {
        const d = of(domain, id);
        d.check('openDatabaseSource');
        d.sourceOpen = true;
        return { host: '127.0.0.1', port: 3306, user: `ferry_${id}`, password: SECRET };
      },
      freezeDatabases: async (id, domain) => {
        const d = of(domain, id);
        d.writers.delete('origin');
        d.check('freezeDatabases');
        return { position: `0-11-${d.originSeq}` };
      },
      thawDatabases: async (id, domain) => {
        const d = of(domain, id);
        if (d.writers.has('target')) d.violations.push('origin thawed while the target writes');
        d.writers.add('origin');
        d.check('thawDatabases');
      },
      closeDatabaseSource: async (id) => {
        const d = byId(id);
        d.sourceOpen = false;
      },
      startDatabaseChannel: async (id, domain, source, position) => {
        const d = of(domain, id);
        if (source.password !== SECRET || !d.reverse.sourceOpen)
          throw new FerryError('DB_AUTH', 'the source is not the one opened');
        d.reverse.channelFrom ??= position;
      },
      takeOverDatabases: async (id, domain, position) => {
        const d = of(domain, id);
        if (d.writers.has('target')) d.violations.push('reverse take-over while the target writes');
        assert.ok(d.reverse.channelFrom, 'the reverse channel runs');
        assert.match(position, /^0-12-/);
        d.writers.add('origin');
        d.reverse.tookOver = true;
        d.check('takeOverDatabases (origin)');
        return { waitedMs: 1, writerPosition: `0-11-${d.originSeq}` };
      },
    };
  return {
    freezeDatabases: async (id, domain) => {
      const d = of(domain, id);
      d.writers.delete('target');
      d.check('freezeDatabases (target)');
      return { position: `0-12-${d.originSeq}` };
    },
    thawDatabases: async (id, domain) => {
      const d = of(domain, id);
      if (d.writers.has('origin')) d.violations.push('target thawed while the origin writes');
      d.writers.add('target');
    },
    openDatabaseSource: async (id, domain, replicaAddress) => {
      const d = of(domain, id);
      d.reverse.sourceOpen = true;
      d.reverse.address = replicaAddress;
      return { host: '127.0.0.2', port: 3306, user: `ferry_${id}`, password: SECRET };
    },
    closeDatabaseSource: async (id) => {
      byId(id).reverse.sourceOpen = false;
    },
    checkDatabases: async (domain) => {
      if (opts.noCheck?.has(domain.replace(/\.$/, '')))
        throw new FerryError('DB_EXISTS', `the target has a database named like ${domain}'s`);
      return { replicaAddress: opts.replicaAddress };
    },
    copyDatabases: async (id, domain, source: DatabaseSource, plan) => {
      const d = of(domain, id);
      if (source.password !== SECRET || !d.sourceOpen)
        throw new FerryError('DB_AUTH', 'the source is not the one opened');
      assert.deepEqual(
        plan.move.map((m) => m.name),
        d.plan.move.map((m) => m.name),
      );
      if (plan.mode === 'copy-in-hold') {
        if (d.writers.has('origin')) d.violations.push('copied inside the hold while the origin writes');
        if (d.failCopies > 0) {
          d.failCopies--;
          throw new FerryError(
            'DB_COPY_FAILED',
            'restoring on the target failed: ERROR 1114: the table is full',
          );
        }
        d.copied = true;
        d.check('copyDatabases (in hold)');
        return { bytes: 4096, ms: 7 };
      }
      d.copied = true;
      d.channel ??= { applied: d.originSeq };
      d.lagUntil = Date.now() + d.backlogMs;
      d.check('copyDatabases');
      return { bytes: 4096, ms: 5 };
    },
    databaseLag: async (id) => {
      const d = byId(id);
      const behind = d.channel ? d.originSeq - d.channel.applied : 0;
      return { seconds: d.stalled || Date.now() < d.lagUntil ? 3 : 0, transactions: behind, error: '' };
    },
    takeOverDatabases: async (id, domain, position, timeoutMs) => {
      const d = of(domain, id);
      if (d.tookOver) return d.tookOver;
      if (d.binlogOff) {
        if (!d.copied) d.violations.push('take-over without a copy');
        if (d.writers.has('origin')) d.violations.push('take-over while the origin writes');
        d.writers.add('target');
        d.tookOver = { waitedMs: 0, writerPosition: '0-12-1' };
        return d.tookOver;
      }
      const seq = Number(position.split('-').pop());
      if (d.writers.has('origin')) d.violations.push('take-over while the origin writes');
      if (d.stalled > 0) {
        await sleep(timeoutMs);
        d.stalled--;
        throw new FerryError('DB_CATCHUP_TIMEOUT', `the target applied ${d.channel?.applied} of ${seq}`);
      }
      const start = Date.now();
      while (!d.channel || d.channel.applied < seq) {
        if (Date.now() - start > timeoutMs) throw new FerryError('DB_CATCHUP_TIMEOUT', 'not reached');
        await sleep(10);
      }
      d.channel = null;
      d.writers.add('target');
      d.check('takeOverDatabases');
      d.tookOver = { waitedMs: Date.now() - start, writerPosition: `0-12-${seq}` };
      return d.tookOver;
    },
    dropDatabaseCopy: async (id, domain) => {
      const d = of(domain, id);
      d.writers.delete('target');
      d.channel = null;
      d.copied = false;
      d.tookOver = null;
    },
  };
}

/** What the builtin agent's site calls make of a web site's gate, bundle and finish. */
function webMethods(inner: HostDriver, role: 'origin' | 'target', port: number): Partial<HostDriver> {
  const at = { file: '/etc/nginx/sites-enabled/site.conf', line: 1 };
  const site = (domain: string): WebSite => ({
    server: 'nginx',
    at,
    names: [domain.replace(/\.$/, '')],
    defaultServer: false,
    listens: [{ address: null, port, tls: false, at }],
    paths: [],
    application: 'php-fpm',
    apps: [],
    certificates: [],
    user: null,
    group: null,
    movable: true,
    refusals: [],
  });
  // The built-in agent reads no web server: the simulated site is the only one it knows.
  const none = { webSites: undefined, checkWebSite: undefined };
  if (role === 'origin')
    return {
      ...none,
      inspectWebSite: async (domain) =>
        (await inner.hasSite(`${domain.replace(/\.$/, '')}.`)) ? site(domain) : null,
      gateWebSite: async () => undefined,
      exportWebSite: async (domain) => ({ domain }),
      ungateWebSite: async () => undefined,
      finishWebSite: async (domain) => inner.removeSite(domain),
    };
  return {
    ...none,
    installWebSite: async (bundle) => {
      if (!(await inner.hasSite(bundle.domain))) await inner.addSite(bundle.domain, 'readonly');
    },
    uninstallWebSite: async (domain) => {
      if (await inner.hasSite(domain)) await inner.removeSite(domain);
    },
    finishWebSite: async () => undefined,
  };
}

/** `inner` with `extra` methods, every call logged and checked against the databases' invariant. */
function simulated(
  inner: HostDriver,
  extra: Partial<HostDriver>,
  calls: Call[],
  dbs: Map<string, SiteDb>,
  refuse: (method: string, args: unknown[]) => boolean = () => false,
): HostDriver {
  return new Proxy(inner, {
    get(target, prop) {
      const own = prop in extra;
      const v = own
        ? (extra as Record<string | symbol, unknown>)[prop]
        : (Reflect.get(target, prop, target) as unknown);
      if (typeof v !== 'function') return v;
      return async (...args: unknown[]) => {
        calls.push({ at: Date.now(), host: inner.id, method: String(prop), args });
        for (const [d, db] of dbs) db.check(`${inner.id}.${String(prop)} (${d})`);
        if (refuse(String(prop), args))
          throw new FerryError('AGENT_DOWN', `${String(prop)} refused by the test`);
        return (v as (...a: unknown[]) => unknown).apply(own ? extra : target, args);
      };
    },
  });
}

describe('orchestrator: a web site with databases (agents simulated at the HostDriver boundary)', () => {
  const sites = [
    'shop.example.',
    'back.example.',
    'noswitch.example.',
    'retry.example.',
    'stall.example.',
    'crash.example.',
    'crashed.example.',
    'paused.example.',
    'plain.example.',
    'taken.example.',
    'hold.example.',
    'holdfail.example.',
    'holdoff.example.',
  ];
  const sb = new Sandbox({
    dnsAddress: '127.0.93.53',
    dnsPort: 0,
    httpPort: 0,
    originIp: '127.0.93.1',
    targetIp: '127.0.93.2',
    tempIp: '127.0.93.100',
    sites,
    ttl: 1,
    quietWindowMs: 300,
    dnsTempCapMs: 3000,
    drainCapMs: 3000,
  });
  const calls: Call[] = [];
  const events: ControllerEvent[] = [];
  const dbs = new Map<string, SiteDb>();
  const byMigration = new Map<string, SiteDb>();
  const plan = (name: string): SiteDatabasesPlan => ({
    move: [{ name, bytes: 3 * 1024 * 1024, users: [name], source: '/var/www/wp-config.php:23' }],
    leftInPlace: [
      {
        name: 'analytics',
        host: 'db.example:3306',
        source: 'ferry.yaml',
        reason: 'on a host both servers reach',
      },
    ],
    originVersion: '10.11.6-MariaDB',
  });
  let journal: Journal;
  let ctl: Controller;
  let origin: HostDriver;
  let target: HostDriver;
  let ticker: NodeJS.Timeout;
  const noCheck = new Set<string>();
  const broken = { back: true };
  const timings = { ttl: 1, quietWindowMs: 300, dnsTempCapMs: 3000, drainCapMs: 3000, pollMs: 50 };

  before(async () => {
    await sb.start();
    for (const d of ['shop', 'back', 'noswitch', 'retry', 'stall', 'crash', 'crashed', 'paused', 'taken'])
      dbs.set(`${d}.example`, new SiteDb(plan(`wp_${d}`)));
    for (const d of ['hold', 'holdfail', 'holdoff']) {
      const sdb = new SiteDb(plan(`wp_${d}`));
      sdb.binlogOff = true;
      dbs.set(`${d}.example`, sdb);
    }
    ticker = setInterval(() => dbs.forEach((d) => d.tick()), 5);
    const port = sb.httpPort;
    origin = simulated(
      sb.origin,
      {
        ...webMethods(sb.origin, 'origin', port),
        ...databaseMethods('origin', dbs, byMigration, { replicaAddress: '' }),
      },
      calls,
      dbs,
      // back.example's redirect cannot be pointed at the target: it fails after the switch.
      (method, args) => method === 'setRedirectUpstream' && args[0] === 'mig-back' && broken.back,
    );
    target = simulated(
      sb.target,
      {
        ...webMethods(sb.target, 'target', port),
        ...databaseMethods('target', dbs, byMigration, { replicaAddress: sb.opts.targetIp, noCheck }),
      },
      calls,
      dbs,
      // The switch of noswitch.example fails right after its take-over.
      (method, args) => method === 'setSiteMode' && args[0] === 'noswitch.example.' && args[1] === 'serve',
    );
    journal = new Journal(join(sb.dataDir, 'db-journal.sqlite'), { durability: 'process' });
    ctl = new Controller({
      dns: new EmbeddedDnsProvider({ server: sb.dns }),
      servers: [
        {
          id: 'origin',
          driver: origin,
          sharedIps: [sb.opts.originIp],
          tempIpPool: ['127.0.93.100', '127.0.93.101'],
        },
        { id: 'target', driver: target, sharedIps: [sb.opts.targetIp], tempIpPool: [] },
      ],
      sites: sites.map((domain) => ({
        domain,
        server: 'origin',
        ports: [port],
        kind: 'web' as const,
        parity: { http: [{ path: '/healthz' }] },
        ...(domain === 'shop.example.' ? { databases: [{ name: 'wp_shop', users: ['wp_shop'] }] } : {}),
        database: {
          catchUpTimeoutMs: 300,
          catchUpAttempts: 2,
          retryDelayMs: 400,
          lagWaitMs: 300,
          ...(domain.startsWith('hold.') || domain.startsWith('holdfail.')
            ? { copyInHoldMaxBytes: 10 * 1024 * 1024 }
            : {}),
        },
      })),
      journal,
      defaults: timings,
      retry: { attempts: 2, baseDelayMs: 20, maxDelayMs: 50, callTimeoutMs: 3000 },
    });
    ctl.on('event', (e) => events.push(e));
  });

  after(async () => {
    clearInterval(ticker);
    await ctl?.close();
    journal?.close();
    await sb.stop();
  });

  const db = (domain: string) => dbs.get(domain)!;
  const mine = (id: string) =>
    calls.filter((c) =>
      c.args.some((a) => [id, `mig-${id}`, `${id}.example.`, `${id}.example`].includes(a as string)),
    );

  it('refuses at planning a site whose databases the target cannot take, before a migration exists', async () => {
    noCheck.add('taken.example');
    await assert.rejects(
      ctl.startMigration({ domain: 'taken.example.', to: 'target', id: 'taken' }),
      (e: unknown) => isFerryError(e, 'DB_EXISTS'),
    );
    await assert.rejects(
      ctl.previewMigration({ domain: 'taken.example.', to: 'target' }),
      (e: unknown) => isFerryError(e, 'DB_EXISTS'),
      'a preview meets the same refusal',
    );
    assert.throws(
      () => ctl.migration('taken'),
      (e: unknown) => isFerryError(e, 'MIGRATION_NOT_FOUND'),
    );
    assert.equal(ctl.listSites().find((s) => s.domain === 'taken.example.')?.migration, null);
    assert.equal(db('taken.example').sourceOpen, false);
  });

  it('copies after the initial sync, catches up inside the hold in order, publishes the lag, closes the source at the end', async () => {
    // The copy leaves a backlog the channel works off for a while: the hold waits for it (within lagWaitMs).
    db('shop.example').backlogMs = 250;
    const rec0 = await ctl.startMigration({ domain: 'shop.example.', to: 'target', id: 'shop' });
    // The plan lists what moves and what stays, with why.
    const p = rec0.plan.web?.databasePlan;
    assert.deepEqual(
      p?.move.map((m) => [m.name, m.bytes, m.users]),
      [['wp_shop', 3 * 1024 * 1024, ['wp_shop']]],
    );
    assert.deepEqual(
      p?.leftInPlace.map((l) => [l.name, l.reason]),
      [['analytics', 'on a host both servers reach']],
    );
    assert.equal(p?.replicaAddress, sb.opts.targetIp);
    assert.deepEqual(describeDatabases(p!), [
      'moves: wp_shop (3.0 MiB, users wp_shop; from /var/www/wp-config.php:23)',
      'left in place: analytics on db.example:3306 (on a host both servers reach; from ferry.yaml)',
    ]);
    const rec = await ctl.wait('shop');
    assert.equal(rec.phase, 'completed', rec.error);
    const d = db('shop.example');
    assert.deepEqual(d.violations, []);
    assert.deepEqual([...d.writers], ['target'], 'the target is the only writer');
    assert.equal(d.sourceOpen, false, "the migration's replication user is gone");
    assert.deepEqual(
      d.declared,
      [{ name: 'wp_shop', users: ['wp_shop'] }],
      'the declarations reach the origin',
    );
    // Order: copy after the initial sync; inside the hold: idle, final sync, freeze, take-over, then serve.
    const seq = mine('shop').map(
      (c) =>
        `${c.host}.${c.method}${c.method === 'setSiteMode' ? `(${String(c.args[1] && typeof c.args[1] === 'object' ? 'proxy' : c.args[1])})` : ''}`,
    );
    const at = (s: string, from = 0) => {
      const i = seq.indexOf(s, from);
      assert.ok(i >= 0, `${s} in ${seq.join(' ')}`);
      return i;
    };
    const copy = at('target.copyDatabases');
    assert.ok(at('origin.openDatabaseSource') < copy);
    assert.ok(at('origin.syncSite') < at('origin.openDatabaseSource'), 'the copy follows the initial sync');
    const hold = at('origin.setSiteMode(hold)');
    const holdCall = mine('shop')[hold]!;
    assert.ok(
      holdCall.at >= d.lagUntil,
      `the hold began ${d.lagUntil - holdCall.at} ms before the channel was 0 seconds behind`,
    );
    const idle = at('origin.waitSiteIdle', hold);
    const finalSync = at('origin.syncSite', idle);
    const freeze = at('origin.freezeDatabases', finalSync);
    const take = at('target.takeOverDatabases', freeze);
    const serve = at('target.setSiteMode(serve)', take);
    const release = at('origin.releaseRedirect', serve);
    assert.ok(
      hold < idle &&
        idle < finalSync &&
        finalSync < freeze &&
        freeze < take &&
        take < serve &&
        serve < release,
    );
    assert.ok(at('origin.closeDatabaseSource') > release);
    // Events: copied, the lag while replicating, frozen, caught up.
    const dbEvents = events.filter((e) => e.migrationId === 'shop' && e.type === 'database');
    const states = dbEvents.map((e) => e.data.state);
    for (const s of ['copied', 'lag', 'frozen', 'caught-up'])
      assert.ok(states.includes(s), `${s} in ${states.join(',')}`);
    const lag = dbEvents.find((e) => e.data.state === 'lag')!.data.lag as { transactions: number | null };
    assert.equal(typeof lag.transactions, 'number');
    const steps = journal.entries('shop').map((e) => e.step);
    for (const s of [
      STEP.dbPlan,
      STEP.dbOpenSource,
      STEP.dbCopy,
      STEP.dbFreezeOrigin,
      STEP.dbTakeOver,
      STEP.dbCloseSource,
    ])
      assert.ok(steps.includes(s), s);
  });

  it('a completed migration with databases is not rolled back (its migration users are gone): a clear refusal, nothing changes', async () => {
    await assert.rejects(ctl.rollback('shop'), (e: unknown) => isFerryError(e, 'DB_ROLLBACK_AFTER_SWITCH'));
    assert.equal(ctl.migration('shop').phase, 'completed');
    assert.deepEqual([...db('shop.example').writers], ['target']);
  });

  it('binlog off, no copyInHoldMaxBytes: refused at planning, saying how to enable the binlog; no migration exists', async () => {
    await assert.rejects(
      ctl.startMigration({ domain: 'holdoff.example.', to: 'target', id: 'holdoff' }),
      (e: unknown) => isFerryError(e, 'DB_BINLOG_OFF') && /set log_bin/.test(e.message),
    );
    assert.throws(
      () => ctl.migration('holdoff'),
      (e: unknown) => isFerryError(e, 'MIGRATION_NOT_FOUND'),
    );
    assert.equal(db('holdoff.example').sourceOpen, false);
  });

  it('copy-in-hold: the plan reports the pause; inside the hold freeze, copy, take-over, then serve; no channel; no rollback after the switch', async () => {
    // Before anything starts, a preview (`ferry migrate --dry-run`) reports the same plan and pause.
    const preview = await ctl.previewMigration({ domain: 'hold.example.', to: 'target' });
    assert.equal(preview.databases?.mode, 'copy-in-hold');
    assert.equal(preview.databases?.estimatedPauseMs, 1000 + 375);
    assert.equal(
      ctl.listSites().find((s) => s.domain === 'hold.example.')?.migration,
      null,
      'the preview started nothing',
    );
    assert.equal(db('hold.example').sourceOpen, false, 'and made no replication user');
    const rec0 = await ctl.startMigration({ domain: 'hold.example.', to: 'target', id: 'hold' });
    const p = rec0.plan.web?.databasePlan;
    assert.equal(p?.mode, 'copy-in-hold');
    assert.equal(p?.estimatedPauseMs, 1000 + 375, '3 MiB at 8 MiB/s plus 1 s');
    assert.match(
      describeDatabases(p!)[0]!,
      /^copy inside the hold \(the origin's binary log is off \(log_bin=OFF\)\): the site pauses about 1\.4 s while 3\.0 MiB are copied/,
    );
    const rec = await ctl.wait('hold');
    assert.equal(rec.phase, 'completed', rec.error);
    const d = db('hold.example');
    assert.deepEqual(d.violations, []);
    assert.deepEqual([...d.writers], ['target']);
    assert.equal(d.sourceOpen, false);
    const seq = mine('hold').map(
      (c) => `${c.host}.${c.method}${c.method === 'setSiteMode' && c.args[1] === 'serve' ? '(serve)' : ''}`,
    );
    const at = (x: string, from = 0) => {
      const i = seq.indexOf(x, from);
      assert.ok(i >= 0, `${x} in ${seq.join(' ')}`);
      return i;
    };
    const hold = at('origin.setSiteMode', at('origin.openDatabaseSource'));
    const freeze = at('origin.freezeDatabases', hold);
    const copy = at('target.copyDatabases');
    const take = at('target.takeOverDatabases', copy);
    const serve = at('target.setSiteMode(serve)', take);
    assert.ok(hold < freeze && freeze < copy && copy < take && take < serve, seq.join(' '));
    assert.equal(seq.filter((x) => x === 'target.copyDatabases').length, 1);
    assert.ok(!seq.includes('target.databaseLag'), 'no channel, no lag to read');
    const copyCall = mine('hold').find((c) => c.method === 'copyDatabases')!;
    assert.deepEqual(copyCall.args[4], { timeoutMs: 300 }, 'the copy is bounded by catchUpTimeoutMs');
    const copied = journal.entries('hold').find((e) => e.kind === 'note' && e.step === STEP.dbCopied)
      ?.detail as Record<string, unknown>;
    assert.equal(copied.inHold, true);
    assert.equal(copied.ms, 7);
    assert.equal(copied.estimatedPauseMs, 1375);
    const states = events
      .filter((e) => e.migrationId === 'hold' && e.type === 'database')
      .map((e) => e.data.state);
    assert.ok(states.indexOf('frozen') < states.indexOf('copied'), states.join(','));
    assert.ok(states.indexOf('copied') < states.indexOf('caught-up'), states.join(','));
    await assert.rejects(
      ctl.rollback('hold'),
      (e: unknown) => isFerryError(e, 'DB_ROLLBACK_AFTER_SWITCH') && /copied inside the hold/.test(e.message),
    );
    assert.deepEqual([...d.writers], ['target']);
  });

  it('copy-in-hold: a failed copy releases back to the origin, which writes and serves again; the next cut-over succeeds', async () => {
    const d = db('holdfail.example');
    d.failCopies = 1;
    await ctl.startMigration({ domain: 'holdfail.example.', to: 'target', id: 'holdfail' });
    const rec = await ctl.wait('holdfail');
    assert.equal(rec.phase, 'completed', rec.error);
    assert.deepEqual(d.violations, []);
    assert.deepEqual([...d.writers], ['target']);
    const seq = mine('holdfail').map(
      (c) => `${c.host}.${c.method}${c.method === 'setSiteMode' && c.args[1] === 'serve' ? '(serve)' : ''}`,
    );
    const failed = seq.indexOf('target.copyDatabases');
    const thaw = seq.indexOf('origin.thawDatabases', failed);
    const originServes = seq.indexOf('origin.setSiteMode(serve)', thaw);
    const release = seq.indexOf('origin.releaseRedirect', originServes);
    const freeze2 = seq.indexOf('origin.freezeDatabases', release);
    const copy2 = seq.indexOf('target.copyDatabases', freeze2);
    const take = seq.indexOf('target.takeOverDatabases');
    assert.ok(
      failed >= 0 &&
        thaw > failed &&
        originServes > thaw &&
        release > originServes &&
        copy2 > freeze2 &&
        take > copy2,
      seq.join(' '),
    );
    const timeout = events.find(
      (e) => e.migrationId === 'holdfail' && e.type === 'database' && e.data.state === 'catchup-timeout',
    );
    assert.match(
      String(timeout?.data.message),
      /the copy inside the hold failed: restoring on the target failed/,
    );
  });

  it('a rollback after the switch replicates the databases back: the target frozen, the origin caught up, then it serves', async () => {
    await ctl.startMigration({ domain: 'back.example.', to: 'target', id: 'back' });
    let rec = await ctl.wait('back');
    assert.equal(rec.phase, 'failed', 'the redirect could not be pointed at the target');
    const d = db('back.example');
    assert.deepEqual([...d.writers], ['target'], 'the target writes after the switch');
    broken.back = false;
    rec = await ctl.rollback('back');
    assert.equal(rec.phase, 'rolled-back', rec.error);
    assert.deepEqual(d.violations, []);
    assert.deepEqual([...d.writers], ['origin']);
    assert.equal(d.reverse.address, '127.0.0.1', "the reverse source is made for the origin's address");
    assert.equal(
      d.reverse.channelFrom,
      d.tookOver?.writerPosition,
      "the channel starts at the target's take-over",
    );
    assert.equal(d.reverse.sourceOpen, false);
    assert.equal(d.sourceOpen, false, 'the forward user goes too');
    const seq = mine('back').map(
      (c) => `${c.host}.${c.method}${c.method === 'setSiteMode' && c.args[1] === 'serve' ? '(serve)' : ''}`,
    );
    const start = seq.indexOf('origin.startDatabaseChannel');
    const reverseSync = seq.indexOf('target.syncSite', start);
    const freeze = seq.indexOf('target.freezeDatabases', reverseSync);
    const take = seq.indexOf('origin.takeOverDatabases', freeze);
    const serve = seq.indexOf('origin.setSiteMode(serve)', take);
    assert.ok(
      start >= 0 && reverseSync > start && freeze > reverseSync && take > freeze && serve > take,
      seq.join(' '),
    );
    assert.equal(sb.originSites.mode('back.example.'), 'serve');
  });

  it('a switch that fails after the take-over rolls back: the target stops writing before the origin writes again', async () => {
    await ctl.startMigration({ domain: 'noswitch.example.', to: 'target', id: 'noswitch' });
    const rec = await ctl.wait('noswitch');
    assert.equal(rec.phase, 'rolled-back', rec.error);
    const d = db('noswitch.example');
    assert.deepEqual(d.violations, []);
    assert.deepEqual([...d.writers], ['origin']);
    assert.equal(d.sourceOpen, false);
    const seq = mine('noswitch').map((c) => `${c.host}.${c.method}`);
    const take = seq.indexOf('target.takeOverDatabases');
    const freezeTarget = seq.indexOf('target.freezeDatabases', take);
    const drop = seq.indexOf('target.dropDatabaseCopy', take);
    const thaw = seq.indexOf('origin.thawDatabases', take);
    assert.ok(take >= 0 && freezeTarget > take && drop > freezeTarget && thaw > drop, seq.join(' '));
    assert.equal(sb.originSites.mode('noswitch.example.'), 'serve');
  });

  it('a catch-up that times out releases back to the origin, which writes again, and the next cut-over succeeds', async () => {
    const d = db('retry.example');
    d.stalled = 1;
    await ctl.startMigration({ domain: 'retry.example.', to: 'target', id: 'retry' });
    const rec = await ctl.wait('retry');
    assert.equal(rec.phase, 'completed', rec.error);
    assert.deepEqual(d.violations, []);
    assert.deepEqual([...d.writers], ['target']);
    const seq = mine('retry').map((c) => `${c.host}.${c.method}`);
    const firstTake = seq.indexOf('target.takeOverDatabases');
    const thaw = seq.indexOf('origin.thawDatabases', firstTake);
    const secondFreeze = seq.indexOf('origin.freezeDatabases', thaw);
    assert.ok(firstTake >= 0 && thaw > firstTake && secondFreeze > thaw, seq.join(' '));
    // After the thaw, the origin serves again and the redirect releases to it before the next hold.
    const after = mine('retry').slice(thaw);
    const serveAgain = after.findIndex(
      (c) => c.method === 'setSiteMode' && c.host === 'origin' && c.args[1] === 'serve',
    );
    const released = after.findIndex((c) => c.method === 'releaseRedirect');
    const nextHold = after.findIndex((c) => c.method === 'holdRedirect');
    assert.ok(
      serveAgain >= 0 && released > serveAgain && nextHold > released,
      'released back, then held again',
    );
    const toTarget = after.findIndex((c) => c.method === 'setRedirectUpstream');
    assert.ok(toTarget > nextHold, 'the redirect points at the target only after the second hold');
    const timeout = events.find(
      (e) => e.migrationId === 'retry' && e.type === 'database' && e.data.state === 'catchup-timeout',
    );
    assert.ok(timeout, 'an event says the catch-up timed out');
    assert.equal(timeout.data.attempt, 1);
    assert.equal(typeof timeout.data.retryAt, 'number');
    const thawAt = mine('retry').find((c) => c.method === 'thawDatabases')!.at;
    const nextFreezeAt = mine('retry').filter((c) => c.method === 'freezeDatabases')[1]!.at;
    assert.ok(nextFreezeAt - thawAt >= 400, `retried after the delay (${nextFreezeAt - thawAt} ms)`);
  });

  it('when every attempt times out, the migration rolls back: the origin writes, the target copy is dropped', async () => {
    const d = db('stall.example');
    d.stalled = 5;
    await ctl.startMigration({ domain: 'stall.example.', to: 'target', id: 'stall' });
    const rec = await ctl.wait('stall');
    assert.equal(rec.phase, 'rolled-back', rec.error);
    assert.deepEqual(d.violations, []);
    assert.deepEqual([...d.writers], ['origin']);
    assert.equal(d.copied, false, "the target's copy is dropped");
    assert.equal(d.sourceOpen, false);
    assert.equal(
      mine('stall').filter((c) => c.method === 'takeOverDatabases').length,
      2,
      'catchUpAttempts: 2',
    );
    assert.equal(sb.originSites.mode('stall.example.'), 'serve');
    assert.equal(sb.targetSites.hasSite('stall.example.'), false);
    const seq = mine('stall').map((c) => `${c.host}.${c.method}`);
    assert.ok(
      !seq.includes('target.freezeDatabases'),
      'no take-over made the target a writer: nothing to freeze there',
    );
    const last = events.filter((e) => e.migrationId === 'stall' && e.data.state === 'catchup-timeout').pop();
    assert.equal(last?.data.attempt, 2);
    assert.equal(last?.data.retryAt, undefined, 'no next try: the migration rolls back');
    const drop = seq.lastIndexOf('target.dropDatabaseCopy');
    assert.ok(
      drop >= 0 && seq.lastIndexOf('origin.thawDatabases') > drop,
      'the copy goes before the origin writes again',
    );
    const errors = journal.entries('stall').filter((e) => e.kind === 'error');
    assert.match(JSON.stringify(errors), /DB_CATCHUP_TIMEOUT|2 cut-over attempts/);
  });

  /** Run `id` on an orchestrator that is stopped (a killed controller) at the database event `at`, then resume it on a new one. */
  async function crashAndResume(id: string, at: 'frozen' | 'caught-up' | 'catchup-timeout'): Promise<SiteDb> {
    const orchestrator = () =>
      new Orchestrator({
        dns: new EmbeddedDnsProvider({ server: sb.dns }),
        hosts: { origin, target },
        journal,
        retry: { attempts: 2, baseDelayMs: 20, maxDelayMs: 50, callTimeoutMs: 3000 },
      });
    const orch = orchestrator();
    orch.create({
      id,
      domain: `${id}.example.`,
      origin: 'origin',
      target: 'target',
      originIp: sb.opts.originIp,
      targetIp: sb.opts.targetIp,
      tempIp: '127.0.93.101',
      ports: [sb.httpPort],
      timings: { ...DEFAULT_TIMINGS, ...timings },
      kind: 'web',
      web: {
        database: {
          catchUpTimeoutMs: at === 'catchup-timeout' ? 300 : 2000,
          retryDelayMs: 1500,
          lagWaitMs: 300,
        },
      },
      parity: { http: [{ path: '/healthz' }] },
    } satisfies MigrationPlan);
    const abort = new AbortController();
    orch.on('database', (e) => {
      if (e.state === at) abort.abort();
    });
    await assert.rejects(orch.run(id, abort.signal));
    assert.equal(orch.get(id).phase, 'cutover');
    const d = db(`${id}.example`);
    assert.deepEqual(d.violations, []);
    if (at === 'frozen') {
      assert.equal(d.tookOver, null, 'stopped before the take-over');
      assert.deepEqual([...d.writers], [], 'frozen: nobody writes while the controller is gone');
    } else if (at === 'catchup-timeout') {
      assert.deepEqual(
        [...d.writers],
        ['origin'],
        'released back: the origin writes while the controller is gone',
      );
    } else {
      assert.deepEqual([...d.writers], ['target'], 'stopped after the take-over, before the switch');
      assert.equal(sb.targetSites.mode(`${id}.example.`), 'readonly');
    }
    const rec = await orchestrator().run(id);
    assert.equal(rec.phase, 'completed', rec.error);
    assert.deepEqual(d.violations, []);
    assert.deepEqual([...d.writers], ['target']);
    assert.equal(d.sourceOpen, false);
    assert.equal(mine(id).filter((c) => c.method === 'copyDatabases').length, 1, 'the copy is not redone');
    // The resumed cut-over repeats the freeze and the take-over.
    assert.equal(mine(id).filter((c) => c.method === 'freezeDatabases').length, 2);
    assert.equal(mine(id).filter((c) => c.method === 'takeOverDatabases').length, at === 'frozen' ? 1 : 2);
    return d;
  }

  it('a controller killed between freeze and take-over resumes to completion, never with two writers', async () => {
    await crashAndResume('crash', 'frozen');
  });

  it('a controller killed during the pause after a timed-out catch-up waits out the rest of it when resumed', async () => {
    db('paused.example').stalled = 1;
    await crashAndResume('paused', 'catchup-timeout');
    const retryAt = journal.entries('paused').find((e) => e.step === STEP.dbCatchupTimeout)?.detail
      ?.retryAt as number;
    const freezes = mine('paused').filter((c) => c.method === 'freezeDatabases');
    assert.ok(freezes[1]!.at >= retryAt, `the next freeze (${freezes[1]!.at}) waits until ${retryAt}`);
  });

  it('a controller killed after the take-over, before the switch, resumes: the take-over answers its recorded result', async () => {
    const d = await crashAndResume('crashed', 'caught-up');
    const takes = journal.entries('crashed').filter((e) => e.step === STEP.dbTookOver);
    assert.equal(takes.length, 2);
    assert.deepEqual(
      takes[1]!.detail?.writerPosition,
      d.tookOver?.writerPosition,
      'the same position both times',
    );
  });

  it('a site without a local database moves as before: no database call at all', async () => {
    const before = calls.length;
    await ctl.startMigration({ domain: 'plain.example.', to: 'target', id: 'plain' });
    const rec = await ctl.wait('plain');
    assert.equal(rec.phase, 'completed', rec.error);
    const dbCalls = calls
      .slice(before)
      .filter((c) => /Database|planDatabases/.test(c.method) && c.method !== 'planDatabases');
    assert.deepEqual(dbCalls, []);
    assert.deepEqual(rec.plan.web?.databasePlan, { move: [], leftInPlace: [] });
    assert.ok(!journal.entries('plain').some((e) => e.step?.startsWith('db-')), 'no database step');
  });

  it('never puts the source password in the journal or an event', () => {
    const all = JSON.stringify([...sites.map((s) => journal.entries(s.replace(/\.example\.$/, ''))), events]);
    assert.ok(all.includes('wp_shop'), 'the journal and events were read');
    assert.ok(all.includes(STEP.reverseDbStartChannel), 'the reverse was read too');
    assert.ok(!all.includes(SECRET), 'the password is nowhere');
    for (const d of dbs.values()) assert.deepEqual(d.violations, []);
  });
});
