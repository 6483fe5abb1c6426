/**
 * The real stack of `ferry demo --stack nginx-php`: each hosting server of the sandbox runs its
 * own nginx and PHP-FPM, private instances under the sandbox's temporary folder, and the site that
 * moves is a PHP application on a PHP-FPM pool of its own, moved the way `ferry agent
 * --web-config nginx` moves a provider's site (gate, bundle, install, finish: src/agent/webstack).
 *
 * Why private instances and not the machine's nginx: the demo must change nothing of the
 * machine's own web server, and must not need namespaces. Each server is a folder laid out like a
 * Debian server (`etc/nginx`, `etc/php/8.2/fpm/pool.d`, `www`, `run`, `log`) with:
 * - an nginx master started with `-p <root>/nginx/ -c <root>/etc/nginx/nginx.conf` (its own pid
 *   file, logs and temporary folders; `daemon off`, so it stays this process's child), its
 *   server blocks on the server's loopback address only;
 * - a PHP-FPM master started with `--fpm-config <file> --pid <file>`, its pools listening on unix
 *   sockets in `<root>/run`, told the server's name with `-d ferry_demo.server=<id>`, which the
 *   demo's PHP application puts in `X-Served-By` (two servers on one machine have one hostname);
 * - a crontab command of its own (`<root>/bin/crontab`, tables in `<root>/crontabs`), so a
 *   site's crontab moves between the two servers without touching the machine's cron spool. No
 *   cron daemon reads those tables: the demo shows that the crontab moves, not that it runs.
 *
 * Each master leads a process group of its own, so a stop ends its workers too, and a Ctrl-C in
 * the terminal reaches the demo, which stops the agents before the web servers. When the demo
 * process exits without stopping them, an exit hook kills the groups.
 *
 * As root, the workers and the site's pool run as `www-data` (a pool running as root is not
 * movable: POOL_ROOT_USER). As another user everything runs as that user: nginx ignores no
 * directive because none names a user, and PHP-FPM's pool names the user running the demo.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { accessSync, constants, openSync, closeSync, existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { HostAgent, type HostAgentOptions, type WebSiteBundle } from '../agent/index.js';
import { FerryError } from '../common/errors.js';
import { canConnect } from '../common/net.js';
import { sleep } from '../common/time.js';

/** The real stack's sites: the PHP application that moves, then a static site that stays. */
export const REAL_STACK_SITES = ['shop.example.', 'news.example.'];

/** The PHP version whose PHP-FPM the demo runs (Debian bookworm's). */
const PHP_VERSION = '8.2';

/** The binaries the real stack runs, found on this machine. */
export interface StackBinaries {
  nginx: string;
  phpFpm: string;
}

/** Where binaries are looked for: PATH, then the sbin folders a user's PATH often lacks. */
function searchDirs(): string[] {
  const path = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  return [...new Set([...path, '/usr/local/sbin', '/usr/sbin', '/sbin'])];
}

