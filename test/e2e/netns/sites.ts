/**
 * Customers' sites on a test hosting server (a ServerNs), set up the way providers set them up:
 * a system user per site, the site's files under /var/www/<domain>/htdocs owned by it, a PHP-FPM
 * pool running as that user, an nginx server block or Apache virtual host in sites-available
 * (enabled by a link), and the site's certificate under /etc/ssl.
 *
 * Three kinds: WordPress from Debian's `wordpress` package (files copied with Debian's symlinks
 * dereferenced, its own wp-config.php, a database on the test MariaDB, plus a small upload
 * endpoint), a small PHP app that appends notes to a file, and a static site.
 */
import { X509Certificate, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, type IssuedCert, type ServerNs } from './server-ns.js';
import type { SiteLoadArgs, SiteLoadSummary, SiteRequestResult } from './site-load-child.js';
import type { NsChild, Topology } from './topology.js';

export type Flavor = 'nginx' | 'apache';
export type SiteKind = 'wordpress' | 'notes' | 'static';

/** One customer's site as the harness lays it out. */
export interface SiteLayout {
  domain: string;
  kind: SiteKind;
  /** Names it answers to: the domain and www.<domain>. */
  names: string[];
  /** The system user (and group) that owns its files and runs its PHP; static sites have one too. */
  user: string;
  /** /var/www/<domain>: the folder holding everything of the site. */
  home: string;
  htdocs: string;
  /** PHP-FPM pool socket (PHP sites). */
  socket?: string;
  /** The pool's access log: one line per PHP request, `<unix second> <method> <uri> <status>`. */
  phpAccessLog?: string;
  certFile: string;
  keyFile: string;
}

/** Where a site of `domain` lives on a server; `user` is the system user's name. */
export function siteLayout(domain: string, kind: SiteKind, user: string): SiteLayout {
  const home = `/var/www/${domain}`;
  return {
    domain,
    kind,
    names: [domain, `www.${domain}`],
    user,
    home,
    htdocs: `${home}/htdocs`,
    ...(kind === 'static'
      ? {}
      : {
          socket: `/run/php/php8.2-fpm-${user}.sock`,
          phpAccessLog: `/var/log/php8.2-fpm/${user}.access.log`,
        }),
    certFile: `/etc/ssl/sites/${domain}.pem`,
    keyFile: `/etc/ssl/private/${domain}.key`,
  };
}

/** The PHP-FPM pool of a site: its own user, socket and access log. */
export function phpPool(s: SiteLayout): string {
  return `; ${s.domain}
[${s.user}]
user = ${s.user}
group = ${s.user}
listen = ${s.socket}
listen.owner = www-data
listen.group = www-data
listen.mode = 0660
pm = dynamic
pm.max_children = 6
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 3
access.log = ${s.phpAccessLog}
access.format = "%{%s}t %m %{REQUEST_URI}e %s"
php_admin_value[upload_max_filesize] = 8M
php_admin_value[post_max_size] = 10M
`;
}

/** The site's nginx server block: HTTP and HTTPS on `address`, PHP through its pool. */
export function nginxSite(s: SiteLayout, address: string): string {
  const php =
    s.kind === 'static'
      ? ''
      : `
    location ~ \\.php$ {
        include snippets/fastcgi-php.conf;
        fastcgi_pass unix:${s.socket};
    }
`;
  const front =
    s.kind === 'wordpress'
      ? 'try_files $uri $uri/ /index.php?$args;'
      : s.kind === 'notes'
        ? 'try_files $uri /index.php?$args;'
        : 'try_files $uri $uri/ =404;';
  return `# ${s.domain} (customer ${s.user})
server {
    listen ${address}:80;
    listen ${address}:443 ssl;
    server_name ${s.names.join(' ')};
    root ${s.htdocs};
    index ${s.kind === 'static' ? 'index.html' : 'index.php index.html'};

    ssl_certificate ${s.certFile};
    ssl_certificate_key ${s.keyFile};

    access_log /var/log/nginx/${s.domain}.access.log;
    error_log /var/log/nginx/${s.domain}.error.log;
    client_max_body_size 10m;

    location / {
        ${front}
    }
    location ^~ /data/ {
        deny all;
    }
    location ~ /\\.ht {
        deny all;
    }
${php}}
`;
}

