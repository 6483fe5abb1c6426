import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { catalogMemberId, Rcode, RRType } from '../dns/index.js';
import { sendUpdate, upd } from '../dns/update/client.js';
import { nativeUdp } from '../dns/udp-io.js';
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

/** `ferry dns serve ARGS` started; resolves once it prints its serving line. */
async function serveCli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'dns', 'serve', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FERRY_LOG_LEVEL: 'warn', ...env },
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  // Read live: the output grows after this returns.
  const s = { child, out: '', err: '', port: '', exited };
  child.stdout.on('data', (c: Buffer) => (s.out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (s.err += c.toString()));
  for (let i = 0; i < 300 && !/serving/.test(s.out) && child.exitCode === null; i++)
    await new Promise((r) => setTimeout(r, 100));
  const m = /on [\d.]+:(\d+) /.exec(s.out);
  if (!m) child.kill('SIGKILL');
  assert.ok(m, `serve did not come up: ${s.out} ${s.err}`);
  s.port = m[1]!;
  return s;
}

// The serving line says what answers UDP: the query threads, or the main thread alone when the
// native UDP addon is off (FERRY_NATIVE=0) whatever --workers asked.
const native = nativeUdp().ok;
const cases: Array<[number, boolean]> = [
  [1, native],
  ...(native ? [[2, true] as [number, boolean]] : []),
  [2, false],
];
for (const [workers, addon] of cases) {
  const name = `ferry dns serve --workers ${workers}${addon ? '' : ' without the UDP addon'}`;
  test(`${name} answers dig/kdig, stops on SIGTERM, restarts from its --db alone; export reads it`, async (t) => {
    const digger = has('kdig') ? 'kdig' : has('dig') ? 'dig' : undefined;
    if (!digger) {
      t.skip('neither kdig nor dig is installed');
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'ferry-dns-cli-'));
    const zone = join(dir, 'cli.zone');
    const db = join(dir, 'zones.db');
    writeFileSync(zone, GOOD);
    const addr = `127.0.121.${workers + (addon ? 0 : 2)}`;
    const common = ['--listen', `${addr}:0`, '--workers', String(workers), '--db', db];
    const env = addon ? {} : { FERRY_NATIVE: '0' };
    try {
      // First from the zone file (stored in the db), then from the db alone: the same answers.
      for (const args of [['--zone', zone, ...common], common]) {
        const s = await serveCli(args, env);
        try {
          assert.match(
            s.out,
            workers === 1
              ? /\(UDP and TCP, 1 worker\)/
              : addon
                ? /\(UDP in 2 query threads, TCP in the main thread\)/
                : /\(UDP and TCP in the main thread alone, not the 2 workers asked for\)/,
          );
          for (const tcp of [false, true]) {
            const q = [`@${addr}`, '-p', s.port, 'www.cli.example.', 'A', '+short', ...(tcp ? ['+tcp'] : [])];
            const res: { stdout: string } = await run(digger, q, { encoding: 'utf8' });
            assert.equal(res.stdout.trim(), '192.0.2.80', `${digger} ${q.join(' ')}`);
          }
          s.child.kill('SIGTERM');
          assert.equal(await s.exited, 0, s.err);
          assert.match(s.out, /stopped/);
        } finally {
          if (s.child.exitCode === null) s.child.kill('SIGKILL');
        }
      }
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
