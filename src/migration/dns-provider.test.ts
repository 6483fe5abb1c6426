/**
 * The DNS provider contract against Ferry's own server: through the embedded provider, and
 * through the rfc2136 provider (TSIG-signed UPDATE over the wire to the same kind of server).
 * Knot and BIND primaries run the same suite in test/e2e/dns-interop-providers.test.ts.
 */
import { DnsServer, parseZone } from '../dns/index.js';
import { contractZone, dnsProviderContract } from './dns-provider.contract.js';
import { EmbeddedDnsProvider } from './dns-embedded.js';
import { Rfc2136DnsProvider } from './dns-rfc2136.js';

const KEY = {
  name: 'ferry-update.',
  algorithm: 'hmac-sha256',
  secret: Buffer.alloc(32, 11).toString('base64'),
};

async function ferry(address: string): Promise<DnsServer> {
  const s = new DnsServer({
    address,
    port: 0,
    zones: [parseZone(contractZone('example.', address), { origin: 'example.' })],
    tsigKeys: [KEY],
    zonePolicies: { 'example.': { allowUpdate: [{ key: KEY.name }] } },
  });
  await s.start();
  return s;
}

dnsProviderContract('embedded', async () => {
  const s = await ferry('127.0.102.1');
  return {
    provider: new EmbeddedDnsProvider({ server: s }),
    zone: 'example.',
    server: { address: s.address, port: s.port },
    cleanup: () => s.stop(),
  };
});

dnsProviderContract('rfc2136 → Ferry', async () => {
  const s = await ferry('127.0.102.2');
  return {
    provider: new Rfc2136DnsProvider({
      server: { address: s.address, port: s.port },
      zone: 'example.',
      tsig: KEY,
    }),
    zone: 'example.',
    server: { address: s.address, port: s.port },
    cleanup: () => s.stop(),
  };
});
