import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { catalogMemberId, Rcode, RRType } from '../dns/index.js';
import { dnsTransfer } from '../dns/xfr/client.js';
import { parseListen } from './dns.js';

const run = promisify(execFile);
const MAIN = join(import.meta.dirname, 'main.ts');

const GOOD = `$ORIGIN cli.example.
$TTL 300
@    SOA ns1 hostmaster 7 3600 600 86400 300
@    NS  ns1
ns1  A   192.0.2.53
www  A   192.0.2.80
`;

function ferry(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, ['--import', 'tsx', MAIN, ...args]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({
      code: err.code,
      stdout: err.stdout,
      stderr: err.stderr,
    }),
  );
}

function has(bin: string): boolean {
  return spawnSync('which', [bin]).status === 0;
}

test('parseListen: ADDR:PORT, [v6]:PORT; anything else says what to write', () => {
  assert.deepEqual(parseListen('192.0.2.1:5353'), { address: '192.0.2.1', port: 5353 });
  assert.deepEqual(parseListen('[2001:db8::1]:53'), { address: '2001:db8::1', port: 53 });
  assert.throws(() => parseListen('example.com:53'), /ADDR:PORT with an IP address/);
});

test('ferry dns check: 0 on a good file, 1 with file:line on a bad one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-dns-cli-'));
  try {
    writeFileSync(join(dir, 'good.zone'), GOOD);
    writeFileSync(join(dir, 'bad.zone'), GOOD.replace('192.0.2.80', '192.0.2.800'));
    const ok = await ferry(['dns', 'check', join(dir, 'good.zone')]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /OK: zone cli\.example\. serial 7, 3 names, 4 records/);
    const bad = await ferry(['dns', 'check', join(dir, 'bad.zone')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /bad\.zone:6: bad IPv4 address/);
    const missing = await ferry(['dns', 'check', join(dir, 'nope.zone')]);
    assert.equal(missing.code, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const workers of [1, 2]) {
  test(`ferry dns serve --workers ${workers} answers dig/kdig, stops on SIGTERM; export reads its --db`, async (t) => {
    const digger = has('kdig') ? 'kdig' : has('dig') ? 'dig' : undefined;
    if (!digger) {
      t.skip('neither kdig nor dig is installed');
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'ferry-dns-cli-'));
    const zone = join(dir, 'cli.zone');
    const db = join(dir, 'zones.db');
    writeFileSync(zone, GOOD);
    const addr = `127.0.121.${workers}`;
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        MAIN,
        'dns',
        'serve',
        '--zone',
        zone,
        '--listen',
        `${addr}:0`,
        '--workers',
        String(workers),
        '--db',
        db,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FERRY_LOG_LEVEL: 'warn' } },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      for (let i = 0; i < 300 && !/serving/.test(out) && child.exitCode === null; i++)
        await new Promise((r) => setTimeout(r, 100));
      const m = /on [\d.]+:(\d+) /.exec(out);
      assert.ok(m, `serve did not come up: ${out} ${err}`);
      const port = m[1]!;
      for (const tcp of [false, true]) {
        const args = [`@${addr}`, '-p', port, 'www.cli.example.', 'A', '+short', ...(tcp ? ['+tcp'] : [])];
        const res: { stdout: string } = await run(digger, args, { encoding: 'utf8' });
        assert.equal(res.stdout.trim(), '192.0.2.80', `${digger} ${args.join(' ')}`);
      }
      child.kill('SIGTERM');
      assert.equal(await exited, 0, err);
      assert.match(out, /stopped/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    try {
      const exp = await ferry(['dns', 'export', 'cli.example.', '--db', db]);
      assert.equal(exp.code, 0, exp.stderr);
      assert.match(exp.stdout, /^\$ORIGIN cli\.example\./);
      assert.match(exp.stdout, /www\t300\tIN\tA\t192\.0\.2\.80/);
      const none = await ferry(['dns', 'export', 'other.example.', '--db', db]);
      assert.equal(none.code, 1);
      assert.match(none.stderr, /not in .*\(it holds: cli\.example\.\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('ferry dns serve --catalog: the catalog zone lists the zones, transferable as --allow-transfer says', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-dns-cli-'));
  const zone = join(dir, 'cli.zone');
  writeFileSync(zone, GOOD);
  const bad = await ferry([
    'dns',
    'serve',
    '--zone',
    zone,
    '--listen',
    '127.0.121.16:0',
    '--allow-transfer',
    'nope',
  ]);
  assert.equal(bad.code, 2, 'a usage error');
  assert.match(bad.stderr, /--allow-transfer takes addresses or prefixes/);
  const args = [
    'dns',
    'serve',
    '--zone',
    zone,
    '--listen',
    '127.0.121.16:0',
    '--catalog',
    '--allow-transfer',
    '127.0.0.0/8',
  ];
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FERRY_LOG_LEVEL: 'warn' },
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    for (let i = 0; i < 300 && !/serving/.test(out) && child.exitCode === null; i++)
      await new Promise((r) => setTimeout(r, 100));
    const m = /on [\d.]+:(\d+) /.exec(out);
    assert.ok(m, `serve did not come up: ${out}`);
    assert.match(out, /serving cli\.example\. catalog\.ferry\.invalid\./);
    const server = { address: '127.0.121.16', port: Number(m[1]) };
    const axfr = await dnsTransfer({ server, zone: 'catalog.ferry.invalid.' });
    assert.equal(axfr.rcode, Rcode.NOERROR);
    assert.deepEqual(
      axfr.records.filter((r) => r.type === RRType.PTR).map((r) => `${r.name} ${String(r.data[0])}`),
      [`${catalogMemberId('cli.example.')}.zones.catalog.ferry.invalid. cli.example.`],
    );
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
