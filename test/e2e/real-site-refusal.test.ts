/**
 * Issue 13's refused move: a vhost whose document root lies outside every declared root
 * (`--site-root /var/www`; the site lives under /srv) is refused when the migration is planned,
 * naming that reason and the path, and nothing changes on either server: their web-server, PHP
 * and site files are byte for byte the same, no web server was reloaded, no temporary IP added.
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
} from './netns/real-site.js';
import { installStatic, siteLayout } from './netns/sites.js';

const skip = netnsSkipReason({ ...REAL_SITE_BINARIES, 'nginx-light': ['nginx'] });
if (skip) console.log(`# skipping the real-site refusal test: ${skip}`);

const LEGACY = {
  ...siteLayout('legacy.example', 'static', 'legacy'),
  home: '/srv/legacy.example',
  htdocs: '/srv/legacy.example/htdocs',
};

test(
  'a vhost whose document root is outside every declared root is refused at plan time, and nothing changes on either server',
  { skip: skip ?? false, timeout: 240_000 },
  async () => {
    const h = await buildHosting('nginx', async (origin, { ca }) => {
      await installStatic(origin, 'nginx', LEGACY, {
        address: NET.origin,
        cert: await ca.issue(LEGACY.names),
      });
    });
    let ok = false;
    try {
      await startAgents(h, { siteRoots: ['/var/www'] });
      await startControllerAndResolver(h, [LEGACY.domain]);
      const before = {
        origin: await configSnapshot(h.origin),
        target: await configSnapshot(h.target),
        originWeb: await webProcesses(h.origin, 'nginx'),
        targetWeb: await webProcesses(h.target, 'nginx'),
      };
      const run = await migrate(h, LEGACY.domain, 60_000);
      const output = `${run.lines.join('\n')}\n${run.stderr}`;
      assert.notEqual(run.exit, 0, 'ferry migrate fails');
      assert.match(output, /SITE_NOT_MOVABLE/, output.slice(-500));
      assert.match(output, /PATH_OUTSIDE_ROOTS/, 'the refusal names its reason');
      assert.match(output, /\/srv\/legacy\.example\/htdocs/, 'and the path');
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
      const addrs = (await h.origin.exec('ip', ['-br', 'addr', 'show', 'dev', 'eth0'])).stdout;
      assert.doesNotMatch(
        addrs,
        new RegExp(NET.tempIp.replace(/\./g, '\\.')),
        'no temporary IP on the origin',
      );
      ok = true;
    } finally {
      await h.close(ok);
    }
  },
);
