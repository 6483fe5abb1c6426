/**
 * `npm run bench:cutover` (node --import tsx bench/cutover/run.ts): the write pause of a real
 * cut-over, beside a plain rsync delta pass over the same tree, measured in the same run.
 *
 * Setup, once: a site tree of BENCH_FILES files (default 100,000 of 4 KiB, ~400 MB, in folders of
 * 100) is generated in a temp folder; a third agent ("mirror") receives plain rsync passes.
 *
 * Each of BENCH_RUNS runs (default 5) is one whole migration, driven as the sandbox drives one
 * (`Sandbox` with `agents: 'http'`: each agent behind its HTTP API as `ferry agent` runs it, site
 * data over rsync+TLS between them, the controller's journal fsynced before each step as `ferry
 * controller` keeps it), on loopback addresses 127.0.68.x:
 * 1. a fresh sandbox; the tree is copied into the migrated site's data folder;
 * 2. the plain pass: the site's folder is pushed to the mirror (untimed, so the mirror has the
 *    tree), BENCH_WRITES writes are made (60% rewrites, 30% new files in a new folder, 10%
 *    deletions), then a timed `rsync -a --delete` of the whole folder over the same TLS transport
 *    (`rsyncPush`, what a pass was before the tracker);
 * 3. the load client (the sandbox's `LoadGenerator`: BENCH_RATE requests/s, default 100, 30% of
 *    them writes, keep-alive and new connections, stale DNS caches) runs on the site and a second
 *    one; the migration runs through every phase; after the initial sync BENCH_WRITES more writes
 *    are made to the tree, so the final delta carries them and the load's own writes.
 *
 * What is measured in each run, from the orchestrator's own calls (the origin's driver is wrapped
 * to note when they are made and return):
 * - the cut-over's duration: from the call that holds the temporary IP's redirect (the first hold)
 *   to the return of the call that releases it (the last one);
 * - held requests: the migrated site's requests that STARTED in that window (they wait for the
 *   relay's hold or the origin gate's hold, or for the switch);
 * - the added latency of a held request: its latency minus the median latency of the run's
 *   unheld requests for the same site (those that started outside the window);
 * - the steps of the pause, from the journal (each step's start to the next one's).
 * Reported: per run, and pooled over all runs (added latency p50, p99 and max; cut-over median,
 * p99 = the slowest with few runs, and max), against the plain pass (median of the runs) with
 * the issue's targets: held requests' p99 added latency at most 0.2x the plain pass and at most
 * 250 ms. BENCH_FILES=2000 BENCH_RUNS=2 makes a smoke run of a minute.
 *
 * Then database.ts measures the same pause for a site whose writes go to MariaDB (a 1 GiB
 * database under about 200 writes/s, beside a plain dump-and-restore); BENCH_DB=0 leaves it out.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostAgent, HttpHostDriver, LoopbackAddresses, rsyncPush } from '../../src/agent/index.js';
import { STEP } from '../../src/migration/index.js';
import { Sandbox } from '../../src/sandbox/index.js';
import { freePort } from '../../test/ports.js';
import { median, pauseSteps, stats } from './measure.js';

const FILES = Number(process.env.BENCH_FILES ?? 100_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const WRITES = Number(process.env.BENCH_WRITES ?? 300);
const RATE = Number(process.env.BENCH_RATE ?? 100);
const PER_DIR = 100;
const SITE = 'bench.example.';
const OTHER = 'other.example.';

for (const bin of ['rsync', 'inotifywait', 'openssl']) {
  if (spawnSync(bin, ['--help'], { stdio: 'ignore' }).error) {
    console.log(
      `bench/cutover: ${bin} is not installed (apt-get install rsync inotify-tools openssl); skipped`,
    );
    process.exit(0);
  }
}

let round = 0;
/** One round of writes to the tree: rewrites, creations in a new folder, deletions of the last round's. */
async function writeTree(tree: string, stop: () => boolean = () => false): Promise<number> {
  round++;
  const rewrites = Math.floor(WRITES * 0.6);
  const creates = Math.floor(WRITES * 0.3);
  const deletes = WRITES - rewrites - creates;
  let n = 0;
  for (let i = 0; i < rewrites && !stop(); i++, n++) {
    const f = (round * 7919 + i * 104_729) % FILES;
    await writeFile(join(tree, `d${Math.floor(f / PER_DIR)}`, `f${f}`), `round ${round}\n`.repeat(300));
  }
  await mkdir(join(tree, `new-${round}`, 'uploads'), { recursive: true });
  for (let i = 0; i < creates && !stop(); i++, n++)
    await writeFile(join(tree, `new-${round}`, 'uploads', `u${i}`), `upload ${round} ${i}\n`.repeat(200));
  for (let i = 0; i < deletes && !stop(); i++, n++)
    await rm(join(tree, `new-${round - 1}`, 'uploads', `u${i}`), { force: true });
  return n;
}

