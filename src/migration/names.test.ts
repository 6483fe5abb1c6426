/**
 * Planning a site's names against the embedded name server's zone: which names move with the
 * site, which are left alone and why, the refusal of a declared name that cannot move, and the
 * plan lines `ferry migrate` prints for names and mail.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { SiteMail } from '../agent/webconfig/model.js';
import { isFerryError } from '../common/errors.js';
import { DnsServer, parseZone } from '../dns/index.js';
import { EmbeddedDnsProvider, describeMail, describeSiteNames, planSiteNames } from './index.js';

const ORIGIN = '192.0.2.10';
const ORIGIN6 = '2001:db8::10';

describe('planSiteNames', () => {
  let dns: DnsServer;
  let provider: EmbeddedDnsProvider;

  before(async () => {
    dns = new DnsServer({
      address: '127.0.65.53',
      port: 0,
      zones: [
        parseZone(
          [
            '$ORIGIN example.',
            '$TTL 300',
            '@ IN SOA ns1 hostmaster 1 3600 600 86400 60',
            '@ IN NS ns1',
            'ns1 IN A 127.0.65.53',
            `shop IN A ${ORIGIN}`,
            `shop IN AAAA ${ORIGIN6}`,
            'shop IN MX 10 mail.shop',
            'shop IN MX 20 mx.provider.test.',
            `www.shop IN A ${ORIGIN}`,
            `www.shop IN AAAA ${ORIGIN6}`,
            `mail.shop IN A ${ORIGIN}`,
            'old.shop IN A 192.0.2.9',
            'cdn.shop IN CNAME shop',
            `v4only.shop IN A ${ORIGIN}`,
            '',
          ].join('\n'),
          { origin: 'example.' },
        ),
        parseZone(
          [
            '$ORIGIN sub.shop.example.',
            '$TTL 300',
            '@ IN SOA ns1.example. hostmaster.example. 1 3600 600 86400 60',
            '@ IN NS ns1.example.',
            `www IN A ${ORIGIN}`,
            '',
          ].join('\n'),
          { origin: 'sub.shop.example.' },
        ),
      ],
    });
    await dns.start();
    provider = new EmbeddedDnsProvider({ server: dns });
  });

  after(async () => {
    await dns?.stop();
  });

  const webNames = [
    'shop.example',
    'www.shop.example',
    'old.shop.example',
    'cdn.shop.example',
    'nothing.shop.example',
    'www.sub.shop.example',
    '~^(?<u>.+)\\.shop\\.example$',
  ];

  it('keeps the domain first, the names at the origin and the MX target; says why each other one stays', async () => {
    const r = await planSiteNames(provider, {
      domain: 'shop.example',
      webNames,
      declared: [],
      originIp: ORIGIN,
    });
    assert.deepEqual(r.names, ['shop.example.', 'www.shop.example.', 'mail.shop.example.']);
    assert.deepEqual(Object.fromEntries(r.leftAlone.map((l) => [l.name, l.reason])), {
      'old.shop.example.': "points at 192.0.2.9, not the origin's shared IP 192.0.2.10",
      'cdn.shop.example.': 'a CNAME (it follows its target)',
      'nothing.shop.example.': 'no A record',
      'www.sub.shop.example.': 'outside the zone example.',
      '~^(?<u>.+)\\.shop\\.example$.': 'not a plain host name (a wildcard or a pattern)',
      'mx.provider.test.': 'outside the zone example.',
    });
  });

  it('with IPv6 moving too, a name needs its AAAA at the origin as well', async () => {
    const r = await planSiteNames(provider, {
      domain: 'shop.example.',
      webNames: ['www.shop.example', 'v4only.shop.example'],
      declared: [],
      originIp: ORIGIN,
      originIp6: ORIGIN6,
    });
    assert.deepEqual(r.names, ['shop.example.', 'www.shop.example.']);
    const reasons = Object.fromEntries(r.leftAlone.map((l) => [l.name, l.reason]));
    assert.match(reasons['v4only.shop.example.']!, /no AAAA record/);
    assert.match(reasons['mail.shop.example.']!, /no AAAA record/);
  });

  it('adds declared names, and refuses one that cannot move with the reason', async () => {
    const ok = await planSiteNames(provider, {
      domain: 'shop.example',
      webNames: [],
      declared: ['V4ONLY.shop.example'],
      originIp: ORIGIN,
    });
    assert.deepEqual(ok.names, ['shop.example.', 'mail.shop.example.', 'v4only.shop.example.']);
    for (const [name, reason] of [
      ['old.shop.example', /points at 192\.0\.2\.9, not the origin's shared IP/],
      ['cdn.shop.example', /a CNAME/],
      ['www.sub.shop.example', /outside the zone example\./],
      ['nothing.shop.example', /no A record/],
    ] as const) {
      await assert.rejects(
        planSiteNames(provider, { domain: 'shop.example', webNames: [], declared: [name], originIp: ORIGIN }),
        (e: unknown) =>
          isFerryError(e, 'PLAN_NAME_REFUSED') &&
          e.message.includes(`${name}. (sites[].names of shop.example.) cannot move with the site`) &&
          reason.test(e.message),
      );
    }
  });

  it('describes names and mail as the plan shows them', () => {
    assert.deepEqual(
      describeSiteNames(
        ['shop.example.', 'www.shop.example.'],
        [{ name: 'old.shop.example.', reason: 'points at 192.0.2.9' }],
      ),
      [
        'move together: shop.example., www.shop.example.',
        'left alone: old.shop.example. (points at 192.0.2.9)',
      ],
    );
    const mail: SiteMail = {
      domain: 'shop.example',
      mailboxes: [{ address: 'anna@shop.example', maildir: 'anna/', messages: 1, bytes: 900 }],
      aliases: [{ address: 'info@shop.example', to: ['anna@shop.example', 'bob@shop.example'] }],
      users: ['anna@shop.example'],
      ports: [25, 143],
    };
    assert.deepEqual(describeMail(mail), [
      'mailbox anna@shop.example: 1 message, 900 bytes',
      'alias info@shop.example → anna@shop.example, bob@shop.example',
      'users: anna@shop.example',
      'ports: 25, 143',
    ]);
    assert.match(describeMail(undefined, true)[0]!, /^mail stays on the origin/);
    assert.deepEqual(describeMail(undefined), []);
  });
});
