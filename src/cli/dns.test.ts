import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { catalogMemberId, Rcode, RRType } from '../dns/index.js';
import { sendUpdate, upd } from '../dns/update/client.js';
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

test('ferry dns serve --zone-dir: SIGHUP reloads; a bad file is refused with file:line and the old copy still answers', async (t) => {
  const digger = has('kdig') ? 'kdig' : has('dig') ? 'dig' : undefined;
  if (!digger) {
    t.skip('neither kdig nor dig is installed');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'ferry-dns-cli-'));
  const zones = join(dir, 'zones');
  mkdirSync(zones);
  const text = (origin: string, serial: number, www: string) =>
    GOOD.replace('cli.example.', origin).replace(' 7 ', ` ${serial} `).replace('192.0.2.80', www);
  writeFileSync(join(zones, 'a.example.zone'), text('a.example.', 1, '192.0.2.1'));
  writeFileSync(join(zones, 'b.example.zone'), text('b.example.', 1, '192.0.2.2'));
  const addr = '127.0.121.20';
  const child = spawn(
    process.execPath,
    [
      ...['--import', 'tsx', MAIN, 'dns', 'serve', '--zone-dir', zones, '--listen', `${addr}:0`],
      ...['--allow-update', '127.0.0.0/8', '--max-records', '5'],
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FERRY_LOG_LEVEL: 'warn' } },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const waitFor = async (re: RegExp) => {
    // Up to 60 s: starting the CLI through tsx took 16-18 s on the loaded 2-core machine.
    for (let i = 0; i < 600 && !re.test(out) && child.exitCode === null; i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.match(out, re, err);
  };
  try {
    await waitFor(/serving/);
    assert.match(out, /serving a\.example\. b\.example\. on /);
    const port = /on [\d.]+:(\d+) /.exec(out)![1]!;
    const www = async (origin: string) =>
      (
        (await run(digger, [`@${addr}`, '-p', port, `www.${origin}`, 'A', '+short'], {
          encoding: 'utf8',
        })) as {
          stdout: string;
        }
      ).stdout.trim();
    // a: a bad line (its 6th) under a higher serial; b: fixed data, higher serial; c: new.
    writeFileSync(join(zones, 'a.example.zone'), text('a.example.', 2, '192.0.2.300'));
    writeFileSync(join(zones, 'b.example.zone'), text('b.example.', 2, '192.0.2.22'));
    writeFileSync(join(zones, 'c.example.zone'), text('c.example.', 1, '192.0.2.3'));
    child.kill('SIGHUP');
    await waitFor(/reloaded: 1 added, 1 replaced, 0 removed, 0 unchanged, 1 refused/);
    assert.match(err, /a\.example\.zone:6: bad IPv4 address/);
    assert.match(err, /the served copy stays/);
    assert.equal(await www('a.example.'), '192.0.2.1', 'the old copy of a');
    assert.equal(await www('b.example.'), '192.0.2.22');
    assert.equal(await www('c.example.'), '192.0.2.3');
    // --max-records 5: c holds 4; one more is taken, two more are REFUSED and logged.
    const server = { address: addr, port: Number(port) };
    const two = [
      upd.add('x.c.example.', 'A', 60, '192.0.2.7'),
      upd.add('y.c.example.', 'A', 60, '192.0.2.8'),
    ];
    assert.equal((await sendUpdate({ server, zone: 'c.example.', updates: two })).rcode, Rcode.REFUSED);
    assert.equal((await sendUpdate({ server, zone: 'c.example.', updates: [two[0]!] })).rcode, Rcode.NOERROR);
    const logged = /"zone":"c\.example\.","limit":5,"size":6/;
    for (let i = 0; i < 50 && !logged.test(err); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(err, logged);
    child.kill('SIGTERM');
    assert.equal(await exited, 0, err);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
