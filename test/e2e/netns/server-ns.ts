/**
 * A hosting server for end-to-end tests: a network namespace of a Topology (its address on the
 * bridge) plus a private mount namespace in which /etc, /var and /srv are overlays (the machine's
 * own files below, the server's changes in a temporary folder) and /run is a tmpfs. The server's
 * web server, PHP-FPM, users, sites and `ferry agent` live there, so two servers on one machine
 * each have their own /etc/nginx, /etc/passwd and /var/www, and the machine's own stay untouched.
 *
 * The mount namespace is kept alive by a holder process (`sleep infinity` started through
 * `ip netns exec NS unshare --mount`); every command enters it with `nsenter -t HOLDER -m -n`.
 * `close()` kills every process whose mount namespace is the server's (found through /proc, so
 * daemons that forked away are found too), which ends the namespace and its mounts, then removes
 * the temporary folder.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { Topology, spawnChild, type Host, type NsChild, type TopologyOptions } from './topology.js';
import { rm } from 'node:fs/promises';

/** What a command run in a server printed, and how it ended. */
export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
  /** Resolve with a non-zero exit instead of throwing. */
  allowFail?: boolean;
}

/** Run `argv` on this machine, collecting its output; throws on a non-zero exit unless `allowFail`. */
export function run(argv: string[], opts: ExecOptions = {}): Promise<ExecResult & { raw: Buffer }> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(argv[0]!, argv.slice(1), {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const raw = Buffer.concat(out);
      const r = { code, stdout: raw.toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), raw };
      if (code !== 0 && !opts.allowFail) {
        reject(
          new Error(
            `${argv.slice(0, 12).join(' ')}: exit ${code ?? signal}\n${r.stderr.trim() || r.stdout.trim()}`.slice(
              0,
              4000,
            ),
          ),
        );
      } else resolve(r);
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(opts.input ?? '');
  });
}

/** Poll `check` until it holds, or throw after `timeoutMs` naming `what`. */
export async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not ready within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The paths a server gets as overlays; everything else is the machine's own. */
export const OVERLAID = ['/etc', '/var', '/srv'] as const;

/** A hosting server: a network namespace plus a private mount namespace (see the file comment). */
export class ServerNs {
  private readonly children: NsChild[] = [];
  private closed = false;
  private mntNs = '';

  private constructor(
    /** A short name for logs (origin, target, db). */
    readonly name: string,
    /** The network namespace it runs in. */
    readonly netns: string,
    /** Its temporary folder on this machine (overlay layers, logs, data kept outside the overlays). */
    readonly dir: string,
    private readonly holder: ChildProcess,
  ) {}

  /** Build the server's mount namespace inside the network namespace `netns`. */
  static async create(name: string, netns: string): Promise<ServerNs> {
    const dir = await mkdtemp(join(tmpdir(), `ferry-srv-${name}-`));
    const holder = spawn(
      'ip',
      ['netns', 'exec', netns, 'unshare', '--mount', '--propagation', 'private', 'sleep', 'infinity'],
      {
        stdio: 'ignore',
      },
    );
    const srv = new ServerNs(name, netns, dir, holder);
    try {
      const own = readlinkSync('/proc/self/ns/mnt');
      await waitFor(`${name}: the mount namespace holder`, 10_000, async () => {
        const pid = holder.pid;
        if (!pid || holder.exitCode !== null) throw new Error(`${name}: the holder exited`);
        const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        const mnt = readlinkSync(`/proc/${pid}/ns/mnt`);
        if (comm !== 'sleep' || mnt === own) return false;
        srv.mntNs = mnt;
        return true;
      });
      const script: string[] = ['set -e'];
      for (const p of OVERLAID) {
        const layer = join(dir, 'overlay', p.slice(1));
        await mkdir(join(layer, 'upper'), { recursive: true });
        await mkdir(join(layer, 'work'), { recursive: true });
        script.push(
          `mount -t overlay ferry-${name} -o lowerdir=${p},upperdir=${layer}/upper,workdir=${layer}/work ${p}`,
        );
      }
      script.push(
        'mount -t tmpfs -o mode=0755 ferry-run /run',
        'mkdir -p /run/php /run/mysqld /run/apache2 /run/nginx /run/lock /run/user',
        'chmod 1777 /run/lock',
      );
      await srv.exec('sh', ['-c', script.join('\n')]);
      return srv;
    } catch (err) {
      srv.close();
      throw err;
    }
  }

