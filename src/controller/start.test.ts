/**
 * `startController` from a YAML config, with two real agents over HTTP on loopback
 * (127.0.63.0/24, no privileges): a whole migration, the zone change kept across a controller
 * restart, and the agents checked against the config. Then the embedded name server's security
 * settings from the YAML (127.0.64.0/24): a TSIG-signed AXFR (kdig), an unsigned one refused, a
 * NOTIFY to a secondary on a change, and `config check` keeping the secret to itself; and IPv6
 * server addresses and relay hosts from the YAML in the controller's server listing (127.0.65.0/24).
 * Last, `ferry controller` with its journal on PostgreSQL (127.0.140.0/24): it waits for an
 * unreachable PostgreSQL without starting anything, then migrates.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostAgent, LoopbackAddresses, buildAgentServer } from '../agent/index.js';
import { buildApi, generateToken } from '../api/index.js';
import { Opcode, decodeMessage, dnsQuery, encodeMessage } from '../dns/index.js';
import { loadConfig } from './config.js';
import { startController } from './start.js';
import { findBinary } from '../../test/e2e/helpers.js';
import { freePort } from '../../test/ports.js';
import { postgresInstalled, startPostgres, type PostgresServer } from '../../test/postgres.js';

const TOKEN = 'start-test-token-0123456789';

/** Two real agents (origin serving shop.example and blog.example, target empty) on `ips`. */
async function startAgents(
  dir: string,
  ips: { origin: string; target: string },
  httpPort: number,
  agents: Array<{ close(): Promise<void> }>,
): Promise<Record<'origin' | 'target', string>> {
  const urls = { origin: '', target: '' };
  for (const id of ['origin', 'target'] as const) {
    const agent = new HostAgent({
      id,
      dataDir: join(dir, id),
      sharedIps: [ips[id]],
      httpPort,
      addresses: new LoopbackAddresses(),
      web: { kind: 'builtin' },
      rsync: { port: await freePort(ips[id]) },
    });
    await agent.start();
    const app = buildAgentServer(agent, { token: TOKEN });
    await app.listen({ host: ips[id], port: 0 });
    urls[id] = `http://${ips[id]}:${(app.server.address() as AddressInfo).port}`;
    agents.push({ close: async () => (await app.close(), await agent.stop()) });
    if (id === 'origin') for (const d of ['shop.example', 'blog.example']) await agent.addSite(d, 'serve');
  }
  return urls;
}

