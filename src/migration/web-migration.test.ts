/**
 * The orchestrator's path for a web site (a virtual host of the server's own nginx), on a loopback
 * sandbox. The sites are read by the real reader from a real `nginx -T` of configs this test
 * writes; each hosting server is a real in-process HostAgent behind a driver that records every
 * call and stands in for the web-site calls (gate, bundle, install, finish) with the agent's
 * built-in site operations, so what is asserted is the orchestrator's side: which call comes when,
 * what a refusal leaves untouched, what rollback undoes, and that the bundle is never journaled.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { findBinary } from '../../test/e2e/helpers.js';
import {
  HttpHostDriver,
  NginxFlavor,
  readWebSites,
  WebStack,
  type HostAgent,
  type SiteNeeds,
  type WebConfigOptions,
  type WebSitesReport,
} from '../agent/index.js';
import { FerryError, isFerryError } from '../common/errors.js';
import { Controller, type ControllerEvent } from '../controller/index.js';
import { Sandbox } from '../sandbox/index.js';
import { EmbeddedDnsProvider, Journal, STEP, planWebSite, type HostDriver, type WebBundle } from './index.js';
import { PARALLEL_LANE_REQUEST_TIMEOUT_MS } from '../../test/load.js';

const nginxBin = findBinary('nginx');

interface Call {
  host: string;
  method: string;
  args: unknown[];
}

const WEB_METHODS = new Set([
  'webSites',
  'inspectWebSite',
  'checkWebSite',
  'gateWebSite',
  'exportWebSite',
  'installWebSite',
  'ungateWebSite',
  'uninstallWebSite',
  'finishWebSite',
]);

/**
 * `agent` as host `id`: every call recorded in `calls`; the web-site calls answered from
 * `report()` (the real reader), the inspection and the target check by the agent's real web stack
 * (`stack`, which only reads), the rest carried out with the agent's built-in site operations; a
 * call whose `fails(method, args)` is true is refused like an agent that is down.
 */
function webHost(
  id: string,
  agent: HostAgent,
  calls: Call[],
  report: () => Promise<WebSitesReport>,
  stack: WebStack,
  secret: string,
  fails: (method: string, args: unknown[]) => boolean,
): HostDriver {
  const bare = (d: string) => d.replace(/\.$/, '');
  const web: Record<string, (...a: never[]) => Promise<unknown>> = {
    webSites: () => report(),
    inspectWebSite: async (d: string) => stack.inspect(bare(d)),
    checkWebSite: async (d: string, needs: SiteNeeds) => stack.assertCanHost(bare(d), needs),
    gateWebSite: async () => undefined, // the sandbox's origin serves the site through its app already
    exportWebSite: async (d: string): Promise<WebBundle & { key: string }> => ({ domain: d, key: secret }),
    installWebSite: async (b: WebBundle) => agent.addSite(b.domain, 'readonly'),
    uninstallWebSite: async (d: string) => {
      if (await agent.hasSite(d)) await agent.removeSite(d);
    },
    ungateWebSite: async () => undefined,
    finishWebSite: async (d: string, role: string) => {
      if (role === 'origin') await agent.removeSite(d); // into the backup
    },
  };
  return new Proxy(agent as unknown as HostDriver, {
    get(target, prop) {
      const name = String(prop);
      const own = WEB_METHODS.has(name) ? web[name] : undefined;
      const v = own ?? (Reflect.get(target, prop, target) as unknown);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        calls.push({ host: id, method: name, args });
        if (fails(name, args))
          return Promise.reject(new FerryError('AGENT_DOWN', `${name} refused by the test`));
        return (v as (...a: unknown[]) => unknown).apply(own ? web : target, args);
      };
    },
  });
}