  /** The holder's pid: `nsenter -t PID -m -n` enters this server. */
  get pid(): number {
    return this.holder.pid!;
  }

  /** argv that runs `cmd args` inside this server (cwd `wd`, default /). */
  nsArgv(cmd: string, args: string[] = [], wd = '/'): string[] {
    return ['nsenter', '-t', String(this.pid), '-m', '-n', `--wd=${wd}`, '--', cmd, ...args];
  }

  /** Run a command inside the server and collect its output (throws on a non-zero exit unless `allowFail`). */
  async exec(cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    if (this.closed) throw new Error(`${this.name}: closed`);
    const { code, stdout, stderr } = await run(this.nsArgv(cmd, args, opts.cwd), { ...opts, cwd: undefined });
    return { code, stdout, stderr };
  }

  /** Start a long-running process inside the server; it is killed by `close()`. */
  spawn(
    name: string,
    argv: string[],
    opts: { cwd?: string; env?: NodeJS.ProcessEnv; logFile?: string; stdin?: boolean } = {},
  ): NsChild {
    if (this.closed) throw new Error(`${this.name}: closed`);
    const c = spawnChild(`${name}@${this.name}`, this.nsArgv(argv[0]!, argv.slice(1), opts.cwd), {
      ...opts,
      cwd: undefined,
    });
    this.children.push(c);
    return c;
  }

  /** Write a file as the server sees it (parent folders made); mode and owner when given. */
  async writeFile(
    path: string,
    data: string | Buffer,
    opts: { mode?: number; owner?: string } = {},
  ): Promise<void> {
    const steps = ['set -e', 'mkdir -p "$(dirname "$1")"', 'cat > "$1"'];
    if (opts.mode !== undefined) steps.push(`chmod ${opts.mode.toString(8)} "$1"`);
    if (opts.owner) steps.push(`chown ${opts.owner} "$1"`);
    await this.exec('sh', ['-c', steps.join('\n'), 'sh', path], { input: data });
  }

  /** A file's bytes as the server sees them. */
  async readFile(path: string): Promise<Buffer> {
    if (this.closed) throw new Error(`${this.name}: closed`);
    return (await run(this.nsArgv('cat', [path]))).raw;
  }

  /** A file's text as the server sees it. */
  async readText(path: string): Promise<string> {
    return (await this.readFile(path)).toString('utf8');
  }

  /** Whether a path exists in the server's view. */
  async exists(path: string): Promise<boolean> {
    return (await this.exec('test', ['-e', path], { allowFail: true })).code === 0;
  }

  /** Every process whose mount namespace is this server's (the holder included). */
  pids(): number[] {
    if (!this.mntNs) return this.holder.pid ? [this.holder.pid] : [];
    const out: number[] = [];
    for (const e of readdirSync('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      try {
        if (readlinkSync(`/proc/${e}/ns/mnt`) === this.mntNs) out.push(Number(e));
      } catch {
        // gone meanwhile
      }
    }
    return out;
  }