function which(name: string, dirs: string[]): string | undefined {
  for (const d of dirs) {
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * nginx and php-fpm8.2 (looked for in `dirs`: PATH and the sbin folders), or SANDBOX_STACK_MISSING
 * naming the Debian packages to install.
 */
export function findStackBinaries(dirs = searchDirs()): StackBinaries {
  const nginx = which('nginx', dirs);
  const phpFpm = which(`php-fpm${PHP_VERSION}`, dirs);
  const missing = [
    ...(nginx ? [] : ['nginx (Debian package nginx-light or nginx)']),
    ...(phpFpm ? [] : [`php-fpm${PHP_VERSION} (Debian package php${PHP_VERSION}-fpm)`]),
  ];
  if (missing.length > 0)
    throw new FerryError(
      'SANDBOX_STACK_MISSING',
      `the real stack demo runs private instances of nginx and PHP-FPM ${PHP_VERSION}; not found: ${missing.join(', ')}. ` +
        `Install them (apt-get install nginx-light php${PHP_VERSION}-fpm) or run the demo without --stack nginx-php`,
    );
  return { nginx: nginx!, phpFpm: phpFpm! };
}

/** Who the web server's workers and the site's pool run as. */
interface RunAs {
  user: string;
  group: string;
  /** Only root can hand nginx's workers and PHP-FPM's sockets to another user. */
  root: boolean;
}

function runAs(): RunAs {
  if (process.getuid?.() === 0) return { user: 'www-data', group: 'www-data', root: true };
  const me = userInfo();
  let group = String(me.gid);
  try {
    group = execFileSync('id', ['-gn'], { encoding: 'utf8' }).trim() || group;
  } catch {
    // the number does as well
  }
  return { user: me.username, group, root: false };
}

export interface PrivateServerOptions {
  /** The server's name (origin, target): `X-Served-By` of its PHP. */
  id: string;
  /** Its folder, laid out like a server's `/` (see the file comment). */
  root: string;
  /** Its loopback address and the sites' port. */
  ip: string;
  port: number;
  binaries: StackBinaries;
}

/** One hosting server's private nginx and PHP-FPM. */
export class PrivateWebServer {
  readonly id: string;
  readonly root: string;
  readonly ip: string;
  readonly port: number;
  private readonly bin: StackBinaries;
  private readonly as: RunAs = runAs();
  private readonly masters: Array<{ name: string; child: ChildProcess }> = [];
  private readonly onExit = () => this.killNow();

  constructor(o: PrivateServerOptions) {
    this.id = o.id;
    this.root = o.root;
    this.ip = o.ip;
    this.port = o.port;
    this.bin = o.binaries;
  }

  /** Ferry's include folder (inside nginx's `http {}`): the agent's log format, fronts and backends. */
  get includeDir(): string {
    return join(this.root, 'etc/nginx/ferry.d');
  }

  /** The server's own sites (`include`d after Ferry's folder), one file each. */
  get sitesDir(): string {
    return join(this.root, 'etc/nginx/sites-enabled');
  }

  get nginxConf(): string {
    return join(this.root, 'etc/nginx/nginx.conf');
  }

  /** The nginx command every caller uses (checks, reloads, `-T`): this server's prefix and file. */
  get nginxCommand(): string[] {
    return [this.bin.nginx, '-p', join(this.root, 'nginx') + '/', '-c', this.nginxConf];
  }

  get poolDir(): string {
    return join(this.root, `etc/php/${PHP_VERSION}/fpm/pool.d`);
  }

  get fpmConf(): string {
    return join(this.root, `etc/php/${PHP_VERSION}/fpm/php-fpm.conf`);
  }

  get fpmPidFile(): string {
    return join(this.root, 'run/php-fpm.pid');
  }

  /** The PHP-FPM command the agent checks pools with (`-t` is added). */
  get phpFpmCommand(): string[] {
    return [this.bin.phpFpm, '--fpm-config', this.fpmConf];
  }

  /** The folder sites' files live under (the agent's one declared root). */
  get wwwDir(): string {
    return join(this.root, 'www');
  }

  get crontabCommand(): string[] {
    return [join(this.root, 'bin/crontab')];
  }

  /** Where the agent keeps its state, backups and the moved sites' original files. */
  get agentDir(): string {
    return join(this.root, 'ferry');
  }

  /** Lay the server's folders and configuration out (no site yet). */
  async prepare(): Promise<void> {
    for (const d of [
      'etc/nginx',
      'nginx/tmp',
      'run',
      'log',
      'bin',
      'crontabs',
      'www',
      `etc/php/${PHP_VERSION}/fpm/pool.d`,
    ])
      await mkdir(join(this.root, d), { recursive: true, mode: 0o755 });
    await mkdir(this.includeDir, { recursive: true });
    await mkdir(this.sitesDir, { recursive: true });
    // As root, nginx's workers and the pools run as www-data: they walk down to the sites and sockets.
    if (this.as.root) {
      await chmod(this.root, 0o755);
      await chmod(join(this.root, '..'), 0o755);
      await this.assertReachable();
    }
    await writeFile(this.nginxConf, this.nginxConfText());
    await writeFile(this.fpmConf, this.fpmConfText());
    await writeFile(join(this.root, 'bin/crontab'), CRONTAB_SCRIPT, { mode: 0o755 });
  }

  /** Every folder above the server's must let other users through (www-data walks to the sites). */
  private async assertReachable(): Promise<void> {
    for (let dir = dirname(this.root); ; dir = dirname(dir)) {
      if (((await stat(dir)).mode & 0o001) === 0)
        throw new FerryError(
          'SANDBOX_STACK_START',
          `${this.as.user} (nginx's workers, the PHP pool) cannot pass through ${dir}; ` +
            'set TMPDIR to a folder every user can pass through, such as /tmp',
        );
      if (dir === dirname(dir)) return;
    }
  }

  private nginxConfText(): string {
    const tmp = join(this.root, 'nginx/tmp');
    const modules = nginxHas(this.bin.nginx);
    return `# The demo's private nginx of ${this.id}: its own prefix, pid file, logs and temporary folders.
daemon off;
worker_processes 1;
pid ${join(this.root, 'run/nginx.pid')};
error_log ${join(this.root, 'log/nginx-error.log')};
${this.as.root ? `user ${this.as.user} ${this.as.group};\n` : ''}events {
    worker_connections 1024;
}
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log ${join(this.root, 'log/nginx-access.log')};
    keepalive_timeout 65;
    client_body_temp_path ${tmp}/body;
    proxy_temp_path ${tmp}/proxy;
    fastcgi_temp_path ${tmp}/fastcgi;
${modules.uwsgi ? `    uwsgi_temp_path ${tmp}/uwsgi;\n` : ''}${modules.scgi ? `    scgi_temp_path ${tmp}/scgi;\n` : ''}    include ${this.includeDir}/*.conf;
    include ${this.sitesDir}/*.conf;
}
`;
  }

  private fpmConfText(): string {
    // A master needs one pool to start: the target has none of its own until a site moves in.
    return `; The demo's private PHP-FPM of ${this.id}.
[global]
pid = ${this.fpmPidFile}
error_log = ${join(this.root, 'log/php-fpm.log')}
daemonize = no
include = ${this.poolDir}/*.conf

[idle]
${this.poolUser()}listen = ${join(this.root, 'run/php-idle.sock')}
pm = ondemand
pm.max_children = 1
`;
  }

  private poolUser(): string {
    return `user = ${this.as.user}\ngroup = ${this.as.group}\n`;
  }

  /** Start both masters; resolves once each has written its pid file (`waitListening` for nginx's sites). */
  async start(): Promise<void> {
    process.on('exit', this.onExit);
    await this.startMaster(
      'php-fpm',
      [
        this.bin.phpFpm,
        '--nodaemonize',
        '--fpm-config',
        this.fpmConf,
        '--pid',
        this.fpmPidFile,
        '-d',
        `ferry_demo.server=${this.id}`,
      ],
      this.fpmPidFile,
    );
    await this.startMaster('nginx', this.nginxCommand, join(this.root, 'run/nginx.pid'));
  }

  private async startMaster(name: string, argv: string[], pidFile: string): Promise<void> {
    const log = openSync(join(this.root, `log/${name}-master.log`), 'a');
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', log, log] });
    } finally {
      closeSync(log);
    }
    this.masters.push({ name, child });
    let failure: Error | undefined;
    child.once('error', (err) => (failure = err));
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (failure || child.exitCode !== null || child.signalCode !== null) {
        const lines = (await readFile(join(this.root, `log/${name}-master.log`), 'utf8').catch(() => ''))
          .split('\n')
          .filter((l) => l.trim());
        const said = [...new Set(lines)].slice(-4).join(' / ');
        throw new FerryError(
          'SANDBOX_STACK_START',
          `${this.id}'s private ${name} did not start: ${failure?.message || said || `exit ${child.exitCode ?? child.signalCode}`}`,
        );
      }
      if (existsSync(pidFile)) return;
      if (Date.now() > deadline)
        throw new FerryError('SANDBOX_STACK_START', `${this.id}'s private ${name} wrote no pid file in 15 s`);
      await sleep(50);
    }
  }

  /** Wait until nginx accepts connections on the server's address (its sites are in). */
  async waitListening(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await canConnect(this.ip, this.port))) {
      if (Date.now() > deadline)
        throw new FerryError(
          'SANDBOX_STACK_START',
          `${this.id}'s private nginx does not listen on ${this.ip}:${this.port}`,
        );
      await sleep(50);
    }
  }

  /** The PHP application that moves: its folder, pool (with a crontab for its user) and server block. */
  async addPhpSite(domain: string, db?: { socket: string; password: string }): Promise<void> {
    const name = domain.replace(/\.$/, '');
    const pool = name.split('.')[0]!;
    const htdocs = join(this.wwwDir, name, 'htdocs');
    const socket = join(this.root, `run/php-${pool}.sock`);
    await mkdir(join(htdocs, 'data'), { recursive: true });
    await writeFile(join(htdocs, 'index.php'), shopPhp(name));
    await this.own(join(this.wwwDir, name), [htdocs, join(htdocs, 'data'), join(htdocs, 'index.php')]);
    await writeFile(
      join(this.poolDir, `${pool}.conf`),
      `; ${name}: the customer's PHP-FPM pool
[${pool}]
${this.poolUser()}listen = ${socket}
${this.as.root ? `listen.owner = ${this.as.user}\nlisten.group = ${this.as.group}\n` : ''}listen.mode = 0660
pm = dynamic
pm.max_children = 8
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 4
${db ? `env[SHOP_DB_SOCKET] = ${db.socket}\nenv[SHOP_DB_PASSWORD] = ${db.password}\n` : ''}php_admin_value[error_log] = ${join(this.root, `log/php-${pool}.error.log`)}
`,
    );
    await writeFile(
      join(this.sitesDir, `${name}.conf`),
      `# ${name}: a small PHP application that keeps its orders in its data folder
server {
    listen ${this.ip}:${this.port};
    server_name ${name};
    root ${htdocs};
    index index.php;
    access_log ${join(this.root, `log/${name}.access.log`)};

    location / {
        try_files $uri /index.php?$args;
    }
    location ^~ /data/ {
        deny all;
    }
    location ~ \\.php$ {
        include /etc/nginx/fastcgi_params;
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_pass unix:${socket};
    }
}
`,
    );
    // The customer's cron job (the crontab moves with the site; nothing runs it here).
    await writeFile(
      join(this.root, 'crontabs', this.as.user),
      `# ${name}: a nightly copy of the orders\n17 3 * * * cp ${htdocs}/data/orders.jsonl ${htdocs}/data/orders.copy.jsonl\n`,
      { mode: 0o600 },
    );
  }

  /** A static site that stays on the origin. */
  async addStaticSite(domain: string): Promise<void> {
    const name = domain.replace(/\.$/, '');
    const htdocs = join(this.wwwDir, name, 'htdocs');
    await mkdir(htdocs, { recursive: true });
    await writeFile(
      join(htdocs, 'index.html'),
      `<!doctype html><title>${name}</title><h1>${name}</h1><p>A static site that stays where it is.</p>\n`,
    );
    await this.own(join(this.wwwDir, name), [htdocs, join(htdocs, 'index.html')]);
    await writeFile(
      join(this.sitesDir, `${name}.conf`),
      `# ${name}: static files
server {
    listen ${this.ip}:${this.port};
    server_name ${name};
    root ${htdocs};
    access_log ${join(this.root, `log/${name}.access.log`)};
    location / {
        try_files $uri $uri/ =404;
    }
}
`,
    );
  }

  /** The site's files belong to the user its pool runs as, as a provider lays them out. */
  private async own(home: string, paths: string[]): Promise<void> {
    if (!this.as.root) return;
    const uid = Number(execFileSync('id', ['-u', this.as.user], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', this.as.user], { encoding: 'utf8' }).trim());
    for (const p of [home, ...paths]) await chown(p, uid, gid);
  }

  /** Stop both masters (SIGTERM, then SIGKILL of their process groups); safe to call twice. */
  async stop(): Promise<void> {
    process.off('exit', this.onExit);
    for (const m of this.masters.splice(0).reverse()) {
      const exited = new Promise<void>((resolve) => {
        if (m.child.exitCode !== null || m.child.signalCode !== null) resolve();
        else m.child.once('exit', () => resolve());
      });
      signalGroup(m.child, 'SIGTERM');
      const gone = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
      // The workers go with the group, also those a master left behind.
      signalGroup(m.child, 'SIGKILL');
      if (!gone) await Promise.race([exited, sleep(2000)]);
    }
  }

  /** At process exit, without waiting: kill both process groups. */
  killNow(): void {
    for (const m of this.masters) signalGroup(m.child, 'SIGKILL');
  }
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (!child.pid) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // the group is gone
  }
}

