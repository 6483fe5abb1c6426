/**
 * The dashboard in a real browser (Debian's chromium through playwright-core) against a running
 * sandbox (`ferry demo --serve --no-migrate`): start a migration from the UI, watch it reach
 * `completed`, and check the chart's data shows the traffic moving from IPt to IP2. Screenshots
 * go to test-artifacts/.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { serveSandbox, type ServedSandbox } from './sandbox-process.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = 'test-artifacts';
const skip = existsSync(CHROMIUM)
  ? false
  : `${CHROMIUM} is not installed (bash .ci/run installs Debian's chromium)`;
if (skip) console.log(`# dashboard test skipped: ${skip}`);

interface Sample {
  at: number;
  phase: string;
  rps: { ip1: number; ipt: number; ip2: number };
}

describe('web dashboard in chromium', { skip }, () => {
  let sb: ServedSandbox;
  let profile: string;

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    profile = await mkdtemp(join(tmpdir(), 'ferry-chromium-'));
    sb = await serveSandbox(82, [
      '--no-migrate',
      '--ttl',
      '1',
      '--quiet-window',
      '800',
      '--rate',
      '40',
      '--clients',
      '16',
    ]);
  });
  after(async () => {
    await sb?.stop();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  it(
    'starts a migration from the UI and shows it completed, with traffic moving from IPt to IP2',
    { timeout: 180_000 },
    async () => {
      const { chromium } = await import('playwright-core');
      const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
        ],
        viewport: { width: 1400, height: 1000 },
      });
      const page = context.pages()[0] ?? (await context.newPage());
      try {
        const pageErrors: string[] = [];
        page.on('pageerror', (e) => pageErrors.push(e.message));
        await page.goto(`${sb.url}/#token=${sb.token}`);
        // The token left the address bar for sessionStorage.
        await page.waitForFunction("!location.hash.includes('token')");
        await page.waitForSelector('#start-domain option[value="shop.example."]', {
          state: 'attached',
          timeout: 30_000,
        });
        await page.waitForSelector('#servers tbody tr');
        await page.screenshot({ path: join(ARTIFACTS, 'dashboard-1-before.png'), fullPage: true });

        await page.selectOption('#start-domain', 'shop.example.');
        await page.selectOption('#start-target', 'target');
        await page.click('#start-btn');
        await page.waitForSelector('#detail-phase[data-phase]', { timeout: 15_000 });
        const ended =
          '#detail-phase[data-phase="completed"], #detail-phase[data-phase="failed"], #detail-phase[data-phase="rolled-back"]';
        await page.waitForSelector(`#detail-phase[data-phase="draining"], ${ended}`, { timeout: 120_000 });
        await page.screenshot({ path: join(ARTIFACTS, 'dashboard-2-draining.png'), fullPage: true });
        await page.waitForSelector(ended, { timeout: 120_000 });
        assert.equal(
          await page.getAttribute('#detail-phase', 'data-phase'),
          'completed',
          await page.locator('#detail').innerText(),
        );
        // Let a few tail samples arrive so the chart shows the end.
        await page.waitForTimeout(2500);
        await page.screenshot({ path: join(ARTIFACTS, 'dashboard-3-completed.png'), fullPage: true });

        assert.deepEqual(pageErrors, []);
        assert.equal((await page.locator('#chart canvas').count()) > 0, true, 'the chart is drawn');
        const timeline = await page.locator('#timeline div').allInnerTexts();
        assert.ok(
          timeline.some((t) => t.startsWith('cutover')) && timeline.some((t) => t.startsWith('completed')),
          timeline.join(' | '),
        );
        const sites = await page.locator('#sites tbody').innerText();
        assert.match(sites, /shop\.example\.\s+target/);

        const samples = (await page.evaluate(
          'window.ferryState.traffic.get(window.ferryState.selected) ?? []',
        )) as Sample[];
        assert.ok(samples.length >= 5, `chart samples: ${samples.length}`);
        const firstIpt = samples.findIndex((s) => s.rps.ipt > 0);
        const lastIpt = samples.findLastIndex((s) => s.rps.ipt > 0);
        const lastIp2 = samples.findLastIndex((s) => s.rps.ip2 > 0);
        assert.ok(firstIpt >= 0, `traffic reached IPt: ${JSON.stringify(samples.map((s) => s.rps))}`);
        assert.ok(lastIp2 > lastIpt, 'IP2 still serves after IPt went quiet');
        const end = samples.slice(-2);
        assert.ok(
          end.every((s) => s.rps.ipt === 0 && s.rps.ip2 > 0),
          `at the end all traffic is at IP2: ${JSON.stringify(end)}`,
        );
        // Samples come once a second and are labelled with the phase at their end; with a 1 s TTL
        // the whole dns-temp..cutover stretch can fall inside one interval. What shows the move is
        // the order of dominance: where IPt traffic first appears it outweighs IP2, and at the end
        // IP2 carries everything (checked above).
        const first = samples[firstIpt]!;
        assert.ok(
          first.rps.ipt >= first.rps.ip2,
          `IPt carried the domain before IP2 did: ${JSON.stringify(samples.map((s) => [s.phase, s.rps]))}`,
        );
      } catch (err) {
        await page
          .screenshot({ path: join(ARTIFACTS, 'dashboard-failure.png'), fullPage: true })
          .catch(() => undefined);
        console.log(sb.output().split('\n').slice(-40).join('\n'));
        throw err;
      } finally {
        await context.close();
      }
    },
  );
});
