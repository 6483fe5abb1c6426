/**
 * IPv6 beside IPv4, and relay-host mode, through real agents over a real network (issue 12): the
 * namespaces of test/e2e/netns/topology.ts with 2001:db8::/64 beside 10.77.0.0/24, and
 *   client  unbound and the load generator, its users split between A over IPv4 and AAAA over IPv6
 *   dns     `ferry controller --config` (sharedIps6, tempIpPool6, and relayHost in the relay case)
 *   origin  `ferry agent`: 3 sites with A and AAAA on its shared addresses
 *   target  `ferry agent`
 *   relay   (relay case) `ferry agent` carrying the temporary IPs and their redirects
 * Agents are driven over HTTP in the first case and over HTTPS (a CA in ferry.yaml) in the second.
 * The records are in the controller's embedded server in the first case, and in PowerDNS (in the
 * dns namespace, `dns: provider: powerdns`) in the second, when it is installed: the A and AAAA
 * changes then go through its HTTP API. What the two cases differ in otherwise (relay host, TLS)
 * does not depend on where the records are.
 * One site moves from origin to target under load. Asserted, for both families: no failed request
 * on any site, every acknowledged write on the target exactly once, no write on the origin after
 * the cut-over, the other sites untouched, A answers IP1 → IPt → IP2 and AAAA answers IP1v6 →
 * IPtv6 → IP2v6 as the resolver gave them, and both temporary addresses on the host carrying the
 * redirect (the origin, or the relay host and never the origin) during the migration, gone after.
 * Root only (CI runs as root); everything it starts and creates is removed, pass or fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STEP, WAIT, waitEndNote } from '../../src/migration/index.js';
import { findBinary } from './helpers.js';
import { powerDnsFolder } from './dns-interop-servers.js';
import { FERRY, agentArgv, putSites } from './netns/agents.js';
import { assertWriteInvariants, nginxConf, unboundConf, until } from './netns/services.js';
import { NET, NET6, Topology, netnsSkipReason, type Host, type NsChild } from './netns/topology.js';
import { selfSignedCert } from '../certs.js';

const SITES = ['shop.example', 'blog.example', 'news.example'];
const MIGRATED = SITES[0]!;
const TOKEN = 'netns-v6-e2e-token-' + 'e'.repeat(24);
const ROOT = process.cwd();

const skip = netnsSkipReason({ unbound: ['unbound'], nginx: ['nginx'], rsync: ['rsync'], iproute2: ['ip'] });
if (skip) console.log(`# skipping the IPv6 / relay-host namespace e2e tests: ${skip}`);
const skipTls = skip ?? netnsSkipReason({ openssl: ['openssl'] });
if (!skip && skipTls)
  console.log(`# skipping the relay-host namespace e2e test (agents over HTTPS): ${skipTls}`);

const ZONE = `$ORIGIN example.
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A ${NET.dns}
${SITES.map((s) => `${s.split('.')[0]} 2 IN A ${NET.origin}\n${s.split('.')[0]} 2 IN AAAA ${NET6.origin}`).join('\n')}
`;

interface Scenario {
  web: 'nginx' | 'builtin';
  /** Relay-host mode: IPt and IPtv6 and their redirects on the relay host, not the origin. */
  relay: boolean;
  /** The agents' API over HTTPS, trusted through `ca:` (else plain HTTP). */
  tls: boolean;
  /** Where the records are: the controller's embedded server, or PowerDNS through its API. */
  records: 'embedded' | 'powerdns';
}

/** PowerDNS's API in the dns namespace, and its key. */
const PDNS_API = { port: 8081, key: 'netns-v6-pdns-key-' + 'f'.repeat(16) };

