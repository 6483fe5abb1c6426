/**
 * The Apache 2.4 flavor against Debian's real apache2 (mpm_event, proxy_fcgi to a real php8.2-fpm
 * pool), both started by the test on a ServerRoot of its own in a temp folder (never the system's
 * configuration; `apache2ctl` is pointed there with `APACHE_CONFDIR`). A tiny node proxy stands in
 * for the gate. Skipped, with the reason, when a package is missing (`.ci/run` installs them).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { findBinary } from '../../../test/e2e/helpers.js';
import { freePort } from '../../../test/ports.js';
import { isFerryError } from '../../common/errors.js';
import { waitFor } from '../../common/time.js';
import { readWebSites, type WebSite } from '../webconfig/index.js';
import { ApacheFlavor, apacheModulesNeeded } from './apache.js';
import type { SiteConfigFile, WebStackLayout } from './flavor.js';
import { WebStack } from './stack.js';
import type { PhpFpmLayout } from './target-check.js';
import { selfSignedCert } from '../../../test/certs.js';

const apache2 = findBinary('apache2');
const apachectl = findBinary('apache2ctl');
const fpm = findBinary('php-fpm8.2');
const openssl = findBinary('openssl');
const MODULES = '/usr/lib/apache2/modules';

const layoutOf = (over: Partial<WebStackLayout> = {}): WebStackLayout => ({
  domain: 'shop.example',
  includeDir: '/etc/apache2/ferry',
  gate: { address: '127.0.0.1', port: 7001 },
  backend: { address: '127.0.0.1', httpPort: 7101, httpsPort: 7102 },
  ...over,
});

const site = (names: string[]): WebSite => ({
  server: 'apache',
  at: { file: '/etc/apache2/sites-enabled/shop.conf', line: 1 },
  names,
  defaultServer: false,
  listens: [],
  paths: [],
  application: 'static',
  apps: [],
  certificates: [],
  user: null,
  group: null,
  movable: true,
  refusals: [],
});

const fileOf = (path: string, text: string): SiteConfigFile => {
  const lines = text.split('\n');
  const blocks: SiteConfigFile['blocks'] = [];
  lines.forEach((l, i) => {
    if (/^\s*<VirtualHost/i.test(l))
      blocks.push({
        start: i + 1,
        end: lines.findIndex((x, j) => j > i && /^\s*<\/VirtualHost>/i.test(x)) + 1,
      });
  });
  return { path, text, blocks };
};

describe('generated front and backend (text)', () => {
  const text = [
    '# two blocks of one site, and a neighbour between them',
    '<VirtualHost 192.0.2.10:80 \\',
    '             [2001:db8::10]:80>',
    '  ServerName shop.example',
    '  ServerAlias www.shop.example',
    '  DocumentRoot /var/www/shop',
    '  LimitRequestBody 1048576',
    '  RewriteEngine on',
    '  RewriteRule ^/(.*)$ https://shop.example/$1 [R=301,L]',
    '</VirtualHost>',
    '<IfModule mod_ssl.c>',
    '<VirtualHost *:443>',
    '  ServerName shop.example',
    '  DocumentRoot /var/www/shop',
    '  <IfModule mod_ssl.c>',
    '    SSLEngine on',
    '  </IfModule>',
    '  SSLCertificateFile /etc/ssl/shop.crt',
    '  SSLCertificateKeyFile /etc/ssl/private/shop.key',
    '  SSLProxyEngine on',
    '  <FilesMatch "\\.php$">',
    '    SetHandler "proxy:unix:/run/php/php8.2-fpm-shop.sock|fcgi://localhost"',
    '  </FilesMatch>',
    '  <IfModule mod_headers.c>',
    '    Header always set Strict-Transport-Security "max-age=63072000"',
    '  </IfModule>',
    '  <Location /app>',
    '    ProxyPass http://127.0.0.1:3000/',
    '  </Location>',
    '</VirtualHost>',
    '</IfModule>',
    '',
  ].join('\n');
  const file = fileOf('/etc/apache2/sites-enabled/shop.conf', text);

  test('front: same addresses (a named one moved to the layout address), names, TLS, body limit; only ProxyPass to the gate', () => {
    const flavor = new ApacheFlavor();
    const out = flavor.frontAndBackend(
      site(['shop.example', 'www.shop.example']),
      [file],
      layoutOf({ listenAddress: '198.51.100.20' }),
    );
    assert.deepEqual(
      out.files.map((f) => f.name),
      ['zz-ferry-web-shop.example.front.conf', 'ferry-web-shop.example.backend.conf'],
      'the front of a site that answered no unnamed request sorts after the other sites',
    );
    const asDefault = flavor.frontAndBackend(
      { ...site(['shop.example']), defaultServer: true },
      [file],
      layoutOf(),
    );
    assert.equal(
      asDefault.files[0]!.name,
      '00-ferry-web-shop.example.front.conf',
      "the default site's front sorts before the others (and Debian's 000-default.conf)",
    );
    const front = out.files[0]!.text;
    const vhosts = front.split('<VirtualHost ').slice(1);
    assert.equal(vhosts.length, 2);
    assert.match(
      vhosts[0]!,
      /^198\.51\.100\.20:80 198\.51\.100\.20:80>/,
      'both named addresses become the target IP',
    );
    assert.match(vhosts[1]!, /^\*:443>/, 'a wildcard stays');
    for (const [v, scheme] of [
      [vhosts[0]!, 'http'],
      [vhosts[1]!, 'https'],
    ] as const) {
      assert.match(v, /\n {4}ServerName shop\.example\n/);
      assert.match(v, /\n {4}ProxyPreserveHost On\n/);
      assert.match(v, /\n {4}ProxyPass "\/" "http:\/\/127\.0\.0\.1:7001\/" retry=0/);
      assert.match(v, /\n {4}ProxyPassReverse "\/" "http:\/\/127\.0\.0\.1:7001\/"\n/);
      assert.match(v, /\n {4}RequestHeader set X-Ferry-Client "expr=%\{REMOTE_ADDR\}"\n/);
      assert.match(v, new RegExp(`\\n {4}RequestHeader set X-Ferry-Scheme "${scheme}"\\n`));
      assert.doesNotMatch(
        v,
        /Rewrite|DocumentRoot|SetHandler|Header always|SSLProxy/,
        'nothing of the site runs in the front',
      );
    }
    assert.match(vhosts[0]!, /ServerAlias www\.shop\.example\n {4}LimitRequestBody 1048576\n/);
    assert.doesNotMatch(vhosts[0]!, /SSL/);
    assert.match(
      vhosts[1]!,
      /SSLEngine on\n {4}SSLCertificateFile \/etc\/ssl\/shop\.crt\n {4}SSLCertificateKeyFile \/etc\/ssl\/private\/shop\.key\n/,
    );
  });

  test('backend: the blocks as written, but their <VirtualHost> on the loopback ports, and the Listen lines', () => {
    const flavor = new ApacheFlavor();
    const backend = flavor.frontAndBackend(site(['shop.example']), [file], layoutOf()).files[1]!.text;
    assert.match(backend, /^Listen 127\.0\.0\.1:7101$/m);
    assert.match(backend, /^Listen 127\.0\.0\.1:7102 https$/m);
    const lines = text.split('\n');
    const expected = [
      ['<VirtualHost 127.0.0.1:7101>', ...lines.slice(3, 10)],
      ['<VirtualHost 127.0.0.1:7102>', ...lines.slice(12, 30)],
    ];
    for (const e of expected) assert.ok(backend.includes(e.join('\n')), `${e.join('\n')}\n---\n${backend}`);
  });

  test('plain: the blocks with named addresses moved, wildcards kept', () => {
    const plain = new ApacheFlavor().plain(
      site(['shop.example']),
      [file],
      layoutOf({ listenAddress: '2001:db8::20' }),
    );
    assert.equal(plain.files.length, 1);
    assert.match(
      plain.files[0]!.text,
      /<VirtualHost \[2001:db8::20\]:80 \[2001:db8::20\]:80>\n {2}ServerName shop\.example/,
    );
    assert.match(plain.files[0]!.text, /<VirtualHost \*:443>\n {2}ServerName/);
  });

  test('a missing apachectl or reload command: the code and "not found", never a crash', async () => {
    const gone = new ApacheFlavor({ command: ['/nonexistent/apache2ctl'] });
    await assert.rejects(
      gone.check(),
      (err: unknown) =>
        isFerryError(err, 'APACHE_CONFIG_INVALID') &&
        /nonexistent\/apache2ctl configtest: not found/.test((err as Error).message),
    );
    const reload = new ApacheFlavor({ reloadCommand: ['/nonexistent/systemctl', 'reload', 'apache2'] });
    await assert.rejects(
      reload.reload(),
      (err: unknown) =>
        isFerryError(err, 'APACHE_RELOAD_FAILED') &&
        /systemctl reload apache2: not found/.test((err as Error).message),
    );
  });

  test('modules: what the directives and proxy URLs use (not inside <IfModule>), and the front', () => {
    const needs = apacheModulesNeeded([file]);
    const by = new Map(needs.map((n) => [n.module, n.neededBy]));
    assert.deepEqual(
      [...by.keys()].sort(),
      [
        'headers_module',
        'proxy_fcgi_module',
        'proxy_http_module',
        'proxy_module',
        'rewrite_module',
        'ssl_module',
      ].sort(),
    );
    assert.equal(by.get('rewrite_module'), 'RewriteEngine at /etc/apache2/sites-enabled/shop.conf:8');
    assert.equal(by.get('proxy_fcgi_module'), 'SetHandler at /etc/apache2/sites-enabled/shop.conf:22');
    assert.equal(by.get('ssl_module'), 'SSLCertificateFile at /etc/apache2/sites-enabled/shop.conf:18');
    assert.equal(by.get('headers_module'), 'the Ferry front of /etc/apache2/sites-enabled/shop.conf:2');
  });
});

/** GET `path` with Host `host` from 127.0.0.9 (or `from`), over HTTP or HTTPS (SNI = host, verified against `ca`). */
function get(
  opts: { address: string; port: number; tls?: { ca: Buffer }; from?: string },
  host: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; fingerprint?: string }> {
  return new Promise((resolve, reject) => {
    const common = {
      host: opts.address,
      port: opts.port,
      path,
      localAddress: opts.from ?? '127.0.0.9',
      headers: { host, connection: 'close', ...headers },
      agent: false as const,
    };
    const done = (res: import('node:http').IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const peer = (res.socket as import('node:tls').TLSSocket).getPeerCertificate?.();
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).toString(),
          ...(peer?.fingerprint256 ? { fingerprint: peer.fingerprint256 } : {}),
        });
      });
      res.on('error', reject);
    };
    const req = opts.tls
      ? httpsRequest({ ...common, servername: host, ca: opts.tls.ca }, done)
      : httpRequest(common, done);
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${host}${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** The gate's stand-in: forwards to the backend's plain or TLS port as X-Ferry-Scheme says, and notes the headers. */
function standInGate(backend: { address: string; httpPort: number; httpsPort: number }) {
  const seen: Array<{ client: string | undefined; scheme: string | undefined; host: string | undefined }> =
    [];
  const server: Server = createServer((req, res) => {
    const client = req.headers['x-ferry-client'] as string | undefined;
    const scheme = req.headers['x-ferry-scheme'] as string | undefined;
    seen.push({ client, scheme, host: req.headers.host });
    const headers = { ...req.headers };
    delete headers['x-ferry-client'];
    delete headers['x-ferry-scheme'];
    const tls = scheme === 'https';
    const onRes = (up: import('node:http').IncomingMessage) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    };
    const opts = {
      host: backend.address,
      port: tls ? backend.httpsPort : backend.httpPort,
      method: req.method,
      path: req.url,
      headers,
    };
    const up = tls
      ? httpsRequest(
          { ...opts, servername: (req.headers.host ?? '').replace(/:\d+$/, ''), rejectUnauthorized: false },
          onRes,
        )
      : httpRequest(opts, onRes);
    up.on('error', () => {
      res.writeHead(502);
      res.end('gate: backend unreachable');
    });
    req.pipe(up);
  });
  return { server, seen };
}

