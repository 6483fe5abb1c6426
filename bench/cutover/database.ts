/**
 * The database part of `npm run bench:cutover` (node --import tsx bench/cutover/database.ts): the
 * write pause of a cut-over whose site keeps its writes in MariaDB, beside a plain dump-and-restore
 * of the same database, measured in the same run.
 *
 * Each of BENCH_DB_RUNS runs (default 3) is one whole migration in the real-stack sandbox with
 * databases (`ferry demo --stack nginx-php --database mariadb`): a private nginx, PHP-FPM and
 * MariaDB per server on loopback 127.0.69.x, the PHP shop writing each order as a row of the
 * origin's database `shop`. Before the migration:
 * 1. the shop's database gets a table of BENCH_DB_MB MiB (default 1024) of 1 KiB rows, written
 *    with the binary log off for that session (it is the database as it was, not a change);
 * 2. the plain copy: `mariadb-dump --single-transaction shop | mariadb` into a database of another
 *    name on the target's MariaDB, timed, then dropped (what a provider's dump-and-restore move
 *    does, with the site's writes stopped for all of it);
 * 3. the load client runs (BENCH_DB_RATE requests/s over both sites, default 440, a share
 *    BENCH_DB_WRITES of the shop's being orders, default 0.9: about 200 writes/s), and the
 *    migration runs through every phase: the consistent copy and replication while the site is
 *    served from the origin, then the catch-up inside the cut-over hold.
 *
 * Measured per run, from the orchestrator's own calls and events: the cut-over's windows (each
 * hold of the temporary IP's redirect to its release; a catch-up that runs out of time releases
 * and holds again later), the held requests (the shop's requests that started inside a window)
 * and their added latency (latency minus the median of the shop's unheld requests), the initial
 * copy, the lag when the hold began, and the catch-up wait. Pooled: added latency p50/p99/max,
 * with the issue's target p99 <= 250 ms, and the plain dump-and-restore's median.
 */
import { spawnSync } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mariadbInstalled } from '../../src/sandbox/mariadb.js';
import { Sandbox } from '../../src/sandbox/index.js';
import { freePort } from '../../test/ports.js';
import { median, pauseSteps, stats } from './measure.js';

const MB = Number(process.env.BENCH_DB_MB ?? 1024);
const RUNS = Number(process.env.BENCH_DB_RUNS ?? 3);
const RATE = Number(process.env.BENCH_DB_RATE ?? 440);
const WRITES = Number(process.env.BENCH_DB_WRITES ?? 0.9);
const ROW_BYTES = 960;

for (const bin of ['nginx', 'php-fpm8.2', 'mariadb-dump']) {
  const found = ['/usr/sbin', '/usr/bin', '/sbin'].some(
    (d) => spawnSync('test', ['-x', join(d, bin)]).status === 0,
  );
  if (!found || !mariadbInstalled()) {
    console.log(
      `bench/cutover/database: ${bin} or MariaDB is not installed (apt-get install nginx-light php8.2-fpm php8.2-mysql mariadb-server); skipped`,
    );
    process.exit(0);
  }
}

interface Run {
  fillMs: number;
  plainMs: number;
  copyMs: number;
  copyBytes: number;
  lagAtHold: number | null;
  catchUpMs: number[];
  windows: Array<[number, number]>;
  held: number[];
  writesPerSecond: number;
  failed: number;
  acknowledged: number;
  onTarget: number;
  steps: Map<string, number>;
}

const dir = await mkdtemp(join(tmpdir(), 'ferry-bench-db-'));
// As /tmp is: nginx's workers and the PHP pool (www-data, as root) pass through it.
await chmod(dir, 0o755);