describe('planning a web site between agents reached over plain HTTP', () => {
  const TOKEN = 'plain-http-test-token-0123456789';
  const driver = (id: string, url: string) => new HttpHostDriver({ id, url, token: TOKEN });
  /** The driver, every one of its calls refused: planning must decide without asking the agent. */
  const untouched = (d: HttpHostDriver): HostDriver =>
    new Proxy(d, {
      get(t, p) {
        const v = Reflect.get(t, p, t) as unknown;
        return typeof v === 'function'
          ? () => {
              throw new Error(`${String(p)} was called`);
            }
          : v;
      },
    });

  it('knows which agent URLs cross the network unencrypted', () => {
    assert.equal(driver('a', 'http://192.0.2.10:7070').plainTransport, 'http://192.0.2.10:7070');
    assert.equal(driver('a', 'http://[2001:db8::1]:7070').plainTransport, 'http://[2001:db8::1]:7070');
    for (const url of [
      'https://192.0.2.10:7070',
      'http://127.0.0.5:7070',
      'http://[::1]:7070',
      'http://localhost:7070',
    ])
      assert.equal(driver('a', url).plainTransport, undefined, url);
  });

  it('refuses SECRETS_NEED_TLS, naming the agent, before calling either', async () => {
    for (const [origin, target, plain] of [
      ['http://192.0.2.10:7070', 'https://192.0.2.11:7070', 'origin'],
      ['https://192.0.2.10:7070', 'http://192.0.2.11:7070', 'target'],
    ] as const) {
      await assert.rejects(
        planWebSite(untouched(driver('origin', origin)), untouched(driver('target', target)), 'shop.example'),
        (e: unknown) =>
          isFerryError(e, 'SECRETS_NEED_TLS') &&
          e.message.includes(`the agent of ${plain} is reached over plain HTTP`) &&
          /--tls-cert/.test(e.message),
      );
    }
  });
});