function ferryYaml(dir: string, sc: Scenario): string {
  const scheme = sc.tls ? 'https' : 'http';
  const ca = sc.tls ? `    ca: ${dir}/agent-cert.pem\n` : '';
  const temps = `    tempIpPool: [${NET.tempIp}]\n    tempIpPool6: ["${NET6.tempIp}"]\n`;
  return `journal: ${dir}/journal.sqlite
servers:
  origin:
    agent: ${scheme}://${NET.origin}:7070
    tokenFile: ${dir}/token
${ca}    sharedIps: [${NET.origin}]
    sharedIps6: ["${NET6.origin}"]
${sc.relay ? '    relayHost: relay\n' : temps}    web: ${sc.web}
    engine: userspace
  target:
    agent: ${scheme}://${NET.target}:7070
    tokenFile: ${dir}/token
${ca}    sharedIps: [${NET.target}]
    sharedIps6: ["${NET6.target}"]
    web: ${sc.web}
${
  sc.relay
    ? `  relay:
    agent: ${scheme}://${NET.relay}:7070
    tokenFile: ${dir}/token
${ca}    sharedIps: [${NET.relay}]
${temps}    engine: userspace
`
    : ''
}dns:
${
  sc.records === 'powerdns'
    ? `  provider: powerdns
  api: http://${NET.dns}:${PDNS_API.port}
  apiKeyFile: ${dir}/pdns.key
  zone: example.
  servers: [{ address: ${NET.dns}, port: 53 }]`
    : `  provider: embedded
  listen: { address: ${NET.dns}, port: 53 }
  zones: [${dir}/example.zone]`
}
sites:
${SITES.map((s) => `  - { domain: ${s}, server: origin, ports: [80], kind: ${sc.web} }`).join('\n')}
defaults:
  ttl: 2
  quietWindow: 1500ms
  dnsTempCap: 15s
  drainCap: 15s
  cutoverDrainTimeout: 10s
  poll: 200ms
`;
}

interface Result {
  domain: string;
  ok: boolean;
  servedBy: string | null;
  status: number | null;
  error?: string;
  address: string;
  at: number;
  family: 4 | 6;
}

