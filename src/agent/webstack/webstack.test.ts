/**
 * A real nginx + php8.2-fpm site moved between two hosting servers, each a private mount
 * namespace (overlays on /etc, /var and /srv, a tmpfs on /run; its own pid namespace) running its own nginx, PHP-FPM
 * and `ferry agent`, driven through the agents' API. Skipped, with the reason, when nginx,
 * php-fpm8.2, openssl or unshare is missing or the test does not run as root.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HttpHostDriver } from '../client.js';
import { findBinary } from '../../../test/e2e/helpers.js';
import { freePort } from '../../../test/ports.js';
import type { WebSiteBundle } from './index.js';
import { selfSignedCert } from '../../../test/certs.js';

const TOKEN = 'webstack-test-token-0123456789';
const ORIGIN_IP = '127.0.64.1';
const TARGET_IP = '127.0.64.2';
const DOMAIN = 'shop.example';
const ROOT = join(import.meta.dirname, '..', '..', '..');

const missing = [
  ['nginx', findBinary('nginx')],
  ['php-fpm8.2', findBinary('php-fpm8.2')],
  ['openssl', findBinary('openssl')],
  ['unshare', findBinary('unshare')],
  ['nsenter', findBinary('nsenter')],
]
  .filter(([, b]) => !b)
  .map(([n]) => n);
const skip =
  process.getuid?.() !== 0
    ? 'needs root (mount namespaces, useradd)'
    : missing.length
      ? `not installed: ${missing.join(', ')}`
      : false;

/** The site's nginx file: the shop (PHP, TLS, an alias) and another customer's static site after it. */
const SITE_CONF = `# shop and other, as a provider writes them
server {
    listen ${ORIGIN_IP}:80;
    listen ${ORIGIN_IP}:443 ssl;
    server_name shop.example www.shop.example;
    root /var/www/shop/public;
    index index.php;
    ssl_certificate /etc/ssl/ferrytest/shop.crt;
    ssl_certificate_key /etc/ssl/private/shop.key;
    client_max_body_size 20m;
    location /media/ { alias /var/www/shop/media/; }
    location ~ \\.php$ {
        include snippets/fastcgi-php.conf;
        fastcgi_pass unix:/run/php/shop.sock;
    }
}

server {
    listen ${ORIGIN_IP}:80;
    server_name other.example;
    root /srv/other;
}

server {
    listen ${ORIGIN_IP}:80;
    server_name outside.example;
    root /opt/outside;
}
`;

const POOL = `[shop]
user = shop
group = shop
listen = /run/php/shop.sock
listen.owner = www-data
listen.group = www-data
pm = ondemand
pm.max_children = 2
`;

const CRONTAB = '*/5 * * * * php /var/www/shop/public/index.php > /dev/null\n';

interface Server {
  name: string;
  ip: string;
  child: ChildProcess;
  driver: HttpHostDriver;
  work: string;
  /** What its processes printed (the agent's log). */
  output: () => string;
}

let work = '';

/** Run a command inside a server's mount namespace. */
function inNs(s: Server, cmd: string): string {
  return execFileSync('nsenter', ['-t', String(s.child.pid), '-m', 'sh', '-c', cmd], {
    encoding: 'utf8',
  });
}

