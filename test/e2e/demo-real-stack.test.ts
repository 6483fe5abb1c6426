/**
 * `ferry demo --stack nginx-php` as a user runs it, through the deployed command (`bin/ferry.js`,
 * the build `npm ci` makes): private nginx and php-fpm8.2 masters per server, a PHP site moved
 * under load. Its JSON summary must show the move clean, and afterwards no process of the demo
 * may be left and its temporary folder must be gone (TMPDIR points the demo into a folder of the
 * test's own, so both are easy to tell).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { mariadbInstalled } from '../../src/sandbox/mariadb.js';
import { findBinary } from './helpers.js';

const missing = [
  ...(findBinary('nginx') ? [] : ['nginx-light']),
  ...(findBinary('php-fpm8.2') ? [] : ['php8.2-fpm']),
  ...(existsSync('dist/cli/main.js') ? [] : ['the build (npm run build)']),
];
const skip = missing.length ? `needs ${missing.join(', ')}` : false;
if (skip) console.log(`# real stack demo skipped: ${skip}`);

/** Every process's command line and parent, from /proc. */
function processes(): Map<number, { cmd: string; ppid: number }> {
  const out = new Map<number, { cmd: string; ppid: number }>();
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
      // "pid (comm) state ppid ...": comm may hold spaces, so read after its closing parenthesis.
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      out.set(Number(p), { cmd, ppid });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * The demo's processes now: those whose command line names `dir` (the masters, with their private
 * prefix and files; the redirects) and their children (workers retitle themselves "nginx: worker
 * process", "php-fpm: pool shop").
 */
function demoProcesses(dir: string): Map<number, string> {
  const all = processes();
  const found = new Map<number, string>();
  for (const [pid, p] of all) if (pid !== process.pid && p.cmd.includes(dir)) found.set(pid, p.cmd);
  for (const [pid, p] of all) if (found.has(p.ppid)) found.set(pid, p.cmd);
  return found;
}

/**
 * Run the built demo with the real stack (and `extra` options) into a folder of the test's own,
 * assert the move was clean and nothing of it is left; returns its output and what ran.
 */
async function demoLeavesNothing(
  t: TestContext,
  extra: string[],
): Promise<{ stdout: string; ran: string[]; summary: Record<string, unknown> }> {
  const tmp = await mkdtemp(join(tmpdir(), 'ferry-demo-stack-'));
  t.after(() => rm(tmp, { recursive: true, force: true }));
  // As /tmp is: nginx's workers and the PHP pool (www-data, as root) pass through it.
  await chmod(tmp, 0o755);
  const child = spawn(
    process.execPath,
    [
      'bin/ferry.js',
      'demo',
      '--stack',
      'nginx-php',
      ...extra,
      '--json',
      '--dns-address',
      '127.0.34.53',
      '--dns-port',
      '0',
      '--http-port',
      '0',
      '--origin-ip',
      '127.0.34.1',
      '--target-ip',
      '127.0.34.2',
      '--temp-ip',
      '127.0.34.100',
      '--ttl',
      '1',
      '--quiet-window',
      '800',
      '--warmup',
      '1500',
      '--cooldown',
      '1000',
    ],
    { env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  // What ran under the demo's folder while it ran: the private masters and their workers.
  const seen = new Map<number, string>();
  const sample = setInterval(() => {
    for (const [pid, cmd] of demoProcesses(tmp)) seen.set(pid, cmd);
  }, 250);
  const killer = setTimeout(() => child.kill('SIGKILL'), 220_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(killer);
  clearInterval(sample);

  assert.equal(code, 0, `exit ${code}\n${stdout.slice(-3000)}\n${stderr.slice(-3000)}`);
  const ran = [...seen.values()];
  assert.ok(
    ran.some((c) => c.startsWith('nginx: worker')) && ran.some((c) => c.startsWith('php-fpm: pool shop')),
    `the private nginx and PHP-FPM ran: ${ran.join(' | ')}`,
  );
  const lines = stdout.trim().split('\n');
  const s = JSON.parse(lines[lines.length - 1]!);
  assert.equal(s.domain, 'shop.example.');
  assert.equal(s.finalPhase, 'completed');
  assert.equal(s.requests.failed, 0, JSON.stringify(s.failures));
  assert.ok(s.servedBy.origin > 0 && s.servedBy.target > 0, JSON.stringify(s.servedBy));
  // Writes counted: every acknowledged order once in the target's orders file, none on the origin after the switch.
  assert.ok(s.writes.acknowledged > 10, JSON.stringify(s.writes));
  assert.equal(s.writes.onTarget, s.writes.acknowledged);
  assert.equal(s.writes.missing, 0);
  assert.equal(s.writes.duplicated, 0);
  assert.equal(s.writes.onOriginAfterCutover, 0);
  assert.ok(s.otherSites.requests > 0);
  assert.equal(s.otherSites.failed, 0);
  assert.deepEqual(
    s.dnsAnswers.map((a: { address: string }) => a.address),
    ['127.0.34.1', '127.0.34.100', '127.0.34.2'],
  );
  assert.match(stdout, /phase cutover/);

  // Nothing left: no process of the demo (none of those seen, nor a new one), no folder of it.
  const now = processes();
  assert.deepEqual(
    [...seen].filter(([pid, cmd]) => now.get(pid)?.cmd === cmd),
    [],
  );
  assert.deepEqual([...demoProcesses(tmp)], []);
  assert.deepEqual(
    (await readdir(tmp)).filter((n) => n.startsWith('ferry-')),
    [],
    'the temporary folder is removed',
  );
  return { stdout, ran, summary: s };
}

describe('ferry demo --stack nginx-php', { skip }, () => {
  it(
    'moves the PHP site under load with no failed request and leaves nothing behind',
    { timeout: 240_000 },
    async (t) => {
      await demoLeavesNothing(t, []);
    },
  );

  it(
    "--database mariadb: the orders live in the origin's MariaDB and move with the site, every acknowledged one once on the target",
    { timeout: 240_000, skip: mariadbInstalled() ? false : 'needs mariadb-server' },
    async (t) => {
      // demoLeavesNothing counts the writes in each server's shop database here, and checks no
      // mariadbd is left.
      const { stdout, ran } = await demoLeavesNothing(t, ['--database', 'mariadb']);
      assert.ok(
        ran.some((c) => c.startsWith('/usr/sbin/mariadbd')),
        `the private MariaDB servers ran: ${ran.join(' | ')}`,
      );
      assert.match(stdout, /databases copied: \d+ bytes/);
      assert.match(stdout, /databases frozen on the origin at \d+-1-\d+/);
      assert.match(stdout, /databases caught up in \d+ ms: the target is the writer/);
    },
  );

  it('--help lists the stacks, and an unknown one is refused with exit code 2', async () => {
    const run = (args: string[]) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const c = spawn(process.execPath, ['bin/ferry.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        c.stdout.on('data', (b: Buffer) => (out += b.toString()));
        c.stderr.on('data', (b: Buffer) => (out += b.toString()));
        c.on('close', (code) => resolve({ code, out }));
      });
    const help = await run(['demo', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.out, /--stack <stack>/);
    assert.match(help.out, /builtin.*nginx-php/s);
    const bad = await run(['demo', '--stack', 'lamp']);
    assert.equal(bad.code, 2);
    assert.match(bad.out, /builtin or nginx-php/);
  });
});
