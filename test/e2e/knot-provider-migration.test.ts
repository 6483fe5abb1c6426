/**
 * The demo migration with Knot DNS as the authoritative server, driven through the rfc2136
 * provider as `provider: rfc2136` in the config builds it (TSIG-signed UPDATE), under the same
 * load and with the same invariants as migration.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createRfc2136Provider } from '../../src/migration/index.js';
import { Sandbox, type SandboxOptions } from '../../src/sandbox/index.js';
import { have, startKnot, type ExternalDns } from './dns-interop-servers.js';
import { itKeepsTheInvariants, migrateUnderLoad, type MigrationRun } from './invariants.js';

const KNOT = '127.0.105.53';
const KEY = {
  name: 'ferry-migrate.',
  algorithm: 'hmac-sha256',
  secret: Buffer.alloc(32, 31).toString('base64'),
};
const OPTS: Partial<SandboxOptions> = {
  dnsAddress: KNOT, // the zone's NS glue: the name server the propagation check asks is Knot
  dnsPort: 0,
  httpPort: 0,
  originIp: '127.0.105.1',
  targetIp: '127.0.105.2',
  tempIp: '127.0.105.100',
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
};

describe(
  'migration of one site with Knot as the authoritative server (rfc2136 provider)',
  { skip: have('knotd') ? false : 'knotd is not installed (apt-get install knot)' },
  () => {
    let knot: ExternalDns;
    let sb: Sandbox;
    let run: MigrationRun;

    before(async () => {
      knot = await startKnot({
        address: KNOT,
        primaryZones: [{ origin: 'example.', text: new Sandbox(OPTS).zoneText() }],
        updateKey: KEY,
      });
      const server = { address: KNOT, port: knot.port };
      const provider = createRfc2136Provider({ server, zone: 'example.', tsig: KEY });
      sb = new Sandbox({ ...OPTS, externalDns: { server, provider } });
      await sb.start();
      run = await migrateUnderLoad(sb, server);
    });

    after(async () => {
      await sb?.stop();
      await knot?.stop();
    });

    itKeepsTheInvariants(() => ({ run, sb }), 'Knot');

    it('changed the records in Knot by signed UPDATE (its serial went up at each change)', () => {
      assert.match(knot.log(), /DDNS, finished/);
    });
  },
);