test(
  'startController: a migration between two agents over HTTP, and the zone change survives a restart',
  { skip: findBinary('rsync') ? false : 'rsync is not installed', timeout: 120_000 },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-start-'));
    const ips = { origin: '127.0.63.1', target: '127.0.63.2', temp: '127.0.63.100', dns: '127.0.63.53' };
    const httpPort = await freePort(ips.origin);
    const agents: Array<{ close(): Promise<void> }> = [];
    try {
      const urls = await startAgents(dir, ips, httpPort, agents);
      await writeFile(join(dir, 'token'), TOKEN);
      await writeFile(
        join(dir, 'example.zone'),
        `$ORIGIN example.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A ${ips.dns}\nshop 1 IN A ${ips.origin}\nblog 1 IN A ${ips.origin}\n`,
      );
      const dnsPort = await freePort(ips.dns, { udp: true });
      await writeFile(
        join(dir, 'ferry.yaml'),
        `journal: journal.sqlite
servers:
  origin: { agent: "${urls.origin}", tokenFile: token, sharedIps: [${ips.origin}], tempIpPool: [${ips.temp}] }
  target: { agent: "${urls.target}", token: "\${TARGET_TOKEN}", sharedIps: [${ips.target}] }
dns: { provider: embedded, listen: { address: ${ips.dns}, port: ${dnsPort} }, zones: [example.zone] }
sites:
  - { domain: shop.example, server: origin, ports: [${httpPort}] }
  - { domain: blog.example, server: origin, ports: [${httpPort}] }
defaults: { ttl: 1, quietWindow: 300ms, dnsTempCap: 3s, drainCap: 3s, poll: 100ms }
`,
      );
      const config = await loadConfig(join(dir, 'ferry.yaml'), { env: { TARGET_TOKEN: TOKEN } });
      const ask = async () =>
        (
          await dnsQuery({
            server: { address: ips.dns, port: dnsPort },
            name: 'shop.example',
            type: 'A',
            timeoutMs: 1000,
          })
        ).answers.map((a) => a.rdata);

      const one = await startController(config);
      try {
        assert.deepEqual(
          (await one.checkAgents()).map((c) => [c.server, c.ok]),
          [
            ['origin', true],
            ['target', true],
          ],
        );
        assert.deepEqual(await ask(), [ips.origin]);
        const rec = await one.controller.startMigration({ domain: 'shop.example', to: 'target' });
        const done = await one.controller.wait(rec.plan.id);
        assert.equal(done.phase, 'completed', done.error);
        assert.deepEqual(await ask(), [ips.target]);
        assert.deepEqual(
          one.controller.listSites().map((s) => [s.domain, s.server]),
          [
            ['shop.example.', 'target'],
            ['blog.example.', 'origin'],
          ],
        );
      } finally {
        await one.close();
      }

      // A restarted controller serves the changed zone (kept in zones.sqlite), not the file's.
      const two = await startController(config);
      try {
        assert.deepEqual(await ask(), [ips.target]);
        assert.deepEqual(two.resumed, []);
      } finally {
        await two.close();
      }

      // An agent that does not answer is reported, not fatal; so is a configured site its agent
      // does not serve (never created there with PUT /v1/sites/{domain}).
      const yaml = await readFile(join(dir, 'ferry.yaml'), 'utf8');
      await writeFile(
        join(dir, 'ferry-news.yaml'),
        yaml.replace(
          'defaults:',
          `  - { domain: news.example, server: origin, ports: [${httpPort}] }\ndefaults:`,
        ),
      );
      const broken = await loadConfig(join(dir, 'ferry-news.yaml'), {
        env: { TARGET_TOKEN: 'wrong-token-0123456789' },
      });
      const three = await startController(broken);
      try {
        const checks = await three.checkAgents();
        assert.equal(checks.find((c) => c.server === 'target')?.ok, false);
        assert.match(checks.find((c) => c.server === 'target')!.message, /wrong bearer token/);
        assert.equal(checks.find((c) => c.server === 'origin')?.ok, false);
        assert.match(
          checks.find((c) => c.server === 'origin')!.message,
          /does not serve news\.example; create each on it first: PUT \/v1\/sites\/\{domain\}/,
        );
      } finally {
        await three.close();
      }
    } finally {
      for (const a of agents) await a.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
);

/** kdig, bounded; its output and exit status. Asynchronous: the name server answers from this process. */
function kdig(args: string[]): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(
      'kdig',
      ['+time=3', '+retry=0', ...args],
      { encoding: 'utf8', timeout: 15_000 },
      (err, stdout, stderr) => {
        resolve({
          status: err ? (typeof err.code === 'number' ? err.code : null) : 0,
          out: `${stdout}${stderr}`,
        });
      },
    );
  });
}

