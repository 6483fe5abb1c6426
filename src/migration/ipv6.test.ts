/**
 * IPv6 migrated together with IPv4 (issue 7): AAAA moves origin → temporary → target beside A,
 * with a redirect of its own on an IPv6 temporary address that the agent really adds (iproute2).
 * Loopback has only ::1, so the test re-runs itself inside a network namespace of its own whose
 * lo carries the IPv6 addresses of origin and target; it needs root and `ip`, and is skipped
 * without them.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { IprouteAddresses } from '../agent/index.js';
import { sleep } from '../common/time.js';
import { Controller, type ControllerEvent } from '../controller/index.js';
import { dnsQuery } from '../dns/index.js';
import { Sandbox } from '../sandbox/index.js';
import { STEP, WAIT, familyStep, EmbeddedDnsProvider, Journal } from './index.js';

const SELF = fileURLToPath(import.meta.url);
const IN_NS = process.env.FERRY_IPV6_NS;
const V6 = { origin: 'fd00:47::1', target: 'fd00:47::2', temp: ['fd00:47::100', 'fd00:47::101'] };

function canNamespace(): string | false {
  if (process.getuid?.() !== 0) return 'needs root for a network namespace';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    return false;
  } catch {
    return 'iproute2 (ip) is not installed';
  }
}

if (!IN_NS) {
  const skip = canNamespace();
  it('migrates A and AAAA together (in a network namespace of its own)', { skip, timeout: 180_000 }, () => {
    const ns = `ferry-v6-${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      for (const a of [V6.origin, V6.target])
        execFileSync('ip', ['-n', ns, 'addr', 'add', `${a}/128`, 'dev', 'lo']);
      // A fresh test run of this file in the namespace (not a child of this runner: no NODE_TEST_CONTEXT).
      const { NODE_TEST_CONTEXT: _ctx, ...env } = process.env;
      const res = spawnSync(
        'ip',
        ['netns', 'exec', ns, process.execPath, '--import', 'tsx', '--test-reporter=spec', SELF],
        {
          env: { ...env, FERRY_IPV6_NS: ns },
          encoding: 'utf8',
          timeout: 170_000,
        },
      );
      assert.equal(res.status, 0, `${res.stdout}\n${res.stderr}`);
      assert.match(res.stdout, /ℹ pass 4/, res.stdout);
      process.stdout.write(
        res.stdout
          .split('\n')
          .filter((l) => /[✔✖ℹ]/.test(l))
          .map((l) => `# ${l}`)
          .join('\n') + '\n',
      );
    } finally {
      spawnSync('ip', ['netns', 'del', ns]);
    }
  });
} else {
  describe('IPv6 with IPv4, inside the namespace', () => {
    const addresses = new IprouteAddresses('lo');
    const sb = new Sandbox({
      dnsAddress: '127.0.48.53',
      dnsPort: 0,
      httpPort: 0,
      originIp: '127.0.48.1',
      targetIp: '127.0.48.2',
      tempIp: '127.0.48.100',
      sites: ['six.example.', 'back.example.', 'four.example.'],
      ttl: 1,
      rate: 40,
      clients: 12,
      staleOverstayMs: 1000,
      quietWindowMs: 1200,
      dnsTempCapMs: 8000,
      drainCapMs: 8000,
      addresses: () => addresses,
    });
    let ctl: Controller;
    let journal: Journal;
    const events: ControllerEvent[] = [];
    const v6: Array<{
      domain: string;
      address: string;
      ok: boolean;
      servedBy: string | null;
      error?: string;
    }> = [];
    let running = true;
    let clients: Promise<void>[] = [];

    /** An IPv6 user of `domain`: resolves AAAA (cached for its TTL), GETs and POSTs over IPv6. */
    async function v6User(domain: string): Promise<void> {
      let cache: { address: string; until: number } | undefined;
      for (let n = 0; running; n++) {
        const r: (typeof v6)[number] = { domain, address: '', ok: false, servedBy: null };
        try {
          if (!cache || Date.now() > cache.until) {
            const res = await dnsQuery({
              server: { address: sb.dns.address, port: sb.dns.port },
              name: domain,
              type: 'AAAA',
              timeoutMs: 3000,
            });
            const a = res.answers.find((x) => x.typeName === 'AAAA')!;
            cache = { address: a.rdata, until: Date.now() + a.ttl * 1000 };
          }
          r.address = cache.address;
          const post = n % 3 === 0;
          const { status, servedBy } = await new Promise<{ status: number; servedBy: string | null }>(
            (resolve, reject) => {
              const req = request(
                {
                  host: r.address,
                  port: sb.httpPort,
                  path: '/orders',
                  method: post ? 'POST' : 'GET',
                  headers: { host: domain.replace(/\.$/, ''), 'content-type': 'application/json' },
                  agent: false,
                  timeout: 8000,
                },
                (res) => {
                  res.resume();
                  res.on('end', () =>
                    resolve({
                      status: res.statusCode ?? 0,
                      servedBy: (res.headers['x-served-by'] as string) ?? null,
                    }),
                  );
                },
              );
              req.on('timeout', () => req.destroy(new Error('timeout')));
              req.on('error', reject);
              req.end(post ? JSON.stringify({ key: `v6-${domain}-${n}` }) : undefined);
            },
          );
          r.ok = status >= 200 && status < 300;
          r.servedBy = servedBy;
          if (!r.ok) r.error = `HTTP ${status}`;
        } catch (err) {
          r.error = (err as Error).message;
        }
        v6.push(r);
        await sleep(100);
      }
    }

    before(async () => {
      await sb.start();
      await sb.originSites.addAddress(V6.origin);
      await sb.targetSites.addAddress(V6.target);
      for (const s of ['six.example.', 'back.example.']) sb.dns.zones.replaceRRset(s, 'AAAA', 1, [V6.origin]);
      journal = new Journal(':memory:');
      ctl = new Controller({
        dns: new EmbeddedDnsProvider({ server: sb.dns }),
        servers: [
          {
            id: 'origin',
            driver: sb.origin,
            sharedIps: [sb.opts.originIp],
            tempIpPool: ['127.0.48.100', '127.0.48.101'],
            sharedIps6: [V6.origin],
            tempIpPool6: V6.temp,
          },
          {
            id: 'target',
            driver: sb.target,
            sharedIps: [sb.opts.targetIp],
            tempIpPool: [],
            sharedIps6: [V6.target],
          },
        ],
        sites: sb.opts.sites.map((domain) => ({ domain, server: 'origin', ports: [sb.httpPort] })),
        journal,
        defaults: { ttl: 1, quietWindowMs: 1200, dnsTempCapMs: 8000, drainCapMs: 8000, pollMs: 100 },
      });
      ctl.on('event', (e) => events.push(e));
      sb.startLoad();
      clients = ['six.example.', 'six.example.', 'back.example.'].map((d) => v6User(d));
      await sleep(500);
    });

    after(async () => {
      running = false;
      await Promise.all(clients);
      await ctl?.close();
      journal?.close();
      await sb.stop();
    });

    it('moves AAAA beside A, through an IPv6 temporary address the agent adds and removes', async () => {
      await ctl.startMigration({ domain: 'six.example.', to: 'target', id: 'six' });
      const rec = await ctl.wait('six');
      assert.equal(rec.phase, 'completed', rec.error);
      assert.deepEqual(rec.plan.v6, { originIp: V6.origin, targetIp: V6.target, tempIp: V6.temp[0] });
      const changes = (type: string) =>
        journal
          .entries('six')
          .filter((e) => e.step === STEP.dnsChange && e.detail?.type === type)
          .map((e) => e.detail?.address);
      assert.deepEqual(changes('A'), ['127.0.48.100', '127.0.48.2']);
      assert.deepEqual(changes('AAAA'), [V6.temp[0], V6.target]);
      assert.ok(journal.entries('six').some((e) => e.step === familyStep(STEP.startRedirect, '-v6')));
      assert.deepEqual(sb.dns.zones.getRRset('six.example.', 'AAAA'), { ttl: 1, rdata: [V6.target] });
      assert.ok(!(await addresses.list()).includes(V6.temp[0]!), 'the IPv6 temporary address is gone');
      assert.ok(events.some((e) => e.type === 'dns' && e.data.type === 'AAAA'));
    });

    it('rolls IPv6 back with IPv4 after the switch', async () => {
      let rolled: Promise<unknown> | undefined;
      ctl.on('event', (e) => {
        if (!rolled && e.migrationId === 'back' && e.type === 'wait' && e.data.what === WAIT.iptQuiet)
          rolled = ctl.rollback('back');
      });
      await ctl.startMigration({ domain: 'back.example.', to: 'target', id: 'back' });
      await ctl.wait('back');
      for (let i = 0; i < 100 && !rolled; i++) await sleep(100);
      await rolled;
      assert.equal(ctl.migration('back').phase, 'rolled-back');
      assert.deepEqual(sb.dns.zones.getRRset('back.example.', 'AAAA'), { ttl: 1, rdata: [V6.origin] });
      assert.deepEqual(sb.dns.zones.getRRset('back.example.', 'A'), { ttl: 1, rdata: [sb.opts.originIp] });
      assert.ok(
        journal.entries('back').some((e) => e.step === familyStep(STEP.reverseRedirectToOrigin, '-v6')),
      );
      assert.equal(sb.targetSites.hasSite('back.example.'), false);
      assert.equal(sb.originSites.mode('back.example.'), 'serve');
    });

    it('migrates a site without AAAA over IPv4 alone', async () => {
      await ctl.startMigration({ domain: 'four.example.', to: 'target', id: 'four' });
      const rec = await ctl.wait('four');
      assert.equal(rec.phase, 'completed', rec.error);
      assert.equal(rec.plan.v6, undefined);
    });

    it('failed no request, over IPv6 or IPv4; IPv6 users were served by both servers', async () => {
      await sleep(1000);
      running = false;
      await Promise.all(clients);
      await sb.load.stop();
      const failed6 = v6.filter((r) => !r.ok);
      assert.ok(v6.length > 50, `only ${v6.length} IPv6 requests`);
      assert.equal(failed6.length, 0, JSON.stringify(failed6.slice(0, 5)));
      const six = v6.filter((r) => r.domain === 'six.example.');
      assert.ok(six.some((r) => r.servedBy === 'origin') && six.some((r) => r.servedBy === 'target'));
      assert.ok(
        six.some((r) => r.address === V6.temp[0]),
        'some IPv6 requests went through the temporary address',
      );
      const failed4 = sb.load.results().filter((r) => !r.ok);
      assert.equal(failed4.length, 0, JSON.stringify(failed4.slice(0, 5)));
    });
  });
}
