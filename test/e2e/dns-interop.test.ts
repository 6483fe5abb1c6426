/**
 * Issue 4 acceptance, against the real thing: Knot DNS and BIND 9 as secondaries of Ferry (NOTIFY
 * then IXFR, also after Ferry restarts from its database), `kdig axfr` from Ferry, and
 * `knsupdate`/`nsupdate` with right and wrong TSIG keys, plus a stale-time request (BADTIME).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DnsServer, dnsQuery, formatRdata, parseZone, typeName } from '../../src/dns/index.js';
import { TsigKey } from '../../src/dns/tsig/index.js';
import { sendUpdate, upd } from '../../src/dns/update/index.js';
import { EmbeddedDnsProvider } from '../../src/migration/dns-embedded.js';
import { have, startBind, startKnot, type ExternalDns } from './dns-interop-servers.js';

const FERRY = '127.0.104.1';
const KNOT = '127.0.104.2';
const BIND = '127.0.0.1'; // named binds interface addresses only
const XFR = { name: 'xfr.', algorithm: 'hmac-sha256', secret: Buffer.alloc(32, 21).toString('base64') };
const UPD = { name: 'upd.', algorithm: 'hmac-sha512', secret: Buffer.alloc(64, 22).toString('base64') };
const ZONE = [
  '$ORIGIN example.',
  '$TTL 300',
  '@ SOA ns1 hostmaster 2024010101 3600 600 86400 60',
  '@ NS ns1',
  '@ MX 10 mail',
  'ns1 A 127.0.104.1',
  'mail A 192.0.2.25',
  'www A 192.0.2.1',
  'www AAAA 2001:db8::1',
  'txt TXT "v=spf1 -all" "two strings"',
  'srv._tcp SRV 0 5 443 www',
  'alias CNAME www',
  '',
].join('\n');
const missing = ['knotd', 'named', 'kdig', 'knsupdate', 'nsupdate'].filter((b) => !have(b));
const skip = missing.length
  ? `not installed: ${missing.join(', ')} (apt-get install knot knot-dnsutils bind9 bind9-dnsutils)`
  : false;

describe('Ferry as primary for Knot and BIND secondaries', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-interop-'));
  const db = join(dir, 'zones.sqlite');
  let ferry: DnsServer;
  let port = 0;
  let knot: ExternalDns | undefined;
  let bind: ExternalDns | undefined;

  const startFerry = async () => {
    ferry = new DnsServer({
      address: FERRY,
      port,
      zones: [parseZone(ZONE, { origin: 'example.' })],
      db,
      tsigKeys: [XFR, UPD],
      zonePolicies: {
        'example.': {
          allowTransfer: [{ key: XFR.name }, { address: '127.0.0.1' }],
          allowUpdate: [{ key: UPD.name }],
          ...(knot && bind
            ? {
                notify: [
                  { address: KNOT, port: knot.port, key: XFR.name },
                  { address: BIND, port: bind.port },
                ],
              }
            : {}),
        },
      },
      notify: { coalesceMs: 20, retryMs: 500, retries: 3 },
    });
    await ferry.start();
    port = ferry.port;
  };
  const policyWithNotify = () =>
    ferry.primary.setPolicy('example.', {
      allowTransfer: [{ key: XFR.name }, { address: '127.0.0.1' }],
      allowUpdate: [{ key: UPD.name }],
      notify: [
        { address: KNOT, port: knot!.port, key: XFR.name },
        { address: BIND, port: bind!.port },
      ],
    });

  before(async () => {
    await startFerry();
    const primary = { address: FERRY, port };
    knot = await startKnot({ address: KNOT, secondaryZones: [{ origin: 'example.', primary, key: XFR }] });
    bind = await startBind({ address: BIND, secondaryZones: [{ origin: 'example.', primary }] });
    policyWithNotify();
  });

  after(async () => {
    await ferry?.stop();
    await knot?.stop();
    await bind?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Polls a server until `name` A is `want`; returns the ms it took. */
  async function seen(s: ExternalDns, name: string, want: string, limitMs = 2000): Promise<number> {
    const t0 = Date.now();
    let last = '';
    while (Date.now() - t0 < limitMs + 1000) {
      const r = await dnsQuery({
        server: { address: s.address, port: s.port },
        name,
        type: 'A',
        timeoutMs: 300,
      }).catch(() => undefined);
      last = r?.answers.map((a) => a.rdata).join(',') ?? 'no answer';
      if (last === want) return Date.now() - t0;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(
      `${s.kind} still answers ${last} for ${name} after ${Date.now() - t0} ms\n${s.log().slice(-2000)}`,
    );
  }

  it('secondaries serve a change made through Ferry within 2 s, by NOTIFY and IXFR', async () => {
    const ixfr0 = ferry.primary.stats.ixfr;
    const provider = new EmbeddedDnsProvider({ server: ferry });
    await provider.replaceRRset('www.example.', 'A', 60, ['192.0.2.77']);
    const [tk, tb] = await Promise.all([
      seen(knot!, 'www.example.', '192.0.2.77'),
      seen(bind!, 'www.example.', '192.0.2.77'),
    ]);
    assert.ok(tk <= 2000 && tb <= 2000, `knot ${tk} ms, bind ${tb} ms`);
    assert.match(knot!.log(), /IXFR, incoming/i, knot!.log().slice(-1500));
    assert.equal(ferry.primary.stats.ixfr - ixfr0, 2, 'both fetched the change by IXFR');
  });

  it('after a restart of Ferry (same database) they still transfer correctly', async () => {
    const serial = ferry.zones.serial('example.');
    await ferry.stop();
    await startFerry();
    assert.equal(ferry.zones.serial('example.'), serial, 'serial back from the database');
    assert.deepEqual(ferry.zones.getRRset('www.example.', 'A'), { ttl: 60, rdata: ['192.0.2.77'] });
    await new EmbeddedDnsProvider({ server: ferry }).replaceRRset('www.example.', 'A', 60, ['192.0.2.78']);
    const [tk, tb] = await Promise.all([
      seen(knot!, 'www.example.', '192.0.2.78'),
      seen(bind!, 'www.example.', '192.0.2.78'),
    ]);
    assert.ok(tk <= 2000 && tb <= 2000, `knot ${tk} ms, bind ${tb} ms`);
    assert.equal(ferry.primary.stats.ixfr, 2, 'IXFR from the journal kept in the database');
    // The secondaries' copies equal Ferry's zone.
    for (const s of [knot!, bind!]) assert.deepEqual(await axfr(s.address, s.port), zoneRecords(), s.kind);
  });

  /** The zone's records as `owner ttl type rdata` lines, sorted. */
  function zoneRecords(): string[] {
    return ferry.zones
      .findZone('example.')!
      .records()
      .map((r) => `${r.name.toLowerCase()} ${r.ttl} ${typeName(r.type)} ${formatRdata(r.type, r.data)}`)
      .sort();
  }

  /** Runs a tool without blocking the event loop (Ferry runs in this process). */
  function tool(bin: string, args: string[], input = ''): Promise<{ status: number | null; out: string }> {
    return new Promise((resolve) => {
      const c = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      c.stdout.on('data', (b: Buffer) => (out += b.toString()));
      c.stderr.on('data', (b: Buffer) => (out += b.toString()));
      c.on('close', (status) => resolve({ status, out }));
      c.stdin.end(input);
    });
  }

  async function axfr(address: string, p: number, key?: typeof XFR): Promise<string[]> {
    const args = [`@${address}`, '-p', String(p), 'axfr', 'example.', '+noall', '+answer', '+nocrypto'];
    if (key) args.push('-y', `${key.algorithm}:${key.name}:${key.secret}`);
    const { status, out } = await tool('kdig', args);
    assert.equal(status, 0, out);
    const lines = out
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith(';'))
      .map((l) => {
        const [owner, ttl, , type, ...rest] = l.split(/\s+/);
        return `${owner!.toLowerCase()} ${ttl} ${type} ${rest.join(' ')}`;
      });
    // AXFR repeats the SOA at the end (RFC 5936 §2.2): drop that one.
    return lines.slice(0, -1).sort();
  }

  it('kdig axfr from Ferry returns exactly the zone’s records (signed and by address)', async () => {
    assert.deepEqual(await axfr(FERRY, port, XFR), zoneRecords());
    assert.deepEqual(await axfr(FERRY, port), zoneRecords());
    const wrong = `hmac-sha256:xfr.:${Buffer.alloc(32, 1).toString('base64')}`;
    const refused = await tool('kdig', [`@${FERRY}`, '-p', String(port), 'axfr', 'example.', '-y', wrong]);
    assert.match(refused.out, /BADSIG|NOTAUTH|failed/i);
  });

  const nsupdateScript = (bin: string, ip: string) =>
    [
      `server ${FERRY} ${port}`,
      'zone example.',
      `update delete ${bin}.example. A`,
      `update add ${bin}.example. 120 A ${ip}`,
      'send',
      '',
    ].join('\n');

  for (const bin of ['knsupdate', 'nsupdate'] as const) {
    it(`${bin} with the right TSIG key changes a record; a wrong key or secret is refused and changes nothing`, async () => {
      const right = await tool(
        bin,
        ['-y', `hmac-sha512:upd.:${UPD.secret}`],
        nsupdateScript(bin, '192.0.2.90'),
      );
      assert.equal(right.status, 0, right.out);
      assert.deepEqual(ferry.zones.getRRset(`${bin}.example.`, 'A'), { ttl: 120, rdata: ['192.0.2.90'] });
      const serial = ferry.zones.serial('example.');
      const badKey = await tool(
        bin,
        ['-y', `hmac-sha512:nobody.:${UPD.secret}`],
        nsupdateScript(bin, '192.0.2.91'),
      );
      assert.notEqual(badKey.status, 0);
      assert.match(badKey.out, /BADKEY|NOTAUTH/, badKey.out);
      const badSig = await tool(
        bin,
        ['-y', `hmac-sha512:upd.:${Buffer.alloc(64, 5).toString('base64')}`],
        nsupdateScript(bin, '192.0.2.92'),
      );
      assert.notEqual(badSig.status, 0);
      assert.match(badSig.out, /BADSIG|NOTAUTH/, badSig.out);
      assert.deepEqual(ferry.zones.getRRset(`${bin}.example.`, 'A'), { ttl: 120, rdata: ['192.0.2.90'] });
      assert.equal(ferry.zones.serial('example.'), serial);
    });
  }

  it('an update signed an hour ago is refused with BADTIME (RFC 8945 §5.2.3) and changes nothing', async () => {
    const serial = ferry.zones.serial('example.');
    const r = await sendUpdate({
      server: { address: FERRY, port },
      zone: 'example.',
      updates: [upd.add('stale.example.', 'A', 60, '192.0.2.1')],
      key: new TsigKey(UPD),
      now: Math.floor(Date.now() / 1000) - 3600,
    });
    assert.deepEqual(
      { rcode: r.rcode, tsigError: r.tsigError, signed: r.verified },
      { rcode: 9, tsigError: 18, signed: true },
    );
    // And the exact TSIG errors for a wrong key and a wrong secret, read from the answers.
    const other = await sendUpdate({
      server: { address: FERRY, port },
      zone: 'example.',
      updates: [upd.add('stale.example.', 'A', 60, '192.0.2.1')],
      key: new TsigKey({ ...UPD, name: 'nobody.' }),
    });
    assert.deepEqual([other.rcode, other.tsigError], [9, 17]);
    const wrong = await sendUpdate({
      server: { address: FERRY, port },
      zone: 'example.',
      updates: [upd.add('stale.example.', 'A', 60, '192.0.2.1')],
      key: new TsigKey({ ...UPD, secret: Buffer.alloc(64, 6).toString('base64') }),
    });
    assert.deepEqual([wrong.rcode, wrong.tsigError], [9, 16]);
    assert.equal(ferry.zones.getRRset('stale.example.', 'A'), undefined);
    assert.equal(ferry.zones.serial('example.'), serial);
  });
});