test(
  'startController: the embedded name server from YAML: a TSIG-signed AXFR (of a zone and the catalog), an unsigned one refused, NOTIFY on a change, the secret kept out of config check',
  {
    skip: !findBinary('rsync')
      ? 'rsync is not installed'
      : !findBinary('kdig')
        ? 'kdig (knot-dnsutils) is not installed'
        : false,
    timeout: 120_000,
  },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-start-dns-'));
    const ips = {
      origin: '127.0.64.1',
      target: '127.0.64.2',
      temp: '127.0.64.100',
      dns: '127.0.64.53',
      secondary: '127.0.64.54',
    };
    const secret = randomBytes(32).toString('base64');
    const httpPort = await freePort(ips.origin);
    const agents: Array<{ close(): Promise<void> }> = [];
    // The secondary: records every NOTIFY and answers it, as a secondary does (RFC 1996 §4.7).
    const notifies: Array<{ zone: string; from: string }> = [];
    const secondary = createSocket('udp4');
    secondary.on('message', (msg, rinfo) => {
      try {
        const m = decodeMessage(msg);
        if (m.opcode !== Opcode.NOTIFY || m.flags.qr) return;
        notifies.push({ zone: m.questions[0]?.name ?? '', from: rinfo.address });
        const { edns: _edns, ...bare } = m;
        secondary.send(
          encodeMessage({
            ...bare,
            flags: { ...m.flags, qr: true, aa: true },
            answers: [],
            authority: [],
            additional: [],
          }),
          rinfo.port,
          rinfo.address,
        );
      } catch {
        // not DNS: ignored
      }
    });
    await new Promise<void>((r) => secondary.bind(0, ips.secondary, () => r()));
    const secondaryPort = secondary.address().port;
    try {
      const urls = await startAgents(dir, ips, httpPort, agents);
      await writeFile(
        join(dir, 'example.zone'),
        `$ORIGIN example.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A ${ips.dns}\nshop 1 IN A ${ips.origin}\nblog 1 IN A ${ips.origin}\n`,
      );
      const dnsPort = await freePort(ips.dns, { udp: true });
      const file = join(dir, 'ferry.yaml');
      await writeFile(
        file,
        `journal: journal.sqlite
servers:
  origin: { agent: "${urls.origin}", token: "\${AGENT_TOKEN}", sharedIps: [${ips.origin}], tempIpPool: [${ips.temp}] }
  target: { agent: "${urls.target}", token: "\${AGENT_TOKEN}", sharedIps: [${ips.target}] }
dns:
  provider: embedded
  listen: { address: ${ips.dns}, port: ${dnsPort} }
  zones: [example.zone]
  tsigKeys:
    - { name: xfr-key., algorithm: hmac-sha256, secret: "\${XFR_TSIG}" }
  allowTransfer: [{ key: xfr-key. }]
  notify: [{ address: ${ips.secondary}, port: ${secondaryPort} }]
  catalog: {}
sites:
  - { domain: shop.example, server: origin, ports: [${httpPort}] }
  - { domain: blog.example, server: origin, ports: [${httpPort}] }
defaults: { ttl: 1, quietWindow: 300ms, dnsTempCap: 3s, drainCap: 3s, poll: 100ms }
`,
      );
      const env = { AGENT_TOKEN: TOKEN, XFR_TSIG: secret };

      // ferry config check: the key by name, never its secret.
      const check = spawnSync(
        process.execPath,
        ['--import', 'tsx', 'src/cli/main.ts', 'config', 'check', file],
        {
          encoding: 'utf8',
          env: { ...process.env, ...env },
          timeout: 60_000,
        },
      );
      assert.equal(check.status, 0, check.stderr);
      assert.match(check.stdout, /dns tsig keys: xfr-key\. \(hmac-sha256\)/);
      assert.match(check.stdout, /transfer key xfr-key\.; update none; notify 127\.0\.64\.54:\d+/);
      assert.match(check.stdout, /dns catalog zone catalog\.ferry\.invalid\. .*: as zones by default/);
      assert.equal((check.stdout + check.stderr).includes(secret), false, 'config check prints the secret');
      assert.equal((check.stdout + check.stderr).includes(secret.slice(0, 12)), false);

      const running = await startController(await loadConfig(file, { env }));
      try {
        const at = ['@' + ips.dns, '-p', String(dnsPort)];
        // Signed with the key the ACL names: the whole zone.
        const signed = await kdig([...at, '-y', `hmac-sha256:xfr-key.:${secret}`, 'example.', 'AXFR']);
        assert.equal(signed.status, 0, signed.out);
        assert.match(
          signed.out,
          new RegExp(`shop\\.example\\.\\s+1\\s+IN\\s+A\\s+${ips.origin.replace(/\./g, '\\.')}`),
          signed.out,
        );
        assert.doesNotMatch(signed.out, /REFUSED|NOTAUTH|failed/i, signed.out);
        // Unsigned, and signed with a key the server does not have: refused.
        const unsigned = await kdig([...at, 'example.', 'AXFR']);
        assert.match(unsigned.out, /REFUSED/, unsigned.out);
        assert.doesNotMatch(unsigned.out, /shop\.example\.\s+\d+\s+IN\s+A/, unsigned.out);
        const wrongKey = await kdig([
          ...at,
          '-y',
          `hmac-sha256:xfr-key.:${randomBytes(32).toString('base64')}`,
          'example.',
          'AXFR',
        ]);
        assert.doesNotMatch(wrongKey.out, /shop\.example\.\s+\d+\s+IN\s+A/, wrongKey.out);
        assert.equal(running.dnsServer?.primary.stats.axfr, 1);
        // The catalog zone (dns.catalog) lists example., under the same transfer ACL.
        const catalog = await kdig([
          ...at,
          '-y',
          `hmac-sha256:xfr-key.:${secret}`,
          'catalog.ferry.invalid.',
          'AXFR',
        ]);
        assert.match(catalog.out, /version\.catalog\.ferry\.invalid\.\s+0\s+IN\s+TXT\s+"2"/, catalog.out);
        assert.match(
          catalog.out,
          /[0-9a-f]{32}\.zones\.catalog\.ferry\.invalid\.\s+0\s+IN\s+PTR\s+example\./,
          catalog.out,
        );
        const catalogUnsigned = await kdig([...at, 'catalog.ferry.invalid.', 'AXFR']);
        assert.match(catalogUnsigned.out, /REFUSED/, catalogUnsigned.out);

        // A change through the controller (a migration moves shop.example) sends NOTIFY to the secondary.
        assert.deepEqual(notifies, [], 'no NOTIFY before any change');
        const rec = await running.controller.startMigration({ domain: 'shop.example', to: 'target' });
        const done = await running.controller.wait(rec.plan.id);
        assert.equal(done.phase, 'completed', done.error);
        const deadline = Date.now() + 10_000;
        while (notifies.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        assert.ok(notifies.length > 0, 'no NOTIFY reached the secondary within 10 s');
        assert.deepEqual(notifies[0], { zone: 'example.', from: ips.dns });
        const after = await kdig([...at, '-y', `hmac-sha256:xfr-key.:${secret}`, 'example.', 'AXFR']);
        assert.match(
          after.out,
          new RegExp(`shop\\.example\\.\\s+\\d+\\s+IN\\s+A\\s+${ips.target.replace(/\./g, '\\.')}`),
          after.out,
        );
      } finally {
        await running.close();
      }
    } finally {
      await new Promise<void>((r) => secondary.close(() => r()));
      for (const a of agents) await a.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test(
  'startController: IPv6 addresses and relayHost from YAML reach the controller, its server listing and the servers API',
  { timeout: 60_000 },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-start-v6-'));
    const dnsAddress = '127.0.65.53';
    try {
      await writeFile(
        join(dir, 'example.zone'),
        `$ORIGIN example.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A ${dnsAddress}\n`,
      );
      const dnsPort = await freePort(dnsAddress, { udp: true });
      // Agents are not called: the controller only needs their URLs to start.
      await writeFile(
        join(dir, 'ferry.yaml'),
        `journal: journal.sqlite
servers:
  origin:
    agent: "http://127.0.65.1:9"
    token: ${TOKEN}
    sharedIps: [127.0.65.1]
    tempIpPool: [127.0.65.100]
    sharedIps6: ["FD00:65:0::1"]
    tempIpPool6: ["fd00:65::100", "fd00:65::101"]
  target: { agent: "http://127.0.65.2:9", token: ${TOKEN}, sharedIps: [127.0.65.2], relayHost: relay }
  relay: { agent: "http://127.0.65.3:9", token: ${TOKEN}, sharedIps: [127.0.65.3], tempIpPool: [127.0.65.130] }
dns: { provider: embedded, listen: { address: ${dnsAddress}, port: ${dnsPort} }, zones: [example.zone] }
`,
      );
      const running = await startController(await loadConfig(join(dir, 'ferry.yaml')), { resume: false });
      try {
        const listed = running.controller.listServers();
        assert.deepEqual(
          listed.map((s) => [
            s.id,
            s.sharedIps6 ?? null,
            s.tempIpPool6 ?? null,
            s.freeTempIps6 ?? null,
            s.relayHost ?? null,
          ]),
          [
            [
              'origin',
              ['fd00:65::1'],
              ['fd00:65::100', 'fd00:65::101'],
              ['fd00:65::100', 'fd00:65::101'],
              null,
            ],
            ['target', null, null, null, 'relay'],
            ['relay', null, null, null, null],
          ],
        );
        assert.deepEqual(running.controller.freeTempIps('origin', 6), ['fd00:65::100', 'fd00:65::101']);
        assert.deepEqual(running.controller.server('origin').sharedIps6, ['fd00:65::1']);
        const token = generateToken();
        const app = await buildApi(running.controller, {
          tokens: [{ token, scope: 'read' }],
          sampleIntervalMs: 0,
          rateLimitPerMinute: 0,
          dashboard: false,
          metrics: false,
        });
        try {
          const res = await app.inject({
            method: 'GET',
            url: '/v1/servers/origin',
            headers: { authorization: `Bearer ${token}` },
          });
          assert.equal(res.statusCode, 200, res.body);
          const body = res.json<{ sharedIps: string[]; sharedIps6: string[]; tempIpPool6: string[] }>();
          assert.deepEqual(
            [body.sharedIps, body.sharedIps6, body.tempIpPool6],
            [['127.0.65.1'], ['fd00:65::1'], ['fd00:65::100', 'fd00:65::101']],
          );
        } finally {
          await app.close();
        }
      } finally {
        await running.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);

/** A `ferry controller` child (from the sources, as deployment.test.ts runs it); its output so far and its end. */
function ferryController(args: string[]) {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(process.cwd(), 'src/cli/main.ts'), ...args],
    {
      env: { ...process.env, FERRY_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (c: Buffer) => (out.stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out.stderr += c.toString()));
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  /** Its exit status; throws with its log when it has not exited within `ms`. */
  const ended = (ms = 90_000) =>
    Promise.race([
      closed,
      new Promise<never>((_, reject) => {
        const t = setTimeout(
          () => reject(new Error(`ferry controller still running after ${ms} ms: ${out.stderr}`)),
          ms,
        );
        void closed.finally(() => clearTimeout(t));
      }),
    ]);
  const until = async (what: string, ok: () => boolean, ms = 60_000) => {
    const deadline = Date.now() + ms;
    while (!ok()) {
      if (child.exitCode !== null) throw new Error(`ferry controller exited before ${what}: ${out.stderr}`);
      if (Date.now() > deadline) throw new Error(`no ${what} within ${ms} ms: ${out.stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  return { child, out, ended, until };
}

test(
  'ferry controller --config with journal: postgres://…: waits for PostgreSQL without starting anything (SIGTERM exits cleanly), then runs a migration journaled there; one cut by a SIGKILL of PostgreSQL stops resumable and a restarted controller completes it',
  {
    skip: !postgresInstalled
      ? 'PostgreSQL is not installed (Debian package postgresql)'
      : findBinary('rsync')
        ? false
        : 'rsync is not installed',
    timeout: 240_000,
  },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-start-pg-'));
    const ips = { origin: '127.0.140.1', target: '127.0.140.2', temp: '127.0.140.100', dns: '127.0.140.53' };
    const httpPort = await freePort(ips.origin);
    const agents: Array<{ close(): Promise<void> }> = [];
    const children: ChildProcess[] = [];
    let pg: PostgresServer | undefined;
    try {
      pg = await startPostgres();
      const urls = await startAgents(dir, ips, httpPort, agents);
      await writeFile(join(dir, 'token'), TOKEN);
      await writeFile(join(dir, 'pg-password'), pg.password);
      await writeFile(
        join(dir, 'example.zone'),
        `$ORIGIN example.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A ${ips.dns}\nshop 1 IN A ${ips.origin}\nblog 1 IN A ${ips.origin}\n`,
      );
      const dnsPort = await freePort(ips.dns, { udp: true });
      // The password from a file, not in the URL: the URL in the logs then has none to hide.
      const pgUrl = `postgres://${pg.user}@${pg.address}:${pg.port}/${pg.database}`;
      await writeFile(
        join(dir, 'ferry.yaml'),
        `journal: { postgres: "${pgUrl}", passwordFile: pg-password }
servers:
  origin: { agent: "${urls.origin}", tokenFile: token, sharedIps: [${ips.origin}], tempIpPool: [${ips.temp}] }
  target: { agent: "${urls.target}", tokenFile: token, sharedIps: [${ips.target}] }
dns: { provider: embedded, listen: { address: ${ips.dns}, port: ${dnsPort} }, zones: [example.zone], db: zones.sqlite }
sites:
  - { domain: shop.example, server: origin, ports: [${httpPort}] }
  - { domain: blog.example, server: origin, ports: [${httpPort}] }
defaults: { ttl: 1, quietWindow: 300ms, dnsTempCap: 3s, drainCap: 3s, poll: 100ms }
`,
      );
      const dnsAnswers = () =>
        dnsQuery({
          server: { address: ips.dns, port: dnsPort },
          name: 'shop.example',
          type: 'A',
          timeoutMs: 500,
        })
          .then((r) => r.answers.map((a) => a.rdata))
          .catch(() => null);
      const retrying = /cannot reach PostgreSQL at 127\.0\.0\.1:\d+: .*; retrying/;
      pg.kill();

      // PostgreSQL down: the controller retries, serves nothing meanwhile, and a SIGTERM ends it with 0.
      const first = ferryController(['controller', '--config', join(dir, 'ferry.yaml')]);
      children.push(first.child);
      await first.until('a logged retry', () => retrying.test(first.out.stderr));
      assert.equal(await dnsAnswers(), null, 'the name server does not answer before the journal is open');
      first.child.kill('SIGTERM');
      assert.equal(await first.ended(30_000), 0, first.out.stderr);
      assert.match(first.out.stderr, /stopped while starting/);

      // Started while PostgreSQL is down, it waits, then comes up and migrates once PostgreSQL is back.
      const second = ferryController([
        'controller',
        '--config',
        join(dir, 'ferry.yaml'),
        '--migrate',
        'shop.example=target',
        '--exit-when-done',
        '--events',
      ]);
      children.push(second.child);
      await second.until(
        'two logged retries',
        () => (second.out.stderr.match(new RegExp(retrying, 'g')) ?? []).length >= 2,
      );
      assert.equal(await dnsAnswers(), null);
      await pg.restart();
      assert.equal(await second.ended(), 0, second.out.stderr);
      const done = second.out.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { type: string; migrations?: Array<{ id: string; phase: string }> })
        .find((e) => e.type === 'done');
      assert.equal(done?.migrations?.[0]?.phase, 'completed', second.out.stderr);
      const id = done!.migrations![0]!.id;
      // The journal is PostgreSQL's: the migration, its phases and steps are there.
      assert.equal(
        pg.sql(`SELECT phase FROM ferry_migrations WHERE id = '${id}'`, pg.database).trim(),
        'completed',
      );
      const kinds = pg
        .sql(
          `SELECT kind, count(*) FROM ferry_journal WHERE migration_id = '${id}' GROUP BY kind ORDER BY kind`,
          pg.database,
        )
        .trim();
      assert.match(kinds, /^enter\|\d+$/m);
      assert.match(kinds, /^step\|\d+$/m);

      // PostgreSQL SIGKILLed in the middle of a migration: the step being journaled does not act,
      // the migration stops where it is (not failed, not rolled back), and a restarted controller
      // finishes it. Every step that acted (its event was sent) is in PostgreSQL, and only those.
      type Ev = { type: string; migrationId?: string; data?: { step?: string; phase?: string } };
      const events = (text: string) =>
        text
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Ev);
      const third = ferryController([
        'controller',
        '--config',
        join(dir, 'ferry.yaml'),
        '--migrate',
        'blog.example=target',
        '--exit-when-done',
        '--events',
      ]);
      children.push(third.child);
      await third.until('a step of blog.example', () =>
        events(third.out.stdout).some((e) => e.type === 'step' && e.data?.phase === 'dns-temp'),
      );
      pg.kill();
      assert.equal(await third.ended(), 1, third.out.stderr);
      assert.match(third.out.stderr, /JOURNAL_LOST|is lost/);
      const blog = events(third.out.stdout).find((e) => e.type === 'done') as
        { migrations: Array<{ id: string; phase: string }> } | undefined;
      const blogId = blog!.migrations[0]!.id;
      await pg.restart();
      const acted = events(third.out.stdout)
        .filter((e) => e.type === 'step' && e.migrationId === blogId)
        .map((e) => e.data!.step);
      const journaled = pg
        .sql(
          `SELECT step FROM ferry_journal WHERE migration_id = '${blogId}' AND kind = 'step' ORDER BY seq`,
          pg.database,
        )
        .trim()
        .split('\n')
        .filter(Boolean);
      assert.deepEqual(journaled.slice(0, acted.length), acted, 'every step that acted is journaled');
      assert.ok(journaled.length <= acted.length + 1, 'at most the one unacknowledged step beyond them');
      const stopped = pg.sql(`SELECT phase FROM ferry_migrations WHERE id = '${blogId}'`, pg.database).trim();
      assert.ok(!['failed', 'rolling-back', 'rolled-back', 'completed'].includes(stopped), stopped);
      const fourth = ferryController(['controller', '--config', join(dir, 'ferry.yaml')]);
      children.push(fourth.child);
      await fourth.until('the resumed migration completed', () => {
        const phase = pg!
          .sql(`SELECT phase FROM ferry_migrations WHERE id = '${blogId}'`, pg!.database)
          .trim();
        return phase === 'completed';
      });
      fourth.child.kill('SIGTERM');
      assert.equal(await fourth.ended(), 0, fourth.out.stderr);
      assert.ok(
        !`${first.out.stderr}${second.out.stderr}${third.out.stderr}${fourth.out.stderr}`.includes(
          pg.password,
        ),
        'the password is never logged',
      );
    } finally {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
      for (const a of agents) await a.close();
      await pg?.stop();
      await rm(dir, { recursive: true, force: true });
    }
  },
);
