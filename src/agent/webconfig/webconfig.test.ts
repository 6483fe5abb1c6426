/**
 * Reading real web servers' configurations: Debian's nginx (`nginx -T -c FILE -p PREFIX`) and
 * Apache 2.4 (`apache2ctl -S` with `APACHE_CONFDIR`) on configs the test writes in a temp dir, with
 * PHP-FPM pool files there too; never the system's own configuration. Then the agent's
 * `GET /v1/web-sites` and `HttpHostDriver.webSites()` over them. Skipped, with the reason, when
 * a package is missing (`.ci/run` installs them).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { findBinary } from '../../../test/e2e/helpers.js';
import { isFerryError } from '../../common/errors.js';
import { LoopbackAddresses } from '../addresses.js';
import { HostAgent } from '../agent.js';
import { HttpHostDriver } from '../client.js';
import { buildAgentServer } from '../server.js';
import { readWebSites, type WebSite, type WebSitesReport } from './index.js';
import { selfSignedCert } from '../../../test/certs.js';

const nginxBin = findBinary('nginx');
const apacheBin = findBinary('apache2ctl');
const opensslBin = findBinary('openssl');
const MODULES = '/usr/lib/apache2/modules';

let dir = '';
let www = '';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-webconfig-'));
  www = join(dir, 'www');
  for (const d of ['a', 'b', 'tls', 'php', 'proxy', 'shared']) await mkdir(join(www, d), { recursive: true });
  await mkdir(join(dir, 'elsewhere'), { recursive: true });
  await mkdir(join(dir, 'pool.d'));
  await mkdir(join(dir, 'run'));
  await writeFile(
    join(dir, 'pool.d', 'shop.conf'),
    `; the shop's pool\n[shop]\nuser = shop\ngroup = shopgrp\nlisten = ${dir}/run/$pool.sock\npm = ondemand\n`,
  );
  if (opensslBin) {
    selfSignedCert({
      keyFile: join(dir, 'tls.key'),
      certFile: join(dir, 'tls.crt'),
      cn: 'tls.example',
      rsa: true,
      openssl: opensslBin,
    });
  }
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const byName = (r: WebSitesReport, name: string): WebSite => {
  const s = r.sites.find((x) => x.names.includes(name));
  assert.ok(s, `no site named ${name} in ${JSON.stringify(r.sites.map((x) => x.names))}`);
  return s;
};
const codes = (s: WebSite) => s.refusals.map((r) => r.code);

describe('nginx', { skip: !nginxBin || !opensslBin ? 'nginx or openssl is not installed' : false }, () => {
  let conf = '';
  let prefix = '';
  const read = (file = conf) =>
    readWebSites({
      kind: 'nginx',
      command: [nginxBin!, '-T', '-c', file, '-p', prefix],
      poolDirs: [join(dir, 'pool.d')],
      declaredRoots: [www],
    });

  before(async () => {
    prefix = join(dir, 'nginx');
    await mkdir(join(prefix, 'sites'), { recursive: true });
    conf = join(prefix, 'nginx.conf');
    await writeFile(
      conf,
      `pid ${prefix}/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n  access_log off;\n` +
        `  upstream app { server 127.0.0.1:9001; }\n  include sites/*.conf;\n}\n`,
    );
    const site = (name: string, text: string) => writeFile(join(prefix, 'sites', name), text);
    // Two name-based sites on one IP and port; b is written first but a is the default server.
    await site(
      'a.conf',
      `# the a site\nserver {\n  listen 127.0.0.1:8081 default_server;\n  server_name a.example www.a.example;\n  root "${www}/a"; # quoted\n}\n`,
    );
    await site(
      'b.conf',
      `server {\n  listen 127.0.0.1:8081;\n  server_name b.example;\n  root ${www}/b;\n}\n`,
    );
    await site(
      'tls.conf',
      `server {\n  listen 127.0.0.1:8443 ssl;\n  server_name tls.example;\n  root ${www}/tls;\n` +
        `  ssl_certificate ${dir}/tls.crt;\n  ssl_certificate_key ${dir}/tls.key;\n}\n`,
    );
    await site(
      'php.conf',
      `server {\n  listen 127.0.0.1:8081;\n  server_name php.example;\n  root ${www}/php;\n` +
        `  location ~ \\.php$ {\n    include fastcgi.conf;\n    fastcgi_pass unix:${dir}/run/shop.sock;\n  }\n}\n`,
    );
    await writeFile(
      join(prefix, 'fastcgi.conf'),
      'fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n',
    );
    await site(
      'proxy.conf',
      `server {\n  listen 127.0.0.1:8081;\n  server_name proxy.example;\n  location / { proxy_pass http://app; }\n}\n`,
    );
    await site(
      'outside.conf',
      `server {\n  listen 127.0.0.1:8081;\n  server_name outside.example;\n\n  root ${dir}/elsewhere;\n}\n`,
    );
    await site(
      'shared.conf',
      `server {\n  listen 127.0.0.1:8081;\n  server_name one.example two.example;\n  root ${www}/shared;\n}\n`,
    );
  });

  test('every server block: names, listens, default server, roots, application, certificates', async () => {
    const r = await read();
    assert.equal(r.server, 'nginx');
    assert.equal(r.sites.length, 7);
    const a = byName(r, 'a.example');
    assert.deepEqual(a.names, ['a.example', 'www.a.example']);
    assert.deepEqual(a.at, { file: join(prefix, 'sites', 'a.conf'), line: 2 });
    assert.deepEqual(
      a.listens.map((l) => [l.address, l.port, l.tls]),
      [['127.0.0.1', 8081, false]],
    );
    assert.equal(a.defaultServer, true);
    assert.deepEqual(a.paths, [
      { path: `${www}/a`, directive: 'root', at: { file: join(prefix, 'sites', 'a.conf'), line: 5 } },
    ]);
    assert.equal(a.application, 'static');
    assert.equal(a.movable, true, JSON.stringify(a.refusals));
    const b = byName(r, 'b.example');
    assert.equal(b.defaultServer, false);
    assert.equal(b.movable, true, JSON.stringify(b.refusals));

    const tls = byName(r, 'tls.example');
    assert.deepEqual(
      tls.listens.map((l) => [l.port, l.tls]),
      [[8443, true]],
    );
    assert.equal(tls.defaultServer, true, 'the only server on 127.0.0.1:8443');
    assert.deepEqual(
      tls.certificates.map((c) => [c.certificate, c.key]),
      [[`${dir}/tls.crt`, `${dir}/tls.key`]],
    );
    assert.equal(tls.movable, true, JSON.stringify(tls.refusals));

    const php = byName(r, 'php.example');
    assert.equal(php.application, 'php-fpm');
    const app = php.apps[0]!;
    assert.ok(app.kind === 'php-fpm');
    assert.equal(app.socket, `unix:${dir}/run/shop.sock`);
    assert.deepEqual(app.at, { file: join(prefix, 'sites', 'php.conf'), line: 7 });
    assert.deepEqual(app.pool, {
      name: 'shop',
      file: join(dir, 'pool.d', 'shop.conf'),
      line: 2,
      listen: `${dir}/run/shop.sock`,
      user: 'shop',
      group: 'shopgrp',
    });
    assert.deepEqual([php.user, php.group], ['shop', 'shopgrp']);
    assert.equal(php.movable, true, JSON.stringify(php.refusals));

    const proxy = byName(r, 'proxy.example');
    assert.equal(proxy.application, 'proxy');
    assert.deepEqual(
      proxy.apps.map((x) => x.kind === 'proxy' && x.upstream),
      ['http://app (upstream app: 127.0.0.1:9001)'],
    );
  });

  test('refused: a root outside every declared root, a block shared by two customers, each with file and line', async () => {
    const r = await read();
    const out = byName(r, 'outside.example');
    assert.equal(out.movable, false);
    assert.deepEqual(codes(out), ['PATH_OUTSIDE_ROOTS']);
    assert.deepEqual(out.refusals[0]!.at, { file: join(prefix, 'sites', 'outside.conf'), line: 5 });
    assert.match(out.refusals[0]!.message, /root .*elsewhere is outside every declared root/);
    const shared = byName(r, 'one.example');
    assert.deepEqual(codes(shared), ['SHARED_NAMES']);
    assert.match(shared.refusals[0]!.message, /one\.example, two\.example/);
    // A site whose pool is gone: the socket names no pool file.
    const r2 = await readWebSites({
      kind: 'nginx',
      command: [nginxBin!, '-T', '-c', conf, '-p', prefix],
      poolDirs: [join(dir, 'no-such-pool.d')],
      declaredRoots: [www],
    });
    assert.deepEqual(codes(byName(r2, 'php.example')), ['POOL_NOT_FOUND']);
  });

  test('`ferry agent sites`: the table with each refusal and its file and line; --json the report', async () => {
    const main = join(import.meta.dirname, '..', '..', 'cli', 'main.ts');
    const args = [
      '--import',
      'tsx',
      main,
      'agent',
      'sites',
      '--web-config',
      'nginx',
      '--web-config-command',
      `${nginxBin!} -T -c ${conf} -p ${prefix}`,
      '--php-pool-dir',
      join(dir, 'pool.d'),
      '--site-root',
      www,
    ];
    const run = promisify(execFile);
    const { stdout } = await run(process.execPath, args);
    assert.match(stdout, /^nginx sites, from /);
    assert.match(stdout, /php\.example +127\.0\.0\.1:8081 +php-fpm \(shop:shopgrp\)/);
    assert.ok(
      stdout.includes(
        `outside.example: PATH_OUTSIDE_ROOTS: root ${dir}/elsewhere is outside every declared root (${www}) (${prefix}/sites/outside.conf:5)`,
      ),
      stdout,
    );
    const json = JSON.parse((await run(process.execPath, [...args, '--json'])).stdout) as WebSitesReport;
    assert.equal(json.sites.length, 7);
    assert.deepEqual(json.declaredRoots, [www]);
  });

  test("a syntax error: nginx's own message with the file and line, as WEBCONFIG_COMMAND", async () => {
    const bad = join(prefix, 'bad.conf');
    await writeFile(
      bad,
      `pid ${prefix}/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n  server {\n    root /x\n  }\n}\n`,
    );
    await assert.rejects(
      read(bad),
      (err: unknown) => isFerryError(err, 'WEBCONFIG_COMMAND') && (err as Error).message.includes(`${bad}:7`),
    );
  });
});

describe(
  'Apache 2.4',
  { skip: !apacheBin || !opensslBin ? 'apache2 (apache2ctl) or openssl is not installed' : false },
  () => {
    let root = '';
    // The default command, `apache2ctl -S`, on the test's own folder: Debian's apache2ctl reads
    // $APACHE_CONFDIR/apache2.conf (and envvars, when there is one) instead of /etc/apache2.
    const read = (confDir = root) =>
      readWebSites({
        kind: 'apache',
        env: { PATH: process.env.PATH, APACHE_CONFDIR: confDir, SITE_ROOT: www },
        poolDirs: [join(dir, 'pool.d')],
        declaredRoots: [www],
      });

    const main = (include: string) =>
      [
        `ServerRoot ${root}`,
        `PidFile ${root}/httpd.pid`,
        `Mutex file:${root}`,
        'ServerName localhost',
        `ErrorLog ${root}/error.log`,
        ...['mpm_event', 'authz_core', 'ssl', 'proxy', 'proxy_fcgi', 'proxy_http', 'alias', 'mime'].map(
          (m) => `LoadModule ${m}_module ${MODULES}/mod_${m}.so`,
        ),
        'Listen 127.0.0.1:8082',
        'Listen 127.0.0.1:8444',
        `IncludeOptional ${include}`,
        '',
      ].join('\n');

    before(async () => {
      root = join(dir, 'apache');
      await mkdir(join(root, 'sites'), { recursive: true });
      await writeFile(join(root, 'apache2.conf'), main('sites/*.conf'));
      await writeFile(
        join(root, 'sites', 'sites.conf'),
        [
          '# two name-based sites on one IP',
          '<VirtualHost 127.0.0.1:8082>',
          '  ServerName a.example',
          '  ServerAlias www.a.example',
          '  DocumentRoot "${SITE_ROOT}/a"',
          '</VirtualHost>',
          '<VirtualHost 127.0.0.1:8082>',
          '  ServerName b.example',
          `  DocumentRoot ${www}/b`,
          '</VirtualHost>',
          '<VirtualHost 127.0.0.1:8082>',
          '  ServerName php.example',
          `  DocumentRoot ${www}/php`,
          `  <Directory ${www}/php>`,
          '    Require all granted',
          '  </Directory>',
          '  <FilesMatch "\\.php$">',
          `    SetHandler "proxy:unix:${dir}/run/shop.sock|fcgi://localhost"`,
          '  </FilesMatch>',
          '</VirtualHost>',
          '<VirtualHost 127.0.0.1:8082>',
          '  ServerName proxy.example',
          '  ProxyPass / http://127.0.0.1:9001/',
          '</VirtualHost>',
          '<VirtualHost 127.0.0.1:8082>',
          '  ServerName outside.example',
          `  DocumentRoot ${dir}/elsewhere`,
          '</VirtualHost>',
          '<VirtualHost 127.0.0.1:8082>',
          '  ServerName one.example',
          '  ServerAlias two.example',
          `  DocumentRoot ${www}/shared`,
          '</VirtualHost>',
          '<VirtualHost 127.0.0.1:8444>',
          '  ServerName tls.example',
          `  DocumentRoot ${www}/tls`,
          '  SSLEngine on',
          `  SSLCertificateFile ${dir}/tls.crt`,
          `  SSLCertificateKeyFile ${dir}/tls.key`,
          '</VirtualHost>',
          '',
        ].join('\n'),
      );
    });

    test('every virtual host: names and aliases, listens, default server, roots, PHP-FPM pool, proxy, certificate', async () => {
      const r = await read();
      assert.equal(r.server, 'apache');
      assert.equal(r.sites.length, 7, JSON.stringify(r.sites.map((s) => s.names)));
      const file = join(root, 'sites', 'sites.conf');
      const a = byName(r, 'a.example');
      assert.deepEqual(a.names, ['a.example', 'www.a.example']);
      assert.deepEqual(a.at, { file, line: 2 });
      assert.equal(a.defaultServer, true);
      assert.deepEqual(
        a.listens.map((l) => [l.address, l.port, l.tls]),
        [['127.0.0.1', 8082, false]],
      );
      assert.deepEqual(a.paths, [{ path: `${www}/a`, directive: 'DocumentRoot', at: { file, line: 5 } }]);
      assert.equal(a.movable, true, JSON.stringify(a.refusals));
      assert.equal(byName(r, 'b.example').defaultServer, false);

      const php = byName(r, 'php.example');
      assert.equal(php.application, 'php-fpm');
      assert.deepEqual(
        php.paths.map((p) => p.directive),
        ['DocumentRoot'],
        'the <Directory> of its root adds nothing',
      );
      const app = php.apps[0]!;
      assert.ok(app.kind === 'php-fpm');
      assert.equal(app.socket, `${dir}/run/shop.sock`);
      assert.deepEqual(app.at, { file, line: 18 });
      assert.equal(app.pool?.name, 'shop');
      assert.deepEqual([php.user, php.group], ['shop', 'shopgrp']);
      assert.equal(php.movable, true, JSON.stringify(php.refusals));

      const proxy = byName(r, 'proxy.example');
      assert.deepEqual(
        proxy.apps.map((x) => x.kind === 'proxy' && x.upstream),
        ['http://127.0.0.1:9001/'],
      );

      const tls = byName(r, 'tls.example');
      assert.deepEqual(
        tls.listens.map((l) => [l.port, l.tls]),
        [[8444, true]],
      );
      assert.deepEqual(
        tls.certificates.map((c) => [c.certificate, c.key, c.at.line]),
        [[`${dir}/tls.crt`, `${dir}/tls.key`, 38]],
      );
      assert.equal(tls.movable, true, JSON.stringify(tls.refusals));

      const out = byName(r, 'outside.example');
      assert.deepEqual(codes(out), ['PATH_OUTSIDE_ROOTS']);
      assert.deepEqual(out.refusals[0]!.at, { file, line: 27 });
      assert.deepEqual(codes(byName(r, 'one.example')), ['SHARED_NAMES']);
    });

    test("a syntax error: Apache's own message with the file and line, as WEBCONFIG_COMMAND", async () => {
      const bad = join(root, 'broken');
      await mkdir(bad);
      await writeFile(
        join(root, 'broken.site'),
        '<VirtualHost 127.0.0.1:8082>\n  ServerName x.example\n  DocumentRoo /x\n</VirtualHost>\n',
      );
      await writeFile(join(bad, 'apache2.conf'), main('broken.site'));
      await assert.rejects(
        read(bad),
        (err: unknown) =>
          isFerryError(err, 'WEBCONFIG_COMMAND') && /line 3 of .*broken\.site/.test((err as Error).message),
      );
    });
  },
);

describe(
  'the agent API',
  { skip: !nginxBin || !opensslBin ? 'nginx or openssl is not installed' : false },
  () => {
    const TOKEN = 'webconfig-test-token-0123456789';

    test('GET /v1/web-sites through HttpHostDriver; without --web-config, WEBCONFIG_NONE; a broken config answers an error and the agent keeps serving', async () => {
      const prefix = join(dir, 'nginx-api');
      await mkdir(join(prefix), { recursive: true });
      const conf = join(prefix, 'nginx.conf');
      const good = `pid ${prefix}/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n  server {\n    listen 127.0.0.1:8085;\n    server_name api.example;\n    root ${www}/a;\n  }\n}\n`;
      await writeFile(conf, good);
      const mk = (webConfig: boolean) =>
        new HostAgent({
          id: 'web',
          dataDir: join(dir, `agent-${String(webConfig)}`),
          sharedIps: ['127.0.63.1'],
          httpPort: 0,
          addresses: new LoopbackAddresses(),
          web: { kind: 'builtin' },
          ...(webConfig
            ? {
                webConfig: {
                  kind: 'nginx' as const,
                  command: [nginxBin!, '-T', '-c', conf, '-p', prefix],
                  poolDirs: [],
                  declaredRoots: [www],
                },
              }
            : {}),
        });
      for (const withConfig of [true, false]) {
        const agent = mk(withConfig);
        const app = buildAgentServer(agent, { token: TOKEN });
        await app.listen({ host: '127.0.63.1', port: 0 });
        try {
          const url = `http://127.0.63.1:${(app.server.address() as AddressInfo).port}`;
          const client = new HttpHostDriver({ id: 'web', url, token: TOKEN, attempts: 1 });
          if (!withConfig) {
            await assert.rejects(client.webSites(), (err: unknown) => isFerryError(err, 'WEBCONFIG_NONE'));
            continue;
          }
          const r = await client.webSites();
          assert.deepEqual(
            r.sites.map((s) => [s.names, s.movable]),
            [[['api.example'], true]],
          );
          // A token is needed.
          const anon = await fetch(`${url}/v1/web-sites`);
          assert.equal(anon.status, 401);
          await writeFile(conf, good.replace('root', 'root /x /y;\n    rooot'));
          await assert.rejects(client.webSites(), (err: unknown) => isFerryError(err, 'WEBCONFIG_COMMAND'));
          assert.ok(await client.info(), 'the agent still answers');
        } finally {
          await app.close();
        }
      }
    });
  },
);