async function migrateUnderLoad(sc: Scenario): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-netns6-'));
  const topo = new Topology({ ipv6: true, relay: sc.relay });
  const tempHost: Host = sc.relay ? 'relay' : 'origin';
  let ok = false;
  const onExit = () => topo.destroy();
  process.once('exit', onExit);
  try {
    for (const h of ['origin', 'target']) {
      await mkdir(join(dir, h, 'ferry.d'), { recursive: true });
      await mkdir(join(dir, h, 'tmp'), { recursive: true });
      await writeFile(join(dir, h, 'nginx.conf'), nginxConf(join(dir, h)));
    }
    await mkdir(join(dir, 'client'), { recursive: true });
    await writeFile(join(dir, 'client', 'unbound.conf'), unboundConf(join(dir, 'client')));
    await writeFile(join(dir, 'token'), TOKEN + '\n', { mode: 0o600 });
    await writeFile(join(dir, 'example.zone'), ZONE);
    await writeFile(join(dir, 'ferry.yaml'), ferryYaml(dir, sc));
    // One certificate for every agent (its addresses as SANs); ferry.yaml trusts it as the CA.
    const tls = sc.tls
      ? ['--tls-cert', join(dir, 'agent-cert.pem'), '--tls-key', join(dir, 'agent-key.pem')]
      : [];
    if (sc.tls) {
      selfSignedCert({
        keyFile: join(dir, 'agent-key.pem'),
        certFile: join(dir, 'agent-cert.pem'),
        cn: 'ferry-agents',
        names: [NET.origin, NET.target, NET.relay],
      });
    }

    topo.create();
    const env = { ...process.env, FERRY_LOG_LEVEL: 'info' };
    const dig = findBinary('kdig', 'dig')!;

    if (sc.records === 'powerdns') {
      const pd = join(dir, 'pdns');
      await mkdir(pd);
      powerDnsFolder(pd, {
        address: NET.dns,
        port: 53,
        apiPort: PDNS_API.port,
        apiKey: PDNS_API.key,
        primaryZones: [{ origin: 'example.', text: ZONE }],
      });
      await writeFile(join(dir, 'pdns.key'), PDNS_API.key + '\n', { mode: 0o600 });
      topo.spawn('dns', 'pdns', ['pdns_server', `--config-dir=${pd}`], { logFile: join(dir, 'pdns.log') });
      const soa = () => {
        try {
          return execFileSync(
            'ip',
            ['netns', 'exec', topo.ns.dns, dig, `@${NET.dns}`, 'example.', 'SOA', '+short', '+timeout=1'],
            { encoding: 'utf8', timeout: 5000 },
          ).trim();
        } catch {
          return '';
        }
      };
      await until('PowerDNS', 20_000, () => soa() !== '');
    }

    if (sc.web === 'nginx') {
      for (const h of ['origin', 'target'] as const) {
        const hd = join(dir, h);
        topo.spawn(h, `nginx@${h}`, [
          'nginx',
          '-c',
          join(hd, 'nginx.conf'),
          '-e',
          join(hd, 'nginx-error.log'),
        ]);
      }
    }
    // Origin and target serve on both families; the relay host serves nothing of its own.
    const agentHosts: Array<'origin' | 'target' | 'relay'> = sc.relay
      ? ['origin', 'target', 'relay']
      : ['origin', 'target'];
    const agents: Partial<Record<Host, NsChild>> = {};
    for (const h of agentHosts) {
      const hd = join(dir, h);
      const web =
        h === 'relay'
          ? ['--web', 'builtin']
          : [
              '--shared-ip',
              NET6[h],
              '--web',
              sc.web,
              '--nginx-conf-dir',
              join(hd, 'ferry.d'),
              '--nginx-command',
              `nginx -c ${join(hd, 'nginx.conf')} -e ${join(hd, 'nginx-error.log')}`,
              '--app-port',
              '8080',
            ];
      agents[h] = topo.spawn(
        h,
        `agent@${h}`,
        agentArgv({
          address: NET[h],
          id: h,
          tokenFile: join(dir, 'token'),
          dataDir: join(hd, 'data'),
          extra: ['--engine', 'userspace', ...web, ...tls],
        }),
        { cwd: ROOT, env, logFile: join(dir, `agent-${h}.log`) },
      );
    }
    for (const h of agentHosts) await agents[h]!.waitLine((l) => l.includes('listening on'), 30_000);

    // The origin's three sites, created through its API as docs/deployment.md says.
    putSites(topo, `${sc.tls ? 'https' : 'http'}://${NET.origin}:7070`, TOKEN, SITES, {
      ...process.env,
      ...(sc.tls ? { NODE_EXTRA_CA_CERTS: join(dir, 'agent-cert.pem') } : {}),
    });

    // The controller as deployed; --migrate names no mode: relay-host comes from the YAML.
    const controller = topo.spawn(
      'dns',
      'controller',
      [
        ...FERRY,
        'controller',
        '--config',
        join(dir, 'ferry.yaml'),
        '--events',
        '--migrate',
        `${MIGRATED}=target`,
        '--migrate-delay',
        '8s',
      ],
      { cwd: ROOT, env, logFile: join(dir, 'controller.log') },
    );
    await controller.waitLine((l) => l.includes('"type":"ready"'), 30_000);

    topo.spawn('client', 'unbound', ['unbound', '-d', '-c', join(dir, 'client', 'unbound.conf')], {
      logFile: join(dir, 'unbound.log'),
    });
    const answer = (type: string) => {
      try {
        return execFileSync(
          'ip',
          ['netns', 'exec', topo.ns.client, dig, '@127.0.0.1', MIGRATED, type, '+short', '+timeout=1'],
          { encoding: 'utf8', timeout: 5000 },
        ).trim();
      } catch {
        return '';
      }
    };
    await until('unbound', 20_000, () => answer('A') === NET.origin && answer('AAAA') === NET6.origin);
    const load = topo.spawn(
      'client',
      'load',
      [
        process.execPath,
        '--import',
        'tsx',
        join(ROOT, 'test/e2e/netns/load-child.ts'),
        JSON.stringify({
          sites: SITES,
          port: 80,
          rate: 30,
          clients: 15,
          staleShare: 0.2,
          staleOverstayMs: 3000,
          watch: MIGRATED,
          requestTimeoutMs: 5000,
          resolver: { address: '127.0.0.1', port: 53 },
          ipv6: { rate: 25, clients: 12 },
        }),
      ],
      { cwd: ROOT, stdin: true, logFile: join(dir, 'load.log') },
    );
    await load.waitLine((l) => l.includes('"type":"ready"'), 30_000);

    // Follow the migration; look at the interfaces while it runs.
    const seenUp: Record<string, { temp: boolean; temp6: boolean; onOrigin: boolean }> = {};
    let cutoverAt = Infinity;
    let seen = 0;
    const read = () => {
      for (; seen < controller.lines.length; seen++) {
        let e: { type: string; at?: number; data?: { phase?: string; step?: string } };
        try {
          e = JSON.parse(controller.lines[seen]!);
        } catch {
          continue;
        }
        if (
          e.type === 'phase' &&
          e.data?.phase &&
          ['dns-temp', 'syncing', 'cutover', 'draining'].includes(e.data.phase)
        ) {
          const on = topo.addresses(tempHost);
          const origin = topo.addresses('origin');
          seenUp[e.data.phase] = {
            temp: on.includes(NET.tempIp),
            temp6: on.includes(NET6.tempIp),
            onOrigin: sc.relay && (origin.includes(NET.tempIp) || origin.includes(NET6.tempIp)),
          };
        }
        if (e.type === 'step' && e.data?.step === STEP.targetServe) cutoverAt = e.at!;
      }
    };
    const follow = setInterval(read, 100);
    let doneLine: string;
    try {
      doneLine = await controller.waitLine((l) => l.includes('"type":"done"'), 150_000);
    } finally {
      clearInterval(follow);
    }
    read();
    const done = JSON.parse(doneLine) as {
      migrations: Array<{ id: string; phase: string; error: string | null }>;
    };
    assert.equal(
      done.migrations[0]!.phase,
      'completed',
      `migration ended ${JSON.stringify(done.migrations[0])}`,
    );
    const journal = new Database(join(dir, 'journal.sqlite'), { readonly: true });
    const plan = JSON.parse(
      (journal.prepare('SELECT plan FROM migrations').get() as { plan: string }).plan,
    ) as { mode?: string; relayHost?: string; tempIp: string; v6?: { tempIp: string } };
    const ends = [waitEndNote(WAIT.ip1Quiet, 'quiet'), waitEndNote(WAIT.ip1Quiet, 'cap')];
    const ip1 = (
      journal.prepare('SELECT step FROM journal WHERE step IN (?, ?) ORDER BY seq').all(...ends) as Array<{
        step: string;
      }>
    ).map((r) => r.step);
    journal.close();
    assert.equal(plan.mode ?? 'temp-ip', sc.relay ? 'relay-host' : 'temp-ip');
    if (sc.relay) assert.equal(plan.relayHost, 'relay', 'the relay host named in ferry.yaml');
    assert.deepEqual([plan.tempIp, plan.v6?.tempIp], [NET.tempIp, NET6.tempIp], 'IPv6 moved with IPv4');
    // Relayed requests (from IPt and IPtv6) told apart from direct ones on both families.
    assert.deepEqual(
      ip1,
      [waitEndNote(WAIT.ip1Quiet, 'quiet')],
      'the IP1 wait ended on observed quiet, not at its cap',
    );

    // Cool down under load, then collect the clients' view.
    await new Promise((r) => setTimeout(r, 2000));
    load.child.stdin!.write('stop\n');
    await load.waitLine((l) => l.includes('"type":"summary"'), 30_000);
    await topo.stop(controller);
    const events = load.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const results = events.filter((e) => e.type === 'result') as unknown as Result[];
    const summary = events.find((e) => e.type === 'summary') as unknown as {
      acknowledgedWrites: Array<{ domain: string; key: string; id: number }>;
    };
    const answers = (family: 4 | 6) =>
      events.filter((e) => e.type === 'dns' && e.family === family).map((e) => e.address as string);

    // Both temporary addresses on the host carrying the redirect during the migration, gone after.
    const up = { temp: true, temp6: true, onOrigin: false };
    assert.deepEqual(
      seenUp,
      { 'dns-temp': up, syncing: up, cutover: up, draining: up },
      `IPt and IPtv6 on ${tempHost} (and only there) during the migration`,
    );
    const after = topo.addresses(tempHost);
    assert.ok(
      !after.includes(NET.tempIp) && !after.includes(NET6.tempIp),
      `IPt and IPtv6 removed from ${tempHost}: ${after.join(' ')}`,
    );
    assert.ok(
      topo.addresses('origin').includes(NET.origin) && topo.addresses('origin').includes(NET6.origin),
      'the shared addresses stay',
    );

    // No failed request, on any site, over either family.
    const failures = results.filter((r) => !r.ok);
    assert.equal(failures.length, 0, `failed requests: ${JSON.stringify(failures.slice(0, 10))}`);
    for (const family of [4, 6] as const) {
      const mine = results.filter((r) => r.family === family && r.domain === MIGRATED);
      const others = results.filter((r) => r.family === family && r.domain !== MIGRATED);
      assert.ok(
        mine.length > 80 && others.length > 80,
        `enough IPv${family} load (${mine.length} / ${others.length})`,
      );
      assert.ok(
        mine.some((r) => r.servedBy === 'origin') && mine.some((r) => r.servedBy === 'target'),
        `both servers served the migrated site over IPv${family}`,
      );
      assert.ok(
        mine.some((r) => r.address === (family === 4 ? NET.tempIp : NET6.tempIp)),
        `IPv${family} requests went through the temporary address`,
      );
      assert.ok(
        others.every((r) => r.servedBy === 'origin'),
        `the other sites stayed on the origin over IPv${family}`,
      );
    }

    // DNS as the clients' resolver gave it, per family.
    assert.deepEqual(answers(4), [NET.origin, NET.tempIp, NET.target], 'A: IP1 → IPt → IP2');
    assert.deepEqual(answers(6), [NET6.origin, NET6.tempIp, NET6.target], 'AAAA: IP1v6 → IPtv6 → IP2v6');

    // Writes: every acknowledged one on the target exactly once, none on the origin after the
    // cut-over; the other sites' writes once on the origin and nothing of theirs on the target.
    const acked = summary.acknowledgedWrites;
    const writes = await assertWriteInvariants({
      dir,
      acked,
      migrated: MIGRATED,
      others: SITES.slice(1),
      cutoverAt,
    });
    if (sc.records === 'powerdns')
      assert.match(
        controller.lines.join('\n') + readFileSync(join(dir, 'controller.log'), 'utf8'),
        /takes the key and has example\. \(SOA-EDIT-API INCREASE\)/,
        'the controller drove PowerDNS',
      );
    const byFamily = (f: 4 | 6) => results.filter((r) => r.family === f && r.domain === MIGRATED).length;
    console.log(
      `# netns e2e (${sc.relay ? 'relay-host' : 'temp-ip'} mode, ${sc.web}, agents over ${sc.tls ? 'HTTPS' : 'HTTP'}, records in ${sc.records}): ${results.length} requests, to ${MIGRATED} ${byFamily(4)} over IPv4 and ${byFamily(6)} over IPv6, ` +
        `${writes} writes on ${MIGRATED}, 0 failed`,
    );
    ok = true;
  } finally {
    topo.destroy();
    process.off('exit', onExit);
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(topo.id));
    assert.deepEqual(left, [], 'every namespace removed');
    if (ok) await rm(dir, { recursive: true, force: true });
    else console.log(`# netns e2e failed; logs kept in ${dir}`);
  }
}

test(
  'A and AAAA move together under load over IPv4 and IPv6: agents over HTTP, nginx, IPt and IPtv6 on the origin',
  { skip: skip ?? false, timeout: 180_000 },
  () => migrateUnderLoad({ web: 'nginx', relay: false, tls: false, records: 'embedded' }),
);

// With PowerDNS where it is installed (the A and AAAA changes through its API), else the embedded server.
const records = findBinary('pdns_server') ? 'powerdns' : 'embedded';
test(
  `relay-host mode from ferry.yaml: IPt, IPtv6 and their redirects on a relay host, never on the origin; agents over HTTPS; records in ${records}`,
  { skip: skipTls ?? false, timeout: 180_000 },
  () => migrateUnderLoad({ web: 'builtin', relay: true, tls: true, records }),
);