  /**
   * Kill every process of the server (SIGKILL; the holder last), which ends its mount namespace
   * and unmounts its overlays, then remove its folder (kept with `keep`, for a failed test's
   * logs). Safe to call twice; synchronous, so it also works from an exit handler.
   */
  close(opts: { keep?: boolean } = {}): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.children)
      if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
    for (let round = 0; round < 50; round++) {
      const pids = this.pids().filter((p) => p !== this.holder.pid);
      if (pids.length === 0) break;
      for (const p of pids) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      execFileSync('sleep', ['0.1']);
    }
    if (this.holder.exitCode === null && this.holder.signalCode === null) this.holder.kill('SIGKILL');
    for (let round = 0; round < 50 && this.pids().length > 0; round++) execFileSync('sleep', ['0.1']);
    if (!opts.keep) rmSync(this.dir, { recursive: true, force: true });
  }

  /** Whether anything of the server is left: processes in its mount namespace or its folder. */
  leftovers(): string[] {
    const left: string[] = [];
    const pids = this.pids();
    if (pids.length) left.push(`processes ${pids.join(' ')}`);
    if (existsSync(this.dir)) left.push(`folder ${this.dir}`);
    return left;
  }
}

// ---------------------------------------------------------------------------------------------
// The servers' software, started the way Debian installs it (its own config files under /etc).

/** A file's pid as a number, or null. */
async function pidOf(srv: ServerNs, file: string): Promise<number | null> {
  const r = await srv.exec('cat', [file], { allowFail: true });
  const n = Number(r.stdout.trim());
  return r.code === 0 && Number.isInteger(n) && n > 0 ? n : null;
}

/** The children of a process (from /proc; the servers share this machine's pid namespace). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return out.sort((a, b) => a - b);
}

/** Debian's nginx with the server's /etc/nginx (one worker), in the foreground; ready once its pid file is written. */
export async function startNginx(srv: ServerNs): Promise<NsChild> {
  const conf = await srv.readText('/etc/nginx/nginx.conf');
  await srv.writeFile(
    '/etc/nginx/nginx.conf',
    conf.replace(/^worker_processes\s+[^;]+;/m, 'worker_processes 1;'),
  );
  await srv.exec('nginx', ['-t', '-q']);
  const c = srv.spawn('nginx', ['nginx', '-g', 'daemon off;'], { logFile: join(srv.dir, 'nginx.out') });
  await waitFor(`nginx@${srv.name}`, 15_000, async () => {
    const master = await pidOf(srv, '/run/nginx.pid');
    return master !== null && childPids(master).length > 0;
  });
  return c;
}

/** nginx's master pid and its workers' pids (a reload replaces the workers). */
export async function nginxProcesses(srv: ServerNs): Promise<{ master: number; workers: number[] }> {
  const master = await pidOf(srv, '/run/nginx.pid');
  if (master === null) throw new Error(`nginx@${srv.name}: no pid file`);
  return { master, workers: childPids(master) };
}

/** Debian's php8.2-fpm with the server's /etc/php/8.2/fpm, in the foreground. */
export async function startPhpFpm(srv: ServerNs): Promise<NsChild> {
  await srv.exec('mkdir', ['-p', '/run/php', '/var/log/php8.2-fpm']);
  await srv.exec('php-fpm8.2', ['-t']);
  const c = srv.spawn('php-fpm', ['php-fpm8.2', '-F', '-y', '/etc/php/8.2/fpm/php-fpm.conf'], {
    logFile: join(srv.dir, 'php-fpm.out'),
  });
  await waitFor(
    `php-fpm@${srv.name}`,
    15_000,
    async () => (await pidOf(srv, '/run/php/php8.2-fpm.pid')) !== null,
  );
  return c;
}

/**
 * Switch the server's Apache to mpm_event with proxy_fcgi (this machine has libapache2-mod-php,
 * which needs prefork), with the modules a provider's TLS vhosts and a proxying front use.
 */
export async function configureApacheEvent(srv: ServerNs): Promise<void> {
  await srv.exec('a2dismod', ['-q', '-f', 'php8.2', 'mpm_prefork'], { allowFail: true });
  await srv.exec('a2enmod', [
    '-q',
    'mpm_event',
    'proxy',
    'proxy_fcgi',
    'proxy_http',
    'setenvif',
    'ssl',
    'headers',
    'rewrite',
  ]);
}

