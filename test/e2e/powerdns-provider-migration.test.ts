/**
 * The demo migration with PowerDNS (Debian's pdns-server, SQLite backend) as the authoritative
 * server, driven through the powerdns provider (its HTTP API), under the same load and with the same
 * invariants as migration.test.ts; and a PowerDNS that refuses the key or the zone: the migration
 * stops before any change, with PowerDNS's own message. Then the controller as deployed
 * (`ferry controller --config` with a `dns: provider: powerdns` section, real agents over HTTP).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PowerDnsProvider } from '../../src/migration/index.js';
import type { DnsProvider } from '../../src/migration/ports.js';
import { Sandbox } from '../../src/sandbox/index.js';
import { noPowerDns, startPowerDns, startPowerDnsZone, type PowerDns } from './dns-interop-servers.js';
import { itKeepsTheInvariants, migrateUnderLoad, underLoadOptions, type MigrationRun } from './invariants.js';
import { freePort } from '../ports.js';
import { exampleZone, ferryCli, startAgentPair } from './agent-pair.js';

const TOKEN = 'pdns-deployed-test-token-0123456789';

const skip = noPowerDns();

describe(
  'migration of one site with PowerDNS as the authoritative server (powerdns provider)',
  { skip },
  () => {
    const OPTS = underLoadOptions('127.0.107'); // PowerDNS at .53: what the propagation check asks
    let pdns: PowerDns;
    let sb: Sandbox;
    let run: MigrationRun;
    let serialBefore: number;

    before(async () => {
      const ext = await startPowerDnsZone(new Sandbox(OPTS).zoneText(), OPTS.dnsAddress);
      pdns = ext.pdns;
      const { server, provider } = ext;
      serialBefore = (await provider.observe('example.', 'SOA'))[0]!.serial!;
      sb = new Sandbox({ ...OPTS, externalDns: { server, provider } });
      await sb.start();
      run = await migrateUnderLoad(sb, server);
    });

    after(async () => {
      await sb?.stop();
      await pdns?.stop();
    });

    itKeepsTheInvariants(() => ({ run, sb }), 'PowerDNS');

    it('changed the records in PowerDNS through its API (the serial rose, the record is the target)', async () => {
      const check = new PowerDnsProvider({
        api: pdns.api,
        apiKey: pdns.apiKey,
        zone: 'example.',
        nameServers: [{ address: pdns.address, port: pdns.port }],
      });
      assert.deepEqual((await check.getRRset(sb.migratedDomain, 'A'))?.rdata, [OPTS.targetIp]);
      const serial = (await check.observe('example.', 'SOA'))[0]!.serial!;
      // At least the temporary IP, then the target (one PATCH each; the TTL was already low).
      assert.ok(serial >= serialBefore + 2, `serial ${serial} after ${serialBefore}`);
    });
  },
);

describe(
  'a PowerDNS that refuses the key or the zone: the migration stops before any change',
  { skip },
  () => {
    const OPTS = underLoadOptions('127.0.108');
    let pdns: PowerDns;
    let sb: Sandbox;
    let inner: DnsProvider;
    let good: PowerDnsProvider;
    const WRONG = 'not-the-pdns-key-7f3a';

    before(async () => {
      pdns = await startPowerDns({
        address: OPTS.dnsAddress,
        primaryZones: [{ origin: 'example.', text: new Sandbox(OPTS).zoneText() }],
      });
      const server = { address: pdns.address, port: pdns.port };
      good = new PowerDnsProvider({
        api: pdns.api,
        apiKey: pdns.apiKey,
        zone: 'example.',
        nameServers: [server],
      });
      inner = good;
      // Each case puts its own provider behind this one.
      const provider: DnsProvider = {
        getRRset: (n, t) => inner.getRRset(n, t),
        replaceRRset: (n, t, ttl, r) => inner.replaceRRset(n, t, ttl, r),
        observe: (n, t) => inner.observe(n, t),
      };
      sb = new Sandbox({ ...OPTS, externalDns: { server, provider } });
      await sb.start();
    });

    after(async () => {
      await sb?.stop();
      await pdns?.stop();
    });

    /** Starting the migration fails with `code` and `message`; nothing moved, nothing changed in DNS. */
    async function refused(code: string, message: RegExp, zoneStillThere = true): Promise<void> {
      const serial = zoneStillThere ? (await good.observe('example.', 'SOA'))[0]!.serial : null;
      let err: (Error & { code?: string }) | undefined;
      try {
        await sb.migrate();
      } catch (e) {
        err = e as Error & { code?: string };
      }
      assert.ok(err, 'the migration was refused');
      assert.equal(err.code, code, err.message);
      assert.match(err.message, message);
      assert.doesNotMatch(err.message, new RegExp(WRONG));
      assert.doesNotMatch(err.message, new RegExp(pdns.apiKey));
      assert.deepEqual(sb.controller.journal.list(), [], 'no migration was recorded');
      if (zoneStillThere) {
        assert.deepEqual(await good.getRRset(sb.migratedDomain, 'A'), {
          ttl: OPTS.ttl,
          rdata: [OPTS.originIp],
        });
        assert.equal((await good.observe('example.', 'SOA'))[0]!.serial, serial, 'the zone did not change');
      }
    }

    it('a wrong API key: 401 with PowerDNS’s "Unauthorized", the key never shown', async () => {
      inner = new PowerDnsProvider({ api: pdns.api, apiKey: WRONG, zone: 'example.' });
      await refused(
        'DNS_API_AUTH',
        /PowerDNS at http:\/\/127\.0\.108\.53:\d+ answered GET of zone example\. with 401: Unauthorized/,
      );
    });

    it('a zone whose API changes would not raise the serial (no SOA-EDIT-API): refused, with what to set', async () => {
      pdns.pdnsutil(['set-meta', 'example.', 'SOA-EDIT-API']);
      inner = new PowerDnsProvider({ api: pdns.api, apiKey: pdns.apiKey, zone: 'example.' });
      await refused(
        'DNS_API_REFUSED',
        /has SOA-EDIT-API \(none\).*pdnsutil set-meta example\. SOA-EDIT-API INCREASE/,
      );
      pdns.pdnsutil(['set-meta', 'example.', 'SOA-EDIT-API', 'INCREASE']);
    });

    it('a zone PowerDNS does not have: 404 with PowerDNS’s message', async () => {
      pdns.pdnsutil(['delete-zone', 'example.']);
      inner = new PowerDnsProvider({ api: pdns.api, apiKey: pdns.apiKey, zone: 'example.' });
      await refused(
        'DNS_API_REFUSED',
        /answered GET of zone example\. with 404: Not Found \(no such zone/,
        false,
      );
    });
  },
);

