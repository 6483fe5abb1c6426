/**
 * `startController` from a YAML config, with two real agents over HTTP on loopback
 * (127.0.63.0/24, no privileges): a whole migration, the zone change kept across a controller
 * restart, and the agents checked against the config.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostAgent, LoopbackAddresses, buildAgentServer } from '../agent/index.js';
import { dnsQuery } from '../dns/index.js';
import { loadConfig, startController } from './config.js';
import { findBinary } from '../../test/e2e/helpers.js';

const TOKEN = 'start-test-token-0123456789';

async function freeTcp(address: string): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, address, () => r()));
  const p = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

/** A port free for both UDP and TCP on `address` (the name server binds both). */
async function freeUdpTcp(address: string): Promise<number> {
  for (;;) {
    const p = await freeTcp(address);
    const u = createSocket('udp4');
    const ok = await new Promise<boolean>((r) => {
      u.once('error', () => r(false));
      u.bind(p, address, () => r(true));
    });
    await new Promise<void>((r) => (ok ? u.close(() => r()) : r()));
    if (ok) return p;
  }
}

test('startController: a migration between two agents over HTTP, and the zone change survives a restart', { skip: findBinary('rsync') ? false : 'rsync is not installed', timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-start-'));
  const ips = { origin: '127.0.63.1', target: '127.0.63.2', temp: '127.0.63.100', dns: '127.0.63.53' };
  const httpPort = await freeTcp(ips.origin);
  const agents: Array<{ close(): Promise<void> }> = [];
  try {
    const urls: Record<string, string> = {};
    for (const id of ['origin', 'target'] as const) {
      const agent = new HostAgent({
        id,
        dataDir: join(dir, id),
        sharedIps: [ips[id]],
        httpPort,
        addresses: new LoopbackAddresses(),
        web: { kind: 'builtin' },
        rsync: { port: await freeTcp(ips[id]) },
      });
      await agent.start();
      const app = buildAgentServer(agent, { token: TOKEN });
      await app.listen({ host: ips[id], port: 0 });
      urls[id] = `http://${ips[id]}:${(app.server.address() as AddressInfo).port}`;
      agents.push({ close: async () => (await app.close(), await agent.stop()) });
      if (id === 'origin') for (const d of ['shop.example', 'blog.example']) await agent.putSite(d, 'serve');
    }
    await writeFile(join(dir, 'token'), TOKEN);
    await writeFile(
      join(dir, 'example.zone'),
      `$ORIGIN example.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A ${ips.dns}\nshop 1 IN A ${ips.origin}\nblog 1 IN A ${ips.origin}\n`,
    );
    const dnsPort = await freeUdpTcp(ips.dns);
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
      (await dnsQuery({ server: { address: ips.dns, port: dnsPort }, name: 'shop.example', type: 'A', timeoutMs: 1000 })).answers.map((a) => a.rdata);

    const one = await startController(config);
    try {
      assert.deepEqual(
        (await one.checkAgents()).map((c) => [c.server, c.ok]),
        [['origin', true], ['target', true]],
      );
      assert.deepEqual(await ask(), [ips.origin]);
      const rec = await one.controller.startMigration({ domain: 'shop.example', to: 'target' });
      const done = await one.controller.wait(rec.plan.id);
      assert.equal(done.phase, 'completed', done.error);
      assert.deepEqual(await ask(), [ips.target]);
      assert.deepEqual(
        one.controller.listSites().map((s) => [s.domain, s.server]),
        [['shop.example.', 'target'], ['blog.example.', 'origin']],
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

    // An agent that does not answer is reported, not fatal.
    const broken = await loadConfig(join(dir, 'ferry.yaml'), { env: { TARGET_TOKEN: 'wrong-token-0123456789' } });
    const three = await startController(broken);
    try {
      const checks = await three.checkAgents();
      assert.equal(checks.find((c) => c.server === 'target')?.ok, false);
      assert.match(checks.find((c) => c.server === 'target')!.message, /wrong bearer token/);
    } finally {
      await three.close();
    }
  } finally {
    for (const a of agents) await a.close();
    await rm(dir, { recursive: true, force: true });
  }
});