/** The site's Apache virtual hosts (HTTP and HTTPS on `address`), PHP through proxy_fcgi to its pool. */
export function apacheSite(s: SiteLayout, address: string): string {
  const body = (tls: boolean) => `    ServerName ${s.domain}
    ServerAlias ${s.names.slice(1).join(' ')}
    DocumentRoot ${s.htdocs}
    <Directory ${s.htdocs}>
        Options FollowSymLinks
        AllowOverride All
        Require all granted
    </Directory>
    <Directory ${s.htdocs}/data>
        Require all denied
    </Directory>
${
  s.kind === 'static'
    ? ''
    : `    <FilesMatch "\\.php$">
        SetHandler "proxy:unix:${s.socket}|fcgi://localhost"
    </FilesMatch>
    DirectoryIndex index.php index.html
`
}${
    tls
      ? `    SSLEngine on
    SSLCertificateFile ${s.certFile}
    SSLCertificateKeyFile ${s.keyFile}
`
      : ''
  }    ErrorLog \${APACHE_LOG_DIR}/${s.domain}.error.log
    CustomLog \${APACHE_LOG_DIR}/${s.domain}.access.log combined
`;
  return `# ${s.domain} (customer ${s.user})
<VirtualHost ${address}:80>
${body(false)}</VirtualHost>
<VirtualHost ${address}:443>
${body(true)}</VirtualHost>
`;
}

/** Create the site's system user and group (home = the site's folder), unless it exists. */
export async function addSiteUser(srv: ServerNs, s: SiteLayout): Promise<void> {
  if ((await srv.exec('id', ['-u', s.user], { allowFail: true })).code === 0) return;
  await srv.exec('useradd', [
    '--user-group',
    '--home-dir',
    s.home,
    '--no-create-home',
    '--shell',
    '/bin/sh',
    s.user,
  ]);
}

/** Write the site's certificate (0644) and key (0600, root's). */
export async function installCert(srv: ServerNs, s: SiteLayout, cert: IssuedCert): Promise<void> {
  await srv.writeFile(s.certFile, cert.certPem, { mode: 0o644 });
  await srv.writeFile(s.keyFile, cert.keyPem, { mode: 0o600, owner: 'root:root' });
}

/** Write and enable the site's vhost (sites-available + link in sites-enabled, or a2ensite). */
export async function enableVhost(
  srv: ServerNs,
  flavor: Flavor,
  s: SiteLayout,
  address: string,
): Promise<void> {
  if (flavor === 'nginx') {
    await srv.writeFile(`/etc/nginx/sites-available/${s.domain}.conf`, nginxSite(s, address));
    await srv.exec('ln', [
      '-sf',
      `../sites-available/${s.domain}.conf`,
      `/etc/nginx/sites-enabled/${s.domain}.conf`,
    ]);
  } else {
    await srv.writeFile(`/etc/apache2/sites-available/${s.domain}.conf`, apacheSite(s, address));
    await srv.exec('a2ensite', ['-q', s.domain]);
  }
}

/** Reload the web server after a config change, checking it first. */
export async function reloadWeb(srv: ServerNs, flavor: Flavor): Promise<void> {
  if (flavor === 'nginx') {
    await srv.exec('nginx', ['-t', '-q']);
    await srv.exec('nginx', ['-s', 'reload']);
  } else {
    await srv.exec('apache2ctl', ['configtest']);
    await srv.exec('apache2ctl', ['graceful']);
  }
}

/** Reload PHP-FPM's pools (USR2 to the master), after `php-fpm8.2 -t`. */
export async function reloadPhpFpm(srv: ServerNs): Promise<void> {
  await srv.exec('php-fpm8.2', ['-t']);
  await srv.exec('sh', ['-c', 'kill -USR2 "$(cat /run/php/php8.2-fpm.pid)"']);
}

/** Name the server in its own /etc so a site's PHP can say who served a request (X-Test-Server). */
export async function nameServer(srv: ServerNs, name: string): Promise<void> {
  await srv.writeFile('/etc/ferry-test-server', `${name}\n`);
}

/** The database a WordPress site uses. */
export interface WpDb {
  host: string;
  name: string;
  user: string;
  password: string;
}

/** Keys WordPress needs in wp-config.php, made once per site (the same on every server it lives on). */
export function wpSalts(): Record<string, string> {
  const keys = [
    'AUTH_KEY',
    'SECURE_AUTH_KEY',
    'LOGGED_IN_KEY',
    'NONCE_KEY',
    'AUTH_SALT',
    'SECURE_AUTH_SALT',
    'LOGGED_IN_SALT',
    'NONCE_SALT',
  ];
  return Object.fromEntries(keys.map((k) => [k, randomBytes(24).toString('base64')]));
}

