/**
 * A journal written by an earlier version resumes to completion: the fixture was written by a
 * migration killed in dns-temp (fixtures/README.md). The hosts and DNS are brought to the state a
 * killed controller leaves behind (they outlive it), then the orchestrator resumes from the journal.
 */
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Sandbox } from '../sandbox/index.js';
import { EmbeddedDnsProvider, Journal, Orchestrator } from './index.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/journal-dns-temp-5d14111.sqlite', import.meta.url));
const ID = 'resume-fixture';
const [ORIGIN_IP, TARGET_IP, TEMP_IP, PORT] = ['127.0.71.1', '127.0.71.2', '127.0.71.100', 18471];

describe('journal written by an earlier version', () => {
  const sb = new Sandbox({
    dnsAddress: '127.0.71.53',
    dnsPort: 0,
    httpPort: PORT,
    originIp: ORIGIN_IP,
    targetIp: TARGET_IP,
    tempIp: TEMP_IP,
    sites: ['resumed.example.', 'other.example.'],
    ttl: 1,
    recordTtl: 3,
  });
  let journal: Journal;

  before(async () => {
    await sb.start();
    const path = join(sb.dataDir, 'old-journal.sqlite');
    copyFileSync(FIXTURE, path);
    journal = new Journal(path, { durability: 'process' });
    // What the killed run had done and what outlives it: the A record on IPt, IPt up, its redirect.
    sb.dns.zones.replaceRRset('resumed.example.', 'A', 1, [TEMP_IP]);
    await sb.origin.addAddress(TEMP_IP);
    await sb.origin.startRedirect(`mig-${ID}`, {
      address: TEMP_IP,
      ports: [PORT],
      upstream: ORIGIN_IP,
      sourceAddress: TEMP_IP,
    });
  });

  after(async () => {
    journal?.close();
    await sb.stop();
  });

  it('resumes a migration stopped in dns-temp to completion', async () => {
    assert.equal(journal.get(ID)?.phase, 'dns-temp');
    const before = journal.entries(ID).length;
    const orch = new Orchestrator({
      dns: new EmbeddedDnsProvider({ server: sb.dns }),
      hosts: { origin: sb.origin, target: sb.target },
      journal,
    });
    const rec = await orch.run(ID);
    assert.equal(rec.phase, 'completed', rec.error);
    assert.equal(rec.settled, true);
    assert.deepEqual(
      rec.phases.map((p) => p.name),
      [
        'planned',
        'ttl-lowered',
        'temp-ip',
        'dns-temp',
        'syncing',
        'preflight',
        'cutover',
        'draining',
        'completed',
      ],
    );
    // Resumed inside dns-temp: the earlier phases' steps are not repeated.
    const resumed = journal.entries(ID).slice(before);
    assert.ok(resumed.some((e) => e.kind === 'note' && e.step === 'observed-state'));
    const steps = resumed.filter((e) => e.kind === 'step').map((e) => e.step);
    assert.ok(!steps.includes('add-address') && !steps.includes('start-redirect'), steps.join(' '));
    assert.ok(steps.includes('final-sync') && steps.includes('target-serve'), steps.join(' '));
    // The TTL comes back from the original record the old journal noted (3 s, not the plan's 1 s).
    const rr = sb.dns.zones.getRRset('resumed.example.', 'A');
    assert.deepEqual({ ttl: rr?.ttl, rdata: rr?.rdata }, { ttl: 3, rdata: [TARGET_IP] });
    assert.equal(await sb.origin.hasSite('resumed.example.'), false);
    assert.equal(await sb.target.siteMode?.('resumed.example.'), 'serve');
    assert.ok(!(await sb.origin.listAddresses?.())?.includes(TEMP_IP));
    assert.equal(await sb.origin.redirectStats(`mig-${ID}`), undefined);
  });
});
