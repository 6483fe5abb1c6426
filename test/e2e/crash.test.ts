/**
 * Crash-safe resume (issue 7): the controller runs in a child process and is killed with SIGKILL
 * once in each phase of a migration, in turn (twice in cut-over: before and after the switch),
 * and restarted each time with `resumeAll()`. The platform lives in this process: the name
 * server, and origin and target as real host agents behind their HTTP API (`startAgent`, as
 * `ferry agent` runs them, rsync between them). The controller drives them as it does in a
 * deployment, through `HttpHostDriver` and TSIG-signed RFC 2136 updates, so they keep carrying
 * the load throughout, as real hosts would while their controller is down. The migration
 * completes with the design's invariants intact.
 *
 * The same with the records in PowerDNS (the powerdns provider, through its HTTP API), killed
 * where the provider matters: right after PowerDNS has applied each change and before the
 * controller hears of it, so that nothing after the change is in the journal (lowering the TTL,
 * IPt, IP2, the TTL restored). Kills in the other phases exercise the agents, the journal and
 * resumeAll, which do not depend on the provider; the first variant covers them.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { build } from 'esbuild';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Sandbox, type DemoSummary } from '../../src/sandbox/index.js';
import { STEP, WAIT, Journal, type MigrationRecord } from '../../src/migration/index.js';
import type { ControllerEvent } from '../../src/controller/index.js';
import { sleep } from '../../src/common/time.js';
import type { CrashControllerConfig } from './crash-controller.js';
import { findBinary } from './helpers.js';
import { noPowerDns, startPowerDnsZone } from './dns-interop-servers.js';
import { loopbackNet, startLoadThroughKills } from './invariants.js';

const CHILD = join(fileURLToPath(new URL('.', import.meta.url)), 'crash-controller.ts');
/** The controller bundled once (esbuild), so that a restart costs a Node start, not a TypeScript compile. */
const BUNDLE = fileURLToPath(
  new URL(`../../node_modules/.cache/ferry-crash-controller-${process.pid}.mjs`, import.meta.url),
);

/**
 * A point where the controller is killed: an event of the controller inside `phase`, or
 * (`afterDnsChange`) the moment PowerDNS has applied a change, before its answer reaches the controller.
 */
interface KillPoint {
  phase: string;
  match?: (e: ControllerEvent) => boolean;
  afterDnsChange?: true;
}

/** Where the controller is killed, in order: one event inside each phase. */
const EVERY_PHASE: KillPoint[] = [
  { phase: 'planned', match: (e) => e.type === 'phase' && e.data.phase === 'planned' },
  { phase: 'ttl-lowered', match: (e) => e.type === 'wait' && e.data.what === WAIT.oldTtl },
  { phase: 'temp-ip', match: (e) => e.type === 'step' && e.data.step === STEP.startRedirect },
  { phase: 'dns-temp', match: (e) => e.type === 'wait' && e.data.what === WAIT.ip1Quiet },
  { phase: 'syncing', match: (e) => e.type === 'step' && e.data.step === STEP.initialSync },
  { phase: 'preflight', match: (e) => e.type === 'step' && e.data.step === STEP.parity },
  { phase: 'cutover', match: (e) => e.type === 'step' && e.data.step === STEP.finalSync },
  { phase: 'cutover', match: (e) => e.type === 'step' && e.data.step === STEP.originProxy },
  { phase: 'draining', match: (e) => e.type === 'wait' && e.data.what === WAIT.iptQuiet },
  { phase: 'completed', match: (e) => e.type === 'step' && e.data.step === STEP.stopRedirect },
];

/** With PowerDNS: after each change it applies, in the phase that makes it. */
const AFTER_EACH_DNS_CHANGE: KillPoint[] = [
  { phase: 'ttl-lowered', afterDnsChange: true },
  { phase: 'dns-temp', afterDnsChange: true },
  { phase: 'cutover', afterDnsChange: true },
  { phase: 'draining', afterDnsChange: true },
];

/** The key the controller signs its zone updates with. */
const TSIG = {
  name: 'crash-controller.',
  algorithm: 'hmac-sha256',
  secret: Buffer.from('crash-test-tsig-secret-0123456789').toString('base64'),
};