describe(
  'real Apache 2.4 (mpm_event, proxy_fcgi to php8.2-fpm)',
  {
    skip:
      !apache2 || !apachectl || !fpm || !openssl
        ? 'apache2, php8.2-fpm or openssl is not installed'
        : process.getuid?.() !== 0
          ? 'runs Apache and PHP-FPM workers as www-data: needs root'
          : false,
  },
  () => {
    const SHARED = '127.0.74.1';
    let dir = '';
    let root = '';
    let www = '';
    let ca: Buffer;
    let shopFingerprint = '';
    let ports = { http: 0, https: 0, gate: 0, backHttp: 0, backHttps: 0 };
    const children: ChildProcess[] = [];
    let gate: ReturnType<typeof standInGate> | undefined;
    let stats: Socket | undefined;
    let flavor: ApacheFlavor;
    const env = () => ({ PATH: process.env.PATH, APACHE_CONFDIR: root });
    /** A web stack on `f` (only its target check is used: it writes nothing). */
    const stackOn = (f: ApacheFlavor, phpLayout?: PhpFpmLayout) =>
      new WebStack({
        flavor: f,
        webConfig: { kind: 'apache', env: env() },
        dataDir: join(dir, 'agent'),
        includeDir: join(dir, 'ferry-include'),
        gate: { address: '127.0.0.1', port: ports.gate },
        sharedIp: SHARED,
        ...(phpLayout ? { phpLayout } : {}),
      });

    const sslCert = (name: string, names: string[]) => {
      const ext = join(dir, `${name}.ext`);
      writeFileSync(ext, `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}\n`);
      const o = (args: string[]) => execFileSync(openssl!, args, { stdio: 'ignore' });
      o([
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-subj',
        `/CN=${names[0]}`,
        '-keyout',
        join(dir, `${name}.key`),
        '-out',
        join(dir, `${name}.csr`),
      ]);
      o([
        'x509',
        '-req',
        '-in',
        join(dir, `${name}.csr`),
        '-CA',
        join(dir, 'ca.crt'),
        '-CAkey',
        join(dir, 'ca.key'),
        '-CAcreateserial',
        '-days',
        '2',
        '-extfile',
        ext,
        '-out',
        join(dir, `${name}.crt`),
      ]);
    };

    const vhost = (port: number, name: string, body: string[], tls: boolean) => [
      `<VirtualHost ${SHARED}:${port}>`,
      `  ServerName ${name}`,
      ...(name === 'shop.example' ? ['  ServerAlias www.shop.example'] : []),
      `  DocumentRoot ${www}/${name}`,
      ...(tls
        ? [
            `  SSLEngine on`,
            `  SSLCertificateFile ${dir}/${name}.crt`,
            `  SSLCertificateKeyFile ${dir}/${name}.key`,
          ]
        : []),
      `  <Directory ${www}/${name}>`,
      '    Require all granted',
      '  </Directory>',
      ...body,
      '</VirtualHost>',
    ];

    const shopBody = () => [
      '  DirectoryIndex index.php',
      '  RewriteEngine on',
      '  RewriteRule ^/old$ /static.txt [PT]',
      '  <FilesMatch "\\.php$">',
      `    SetHandler "proxy:unix:${dir}/run/php8.2-fpm-shop.sock|fcgi://localhost"`,
      '  </FilesMatch>',
    ];

    const mainConf = (serverRoot: string, modules: string[], includes: string[]) =>
      [
        `ServerRoot ${serverRoot}`,
        `PidFile ${serverRoot}/httpd.pid`,
        `Mutex file:${serverRoot}`,
        'ServerName localhost',
        `ErrorLog ${serverRoot}/error.log`,
        'LogLevel warn',
        'TypesConfig /etc/mime.types',
        'User www-data',
        'Group www-data',
        ...modules.map((m) => `LoadModule ${m}_module ${MODULES}/mod_${m}.so`),
        `SSLSessionCache shmcb:${serverRoot}/ssl_scache(512000)`,
        `Listen ${SHARED}:${ports.http}`,
        `Listen ${SHARED}:${ports.https} https`,
        ...includes.map((i) => `IncludeOptional ${i}`),
        '',
      ].join('\n');

    const FULL = [
      'mpm_event',
      'authz_core',
      'authz_host',
      'dir',
      'mime',
      'alias',
      'rewrite',
      'ssl',
      'socache_shmcb',
      'proxy',
      'proxy_fcgi',
      'proxy_http',
      'headers',
    ];

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'ferry-apache-'));
      chmodSync(dir, 0o755);
      root = join(dir, 'apache');
      www = join(dir, 'www');
      for (const d of [
        root,
        join(root, 'sites'),
        join(root, 'ferry'),
        join(dir, 'run'),
        join(dir, 'pool.d'),
        join(www, 'shop.example', 'data'),
        join(www, 'other.example'),
      ])
        mkdirSync(d, { recursive: true });
      chownSync(join(www, 'shop.example', 'data'), 33, 33);
      ports = {
        http: await freePort(SHARED),
        https: await freePort(SHARED),
        gate: await freePort(),
        backHttp: await freePort(),
        backHttps: await freePort(),
      };
      selfSignedCert({
        keyFile: join(dir, 'ca.key'),
        certFile: join(dir, 'ca.crt'),
        cn: 'Ferry test CA',
        openssl: openssl!,
      });
      ca = readFileSync(join(dir, 'ca.crt'));
      sslCert('shop.example', ['shop.example', 'www.shop.example']);
      sslCert('other.example', ['other.example']);
      shopFingerprint = new X509Certificate(readFileSync(join(dir, 'shop.example.crt'))).fingerprint256;

      writeFileSync(
        join(www, 'shop.example', 'index.php'),
        [
          '<?php',
          "file_put_contents(__DIR__ . '/data/writes.txt', ($_GET['w'] ?? '-') . \"\\n\", FILE_APPEND | LOCK_EX);",
          "header('Content-Type: text/plain');",
          "echo 'shop php https=', $_SERVER['HTTPS'] ?? 'off', ' host=', $_SERVER['HTTP_HOST'], ' user=', posix_getpwuid(posix_geteuid())['name'], \"\\n\";",
          '',
        ].join('\n'),
      );
      writeFileSync(join(www, 'shop.example', 'static.txt'), 'the shop, static\n');
      writeFileSync(join(www, 'other.example', 'index.html'), 'the other site\n');
      writeFileSync(
        join(dir, 'fpm.conf'),
        [
          '[global]',
          `pid = ${dir}/run/fpm.pid`,
          `error_log = ${dir}/fpm.log`,
          `include = ${dir}/pool.d/*.conf`,
          '',
        ].join('\n'),
      );
      writeFileSync(
        join(dir, 'pool.d', 'shop.conf'),
        [
          '[shop]',
          'user = www-data',
          'group = www-data',
          `listen = ${dir}/run/php8.2-fpm-shop.sock`,
          'listen.owner = www-data',
          'listen.group = www-data',
          'pm = ondemand',
          'pm.max_children = 4',
          '',
        ].join('\n'),
      );
      // other.example first: it stays the default server of both ports whatever happens to shop.
      writeFileSync(
        join(root, 'sites', 'a-other.conf'),
        [
          ...vhost(ports.http, 'other.example', [], false),
          ...vhost(ports.https, 'other.example', [], true),
          '',
        ].join('\n'),
      );
      writeFileSync(
        join(root, 'sites', 'shop.conf'),
        [
          '# the shop, plain and TLS',
          ...vhost(ports.http, 'shop.example', shopBody(), false),
          '',
          ...vhost(ports.https, 'shop.example', shopBody(), true),
          '',
        ].join('\n'),
      );
      writeFileSync(
        join(root, 'apache2.conf'),
        mainConf(root, FULL, [`${root}/sites/*.conf`, `${root}/ferry/*.conf`]),
      );
      writeFileSync(
        join(root, 'envvars'),
        `export APACHE_RUN_DIR=${dir}/run\nexport APACHE_LOCK_DIR=${dir}/run\n`,
      );

      const start = (cmd: string, args: string[], name: string) => {
        const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: env() });
        let err = '';
        c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
        c.on('exit', (code) => {
          if (code) console.error(`${name} exited ${code}: ${err}`);
        });
        children.push(c);
      };
      start(fpm!, ['-F', '-y', join(dir, 'fpm.conf')], 'php-fpm');
      start(apache2!, ['-d', root, '-DFOREGROUND'], 'apache2');
      flavor = new ApacheFlavor({ env: env() });
      const up = await waitFor(
        () =>
          get({ address: SHARED, port: ports.http }, 'other.example', '/').then(
            (r) => r.status === 200,
            () => false,
          ),
        15_000,
        100,
      );
      assert.ok(
        up,
        `apache did not start: ${(() => {
          try {
            return readFileSync(join(root, 'error.log'), 'utf8');
          } catch {
            return '';
          }
        })()}`,
      );
      assert.ok(
        await waitFor(
          async () => {
            try {
              readFileSync(join(dir, 'run', 'fpm.pid'));
              return true;
            } catch {
              return false;
            }
          },
          10_000,
          100,
        ),
        'php-fpm did not start',
      );
    });

    after(async () => {
      gate?.server.close();
      stats?.close();
      for (const c of children) {
        if (c.exitCode === null) {
          const gone = new Promise((r) => c.once('exit', r));
          c.kill('SIGTERM');
          await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
          if (c.exitCode === null) c.kill('SIGKILL');
        }
      }
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    /** The pages a user relies on, over HTTP and HTTPS (SNI), each PHP request writing `w`. */
    const pages = async (tag: string) => {
      const http = { address: SHARED, port: ports.http };
      const https = { address: SHARED, port: ports.https, tls: { ca } };
      const out: Record<string, string> = {};
      for (const [name, at] of [
        ['http', http],
        ['https', https],
      ] as const) {
        for (const path of ['/static.txt', '/old', `/?w=${tag}-${name}`]) {
          const r = await get(at, 'shop.example', path);
          assert.equal(r.status, 200, `${name} ${path}: ${r.body}`);
          if (name === 'https')
            assert.equal(r.fingerprint, shopFingerprint, "the shop's own certificate, chosen by SNI");
          out[`${name} ${path.replace(/\?.*/, '?')}`] = r.body;
        }
        const other = await get(at, 'other.example', '/');
        assert.equal(other.body, 'the other site\n');
      }
      return out;
    };

    const shopFiles = (): SiteConfigFile[] => [
      fileOf(join(root, 'sites', 'shop.conf'), readFileSync(join(root, 'sites', 'shop.conf'), 'utf8')),
    ];

    /** The shop as the reader sees it: its two <VirtualHost> blocks merged into one site. */
    const shopSite = async (): Promise<WebSite> => {
      const r = await readWebSites({
        kind: 'apache',
        env: env(),
        poolDirs: [join(dir, 'pool.d')],
        declaredRoots: [www],
      });
      const blocks = r.sites.filter((s) => s.names[0] === 'shop.example');
      assert.equal(blocks.length, 2);
      return {
        ...blocks[0]!,
        listens: blocks.flatMap((b) => b.listens),
        certificates: blocks.flatMap((b) => b.certificates),
      };
    };

    test('gated: front → gate → backend serves the same pages over HTTP and HTTPS (SNI), PHP writes; plain again after', async () => {
      const before = await pages('before');
      assert.equal(before['http /?'], 'shop php https=off host=shop.example user=www-data\n');
      assert.equal(before['https /?'], 'shop php https=on host=shop.example user=www-data\n');
      assert.equal(before['http /old'], 'the shop, static\n');

      const s = await shopSite();
      const files = shopFiles();
      const here = stackOn(flavor);
      await here.assertCanHost('shop.example', here.needsOf(s, files));

      gate = standInGate({ address: '127.0.0.1', httpPort: ports.backHttp, httpsPort: ports.backHttps });
      await new Promise<void>((r) => gate!.server.listen(ports.gate, '127.0.0.1', r));
      // The agent's per-request counters listen here (syslog lines over loopback UDP).
      stats = createSocket('udp4');
      const lines: string[] = [];
      stats.on('message', (m) => lines.push(m.toString()));
      await new Promise<void>((r) => stats!.bind(0, '127.0.0.1', r));
      const layout = layoutOf({
        includeDir: join(root, 'ferry'),
        gate: { address: '127.0.0.1', port: ports.gate },
        backend: { address: '127.0.0.1', httpPort: ports.backHttp, httpsPort: ports.backHttps },
        statsPort: stats.address().port,
      });
      const generated = flavor.frontAndBackend(s, files, layout);
      for (const f of generated.files) writeFileSync(join(layout.includeDir, f.name), f.text);
      // The web stack moves the original file aside; the test does it by hand.
      renameSync(join(root, 'sites', 'shop.conf'), join(dir, 'shop.conf.orig'));
      await flavor.check();
      await flavor.reload();
      assert.ok(
        await waitFor(
          async () => {
            const n = gate!.seen.length;
            await get(
              { address: SHARED, port: ports.http, from: '127.0.0.8' },
              'shop.example',
              '/static.txt',
            ).catch(() => null);
            return gate!.seen.length > n;
          },
          10_000,
          100,
        ),
        'the front did not take over after the graceful reload',
      );
      gate.seen.length = 0;

      lines.length = 0;
      const through = await pages('gated');
      assert.deepEqual(through, before, 'the same pages through the front, the gate and the backend');
      assert.equal(gate.seen.length, 6);
      // (The lines of the polling above come from 127.0.0.8.)
      const logged = () =>
        lines.map((l) => /ferry: (.*)$/.exec(l.trim())?.[1]).filter((l) => !l?.includes(' 127.0.0.8 '));
      assert.ok(
        await waitFor(() => logged().length >= 6, 5_000),
        `the front logs each request to the agent: ${JSON.stringify(lines)}`,
      );
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(
        logged(),
        Array.from({ length: 6 }, () => 'shop.example 127.0.0.9 GET 200'),
      );
      assert.deepEqual(
        [...new Set(gate.seen.map((x) => `${x.client} ${x.scheme} ${x.host}`))].sort(),
        ['127.0.0.9 http shop.example', '127.0.0.9 https shop.example'],
        'the gate sees the real client, the scheme and the Host as sent',
      );
      // A client cannot choose what the gate is told.
      gate.seen.length = 0;
      await get({ address: SHARED, port: ports.https, tls: { ca } }, 'shop.example', '/static.txt', {
        'x-ferry-client': '203.0.113.66',
        'x-ferry-scheme': 'http',
      });
      assert.deepEqual(
        gate.seen.map((x) => `${x.client} ${x.scheme}`),
        ['127.0.0.9 https'],
      );

      // Completion: the plain vhost again (here on the same address), one more reload.
      for (const f of generated.files) rmSync(join(layout.includeDir, f.name));
      const plain = flavor.plain(s, files, layout);
      for (const f of plain.files) writeFileSync(join(layout.includeDir, f.name), f.text);
      await flavor.check();
      await flavor.reload();
      assert.ok(
        await waitFor(
          async () => {
            gate!.seen.length = 0;
            const r = await get({ address: SHARED, port: ports.http }, 'shop.example', '/static.txt').catch(
              () => null,
            );
            return r?.status === 200 && gate!.seen.length === 0;
          },
          10_000,
          100,
        ),
        'the plain vhost did not take over',
      );
      const afterPlain = await pages('plain');
      assert.deepEqual(afterPlain, before);
      assert.equal(gate.seen.length, 0, 'no request through the gate any more');
      for (const f of plain.files) rmSync(join(layout.includeDir, f.name));
      renameSync(join(dir, 'shop.conf.orig'), join(root, 'sites', 'shop.conf'));
      await flavor.reload();

      assert.deepEqual(
        readFileSync(join(www, 'shop.example', 'data', 'writes.txt'), 'utf8')
          .trim()
          .split('\n'),
        ['before-http', 'before-https', 'gated-http', 'gated-https', 'plain-http', 'plain-https'],
        'every PHP write once, by the pool',
      );
    });

    test("a generated config Apache refuses: configtest's own message names the file and line; the running server keeps serving", async () => {
      const s = await shopSite();
      const layout = layoutOf({
        includeDir: join(root, 'ferry'),
        gate: { address: '127.0.0.1', port: ports.gate },
        backend: { address: '127.0.0.1', httpPort: ports.backHttp, httpsPort: ports.backHttps },
      });
      // A target where the certificate was not written: the front names a file that is not there.
      const files = shopFiles().map((f) => ({
        ...f,
        text: f.text.replaceAll(`${dir}/shop.example.crt`, `${dir}/missing.crt`),
      }));
      const generated = flavor.frontAndBackend(s, files, layout);
      const front = join(layout.includeDir, generated.files[0]!.name);
      writeFileSync(front, generated.files[0]!.text);
      try {
        await assert.rejects(flavor.check(), (err: unknown) => {
          assert.ok(isFerryError(err, 'APACHE_CONFIG_INVALID'), String(err));
          const line = generated.files[0]!.text.split('\n').findIndex((l) => l.includes('missing.crt')) + 1;
          assert.match(err.message, new RegExp(`line ${line} of ${front.replace(/[.]/g, '\\.')}`));
          assert.match(err.message, /missing\.crt/);
          return true;
        });
        await assert.rejects(
          flavor.reload(),
          (err: unknown) =>
            isFerryError(err, 'APACHE_RELOAD_FAILED') && /missing\.crt/.test((err as Error).message),
        );
      } finally {
        rmSync(front);
      }
      const r = await get({ address: SHARED, port: ports.https, tls: { ca } }, 'shop.example', '/static.txt');
      assert.equal(r.body, 'the shop, static\n', 'the refused config was never loaded');
    });

    test('a target without the modules or the PHP-FPM version: TARGET_LACKS naming each', async () => {
      const s = await shopSite();
      const files = shopFiles();
      const needs = stackOn(flavor).needsOf(s, files);
      assert.equal(needs.server, 'apache');
      await stackOn(flavor).assertCanHost('shop.example', needs); // this server has all the site needs

      const bare = join(dir, 'bare');
      mkdirSync(bare, { recursive: true });
      writeFileSync(
        join(bare, 'apache2.conf'),
        mainConf(
          bare,
          ['mpm_event', 'authz_core', 'dir', 'mime', 'ssl', 'socache_shmcb', 'proxy', 'alias'],
          [],
        ),
      );
      const phpRoot = join(dir, 'php');
      mkdirSync(join(phpRoot, '7.4', 'fpm', 'pool.d'), { recursive: true });
      const target = stackOn(new ApacheFlavor({ env: { PATH: process.env.PATH, APACHE_CONFDIR: bare } }), {
        phpRoot,
      });
      await assert.rejects(target.assertCanHost('shop.example', needs), (err: unknown) => {
        assert.ok(isFerryError(err, 'TARGET_LACKS'), String(err));
        assert.match(err.message, /shop\.example/);
        const lacking = [...err.message.matchAll(/Apache module (\w+)|PHP-FPM ([\d.]+)/g)].map((m) => m[0]);
        assert.deepEqual(lacking.sort(), [
          'Apache module headers_module',
          'Apache module proxy_fcgi_module',
          'Apache module proxy_http_module',
          'Apache module rewrite_module',
          'PHP-FPM 8.2',
        ]);
        assert.match(
          err.message,
          new RegExp(
            `Apache module proxy_fcgi_module \\(SetHandler at ${join(root, 'sites', 'shop.conf')}:13\\)`,
          ),
        );
        assert.match(err.message, /PHP-FPM 8\.2 \(pool \[shop\] of .*pool\.d\/shop\.conf\)/);
        return true;
      });
      // A site of the other kind is refused on the kind alone.
      await assert.rejects(
        target.assertCanHost('shop.example', { server: 'nginx', requires: [] }),
        (err: unknown) =>
          isFerryError(err, 'TARGET_LACKS') &&
          /runs on nginx, this server's web server is apache/.test(err.message),
      );
    });
  },
);
