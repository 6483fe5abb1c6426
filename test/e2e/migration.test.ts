/**
 * The whole patented migration on loopback, under load with stale clients: the guarantees that
 * docs/how-a-migration-works.md lists (one writer, no failed request, no lost write), checked on
 * what really happened.
 */
import { after, before, describe } from 'node:test';
import { Sandbox } from '../../src/sandbox/index.js';
import { itKeepsTheInvariants, migrateUnderLoad, type MigrationRun } from './invariants.js';

describe('migration of one site under live load (sandbox on loopback)', () => {
  const sb = new Sandbox({
    dnsAddress: '127.0.31.53',
    dnsPort: 0,
    httpPort: 0,
    originIp: '127.0.31.1',
    targetIp: '127.0.31.2',
    tempIp: '127.0.31.100',
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
  let run: MigrationRun;

  before(async () => {
    await sb.start();
    run = await migrateUnderLoad(sb, { address: sb.dns.address, port: sb.dns.port });
  });

  after(() => sb.stop());

  itKeepsTheInvariants(() => ({ run, sb }), 'the embedded server');
});
