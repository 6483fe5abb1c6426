// Runs every *.test.ts under the given folders (default: src and test) with Node's test runner,
// TypeScript loaded through tsx, each file in a `node --test` process of its own, in two lanes at
// the same time: the serial lane runs one file after the other (the heavy and timing-sensitive
// ones: e2e tests bind fixed sandbox ports, start peer servers, make network namespaces), the
// parallel lane runs the light files listed in test-lanes.mjs, also one after the other. A file
// not listed there is serial. Each file's output is printed in one piece when it ends; the exit
// code is non-zero if any file failed. `--serial` runs everything in the serial lane.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { PARALLEL_FILES } from './test-lanes.mjs';

const ROOT = resolve(import.meta.dirname, '..');

function find(dir, out) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries.sort()) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) find(p, out);
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const args = process.argv.slice(2);
const flags = args.filter((a) => a.startsWith('-'));
const unknown = flags.filter((f) => f !== '--serial');
if (unknown.length) {
  console.error(`run-tests: unknown option ${unknown.join(' ')} (known: --serial)`);
  process.exit(2);
}
const allSerial = flags.includes('--serial');
const roots = args.filter((a) => !a.startsWith('-'));
const files = [
  ...new Set(
    (roots.length ? roots : ['src', 'test']).flatMap((r) => (r.endsWith('.ts') ? [r] : find(r, []))),
  ),
];
if (files.length === 0) {
  console.error('run-tests: no test files found');
  process.exit(1);
}
if (roots.length === 0) {
  const stale = PARALLEL_FILES.filter((f) => !existsSync(join(ROOT, f)));
  if (stale.length)
    console.error(`run-tests: listed in scripts/test-lanes.mjs but missing: ${stale.join(', ')}`);
}

const parallelSet = new Set(PARALLEL_FILES);
const key = (f) => relative(ROOT, resolve(f)).split('\\').join('/');
const lanes = {
  serial: files.filter((f) => allSerial || !parallelSet.has(key(f))),
  parallel: files.filter((f) => !allSerial && parallelSet.has(key(f))),
};

const COUNTS = ['tests', 'suites', 'pass', 'fail', 'cancelled', 'skipped', 'todo'];
const totals = Object.fromEntries(COUNTS.map((c) => [c, 0]));
const results = [];
const running = new Set();
let stopping = false;

// Colours only when a person watches (the children write to a pipe, not a terminal).
const childEnv = {
  ...process.env,
  ...(process.stdout.isTTY && !process.env.NO_COLOR ? { FORCE_COLOR: '1' } : {}),
};

/** Runs one test file; resolves with its output, exit status and duration. */
function runFile(file) {
  return new Promise((done) => {
    const t0 = Date.now();
    const chunks = [];
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', file],
      { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv },
    );
    running.add(child);
    child.stdout.on('data', (c) => chunks.push(c));
    child.stderr.on('data', (c) => chunks.push(c));
    child.on('error', (err) => chunks.push(Buffer.from(`run-tests: ${err.message}\n`)));
    child.on('close', (code, signal) => {
      running.delete(child);
      done({ file, output: Buffer.concat(chunks).toString(), code: code ?? 1, signal, ms: Date.now() - t0 });
    });
  });
}

/** The spec reporter's closing counts (`ℹ tests 12` …) of one file's output. */
function counts(output) {
  // eslint-disable-next-line no-control-regex
  const plain = output.replace(/\x1b\[[0-9;]*m/g, '');
  const out = {};
  for (const c of COUNTS) {
    const all = [...plain.matchAll(new RegExp(`^ℹ ${c} (\\d+)$`, 'gm'))];
    out[c] = all.length ? Number(all[all.length - 1][1]) : 0;
  }
  return out;
}

async function runLane(name, laneFiles) {
  const t0 = Date.now();
  for (const file of laneFiles) {
    if (stopping) break;
    const r = await runFile(file);
    const c = counts(r.output);
    const failed = r.code !== 0 || c.fail > 0;
    for (const k of COUNTS) totals[k] += c[k];
    results.push({ ...r, lane: name, failed });
    const status = failed ? `FAILED (exit ${r.signal ?? r.code})` : 'ok';
    process.stdout.write(`\n── ${name} · ${file} · ${(r.ms / 1000).toFixed(1)} s · ${status}\n${r.output}`);
  }
  return (Date.now() - t0) / 1000;
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    stopping = true;
    for (const child of running) child.kill(sig);
  });
}

const t0 = Date.now();
const [serialS, parallelS] = await Promise.all([
  runLane('serial', lanes.serial),
  runLane('parallel', lanes.parallel),
]);
const failedFiles = results.filter((r) => r.failed);
const slowest = [...results].sort((a, b) => b.ms - a.ms).slice(0, 10);

const lines = [
  '',
  '── summary (all lanes)',
  `ℹ files ${results.length} (serial lane ${lanes.serial.length}, parallel lane ${lanes.parallel.length}), failed ${failedFiles.length}`,
  ...COUNTS.map((c) => `ℹ ${c} ${totals[c]}`),
  `ℹ serial lane ${serialS.toFixed(1)} s, parallel lane ${parallelS.toFixed(1)} s, wall ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  'ℹ slowest files:',
  ...slowest.map((r) => `ℹ   ${(r.ms / 1000).toFixed(1).padStart(7)} s  ${r.lane.padEnd(8)} ${r.file}`),
  ...(failedFiles.length ? ['✖ failed files:', ...failedFiles.map((r) => `✖   ${r.file}`)] : []),
  ...(stopping ? ['✖ stopped by a signal before every file ran'] : []),
];
process.stdout.write(lines.join('\n') + '\n');
process.exit(failedFiles.length || stopping ? 1 : 0);
