/**
 * A private MariaDB server: its own `mariadbd` on one loopback address, with its data, socket,
 * pid file, logs and option files under one folder, never the machine's own MariaDB service.
 * The real stack's servers run one each (`ferry demo --stack nginx-php-mariadb`, the cut-over
 * benchmark), and the tests start theirs through it.
 *
 * Its replication settings are those docs/databases.md asks of a provider's server: binary log in
 * ROW format, GTID strict mode, its own `server_id` and `gtid_domain_id`, an `!includedir` folder
 * (where Ferry writes a channel's filter), and an administrator option file like Debian's
 * `/etc/mysql/debian.cnf`, which is what `ferry agent --mariadb-defaults-file` reads.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';

const MARIADBD = '/usr/sbin/mariadbd';

/** True when the MariaDB server and its client tools are installed. */
export function mariadbInstalled(): boolean {
  return [
    '/usr/sbin/mariadbd',
    '/usr/bin/mariadb-install-db',
    '/usr/bin/mariadb',
    '/usr/bin/mariadb-admin',
  ].every((p) => existsSync(p));
}

export interface PrivateMariaDbOptions {
  /** Its folder (created when missing; `stop({ remove: true })` removes it). */
  dir: string;
  /** Loopback address it listens on. */
  address: string;
  port: number;
  /** server_id, also the gtid_domain_id unless `domain` is given. */
  serverId: number;
  domain?: number;
  /** Binary log on (ROW unless `binlogFormat`, GTID strict mode) unless false. */
  binlog?: boolean;
  binlogFormat?: 'ROW' | 'STATEMENT' | 'MIXED';
  /** Certificate files of the server (PEM): TLS for its clients and replicas. */
  tls?: { ca: string; cert: string; key: string };
  /** Password of the administrator `admin`@`%` (all privileges), written to `adminOptionFile`. */
  adminPassword: string;
  /** InnoDB buffer pool and redo log (default 32M and 16M: small servers, many of them on one machine). */
  bufferPool?: string;
  logFileSize?: string;
}

/** One private `mariadbd`. */
export class PrivateMariaDb {
  readonly dir: string;
  readonly address: string;
  readonly port: number;
  readonly socket: string;
  /** Option folder the server includes (read at start). */
  readonly confDir: string;
  /** `[client]` option file with the administrator's account (mode 0600). */
  readonly adminOptionFile: string;
  readonly adminUser = 'admin';
  private child: ChildProcess | undefined;
  private readonly onExit = () => this.child?.kill('SIGKILL');

  constructor(private readonly opts: PrivateMariaDbOptions) {
    this.dir = opts.dir;
    this.address = opts.address;
    this.port = opts.port;
    this.socket = join(opts.dir, 'mysqld.sock');
    this.confDir = join(opts.dir, 'conf.d');
    this.adminOptionFile = join(opts.dir, 'admin.cnf');
  }

  get adminPassword(): string {
    return this.opts.adminPassword;
  }

  get errorLog(): string {
    return join(this.dir, 'error.log');
  }