describe('orchestrator: a web site', { skip: nginxBin ? false : 'nginx is not installed' }, () => {
  const sites = [
    'web.example.',
    'outside.example.',
    'gone.example.',
    'lacking.example.',
    'broken.example.',
    'reverse.example.',
    'direct.example.',
    'oldphp.example.',
  ];
  const DEDICATED = '127.0.49.9';
  const sb = new Sandbox({
    requestTimeoutMs: PARALLEL_LANE_REQUEST_TIMEOUT_MS,
    dnsAddress: '127.0.49.53',
    dnsPort: 0,
    httpPort: 0,
    originIp: '127.0.49.1',
    targetIp: '127.0.49.2',
    tempIp: '127.0.49.100',
    sites,
    ttl: 1,
    rate: 40,
    clients: 8,
    quietWindowMs: 1000,
    dnsTempCapMs: 6000,
    drainCapMs: 6000,
  });
  const SECRET = `-----BEGIN PRIVATE KEY----- ${randomBytes(24).toString('hex')}`;
  const calls: Call[] = [];
  const events: ControllerEvent[] = [];
  const failing = { targetReport: 'nginx' as 'nginx' | 'none' };
  let dir = '';
  let www = '';
  let originConf = '';
  let targetConf = '';
  let journal: Journal;
  let ctl: Controller;

  const webConfig = (conf: string): WebConfigOptions => ({
    kind: 'nginx',
    command: [nginxBin!, '-T', '-c', conf, '-p', join(dir, 'prefix')],
    poolDirs: [join(dir, 'pool.d'), join(dir, 'php', '8.1', 'fpm', 'pool.d')],
    declaredRoots: [www],
  });
  const nginxReport = (conf: string) => readWebSites(webConfig(conf));
  /** A server's web stack: its nginx, and its PHP-FPM versions in `dir/<name>-php` (8.2 only). */
  const stackOn = (name: string, conf: string, sharedIp: string) =>
    new WebStack({
      flavor: new NginxFlavor({ command: [nginxBin!, '-c', conf, '-p', join(dir, 'prefix')] }),
      webConfig: webConfig(conf),
      dataDir: join(dir, `${name}-agent`),
      includeDir: join(dir, `${name}-include`),
      gate: { address: '127.0.0.1', port: 1 },
      sharedIp,
      phpLayout: { phpRoot: join(dir, `${name}-php`), binDirs: [join(dir, `${name}-bin`)] },
    });

  before(async () => {
    await sb.start();
    dir = await mkdtemp(join(tmpdir(), 'ferry-webmig-'));
    www = join(dir, 'www');
    await mkdir(join(dir, 'prefix'), { recursive: true });
    await mkdir(join(dir, 'pool.d'));
    await mkdir(join(dir, 'elsewhere'));
    const listen = `${sb.opts.originIp}:${sb.httpPort}`;
    let blocks = '';
    for (const name of ['web', 'lacking', 'broken', 'reverse']) {
      await mkdir(join(www, name), { recursive: true });
      blocks += `server {\n  listen ${listen};\n  server_name ${name}.example;\n  root ${www}/${name};\n}\n`;
    }
    // direct.example has an address of its own on the origin (direct mode).
    await mkdir(join(www, 'direct'), { recursive: true });
    blocks += `server {\n  listen ${DEDICATED}:${sb.httpPort};\n  server_name direct.example;\n  root ${www}/direct;\n}\n`;
    await sb.originSites.addAddress(DEDICATED);
    sb.dns.zones.replaceRRset('direct.example.', 'A', 1, [DEDICATED]);
    // oldphp.example runs on a PHP-FPM 8.1 pool, a version the target does not have (it has 8.2).
    await mkdir(join(www, 'oldphp'), { recursive: true });
    const pool81 = join(dir, 'php', '8.1', 'fpm', 'pool.d');
    await mkdir(pool81, { recursive: true });
    const sock = join(dir, 'php8.1-fpm-oldphp.sock');
    await writeFile(
      join(pool81, 'oldphp.conf'),
      `[oldphp]\nuser = nobody\ngroup = nogroup\nlisten = ${sock}\n`,
    );
    blocks += `server {\n  listen ${listen};\n  server_name oldphp.example;\n  root ${www}/oldphp;\n  location ~ \\.php$ { fastcgi_pass unix:${sock}; }\n}\n`;
    for (const [name, version] of [
      ['origin', '8.1'],
      ['target', '8.2'],
    ] as const) {
      await mkdir(join(dir, `${name}-php`, version, 'fpm', 'pool.d'), { recursive: true });
      await mkdir(join(dir, `${name}-bin`), { recursive: true });
      await writeFile(join(dir, `${name}-bin`, `php-fpm${version}`), '', { mode: 0o755 });
    }
    // outside.example's root is the 3rd line of its block: the refusal names that line.
    blocks += `server {\n  listen ${listen};\n  server_name outside.example;\n  root ${dir}/elsewhere;\n}\n`;
    const main = (body: string) =>
      `pid ${dir}/prefix/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n  access_log off;\n${body}}\n`;
    originConf = join(dir, 'origin.conf');
    targetConf = join(dir, 'target.conf');
    await writeFile(originConf, main(blocks));
    await writeFile(
      targetConf,
      main(
        `server {\n  listen ${sb.opts.targetIp}:${sb.httpPort};\n  server_name other.example;\n  root ${www}/web;\n}\n`,
      ),
    );
    const origin = webHost(
      'origin',
      sb.origin as HostAgent,
      calls,
      () => nginxReport(originConf),
      stackOn('origin', originConf, sb.opts.originIp),
      SECRET,
      () => false,
    );
    const target = webHost(
      'target',
      sb.target as HostAgent,
      calls,
      () =>
        failing.targetReport === 'none'
          ? Promise.reject(new FerryError('WEBCONFIG_NONE', 'target was not told which web server to read'))
          : nginxReport(targetConf),
      stackOn('target', targetConf, sb.opts.targetIp),
      SECRET,
      (method, args) =>
        (method === 'installWebSite' && (args[0] as WebBundle).domain === 'broken.example.') ||
        (method === 'finishWebSite' && args[0] === 'reverse.example.'),
    );
    journal = new Journal(join(sb.dataDir, 'web-journal.sqlite'), { durability: 'process' });
    ctl = new Controller({
      dns: new EmbeddedDnsProvider({ server: sb.dns }),
      servers: [
        {
          id: 'origin',
          driver: origin,
          sharedIps: [sb.opts.originIp],
          tempIpPool: ['127.0.49.100', '127.0.49.101'],
        },
        { id: 'target', driver: target, sharedIps: [sb.opts.targetIp], tempIpPool: [] },
      ],
      sites: sites.map((domain) => ({
        domain,
        server: 'origin',
        ports: [sb.httpPort],
        kind: 'web' as const,
        // The sandbox's app stands in for the site's backend: compare what it serves.
        parity: { http: [{ path: '/healthz' }] },
      })),
      journal,
      defaults: { ttl: 1, quietWindowMs: 1000, dnsTempCapMs: 6000, drainCapMs: 6000, pollMs: 100 },
      retry: { attempts: 2, baseDelayMs: 20, maxDelayMs: 50, callTimeoutMs: 5000 },
      backupKeepMs: 3 * 86_400_000,
    });
    ctl.on('event', (e) => events.push(e));
    sb.startLoad();
  });

  after(async () => {
    await ctl?.close();
    journal?.close();
    await sb.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const callsOf = (domain: string) =>
    calls.filter((c) =>
      c.args.some(
        (a) => a === domain || (a as WebBundle | undefined)?.domain === domain || a === `mig-${domain}`,
      ),
    );
  const index = (list: Call[], host: string, method: string, from = 0) =>
    list.findIndex((c, i) => i >= from && c.host === host && c.method === method);

  it('gates the origin before the temporary IP, installs the bundle instead of addSite, finishes target then origin', async () => {
    const before = calls.length;
    const rec0 = await ctl.startMigration({ domain: 'web.example', to: 'target', id: 'web' });
    assert.equal(rec0.plan.kind, 'web');
    assert.equal(rec0.plan.web?.backupKeepMs, 3 * 86_400_000);
    const rec = await ctl.wait('web');
    assert.equal(rec.phase, 'completed', rec.error);
    const mine = calls.slice(before);
    const at = (host: string, method: string) => index(mine, host, method);
    assert.ok(at('origin', 'inspectWebSite') >= 0, 'the origin was asked for the site at planning');
    const check = at('target', 'checkWebSite');
    assert.ok(check > at('origin', 'inspectWebSite'), 'and the target whether it can host it');
    assert.deepEqual(mine[check]!.args, ['web.example', { server: 'nginx', requires: [] }]);
    const gate = at('origin', 'gateWebSite');
    assert.ok(check < gate, `checked at ${check}, gated at ${gate}`);
    const addAddress = at('origin', 'addAddress');
    assert.ok(gate >= 0 && gate < addAddress, `gate at ${gate}, temporary IP at ${addAddress}`);
    const exp = at('origin', 'exportWebSite');
    const install = at('target', 'installWebSite');
    const sync = at('origin', 'syncSite');
    assert.ok(exp >= 0 && exp < install && install < sync, `export ${exp}, install ${install}, sync ${sync}`);
    assert.equal(at('target', 'addSite'), -1, 'the target got the site from the bundle, not addSite');
    const finishTarget = mine.findIndex((c) => c.method === 'finishWebSite' && c.host === 'target');
    const finishOrigin = mine.findIndex((c) => c.method === 'finishWebSite' && c.host === 'origin');
    const lastRemove = mine.map((c) => c.method).lastIndexOf('removeAddress');
    assert.ok(
      lastRemove < finishTarget && finishTarget < finishOrigin,
      `IPt gone ${lastRemove}, finish target ${finishTarget}, finish origin ${finishOrigin}`,
    );
    assert.deepEqual(mine[finishTarget]!.args, ['web.example.', 'target']);
    assert.deepEqual(mine[finishOrigin]!.args, ['web.example.', 'origin', { backupKeepMs: 3 * 86_400_000 }]);
    assert.equal(at('origin', 'removeSite'), -1);
    assert.equal(at('origin', 'ungateWebSite'), -1);
    const steps = journal
      .entries('web')
      .filter((e) => e.kind === 'step')
      .map((e) => e.step);
    for (const s of [
      STEP.originGateSite,
      STEP.targetInstallSite,
      STEP.targetFinishSite,
      STEP.originFinishSite,
    ])
      assert.ok(steps.includes(s), `${s} in ${steps.join(' ')}`);
    assert.ok(!steps.includes(STEP.targetAddSite) && !steps.includes(STEP.originRemoveSite));
    assert.ok(steps.indexOf(STEP.originGateSite) < steps.indexOf(STEP.addAddress));
    // The bundle went from one agent to the other and nowhere else.
    const installStep = journal.entries('web').find((e) => e.step === STEP.targetInstallSite)!;
    assert.equal(installStep.detail, undefined);
    const key = SECRET.split(' ').pop()!;
    assert.ok(!JSON.stringify(journal.entries('web')).includes(key), 'the bundle is in the journal');
    assert.ok(!JSON.stringify(journal.get('web')).includes(key), 'the bundle is in the plan');
    assert.ok(!JSON.stringify(events).includes(key), 'the bundle is in an event');
    assert.deepEqual((await sb.dns.zones.getRRset('web.example.', 'A'))?.rdata, [sb.opts.targetIp]);
  });

  it('direct mode: the gate goes up at syncing (there is no temp-ip phase), before the install', async () => {
    const before = calls.length;
    await ctl.startMigration({ domain: 'direct.example', to: 'target', id: 'direct', mode: 'direct' });
    const rec = await ctl.wait('direct');
    assert.equal(rec.phase, 'completed', rec.error);
    const steps = journal
      .entries('direct')
      .filter((e) => e.kind === 'step')
      .map((e) => e.step);
    const gate = steps.indexOf(STEP.originGateSite);
    assert.ok(gate >= 0 && gate < steps.indexOf(STEP.targetInstallSite), steps.join(' '));
    assert.equal(steps.filter((x) => x === STEP.originGateSite).length, 1);
    assert.ok(!steps.includes(STEP.addAddress));
    assert.equal(rec.plan.ports[0], sb.httpPort, 'the ports the vhost listens on');
    const mine = calls.slice(before);
    assert.ok(index(mine, 'origin', 'gateWebSite') < index(mine, 'origin', 'exportWebSite'));
    assert.deepEqual(sb.dns.zones.getRRset('direct.example.', 'A')?.rdata, [sb.opts.targetIp]);
  });

  it('refuses a site that cannot be moved at planning, naming each reason with its file and line; nothing changes', async () => {
    const before = calls.length;
    const migrations = journal.list().length;
    const addresses = await sb.origin.listAddresses!();
    const eventsBefore = events.length;
    const err = await ctl.startMigration({ domain: 'outside.example', to: 'target' }).then(
      () => assert.fail('planned'),
      (e: unknown) => e,
    );
    assert.ok(isFerryError(err, 'SITE_NOT_MOVABLE'), String(err));
    assert.match(err.message, /PATH_OUTSIDE_ROOTS: root .*elsewhere is outside every declared root/);
    assert.ok(err.message.includes(`(${originConf}:`), err.message);
    // Where the refusal was read: the root line of outside.example's block.
    const report = await nginxReport(originConf);
    const line = report.sites.find((s) => s.names.includes('outside.example'))!.refusals[0]!.at!.line;
    assert.ok(err.message.includes(`${originConf}:${line})`), err.message);
    // The web server's report asked, and nothing else: no journal entry, no address, no DNS change, no event.
    assert.deepEqual(
      calls.slice(before).map((c) => `${c.host} ${c.method}`),
      ['origin webSites'],
    );
    assert.equal(journal.list().length, migrations);
    assert.deepEqual(await sb.origin.listAddresses!(), addresses);
    assert.deepEqual((await sb.dns.zones.getRRset('outside.example.', 'A'))?.rdata, [sb.opts.originIp]);
    assert.equal(events.length, eventsBefore);
    // A name the origin's web server does not have.
    await assert.rejects(ctl.startMigration({ domain: 'gone.example', to: 'target' }), (e: unknown) =>
      isFerryError(e, 'WEB_SITE_NOT_FOUND'),
    );
    // A target without a web server for Ferry.
    failing.targetReport = 'none';
    try {
      await assert.rejects(
        ctl.startMigration({ domain: 'lacking.example', to: 'target' }),
        (e: unknown) => isFerryError(e, 'TARGET_LACKS') && /--web-config nginx/.test((e as Error).message),
      );
    } finally {
      failing.targetReport = 'nginx';
    }
    assert.equal(journal.list().length, migrations);
    assert.ok(!calls.slice(before).some((c) => ['gateWebSite', 'addAddress', 'addSite'].includes(c.method)));
  });

  it('refuses at planning a site whose PHP-FPM version the target lacks, naming it; nothing changes', async () => {
    const before = calls.length;
    const migrations = journal.list().length;
    const addresses = await sb.origin.listAddresses!();
    const eventsBefore = events.length;
    const err = await ctl.startMigration({ domain: 'oldphp.example', to: 'target' }).then(
      () => assert.fail('planned'),
      (e: unknown) => e,
    );
    assert.ok(isFerryError(err, 'TARGET_LACKS'), String(err));
    const pool = join(dir, 'php', '8.1', 'fpm', 'pool.d', 'oldphp.conf');
    assert.ok(
      err.message.includes(`oldphp.example: it lacks PHP-FPM 8.1 (pool [oldphp] of ${pool})`),
      err.message,
    );
    assert.match(err.message, /\(target target\); nothing was changed$/);
    // The origin read the site and said what it needs; the target's own check refused it.
    const mine = calls.slice(before);
    assert.deepEqual(
      mine.map((c) => `${c.host} ${c.method}`),
      ['origin webSites', 'origin inspectWebSite', 'target webSites', 'target checkWebSite'],
    );
    assert.deepEqual(mine[3]!.args, [
      'oldphp.example',
      {
        server: 'nginx',
        requires: [{ kind: 'php-fpm', name: '8.1', neededBy: `pool [oldphp] of ${pool}` }],
      },
    ]);
    assert.equal(journal.list().length, migrations, 'nothing journaled');
    assert.deepEqual(await sb.origin.listAddresses!(), addresses, 'no temporary IP');
    assert.deepEqual((await sb.dns.zones.getRRset('oldphp.example.', 'A'))?.rdata, [sb.opts.originIp]);
    assert.equal(events.length, eventsBefore);
  });

  it('a failed install before the switch: uninstalled on the target, ungated on the origin, DNS back', async () => {
    await ctl.startMigration({ domain: 'broken.example', to: 'target', id: 'broken' });
    const rec = await ctl.wait('broken');
    assert.equal(rec.phase, 'rolled-back', rec.error);
    const mine = callsOf('broken.example.');
    const install = index(mine, 'target', 'installWebSite');
    const uninstall = index(mine, 'target', 'uninstallWebSite', install);
    const ungate = index(mine, 'origin', 'ungateWebSite', install);
    assert.ok(install >= 0 && uninstall > install && ungate > uninstall, `${install} ${uninstall} ${ungate}`);
    assert.equal(index(mine, 'target', 'finishWebSite'), -1);
    const steps = journal
      .entries('broken')
      .filter((e) => e.kind === 'step')
      .map((e) => e.step);
    assert.ok(
      steps.includes(STEP.undoTargetUninstallSite) && steps.includes(STEP.undoOriginUngateSite),
      steps.join(' '),
    );
    assert.ok(steps.indexOf(STEP.undoRemoveAddress) < steps.indexOf(STEP.undoOriginUngateSite));
    assert.deepEqual((await sb.dns.zones.getRRset('broken.example.', 'A'))?.rdata, [sb.opts.originIp]);
    assert.equal(await sb.target.hasSite('broken.example.'), false);
  });

  it('rolled back after the switch: the reverse migration, then the target uninstalled and the origin ungated', async () => {
    await ctl.startMigration({ domain: 'reverse.example', to: 'target', id: 'reverse' });
    const failed = await ctl.wait('reverse');
    assert.equal(failed.phase, 'failed');
    assert.match(failed.error ?? '', /finishWebSite\(reverse\.example\., target\)/);
    const rec = await ctl.rollback('reverse');
    assert.equal(rec.phase, 'rolled-back', rec.error);
    const steps = journal
      .entries('reverse')
      .filter((e) => e.kind === 'step')
      .map((e) => e.step);
    const uninstall = steps.indexOf(STEP.reverseTargetUninstallSite);
    const ungate = steps.indexOf(STEP.reverseOriginUngateSite);
    assert.ok(steps.indexOf(STEP.reverseOriginServe) < uninstall && uninstall < ungate, steps.join(' '));
    assert.ok(!steps.includes(STEP.reverseTargetRemoveSite) && !steps.includes(STEP.reverseOriginAddSite));
    const mine = callsOf('reverse.example.');
    assert.ok(index(mine, 'origin', 'ungateWebSite') > index(mine, 'target', 'uninstallWebSite'));
    assert.equal(await sb.origin.siteMode!('reverse.example.'), 'serve');
    assert.deepEqual((await sb.dns.zones.getRRset('reverse.example.', 'A'))?.rdata, [sb.opts.originIp]);
  });
});
