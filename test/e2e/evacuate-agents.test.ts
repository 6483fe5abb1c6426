/**
 * `ferry evacuate SERVER --to SERVER --config FILE` against two real host agents over HTTP on
 * loopback (127.0.52.0/24): every site of the origin moves to the target through the agents,
 * two at a time with a pool of two temporary IPs, and the CLI prints one line per site. The same
 * with the zone in PowerDNS (`dns: provider: powerdns`, 127.0.112.0/24): two migrations change
 * records of one zone at once through its API, and every change must show, each with its serial.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from './helpers.js';
import { noPowerDns, startPowerDns, type PowerDns } from './dns-interop-servers.js';
import { createPowerDnsProvider } from '../../src/migration/index.js';
import { exampleZone, ferryCli, startAgentPair } from './agent-pair.js';
import { freePort } from '../ports.js';

const TOKEN = 'evacuate-test-token-0123456789';
const SITES = ['a.example', 'b.example', 'c.example'];

/** The evacuation on `net`, the zone in the embedded server or in PowerDNS. */
function evacuateThroughAgents(net: string, records: 'embedded' | 'powerdns', skip: string | false): void {
  test(
    `ferry evacuate --config: every site of a server through real agents (records: ${records})`,
    { skip, timeout: 180_000 },
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'ferry-evacuate-'));
      const ips = { origin: `${net}.1`, target: `${net}.2`, dns: `${net}.53` };
      const httpPort = await freePort(ips.origin);
      const agents: Array<{ close(): Promise<void> }> = [];
      let pdns: PowerDns | undefined;
      try {
        const urls = await startAgentPair({ dir, ips, httpPort, token: TOKEN, sites: SITES, agents });
        await writeFile(join(dir, 'token'), TOKEN);
        let dns: string;
        if (records === 'powerdns') {
          pdns = await startPowerDns({
            address: ips.dns,
            primaryZones: [{ origin: 'example.', text: exampleZone(ips.dns, SITES, ips.origin) }],
          });
          await writeFile(join(dir, 'pdns.key'), pdns.apiKey + '\n');
          dns = `{ provider: powerdns, api: "${pdns.api}", apiKeyFile: pdns.key, zone: example., servers: [{ address: ${ips.dns}, port: ${pdns.port} }] }`;
        } else {
          await writeFile(join(dir, 'example.zone'), exampleZone(ips.dns, SITES, ips.origin));
          const dnsPort = await freePort(ips.dns, { udp: true });
          dns = `{ provider: embedded, listen: { address: ${ips.dns}, port: ${dnsPort} }, zones: [example.zone] }`;
        }
        await writeFile(
          join(dir, 'ferry.yaml'),
          `journal: journal.sqlite
servers:
  origin: { agent: "${urls.origin}", tokenFile: token, sharedIps: [${ips.origin}], tempIpPool: [${net}.100, ${net}.101] }
  target: { agent: "${urls.target}", tokenFile: token, sharedIps: [${ips.target}] }
dns: ${dns}
sites:
${SITES.map((s) => `  - { domain: ${s}, server: origin, ports: [${httpPort}] }`).join('\n')}
defaults: { ttl: 1, quietWindow: 300ms, dnsTempCap: 3s, drainCap: 3s, poll: 100ms }
`,
        );
        const res = await ferryCli([
          'evacuate',
          'origin',
          '--to',
          'target',
          '--config',
          join(dir, 'ferry.yaml'),
          '--json',
        ]);
        assert.equal(res.status, 0, `${res.stdout}\n${res.stderr}`);
        const report = JSON.parse(res.stdout.trim().split('\n').pop()!) as {
          totalMs: number;
          sites: Array<{ domain: string; phase: string; startedAt: number; endedAt: number }>;
        };
        assert.deepEqual(
          report.sites.map((s) => [s.domain, s.phase]).sort(),
          SITES.map((s) => [`${s}.`, 'completed']),
        );
        // The agents show where the sites are now: all on the target, none left on the origin.
        const sitesOf = async (url: string) =>
          JSON.stringify(
            await fetch(`${url}/v1/sites`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) =>
              r.json(),
            ),
          );
        const [onOrigin, onTarget] = [await sitesOf(urls.origin!), await sitesOf(urls.target!)];
        for (const s of SITES) {
          assert.ok(onTarget.includes(s), `${s} is on the target: ${onTarget}`);
          assert.ok(!onOrigin.includes(s), `${s} is gone from the origin: ${onOrigin}`);
        }
        // Never more than two at once (a pool of two): sweep the start and end instants.
        const edges = report.sites
          .flatMap((x) => [[x.startedAt, 1] as const, [x.endedAt, -1] as const])
          .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        let now = 0;
        let peak = 0;
        for (const [, d] of edges) peak = Math.max(peak, (now += d));
        assert.ok(peak <= 2, `${peak} migrations ran at once`);
        if (pdns) {
          // Every site's record in PowerDNS is the target's, at its TTL from before.
          const check = createPowerDnsProvider({
            api: pdns.api,
            apiKey: pdns.apiKey,
            zone: 'example.',
            nameServers: [{ address: ips.dns, port: pdns.port }],
          });
          for (const s of SITES)
            assert.deepEqual(await check.getRRset(s, 'A'), { ttl: 1, rdata: [ips.target] }, s);
        }
      } finally {
        for (const a of agents) await a.close();
        await pdns?.stop();
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
}

const rsync = findBinary('rsync') ? false : 'rsync is not installed';
evacuateThroughAgents('127.0.52', 'embedded', rsync);
evacuateThroughAgents('127.0.112', 'powerdns', rsync || noPowerDns());
