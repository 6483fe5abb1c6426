/**
 * The DNS provider contract against real primaries: Knot DNS, BIND 9 and PowerDNS, each started
 * here on a loopback port in its own folder, updated by the rfc2136 provider with a TSIG key; and
 * PowerDNS once more through the powerdns provider (its HTTP API).
 */
import { contractZone, dnsProviderContract } from '../../src/migration/dns-provider.contract.js';
import { PowerDnsProvider } from '../../src/migration/dns-powerdns.js';
import { Rfc2136DnsProvider } from '../../src/migration/dns-rfc2136.js';
import { have, startBind, startKnot, startPowerDns, type ExternalDns } from './dns-interop-servers.js';

const KEY = {
  name: 'ferry-update.',
  algorithm: 'hmac-sha256',
  secret: Buffer.alloc(32, 12).toString('base64'),
};

for (const [label, bin, start, address] of [
  ['Knot primary', 'knotd', startKnot, '127.0.103.1'],
  // named listens only on addresses configured on an interface: on loopback that is 127.0.0.1.
  ['BIND primary', 'named', startBind, '127.0.0.1'],
  // dnsupdate=yes, the key in its tsigkeys table, the zone's TSIG-ALLOW-DNSUPDATE metadata.
  ['PowerDNS primary', 'pdns_server', startPowerDns, '127.0.103.3'],
] as const) {
  dnsProviderContract(
    `rfc2136 → ${label}`,
    async () => {
      const srv: ExternalDns = await start({
        address,
        primaryZones: [{ origin: 'example.', text: contractZone('example.', address) }],
        updateKey: KEY,
      });
      return {
        provider: new Rfc2136DnsProvider({
          server: { address, port: srv.port },
          zone: 'example.',
          tsig: KEY,
        }),
        zone: 'example.',
        server: { address, port: srv.port },
        cleanup: () => srv.stop(),
      };
    },
    {
      skip: have(bin)
        ? false
        : `${bin} is not installed (apt-get install ${bin === 'knotd' ? 'knot' : bin === 'named' ? 'bind9' : 'pdns-server pdns-backend-sqlite3'})`,
    },
  );
}

dnsProviderContract(
  'powerdns (HTTP API) → PowerDNS',
  async () => {
    const address = '127.0.103.2';
    const srv = await startPowerDns({
      address,
      primaryZones: [{ origin: 'example.', text: contractZone('example.', address) }],
    });
    return {
      // The name servers come from the zone's NS record and its glue, read through the API.
      provider: new PowerDnsProvider({
        api: srv.api,
        apiKey: srv.apiKey,
        zone: 'example.',
        nameServerPort: srv.port,
      }),
      zone: 'example.',
      server: { address, port: srv.port },
      cleanup: () => srv.stop(),
    };
  },
  {
    skip: have('pdns_server')
      ? false
      : 'pdns_server is not installed (apt-get install pdns-server pdns-backend-sqlite3)',
  },
);