async function oneRun(r: number): Promise<Run> {
  const sb = new Sandbox({
    stack: 'nginx-php',
    database: 'mariadb',
    dnsAddress: '127.0.69.53',
    dnsPort: await freePort('127.0.69.53', { udp: true }),
    originIp: '127.0.69.1',
    targetIp: '127.0.69.2',
    tempIp: '127.0.69.100',
    httpPort: 0,
    ttl: 1,
    rate: RATE,
    clients: 60,
    writeShare: WRITES,
    staleShare: 0.1,
    staleOverstayMs: 1000,
    quietWindowMs: 500,
    dnsTempCapMs: 10_000,
    drainCapMs: 5000,
    dataDir: join(dir, `run-${r}`),
  });
  try {
    await sb.start();
    const origin = sb.databases.origin!;
    const target = sb.databases.target!;
    const rows = Math.ceil((MB * 1024 * 1024) / (ROW_BYTES + 40));
    let t0 = performance.now();
    origin.sql(
      'CREATE TABLE shop.filler (id INT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(1000) NOT NULL) ENGINE=InnoDB;' +
        ` SET SESSION sql_log_bin = 0; INSERT INTO shop.filler (pad) SELECT REPEAT(MD5(seq), ${ROW_BYTES / 32}) FROM seq_1_to_${rows}`,
      'shop', // the sequence engine's tables are found in the current database
    );
    const fillMs = performance.now() - t0;

    // The plain dump-and-restore of the same database, into another name on the target.
    target.sql('CREATE DATABASE shop_plain');
    t0 = performance.now();
    const plain = spawnSync(
      'sh',
      [
        '-c',
        'mariadb-dump --no-defaults -S "$1" -u root --single-transaction shop | mariadb --no-defaults -S "$2" -u root shop_plain',
        'sh',
        origin.socket,
        target.socket,
      ],
      { encoding: 'utf8' },
    );
    const plainMs = performance.now() - t0;
    if (plain.status !== 0) throw new Error(`plain dump-and-restore: ${plain.stderr}`);
    target.sql('DROP DATABASE shop_plain');

    // The cut-over's windows, as the orchestrator's own calls mark them.
    const windows: Array<[number, number]> = [];
    const agent = sb.originAgent;
    const hold = agent.holdRedirect.bind(agent);
    const release = agent.releaseRedirect.bind(agent);
    agent.holdRedirect = (id) => {
      const open = windows[windows.length - 1];
      if (!open || open[1] !== 0) windows.push([Date.now(), 0]);
      return hold(id);
    };
    agent.releaseRedirect = async (id) => {
      await release(id);
      const open = windows[windows.length - 1];
      if (open && open[1] === 0) open[1] = Date.now();
    };
    let copyMs = NaN;
    let copyBytes = NaN;
    let lastLag: number | null = null;
    let lagAtHold: number | null = null;
    const catchUpMs: number[] = [];
    sb.orchestrator.on('database', (e) => {
      if (e.state === 'copied') [copyMs, copyBytes] = [e.ms ?? NaN, e.bytes ?? NaN];
      if (e.state === 'lag') lastLag = e.lag?.seconds ?? null;
      if (e.state === 'frozen') lagAtHold = lastLag;
      if (e.state === 'caught-up') catchUpMs.push(e.waitedMs ?? NaN);
      if (e.state === 'catchup-timeout')
        console.log(`  run ${r + 1}: a catch-up timed out: ${e.message ?? ''}`);
    });

    sb.startLoad();
    await new Promise((res) => setTimeout(res, 1000));
    t0 = performance.now();
    const rec = await sb.migrate();
    await new Promise((res) => setTimeout(res, 500));
    await sb.load.stop();
    if (rec.phase !== 'completed')
      throw new Error(`run ${r + 1}: the migration ended in ${rec.phase}: ${rec.error ?? ''}`);
    const summary = await sb.summarize(rec);

    const shop = sb.migratedDomain;
    const mine = sb.load.results().filter((x) => x.domain === shop);
    const inWindow = (at: number) => windows.some(([a, b]) => at >= a && at <= b);
    const unheldMedian = median(mine.filter((x) => x.ok && !inWindow(x.at)).map((x) => x.latencyMs));
    const held = mine.filter((x) => inWindow(x.at)).map((x) => x.latencyMs - unheldMedian);
    const span = (Math.max(...mine.map((x) => x.at)) - Math.min(...mine.map((x) => x.at))) / 1000;
    const entries = sb.orchestrator.journal.entries(rec.plan.id);
    const run: Run = {
      fillMs,
      plainMs,
      copyMs,
      copyBytes,
      lagAtHold,
      catchUpMs,
      windows,
      held,
      writesPerSecond: mine.filter((x) => x.method === 'POST').length / span,
      failed: sb.load.results().filter((x) => !x.ok).length,
      acknowledged: summary.writes.acknowledged,
      onTarget: summary.writes.onTarget,
      steps: pauseSteps(entries, windows[windows.length - 1]?.[1] ?? Date.now()),
    };
    // With BENCH_DB_LOGS, a run with a failed request prints the ends of its servers' logs.
    if (process.env.BENCH_DB_LOGS && run.failed > 0)
      for (const side of ['origin', 'target'] as const)
        for (const f of ['log/nginx-error.log', 'log/php-shop.error.log', 'log/php-fpm.log'])
          console.log(
            `  ${side} ${f}:\n${spawnSync('tail', ['-n', '6', join(sb.webServers[side]!.root, f)], { encoding: 'utf8' }).stdout}`,
          );
    for (const x of sb.load
      .results()
      .filter((y) => !y.ok)
      .slice(0, 5))
      console.log(
        `  run ${r + 1}: failed ${x.method} ${x.domain}${x.path} at ${x.address}: ${x.status ?? x.error ?? '?'} ` +
          `(t ${x.at - (windows[0]?.[0] ?? 0)} ms from the first hold, ${x.latencyMs.toFixed(0)} ms, served by ${x.servedBy ?? '-'}${x.error ? `: ${x.error}` : ''})`,
      );
    const h = stats(held);
    console.log(
      `run ${r + 1}: ${MB} MiB filled in ${(fillMs / 1000).toFixed(1)} s; plain dump-and-restore ${(plainMs / 1000).toFixed(1)} s; ` +
        `migration ${((performance.now() - t0) / 1000).toFixed(1)} s (copy ${(copyMs / 1000).toFixed(1)} s, ${(copyBytes / 1048576).toFixed(0)} MiB), ` +
        `${run.writesPerSecond.toFixed(0)} writes/s, ${run.failed} failed requests, ${run.acknowledged} acknowledged writes, ${run.onTarget} on the target; ` +
        `cut-over ${windows.map(([a, b]) => b - a).join('+')} ms, last lag sample before the hold ${String(lagAtHold)} s, catch-up ${catchUpMs.join('+')} ms; ` +
        `${held.length} held: added p50 ${h.p50.toFixed(0)} p99 ${h.p99.toFixed(0)} max ${h.max.toFixed(0)} ms (unheld median ${unheldMedian.toFixed(1)} ms)`,
    );
    return run;
  } finally {
    await sb.stop().catch(() => undefined);
    await rm(join(dir, `run-${r}`), { recursive: true, force: true });
  }
}