/** Which optional modules (with temporary folders of their own) this nginx has (`nginx -V`, on stderr). */
function nginxHas(nginx: string): { uwsgi: boolean; scgi: boolean } {
  let v = '';
  try {
    v = execFileSync('sh', ['-c', '"$0" -V 2>&1', nginx], { encoding: 'utf8' });
  } catch {
    // an nginx that cannot say: the defaults below
  }
  return {
    uwsgi: !v.includes('--without-http_uwsgi_module'),
    scgi: !v.includes('--without-http_scgi_module'),
  };
}

/**
 * A server's crontab command: `crontab -u USER -l | -r | -` on one table per user in the
 * server's own `crontabs` folder (what the agent's `--crontab-command` runs).
 */
const CRONTAB_SCRIPT = `#!/bin/sh
# The demo server's crontab: one table per user in ../crontabs, never the machine's cron spool.
dir="$(dirname "$0")/../crontabs"
[ "$1" = -V ] && exit 0
[ "$1" = -u ] && [ -n "$2" ] || { echo "usage: crontab -u USER -l|-r|-" >&2; exit 2; }
case "$3" in
  -l) cat "$dir/$2" 2>/dev/null || { echo "no crontab for $2" >&2; exit 1; } ;;
  -r) [ -f "$dir/$2" ] || { echo "no crontab for $2" >&2; exit 1; }; rm -f "$dir/$2" ;;
  -) cat > "$dir/$2.new" && mv "$dir/$2.new" "$dir/$2" ;;
  *) echo "usage: crontab -u USER -l|-r|-" >&2; exit 2 ;;
esac
`;

