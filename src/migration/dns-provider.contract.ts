/**
 * The contract every DNS provider meets, as one test suite run against each implementation:
 * the embedded server, the rfc2136 provider against Ferry, Knot, BIND and PowerDNS primaries, and
 * the powerdns provider (HTTP API).
 * The fixture zone holds `www` A 192.0.2.1 (TTL 300) and an NS with glue.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DnsProvider } from './ports.js';

/** The zone text each fixture serves: `zone` with its name server at `nsAddress`. */
export function contractZone(zone: string, nsAddress: string, serial = 1): string {
  return [
    `$ORIGIN ${zone}`,
    '$TTL 300',
    `@ IN SOA ns1 hostmaster ${serial} 3600 600 86400 60`,
    '@ IN NS ns1',
    `ns1 IN A ${nsAddress}`,
    'www 300 IN A 192.0.2.1',
    'txt 300 IN TXT "hello world"',
    '',
  ].join('\n');
}

export interface ProviderFixture {
  provider: DnsProvider & { nameServers?(): Promise<Array<{ address: string; port: number }>> };
  zone: string;
  /** Where the zone's name server listens (what nameServers() must list). */
  server: { address: string; port: number };
  cleanup(): Promise<void>;
}

const serialGreater = (a: number, b: number) =>
  a !== b && ((a > b && a - b < 2 ** 31) || (a < b && b - a > 2 ** 31));

/** Registers the contract tests for one implementation. */
export function dnsProviderContract(
  label: string,
  setup: () => Promise<ProviderFixture>,
  opts: { skip?: string | false } = {},
): void {
  describe(`DNS provider contract: ${label}`, { skip: opts.skip ?? false }, () => {
    let f: ProviderFixture;
    const name = (l: string) => `${l}.${f.zone}`;
    before(async () => {
      f = await setup();
    });
    after(async () => {
      await f?.cleanup();
    });

    it('reads an RRset, and undefined for a name or type without one', async () => {
      assert.deepEqual(await f.provider.getRRset(name('www'), 'A'), { ttl: 300, rdata: ['192.0.2.1'] });
      assert.deepEqual(await f.provider.getRRset(name('txt'), 'TXT'), { ttl: 300, rdata: ['"hello world"'] });
      assert.equal(await f.provider.getRRset(name('www'), 'AAAA'), undefined);
      assert.equal(await f.provider.getRRset(name('nope'), 'A'), undefined);
    });

    it('replaces an RRset with a TTL and returns a greater serial', async () => {
      const before = (await f.provider.observe(f.zone, 'SOA'))[0]!.serial!;
      const { serial } = await f.provider.replaceRRset(name('www'), 'A', 30, ['192.0.2.2', '192.0.2.3']);
      assert.ok(serialGreater(serial, before), `${serial} after ${before}`);
      const got = await f.provider.getRRset(name('www'), 'A');
      assert.equal(got?.ttl, 30);
      assert.deepEqual([...got!.rdata].sort(), ['192.0.2.2', '192.0.2.3']);
    });

    it('creates a new RRset and deletes one with an empty list', async () => {
      await f.provider.replaceRRset(name('new'), 'AAAA', 60, ['2001:db8::1']);
      assert.deepEqual(await f.provider.getRRset(name('new'), 'AAAA'), { ttl: 60, rdata: ['2001:db8::1'] });
      await f.provider.replaceRRset(name('new'), 'AAAA', 60, []);
      assert.equal(await f.provider.getRRset(name('new'), 'AAAA'), undefined);
    });

    it('replaces atomically: a reader sees the old set or the new one, never a mix or nothing', async () => {
      const sets = [
        ['192.0.2.10', '192.0.2.11'],
        ['192.0.2.20', '192.0.2.21'],
      ];
      await f.provider.replaceRRset(name('atom'), 'A', 60, sets[0]!);
      let stop = false;
      const seen: string[] = [];
      const reader = (async () => {
        while (!stop) {
          const r = await f.provider.getRRset(name('atom'), 'A');
          seen.push(r ? [...r.rdata].sort().join(',') : 'none');
        }
      })();
      for (let i = 1; i <= 6; i++) await f.provider.replaceRRset(name('atom'), 'A', 60, sets[i % 2]!);
      stop = true;
      await reader;
      const allowed = new Set(sets.map((s) => s.join(',')));
      assert.ok(seen.length > 0);
      for (const s of seen) assert.ok(allowed.has(s), `reader saw ${s}`);
    });

    it('is idempotent: the same replacement twice leaves the same RRset', async () => {
      await f.provider.replaceRRset(name('www'), 'A', 45, ['192.0.2.4']);
      await f.provider.replaceRRset(name('www'), 'A', 45, ['192.0.2.4']);
      assert.deepEqual(await f.provider.getRRset(name('www'), 'A'), { ttl: 45, rdata: ['192.0.2.4'] });
    });

    it('observes every name server at the serial of the last change, with the new data', async () => {
      const { serial } = await f.provider.replaceRRset(name('www'), 'A', 45, ['192.0.2.5']);
      const obs = await f.provider.observe(name('www'), 'A');
      assert.ok(obs.length >= 1);
      for (const o of obs) {
        assert.ok(
          o.serial !== null && (o.serial === serial || serialGreater(o.serial, serial)),
          JSON.stringify(o),
        );
        assert.deepEqual(o.rdata, ['192.0.2.5']);
      }
    });

    it('lists the zone’s name servers', { skip: false }, async (t) => {
      if (!f.provider.nameServers) return t.skip('this provider lists no name servers');
      const ns = await f.provider.nameServers();
      assert.deepEqual(
        ns.map((s) => ({ address: s.address, port: s.port })),
        [f.server],
      );
    });

    it('rejects a change outside its zone', async () => {
      await assert.rejects(f.provider.replaceRRset('www.elsewhere.test.', 'A', 60, ['192.0.2.1']));
    });
  });
}
