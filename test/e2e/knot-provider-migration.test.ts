/**
 * The demo migration with Knot DNS as the authoritative server, driven through the rfc2136
 * provider as `provider: rfc2136` in the config builds it (TSIG-signed UPDATE), under the same
 * load and with the same invariants as migration.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createRfc2136Provider } from '../../src/migration/index.js';
import { Sandbox } from '../../src/sandbox/index.js';
import { have, startKnot, type ExternalDns } from './dns-interop-servers.js';
import { itKeepsTheInvariants, migrateUnderLoad, underLoadOptions, type MigrationRun } from './invariants.js';

const KEY = {
  name: 'ferry-migrate.',
  algorithm: 'hmac-sha256',
  secret: Buffer.alloc(32, 31).toString('base64'),
};
const OPTS = underLoadOptions('127.0.105'); // Knot at .53: the zone's NS glue, what the propagation check asks

describe(
  'migration of one site with Knot as the authoritative server (rfc2136 provider)',
  { skip: have('knotd') ? false : 'knotd is not installed (apt-get install knot)' },
  () => {
    let knot: ExternalDns;
    let sb: Sandbox;
    let run: MigrationRun;

    before(async () => {
      knot = await startKnot({
        address: OPTS.dnsAddress,
        primaryZones: [{ origin: 'example.', text: new Sandbox(OPTS).zoneText() }],
        updateKey: KEY,
      });
      const server = { address: OPTS.dnsAddress, port: knot.port };
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
