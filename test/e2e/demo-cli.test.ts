/**
 * `ferry demo --json` as a user runs it: a separate process, the last line a JSON summary that
 * shows the migration's invariants held.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';

function ferry(
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('ferry demo', () => {
  it('--json ends with a summary showing a clean migration', { timeout: 150_000 }, async () => {
    const res = await ferry(
      [
        'demo',
        '--json',
        '--dns-address',
        '127.0.32.53',
        '--dns-port',
        '0',
        '--http-port',
        '0',
        '--origin-ip',
        '127.0.32.1',
        '--target-ip',
        '127.0.32.2',
        '--temp-ip',
        '127.0.32.100',
        '--ttl',
        '1',
        '--quiet-window',
        '800',
        '--warmup',
        '1000',
        '--cooldown',
        '1000',
      ],
      140_000,
    );
    assert.equal(res.code, 0, `exit ${res.code}\n${res.stdout}\n${res.stderr}`);
    const lines = res.stdout.trim().split('\n');
    const s = JSON.parse(lines[lines.length - 1]!);
    assert.equal(s.requests.failed, 0);
    assert.equal(s.writes.missing, 0);
    assert.equal(s.writes.duplicated, 0);
    assert.equal(s.writes.onOriginAfterCutover, 0);
    assert.equal(s.otherSites.failed, 0);
    assert.ok(s.servedBy.origin > 0 && s.servedBy.target > 0);
    const answers = s.dnsAnswers.map((a: { address: string }) => a.address);
    assert.deepEqual(answers, ['127.0.32.1', '127.0.32.100', '127.0.32.2']);
    for (const key of ['domain', 'phases', 'dnsAnswers', 'requests', 'writes', 'servedBy', 'otherSites'])
      assert.ok(key in s, key);
    // The timeline came before it.
    assert.match(res.stdout, /phase cutover/);
  });

  it('refuses a bad option with a clear message and exit code 2', async () => {
    const res = await ferry(['demo', '--stale-share', '1.5'], 20_000);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /stale-share.*between 0|from 0 to 1/);
  });

  it('--help lists every scenario option', async () => {
    const res = await ferry(['demo', '--help'], 20_000);
    assert.equal(res.code, 0);
    for (const opt of [
      '--ttl',
      '--rate',
      '--stale-share',
      '--stale-overstay',
      '--quiet-window',
      '--dns-temp-cap',
      '--drain-cap',
      '--json',
    ]) {
      assert.ok(res.stdout.includes(opt), opt);
    }
  });
});
