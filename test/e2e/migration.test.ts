/**
 * The whole patented migration on loopback, under load with stale clients: the guarantees that
 * docs/how-a-migration-works.md lists (one writer, no failed request, no lost write), checked on
 * what really happened.
 */
import { after, before, describe } from 'node:test';
import { Sandbox } from '../../src/sandbox/index.js';
import { itKeepsTheInvariants, migrateUnderLoad, underLoadOptions, type MigrationRun } from './invariants.js';

describe('migration of one site under live load (sandbox on loopback)', () => {
  const sb = new Sandbox(underLoadOptions('127.0.31'));
  let run: MigrationRun;

  before(async () => {
    await sb.start();
    run = await migrateUnderLoad(sb, { address: sb.dns.address, port: sb.dns.port });
  });

  after(() => sb.stop());

  itKeepsTheInvariants(() => ({ run, sb }), 'the embedded server');
});
