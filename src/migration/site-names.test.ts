/**
 * A site is several names (issue 15): a web site's `www` and `mail` names and its MX target move
 * origin → temporary IP → target together, on a loopback sandbox with its embedded DNS. The hosts
 * are the sandbox's real agents behind a driver that stands in for the web-site calls with the
 * agent's built-in site operations and answers the inspection with a site (and its mail) this
 * test describes; DNS, the temporary IP, its redirect and the propagation check are the real ones.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import type { HostAgent, SiteNeeds, WebSite } from '../agent/index.js';
import type { SiteMail } from '../agent/webconfig/model.js';
import { FerryError, isFerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';
import { generateToken, startApi } from '../api/index.js';
import { Controller } from '../controller/index.js';
import { Sandbox } from '../sandbox/index.js';
import {
  EmbeddedDnsProvider,
  Journal,
  STEP,
  nameStep,
  type DnsProvider,
  type HostDriver,
  type WebBundle,
  type WebSiteOverrides,
} from './index.js';
import { PARALLEL_LANE_REQUEST_TIMEOUT_MS } from '../../test/load.js';

interface Call {
  host: string;
  method: string;
  args: unknown[];
}

const ELSEWHERE = '192.0.2.9';

describe('a site of several names', () => {
  const sites = ['shop.example.', 'back.example.', 'rev.example.', 'crash.example.', 'late.example.'];
  const mailSites = ['post.example.', 'ports.example.', 'stays.example.'];
  const sb = new Sandbox({
    requestTimeoutMs: PARALLEL_LANE_REQUEST_TIMEOUT_MS,
    dnsAddress: '127.0.51.53',
    dnsPort: 0,
    httpPort: 0,
    originIp: '127.0.51.1',
    targetIp: '127.0.51.2',
    tempIp: '127.0.51.100',
    sites: [...sites, ...mailSites],
    ttl: 1,
    rate: 20,
    clients: 4,
    quietWindowMs: 800,
    dnsTempCapMs: 5000,
    drainCapMs: 5000,
  });
  const calls: Call[] = [];
  /** Per test: installs, finishes and DNS changes that fail, and DNS answers that lag. */
  const faults = {
    install: new Set<string>(),
    finish: new Set<string>(),
    /** A name whose next change hangs until `release` is called, then fails (a controller stopped there). */
    hang: undefined as { name: string; reached: boolean; release?: () => void } | undefined,
    /** name → ms the authoritative servers keep answering the old record after a change. */
    lag: new Map<string, number>(),
  };
  const changedAt = new Map<string, number>();
  let journal: Journal;
  let ctl: Controller;

  const mailOf = (domain: string): SiteMail => ({
    domain: domain.replace(/\.$/, ''),
    mailboxes: [{ address: `anna@${domain.replace(/\.$/, '')}`, maildir: 'anna/', messages: 3, bytes: 4096 }],
    aliases: [{ address: `info@${domain.replace(/\.$/, '')}`, to: [`anna@${domain.replace(/\.$/, '')}`] }],
    users: [`anna@${domain.replace(/\.$/, '')}`],
    ports: [2525],
  });

  /** What the origin's inspection reads: the site's names (www, mail, one elsewhere, one CNAME) and, for mail sites, its mail. */
  const inspect = (d: string): WebSite => {
    const bare = d.replace(/\.$/, '');
    return {
      server: 'nginx',
      at: { file: '/etc/nginx/sites-enabled/site.conf', line: 1 },
      names: [bare, `www.${bare}`, `mail.${bare}`, `old.${bare}`, `cdn.${bare}`, `*.${bare}`],
      defaultServer: false,
      listens: [{ address: null, port: sb.httpPort, tls: false, at: { file: 'site.conf', line: 2 } }],
      paths: [],
      application: 'static',
      apps: [],
      certificates: [],
      user: null,
      group: null,
      movable: true,
      refusals: [],
      requires: [],
      ...(mailSites.includes(d) ? { mail: mailOf(d) } : {}),
    };
  };

  function webHost(id: string, agent: HostAgent): HostDriver {
    const web: Record<string, (...a: never[]) => Promise<unknown>> = {
      webSites: async () => ({
        server: 'nginx',
        command: 'nginx -T',
        sites: id === 'origin' ? [...sites, ...mailSites].map(inspect) : [],
        declaredRoots: [],
      }),
      inspectWebSite: async (d: string) => inspect(`${d.replace(/\.$/, '')}.`),
      checkWebSite: async () => undefined,
      gateWebSite: async () => undefined,
      exportWebSite: async (d: string): Promise<WebBundle> => ({ domain: d }),
      installWebSite: async (b: WebBundle) => {
        if (faults.install.has(b.domain)) throw new FerryError('AGENT_DOWN', 'install refused by the test');
        await agent.addSite(b.domain, 'readonly');
      },
      uninstallWebSite: async (d: string) => {
        if (await agent.hasSite(d)) await agent.removeSite(d);
      },
      ungateWebSite: async () => undefined,
      finishWebSite: async (d: string, role: string) => {
        if (faults.finish.has(d)) throw new FerryError('AGENT_DOWN', 'finish refused by the test');
        if (role === 'origin') await agent.removeSite(d);
      },
    };
    return new Proxy(agent as unknown as HostDriver, {
      get(target, prop) {
        const name = String(prop);
        const own = web[name];
        const v = own ?? (Reflect.get(target, prop, target) as unknown);
        if (typeof v !== 'function') return v;
        return (...args: unknown[]) => {
          calls.push({ host: id, method: name, args });
          return (v as (...a: unknown[]) => unknown).apply(own ? web : target, args);
        };
      },
    });
  }

  /** The embedded provider, with the test's failing changes and lagging answers. */
  function dnsWithFaults(inner: DnsProvider): DnsProvider {
    return {
      getRRset: (n, t) => inner.getRRset(n, t),
      async replaceRRset(n, t, ttl, rdata) {
        const hang = faults.hang;
        if (hang?.name === n && !hang.reached) {
          hang.reached = true;
          await new Promise<void>((resolve) => (hang.release = resolve));
          throw new FerryError('DNS_UNAVAILABLE', `the controller stopped while ${n} changed`);
        }
        const before = await inner.getRRset(n, t);
        const r = await inner.replaceRRset(n, t, ttl, rdata);
        changedAt.set(n, Date.now());
        lagging.set(n, before?.rdata ?? []);
        return r;
      },
      async observe(n, t) {
        const seen = await inner.observe(n, t);
        const lag = faults.lag.get(n) ?? 0;
        if (lag && Date.now() - (changedAt.get(n) ?? 0) < lag)
          return seen.map((s) => ({ ...s, serial: null, rdata: lagging.get(n) ?? [] }));
        return seen;
      },
    };
  }
  const lagging = new Map<string, string[]>();

  before(async () => {
    await sb.start();
    for (const d of [...sites, ...mailSites]) {
      for (const label of ['www', 'mail'])
        sb.dns.zones.replaceRRset(`${label}.${d}`, 'A', 1, [sb.opts.originIp]);
      sb.dns.zones.replaceRRset(`old.${d}`, 'A', 1, [ELSEWHERE]);
      sb.dns.zones.replaceRRset(`cdn.${d}`, 'CNAME', 1, [`${d}`]);
      sb.dns.zones.replaceRRset(`ftp.${d}`, 'A', 3, [sb.opts.originIp]);
      sb.dns.zones.replaceRRset(d, 'MX', 1, [`10 mail.${d}`, `20 mx.elsewhere.test.`]);
    }
    journal = new Journal(join(sb.dataDir, 'names-journal.sqlite'), { durability: 'process' });
    ctl = controllerOn(journal);
    sb.startLoad();
  });

  /** A controller of the sandbox's servers and sites keeping its migrations in `j`. */
  function controllerOn(j: Journal): Controller {
    return new Controller({
      dns: dnsWithFaults(new EmbeddedDnsProvider({ server: sb.dns })),
      servers: [
        {
          id: 'origin',
          driver: webHost('origin', sb.origin as HostAgent),
          sharedIps: [sb.opts.originIp],
          tempIpPool: ['127.0.51.100', '127.0.51.101'],
        },
        {
          id: 'target',
          driver: webHost('target', sb.target as HostAgent),
          sharedIps: [sb.opts.targetIp],
          tempIpPool: [],
        },
      ],
      sites: [
        ...sites.map((domain) => ({
          domain,
          server: 'origin',
          ports: [sb.httpPort],
          kind: 'web' as const,
          parity: { http: [{ path: '/healthz' }] },
          ...(domain === 'shop.example.' ? { names: ['ftp.shop.example.'] } : {}),
        })),
        ...mailSites.map((domain) => ({
          domain,
          server: 'origin',
          ports: domain === 'ports.example.' ? [sb.httpPort] : [sb.httpPort, 2525],
          kind: 'web' as const,
          parity: { http: [{ path: '/healthz' }] },
          ...(domain === 'stays.example.' ? { mail: false as const } : {}),
        })),
      ],
      journal: j,
      defaults: { ttl: 1, quietWindowMs: 800, dnsTempCapMs: 5000, drainCapMs: 5000, pollMs: 100 },
      retry: { attempts: 1, baseDelayMs: 20, maxDelayMs: 50, callTimeoutMs: 5000 },
    });
  }

  after(async () => {
    await ctl?.close();
    journal?.close();
    await sb.stop();
  });

  const a = async (name: string) => (await sb.dns.zones.getRRset(name, 'A'))?.rdata;
  /** The addresses each name's A record was changed to, in order (from the journal). */
  const history = (id: string, domain: string, name: string) =>
    journal
      .entries(id)
      .filter((e) => e.kind === 'step' && e.step === nameStep(STEP.dnsChange, name, domain))
      .map((e) => e.detail?.address);
  const moved = (d: string) => [d, `www.${d}`, `mail.${d}`];

  it('plans the names: www, mail (the MX target) and a declared one move; the others are left alone with why', async () => {
    const preview = await ctl.previewMigration({ domain: 'shop.example', to: 'target' });
    const d = 'shop.example.';
    assert.deepEqual(preview.names, [...moved(d), `ftp.${d}`]);
    const alone = new Map(preview.namesLeftAlone!.map((l) => [l.name, l.reason]));
    assert.match(
      alone.get(`old.${d}`)!,
      new RegExp(`points at ${ELSEWHERE.replace(/\./g, '\\.')}, not the origin's shared IP`),
    );
    assert.match(alone.get(`cdn.${d}`)!, /a CNAME/);
    assert.match(alone.get(`*.${d}`)!, /wildcard/);
    assert.match(alone.get('mx.elsewhere.test.')!, /outside the zone/);
    assert.equal(preview.names!.includes(`old.${d}`), false);
  });

  it('moves every name origin → temporary IP → target, propagated, and leaves the others untouched', async () => {
    const d = 'shop.example.';
    const rec0 = await ctl.startMigration({ domain: 'shop.example', to: 'target', id: 'shop' });
    const names = [...moved(d), `ftp.${d}`];
    assert.deepEqual(rec0.plan.names, names);
    const rec = await ctl.wait('shop');
    assert.equal(rec.phase, 'completed', rec.error);
    const { tempIp, targetIp } = rec.plan;
    for (const n of names) {
      assert.deepEqual(await a(n), [targetIp], n);
      const h = history('shop', d, n);
      assert.deepEqual(
        h.slice(h.indexOf(tempIp)),
        [tempIp, targetIp, ...(n === `ftp.${d}` ? [targetIp] : [])],
        `${n}: ${h.join(' → ')}`,
      );
      const propagated = journal
        .entries('shop')
        .filter((e) => e.kind === 'note' && e.step === nameStep(STEP.dnsPropagated, n, d))
        .map((e) => e.detail?.address);
      assert.ok(
        propagated.includes(tempIp) && propagated.includes(targetIp),
        `${n}: ${propagated.join(' ')}`,
      );
    }
    // ftp had a TTL of 3 s: lowered first (the migration waited it out), and its own TTL back at the end.
    assert.equal((await sb.dns.zones.getRRset(`ftp.${d}`, 'A'))?.ttl, 3);
    assert.ok(journal.entries('shop').some((e) => e.kind === 'enter' && e.phase === 'ttl-lowered'));
    assert.deepEqual(await a(`old.${d}`), [ELSEWHERE]);
    assert.deepEqual((await sb.dns.zones.getRRset(`cdn.${d}`, 'CNAME'))?.rdata, [d]);
  });

  it('propagation waits for every name: a lagging one holds the phase', async () => {
    const d = 'late.example.';
    faults.lag.set(`mail.${d}`, 2500);
    try {
      await ctl.startMigration({ domain: 'late.example', to: 'target', id: 'late' });
      const rec = await ctl.wait('late');
      assert.equal(rec.phase, 'completed', rec.error);
    } finally {
      faults.lag.delete(`mail.${d}`);
    }
    const entries = journal.entries('late');
    const toTemp = entries.find(
      (e) =>
        e.step === nameStep(STEP.dnsChange, `mail.${d}`, d) &&
        e.detail?.address === journal.get('late')!.plan.tempIp,
    )!;
    const propagated = entries.find(
      (e) =>
        e.step === nameStep(STEP.dnsPropagated, `mail.${d}`, d) &&
        e.detail?.address === toTemp.detail?.address,
    )!;
    assert.ok(
      propagated.at - toTemp.at >= 2400,
      `mail seen everywhere ${propagated.at - toTemp.at} ms after its change`,
    );
    const syncing = entries.find((e) => e.kind === 'enter' && e.phase === 'syncing')!;
    assert.ok(syncing.seq > propagated.seq);
    assert.ok(
      syncing.at - toTemp.at >= 2400,
      `syncing entered ${syncing.at - toTemp.at} ms after mail's change`,
    );
  });

  it('rolls back before the switch: every moved name back at the origin with its TTL', async () => {
    const d = 'back.example.';
    faults.install.add(d);
    let rec;
    try {
      // The install fails in syncing, after dns-temp: the migration undoes itself.
      await ctl.startMigration({ domain: 'back.example', to: 'target', id: 'back' });
      rec = await ctl.wait('back');
    } finally {
      faults.install.delete(d);
    }
    assert.equal(rec.phase, 'rolled-back', rec.error);
    for (const n of moved(d)) {
      assert.deepEqual(history('back', d, n), [rec.plan.tempIp, sb.opts.originIp], n);
      assert.deepEqual(await sb.dns.zones.getRRset(n, 'A'), { ttl: 1, rdata: [sb.opts.originIp] }, n);
    }
    assert.deepEqual(await a(`old.${d}`), [ELSEWHERE]);
  });

  it('rolls back after the switch (reverse): every moved name back at the origin', async () => {
    const d = 'rev.example.';
    faults.finish.add(d);
    try {
      await ctl.startMigration({ domain: 'rev.example', to: 'target', id: 'rev' });
      const failed = await ctl.wait('rev');
      assert.equal(failed.phase, 'failed');
      for (const n of moved(d)) assert.deepEqual(await a(n), [sb.opts.targetIp], n);
      const rec = await ctl.rollback('rev');
      assert.equal(rec.phase, 'rolled-back', rec.error);
    } finally {
      faults.finish.delete(d);
    }
    for (const n of moved(d)) assert.deepEqual(await a(n), [sb.opts.originIp], n);
    assert.ok(journal.entries('rev').some((e) => e.step === STEP.reverseOriginServe));
  });

  it('a controller stopped between two names resumes and finishes them all, redoing nothing it had done', async () => {
    const d = 'crash.example.';
    const j = new Journal(join(sb.dataDir, 'crash-journal.sqlite'), { durability: 'process' });
    const first = controllerOn(j);
    const hang: NonNullable<typeof faults.hang> = { name: `mail.${d}`, reached: false };
    faults.hang = hang;
    try {
      await first.startMigration({ domain: 'crash.example', to: 'target', id: 'crash' });
      while (!hang.reached) await sleep(50);
      // The controller stops while the mail name's change is under way (a restart of the process).
      const closed = first.close();
      hang.release?.();
      await closed;
      const stopped = j.get('crash')!;
      assert.equal(stopped.phase, 'dns-temp');
      const { tempIp, targetIp, originIp } = stopped.plan;
      assert.deepEqual(await a(d), [tempIp]);
      assert.deepEqual(await a(`www.${d}`), [tempIp]);
      assert.deepEqual(await a(`mail.${d}`), [originIp]);
      const second = controllerOn(j);
      try {
        assert.deepEqual(second.resumeAll(), ['crash']);
        const rec = await second.wait('crash');
        assert.equal(rec.phase, 'completed', rec.error);
      } finally {
        await second.close();
      }
      for (const n of moved(d)) {
        assert.deepEqual(await a(n), [targetIp], n);
        const h = j
          .entries('crash')
          .filter((e) => e.kind === 'step' && e.step === nameStep(STEP.dnsChange, n, d))
          .map((e) => e.detail?.address);
        // The domain's and www's changes were done once; mail's was journaled, never made, and made on resume.
        const times = n === `mail.${d}` ? 2 : 1;
        assert.equal(h.filter((x) => x === tempIp).length, times, `${n}: ${h.join(' → ')}`);
      }
    } finally {
      faults.hang = undefined;
      hang.release?.();
      j.close();
    }
  });

  it('ferry migrate --dry-run and the API show the names, those left alone, and the mail', async () => {
    const token = generateToken();
    const api = await startApi(ctl, {
      tokens: [{ token, scope: 'operator', name: 'ops' }],
      host: '127.0.51.1',
      port: 0,
      sampleIntervalMs: 0,
      dashboard: false,
      metrics: false,
    });
    try {
      const main = join(import.meta.dirname, '..', 'cli', 'main.ts');
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [
          '--import',
          'tsx',
          main,
          'migrate',
          'post.example',
          '--to',
          'target',
          '--dry-run',
          '--controller',
          api.url,
        ],
        { env: { ...process.env, FERRY_TOKEN: token } },
      );
      const d = 'post.example.';
      assert.match(stdout, /^Would move post\.example\. origin → target .*nothing was started$/m);
      assert.ok(stdout.includes(`Names:\n  move together: ${d}, www.${d}, mail.${d}\n`), stdout);
      assert.ok(
        stdout.includes(`  left alone: old.${d} (points at ${ELSEWHERE}, not the origin's shared IP`),
        stdout,
      );
      assert.ok(stdout.includes(`Mail:\n  mailbox anna@post.example: 3 messages, 4096 bytes\n`), stdout);
      assert.ok(stdout.includes('  ports: 2525\n'), stdout);
      // The API's record of a migration carries its plan's names.
      const res = await fetch(`${api.url}/v1/migrations/shop`, {
        headers: { authorization: `Bearer ${token}` },
      });
      const body = await res.text();
      assert.equal(res.status, 200, body);
      const view = JSON.parse(body) as { plan: { names: string[]; namesLeftAlone: unknown[] } };
      const shop = 'shop.example.';
      assert.deepEqual(view.plan.names, [shop, `www.${shop}`, `mail.${shop}`, `ftp.${shop}`]);
      assert.equal(view.plan.namesLeftAlone.length, 4); // old, cdn, the wildcard, the MX outside the zone
      const stays = await promisify(execFile)(
        process.execPath,
        [
          '--import',
          'tsx',
          main,
          'migrate',
          'stays.example',
          '--to',
          'target',
          '--dry-run',
          '--controller',
          api.url,
        ],
        { env: { ...process.env, FERRY_TOKEN: token } },
      );
      assert.match(stays.stdout, /Mail:\n {2}mail stays on the origin/);
    } finally {
      await api.close();
    }
  });
  it("puts the site's mail into the plan and asks the target for the mail domain", async () => {
    const before = calls.length;
    const rec = await ctl.startMigration({ domain: 'post.example', to: 'target', id: 'post' });
    assert.deepEqual(rec.plan.web?.mail, mailOf('post.example.'));
    assert.deepEqual(rec.plan.ports, [sb.httpPort, 2525]);
    const check = calls.slice(before).find((c) => c.host === 'target' && c.method === 'checkWebSite')!;
    assert.equal((check.args[1] as SiteNeeds).mailDomain, 'post.example');
    assert.equal(ctl.migration('post').plan.web?.mailStays, undefined);
    const done = await ctl.wait('post');
    assert.equal(done.phase, 'completed', done.error);
  });

  it('refuses a site with mail whose ports lack a mail port, naming it, before anything is journaled', async () => {
    const before = journal.list().length;
    await assert.rejects(
      ctl.startMigration({ domain: 'ports.example', to: 'target' }),
      (e: unknown) =>
        isFerryError(e, 'PLAN_MAIL_PORTS') &&
        /port 2525/.test(e.message) &&
        /sites\[\]\.ports/.test(e.message),
    );
    assert.equal(journal.list().length, before);
    assert.deepEqual(await a('ports.example.'), [sb.opts.originIp]);
  });

  it('mail: false leaves the mail on the origin: no mail domain asked, the agents told', async () => {
    const before = calls.length;
    const preview = await ctl.previewMigration({ domain: 'stays.example', to: 'target' });
    assert.equal(preview.mailStays, true);
    assert.equal(preview.mail, undefined);
    const check = calls.slice(before).find((c) => c.host === 'target' && c.method === 'checkWebSite')!;
    assert.equal((check.args[1] as SiteNeeds).mailDomain, undefined);
    const inspectCall = calls.slice(before).find((c) => c.method === 'inspectWebSite')!;
    assert.deepEqual(inspectCall.args[1] as WebSiteOverrides, { mail: false });
    const rec = await ctl.startMigration({ domain: 'stays.example', to: 'target', id: 'stays' });
    assert.equal(rec.plan.web?.mailStays, true);
    assert.equal(rec.plan.web?.mail, undefined);
    const done = await ctl.wait('stays');
    assert.equal(done.phase, 'completed', done.error);
    const gate = calls.find((c) => c.method === 'gateWebSite' && c.args[0] === 'stays.example.')!;
    assert.deepEqual(gate.args[1], { mail: false });
  });
});
