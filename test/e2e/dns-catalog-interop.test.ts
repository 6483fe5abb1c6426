/**
 * Issue 16 acceptance (catalog zones): real Knot DNS and BIND 9 consume the embedded server's
 * catalog zone (RFC 9432 v2). A zone added to Ferry is served by both within 5 s, a removed one
 * is gone from both within 5 s, and one added back returns. Knot and BIND start once for the suite.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_CATALOG_ZONE, DnsServer, dnsQuery, parseZone } from '../../src/dns/index.js';
import { have, startBind, startKnot, type ExternalDns } from './dns-interop-servers.js';

const FERRY = '127.0.117.1';
const KNOT = '127.0.117.2';
const BIND = '127.0.0.1'; // named binds interface addresses only
const CAT = DEFAULT_CATALOG_ZONE;
/** How soon a consumer must follow an add or a remove (the acceptance line). */
const LIMIT_MS = 5000;

const zone = (origin: string, address: string) =>
  parseZone(
    [
      `@ 300 SOA ns1 hostmaster 1 3600 600 86400 60`,
      '@ 300 NS ns1',
      'ns1 300 A 127.0.117.1',
      `www 300 A ${address}`,
    ].join('\n'),
    { origin },
  );

const missing = ['knotd', 'named'].filter((b) => !have(b));
const skip = missing.length ? `not installed: ${missing.join(', ')} (apt-get install knot bind9)` : false;

describe('Knot and BIND follow the catalog zone of the embedded server', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-catalog-interop-'));
  let ferry: DnsServer | undefined;
  let knot: ExternalDns | undefined;
  let bind: ExternalDns | undefined;

  before(async () => {
    ferry = new DnsServer({
      address: FERRY,
      port: 0,
      zones: [zone('first.example.', '192.0.2.1')],
      db: join(dir, 'zones.sqlite'),
      catalog: {},
      // Every zone, the catalog among them: transfers from loopback.
      zonePolicies: { '*': { allowTransfer: [{ address: '127.0.0.0/8' }] } },
      notify: { coalesceMs: 20, retryMs: 500, retries: 3 },
    });
    await ferry.start();
    const primary = { address: FERRY, port: ferry.port };
    knot = await startKnot({ address: KNOT, catalog: { origin: CAT, primary } });
    bind = await startBind({ address: BIND, catalog: { origin: CAT, primary } });
    // From now on the catalog's changes (and the members' own) are NOTIFYed to both.
    ferry.primary.setPolicy('*', {
      allowTransfer: [{ address: '127.0.0.0/8' }],
      notify: [
        { address: KNOT, port: knot.port },
        { address: BIND, port: bind.port },
      ],
    });
  });

  after(async () => {
    await ferry?.stop();
    await knot?.stop();
    await bind?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Polls until `name` A is `want` on `s` (an authoritative answer; undefined: none); ms taken. */
  async function until(s: ExternalDns, name: string, want: string | undefined): Promise<number> {
    const t0 = Date.now();
    let last = '';
    while (Date.now() - t0 < LIMIT_MS + 2000) {
      const r = await dnsQuery({
        server: { address: s.address, port: s.port },
        name,
        type: 'A',
        timeoutMs: 300,
      }).catch((err: Error) => err);
      const got =
        r instanceof Error ? undefined : r.flags.aa ? r.answers.map((a) => a.rdata).join(',') : undefined;
      last = r instanceof Error ? r.message : `${r.rcodeName} ${got ?? '(no authoritative answer)'}`;
      if (!(r instanceof Error) && got === want) return Date.now() - t0;
      await new Promise((res) => setTimeout(res, 50));
    }
    throw new Error(
      `${s.kind}: ${name} A is still ${last} after ${Date.now() - t0} ms\n${s.log().slice(-3000)}`,
    );
  }

  it('serves the zones Ferry had before the consumers started', async () => {
    for (const s of [knot!, bind!]) await until(s, 'www.first.example.', '192.0.2.1');
  });

  it('serves a zone added to Ferry within 5 s on both, then drops it within 5 s of its removal', async () => {
    ferry!.zones.add(zone('added.example.', '192.0.2.2'));
    const [k, b] = await Promise.all([
      until(knot!, 'www.added.example.', '192.0.2.2'),
      until(bind!, 'www.added.example.', '192.0.2.2'),
    ]);
    assert.ok(k <= LIMIT_MS && b <= LIMIT_MS, `added zone seen after ${k} ms (Knot), ${b} ms (BIND)`);

    assert.equal(ferry!.zones.remove('added.example.'), true);
    const [k2, b2] = await Promise.all([
      until(knot!, 'www.added.example.', undefined),
      until(bind!, 'www.added.example.', undefined),
    ]);
    assert.ok(k2 <= LIMIT_MS && b2 <= LIMIT_MS, `removed zone gone after ${k2} ms (Knot), ${b2} ms (BIND)`);
    // The others stay.
    for (const s of [knot!, bind!]) await until(s, 'www.first.example.', '192.0.2.1');
  });

  it('serves a zone again when it is added back, with its new content', async () => {
    ferry!.zones.add(zone('added.example.', '192.0.2.3'));
    const [k, b] = await Promise.all([
      until(knot!, 'www.added.example.', '192.0.2.3'),
      until(bind!, 'www.added.example.', '192.0.2.3'),
    ]);
    assert.ok(k <= LIMIT_MS && b <= LIMIT_MS, `re-added zone seen after ${k} ms (Knot), ${b} ms (BIND)`);
  });
});
