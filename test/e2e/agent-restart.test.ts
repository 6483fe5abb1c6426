/**
 * Redirects and the site app outlive their agent: a site moves between network namespaces under
 * load (real agents over HTTP, `ferry controller --config`, unbound, the built-in site server)
 * while the origin's agent is SIGKILLed and started again, as systemd would, once in dns-temp and
 * once in draining. Per engine (userspace: the relay's own process; kernel: the nftables table),
 * asserted:
 * - the redirect at the temporary IP is the same one after each restart (same process, one
 *   table), and so is the origin's site app (its own process), adopted rather than started
 *   again, and the migration completes;
 * - no request fails, anywhere: neither at the temporary IP (in dns-temp it forwards to the
 *   origin's site app, in draining to the target, and keep-alive connections opened before the
 *   cut-over stay on the origin's app, which proxies them) nor at the origin's shared IP;
 * - requests reached the temporary IP while the agent was down in draining;
 * - every acknowledged write is on the target exactly once; no process, table or namespace is
 *   left behind.
 * The records stay in the embedded server: an agent's restart does not involve the DNS provider
 * (a controller's restart does: crash.test.ts runs it with the records in PowerDNS too).
 * Root only (CI runs as root).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../../src/common/time.js';
import { FERRY, agentArgv, putSites } from './netns/agents.js';
import { NET, Topology, netnsSkipReason, type NsChild } from './netns/topology.js';
import { unboundConf } from './netns/services.js';

const SITE = 'shop.example';
const TOKEN = 'restart-e2e-token-' + 'e'.repeat(24);
const ROOT = process.cwd();

const skip = netnsSkipReason({ unbound: ['unbound'], rsync: ['rsync'], iproute2: ['ip'] });
if (skip) console.log(`# skipping the agent-restart e2e test: ${skip}`);
const skipKernel = skip ?? netnsSkipReason({ nftables: ['nft'] });

const ZONE = `$ORIGIN example.
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A ${NET.dns}
shop 2 IN A ${NET.origin}
`;

const config = (dir: string, engine: string) => `journal: ${dir}/journal.sqlite
servers:
  origin:
    agent: http://${NET.origin}:7070
    tokenFile: ${dir}/token
    sharedIps: [${NET.origin}]
    tempIpPool: [${NET.tempIp}]
    web: builtin
    engine: ${engine}
  target:
    agent: http://${NET.target}:7070
    tokenFile: ${dir}/token
    sharedIps: [${NET.target}]
    web: builtin
dns:
  provider: embedded
  listen: { address: ${NET.dns}, port: 53 }
  zones: [${dir}/example.zone]
sites:
  - { domain: ${SITE}, server: origin, ports: [80], kind: builtin }
defaults:
  ttl: 2
  quietWindow: 1500ms
  dnsTempCap: 20s
  drainCap: 20s
  cutoverDrainTimeout: 10s
  poll: 200ms
`;

/** Whether process `pid` runs (a zombie that its new parent has not reaped yet does not). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

interface Result {
  at: number;
  ok: boolean;
  address: string;
  error?: string;
  servedBy: string | null;
}

async function agentRestart(engine: 'userspace' | 'kernel'): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-restart-'));
  const topo = new Topology();
  const onExit = () => topo.destroy();
  process.once('exit', onExit);
  let ok = false;
  try {
    await mkdir(join(dir, 'client'), { recursive: true });
    await writeFile(join(dir, 'client', 'unbound.conf'), unboundConf(join(dir, 'client')));
    await writeFile(join(dir, 'token'), TOKEN + '\n', { mode: 0o600 });
    await writeFile(join(dir, 'example.zone'), ZONE);
    await writeFile(join(dir, 'ferry.yaml'), config(dir, engine));
    topo.create();
    if (engine === 'kernel')
      execFileSync('ip', ['netns', 'exec', topo.ns.origin, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const env = { ...process.env, FERRY_LOG_LEVEL: 'info' };
    const startAgent = (h: 'origin' | 'target'): NsChild =>
      topo.spawn(
        h,
        `agent@${h}`,
        agentArgv({
          address: NET[h],
          id: h,
          tokenFile: join(dir, 'token'),
          dataDir: join(dir, h, 'data'),
          extra: ['--web', 'builtin', '--engine', engine],
        }),
        { cwd: ROOT, env, logFile: join(dir, `agent-${h}.log`) },
      );
    let origin = startAgent('origin');
    const target = startAgent('target');
    for (const a of [origin, target]) await a.waitLine((l) => l.includes('listening on'), 30_000);
    putSites(topo, `http://${NET.origin}:7070`, TOKEN, [SITE]);

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
        `${SITE}=target`,
        '--migrate-delay',
        '6s',
      ],
      {
        cwd: ROOT,
        env,
        logFile: join(dir, 'controller.log'),
      },
    );
    await controller.waitLine((l) => l.includes('"type":"ready"'), 30_000);
    topo.spawn('client', 'unbound', ['unbound', '-d', '-c', join(dir, 'client', 'unbound.conf')], {
      logFile: join(dir, 'unbound.log'),
    });
    const load = topo.spawn(
      'client',
      'load',
      [
        process.execPath,
        '--import',
        'tsx',
        join(ROOT, 'test/e2e/netns/load-child.ts'),
        JSON.stringify({
          sites: [SITE],
          port: 80,
          rate: 40,
          clients: 16,
          staleShare: 0.2,
          staleOverstayMs: 6000,
          watch: SITE,
          requestTimeoutMs: engine === 'kernel' ? 10_000 : 5000,
          resolver: { address: '127.0.0.1', port: 53 },
        }),
      ],
      { cwd: ROOT, stdin: true, logFile: join(dir, 'load.log') },
    );
    await load.waitLine((l) => l.includes('"type":"ready"'), 30_000);

    /** The redirect as the origin runs it: its process (userspace) or its table (kernel). */
    const redirectIdentity = async (): Promise<string> => {
      if (engine === 'kernel') {
        return execFileSync('ip', ['netns', 'exec', topo.ns.origin, 'nft', 'list', 'tables'], {
          encoding: 'utf8',
        })
          .split('\n')
          .filter((l) => l.includes('ferry_'))
          .join(',');
      }
      const state = JSON.parse(await readFile(join(dir, 'origin', 'data', 'agent-state.json'), 'utf8')) as {
        redirects: Array<{ pid?: number }>;
      };
      const pid = state.redirects[0]?.pid;
      if (pid === undefined) return '';
      if (!running(pid)) throw new Error(`process ${pid} is gone`);
      return `pid ${pid}`;
    };

    /** The origin's site app as its agent records it: its own process, which must be alive. */
    const siteAppIdentity = async (): Promise<string> => {
      const state = JSON.parse(await readFile(join(dir, 'origin', 'data', 'agent-state.json'), 'utf8')) as {
        siteApp?: { pid?: number };
      };
      const pid = state.siteApp?.pid;
      if (pid === undefined) return '';
      if (!running(pid)) throw new Error(`process ${pid} is gone`);
      return `pid ${pid}`;
    };

    /** SIGKILL the origin's agent and start it again; the outage is [killedAt, backAt]. */
    const outages: Array<{
      phase: string;
      killedAt: number;
      backAt: number;
      before: string;
      after: string;
      appBefore: string;
      appAfter: string;
    }> = [];
    const killAndRestart = async (phase: string) => {
      const before = await redirectIdentity();
      const appBefore = await siteAppIdentity();
      const killedAt = Date.now();
      origin.child.kill('SIGKILL');
      await origin.exited;
      // Down for a moment, as a supervisor's restart delay would leave it.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await redirectIdentity(), before, `${phase}: the redirect runs on without its agent`);
      assert.equal(await siteAppIdentity(), appBefore, `${phase}: the site app runs on without its agent`);
      origin = startAgent('origin');
      await origin.waitLine((l) => l.includes('listening on'), 30_000);
      const backAt = Date.now();
      outages.push({
        phase,
        killedAt,
        backAt,
        before,
        after: await redirectIdentity(),
        appBefore,
        appAfter: await siteAppIdentity(),
      });
    };

    const phases: Record<string, number> = {};
    let seen = 0;
    let restarting: Promise<void> = Promise.resolve();
    const follow = setInterval(() => {
      for (; seen < controller.lines.length; seen++) {
        let e: { type: string; at?: number; data?: { phase?: string } };
        try {
          e = JSON.parse(controller.lines[seen]!);
        } catch {
          continue;
        }
        const phase = e.type === 'phase' ? e.data?.phase : undefined;
        if (!phase) continue;
        phases[phase] = e.at!;
        if (phase === 'dns-temp' || phase === 'draining') {
          // Early in the phase, while stale clients still use the temporary IP (they keep an answer
          // up to 6 s past its TTL).
          restarting = restarting
            .then(() => new Promise((r) => setTimeout(r, phase === 'draining' ? 200 : 700)))
            .then(() => killAndRestart(phase));
        }
      }
    }, 50);
    let doneLine: string;
    try {
      doneLine = await controller.waitLine((l) => l.includes('"type":"done"'), 150_000);
    } finally {
      clearInterval(follow);
    }
    await restarting;
    const done = JSON.parse(doneLine) as { migrations: Array<{ phase: string; error: string | null }> };
    assert.equal(
      done.migrations[0]!.phase,
      'completed',
      `migration ended ${JSON.stringify(done.migrations[0])}`,
    );
    assert.deepEqual(
      outages.map((o) => o.phase),
      ['dns-temp', 'draining'],
      'the origin agent was killed in dns-temp and in draining',
    );
    for (const o of outages) {
      assert.ok(o.before !== '', `${o.phase}: a redirect ran when the agent was killed`);
      assert.equal(o.after, o.before, `${o.phase}: the restarted agent adopted the running redirect`);
      assert.ok(
        o.appBefore !== '',
        `${o.phase}: the site app ran in its own process when the agent was killed`,
      );
      assert.equal(o.appAfter, o.appBefore, `${o.phase}: the restarted agent adopted the running site app`);
    }
    assert.ok(outages[1]!.killedAt >= phases.draining!, 'the second kill fell in draining');

    await new Promise((r) => setTimeout(r, 1500));
    load.child.stdin!.write('stop\n');
    await load.waitLine((l) => l.includes('"type":"summary"'), 30_000);
    const events = load.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const results = events.filter((e) => e.type === 'result') as unknown as Result[];
    const summary = events.find((e) => e.type === 'summary') as unknown as {
      acknowledgedWrites: Array<{ domain: string; key: string }>;
    };
    assert.ok(results.length > 300, `enough load (${results.length})`);

    // The redirect is gone once the migration completed: no table and no relay process left.
    assert.doesNotMatch(
      execFileSync('ip', ['netns', 'exec', topo.ns.origin, 'nft', 'list', 'tables'], { encoding: 'utf8' }),
      /ferry_/,
      'no nftables table left on the origin',
    );
    if (engine === 'userspace') {
      const pid = Number(outages[0]!.before.slice(4));
      // It exits once its answer to the stop is written.
      assert.ok(
        await waitFor(() => !running(pid), 5000),
        'the relay process exited when its redirect was stopped',
      );
    }

    // Requests: none failed. The relay keeps established connections on their upstream, so
    // keep-alive connections opened before the cut-over still reach the origin's site app in
    // draining (it proxies them to the target); that app, in its own process, did not go with the
    // agent, nor did the redirect in dns-temp that forwards to it.
    const [dnsTemp, drain] = [outages[0]!, outages[1]!];
    const failures = results.filter((r) => !r.ok);
    const context = `outages ${JSON.stringify(outages)}; phases ${JSON.stringify(phases)}`;
    assert.deepEqual(failures, [], `no request failed; ${context}`);
    const drainingAtIpt = results.filter(
      (r) => r.address === NET.tempIp && r.at > drain.killedAt + 500 && r.at <= drain.backAt,
    );
    assert.ok(
      drainingAtIpt.length > 5,
      `requests reached the temporary IP while the agent was down in draining (${drainingAtIpt.length})`,
    );
    const dnsTempAtIpt = results.filter(
      (r) => r.address === NET.tempIp && r.at > dnsTemp.killedAt && r.at <= dnsTemp.backAt,
    );

    // Writes: every acknowledged one on the target exactly once.
    const text = await readFile(join(dir, 'target', 'data', 'sites', SITE, 'orders.jsonl'), 'utf8');
    const count = new Map<string, number>();
    for (const l of text.split('\n').filter(Boolean)) {
      const k = (JSON.parse(l) as { key: string }).key;
      count.set(k, (count.get(k) ?? 0) + 1);
    }
    const acked = summary.acknowledgedWrites.filter((w) => w.domain === SITE);
    assert.ok(acked.length > 20, `writes were made (${acked.length})`);
    assert.deepEqual(
      acked.filter((w) => count.get(w.key) !== 1),
      [],
      'every acknowledged write on the target exactly once',
    );

    console.log(
      `# agent restart (${engine}): ${results.length} requests, ${acked.length} writes, 0 failed; agent down ${dnsTemp.backAt - dnsTemp.killedAt} ms in dns-temp ` +
        `(${dnsTempAtIpt.length} requests at the temporary IP meanwhile) and ${drain.backAt - drain.killedAt} ms in draining (${drainingAtIpt.length} at the temporary IP meanwhile)`,
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
    else console.log(`# agent-restart e2e failed; logs kept in ${dir}`);
  }
}

test(
  'the origin agent SIGKILLed and restarted in dns-temp and in draining: the userspace redirect and the site app (their own processes) are adopted, no request fails',
  { skip: skip ?? false, timeout: 180_000 },
  () => agentRestart('userspace'),
);

test(
  'the same with the kernel redirect (its nftables table)',
  { skip: skipKernel ?? false, timeout: 180_000 },
  () => agentRestart('kernel'),
);