function wpConfig(s: SiteLayout, db: WpDb, salts: Record<string, string>): string {
  return `<?php
// ${s.domain}
define('DB_NAME', '${db.name}');
define('DB_USER', '${db.user}');
define('DB_PASSWORD', '${db.password}');
define('DB_HOST', '${db.host}');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
${Object.entries(salts)
  .map(([k, v]) => `define('${k}', '${v}');`)
  .join('\n')}
$table_prefix = 'wp_';
define('WP_DEBUG', false);
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('FS_METHOD', 'direct');
define('WP_DEFAULT_THEME', 'plain');
if (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');
require_once ABSPATH . 'wp-settings.php';
`;
}

/**
 * The site's own plugin: says which server ran PHP (X-Test-Server) and lets the load post
 * comments faster than WordPress's flood guard allows (one client address posts many).
 */
const WP_MU_PLUGIN = `<?php
/* Plugin Name: test hosting helpers */
add_action('send_headers', function () {
    header('X-Test-Server: ' . trim((string) @file_get_contents('/etc/ferry-test-server')));
});
remove_action('check_comment_flood', 'check_comment_flood_db', 10);
add_filter('wp_is_comment_flood', '__return_false', PHP_INT_MAX);
`;

/** The customer's theme (Debian's package ships none): the blog's name, the posts, the comment form. */
const WP_THEME_CSS = `/*
Theme Name: Plain
Description: A customer's minimal theme.
Version: 1.0
*/
body { font-family: sans-serif; }
`;
const WP_THEME_INDEX = `<!doctype html>
<html><head><meta charset="utf-8"><title><?php bloginfo('name'); ?></title><?php wp_head(); ?></head>
<body>
<h1><?php bloginfo('name'); ?></h1>
<?php while (have_posts()) : the_post(); ?>
<article><h2><?php the_title(); ?></h2><?php the_content(); ?></article>
<?php if (is_singular()) comment_form(); ?>
<?php endwhile; ?>
<?php wp_footer(); ?>
</body></html>
`;

/** The upload endpoint: a multipart \`file\` with a \`key\`, stored once under wp-content/uploads/ferry/<key>.<random>. */
const UPLOAD_PHP = `<?php
header('Content-Type: application/json');
header('X-Test-Server: ' . trim((string) @file_get_contents('/etc/ferry-test-server')));
if ($_SERVER['REQUEST_METHOD'] !== 'POST') { http_response_code(405); echo '{"error":"POST only"}'; exit; }
$key = isset($_POST['key']) ? $_POST['key'] : '';
if (!preg_match('/^[A-Za-z0-9-]{1,100}$/', $key) || !isset($_FILES['file']) || $_FILES['file']['error'] !== UPLOAD_ERR_OK) {
    http_response_code(400); echo '{"error":"bad upload"}'; exit;
}
$dir = __DIR__ . '/wp-content/uploads/ferry';
if (!is_dir($dir) && !mkdir($dir, 0755, true) && !is_dir($dir)) { http_response_code(500); exit; }
$name = $key . '.' . bin2hex(random_bytes(4));
if (!move_uploaded_file($_FILES['file']['tmp_name'], "$dir/$name")) { http_response_code(500); exit; }
echo json_encode(['key' => $key, 'file' => $name, 'sha256' => hash_file('sha256', "$dir/$name")]);
`;

/** The notes app: POST key=... appends a line to data/notes.jsonl; GET says how many there are. */
const NOTES_PHP = `<?php
header('Content-Type: application/json');
$server = trim((string) @file_get_contents('/etc/ferry-test-server'));
header('X-Test-Server: ' . $server);
$file = __DIR__ . '/data/notes.jsonl';
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $key = isset($_POST['key']) ? $_POST['key'] : '';
    if (!preg_match('/^[A-Za-z0-9-]{1,100}$/', $key)) { http_response_code(400); echo '{"error":"bad key"}'; exit; }
    $line = json_encode(['key' => $key, 'at' => microtime(true), 'server' => $server]) . "\\n";
    if (file_put_contents($file, $line, FILE_APPEND | LOCK_EX) === false) { http_response_code(500); exit; }
    echo json_encode(['ok' => true, 'key' => $key]);
    exit;
}
$n = is_file($file) ? count(file($file)) : 0;
echo json_encode(['notes' => $n]);
`;

/** Lay out the user, folder, pool, certificate and vhost common to every kind. */
async function baseSite(
  srv: ServerNs,
  flavor: Flavor,
  s: SiteLayout,
  address: string,
  cert: IssuedCert,
): Promise<void> {
  await addSiteUser(srv, s);
  await srv.exec('mkdir', ['-p', s.htdocs]);
  if (s.kind !== 'static') await srv.writeFile(`/etc/php/8.2/fpm/pool.d/${s.user}.conf`, phpPool(s));
  await installCert(srv, s, cert);
  await enableVhost(srv, flavor, s, address);
}