/** Debian's apache2 with the server's /etc/apache2 (after `configureApacheEvent`), in the foreground. */
export async function startApache(srv: ServerNs): Promise<NsChild> {
  const script =
    '. /etc/apache2/envvars && mkdir -p "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR" "$APACHE_LOG_DIR" && exec apache2 -DFOREGROUND';
  await srv.exec('apache2ctl', ['configtest']);
  const c = srv.spawn('apache2', ['sh', '-c', script], { logFile: join(srv.dir, 'apache2.out') });
  await waitFor(
    `apache2@${srv.name}`,
    15_000,
    async () => (await pidOf(srv, '/run/apache2/apache2.pid')) !== null,
  );
  return c;
}

/** A MariaDB the servers reach over the bridge; `sql` runs statements as root on its socket. */
export interface MariaDb {
  address: string;
  port: number;
  /** Its socket, as its server sees it. */
  socket: string;
  sql(statements: string): Promise<string>;
  /** A database and a user with all rights on it, reachable from `host` (default any address). */
  createDatabase(name: string, user: string, password: string, host?: string): Promise<void>;
  /** With `MariaDbOptions.binlog`: its binary log files' base name, on this machine. */
  binlogBase?: string;
  /** With `MariaDbOptions.generalLog`: the file every statement is logged to, on this machine. */
  generalLogFile?: string;
  /**
   * With options: the folder (as its server sees it) of option files mariadbd reads at start
   * (`!includedir`), and the option file (0600) of an administrator with every privilege:
   * `[client]` user, password and socket, as Debian's debian.cnf.
   */
  optionDir?: string;
  adminOptionFile?: string;
}

/**
 * How a server's MariaDB is configured beyond the defaults (a provider's own configuration, for a
 * database that moves with its site: docs/databases.md). Given, the server reads an option file in
 * the server's /etc/mysql instead of running with `--no-defaults`.
 */
export interface MariaDbOptions {
  /** The binary log on, in ROW format with GTID strict mode, with this server_id and gtid_domain_id. */
  binlog?: { serverId: number; domainId: number };
  /** Without a binary log, still a server_id of its own. */
  serverId?: number;
  /** The server's certificate and its CA (ssl_cert, ssl_key, ssl_ca). */
  tls?: { cert: IssuedCert; caPem: string };
  /** Log every statement with its connection (a test instrument: which account read which database). */
  generalLog?: boolean;
}

/** The option file a configured server reads, and the folder of option files it includes. */
const MARIADB_CNF = '/etc/mysql/ferry-test.cnf';
const MARIADB_OPTION_DIR = '/etc/mysql/ferry-test.d';
const MARIADB_ADMIN_CNF = '/etc/mysql/ferry-admin.cnf';

/**
 * Install a fresh datadir in the server's folder and start `mariadbd` bound to `address`; without
 * `opts`, with `--no-defaults` and no binary log (a database host both servers share).
 */