async function startServer(name: string, ip: string, setup: string): Promise<Server> {
  const dir = join(work, name);
  const port = await freePort();
  const appPort = await freePort();
  const script = `set -e
for d in etc var srv; do mkdir -p ${dir}/$d/up ${dir}/$d/work; mount -t overlay overlay -o lowerdir=/$d,upperdir=${dir}/$d/up,workdir=${dir}/$d/work /$d; done
mount -t tmpfs tmpfs /run
mkdir -p /run/php /run/nginx /var/spool/cron/crontabs
rm -f /etc/nginx/sites-enabled/*
${setup}
php-fpm8.2
nginx
# The agent restarts when killed, as its service manager would restart it.
while :; do node ${ROOT}/bin/ferry.js agent --listen 127.0.0.1 --port ${port} --id ${name} --shared-ip ${ip} \\
  --loopback-addresses --web nginx --nginx-conf-dir /etc/nginx/conf.d --app-port ${appPort} \\
  --site-app in-process --web-config nginx --data-dir /var/lib/ferry/agent --rsync-port ${await freePort()} || true
sleep 0.2; done
`;
  const child = spawn(
    'unshare',
    ['-m', '--propagation', 'private', '--pid', '--fork', '--mount-proc', 'bash', '-c', script],
    {
      env: { ...process.env, FERRY_AGENT_TOKEN: TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const started = new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${name} did not start: ${out}`)), 30_000);
    child.stdout!.on('data', () => {
      if (out.includes('listening on')) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`${name} exited ${code}: ${out}`));
    });
  });
  // A server that did not start is taken down here: the caller has nothing to stop.
  await started.catch(async (err: unknown) => {
    await killNamespace(child);
    throw err;
  });
  const driver = new HttpHostDriver({ id: name, url: `http://127.0.0.1:${port}`, token: TOKEN });
  return { name, ip, child, driver, work: dir, output: () => out };
}

async function stopServer(s: Server | undefined): Promise<void> {
  if (!s) return;
  s.driver.close();
  await killNamespace(s.child);
}

/**
 * Every process of the server's mount namespace (nginx, PHP-FPM and their workers, the agent):
 * found by that namespace, so nothing outside the test is touched.
 */
async function killNamespace(child: ChildProcess): Promise<void> {
  const ns = await readlink(`/proc/${child.pid}/ns/mnt`).catch(() => undefined);
  if (ns) {
    for (const p of await readdir('/proc')) {
      if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
      if ((await readlink(`/proc/${p}/ns/mnt`).catch(() => '')) !== ns) continue;
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
  if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));
}

/** Kill a server's agent (SIGKILL, as a crash) and wait until its restart answers again. */
async function restartAgent(s: Server): Promise<void> {
  const ns = await readlink(`/proc/${s.child.pid}/ns/mnt`);
  let killed = 0;
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    if ((await readlink(`/proc/${p}/ns/mnt`).catch(() => '')) !== ns) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (!cmd.includes('ferry.js\0agent')) continue;
    process.kill(Number(p), 'SIGKILL');
    killed++;
  }
  assert.equal(killed, 1, 'one agent process');
  const deadline = Date.now() + 30_000;
  for (;;) {
    await new Promise((r) => setTimeout(r, 200));
    try {
      await s.driver.info();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
  }
}

/** GET over HTTP or HTTPS (SNI = host) from `address:port`; status, body and the peer's certificate. */
function get(
  address: string,
  port: number,
  host: string,
  path: string,
  tls = false,
): Promise<{ status: number; body: string; cert?: string }> {
  return new Promise((resolve, reject) => {
    const opts = { host: address, port, path, headers: { host }, agent: false, timeout: 10_000 };
    const done = (res: import('node:http').IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        const sock = res.socket as import('node:tls').TLSSocket;
        const cert = tls ? sock.getPeerX509Certificate?.()?.fingerprint256 : undefined;
        resolve({ status: res.statusCode ?? 0, body, ...(cert ? { cert } : {}) });
      });
    };
    const req = tls
      ? httpsRequest({ ...opts, servername: host, rejectUnauthorized: false }, done)
      : httpRequest(opts, done);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** The certificate a TLS listener presents for `servername`. */
function certAt(address: string, port: number, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: address, port, servername, rejectUnauthorized: false }, () => {
      const fp = s.getPeerX509Certificate()?.fingerprint256 ?? '';
      s.destroy();
      resolve(fp);
    });
    s.on('error', reject);
  });
}

/** What the target has of the site (its files, user, pool, configs): equal before and after a refused install. */
function snapshot(s: Server): string {
  return inNs(
    s,
    'getent passwd shop; getent group shop; ls /etc/nginx/conf.d /etc/php/8.2/fpm/pool.d /etc/ssl /etc/ssl/private /var/www /var/spool/cron/crontabs 2>&1; true',
  );
}

