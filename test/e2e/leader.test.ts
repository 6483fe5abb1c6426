/**
 * Two controllers on one PostgreSQL (issue 16): `ferry controller --config` twice (the build),
 * with the journal and the leader lease in a private PostgreSQL, driving the platform's real
 * agents over HTTP (`startAgent`, as `ferry agent` runs them) and one name server shared by both
 * (the sandbox's, as an RFC 2136 primary with TSIG-signed UPDATE, as crash.test.ts drives it).
 * Under load: the leader is SIGKILLed in the cut-over and, for a second site, in draining; the
 * other takes over (it holds the lease within 10 s), resumes and completes each migration with
 * the invariants intact. Then a leader is SIGSTOPped past its lease and woken: it steps down and
 * says so in its log, and the agents hold the new leader's token.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Sandbox, type DemoSummary } from '../../src/sandbox/index.js';
import { PgJournal, STEP, WAIT, type MigrationRecord } from '../../src/migration/index.js';
import type { ControllerEvent } from '../../src/controller/index.js';
import { sleep, waitFor } from '../../src/common/time.js';
import { findBinary } from './helpers.js';
import { startLoadThroughKills } from './invariants.js';
import { freePort } from '../ports.js';
import { postgresInstalled, startPostgres, type PostgresServer } from '../postgres.js';

const FERRY = fileURLToPath(new URL('../../bin/ferry.js', import.meta.url));
const NET = '127.0.123';
const TOKEN = 'leader-e2e-operator-token-0123456789';
const TSIG = {
  name: 'leader-e2e.',
  algorithm: 'hmac-sha256',
  secret: Buffer.from('leader-e2e-tsig-secret-0123456789').toString('base64'),
};
const TTL_MS = 3000;

interface Ctl {
  name: string;
  api: string;
  config: string;
  proc?: ChildProcess;
  events: ControllerEvent[];
  log: string;
}

const skip = !findBinary('rsync')
  ? 'rsync is not installed (the agents sync with it)'
  : !postgresInstalled
    ? 'PostgreSQL is not installed (Debian package postgresql)'
    : false;

describe(
  'two controllers on one PostgreSQL: the leader killed or paused, the other takes over',
  { skip },
  () => {
    const sb = new Sandbox({
      agents: 'http',
      dnsUpdateKey: TSIG,
      dnsAddress: `${NET}.53`,
      dnsPort: 0,
      httpPort: 0,
      originIp: `${NET}.1`,
      targetIp: `${NET}.2`,
      tempIp: `${NET}.100`,
      sites: ['cut.example.', 'drain.example.', 'calm.example.'],
      ttl: 2,
      recordTtl: 3,
      staleOverstayMs: 2000,
      quietWindowMs: 1000,
      dnsTempCapMs: 15_000,
      drainCapMs: 15_000,
    });
    let pgs: PostgresServer;
    const ctls: Ctl[] = [];
    const records: MigrationRecord[] = [];
    const summaries: DemoSummary[] = [];
    const takeovers: Array<{ case: string; ms: number }> = [];

    function yaml(name: string, apiPort: number): string {
      const agents = sb.agentApis;
      return [
        `journal: ${pgs.url}`,
        `leader: { id: ${name}, ttl: ${TTL_MS}ms, advertise: "http://${NET}.10:${apiPort}" }`,
        `api:`,
        `  listen: { address: ${NET}.10, port: ${apiPort} }`,
        `  tokens: [{ name: e2e, scope: operator, token: ${TOKEN} }]`,
        `  rateLimitPerMinute: 0`,
        `  dashboard: false`,
        `dns:`,
        `  provider: rfc2136`,
        `  server: { address: ${sb.dns.address}, port: ${sb.dns.port} }`,
        `  zone: ${sb.opts.zone}`,
        `  tsig: { name: ${TSIG.name}, algorithm: ${TSIG.algorithm}, secret: "${TSIG.secret}" }`,
        `  nameServers: [{ address: ${sb.dns.address}, port: ${sb.dns.port} }]`,
        `servers:`,
        `  origin: { agent: "${agents.origin!.url}", token: ${agents.origin!.token}, sharedIps: [${sb.opts.originIp}], tempIpPool: [${sb.opts.tempIp}] }`,
        `  target: { agent: "${agents.target!.url}", token: ${agents.target!.token}, sharedIps: [${sb.opts.targetIp}], tempIpPool: [] }`,
        `sites:`,
        ...sb.opts.sites.map((d) => `  - { domain: ${d}, server: origin, ports: [${sb.httpPort}] }`),
        `defaults: { ttl: 2, quietWindow: 1000, dnsTempCap: 15000, drainCap: 15000, cutoverDrainTimeout: 10000, poll: 100 }`,
        '',
      ].join('\n');
    }

    /** Start (or restart) a controller process; resolves once it printed its ready line. */
    function launch(c: Ctl): Promise<void> {
      return new Promise((resolve, reject) => {
        const p = spawn(process.execPath, [FERRY, 'controller', '--config', c.config, '--events'], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        c.proc = p;
        p.stderr!.on('data', (b: Buffer) => (c.log = (c.log + b.toString()).slice(-200_000)));
        createInterface({ input: p.stdout! }).on('line', (line) => {
          let msg: { type?: string };
          try {
            msg = JSON.parse(line) as { type?: string };
          } catch {
            return;
          }
          if (msg.type === 'ready') resolve();
          else if ('seq' in msg) c.events.push(msg as ControllerEvent);
        });
        p.once('exit', (code, sig) => {
          if (c.proc === p) c.proc = undefined;
          reject(new Error(`${c.name} exited ${code ?? sig} before it was ready: ${c.log.slice(-3000)}`));
        });
      });
    }

    async function api<T>(
      c: Ctl,
      method: string,
      path: string,
      body?: unknown,
    ): Promise<{ status: number; json: T }> {
      const res = await fetch(`${c.api}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${TOKEN}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.status, json: (await res.json()) as T };
    }

    async function role(c: Ctl): Promise<string | undefined> {
      if (!c.proc) return undefined;
      try {
        return (await api<{ role: string }>(c, 'GET', '/v1/controller')).json.role;
      } catch {
        return undefined;
      }
    }

    async function leaderNow(): Promise<Ctl> {
      let found: Ctl | undefined;
      assert.ok(
        await waitFor(async () => {
          for (const c of ctls) if ((await role(c)) === 'leader') found = c;
          return found !== undefined;
        }, 15_000),
        'a controller leads',
      );
      return found!;
    }

    /**
     * Start migrating `domain` through the follower (forwarded to the leader), kill the leader with
     * `signal` at the first of its events that `at` matches, and wait for the other to complete it.
     */
    async function migrateAndKill(
      label: string,
      domain: string,
      at: (e: ControllerEvent) => boolean,
    ): Promise<MigrationRecord> {
      const leader = await leaderNow();
      const follower = ctls.find((c) => c !== leader)!;
      const created = await api<{ id: string; error?: unknown }>(follower, 'POST', '/v1/migrations', {
        domain,
        to: 'target',
      });
      assert.equal(created.status, 201, JSON.stringify(created.json));
      const id = created.json.id;
      const from = leader.events.length;
      assert.ok(
        await waitFor(() => leader.events.slice(from).some((e) => e.migrationId === id && at(e)), 60_000),
        `${label}: the leader reached the kill point`,
      );
      leader.proc!.kill('SIGKILL');
      const killedAt = Date.now();
      assert.ok(await waitFor(async () => (await role(follower)) === 'leader', 10_000), `${label}: takeover`);
      takeovers.push({ case: label, ms: Date.now() - killedAt });
      // The dead one comes back as a follower.
      await launch(leader);
      let rec: MigrationRecord | undefined;
      assert.ok(
        await waitFor(async () => {
          const r = await api<{ phase: string }>(follower, 'GET', `/v1/migrations/${encodeURIComponent(id)}`);
          return ['completed', 'failed', 'rolled-back'].includes(r.json.phase);
        }, 90_000),
        `${label}: the migration ended`,
      );
      const journal = await PgJournal.open(pgs.url);
      try {
        assert.ok(
          await waitFor(async () => {
            await journal.refresh();
            return journal.get(id)?.settled === true;
          }, 30_000),
          `${label}: the migration settled (temporary IP and redirect removed): ${JSON.stringify(journal.entries(id).slice(-4))}\n${ctls
            .map(
              (c) =>
                `${c.name}: ${c.log
                  .split('\n')
                  .filter((l) => /lead|step|lost|fenced|error/i.test(l))
                  .slice(-12)
                  .join('\n')}`,
            )
            .join('\n')}`,
        );
        rec = journal.get(id)!;
        summaries.push(await sb.summarize(rec, journal));
      } finally {
        await journal.close();
      }
      return rec;
    }

    before(async () => {
      pgs = await startPostgres({ address: '127.0.0.1' });
      await sb.start();
      startLoadThroughKills(sb, { address: sb.dns.address, port: sb.dns.port });
      for (const name of ['ctl-a', 'ctl-b']) {
        const port = await freePort(`${NET}.10`);
        const config = join(sb.dataDir, `${name}.yaml`);
        const c: Ctl = { name, api: `http://${NET}.10:${port}`, config, events: [], log: '' };
        writeFileSync(config, yaml(name, port));
        ctls.push(c);
        await launch(c);
      }
      records.push(
        await migrateAndKill(
          'cut-over',
          'cut.example.',
          (e) => e.type === 'step' && e.data.step === STEP.finalSync,
        ),
      );
      records.push(
        await migrateAndKill(
          'draining',
          'drain.example.',
          (e) => e.type === 'wait' && e.data.what === WAIT.iptQuiet,
        ),
      );
      await sleep(1500);
      await sb.load.stop();
    });

    after(async () => {
      for (const c of ctls) {
        if (c.proc) {
          c.proc.kill('SIGCONT');
          c.proc.kill('SIGKILL');
        }
      }
      await sb.stop();
      await pgs?.stop();
    });

    it('a follower forwarded the start; the other controller took over within 10 s and completed each migration', (t) => {
      t.diagnostic(`takeovers: ${takeovers.map((k) => `${k.case} in ${k.ms} ms`).join(', ')}`);
      assert.deepEqual(
        records.map((r) => r.phase),
        ['completed', 'completed'],
        JSON.stringify(records.map((r) => ({ id: r.plan.id, phase: r.phase, error: r.error }))),
      );
      for (const k of takeovers) assert.ok(k.ms <= 10_000, `${k.case}: ${k.ms} ms`);
    });

    it('failed no request and kept every acknowledged write once on the target', () => {
      for (const s of summaries) {
        assert.ok(s.requests.total > 50, `only ${s.requests.total} requests`);
        assert.equal(s.requests.failed, 0, JSON.stringify(s.failures));
        assert.equal(s.otherSites.failed, 0, JSON.stringify(s.failures));
        assert.ok(s.writes.acknowledged > 5);
        assert.equal(s.writes.missing, 0);
        assert.equal(s.writes.duplicated, 0);
        assert.equal(s.writes.onOriginAfterCutover, 0);
      }
    });

    it('ferry controller status, asked of the follower, names the leader, its URL and token', async () => {
      const leader = await leaderNow();
      const follower = ctls.find((c) => c !== leader)!;
      const ask = (...extra: string[]) =>
        execFileSync(
          process.execPath,
          [FERRY, 'controller', 'status', '--controller', follower.api, '--token', TOKEN, ...extra],
          { encoding: 'utf8' },
        );
      const v = JSON.parse(ask('--json')) as {
        mode: string;
        role: string;
        self: { id: string };
        leader: { id: string; url: string; token: string };
      };
      assert.equal(v.mode, 'lease');
      assert.equal(v.role, 'follower');
      assert.equal(v.self.id, follower.name);
      assert.equal(v.leader.id, leader.name);
      assert.equal(v.leader.url, leader.api);
      const text = ask();
      assert.match(text, new RegExp(`this controller\\s+${follower.name} \\(follower\\)`));
      assert.match(
        text,
        new RegExp(
          `leader\\s+${leader.name}\\s+${leader.api}, fencing token ${v.leader.token}, lease until `,
        ),
      );
    });

    it('a leader paused in a migration and woken after its lease expired steps down and says so; the agents refuse its token; the other completes the migration', async (t) => {
      const leader = await leaderNow();
      const other = ctls.find((c) => c !== leader)!;
      // The origin's temporary IP is free again once the last migration settled.
      assert.ok(
        await waitFor(async () => {
          const s = await api<{ freeTempIps: string[] }>(leader, 'GET', '/v1/servers/origin');
          return s.json.freeTempIps.length > 0;
        }, 30_000),
        'the temporary IP is free',
      );
      const before = (await api<{ leader: { token: string } }>(leader, 'GET', '/v1/controller')).json.leader
        .token;
      const created = await api<{ id: string }>(leader, 'POST', '/v1/migrations', {
        domain: 'calm.example.',
        to: 'target',
      });
      assert.equal(created.status, 201, JSON.stringify(created.json));
      const id = created.json.id;
      const from = leader.events.length;
      assert.ok(
        await waitFor(
          () =>
            leader.events
              .slice(from)
              .some((e) => e.migrationId === id && e.type === 'wait' && e.data.what === WAIT.ip1Quiet),
          60_000,
        ),
        'the leader reached the wait for a quiet IP1',
      );
      leader.proc!.kill('SIGSTOP');
      assert.ok(await waitFor(async () => (await role(other)) === 'leader', 10_000), 'the other took over');
      const now = (await api<{ leader: { token: string } }>(other, 'GET', '/v1/controller')).json.leader
        .token;
      assert.ok(BigInt(now) > BigInt(before), `token ${now} > ${before}`);
      // The new leader resumed the migration: its commands reached the origin's agent with its token.
      const info = async () =>
        fetch(`${sb.agentApis.origin!.url}/v1/info`, {
          headers: { authorization: `Bearer ${sb.agentApis.origin!.token}` },
        }).then((r) => r.json() as Promise<{ fence: string | null }>);
      assert.ok(
        await waitFor(async () => (await info()).fence === now, 10_000),
        'the origin saw the new token',
      );
      leader.proc!.kill('SIGCONT');
      assert.ok(
        await waitFor(() => /stepping down/.test(leader.log), 10_000),
        `the woken leader says it stepped down: ${leader.log.slice(-2000)}`,
      );
      const said = leader.log.split('\n').filter((l) => /fenced by agent|stepping down/.test(l));
      t.diagnostic(
        `the woken leader logged: ${said.map((l) => (JSON.parse(l) as { msg: string }).msg).join(' | ')}`,
      );
      // By its own clock or refused by an agent, whichever came first after the wake.
      assert.ok(
        said.some((l) => /fenced by agent \w+: token \d+ < \d+|by this controller's own clock/.test(l)),
        said.join('\n'),
      );
      assert.equal(await role(leader), 'follower');
      // Whatever it still sends carries its old token: the agents refuse it.
      const stale = await fetch(`${sb.agentApis.origin!.url}/v1/info`, {
        headers: { authorization: `Bearer ${sb.agentApis.origin!.token}`, 'x-ferry-fence': before },
      });
      assert.equal(stale.status, 409);
      const body = (await stale.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'FENCED');
      assert.match(body.error.message, new RegExp(`token ${before} < ${now}`));
      // The new leader completes the migration.
      let last: { phase: string; error?: unknown; wait?: unknown; errors?: unknown[]; journal?: unknown[] } =
        {
          phase: 'unknown',
        };
      await waitFor(async () => {
        last = (await api<{ phase: string }>(other, 'GET', `/v1/migrations/${encodeURIComponent(id)}`)).json;
        return ['completed', 'failed', 'rolled-back'].includes(last.phase);
      }, 90_000);
      assert.equal(
        last.phase,
        'completed',
        `the migration completed under the new leader: ${JSON.stringify({
          phase: last.phase,
          error: last.error,
          wait: last.wait,
          errors: last.errors?.slice(-5),
          journal: last.journal?.slice(-8),
        })}\n${ctls
          .map(
            (c) =>
              `${c.name}: ${c.log
                .split('\n')
                .filter((l) => /lead|step|lost|fenced|error|warn/i.test(l))
                .slice(-20)
                .join('\n')}`,
          )
          .join('\n')}`,
      );
    });
  },
);
