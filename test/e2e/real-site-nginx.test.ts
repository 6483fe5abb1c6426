/**
 * Issue 13's acceptance on nginx: WordPress (Debian's package) on nginx + php8.2-fpm, HTTP and
 * HTTPS with the site's own certificate from a test CA, its database on a MariaDB both servers
 * reach, beside a static site and a PHP app on the origin's shared IP, moves to the target under
 * load (pages over HTTP and HTTPS, keep-alive and new connections, stale clients, comments,
 * uploads), driven the operator's way (`ferry agent --web-config nginx`, `ferry controller
 * --config` with the site as `kind: web`, `ferry migrate --watch`). The assertions are
 * `assertMoved`'s (test/e2e/netns/real-site.ts). Root only; everything is removed, pass or fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NET, netnsSkipReason } from './netns/topology.js';
import { REAL_SITE_BINARIES, buildHosting, moveUnderLoad } from './netns/real-site.js';
import { servedFingerprint } from './netns/sites.js';

const skip = netnsSkipReason({ ...REAL_SITE_BINARIES, 'nginx-light': ['nginx'] });
if (skip) console.log(`# skipping the real-site nginx acceptance: ${skip}`);

test(
  'WordPress on nginx + PHP-FPM moves under load with no failed request, every write once, its own certificate, the other sites untouched',
  { skip: skip ?? false, timeout: 420_000 },
  async () => {
    const h = await buildHosting('nginx');
    let ok = false;
    try {
      const blog = h.sites.blog;
      const { seen } = await moveUnderLoad(h, blog, async () =>
        assert.equal(
          await servedFingerprint(h.topo.ns.client, NET.origin, blog.domain),
          h.certs.blog.fingerprint256,
        ),
      );
      // The origin keeps the site as a backup after the drain.
      const backups = (await h.origin.exec('ls', ['-1', '/var/lib/ferry/agent/backups'], { allowFail: true }))
        .stdout;
      assert.match(backups, /^blog\.example-/m, "the origin's copy is kept as a backup");
      console.log(
        `# real-site nginx: ${seen.results.length} requests, ${seen.summary.comments.length} comments, ${seen.summary.uploads.length} uploads, 0 failed, ${seen.summary.resent} sent again after the server closed the connection unanswered`,
      );
      ok = true;
    } finally {
      await h.close(ok);
    }
  },
);
