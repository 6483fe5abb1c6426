/**
 * Issue 13's refused moves, each refused when the migration is planned, naming its reason and the
 * part, with nothing changed on either server (their web-server, PHP and site files byte for byte
 * the same, no web server reloaded, no temporary IP added):
 *
 * - a vhost whose document root lies outside every declared root (`--site-root /var/www`; the
 *   site lives under /srv): `SITE_NOT_MOVABLE`, `PATH_OUTSIDE_ROOTS` and the path;
 * - a site whose PHP-FPM pool is of a version the target lacks (a PHP 8.1 pool under
 *   /etc/php/8.1 on the origin; the target has PHP-FPM 8.2 only), moved the way the operator
 *   guide says for a site `ferry.yaml` does not declare as a web site (`ferry migrate --kind web`):
 *   `TARGET_LACKS` naming the version and the pool file, as the target's agent checked it.
 *
 * Debian's packages here carry PHP 8.2 alone, so the origin's 8.1 pool is configuration that no
 * PHP-FPM runs; planning reads only the configuration.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { netnsSkipReason, NET } from './netns/topology.js';
import {
  REAL_SITE_BINARIES,
  buildHosting,
  configSnapshot,
  migrate,
  startAgents,
  startControllerAndResolver,
  webProcesses,
  type Hosting,
  type MigrateRun,
} from './netns/real-site.js';
import { addSiteUser, enableVhost, installCert, installStatic, phpPool, siteLayout } from './netns/sites.js';

const skip = netnsSkipReason({ ...REAL_SITE_BINARIES, 'nginx-light': ['nginx'] });
if (skip) console.log(`# skipping the real-site refusal test: ${skip}`);

const LEGACY = {
  ...siteLayout('legacy.example', 'static', 'legacy'),
  home: '/srv/legacy.example',
  htdocs: '/srv/legacy.example/htdocs',
};

/** A PHP site on a PHP-FPM 8.1 pool. */
const OLDPHP = {
  ...siteLayout('oldphp.example', 'notes', 'oldphp'),
  socket: '/run/php/php8.1-fpm-oldphp.sock',
  phpAccessLog: '/var/log/php8.1-fpm/oldphp.access.log',
};
const OLDPHP_POOL = '/etc/php/8.1/fpm/pool.d/oldphp.conf';

test(
  'refused at plan time, naming the part: a document root outside every declared root, a PHP-FPM version the target lacks; nothing changes on either server',
  { skip: skip ?? false, timeout: 240_000 },
  async () => {
    const h = await buildHosting('nginx', async (origin, { ca }) => {
      await installStatic(origin, 'nginx', LEGACY, {
        address: NET.origin,
        cert: await ca.issue(LEGACY.names),
      });
      await addSiteUser(origin, OLDPHP);
      await origin.exec('mkdir', ['-p', OLDPHP.htdocs, '/var/log/php8.1-fpm']);
      await origin.writeFile(`${OLDPHP.htdocs}/index.php`, '<?php echo "old php\\n";\n');
      await origin.exec('chown', ['-R', `${OLDPHP.user}:${OLDPHP.user}`, OLDPHP.home]);
      await origin.writeFile(OLDPHP_POOL, phpPool(OLDPHP));
      await installCert(origin, OLDPHP, await ca.issue(OLDPHP.names));
      await enableVhost(origin, 'nginx', OLDPHP, NET.origin);
    });
    let ok = false;
    try {
      await startAgents(h, { siteRoots: ['/var/www'] });
      await startControllerAndResolver(h, [LEGACY.domain, OLDPHP.domain], {
        kindFromCli: [OLDPHP.domain],
      });
      const before = await servers(h);

      const legacy = await migrate(h, LEGACY.domain, 60_000);
      const legacyOut = output(legacy);
      assert.notEqual(legacy.exit, 0, 'ferry migrate fails');
      assert.match(legacyOut, /SITE_NOT_MOVABLE/, legacyOut.slice(-500));
      assert.match(legacyOut, /PATH_OUTSIDE_ROOTS/, 'the refusal names its reason');
      assert.match(legacyOut, /\/srv\/legacy\.example\/htdocs/, 'and the path');
      await assertUnchanged(h, before, legacy);

      const old = await migrate(h, OLDPHP.domain, 60_000, ['--kind', 'web']);
      const oldOut = output(old);
      assert.notEqual(old.exit, 0, 'ferry migrate --kind web fails');
      assert.match(oldOut, /TARGET_LACKS/, oldOut.slice(-500));
      assert.ok(
        oldOut.includes(`it lacks PHP-FPM 8.1 (pool [${OLDPHP.user}] of ${OLDPHP_POOL})`),
        `the refusal names the version and the pool that needs it: ${oldOut.slice(-500)}`,
      );
      assert.match(oldOut, /POST \/v1\/web-sites\/oldphp\.example\/check/, "as the target's agent answered");
      assert.match(oldOut, /\(target target\); nothing was changed/);
      await assertUnchanged(h, before, old);
      ok = true;
    } finally {
      await h.close(ok);
    }
  },
);

/** What `ferry migrate` printed: stdout's lines, then stderr. */
function output(run: MigrateRun): string {
  return `${run.lines.join('\n')}\n${run.stderr}`;
}

async function servers(h: Hosting) {
  return {
    origin: await configSnapshot(h.origin),
    target: await configSnapshot(h.target),
    originWeb: await webProcesses(h.origin, 'nginx'),
    targetWeb: await webProcesses(h.target, 'nginx'),
  };
}

/** Both servers as they were: files, web servers not reloaded, no gate, no temporary IP. */
async function assertUnchanged(
  h: Hosting,
  before: Awaited<ReturnType<typeof servers>>,
  run: MigrateRun,
): Promise<void> {
  assert.equal(await configSnapshot(h.origin), before.origin, 'nothing changed on the origin');
  assert.equal(await configSnapshot(h.target), before.target, 'nothing changed on the target');
  assert.deepEqual(
    await webProcesses(h.origin, 'nginx'),
    before.originWeb,
    "the origin's nginx not reloaded",
  );
  assert.deepEqual(
    await webProcesses(h.target, 'nginx'),
    before.targetWeb,
    "the target's nginx not reloaded",
  );
  assert.equal(run.at['origin-gate-site'], undefined, 'no gate was put in front of the site');
  assert.equal(run.at['phase:planned'], undefined, 'no migration was journaled');
  const addrs = (await h.origin.exec('ip', ['-br', 'addr', 'show', 'dev', 'eth0'])).stdout;
  assert.doesNotMatch(addrs, new RegExp(NET.tempIp.replace(/\./g, '\\.')), 'no temporary IP on the origin');
}
