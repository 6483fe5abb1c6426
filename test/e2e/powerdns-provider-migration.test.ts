/**
 * The demo migration with PowerDNS (Debian's pdns-server, SQLite backend) as the authoritative
 * server, driven through the powerdns provider (its HTTP API), under the same load and with the same
 * invariants as migration.test.ts; and a PowerDNS that refuses the key or the zone: the migration
 * stops before any change, with PowerDNS's own message.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PowerDnsProvider, createPowerDnsProvider } from '../../src/migration/index.js';
import type { DnsProvider } from '../../src/migration/ports.js';
import { Sandbox, type SandboxOptions } from '../../src/sandbox/index.js';
import { have, startPowerDns, type PowerDns } from './dns-interop-servers.js';
import { itKeepsTheInvariants, migrateUnderLoad, type MigrationRun } from './invariants.js';

const skip = have('pdns_server')
  ? false
  : 'pdns_server is not installed (apt-get install pdns-server pdns-backend-sqlite3)';

const opts = (net: string): Partial<SandboxOptions> => ({
  dnsAddress: `${net}.53`, // the zone's NS glue: the name server the propagation check asks is PowerDNS
  dnsPort: 0,
  httpPort: 0,
  originIp: `${net}.1`,
  targetIp: `${net}.2`,
  tempIp: `${net}.100`,
  ttl: 2,
  rate: 80,
  clients: 24,
  staleShare: 0.25,
  staleOverstayMs: 2500,
  keepAliveShare: 0.5,
  writeShare: 0.4,
  quietWindowMs: 1000,
  dnsTempCapMs: 15_000,
  drainCapMs: 15_000,
});

describe(
  'migration of one site with PowerDNS as the authoritative server (powerdns provider)',
  { skip },
  () => {
    const OPTS = opts('127.0.107');
    let pdns: PowerDns;
    let sb: Sandbox;
    let run: MigrationRun;
    let serialBefore: number;

    before(async () => {
      pdns = await startPowerDns({
        address: OPTS.dnsAddress!,
        primaryZones: [{ origin: 'example.', text: new Sandbox(OPTS).zoneText() }],
      });
      const server = { address: pdns.address, port: pdns.port };
      // As `dns: { provider: powerdns, api, apiKey, zone, servers }` in ferry.yaml builds it.
      const provider = createPowerDnsProvider({
        api: pdns.api,
        apiKey: pdns.apiKey,
        zone: 'example.',
        nameServers: [server],
      });
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
    const OPTS = opts('127.0.108');
    let pdns: PowerDns;
    let sb: Sandbox;
    let inner: DnsProvider;
    let good: PowerDnsProvider;
    const WRONG = 'not-the-pdns-key-7f3a';

    before(async () => {
      pdns = await startPowerDns({
        address: OPTS.dnsAddress!,
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