/**
 * WordPress from Debian's package as a provider installs it for one customer: the files of
 * /usr/share/wordpress copied into htdocs with symlinks dereferenced, a wp-config.php of its own,
 * the upload endpoint, the site's plugin and theme, everything owned by the site's user. The caller reloads
 * the web server and PHP-FPM, then runs `installWordPressDb` once (the database is shared).
 */
export async function installWordPress(
  srv: ServerNs,
  flavor: Flavor,
  s: SiteLayout,
  o: { address: string; cert: IssuedCert; db: WpDb; salts: Record<string, string> },
): Promise<void> {
  await baseSite(srv, flavor, s, o.address, o.cert);
  await srv.exec('cp', ['-rL', '/usr/share/wordpress/.', `${s.htdocs}/`], { timeoutMs: 120_000 });
  await srv.writeFile(`${s.htdocs}/wp-config.php`, wpConfig(s, o.db, o.salts), { mode: 0o640 });
  await srv.writeFile(`${s.htdocs}/wp-content/mu-plugins/test-hosting.php`, WP_MU_PLUGIN);
  await srv.writeFile(`${s.htdocs}/wp-content/themes/plain/style.css`, WP_THEME_CSS);
  await srv.writeFile(`${s.htdocs}/wp-content/themes/plain/index.php`, WP_THEME_INDEX);
  await srv.writeFile(`${s.htdocs}/upload.php`, UPLOAD_PHP);
  await srv.exec('mkdir', ['-p', `${s.htdocs}/wp-content/uploads/ferry`]);
  await srv.exec('chown', ['-R', `${s.user}:${s.user}`, s.home]);
}

/**
 * WordPress's own installer, run over HTTP as an administrator would (POST to
 * wp-admin/install.php?step=2), from inside `srv` against `address`. Once per database.
 */
export async function installWordPressDb(
  srv: ServerNs,
  s: SiteLayout,
  address: string,
  title: string,
): Promise<void> {
  const form = new URLSearchParams({
    weblog_title: title,
    user_name: 'admin',
    admin_password: 'test-admin-' + randomBytes(6).toString('hex'),
    pw_weak: '1',
    admin_email: `admin@${s.domain}`,
    blog_public: '0',
    language: '',
  });
  form.set('admin_password2', form.get('admin_password')!);
  const r = await srv.exec('curl', [
    '-sS',
    '--max-time',
    '60',
    '--resolve',
    `${s.domain}:80:${address}`,
    '-o',
    '/dev/null',
    '-w',
    '%{http_code}',
    '--data-binary',
    form.toString(),
    '-H',
    'Content-Type: application/x-www-form-urlencoded',
    `http://${s.domain}/wp-admin/install.php?step=2`,
  ]);
  if (r.stdout.trim() !== '200') throw new Error(`WordPress install of ${s.domain}: HTTP ${r.stdout}`);
}

/** The notes app (a small PHP app that writes into its own folder). */
export async function installNotes(
  srv: ServerNs,
  flavor: Flavor,
  s: SiteLayout,
  o: { address: string; cert: IssuedCert },
): Promise<void> {
  await baseSite(srv, flavor, s, o.address, o.cert);
  await srv.writeFile(`${s.htdocs}/index.php`, NOTES_PHP);
  await srv.exec('mkdir', ['-p', `${s.htdocs}/data`]);
  await srv.exec('chown', ['-R', `${s.user}:${s.user}`, s.home]);
}

/** A static site: two pages. */
export async function installStatic(
  srv: ServerNs,
  flavor: Flavor,
  s: SiteLayout,
  o: { address: string; cert: IssuedCert },
): Promise<void> {
  await baseSite(srv, flavor, s, o.address, o.cert);
  await srv.writeFile(
    `${s.htdocs}/index.html`,
    `<!doctype html><title>${s.domain}</title><h1>${s.domain}</h1>\n`,
  );
  await srv.writeFile(`${s.htdocs}/about.html`, `<!doctype html><title>about</title><p>A static site.</p>\n`);
  await srv.exec('chown', ['-R', `${s.user}:${s.user}`, s.home]);
}

/** Lines of a pool's access log: the unix second PHP-FPM received the request, method, URI, status. */
export interface PhpRequest {
  second: number;
  method: string;
  uri: string;
  status: number;
}