try {
  console.log(
    `database cut-over: ${RUNS} runs, a ${MB} MiB database, load ${RATE} requests/s over two sites, ${WRITES} of the shop's being writes`,
  );
  const runs: Run[] = [];
  const started = Date.now();
  for (let r = 0; r < RUNS; r++) runs.push(await oneRun(r));

  const f = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-').padStart(10);
  const row = (name: string, s: { p50: number; p99: number; max: number }) =>
    console.log(`  ${name.padEnd(44)}${f(s.p50)}${f(s.p99)}${f(s.max)}`);
  const added = stats(runs.flatMap((x) => x.held));
  console.log(`\nwrite pause with a ${MB} MiB database, ${RUNS} cut-overs under load (ms):`);
  console.log(`  ${''.padEnd(44)}${'p50'.padStart(10)}${'p99'.padStart(10)}${'max'.padStart(10)}`);
  row(`held requests' added latency (n=${runs.flatMap((x) => x.held).length})`, added);
  row(
    'cut-over (hold to release, summed)',
    stats(runs.map((x) => x.windows.reduce((n, [a, b]) => n + b - a, 0))),
  );
  row('catch-up wait inside the hold', stats(runs.flatMap((x) => x.catchUpMs)));
  row('initial copy (while serving)', stats(runs.map((x) => x.copyMs)));
  row('plain dump-and-restore (site stopped)', stats(runs.map((x) => x.plainMs)));
  console.log('\n  where the last hold goes (median per step over the runs, ms):');
  for (const step of runs[0]?.steps.keys() ?? [])
    console.log(`    ${step.padEnd(42)}${f(median(runs.map((x) => x.steps.get(step) ?? 0)))}`);
  const plain = median(runs.map((x) => x.plainMs));
  console.log(
    `\n  writes: ${runs.map((x) => x.writesPerSecond.toFixed(0)).join(', ')} per second; failed requests: ${runs.map((x) => x.failed).join(', ')}; ` +
      `acknowledged writes on the target: ${runs.map((x) => `${x.onTarget}/${x.acknowledged}`).join(', ')}`,
  );
  console.log(
    `  held p99 added latency ${added.p99.toFixed(1)} ms vs the plain dump-and-restore's ${(plain / 1000).toFixed(1)} s ` +
      `(${(added.p99 / plain).toFixed(4)}x); target p99 <= 250 ms: ${added.p99 <= 250 ? 'met' : 'NOT met'}`,
  );
  console.log(`  (runs took ${((Date.now() - started) / 1000).toFixed(0)} s)`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