export async function startMariaDb(srv: ServerNs, address: string, opts?: MariaDbOptions): Promise<MariaDb> {
  const datadir = join(srv.dir, 'mysql');
  const socket = '/run/mysqld/mysqld.sock';
  // A temporary folder of its own: with the machine's /tmp, temporary tables of two servers
  // bootstrapping at once (or anything cleaning /tmp) made the bootstrap fail in CI.
  const tmp = join(srv.dir, 'mysql-tmp');
  await mkdir(datadir, { recursive: true });
  await mkdir(tmp, { recursive: true });
  await srv.exec(
    'mariadb-install-db',
    [
      '--no-defaults',
      `--datadir=${datadir}`,
      `--tmpdir=${tmp}`,
      '--user=root',
      '--auth-root-authentication-method=socket',
      '--skip-test-db',
      '--skip-name-resolve',
    ],
    { timeoutMs: 120_000 },
  );
  const options = [
    `datadir=${datadir}`,
    `tmpdir=${tmp}`,
    `socket=${socket}`,
    `pid-file=${join(srv.dir, 'mariadbd.pid')}`,
    `bind-address=${address}`,
    'port=3306',
    'user=root',
    'skip-name-resolve',
    'innodb-buffer-pool-size=32M',
    'innodb-log-file-size=16M',
    'performance-schema=OFF',
    `log-error=${join(srv.dir, 'mariadbd.err')}`,
  ];
  const extra: Partial<MariaDb> = {};
  if (!opts) {
    srv.spawn('mariadbd', ['mariadbd', '--no-defaults', ...options.map((o) => `--${o}`), '--skip-log-bin']);
  } else {
    if (opts.binlog) {
      extra.binlogBase = join(srv.dir, 'binlog', 'mariadb-bin');
      await mkdir(join(srv.dir, 'binlog'), { recursive: true });
      options.push(
        `server-id=${opts.binlog.serverId}`,
        `gtid-domain-id=${opts.binlog.domainId}`,
        `log-bin=${extra.binlogBase}`,
        'binlog-format=ROW',
        'gtid-strict-mode=ON',
        `relay-log=${join(srv.dir, 'relay', 'relay-bin')}`,
      );
      await mkdir(join(srv.dir, 'relay'), { recursive: true });
    } else {
      options.push(`server-id=${opts.serverId ?? 1}`, 'skip-log-bin');
    }
    if (opts.tls) {
      await srv.writeFile('/etc/mysql/ssl/ca.pem', opts.tls.caPem, { mode: 0o644 });
      await srv.writeFile('/etc/mysql/ssl/server.pem', opts.tls.cert.certPem, { mode: 0o644 });
      await srv.writeFile('/etc/mysql/ssl/server.key', opts.tls.cert.keyPem, { mode: 0o600 });
      options.push(
        'ssl-ca=/etc/mysql/ssl/ca.pem',
        'ssl-cert=/etc/mysql/ssl/server.pem',
        'ssl-key=/etc/mysql/ssl/server.key',
      );
    }
    if (opts.generalLog) {
      extra.generalLogFile = join(srv.dir, 'general.log');
      options.push('general-log=ON', `general-log-file=${extra.generalLogFile}`, 'log-output=FILE');
    }
    await srv.exec('mkdir', ['-p', MARIADB_OPTION_DIR]);
    await srv.writeFile(
      MARIADB_CNF,
      ['[mariadbd]', ...options, `!includedir ${MARIADB_OPTION_DIR}`, ''].join('\n'),
    );
    extra.optionDir = MARIADB_OPTION_DIR;
    srv.spawn('mariadbd', ['mariadbd', `--defaults-file=${MARIADB_CNF}`]);
  }
  const sql = async (statements: string) =>
    (
      await srv.exec('mariadb', ['--no-defaults', `--socket=${socket}`, '-uroot', '-N', '-B'], {
        input: statements,
      })
    ).stdout;
  await waitFor(`mariadbd@${srv.name}`, 60_000, async () => (await sql('SELECT 1')).trim() === '1');
  if (opts) {
    const password = 'admin-' + randomBytes(12).toString('hex');
    await sql(
      `CREATE USER 'admin'@'localhost' IDENTIFIED BY '${password}';\n` +
        `GRANT ALL ON *.* TO 'admin'@'localhost' WITH GRANT OPTION;\n` +
        (opts.binlog ? 'RESET MASTER;\n' : ''),
    );
    await srv.writeFile(
      MARIADB_ADMIN_CNF,
      `[client]\nuser = admin\npassword = ${password}\nsocket = ${socket}\n`,
      { mode: 0o600 },
    );
    extra.adminOptionFile = MARIADB_ADMIN_CNF;
  }
  return {
    address,
    port: 3306,
    socket,
    sql,
    ...extra,
    createDatabase: async (name, user, password, host = '%') => {
      await sql(
        `CREATE DATABASE IF NOT EXISTS \`${name}\` CHARACTER SET utf8mb4;\n` +
          `CREATE USER IF NOT EXISTS '${user}'@'${host}' IDENTIFIED BY '${password}';\n` +
          `GRANT ALL ON \`${name}\`.* TO '${user}'@'${host}';\n`,
      );
    },
  };
}

