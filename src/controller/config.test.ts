/** The controller's YAML config: what it accepts, and the errors (path and what to write) for what it does not. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeConfig } from './config-describe.js';
import { parseDuration } from './config-schema.js';
import { parse } from 'yaml';
import { parseConfig } from './config.js';
import { isFerryError } from '../common/errors.js';

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

async function problems(
  yaml: string,
  env: NodeJS.ProcessEnv = { ORIGIN_TOKEN: 'o'.repeat(20) },
): Promise<string> {
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
    const cfg = await parseConfig(GOOD, join(dir, 'ferry.yaml'), {
      env: { ORIGIN_TOKEN: 'secret-from-env-123456' },
    });
    assert.deepEqual(cfg.journal, { kind: 'sqlite', path: join(dir, 'journal.sqlite') });
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
      assert.deepEqual(cfg.dns.zones, [
        { file: join(dir, 'zones/example.zone') },
        { file: '/etc/other.zone', origin: 'other.example.' },
      ]);
    }
    assert.deepEqual(cfg.sites[1], { domain: 'blog.example', server: 'origin', ports: [80], kind: 'nginx' });
    assert.deepEqual(cfg.defaults, { ttl: 30, quietWindowMs: 30_000, drainCapMs: 600_000, pollMs: 500 });
    const text = describeConfig(cfg);
    assert.doesNotMatch(text, /secret-from/, 'secrets never appear in the description');
    assert.match(text, /server origin: agent https:\/\/192\.0\.2\.10:7070/);
    // What differs between the redirect engines is said for each engine the servers may use.
    assert.match(text, /server origin: .*, redirect engine the agent's --engine\n/);
    assert.match(text, /server target: .*, redirect engine kernel\n/);
    assert.match(text, /engine kernel: nftables DNAT .*net\.ipv4\.ip_forward=1/);
    assert.match(text, /engine userspace: a relay in the agent/);
    const userspaceOnly = describeConfig(
      await parseConfig(
        GOOD.replace('engine: kernel', 'engine: userspace').replace(
          'web: nginx\n',
          'web: nginx\n    engine: userspace\n',
        ),
        join(dir, 'ferry.yaml'),
        { env: { ORIGIN_TOKEN: 'secret-from-env-123456' } },
      ),
    );
    assert.match(userspaceOnly, /engine userspace: /);
    assert.doesNotMatch(
      userspaceOnly,
      /engine kernel: /,
      'a config without the kernel engine says nothing of it',
    );
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
    /servers\.origin\.sharedIps\[0\]: must be an IPv4 address literal, e\.g\. 192\.0\.2\.10; got "300\.1\.2\.3"/,
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
  assert.match(
    await problems(GOOD, {}),
    /servers\.origin\.token: environment variable ORIGIN_TOKEN is not set/,
  );
  assert.match(await problems('servers: [\n'), /is not valid YAML/);
  assert.match(
    await problems('servers: {}\ndns: { provider: bind }\n'),
    /dns\.provider: must be embedded, rfc2136 or powerdns/,
  );
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
  assert.deepEqual(cfg.dns, {
    provider: 'rfc2136',
    server: { address: '192.0.2.54', port: 53 },
    zone: 'example.',
    tsig: { name: 'ferry-key.', algorithm: 'hmac-sha256', secret: 'c2VjcmV0' },
  });
  assert.doesNotMatch(describeConfig(cfg), /c2VjcmV0/);
  assert.match(
    await problems(rfc.replace('secret: "${TSIG}"', 'algorithm: sha256, secret: x')),
    /dns\.tsig\.algorithm: must be hmac-sha256/,
  );
});

test('the powerdns provider: API URL, key inline or from a file (never shown), zone, name servers', async () => {
  const pdns = `
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1] }
dns:
  provider: powerdns
  api: http://127.0.0.1:8081/
  apiKey: \${PDNS_KEY}
  zone: example.
  servers: [{ address: 192.0.2.53 }, { address: 192.0.2.54, port: 5353 }]
`;
  const cfg = await parseConfig(pdns, '/x/ferry.yaml', { env: { PDNS_KEY: 'k3y-s3cret' } });
  assert.deepEqual(cfg.dns, {
    provider: 'powerdns',
    api: 'http://127.0.0.1:8081',
    apiKey: 'k3y-s3cret',
    server: 'localhost',
    zone: 'example.',
    nameServers: [
      { address: '192.0.2.53', port: 53 },
      { address: '192.0.2.54', port: 5353 },
    ],
  });
  const text = describeConfig(cfg);
  assert.match(text, /dns: powerdns API http:\/\/127\.0\.0\.1:8081 \(server localhost\), zone example\./);
  assert.doesNotMatch(text, /k3y-s3cret/);
  await withDir(async (dir) => {
    await writeFile(join(dir, 'pdns.key'), 'from-a-file\n');
    const file = pdns.replace('apiKey: ${PDNS_KEY}', 'apiKeyFile: pdns.key');
    const c = await parseConfig(file, join(dir, 'ferry.yaml'), { env: {} });
    assert.equal(c.dns.provider === 'powerdns' && c.dns.apiKey, 'from-a-file');
  });
  assert.match(
    await problems(pdns.replace('apiKey: ${PDNS_KEY}', ''), {}),
    /dns\.apiKey: give the API key as apiKey: .* or as apiKeyFile: .* one of the two/,
  );
  const both = await problems(pdns.replace('apiKey: ${PDNS_KEY}', 'apiKey: x1y2z3\n  apiKeyFile: k'), {});
  assert.match(both, /dns\.apiKey: give the API key/);
  assert.doesNotMatch(both, /x1y2z3/);
  assert.match(
    await problems(pdns.replace('http://127.0.0.1:8081/', '127.0.0.1:8081'), { PDNS_KEY: 'k' }),
    /dns\.api: must be the PowerDNS API URL with scheme, host and port only/,
  );
  assert.match(
    await problems(pdns.replace('zone: example.', 'zone: "not a zone!"'), { PDNS_KEY: 'k' }),
    /dns\.zone: must be a domain name/,
  );
  assert.match(
    await problems(pdns.replace('apiKey:', 'apikey:'), { PDNS_KEY: 'k' }),
    /dns\.apikey: unknown key; did you mean apiKey\?/,
  );
});

const V6_BASE = `
servers:
  origin:
    agent: "http://192.0.2.1:7070"
    token: x
    sharedIps: [192.0.2.1]
    tempIpPool: [192.0.2.100]
    sharedIps6: [2001:DB8:0::1]
    tempIpPool6: [2001:db8::100, 2001:db8::101]
  target: { agent: "http://192.0.2.2:7070", token: x, sharedIps: [192.0.2.2], sharedIps6: ["2001:db8::2"] }
  v4only: { agent: "http://192.0.2.3:7070", token: x, sharedIps: [192.0.2.3] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
`;

test('IPv6: sharedIps6 and tempIpPool6 per server, kept canonical, described; absent for IPv4-only servers', async () => {
  const cfg = await parseConfig(V6_BASE, '/x/ferry.yaml', { env: {} });
  assert.deepEqual(
    cfg.servers.map((s) => [s.id, s.sharedIps6 ?? null, s.tempIpPool6 ?? null]),
    [
      ['origin', ['2001:db8::1'], ['2001:db8::100', '2001:db8::101']],
      ['target', ['2001:db8::2'], null],
      ['v4only', null, null],
    ],
  );
  const text = describeConfig(cfg);
  assert.match(
    text,
    /server origin: .*shared 192\.0\.2\.1, .*IPv6 shared 2001:db8::1, IPv6 temporary pool 2001:db8::100 2001:db8::101/,
  );
  assert.match(text, /server target: .*IPv6 shared 2001:db8::2, IPv6 temporary pool \(none\)/);
  assert.doesNotMatch(
    text.split('\n').find((l) => l.includes('server v4only'))!,
    /IPv6/,
  );
});

test('IPv6: each key holds its own family, duplicates across servers, bad lists, did-you-mean', async () => {
  const msg = await problems(`
servers:
  origin:
    agent: "http://192.0.2.1:7070"
    token: x
    sharedIps: [192.0.2.1, "2001:db8::9"]
    tempIpPool: ["2001:db8::10"]
    sharedIps6: [192.0.2.1]
    tempIpPool6: [2001:db8::100, not-an-address]
  target:
    agent: "http://192.0.2.2:7070"
    token: x
    sharedIps: [192.0.2.2]
    sharedIps6: ["2001:DB8::100"]
    tempIPs6: [2001:db8::200]
    sharedIp6: [2001:db8::201]
  third:
    agent: "http://192.0.2.3:7070"
    token: x
    sharedIps: [192.0.2.3]
    sharedIps6: []
    tempIpPool6: 2001:db8::300
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
`);
  for (const expected of [
    /servers\.origin\.sharedIps6\[0\]: 192\.0\.2\.1 is IPv4; IPv4 addresses go in sharedIps\n/,
    /servers\.origin\.sharedIps\[1\]: 2001:db8::9 is IPv6; IPv6 addresses go in sharedIps6\n/,
    /servers\.origin\.tempIpPool\[0\]: 2001:db8::10 is IPv6; IPv6 addresses go in tempIpPool6\n/,
    /servers\.origin\.tempIpPool6\[1\]: must be an IPv6 address literal, e\.g\. 2001:db8::10; got "not-an-address"/,
    /servers\.target\.tempIPs6: unknown key; did you mean tempIpPool6\?/,
    /servers\.target\.sharedIp6: unknown key; did you mean sharedIps6\?/,
    /servers\.third\.sharedIps6: must list at least one shared IPv6 address, or be left out/,
    /servers\.third\.tempIpPool6: must be a list of IPv6 addresses/,
  ]) {
    assert.match(msg, expected);
  }
  // Cross-server checks (run once the servers are well formed): IPv6 compared in canonical form.
  const dup = await problems(
    V6_BASE.replace('sharedIps6: ["2001:db8::2"]', 'sharedIps6: ["2001:DB8:0:0::100"]'),
  );
  assert.match(
    dup,
    /servers\.target\.sharedIps6\[0\]: 2001:db8::100 is already used by servers\.origin\.tempIpPool6/,
  );
  // The IPv4 suggestions stay as they were.
  assert.match(
    await problems(V6_BASE.replace('tempIpPool:', 'tempIPs:')),
    /servers\.origin\.tempIPs: unknown key; did you mean tempIpPool\?/,
  );
  assert.match(
    await problems(V6_BASE.replace('sharedIps:', 'sharedIP:')),
    /servers\.origin\.sharedIP: unknown key; did you mean sharedIps\?/,
  );
});

const RELAY_BASE = `
servers:
  origin: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1], relayHost: relay }
  target: { agent: "http://192.0.2.2:7070", token: x, sharedIps: [192.0.2.2] }
  relay: { agent: "http://192.0.2.3:7070", token: x, sharedIps: [192.0.2.3], tempIpPool: [192.0.2.100] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
`;

test('relay-host mode: relayHost names the server carrying the redirects, described; self, unknown or poolless refused', async () => {
  const cfg = await parseConfig(RELAY_BASE, '/x/ferry.yaml', { env: {} });
  assert.deepEqual(
    cfg.servers.map((s) => [s.id, s.relayHost ?? null]),
    [
      ['origin', 'relay'],
      ['target', null],
      ['relay', null],
    ],
  );
  assert.match(describeConfig(cfg), /server origin: .*, redirects on relay host relay\n/);
  assert.match(
    await problems(RELAY_BASE.replace('relayHost: relay', 'relayHost: origin')),
    /servers\.origin\.relayHost: names this server itself; leave relayHost out/,
  );
  assert.match(
    await problems(RELAY_BASE.replace('relayHost: relay', 'relayHost: relais')),
    /servers\.origin\.relayHost: "relais" is not declared under servers:; write one of target, relay/,
  );
  assert.match(
    await problems(RELAY_BASE.replace(', tempIpPool: [192.0.2.100]', '')),
    /servers\.origin\.relayHost: server relay has no tempIpPool; the relay host's pool holds the temporary IPs/,
  );
  assert.match(
    await problems(RELAY_BASE.replace('relayHost: relay', 'relayHost: 7')),
    /servers\.origin\.relayHost: must name another server declared under servers:/,
  );
});

const DNS_SECURE = `
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1] }
dns:
  provider: embedded
  listen: { address: 192.0.2.53 }
  zones:
    - zones/example.zone
    - file: zones/other.zone
      origin: other.example.
      allowUpdate: [{ address: 192.0.2.0/24, key: ferry-update. }]
      notify: []
  tsigKeys:
    - { name: xfr-key., secret: "\${XFR_TSIG}" }
    - { name: ferry-update., algorithm: hmac-sha512, secretFile: update.key }
  allowTransfer: [192.0.2.54, "2001:db8::/32", { key: XFR-KEY }]
  notify: [{ address: 192.0.2.54 }, { address: "2001:db8::54", port: 5300, key: xfr-key. }]
  serialPolicy: unixtime
  workers: 4
`;

test('embedded DNS security: TSIG keys from env and file, ACLs, notify, serial policy, workers; described without secrets', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'update.key'), 'dXBkYXRlLXNlY3JldC1mcm9tLWZpbGU=\n');
    const cfg = await parseConfig(DNS_SECURE, join(dir, 'ferry.yaml'), {
      env: { XFR_TSIG: 'eGZyLXNlY3JldC1mcm9tLWVudg==' },
    });
    assert.equal(cfg.dns.provider, 'embedded');
    if (cfg.dns.provider !== 'embedded') return;
    assert.deepEqual(cfg.dns.tsigKeys, [
      { name: 'xfr-key.', algorithm: 'hmac-sha256', secret: 'eGZyLXNlY3JldC1mcm9tLWVudg==' },
      { name: 'ferry-update.', algorithm: 'hmac-sha512', secret: 'dXBkYXRlLXNlY3JldC1mcm9tLWZpbGU=' },
    ]);
    assert.deepEqual(cfg.dns.allowTransfer, [
      { address: '192.0.2.54' },
      { address: '2001:db8::/32' },
      { key: 'XFR-KEY' },
    ]);
    assert.equal(cfg.dns.allowUpdate, undefined, 'no updates unless configured');
    assert.deepEqual(cfg.dns.notify, [
      { address: '192.0.2.54', port: 53 },
      { address: '2001:db8::54', port: 5300, key: 'xfr-key.' },
    ]);
    assert.equal(cfg.dns.serialPolicy, 'unixtime');
    assert.equal(cfg.dns.workers, 4);
    assert.deepEqual(cfg.dns.zones, [
      { file: join(dir, 'zones/example.zone') },
      {
        file: join(dir, 'zones/other.zone'),
        origin: 'other.example.',
        allowUpdate: [{ address: '192.0.2.0/24', key: 'ferry-update.' }],
        notify: [],
      },
    ]);
    // What the name server is given: the dns-level policy for every zone (`*`); the zone with its
    // own policy inherits what it leaves out (allowTransfer) and overrides the rest.
    const { dnsSecurityOptions } = await import('./start.js');
    const opts = dnsSecurityOptions(cfg.dns, ['example.', 'other.example.']);
    assert.deepEqual(opts.zonePolicies, {
      '*': { allowTransfer: cfg.dns.allowTransfer, notify: cfg.dns.notify },
      'other.example.': {
        allowTransfer: cfg.dns.allowTransfer,
        allowUpdate: [{ address: '192.0.2.0/24', key: 'ferry-update.' }],
        notify: [],
      },
    });
    assert.deepEqual(
      opts.tsigKeys?.map((k) => k.name),
      ['xfr-key.', 'ferry-update.'],
    );
    const text = describeConfig(cfg);
    assert.doesNotMatch(text, /eGZy|dXBk/, 'TSIG secrets never appear in the description');
    assert.match(text, /dns: embedded on 192\.0\.2\.53:53, .*serials unixtime, 4 query workers/);
    assert.match(text, /dns tsig keys: xfr-key\. \(hmac-sha256\), ferry-update\. \(hmac-sha512\)/);
    assert.match(
      text,
      /dns zones by default: transfer 192\.0\.2\.54, 2001:db8::\/32, key XFR-KEY; update none; notify 192\.0\.2\.54:53, \[2001:db8::54\]:5300 \(key xfr-key\.\)/,
    );
    assert.match(
      text,
      /dns zone other\.example\.: transfer .*; update 192\.0\.2\.0\/24 with key ferry-update\.; notify none/,
    );
  });
});

test('embedded DNS security: secure by default; nothing configured gives the name server no policy at all', async () => {
  const cfg = await parseConfig(V6_BASE, '/x/ferry.yaml', { env: {} });
  if (cfg.dns.provider !== 'embedded') assert.fail('embedded expected');
  assert.equal(cfg.dns.tsigKeys, undefined);
  const { dnsSecurityOptions } = await import('./start.js');
  assert.deepEqual(dnsSecurityOptions(cfg.dns, ['example.']), {});
  assert.match(
    describeConfig(cfg),
    /dns tsig keys: \(none\)\n {2}dns zones by default: transfer none; update none; notify none/,
  );
});

test('embedded DNS security: every bad key and value named by its path, secrets never echoed', async () => {
  const bad = `
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1] }
dns:
  provider: embedded
  listen: { address: 192.0.2.53 }
  zones:
    - { file: z, allowTransfers: [192.0.2.1] }
    - { file: y, allowUpdate: [{ key: nobody. }], notify: [{ address: 192.0.2.9, port: 0 }] }
  tsigKeys:
    - { name: k1., secret: "not base64 SECRET-VALUE!" }
    - { name: k2., secret: c2VjcmV0, secretFile: k2.key }
    - { name: K1, algorithm: sha256, secret: c2VjcmV0 }
    - { name: k3., secret: c2VjcmV0, comment: x }
  allowTransfer: [192.0.2.300, 192.0.2.0/33, "2001:db8::/129", {}, { address: 192.0.2.1, key: k2., port: 53 }, { key: "bad key" }, 7]
  allowUpdate: { key: k1. }
  notify: [{ address: secondary.example }, { address: 192.0.2.9, keys: k1. }]
  serialPolicy: date
  workers: 65
  tsigKey: []
`;
  const msg = await problems(bad);
  for (const expected of [
    /dns\.zones\[0\]\.allowTransfers: unknown key; did you mean allowTransfer\?/,
    /dns\.zones\[1\]\.notify\[0\]\.port: must be a port number from 1 to 65535/,
    /dns\.tsigKeys\[0\]\.secret: must be the base64 secret as tsig-keygen or keymgr -t print it/,
    /dns\.tsigKeys\[1\]\.secret: give the TSIG secret as secret: "\$\{ENV_VAR\}" or a literal, or as secretFile/,
    /dns\.tsigKeys\[2\]\.algorithm: must be hmac-sha256/,
    /dns\.tsigKeys\[3\]\.comment: unknown key/,
    /dns\.allowTransfer\[0\]: "192\.0\.2\.300" is not an address or prefix; must be an address or prefix/,
    /dns\.allowTransfer\[1\]: the prefix length in "192\.0\.2\.0\/33" must be 0-32/,
    /dns\.allowTransfer\[2\]: the prefix length in "2001:db8::\/129" must be 0-128/,
    /dns\.allowTransfer\[3\]: must be an address or prefix .*\{ key: KEY-NAME \}/,
    /dns\.allowTransfer\[4\]\.port: unknown key; port is not valid here/,
    /dns\.allowTransfer\[5\]\.key: must be a domain name/,
    /dns\.allowTransfer\[6\]: must be an address or prefix/,
    /dns\.allowUpdate: must be a list; each entry must be an address or prefix/,
    /dns\.notify\[0\]\.address: must be an IPv4 or IPv6 address literal/,
    /dns\.notify\[1\]\.keys: unknown key; did you mean key\?/,
    /dns\.serialPolicy: must be increment or unixtime/,
    /dns\.workers: must be the number of query worker processes, 1 to 64/,
    /dns\.tsigKey: unknown key; did you mean tsigKeys\?/,
  ]) {
    assert.match(msg, expected);
  }
  assert.doesNotMatch(msg, /SECRET-VALUE/);
  assert.match(
    await problems(bad.replace('workers: 65', 'workers: 0')),
    /dns\.workers: must be the number of query worker processes, 1 to 64/,
  );
  assert.match(
    await problems(bad.replace('workers: 65', 'workers: 2.5')),
    /dns\.workers: must be the number of query worker processes, 1 to 64/,
  );
  assert.match(
    await problems(DNS_SECURE.replace('secretFile: update.key', 'secret: c2VjcmV0, secretFiel: x')),
    /dns\.tsigKeys\[1\]\.secretFiel: unknown key; did you mean secretFile\?/,
  );
});

test('embedded DNS security: key names declared once, and every ACL entry and notify target names a declared key', async () => {
  const msg = await problems(
    DNS_SECURE.replace(
      '{ name: ferry-update., algorithm: hmac-sha512, secretFile: update.key }',
      '{ name: XFR-Key, secret: c2VjcmV0 }',
    ).replace('notify: [{ address: 192.0.2.54 },', 'notify: [{ address: 192.0.2.54, key: nobody. },'),
    { XFR_TSIG: 'eGZy' },
  );
  // Names compare as the name server compares them: xfr-key. and XFR-Key are one key.
  assert.match(msg, /dns\.tsigKeys\[1\]\.name: XFR-Key is declared twice \(also dns\.tsigKeys\[0\]\)/);
  assert.match(
    msg,
    /dns\.zones\[1\]\.allowUpdate\[0\]\.key: names TSIG key ferry-update\., which is not declared under dns\.tsigKeys; declared: xfr-key\., XFR-Key/,
  );
  assert.match(
    msg,
    /dns\.notify\[0\]\.key: names TSIG key nobody\., which is not declared under dns\.tsigKeys/,
  );
  assert.doesNotMatch(msg, /allowTransfer/, 'XFR-KEY is xfr-key.');
});

test('embedded DNS security: a TSIG secret from an unset variable or a bad file, never echoed', async () => {
  assert.match(
    await problems(DNS_SECURE, {}),
    /dns\.tsigKeys\[0\]\.secret: environment variable XFR_TSIG is not set/,
  );
  await withDir(async (dir) => {
    await writeFile(join(dir, 'update.key'), 'FILE-SECRET not base64!\n');
    try {
      await parseConfig(DNS_SECURE, join(dir, 'ferry.yaml'), { env: { XFR_TSIG: 'eGZy' } });
      assert.fail('expected the config to be refused');
    } catch (err) {
      const m = (err as Error).message;
      assert.match(m, /dns\.tsigKeys\[1\]\.secretFile: .*update\.key must hold the base64 secret/);
      assert.doesNotMatch(m, /FILE-SECRET/);
    }
    await rm(join(dir, 'update.key'));
    await assert.rejects(
      parseConfig(DNS_SECURE, join(dir, 'ferry.yaml'), { env: { XFR_TSIG: 'eGZy' } }),
      /dns\.tsigKeys\[1\]\.secretFile: cannot read .*update\.key \(ENOENT\)/,
    );
  });
});

test('hints come from the schema: a misspelt key anywhere gets the nearest key the schema declares', async () => {
  const m = await problems(
    GOOD.replace('quietWindow: 30s', 'quietWindw: 30s').replace(
      '  provider: embedded',
      '  provider: embedded\n  serialPolicyy: unixtime',
    ),
  );
  assert.match(m, /defaults\.quietWindw: unknown key; did you mean quietWindow\?/);
  assert.match(m, /dns\.serialPolicyy: unknown key; did you mean serialPolicy\?/);
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
      spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'config', 'check', file], {
        encoding: 'utf8',
        env: { ...process.env, ...env },
        timeout: 60_000,
      });
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

test('web sites: kind web with overrides, migration.backupKeepDays; web keys only with kind web; described; hints', async () => {
  const yaml = `
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1], tempIpPool: [192.0.2.9] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
sites:
  - { domain: shop.example, server: a, ports: [80, 443], kind: web, web: { declaredRoots: [/var/www, /home], dataDir: /var/www/shop } }
  - { domain: blog.example, server: a }
migration: { backupKeepDays: 2.5 }
`;
  const cfg = await parseConfig(yaml, '/x/ferry.yaml', { env: {}, readSecretFiles: false });
  assert.deepEqual(cfg.sites[0], {
    domain: 'shop.example',
    server: 'a',
    ports: [80, 443],
    kind: 'web',
    web: { declaredRoots: ['/var/www', '/home'], dataDir: '/var/www/shop' },
  });
  assert.equal(cfg.sites[1]!.kind, 'builtin');
  assert.equal(cfg.migration.backupKeepMs, 2.5 * 86_400_000);
  const text = describeConfig(cfg);
  assert.match(
    text,
    /site shop\.example: on a, ports 80,443, the server's own web server, roots \/var\/www \/home, data in \/var\/www\/shop/,
  );
  assert.match(text, /an origin keeps its backup of a moved web site 2\.5 days/);
  // The default: a week.
  const plain = await parseConfig(yaml.replace('migration: { backupKeepDays: 2.5 }\n', ''), '/x/ferry.yaml', {
    env: {},
    readSecretFiles: false,
  });
  assert.equal(plain.migration.backupKeepMs, 7 * 86_400_000);
  const msg = await problems(`
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
sites:
  - { domain: b.example, server: a, kind: web, web: { declaredRoots: [www], dataDr: /x } }
  - { domain: c.example, server: a, kind: apache }
migration: { backupKeepDays: -1, backupKeepDay: 3 }
`);
  assert.match(msg, /sites\[0\]\.web\.declaredRoots\[0\]: must be an absolute path/);
  assert.match(msg, /sites\[0\]\.web\.dataDr: unknown key; did you mean dataDir\?/);
  assert.match(msg, /sites\[1\]\.kind: must be builtin or nginx .* or web/);
  assert.match(msg, /migration\.backupKeepDays: must be 0 or more days/);
  assert.match(msg, /migration\.backupKeepDay: unknown key; did you mean backupKeepDays\?/);
  // Cross-key: overrides of a site that is not a web site.
  assert.match(
    await problems(`
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
sites:
  - { domain: a.example, server: a, web: { dataDir: /srv/a } }
`),
    /sites\[0\]\.web: is for web sites only; add kind: web/,
  );
});

test('web sites: declared databases and the catch-up bounds; checked, described, only for web sites', async () => {
  const yaml = `
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1], tempIpPool: [192.0.2.9] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
sites:
  - domain: shop.example
    server: a
    kind: web
    databases:
      - { name: wp_shop, users: [wp_shop, wp_admin] }
      - { name: stats, host: "db.example:3306" }
      - { name: orders, host: "pg.example:5432", engine: postgresql }
    database: { catchUpTimeoutMs: 5s, catchUpAttempts: 4, retryDelayMs: 60000, lagWaitMs: 2m, copyInHoldMaxBytes: 50MiB }
  - { domain: blog.example, server: a, kind: web }
  - { domain: news.example, server: a, kind: web, database: { copyInHoldMaxBytes: 1500000 } }
  - { domain: wiki.example, server: a, kind: web, database: { copyInHoldMaxBytes: 1.5GB } }
`;
  const cfg = await parseConfig(yaml, '/x/ferry.yaml', { env: {}, readSecretFiles: false });
  assert.deepEqual(cfg.sites[0]!.databases, [
    { name: 'wp_shop', users: ['wp_shop', 'wp_admin'] },
    { name: 'stats', host: 'db.example:3306' },
    { name: 'orders', host: 'pg.example:5432', engine: 'postgresql' },
  ]);
  assert.deepEqual(cfg.sites[0]!.database, {
    catchUpTimeoutMs: 5000,
    catchUpAttempts: 4,
    retryDelayMs: 60000,
    lagWaitMs: 120000,
    copyInHoldMaxBytes: 50 * 1024 * 1024,
  });
  assert.equal(cfg.sites[2]!.database?.copyInHoldMaxBytes, 1_500_000, 'a bare number is bytes');
  assert.equal(cfg.sites[3]!.database?.copyInHoldMaxBytes, 1_500_000_000);
  assert.equal(cfg.sites[1]!.databases, undefined);
  assert.equal(cfg.sites[1]!.database, undefined);
  assert.match(
    describeConfig(cfg),
    /site shop\.example: .*databases wp_shop \(users wp_shop wp_admin\), stats at db\.example:3306, orders at pg\.example:5432 \(postgresql\), database catch-up catchUpTimeoutMs=5000 catchUpAttempts=4 retryDelayMs=60000 lagWaitMs=120000 copyInHoldMaxBytes=52428800/,
  );
  const msg = await problems(`
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
sites:
  - domain: b.example
    server: a
    kind: web
    databases:
      - { name: "wp shop; drop", users: ["o'brien"] }
      - { name: wp_b, password: hunter2 }
      - { name: wp_b }
      - { name: wp_c, engine: oracle }
    database: { catchUpTimeoutMs: soon, catchUpAttempts: 0, retryDelay: 5s, copyInHoldMaxBytes: lots }
  - { domain: d.example, server: a, kind: web, databases: [] }
  - { domain: e.example, server: a, kind: web, database: { copyInHoldMaxBytes: -5 } }
`);
  assert.match(msg, /sites\[0\]\.databases\[0\]\.name: must be a database name/);
  assert.match(msg, /sites\[0\]\.databases\[0\]\.users\[0\]: must be a database user name/);
  assert.match(msg, /sites\[0\]\.databases\[1\]\.password: unknown key; a declared database has no password/);
  assert.match(msg, /sites\[0\]\.databases\[3\]\.engine: must be mariadb or postgresql/);
  assert.doesNotMatch(msg, /hunter2/);
  assert.match(msg, /sites\[0\]\.database\.catchUpTimeoutMs: must be a duration/);
  assert.match(msg, /sites\[0\]\.database\.catchUpAttempts: must be a whole number of attempts, 1 or more/);
  assert.match(msg, /sites\[0\]\.database\.retryDelay: unknown key; did you mean retryDelayMs\?/);
  assert.match(msg, /sites\[1\]\.databases: must list at least one database, or be left out/);
  assert.match(msg, /sites\[0\]\.database\.copyInHoldMaxBytes: must be a size such as 50MiB.*got "lots"/);
  assert.match(msg, /sites\[2\]\.database\.copyInHoldMaxBytes: must be a size/);
  // Cross-key, on a config that parses: databases of a site that is not a web site; a name twice.
  const cross = await problems(`
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
sites:
  - { domain: c.example, server: a, databases: [{ name: wp_c }], database: { catchUpAttempts: 2 } }
  - { domain: e.example, server: a, kind: web, databases: [{ name: wp_e }, { name: wp_e }] }
`);
  assert.match(cross, /sites\[0\]\.databases: is for web sites only; add kind: web/);
  assert.match(cross, /sites\[0\]\.database: is for web sites only; add kind: web/);
  assert.match(cross, /sites\[1\]\.databases\[1\]\.name: wp_e is declared twice/);
});

test('embedded DNS catalog zone: off by default, catalog.ferry.invalid. when enabled, its own policy over the defaults', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'update.key'), 'dXBkYXRlLXNlY3JldC1mcm9tLWZpbGU=\n');
    const env = { env: { XFR_TSIG: 'eGZyLXNlY3JldC1mcm9tLWVudg==' } };
    const off = await parseConfig(DNS_SECURE, join(dir, 'ferry.yaml'), env);
    assert.ok(off.dns.provider === 'embedded' && off.dns.catalog === undefined);
    assert.doesNotMatch(describeConfig(off), /catalog/);

    const on = await parseConfig(`${DNS_SECURE}  catalog: {}\n`, join(dir, 'ferry.yaml'), env);
    assert.ok(on.dns.provider === 'embedded');
    assert.deepEqual(on.dns.catalog, { zone: 'catalog.ferry.invalid.' });
    assert.match(describeConfig(on), /dns catalog zone catalog\.ferry\.invalid\. .*: as zones by default/);

    const own = await parseConfig(
      `${DNS_SECURE}  catalog: { zone: cat.example., allowTransfer: [{ key: xfr-key. }], notify: [{ address: 192.0.2.55 }] }\n`,
      join(dir, 'ferry.yaml'),
      env,
    );
    assert.ok(own.dns.provider === 'embedded');
    const { dnsSecurityOptions } = await import('./start.js');
    const policies = dnsSecurityOptions(own.dns, ['example.', 'other.example.']).zonePolicies!;
    assert.deepEqual(policies['cat.example.'], {
      allowTransfer: [{ key: 'xfr-key.' }],
      notify: [{ address: '192.0.2.55', port: 53 }],
    });
    assert.match(
      describeConfig(own),
      /dns catalog zone cat\.example\. .*: transfer key xfr-key\.; update none; notify 192\.0\.2\.55:53/,
    );

    assert.match(
      await problems(`${DNS_SECURE}  catalog: { zone: "not a name" }\n`, env.env),
      /dns\.catalog\.zone: must be a domain name/,
    );
    assert.match(
      await problems(`${DNS_SECURE}  catalog: { allowUpdate: [192.0.2.1] }\n`, env.env),
      /dns\.catalog: .*allowUpdate|dns\.catalog\.allowUpdate/,
    );
    assert.match(
      await problems(`${DNS_SECURE}  catalog: { allowTransfer: [{ key: nokey. }] }\n`, env.env),
      /dns\.catalog\.allowTransfer\[0\]\.key: names TSIG key nokey\., which is not declared/,
    );
  });
});

test('web sites: other names and mail: false; checked, described, only for web sites', async () => {
  const yaml = `
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1], tempIpPool: [192.0.2.9] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
sites:
  - { domain: shop.example, server: a, kind: web, names: [FTP.shop.example, files.example.], mail: false }
  - { domain: blog.example, server: a, kind: web, mail: true, ports: [80, 25, 587, 993] }
`;
  const cfg = await parseConfig(yaml, '/x/ferry.yaml', { env: {}, readSecretFiles: false });
  assert.deepEqual(cfg.sites[0]!.names, ['ftp.shop.example.', 'files.example.']);
  assert.equal(cfg.sites[0]!.mail, false);
  assert.equal(cfg.sites[1]!.names, undefined);
  assert.equal(cfg.sites[1]!.mail, undefined, 'mail: true is the default: nothing to carry');
  assert.deepEqual(cfg.sites[1]!.ports, [80, 25, 587, 993]);
  assert.match(
    describeConfig(cfg),
    /site shop\.example: .*also the names ftp\.shop\.example\. files\.example\., mail stays on the origin/,
  );
  const msg = await problems(`
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
sites:
  - { domain: b.example, server: a, kind: web, names: ["not a name"], mail: no }
  - { domain: c.example, server: a, kind: web, names: [] }
  - { domain: d.example, server: a, kind: web, names: www.d.example }
`);
  assert.match(msg, /sites\[0\]\.names\[0\]: must be a domain name/);
  assert.match(msg, /sites\[0\]\.mail: must be false to leave the mail on the origin, or be left out/);
  assert.match(msg, /sites\[1\]\.names: must list at least one name, or be left out/);
  assert.match(msg, /sites\[2\]\.names: must be a list of domain names/);
  const cross = await problems(`
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1] }
dns: { provider: embedded, listen: { address: 192.0.2.53 }, zones: [z] }
sites:
  - { domain: c.example, server: a, names: [www.c.example], mail: false }
  - { domain: e.example, server: a, kind: web, names: [www.e.example, WWW.e.example., e.example] }
`);
  assert.match(cross, /sites\[0\]\.names: is for web sites only; add kind: web/);
  assert.match(cross, /sites\[0\]\.mail: is for web sites only; add kind: web/);
  assert.match(cross, /sites\[1\]\.names\[1\]: WWW\.e\.example\. is listed twice/);
  assert.match(cross, /sites\[1\]\.names\[2\]: is the site's domain itself; list only its other names/);
  // With an rfc2136 provider the zone is known: a name outside it is refused.
  const outside = await problems(`
servers:
  a: { agent: "http://192.0.2.1:7070", token: x, sharedIps: [192.0.2.1] }
dns: { provider: rfc2136, server: { address: 192.0.2.53 }, zone: example. }
sites:
  - { domain: f.example, server: a, kind: web, names: [www.f.example, www.f.other] }
`);
  assert.match(outside, /sites\[0\]\.names\[1\]: www\.f\.other is outside the zone example\./);
  assert.doesNotMatch(outside, /names\[0\]/);
});

test('journal on PostgreSQL: a URL or { postgres, passwordFile, giveUpAfterSeconds }, described without its password; bad ones refused without echo', async () => {
  const rest = GOOD.replace('journal: ./journal.sqlite\n', '');
  const env = { ORIGIN_TOKEN: 'secret-from-env-123456' };
  await withDir(async (dir) => {
    await writeFile(join(dir, 'target.token'), 'secret-from-file-123456\n');
    await writeFile(join(dir, 'pg.pw'), 'pg-s3cret\n');
    const url = await parseConfig(
      `journal: postgresql://ferry:url-s3cret@db.example:5433/ferry\n${rest}`,
      join(dir, 'ferry.yaml'),
      { env },
    );
    assert.deepEqual(url.journal, {
      kind: 'postgres',
      url: 'postgresql://ferry:url-s3cret@db.example:5433/ferry',
    });
    assert.match(
      describeConfig(url),
      /journal: PostgreSQL postgresql:\/\/ferry:\*\*\*@db\.example:5433\/ferry, retries/,
    );
    assert.doesNotMatch(describeConfig(url), /url-s3cret/);
    // No journal folder to put the zones beside: /var/lib/ferry.
    assert.equal(url.dns.provider === 'embedded' && url.dns.db, '/var/lib/ferry/zones.sqlite');

    const obj = await parseConfig(
      `journal: { postgres: "postgres://ferry@db.example/ferry", passwordFile: pg.pw, giveUpAfterSeconds: 30 }\n${rest}`,
      join(dir, 'ferry.yaml'),
      { env },
    );
    assert.deepEqual(obj.journal, {
      kind: 'postgres',
      url: 'postgres://ferry@db.example/ferry',
      password: 'pg-s3cret',
      giveUpAfterMs: 30_000,
    });
    assert.match(describeConfig(obj), /\(password from passwordFile\), gives up connecting after 30 s/);
    assert.doesNotMatch(describeConfig(obj), /pg-s3cret/);

    for (const bad of [
      'journal: { postgres: "mysql://ferry:bad-s3cret@db/ferry" }',
      'journal: { postgres: "postgres://ferry:bad-s3cret@db/ferry", giveUpAfterSeconds: -1 }',
      'journal: { url: "postgres://ferry:bad-s3cret@db/ferry" }',
    ]) {
      await assert.rejects(
        parseConfig(`${bad}\n${rest}`, join(dir, 'ferry.yaml'), { env }),
        (e: Error) =>
          isFerryError(e, 'CONFIG_INVALID') && /journal/.test(e.message) && !e.message.includes('bad-s3cret'),
        bad,
      );
    }
  });
});

test('a config written as one JSON document reads as the same YAML does; JSON that does not parse gets the YAML error', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'target.token'), 'secret-from-file-123456\n');
    const opts = { env: { ORIGIN_TOKEN: 'secret-from-env-123456' } };
    const fromYaml = await parseConfig(GOOD, join(dir, 'ferry.yaml'), opts);
    const json = JSON.stringify(parse(GOOD));
    const fromJson = await parseConfig(`\n  ${json}\n`, join(dir, 'ferry.yaml'), opts);
    assert.deepEqual(fromJson, fromYaml);
  });
  assert.match(await problems('{ "servers": {}, '), /is not valid YAML/);
  // YAML flow style that is not JSON still reads as YAML.
  assert.match(await problems('{ servers: {}, dns: { provider: bind } }'), /dns\.provider: must be embedded/);
  assert.match(
    await problems('{"servers": {"a": {"agent": "http://192.0.2.1:7070", "sharedIps": ["192.0.2.1"]}}}'),
    /servers\.a\.token/,
  );
});

test('leader: only with a PostgreSQL journal; id, ttl and advertise checked', async () => {
  const pg = GOOD.replace('journal: ./journal.sqlite', 'journal: postgres://ferry@db.example:5432/ferry');
  const cfg = await parseConfig(
    `${pg}leader: { id: ctl-1, ttl: 4s, advertise: "http://10.0.0.5:7300" }\n`,
    '/nowhere/ferry.yaml',
    { env: { ORIGIN_TOKEN: 'o'.repeat(20) }, readSecretFiles: false },
  );
  assert.deepEqual(cfg.leader, { id: 'ctl-1', ttlMs: 4000, advertise: 'http://10.0.0.5:7300' });
  assert.match(
    await problems(`${GOOD}leader: { id: ctl-1 }\n`),
    /leader: the leader lease lives in the journal's PostgreSQL: set journal: postgres:\/\/… .*or remove leader/,
  );
  const bad = await problems(`${pg}leader: { id: "two words", ttl: 10ms, advertise: "ftp://x" }\n`);
  assert.match(bad, /leader\.id: must be 1-128 letters, digits or \. _ : @ -/);
  assert.match(bad, /leader\.ttl: must be between 300ms and 10m/);
  assert.match(bad, /leader\.advertise: must be an http\(s\) URL/);
});