/**
 * The demo's PHP application, speaking the load generator's protocol as the built-in app does:
 * `GET /` a page, `GET /orders` the count, `POST /orders` `{"key"}` appends one order line (id,
 * key, time in ms, server) to `data/orders.jsonl` under an exclusive lock and answers `{"id"}`.
 * With a database in its pool's environment, an order is a row of `shop.orders` instead.
 */
function shopPhp(name: string): string {
  return `<?php
// ${name}: orders kept as lines of data/orders.jsonl, in the site's own folder, or in MariaDB.
$server = (string) get_cfg_var('ferry_demo.server');
header('X-Served-By: ' . $server);
$file = __DIR__ . '/data/orders.jsonl';
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
// With a database (the pool's SHOP_DB_SOCKET and SHOP_DB_PASSWORD): orders are rows of shop.orders.
function shop_db(): ?PDO {
    $socket = getenv('SHOP_DB_SOCKET');
    if (!$socket) return null;
    return new PDO('mysql:unix_socket=' . $socket . ';dbname=shop', 'shop', (string) getenv('SHOP_DB_PASSWORD'),
        [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
}
if ($path === '/orders' && $_SERVER['REQUEST_METHOD'] === 'POST') {
    $in = json_decode((string) file_get_contents('php://input'), true);
    $key = is_array($in) && isset($in['key']) ? (string) $in['key'] : '';
    header('Content-Type: application/json');
    if (!preg_match('/^[A-Za-z0-9-]{1,100}$/', $key)) {
        http_response_code(400);
        echo '{"error":"an order needs a key of letters, digits and dashes"}';
        exit;
    }
    $db = shop_db();
    if ($db !== null) {
        // A plain insert, as the file's append: an order sent twice is stored twice, and counted so.
        $at = (int) round(microtime(true) * 1000);
        $db->prepare('INSERT INTO orders (k, at, server) VALUES (?, ?, ?)')->execute([$key, $at, $server]);
        http_response_code(201);
        echo json_encode(['id' => (int) $db->lastInsertId(), 'key' => $key]);
        exit;
    }
    $fh = fopen($file, 'c+');
    if ($fh === false || !flock($fh, LOCK_EX)) { http_response_code(500); exit; }
    $id = 1;
    while (fgets($fh) !== false) $id++;
    $line = json_encode(['id' => $id, 'key' => $key, 'at' => (int) round(microtime(true) * 1000), 'server' => $server]);
    $ok = fwrite($fh, $line . "\\n") !== false && fflush($fh);
    flock($fh, LOCK_UN);
    fclose($fh);
    if (!$ok) { http_response_code(500); exit; }
    http_response_code(201);
    echo json_encode(['id' => $id, 'key' => $key]);
    exit;
}
if ($path === '/orders') {
    header('Content-Type: application/json');
    $db = shop_db();
    $n = $db !== null ? (int) $db->query('SELECT COUNT(*) FROM orders')->fetchColumn()
        : (is_file($file) ? count(file($file)) : 0);
    echo json_encode(['orders' => $n]);
    exit;
}
if ($path === '/' || $path === '/index.php') {
    header('Content-Type: text/html; charset=utf-8');
    echo "<!doctype html><title>${name}</title><h1>${name}</h1><p>A PHP shop: POST /orders, GET /orders.</p>\\n";
    exit;
}
http_response_code(404);
`;
}