/** Parse a site's PHP-FPM access log (format of `phpPool`). */
export async function phpRequests(srv: ServerNs, s: SiteLayout): Promise<PhpRequest[]> {
  const text = (await srv.exec('cat', [s.phpAccessLog!], { allowFail: true })).stdout;
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [second, method, uri, status] = l.split(' ');
      return { second: Number(second), method: method!, uri: uri!, status: Number(status) };
    });
}

/** The comments of a WordPress database whose content is one of `keys`, with how often each is there. */
export async function commentCounts(
  sql: (s: string) => Promise<string>,
  dbName: string,
): Promise<Map<string, number>> {
  const out = await sql(
    `SELECT comment_content, COUNT(*) FROM \`${dbName}\`.wp_comments GROUP BY comment_content;`,
  );
  const m = new Map<string, number>();
  for (const line of out.split('\n').filter(Boolean)) {
    const [content, n] = line.split('\t');
    m.set(content!, Number(n));
  }
  return m;
}

/** Files the upload endpoint stored on `srv`, by key: how many files each key has. */
export async function uploadCounts(srv: ServerNs, s: SiteLayout): Promise<Map<string, number>> {
  const r = await srv.exec('ls', ['-1', `${s.htdocs}/wp-content/uploads/ferry`], { allowFail: true });
  const m = new Map<string, number>();
  for (const f of r.stdout.split('\n').filter(Boolean)) {
    const key = f.slice(0, f.lastIndexOf('.'));
    m.set(key, (m.get(key) ?? 0) + 1);
  }
  return m;
}

/** Notes the notes app stored on `srv`, by key: how many lines each key has. */
export async function noteCounts(srv: ServerNs, s: SiteLayout): Promise<Map<string, number>> {
  const r = await srv.exec('cat', [`${s.htdocs}/data/notes.jsonl`], { allowFail: true });
  const m = new Map<string, number>();
  for (const l of r.stdout.split('\n').filter(Boolean)) {
    const { key } = JSON.parse(l) as { key: string };
    m.set(key, (m.get(key) ?? 0) + 1);
  }
  return m;
}

/** The SHA-256 fingerprint (AB:CD:… as node prints it) of the certificate served at `address`:`port` for `servername`, seen from `netns`. */
export async function servedFingerprint(
  netns: string,
  address: string,
  servername: string,
  port = 443,
): Promise<string> {
  const chain = await run(
    [
      'ip',
      'netns',
      'exec',
      netns,
      'openssl',
      's_client',
      '-connect',
      `${address}:${port}`,
      '-servername',
      servername,
    ],
    { input: '', timeoutMs: 15_000, allowFail: true },
  );
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(chain.stdout)?.[0];
  if (!pem)
    throw new Error(`no certificate from ${address}:${port} (${servername}): ${chain.stderr.slice(0, 300)}`);
  return new X509Certificate(pem).fingerprint256;
}

export type { SiteLoadArgs };

/** A running site load: `finish()` waits for its bounds, `stop()` ends it now; both return what it saw. */
export interface SiteLoad {
  child: NsChild;
  finish(): Promise<{ results: SiteRequestResult[]; summary: SiteLoadSummary }>;
  stop(): Promise<{ results: SiteRequestResult[]; summary: SiteLoadSummary }>;
}

/** Start site-load-child.ts in the client namespace; resolves once its users are running. */
export async function startSiteLoad(
  topo: Topology,
  root: string,
  a: SiteLoadArgs,
  logFile?: string,
): Promise<SiteLoad> {
  const child = topo.spawn(
    'client',
    'site-load',
    [process.execPath, '--import', 'tsx', join(root, 'test/e2e/netns/site-load-child.ts'), JSON.stringify(a)],
    { cwd: root, stdin: true, ...(logFile ? { logFile } : {}) },
  );
  await child.waitLine((l) => l.includes('"type":"ready"'), 30_000);
  const finish = async (within: number) => {
    await child.waitLine((l) => l.includes('"type":"summary"'), within);
    // Every request's result, kept beside the logs for a failed run's diagnosis.
    if (logFile) await writeFile(`${logFile}.results.jsonl`, child.lines.join('\n') + '\n');
    const events = child.lines.map((l) => JSON.parse(l) as { type: string });
    return {
      results: events.filter((e) => e.type === 'result') as SiteRequestResult[],
      summary: events.find((e) => e.type === 'summary') as SiteLoadSummary,
    };
  };
  const slack = a.requestTimeoutMs + a.intervalMs + 30_000;
  return {
    child,
    finish: () => finish(a.durationMs + slack),
    stop: () => {
      if (child.child.exitCode === null) child.child.stdin!.write('stop\n');
      return finish(slack);
    },
  };
}
