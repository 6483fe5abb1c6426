/**
 * Issue 13's acceptance on Apache 2.4 (mpm_event, proxy_fcgi to php8.2-fpm): a small PHP app that
 * writes (the notes app) moves to the target under load, beside WordPress and a static site on
 * the origin's shared IP, the operator's way (`ferry agent --web-config apache`, `ferry
 * controller --config` with the site as `kind: web`, `ferry migrate --watch`). The assertions are
 * `assertMoved`'s (test/e2e/netns/real-site.ts). The zone is in PowerDNS (`dns: provider:
 * powerdns`, in the dns namespace) where it is installed, so that a real site's move changes its
 * records through PowerDNS's API; the nginx acceptance keeps the embedded server, the database
 * crash test Knot. Root only; everything is removed, pass or fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { netnsSkipReason } from './netns/topology.js';
import { REAL_SITE_BINARIES, buildHosting, moveUnderLoad } from './netns/real-site.js';
import { noteCounts } from './netns/sites.js';
import { findBinary } from './helpers.js';

const skip = netnsSkipReason({ ...REAL_SITE_BINARIES, apache2: ['apache2'] });
if (skip) console.log(`# skipping the real-site Apache acceptance: ${skip}`);
const dns = findBinary('pdns_server') ? 'powerdns' : 'embedded';

test(
  `a PHP app on Apache (mpm_event + proxy_fcgi) moves under load with no failed request, every write once, the other sites untouched (records: ${dns})`,
  { skip: skip ?? false, timeout: 420_000 },
  async () => {
    const h = await buildHosting('apache');
    let ok = false;
    try {
      const notes = h.sites.notes;
      const { run, seen } = await moveUnderLoad(h, notes, undefined, undefined, dns);
      // The notes the origin wrote are on the target too (the data moved, not only new writes).
      const onTarget = await noteCounts(h.target, notes);
      const before = seen.summary.notes.filter((n) => {
        const r = seen.results.find((x) => `n-${x.id}` === n.key);
        return r && r.at < run.at['target-serve']!;
      });
      assert.ok(
        before.length > 0 && before.every((n) => onTarget.get(n.key) === 1),
        "the origin's notes moved",
      );
      ok = true;
    } finally {
      await h.close(ok);
    }
  },
);
