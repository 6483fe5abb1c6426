/** The controller's YAML config: what it accepts, and the errors (path and what to write) for what it does not. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeConfig, parseConfig, parseDuration } from './config.js';

const GOOD = `
journal: ./journal.sqlite
servers:
  origin:
    agent: https://192.0.2.10:7070
    token: \${ORIGIN_TOKEN}
    sharedIps: [192.0.2.10]
    tempIpPool: [192.0.2.100, 192.0.2.101]
    web: nginx
  target:
    agent: http://192.0.2.20:7070
    tokenFile: target.token
    sharedIps: [192.0.2.20]
    engine: kernel
    timeout: 20s
dns:
  provider: embedded
  listen: { address: 192.0.2.53 }
  zones: [zones/example.zone, { file: /etc/other.zone, origin: other.example. }]
sites:
  - { domain: shop.example, server: origin, ports: [80, 443], kind: nginx }
  - { domain: blog.example, server: origin }
defaults:
  ttl: 30
  quietWindow: 30s
  drainCap: 10m
  poll: 500
`;

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-config-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function problems(yaml: string, env: NodeJS.ProcessEnv = { ORIGIN_TOKEN: 'o'.repeat(20) }): Promise<string> {
  try {
    await parseConfig(yaml, '/nowhere/ferry.yaml', { env, readSecretFiles: false });
  } catch (err) {
    assert.equal((err as { code?: string }).code, 'CONFIG_INVALID');
    return (err as Error).message;
  }
  assert.fail('expected the config to be refused');
}

test('a full config: env and file secrets, relative paths, durations, defaults', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'target.token'), 'secret-from-file-123456\n');
    const cfg = await parseConfig(GOOD, join(dir, 'ferry.yaml'), { env: { ORIGIN_TOKEN: 'secret-from-env-123456' } });
    assert.equal(cfg.journal, join(dir, 'journal.sqlite'));
    assert.deepEqual(
      cfg.servers.map((s) => [s.id, s.token, s.web, s.engine ?? null, s.timeoutMs ?? null]),
      [
        ['origin', 'secret-from-env-123456', 'nginx', null, null],
        ['target', 'secret-from-file-123456', 'builtin', 'kernel', 20_000],
      ],
    );
    assert.equal(cfg.dns.provider, 'embedded');
    if (cfg.dns.provider === 'embedded') {
      assert.deepEqual(cfg.dns.listen, { address: '192.0.2.53', port: 53 });
      assert.deepEqual(cfg.dns.zones, [{ file: join(dir, 'zones/example.zone') }, { file: '/etc/other.zone', origin: 'other.example.' }]);
    }
    assert.deepEqual(cfg.sites[1], { domain: 'blog.example', server: 'origin', ports: [80], kind: 'nginx' });
    assert.deepEqual(cfg.defaults, { ttl: 30, quietWindowMs: 30_000, drainCapMs: 600_000, pollMs: 500 });
    const text = describeConfig(cfg);
    assert.doesNotMatch(text, /secret-from/, 'secrets never appear in the description');
    assert.match(text, /server origin: agent https:\/\/192\.0\.2\.10:7070/);
  });
});

test('every problem is reported at once, with its path and what to write instead', async () => {
  const bad = `
servers:
  origin:
    agent: 192.0.2.10:7070
    sharedIps: [300.1.2.3]
    tempIPs: [192.0.2.100]
  target:
    agent: http://192.0.2.20:7070
    token: t
    tokenFile: /x
    sharedIps: []
dns:
  provider: embedded
  listen: { address: 192.0.2.53, port: 99999 }
  zones: []
sites:
  - { domain: "not a domain", server: origin }
  - { domain: shop.example, server: nowhere, ports: [] }
defaults:
  quietWindow: soon
  ttl: 0
`;
  const msg = await problems(bad);
  for (const expected of [
    /servers\.origin\.agent: must be the agent URL with scheme, host and port only, e\.g\. https:\/\/192\.0\.2\.10:7070/,
    /servers\.origin\.sharedIps\[0\]: must be an IPv4 or IPv6 address literal/,
    /servers\.origin\.tempIPs: unknown key; did you mean tempIpPool\?/,
    /servers\.origin\.token: give the token as token: "\$\{ENV_VAR\}" or a literal, or as tokenFile/,
    /servers\.target\.token: give the token/,
    /servers\.target\.sharedIps: must list at least one shared IP/,
    /dns\.listen\.port: must be a port number from 1 to 65535/,
    /dns\.zones: must list at least one zone file/,
    /sites\[0\]\.domain: must be a domain name/,
    /sites\[1\]\.ports: must list at least the HTTP port/,
    /defaults\.quietWindow: must be a duration such as 500ms, 30s, 2m or 1h.*"soon"/,
    /defaults\.ttl: must be at least 1 second/,
  ]) {
    assert.match(msg, expected);
  }
  assert.match(msg, /has \d+ problems:/);
});

test('cross-key checks: unknown server, duplicate domain, shared address, kind mismatch', async () => {
  const msg = await problems(`
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1], tempIpPool: [192.0.2.9] }
  b: { agent: "http://192.0.2.2:7070", token: x, sharedIps: [192.0.2.9] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
sites:
  - { domain: shop.example, server: c }
  - { domain: Shop.Example., server: a, kind: nginx }
`);
  assert.match(msg, /sites\[0\]\.server: "c" is not declared under servers:; write one of a, b/);
  assert.match(msg, /sites\[1\]\.domain: shop\.example is declared twice \(also sites\[0\]\)/);
  assert.match(msg, /servers\.b\.sharedIps\[0\]: 192\.0\.2\.9 is already used by servers\.a\.tempIpPool/);
  assert.match(msg, /sites\[1\]\.kind: is nginx but server a serves sites with builtin/);
});

test('a missing environment variable, bad YAML, a bad provider, the rfc2136 slot', async () => {
  assert.match(await problems(GOOD, {}), /servers\.origin\.token: environment variable ORIGIN_TOKEN is not set/);
  assert.match(await problems('servers: [\n'), /is not valid YAML/);
  assert.match(await problems('servers: {}\ndns: { provider: bind }\n'), /dns\.provider: must be embedded or rfc2136/);
  assert.match(await problems('- a\n'), /top level must be a mapping/);
  const rfc = `
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1] }
dns:
  provider: rfc2136
  server: { address: 192.0.2.54 }
  zone: example.
  tsig: { name: ferry-key., secret: "\${TSIG}" }
`;
  const cfg = await parseConfig(rfc, '/x/ferry.yaml', { env: { TSIG: 'c2VjcmV0' } });
  assert.deepEqual(cfg.dns, { provider: 'rfc2136', server: { address: '192.0.2.54', port: 53 }, zone: 'example.', tsig: { name: 'ferry-key.', algorithm: 'hmac-sha256', secret: 'c2VjcmV0' } });
  assert.doesNotMatch(describeConfig(cfg), /c2VjcmV0/);
  assert.match(await problems(rfc.replace('secret: "${TSIG}"', 'algorithm: sha256, secret: x')), /dns\.tsig\.algorithm: must be hmac-sha256/);
});

test('durations', () => {
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('1.5s'), 1500);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration(250), 250);
  assert.equal(parseDuration('ten'), null);
  assert.equal(parseDuration(-1), null);
});

test('ferry config check: 0 and the config without secrets, or 1 and every problem', async () => {
  const { spawnSync } = await import('node:child_process');
  await withDir(async (dir) => {
    const file = join(dir, 'ferry.yaml');
    await writeFile(join(dir, 'target.token'), 'secret-from-file-123456\n');
    await writeFile(file, GOOD);
    const run = (env: NodeJS.ProcessEnv) =>
      spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'config', 'check', file], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
    const ok = run({ ORIGIN_TOKEN: 'secret-from-env-123456' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /: ok\n/);
    assert.doesNotMatch(ok.stdout + ok.stderr, /secret-from/);
    await writeFile(file, GOOD.replace('tempIpPool', 'tempIPs'));
    const bad = run({ ORIGIN_TOKEN: 'secret-from-env-123456' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /servers\.origin\.tempIPs: unknown key; did you mean tempIpPool\?/);
    assert.doesNotMatch(bad.stderr, /secret-from/);
  });
});