function backendPorts(s: Server): { http: number; https: number } {
  const state = JSON.parse(inNs(s, `cat /var/lib/ferry/agent/webstack/${DOMAIN}/state.json`)) as {
    ports: { http: number; https: number };
  };
  return state.ports;
}

const PAGES = ['/index.php', '/static.txt', '/media/logo.txt'];

describe('web stack: an nginx + PHP-FPM site moved between two servers', { skip }, () => {
  let origin: Server | undefined;
  let target: Server | undefined;
  let certFingerprint = '';
  const before_: Record<string, string> = {};

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'ferry-webstack-'));
    selfSignedCert({
      keyFile: join(work, 'shop.key'),
      certFile: join(work, 'shop.crt'),
      cn: 'shop.example',
      names: ['shop.example', 'www.shop.example'],
      rsa: true,
    });
    certFingerprint = new X509Certificate(execFileSync('cat', [join(work, 'shop.crt')])).fingerprint256;
    origin = await startServer(
      'origin',
      ORIGIN_IP,
      `groupadd -g 2001 shop; useradd -u 2001 -g shop -d /var/www/shop -M -s /usr/sbin/nologin shop
mkdir -p /var/www/shop/public /var/www/shop/media /srv/other /etc/ssl/ferrytest
printf '%s' '<?php echo "shop https=", (isset($_SERVER["HTTPS"]) ? "on" : "off"), " port-free\\n";' > /var/www/shop/public/index.php
echo static > /var/www/shop/public/static.txt; echo logo > /var/www/shop/media/logo.txt; echo other > /srv/other/index.html
chown -R shop:shop /var/www/shop; chmod 0750 /var/www/shop; chmod 0640 /var/www/shop/public/static.txt
chgrp www-data /var/www/shop; chmod o+x /var/www/shop/public /var/www/shop/media
chmod 0755 /var/www/shop/public /var/www/shop/media; chmod 0644 /var/www/shop/public/index.php /var/www/shop/media/logo.txt
cp ${work}/shop.crt /etc/ssl/ferrytest/shop.crt; cp ${work}/shop.key /etc/ssl/private/shop.key; chmod 0600 /etc/ssl/private/shop.key
cat > /etc/php/8.2/fpm/pool.d/shop.conf <<'POOL'
${POOL}POOL
cat > /etc/nginx/sites-available/shop <<'CONF'
${SITE_CONF}CONF
ln -s /etc/nginx/sites-available/shop /etc/nginx/sites-enabled/shop
printf '%s' '${CRONTAB}' > /var/spool/cron/crontabs/shop; chmod 0600 /var/spool/cron/crontabs/shop`,
    );
    // The target has another user on the shop's uid: the shop gets a new uid, its files stay the shop's by name.
    target = await startServer('target', TARGET_IP, `useradd -u 2001 -M -s /usr/sbin/nologin taken`);
    for (const p of PAGES) before_[p] = (await get(ORIGIN_IP, 80, DOMAIN, p)).body;
  });

  after(async () => {
    await stopServer(origin);
    await stopServer(target);
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('the origin serves the site as written (the baseline)', async () => {
    assert.match(before_['/index.php']!, /^shop https=off/);
    const tls = await get(ORIGIN_IP, 443, DOMAIN, '/index.php', true);
    assert.match(tls.body, /^shop https=on/);
    assert.equal(tls.cert, certFingerprint);
    const site = await origin!.driver.inspectWebSite(DOMAIN);
    assert.equal(site?.movable, true, JSON.stringify(site?.refusals));
    assert.ok(site?.listens.some((l) => l.tls && l.port === 443));
  });

  test("the origin's inspection says what the site requires; the target's check answers it without changing anything", async () => {
    const site = await origin!.driver.inspectWebSite(DOMAIN);
    assert.deepEqual(site?.requires, [
      { kind: 'php-fpm', name: '8.2', neededBy: 'pool [shop] of /etc/php/8.2/fpm/pool.d/shop.conf' },
    ]);
    const was = snapshot(target!);
    await target!.driver.checkWebSite(DOMAIN, { server: 'nginx', requires: site!.requires! });
    const older = {
      kind: 'php-fpm' as const,
      name: '7.4',
      neededBy: 'pool [shop] of /etc/php/7.4/fpm/pool.d/shop.conf',
    };
    await assert.rejects(
      target!.driver.checkWebSite(DOMAIN, { server: 'nginx', requires: [...site!.requires!, older] }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'TARGET_LACKS');
        assert.match(
          err.message,
          /it lacks PHP-FPM 7\.4 \(pool \[shop\] of \/etc\/php\/7\.4\/fpm\/pool\.d\/shop\.conf\)$/,
        );
        return true;
      },
    );
    // A site with mail cannot come to an agent started without Postfix's and Dovecot's configuration.
    await assert.rejects(
      target!.driver.checkWebSite(DOMAIN, { server: 'nginx', requires: site!.requires!, mailDomain: DOMAIN }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'MAIL_NOT_CONFIGURED');
        assert.match(err.message, /--postfix-config and --dovecot-config/);
        return true;
      },
    );
    assert.equal(snapshot(target!), was);
  });

  test('a site that cannot be moved is refused with each reason and its place; nothing changes', async () => {
    const was = inNs(origin!, 'ls -l /etc/nginx/sites-enabled /etc/nginx/conf.d');
    await assert.rejects(origin!.driver.gateWebSite('outside.example'), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'SITE_NOT_MOVABLE');
      assert.match(
        err.message,
        /PATH_OUTSIDE_ROOTS: root \/opt\/outside .*\(\/etc\/nginx\/sites-enabled\/shop:27\)/,
      );
      return true;
    });
    assert.equal(inNs(origin!, 'ls -l /etc/nginx/sites-enabled /etc/nginx/conf.d'), was);
  });

  test('gate: front and backend replace the block; the other site in the same file keeps serving', async () => {
    const original = inNs(origin!, 'cat /etc/nginx/sites-enabled/shop');
    await origin!.driver.gateWebSite(DOMAIN);
    await origin!.driver.gateWebSite(DOMAIN); // idempotent
    // The shared file now holds only the other site; it is no longer the symlink.
    assert.equal(
      inNs(origin!, 'test -L /etc/nginx/sites-enabled/shop && echo link || echo file').trim(),
      'file',
    );
    assert.equal((await get(ORIGIN_IP, 80, 'other.example', '/')).body, 'other\n');
    // The front presents the site's own certificate for its name.
    assert.equal(await certAt(ORIGIN_IP, 443, DOMAIN), certFingerprint);
    // The backend is the site's own block on loopback: same pages, PHP sees HTTPS on the TLS port.
    const ports = backendPorts(origin!);
    for (const p of PAGES) assert.equal((await get('127.0.0.1', ports.http, DOMAIN, p)).body, before_[p], p);
    const tls = await get('127.0.0.1', ports.https, DOMAIN, '/index.php', true);
    assert.match(tls.body, /^shop https=on/);
    assert.equal(tls.cert, certFingerprint);
    assert.equal(original.includes('server_name shop.example'), true);
  });

  let bundle: WebSiteBundle;

  test('export: the bundle holds the configs, pool, certificate and key, user, crontab and data folder', async () => {
    bundle = await origin!.driver.exportWebSite(DOMAIN);
    assert.equal(bundle.dataDir?.path, '/var/www/shop');
    assert.equal(bundle.dataDir?.mode, 0o750);
    assert.equal(bundle.dataDir?.group, 'www-data');
    assert.equal(bundle.user?.name, 'shop');
    assert.equal(bundle.user?.uid, 2001);
    assert.equal(bundle.crontab, CRONTAB);
    assert.equal(bundle.pool?.text, POOL);
    const key = bundle.certificates.find((c) => c.key);
    assert.equal(key?.content, inNs(origin!, 'cat /etc/ssl/private/shop.key'));
    assert.equal(bundle.files[0]?.path, '/etc/nginx/sites-enabled/shop');
    assert.deepEqual(bundle.files[0]?.blocks, [{ start: 2, end: 16 }]);
  });

  test("a pool php-fpm refuses leaves the target unchanged and says php-fpm's words", async () => {
    const was = snapshot(target!);
    const bad = { ...bundle, pool: { path: bundle.pool!.path, text: `${POOL}pm.banana = 3\n` } };
    await assert.rejects(target!.driver.installWebSite(bad), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'PHP_FPM_CONFIG_INVALID');
      assert.match(err.message, /banana/);
      return true;
    });
    assert.equal(snapshot(target!), was);
  });

  test('a target without the PHP-FPM version the site runs on refuses the install before changing anything', async () => {
    const was = snapshot(target!);
    const site = {
      ...bundle.site,
      apps: bundle.site.apps.map((a) =>
        a.kind === 'php-fpm' && a.pool
          ? { ...a, pool: { ...a.pool, file: a.pool.file.replace('/php/8.2/', '/php/5.6/') } }
          : a,
      ),
    };
    await assert.rejects(
      target!.driver.installWebSite({ ...bundle, site }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'TARGET_LACKS');
        assert.match(err.message, /PHP-FPM 5\.6/);
        return true;
      },
    );
    assert.equal(snapshot(target!), was);
  });

  test("a configuration nginx refuses leaves the target unchanged and says nginx's words", async () => {
    const was = snapshot(target!);
    const files = bundle.files.map((f) => ({
      ...f,
      text: f.text.replace('    index index.php;', '    index index.php; banana_directive on;'),
    }));
    await assert.rejects(
      target!.driver.installWebSite({ ...bundle, files }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'NGINX_CONFIG_INVALID');
        assert.match(err.message, /unknown directive "banana_directive"/);
        return true;
      },
    );
    assert.equal(snapshot(target!), was);
  });

  test('install: the target serves the same pages over HTTP and HTTPS, owners by name, key 0600, crontab', async () => {
    await target!.driver.installWebSite(bundle);
    await target!.driver.installWebSite(bundle); // idempotent
    // Data moves with the sync passes (rsync as root, owners by name); tar does the same here.
    execFileSync('sh', [
      '-c',
      `nsenter -t ${origin!.child.pid} -m tar -C /var/www/shop -cf - . | nsenter -t ${target!.child.pid} -m tar -C /var/www/shop -xpf -`,
    ]);
    const ports = backendPorts(target!);
    for (const p of PAGES) assert.equal((await get('127.0.0.1', ports.http, DOMAIN, p)).body, before_[p], p);
    const tls = await get('127.0.0.1', ports.https, 'www.shop.example', '/index.php', true);
    assert.match(tls.body, /^shop https=on/);
    assert.equal(tls.cert, certFingerprint);
    // The front listens on the target's shared IP with the site's certificate.
    assert.equal(await certAt(TARGET_IP, 443, DOMAIN), certFingerprint);
    const owners = 'stat -c "%n %U:%G %a" /var/www/shop /var/www/shop/public/static.txt /var/www/shop/media';
    assert.equal(inNs(target!, owners), inNs(origin!, owners));
    assert.notEqual(inNs(target!, 'id -u shop').trim(), '2001');
    assert.equal(inNs(target!, 'stat -c "%U %a" /etc/ssl/private/shop.key').trim(), 'root 600');
    assert.equal(inNs(target!, 'cat /var/spool/cron/crontabs/shop'), CRONTAB);
    assert.equal(await target!.driver.siteMode(DOMAIN), 'readonly');
  });

  test('uninstall takes back everything the install created', async () => {
    const fresh = await startServer('fresh', '127.0.64.3', `useradd -u 2001 -M -s /usr/sbin/nologin taken`);
    try {
      const was = snapshot(fresh);
      await fresh.driver.installWebSite({
        ...bundle,
        files: bundle.files.map((f) => ({ ...f, text: f.text.replaceAll(ORIGIN_IP, '127.0.64.3') })),
      });
      assert.notEqual(snapshot(fresh), was);
      await fresh.driver.uninstallWebSite(DOMAIN);
      assert.equal(snapshot(fresh), was, fresh.output());
    } finally {
      await stopServer(fresh);
    }
  });

  test("finish on the target: the site's own block serves on the target's shared IP, the gate is gone", async () => {
    await target!.driver.finishWebSite(DOMAIN, 'target');
    assert.equal(await target!.driver.siteMode(DOMAIN), null);
    assert.equal(inNs(target!, 'ls /etc/nginx/conf.d | grep ferry-web').trim(), `ferry-web-${DOMAIN}.conf`);
    assert.match(
      inNs(target!, `cat /etc/nginx/conf.d/ferry-web-${DOMAIN}.conf`),
      new RegExp(`listen ${TARGET_IP}:443 ssl;`),
    );
    for (const p of PAGES) assert.equal((await get(TARGET_IP, 80, DOMAIN, p)).body, before_[p], p);
    const tls = await get(TARGET_IP, 443, DOMAIN, '/index.php', true);
    assert.match(tls.body, /^shop https=on/);
    assert.equal(tls.cert, certFingerprint);
  });

  test('an agent restarted keeps the gated site; ungate then restores the original file byte for byte (the symlink again)', async () => {
    const before = inNs(origin!, 'cat /etc/nginx/sites-available/shop');
    await restartAgent(origin!);
    assert.equal(await origin!.driver.siteMode(DOMAIN), 'serve');
    assert.equal(await certAt(ORIGIN_IP, 443, DOMAIN), certFingerprint);
    await origin!.driver.ungateWebSite(DOMAIN);
    assert.equal(
      inNs(origin!, 'readlink /etc/nginx/sites-enabled/shop').trim(),
      '/etc/nginx/sites-available/shop',
    );
    assert.equal(inNs(origin!, 'cat /etc/nginx/sites-enabled/shop'), before);
    assert.equal(inNs(origin!, 'ls /etc/nginx/conf.d | grep -c ferry-web || true').trim(), '0');
    assert.equal((await get(ORIGIN_IP, 80, DOMAIN, '/index.php')).body, before_['/index.php']);
  });

  test('finish on the origin moves the site into a backup and stops serving it there', async () => {
    await origin!.driver.gateWebSite(DOMAIN);
    await origin!.driver.finishWebSite(DOMAIN, 'origin', { backupKeepMs: 3_600_000 });
    const res = await get(ORIGIN_IP, 80, DOMAIN, '/index.php');
    assert.doesNotMatch(res.body, /^shop/);
    assert.equal((await get(ORIGIN_IP, 80, 'other.example', '/')).body, 'other\n');
    assert.equal(inNs(origin!, 'test -e /var/www/shop && echo yes || echo no').trim(), 'no');
    assert.equal(
      inNs(origin!, 'test -e /etc/php/8.2/fpm/pool.d/shop.conf && echo yes || echo no').trim(),
      'no',
    );
    assert.equal(inNs(origin!, 'test -e /var/spool/cron/crontabs/shop && echo yes || echo no').trim(), 'no');
    const backup = inNs(origin!, 'ls -d /var/lib/ferry/agent/backups/shop.example-*').trim();
    const manifest = JSON.parse(inNs(origin!, `cat ${backup}/manifest.json`)) as {
      items: Array<{ kind: string; from: string }>;
    };
    assert.deepEqual(manifest.items.map((i) => i.kind).sort(), ['config', 'crontab', 'data', 'pool']);
    assert.equal(inNs(origin!, `cat ${backup}/data/public/static.txt`), 'static\n');
  });
});