/** One order line of the PHP application's `orders.jsonl`. */
export interface PhpOrder {
  id: number;
  key: string;
  at: number;
  server: string;
}

/** The orders in a `orders.jsonl` file (none when it does not exist). */
export async function readPhpOrders(file: string): Promise<PhpOrder[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as PhpOrder);
}

/**
 * The demo's target agent. Two servers on one machine share one file system, so the target's
 * server is a folder of its own and a bundle's paths under the origin's folder (data folder, pool
 * file and socket, roots and logs in the server block, the crontab) are given under the target's
 * before it installs; between two machines they are the same paths, and no agent does this.
 */
export class RelocatingAgent extends HostAgent {
  constructor(
    opts: HostAgentOptions,
    private readonly from: string,
    private readonly to: string,
  ) {
    super(opts);
  }

  override installWebSite(bundle: WebSiteBundle): Promise<void> {
    return super.installWebSite(relocate(bundle, this.from, this.to));
  }
}

/** `value` with every occurrence of the folder `from` (a prefix ending in `/`) in its strings made `to`. */
export function relocate<T>(value: T, from: string, to: string): T {
  const esc = (s: string) => JSON.stringify(s).slice(1, -1);
  return JSON.parse(JSON.stringify(value).split(esc(from)).join(esc(to))) as T;
}