/** A certificate and key a test CA issued, and the certificate's SHA-256 fingerprint. */
export interface IssuedCert {
  certPem: string;
  keyPem: string;
  fingerprint256: string;
}

/** A test certificate authority (openssl, P-256 keys) in a folder of this machine. */
export class TestCa {
  private constructor(
    readonly dir: string,
    /** The CA certificate, for clients' `ca`. */
    readonly certPem: string,
  ) {}

  static async create(dir: string): Promise<TestCa> {
    await mkdir(dir, { recursive: true });
    const key = join(dir, 'ca.key');
    const cert = join(dir, 'ca.pem');
    await run(['openssl', 'ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
    await run([
      'openssl',
      'req',
      '-x509',
      '-new',
      '-key',
      key,
      '-subj',
      `/CN=Ferry test CA ${randomBytes(3).toString('hex')}`,
      '-days',
      '7',
      '-out',
      cert,
    ]);
    return new TestCa(dir, await readFile(cert, 'utf8'));
  }

  /** A server certificate for `names`, host names or IP addresses (the first is the subject; all are subjectAltNames). */
  async issue(names: string[]): Promise<IssuedCert> {
    const base = join(this.dir, `${names[0]}-${randomBytes(3).toString('hex')}`);
    await run(['openssl', 'ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${base}.key`]);
    await run([
      'openssl',
      'req',
      '-new',
      '-key',
      `${base}.key`,
      '-subj',
      `/CN=${names[0]}`,
      '-out',
      `${base}.csr`,
    ]);
    await writeFile(
      `${base}.ext`,
      `subjectAltName=${names.map((n) => `${isIP(n) ? 'IP' : 'DNS'}:${n}`).join(',')}\nextendedKeyUsage=serverAuth\n`,
    );
    await run([
      'openssl',
      'x509',
      '-req',
      '-in',
      `${base}.csr`,
      '-CA',
      join(this.dir, 'ca.pem'),
      '-CAkey',
      join(this.dir, 'ca.key'),
      '-CAcreateserial',
      '-days',
      '7',
      '-extfile',
      `${base}.ext`,
      '-out',
      `${base}.pem`,
    ]);
    const certPem = await readFile(`${base}.pem`, 'utf8');
    return {
      certPem,
      keyPem: await readFile(`${base}.key`, 'utf8'),
      fingerprint256: new X509Certificate(certPem).fingerprint256,
    };
  }
}

/**
 * One test's hosting servers: a Topology made for it (`topoOpts`) and a temporary folder `dir`;
 * `open(host)` makes a ServerNs in that host's namespace. After `body`, every server is closed and
 * the namespaces removed, also on a failure or when the process exits; when `body` passed, no
 * server may have left anything behind and `dir` is removed, else both stay for their logs.
 */
export async function withServers(
  name: string,
  topoOpts: TopologyOptions,
  body: (h: {
    topo: Topology;
    dir: string;
    open(host: Host): Promise<ServerNs>;
    /** Those opened so far. */
    servers: readonly ServerNs[];
  }) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), `ferry-${name}-`));
  const topo = new Topology(topoOpts);
  const servers: ServerNs[] = [];
  let ok = false;
  const cleanup = () => {
    for (const s of servers) s.close({ keep: !ok });
    topo.destroy();
  };
  process.once('exit', cleanup);
  try {
    topo.create();
    await body({
      topo,
      dir,
      servers,
      open: async (host) => {
        const srv = await ServerNs.create(host, topo.ns[host]);
        servers.push(srv);
        return srv;
      },
    });
    ok = true;
  } finally {
    cleanup();
    process.off('exit', cleanup);
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(topo.id));
    assert.deepEqual(left, [], 'every namespace removed');
    if (ok) {
      for (const s of servers) assert.deepEqual(s.leftovers(), [], `${s.name} left nothing behind`);
      await rm(dir, { recursive: true, force: true });
    } else console.log(`# ${name} failed; logs kept in ${dir} and the servers' folders`);
  }
}