  /** Install a data folder, start the server, wait until it answers, create the administrator. */
  async start(): Promise<this> {
    const o = this.opts;
    const datadir = join(this.dir, 'data');
    // Its own temporary folder, so that servers bootstrapping side by side never share /tmp.
    const tmp = join(this.dir, 'tmp');
    mkdirSync(datadir, { recursive: true });
    mkdirSync(tmp, { recursive: true });
    mkdirSync(this.confDir, { recursive: true });
    const install = spawnSync(
      'mariadb-install-db',
      [
        '--no-defaults',
        `--datadir=${datadir}`,
        `--tmpdir=${tmp}`,
        '--user=root',
        '--auth-root-authentication-method=normal',
      ].concat(['--skip-test-db', '--skip-name-resolve']),
      { encoding: 'utf8' },
    );
    if (install.status !== 0) {
      throw new FerryError(
        'SANDBOX_STACK_START',
        `mariadb-install-db failed: ${install.stderr || install.error}`,
      );
    }
    const lines = [
      '[mariadbd]',
      `datadir=${datadir}`,
      `tmpdir=${tmp}`,
      `socket=${this.socket}`,
      `pid-file=${join(this.dir, 'mysqld.pid')}`,
      `bind-address=${o.address}`,
      `port=${o.port}`,
      'user=root',
      'skip-name-resolve',
      `server-id=${o.serverId}`,
      `gtid-domain-id=${o.domain ?? o.serverId}`,
      `log-error=${this.errorLog}`,
      `innodb-buffer-pool-size=${o.bufferPool ?? '32M'}`,
      `innodb-log-file-size=${o.logFileSize ?? '16M'}`,
      'performance-schema=OFF',
      `relay-log=${join(this.dir, 'relay')}`,
    ];
    if (o.binlog !== false) {
      lines.push(`log-bin=${join(this.dir, 'binlog')}`, `binlog-format=${o.binlogFormat ?? 'ROW'}`);
      lines.push('gtid-strict-mode=1', 'log-slave-updates=0');
    } else lines.push('skip-log-bin');
    if (o.tls) lines.push(`ssl-ca=${o.tls.ca}`, `ssl-cert=${o.tls.cert}`, `ssl-key=${o.tls.key}`);
    lines.push(`!includedir ${this.confDir}`, '');
    writeFileSync(join(this.dir, 'my.cnf'), lines.join('\n'));
    process.once('exit', this.onExit);
    await this.launch('start');
    this.sql(
      `CREATE USER 'admin'@'%' IDENTIFIED BY ${quote(o.adminPassword)}; GRANT ALL ON *.* TO 'admin'@'%' WITH GRANT OPTION;` +
        (o.binlog !== false ? ' RESET MASTER;' : ''),
    );
    writeFileSync(
      this.adminOptionFile,
      `# The administrator of the private MariaDB in ${this.dir}\n[client]\nuser = admin\npassword = "${o.adminPassword.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"\nsocket = ${this.socket}\n`,
      { mode: 0o600 },
    );
    return this;
  }

  private async launch(what: string): Promise<void> {
    const child = spawn(MARIADBD, [`--defaults-file=${join(this.dir, 'my.cnf')}`], { stdio: 'ignore' });
    this.child = child;
    for (let i = 0; i < 600; i++) {
      if (child.exitCode !== null || child.signalCode !== null) break;
      const r = spawnSync('mariadb-admin', ['--no-defaults', '-S', this.socket, '-u', 'root', 'ping'], {
        encoding: 'utf8',
      });
      if (r.status === 0) return;
      await sleep(100);
    }
    child.kill('SIGKILL');
    const log = existsSync(this.errorLog) ? readFileSync(this.errorLog, 'utf8').slice(-1500) : '';
    throw new FerryError(
      'SANDBOX_STACK_START',
      `mariadbd did not ${what} on ${this.address}:${this.port}: ${log}`,
    );
  }

  /** Run SQL through the `mariadb` client as root over the socket; stdout, tab separated, no headers. */
  sql(statements: string, database?: string): string {
    const r = spawnSync(
      'mariadb',
      [
        '--no-defaults',
        '-S',
        this.socket,
        '-u',
        'root',
        '-N',
        '-B',
        ...(database ? ['-D', database] : []),
        '-e',
        statements,
      ],
      { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
    );
    if (r.status !== 0)
      throw new FerryError('DB_QUERY', `mariadb on ${this.address}: ${r.stderr || r.error}`);
    return r.stdout;
  }

  /** Shut down cleanly and start again with the same options. */
  async restart(): Promise<void> {
    const old = this.child;
    if (old && old.exitCode === null && old.signalCode === null) {
      const exited = new Promise((resolve) => old.once('exit', resolve));
      old.kill('SIGTERM');
      await exited;
    }
    await this.launch('restart');
  }

  /** Kill the server; `remove` also deletes its folder. */
  async stop(opts: { remove?: boolean } = {}): Promise<void> {
    process.removeListener('exit', this.onExit);
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((resolve) => c.once('exit', resolve));
      c.kill('SIGKILL');
      await exited;
    }
    if (opts.remove) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A SQL string literal. */
export function quote(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}