/** The migration of crash.example. on `net` with the controller killed at each of `KILLS`. */
function killedAndResumed(
  label: string,
  net: string,
  KILLS: KillPoint[],
  records: 'embedded' | 'powerdns',
  skip: string | false,
): void {
  describe(`controller killed with SIGKILL ${label}, resumed each time`, { skip }, () => {
    const opts = {
      agents: 'http' as const,
      dnsUpdateKey: TSIG,
      ...loopbackNet(net),
      sites: ['crash.example.', 'calm.example.', 'still.example.'],
      ttl: 2,
      recordTtl: 3,
      staleOverstayMs: 2000,
      quietWindowMs: 1000,
      dnsTempCapMs: 15_000,
      drainCapMs: 15_000,
    };
    let sb: Sandbox;
    let ext: Awaited<ReturnType<typeof startPowerDnsZone>> | undefined;
    /** Between the controller and PowerDNS's API: kills the controller once a change is applied. */
    let apiProxy: Server | undefined;
    /** Each change PowerDNS applied: owner, type, TTL and records. */
    const applied: string[] = [];
    let lastPhase = '';
    let child: ChildProcess | undefined;
    const kills: Array<{ phase: string; event: string; restartMs?: number }> = [];
    let record: MigrationRecord;
    let summary: DemoSummary;
    let spawns = 0;
    let bundled = false;

    /** A stub resolver as libc's: a few seconds per try, two tries (the 2-core machine is shared). */
    /** Run the controller until it ends or the next kill point; resolves with its final records, or null when killed. */
    function runController(cfg: CrashControllerConfig, killedAt?: number): Promise<MigrationRecord[] | null> {
      spawns++;
      const lastKill = kills[kills.length - 1];
      return new Promise((resolve, reject) => {
        const p = spawn(process.execPath, bundled ? [BUNDLE] : ['--import', 'tsx', CHILD], {
          env: { ...process.env, FERRY_CRASH_CONFIG: JSON.stringify(cfg) },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        child = p;
        let done: MigrationRecord[] | null = null;
        let stderr = '';
        p.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
        createInterface({ input: p.stdout! }).on('line', (line) => {
          const msg = JSON.parse(line) as ControllerEvent | { done: MigrationRecord[] };
          if (killedAt !== undefined && lastKill && lastKill.restartMs === undefined)
            lastKill.restartMs = Date.now() - killedAt;
          if ('done' in msg) {
            done = msg.done;
            return;
          }
          if (msg.type === 'phase') lastPhase = String(msg.data.phase);
          const next = KILLS[kills.length];
          if (next?.match && !p.killed && next.match(msg)) {
            kills.push({
              phase: next.phase,
              event: `${msg.type} ${String(msg.data.step ?? msg.data.what ?? msg.data.phase)}`,
            });
            p.kill('SIGKILL');
          }
        });
        p.once('error', reject);
        p.once('exit', (code, signal) => {
          child = undefined;
          if (signal === 'SIGKILL') resolve(null);
          else if (code === 0 && done) resolve(done);
          else reject(new Error(`controller exited ${code ?? signal}: ${stderr.slice(-2000)}`));
        });
      });
    }

    before(async () => {
      try {
        await build({
          entryPoints: [CHILD],
          outfile: BUNDLE,
          bundle: true,
          platform: 'node',
          format: 'esm',
          target: 'node20',
          packages: 'external',
          logLevel: 'silent',
        });
        bundled = true;
      } catch {
        bundled = false; // run through tsx: slower restarts, same behaviour
      }
      if (records === 'powerdns') {
        ext = await startPowerDnsZone(new Sandbox(opts).zoneText(), opts.dnsAddress);
        apiProxy = await powerDnsKiller(ext.pdns.api, (change) => {
          applied.push(change);
          const next = KILLS[kills.length];
          if (!next?.afterDnsChange || !child || child.killed) return false;
          kills.push({ phase: lastPhase, event: `PowerDNS applied ${change}` });
          child.kill('SIGKILL');
          return true;
        });
      }
      sb = new Sandbox({
        ...opts,
        ...(ext ? { externalDns: { server: ext.server, provider: ext.provider } } : {}),
      });
      await sb.start();
      startLoadThroughKills(sb, ext?.server ?? { address: sb.dns.address, port: sb.dns.port });
      await sleep(1000);
      const journalPath = join(sb.dataDir, 'crash-journal.sqlite');
      const base: Omit<CrashControllerConfig, 'action'> = {
        agents: { origin: sb.agentApis.origin!, target: sb.agentApis.target! },
        dns: ext?.server ?? { address: sb.dns.address, port: sb.dns.port },
        zone: sb.opts.zone,
        tsig: TSIG,
        ...(ext && apiProxy
          ? {
              powerdns: {
                api: `http://${opts.dnsAddress}:${(apiProxy.address() as AddressInfo).port}`,
                apiKey: ext.pdns.apiKey,
              },
            }
          : {}),
        journal: journalPath,
        servers: [
          { id: 'origin', sharedIps: [sb.opts.originIp], tempIpPool: [sb.opts.tempIp] },
          { id: 'target', sharedIps: [sb.opts.targetIp], tempIpPool: [] },
        ],
        sites: sb.opts.sites.map((domain) => ({ domain, server: 'origin', ports: [sb.httpPort] })),
        defaults: {
          ttl: 2,
          quietWindowMs: 1000,
          dnsTempCapMs: 15_000,
          drainCapMs: 15_000,
          cutoverDrainTimeoutMs: 10_000,
          pollMs: 100,
        },
      };
      let result = await runController({
        ...base,
        action: 'start',
        start: { domain: 'crash.example.', to: 'target', id: 'crash-1' },
      });
      while (!result && spawns < KILLS.length + 3)
        result = await runController({ ...base, action: 'resume' }, Date.now());
      assert.ok(result, 'the controller never finished');
      await sleep(1500);
      await sb.load.stop();
      const journal = new Journal(journalPath);
      try {
        record = journal.get('crash-1')!;
        summary = await sb.summarize(record, journal);
      } finally {
        journal.close();
      }
    });

    after(async () => {
      rmSync(BUNDLE, { force: true });
      child?.kill('SIGKILL');
      await sb?.stop();
      apiProxy?.closeAllConnections();
      await new Promise((r) => (apiProxy ? apiProxy.close(r) : r(undefined)));
      await ext?.stop();
    });

    it('was killed once in each phase (twice in cut-over) and completed', (t) => {
      t.diagnostic(
        `controller ${bundled ? 'bundled with esbuild' : 'run through tsx'}; kills: ${kills.map((k) => `${k.phase} at ${k.event}, controller back in ${k.restartMs ?? '?'} ms`).join('; ')}`,
      );
      assert.deepEqual(
        kills.map((k) => k.phase),
        KILLS.map((k) => k.phase),
        JSON.stringify(kills),
      );
      assert.equal(record.phase, 'completed', JSON.stringify(record));
    });

    it('failed no request, on the migrated site or the others', () => {
      assert.ok(summary.requests.total > 100, `only ${summary.requests.total} requests`);
      assert.equal(summary.requests.failed, 0, JSON.stringify(summary.failures));
      assert.equal(summary.otherSites.failed, 0, JSON.stringify(summary.failures));
    });

    it('kept every acknowledged write on the target exactly once, none on the origin after cut-over', () => {
      assert.ok(summary.writes.acknowledged > 20);
      assert.equal(summary.writes.missing, 0);
      assert.equal(summary.writes.duplicated, 0);
      assert.equal(summary.writes.onOriginAfterCutover, 0);
    });

    it('answered IP1 → IPt → IP2 in DNS, and restored the TTL', async () => {
      assert.deepEqual(
        summary.dnsAnswers.map((a) => a.address),
        [sb.opts.originIp, sb.opts.tempIp, sb.opts.targetIp],
      );
      const record = ext
        ? await ext.provider.getRRset('crash.example.', 'A')
        : sb.dns.zones.getRRset('crash.example.', 'A');
      assert.deepEqual(record, { ttl: 3, rdata: [sb.opts.targetIp] });
    });

    if (records === 'powerdns')
      it('made each DNS change once: a resumed controller sees what PowerDNS already applied', () => {
        const { originIp, tempIp, targetIp } = sb.opts;
        assert.deepEqual(applied, [
          `crash.example. A 2 ${originIp}`,
          `crash.example. A 2 ${tempIp}`,
          `crash.example. A 2 ${targetIp}`,
          `crash.example. A 3 ${targetIp}`,
        ]);
      });

    it('left no temporary IP or redirect, and the site only on the target', async () => {
      assert.deepEqual(await sb.origin.listAddresses(), []);
      assert.equal(await sb.origin.redirectStats('mig-crash-1'), undefined);
      assert.equal(sb.originSites.hasSite('crash.example.'), false);
      assert.equal(sb.targetSites.mode('crash.example.'), 'serve');
      assert.ok(sb.originSites.hasSite('calm.example.') && sb.originSites.hasSite('still.example.'));
    });
  });
}

/**
 * An HTTP proxy in front of PowerDNS's API on the API's address. After PowerDNS has applied a
 * PATCH, `applied` gets the change (`owner type ttl records`); when it returns true the answer is
 * dropped (the controller was killed before it could read it).
 */
async function powerDnsKiller(api: string, applied: (change: string) => boolean): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks);
        const answer = await fetch(api + (req.url ?? ''), {
          method: req.method ?? 'GET',
          headers: {
            'X-API-Key': String(req.headers['x-api-key'] ?? ''),
            ...(body.length ? { 'Content-Type': 'application/json' } : {}),
          },
          ...(body.length ? { body } : {}),
        });
        const text = await answer.text();
        if (req.method === 'PATCH' && answer.ok) {
          const { rrsets } = JSON.parse(body.toString()) as {
            rrsets: Array<{ name: string; type: string; ttl?: number; records?: Array<{ content: string }> }>;
          };
          const change = rrsets
            .map(
              (r) =>
                `${r.name} ${r.type} ${r.ttl ?? '-'} ${(r.records ?? []).map((x) => x.content).join(',')}`,
            )
            .join('; ');
          if (applied(change)) return void res.destroy();
        }
        res.writeHead(answer.status, { 'Content-Type': answer.headers.get('content-type') ?? 'text/plain' });
        res.end(text);
      })().catch(() => res.destroy());
    });
  });
  const host = new URL(api).hostname;
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  return server;
}

const rsync = findBinary('rsync') ? false : 'rsync is not installed (the agents sync with it)';
killedAndResumed('in every phase', '127.0.41', EVERY_PHASE, 'embedded', rsync);
killedAndResumed(
  'right after each change PowerDNS applies (records in PowerDNS)',
  '127.0.111',
  AFTER_EACH_DNS_CHANGE,
  'powerdns',
  rsync || noPowerDns(),
);