const dir = await mkdtemp(join(tmpdir(), 'ferry-bench-cutover-'));
const template = join(dir, 'template');
const mirror = new HostAgent({
  id: 'mirror',
  dataDir: join(dir, 'mirror'),
  sharedIps: ['127.0.68.3'],
  httpPort: 0,
  addresses: new LoopbackAddresses(),
  web: { kind: 'builtin' },
  rsync: { port: await freePort('127.0.68.3') },
});

interface Run {
  plainMs: number;
  cutoverMs: number;
  held: number[];
  unheldMedian: number;
  requests: number;
  failed: number;
  finalSync: { files: number; ms: number };
  steps: Map<string, number>;
}
const runs: Run[] = [];

async function oneRun(r: number, mirrorTo: Awaited<ReturnType<HostAgent['openSyncReceiver']>>): Promise<Run> {
  const sb = new Sandbox({
    dnsAddress: '127.0.68.53',
    dnsPort: await freePort('127.0.68.53', { udp: true }),
    originIp: '127.0.68.1',
    targetIp: '127.0.68.2',
    tempIp: '127.0.68.100',
    httpPort: await freePort('127.0.68.1'),
    rsyncPort: await freePort('127.0.68.1'),
    sites: [SITE, OTHER],
    ttl: 1,
    rate: RATE,
    clients: 40,
    staleShare: 0.1,
    staleOverstayMs: 1000,
    quietWindowMs: 500,
    dnsTempCapMs: 10_000,
    drainCapMs: 5000,
    agents: 'http',
    journalDurability: 'full',
    dataDir: join(dir, `run-${r}`),
  });
  try {
    await sb.start();
    const tree = sb.originAgent.siteDataDir(SITE);
    const files = join(tree, 'files');
    // coreutils' cp: fs.cp takes minutes over 100,000 files.
    const copied = spawnSync('cp', ['-a', template, files]);
    if (copied.status !== 0) throw new Error(`cp -a ${template} ${files}: ${copied.stderr.toString()}`);

    // The plain pass, over the same tree, into the mirror's receive session.
    await rsyncPush({ source: tree, to: mirrorTo });
    await writeTree(files);
    let t0 = performance.now();
    await rsyncPush({ source: tree, to: mirrorTo });
    const plainMs = performance.now() - t0;

    // The cut-over's window, as the orchestrator's own calls mark it.
    const origin = sb.origin as HttpHostDriver;
    let holdAt = 0;
    let releasedAt = 0;
    const hold = origin.holdRedirect.bind(origin);
    const release = origin.releaseRedirect.bind(origin);
    origin.holdRedirect = (id) => {
      holdAt ||= Date.now();
      return hold(id);
    };
    origin.releaseRedirect = async (id) => {
      await release(id);
      releasedAt = Date.now();
    };
    let writing: Promise<number> | undefined;
    sb.orchestrator.on('sync', (e) => {
      if (e.pass === STEP.initialSync && e.state === 'done') writing = writeTree(files, () => holdAt > 0);
    });

    sb.startLoad();
    await new Promise((res) => setTimeout(res, 1000));
    t0 = performance.now();
    const rec = await sb.migrate();
    await new Promise((res) => setTimeout(res, 500));
    await sb.load.stop();
    await writing;
    if (rec.phase !== 'completed')
      throw new Error(`run ${r + 1}: the migration ended in ${rec.phase}: ${rec.error ?? ''}`);

    const mine = sb.load.results().filter((x) => x.domain === SITE);
    const inWindow = (at: number) => at >= holdAt && at <= releasedAt;
    const unheld = mine.filter((x) => x.ok && !inWindow(x.at)).map((x) => x.latencyMs);
    const unheldMedian = median(unheld);
    const held = mine.filter((x) => inWindow(x.at)).map((x) => x.latencyMs - unheldMedian);
    const entries = sb.orchestrator.journal.entries(rec.plan.id);
    const done = entries.find((e) => e.step === `${STEP.finalSync}-done`)?.detail ?? {};
    const run: Run = {
      plainMs,
      cutoverMs: releasedAt - holdAt,
      held,
      unheldMedian,
      requests: mine.length,
      failed: sb.load.results().filter((x) => !x.ok).length,
      finalSync: { files: Number(done.files ?? NaN), ms: Number(done.ms ?? NaN) },
      steps: pauseSteps(entries, releasedAt),
    };
    const h = stats(held);
    console.log(
      `run ${r + 1}: migration ${((performance.now() - t0) / 1000).toFixed(1)} s, ${run.requests} requests ` +
        `(${run.failed} failed, all sites), cut-over ${run.cutoverMs} ms, final pass ${run.finalSync.files} files ` +
        `${run.finalSync.ms} ms, ${held.length} held: added p50 ${h.p50.toFixed(0)} max ${h.max.toFixed(0)} ms ` +
        `(unheld median ${unheldMedian.toFixed(1)} ms); plain pass ${plainMs.toFixed(0)} ms`,
    );
    return run;
  } finally {
    await sb.stop().catch(() => undefined);
    await rm(join(dir, `run-${r}`), { recursive: true, force: true });
  }
}