describe('ferry controller --config with dns: provider: powerdns, real agents over HTTP', { skip }, () => {
  const ips = { origin: '127.0.109.1', target: '127.0.109.2', dns: '127.0.109.53' };
  const SITE = 'shop.example';
  let dir: string;
  let pdns: PowerDns;
  let check: PowerDnsProvider;
  const agents: Array<{ close(): Promise<void> }> = [];
  const urls: Record<string, string> = {};
  let httpPort: number;

  /** The config as an operator writes it; the key comes from a file. */
  const yaml = (zone = 'example.') => `journal: journal.sqlite
servers:
  origin: { agent: "${urls.origin}", tokenFile: token, sharedIps: [${ips.origin}], tempIpPool: [127.0.109.100] }
  target: { agent: "${urls.target}", tokenFile: token, sharedIps: [${ips.target}] }
dns:
  provider: powerdns
  api: ${pdns.api}
  apiKeyFile: pdns.key
  server: localhost
  zone: ${zone}
  servers: [{ address: ${pdns.address}, port: ${pdns.port} }]
sites:
  - { domain: ${SITE}, server: origin, ports: [${httpPort}] }
defaults: { ttl: 1, quietWindow: 300ms, dnsTempCap: 3s, drainCap: 3s, poll: 100ms }
`;
  const run = (config: string) =>
    ferryCli([
      'controller',
      '--config',
      config,
      '--events',
      '--migrate',
      `${SITE}=target`,
      '--exit-when-done',
    ]);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-pdns-deployed-'));
    httpPort = await freePort(ips.origin);
    Object.assign(urls, await startAgentPair({ dir, ips, httpPort, token: TOKEN, sites: [SITE], agents }));
    pdns = await startPowerDns({
      address: ips.dns,
      primaryZones: [
        {
          origin: 'example.',
          text: exampleZone(ips.dns, [SITE], ips.origin),
        },
      ],
    });
    check = new PowerDnsProvider({
      api: pdns.api,
      apiKey: pdns.apiKey,
      zone: 'example.',
      nameServers: [{ address: pdns.address, port: pdns.port }],
    });
    await writeFile(join(dir, 'token'), TOKEN);
  });

  after(async () => {
    for (const a of agents) await a.close();
    await pdns?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a wrong key: the controller stops the migration before any change, with PowerDNS’s message', async () => {
    const wrong = 'wrong-pdns-key-4b1d';
    await writeFile(join(dir, 'pdns.key'), wrong + '\n');
    await writeFile(join(dir, 'refused.yaml'), yaml());
    const serial = (await check.observe('example.', 'SOA'))[0]!.serial;
    const res = await run(join(dir, 'refused.yaml'));
    const out = res.stdout + res.stderr;
    assert.notEqual(res.status, 0, out);
    assert.match(out, /DNS_API_AUTH/);
    // Said at start already, before the migration is asked for.
    assert.match(
      out,
      /dns check failed: PowerDNS at http:\/\/127\.0\.109\.53:\d+ answered GET of zone example\. with 401/,
    );
    assert.match(out, /answered GET of zone example\. with 401: Unauthorized/);
    assert.doesNotMatch(out, new RegExp(wrong));
    assert.deepEqual(await check.getRRset(SITE + '.', 'A'), { ttl: 1, rdata: [ips.origin] });
    assert.equal((await check.observe('example.', 'SOA'))[0]!.serial, serial, 'the zone did not change');
    await rm(join(dir, 'journal.sqlite'), { force: true });
  });

  it('a zone PowerDNS does not have: stopped before any change, with PowerDNS’s 404', async () => {
    await writeFile(join(dir, 'pdns.key'), pdns.apiKey + '\n');
    // The site's own name as the zone: PowerDNS has example. but no shop.example.
    await writeFile(join(dir, 'nozone.yaml'), yaml('shop.example.'));
    const res = await run(join(dir, 'nozone.yaml'));
    const out = res.stdout + res.stderr;
    assert.notEqual(res.status, 0, out);
    assert.match(out, /DNS_API_REFUSED/);
    assert.match(out, /answered GET of zone shop\.example\. with 404: Not Found/);
    assert.deepEqual(await check.getRRset(SITE + '.', 'A'), { ttl: 1, rdata: [ips.origin] });
    await rm(join(dir, 'journal.sqlite'), { force: true });
  });

  it('migrates the site: PowerDNS ends on the target, the agents agree', async () => {
    await writeFile(join(dir, 'pdns.key'), pdns.apiKey + '\n');
    await writeFile(join(dir, 'ferry.yaml'), yaml());
    const before = (await check.observe('example.', 'SOA'))[0]!.serial!;
    const res = await run(join(dir, 'ferry.yaml'));
    assert.equal(res.status, 0, res.stdout + res.stderr);
    assert.match(res.stdout + res.stderr, /takes the key and has example\. \(SOA-EDIT-API INCREASE\)/);
    const done = res.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; migrations?: Array<{ phase: string }> })
      .find((e) => e.type === 'done');
    assert.deepEqual(
      done?.migrations?.map((m) => m.phase),
      ['completed'],
    );
    assert.deepEqual((await check.getRRset(SITE + '.', 'A'))?.rdata, [ips.target]);
    assert.ok((await check.observe('example.', 'SOA'))[0]!.serial! >= before + 2);
    assert.doesNotMatch(res.stdout + res.stderr, new RegExp(pdns.apiKey));
    const sites = async (url: string) =>
      JSON.stringify(
        await fetch(`${url}/v1/sites`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) =>
          r.json(),
        ),
      );
    assert.ok((await sites(urls.target!)).includes(SITE));
    assert.ok(!(await sites(urls.origin!)).includes(SITE));
  });
});