try {
  let t0 = Date.now();
  const block = Buffer.alloc(4096, 'x');
  for (let d = 0; d * PER_DIR < FILES; d++) {
    await mkdir(join(template, `d${d}`), { recursive: true });
    const writes: Promise<void>[] = [];
    for (let i = d * PER_DIR; i < Math.min(FILES, (d + 1) * PER_DIR); i++)
      writes.push(writeFile(join(template, `d${d}`, `f${i}`), block));
    await Promise.all(writes);
  }
  console.log(
    `site: ${FILES} files of 4 KiB (${Math.round((FILES * 4) / 1024)} MiB) generated in ${Date.now() - t0} ms; ` +
      `${RUNS} runs, ${WRITES} writes to the tree before each pass, load ${RATE} requests/s`,
  );
  await mirror.start();
  await mirror.addSite('mirror.example', 'readonly');
  const mirrorTo = await mirror.openSyncReceiver('mirror.example');
  t0 = Date.now();
  for (let r = 0; r < RUNS; r++) runs.push(await oneRun(r, mirrorTo));

  const f = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-').padStart(9);
  const row = (name: string, s: { p50: number; p99: number; max: number }) =>
    console.log(`  ${name.padEnd(40)}${f(s.p50)}${f(s.p99)}${f(s.max)}`);
  const added = stats(runs.flatMap((x) => x.held));
  const cut = stats(runs.map((x) => x.cutoverMs));
  const plain = stats(runs.map((x) => x.plainMs));
  console.log(`\nwrite pause, ${RUNS} cut-overs of ${FILES} files under load (ms):`);
  console.log(`  ${''.padEnd(40)}${'p50'.padStart(9)}${'p99'.padStart(9)}${'max'.padStart(9)}`);
  row(`held requests' added latency (n=${runs.flatMap((x) => x.held).length})`, added);
  row('cut-over (first hold to release)', cut);
  row('final tracked pass (journal)', stats(runs.map((x) => x.finalSync.ms)));
  row(`plain rsync -a --delete, ${WRITES} writes`, plain);
  console.log('\n  where the pause goes (median per step over the runs, ms):');
  for (const step of runs[0]?.steps.keys() ?? [])
    console.log(`    ${step.padEnd(38)}${f(median(runs.map((x) => x.steps.get(step) ?? 0)))}`);
  const ratio = added.p99 / plain.p50;
  const perRun = runs.map((x) => stats(x.held).p99 / x.plainMs);
  console.log(
    `\n  held p99 added latency / plain pass (median): ${ratio.toFixed(3)} ` +
      `(per run: ${perRun.map((x) => x.toFixed(3)).join(' ')}); cut-over median / plain median: ${(cut.p50 / plain.p50).toFixed(3)}`,
  );
  console.log(
    `  target p99 <= 0.2x the plain pass: ${ratio <= 0.2 ? 'met' : 'NOT met'}; ` +
      `target p99 <= 250 ms (${added.p99.toFixed(1)} ms): ${added.p99 <= 250 ? 'met' : 'NOT met'}`,
  );
  console.log(
    `  the same targets on the cut-over's own length (p99 ${cut.p99.toFixed(1)} ms, ${(cut.p99 / plain.p50).toFixed(3)}x): ` +
      `${cut.p99 <= 0.2 * plain.p50 ? 'met' : 'NOT met'}, ${cut.p99 <= 250 ? 'met' : 'NOT met'}`,
  );
  console.log(`  (runs took ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
} finally {
  await mirror.stop().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}

// The same measure with the site's writes in MariaDB (database.ts), unless BENCH_DB=0.
if (process.env.BENCH_DB !== '0') {
  console.log('');
  const db = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'database.ts')], {
    stdio: 'inherit',
  });
  if (db.status !== 0) process.exitCode = 1;
}
