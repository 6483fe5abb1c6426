/**
 * Private PostgreSQL servers for the tests: each `startPostgres` runs its own `postgres` (Debian's
 * server binaries, as the `postgres` user, since PostgreSQL refuses to run as root) with its own
 * data folder, socket folder and loopback port under a temporary folder, never the machine's own
 * cluster. `stop()` stops it and removes the folder.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';

/** The newest installed server's binaries (Debian keeps them per major version). */
function binDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length > 0 ? join(root, versions[0]!, 'bin') : undefined;
}

const BIN = binDir();

/** True when Debian's PostgreSQL server and its `postgres` user are installed. */
export const postgresInstalled =
  BIN !== undefined && spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).status === 0;

/** A running private server. */
export interface PostgresServer {
  address: string;
  port: number;
  /** `postgres://ferry:…@address:port/ferry`: a password user owning the `ferry` database. */
  url: string;
  user: string;
  password: string;
  database: string;
  dir: string;
  /** Run SQL through `psql` as the superuser over the socket; returns stdout (unaligned, tuples only). */
  sql(statements: string, database?: string): string;
  /** Stop the server abruptly (SIGKILL of the postmaster and its children). */
  kill(): void;
  /** Start it again on the same folder and port (after `kill`). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** Options of one private server. */
export interface PostgresOptions {
  /** Loopback address it listens on (default 127.0.0.1). */
  address?: string;
  /** A fixed port (default: a free one). */
  port?: number;
}

function asPostgres(
  cmd: string,
  args: string[],
  input?: string,
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { encoding: 'utf8', input });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Start a private PostgreSQL with a `ferry` user and database; throws with its log when it cannot start. */
export async function startPostgres(opts: PostgresOptions = {}): Promise<PostgresServer> {
  if (!BIN || !postgresInstalled) throw new Error('PostgreSQL is not installed (Debian package postgresql)');
  const bin = BIN;
  const address = opts.address ?? '127.0.0.1';
  const port = opts.port ?? (await freePort(address));
  const dir = mkdtempSync(join(tmpdir(), 'ferry-pg-'));
  const data = join(dir, 'data');
  const sock = join(dir, 'sock');
  const user = 'ferry';
  const password = `pw-${Math.random().toString(36).slice(2, 12)}`;
  const database = 'ferry';
  spawnSync('mkdir', ['-p', data, sock]);
  chownAll(dir);
  const init = asPostgres(join(bin, 'initdb'), [
    '-D',
    data,
    '-A',
    'trust',
    '-U',
    'postgres',
    '--no-sync',
    '-E',
    'UTF8',
  ]);
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
  }
  // Password logins over TCP for the `ferry` user, trust over the socket for psql as superuser.
  writeFileSync(
    join(data, 'pg_hba.conf'),
    'local all postgres trust\nhost all all 127.0.0.0/8 scram-sha-256\nhost all all ::1/128 scram-sha-256\n',
  );
  chownAll(dir);

  let proc: ChildProcess | undefined;
  let log = '';
  const launch = async (): Promise<void> => {
    log = '';
    const args = ['-u', 'postgres', '--', join(bin, 'postgres'), '-D', data, '-p', String(port)];
    args.push('-c', `listen_addresses=${address}`, '-c', `unix_socket_directories=${sock}`);
    args.push('-c', 'fsync=on', '-c', 'max_connections=50', '-c', 'shared_buffers=16MB');
    proc = spawn('runuser', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout?.on('data', (b: Buffer) => (log += b.toString()));
    proc.stderr?.on('data', (b: Buffer) => (log = (log + b.toString()).slice(-8000)));
    const deadline = Date.now() + 30_000;
    for (;;) {
      const ready = spawnSync(join(bin, 'pg_isready'), ['-h', sock, '-p', String(port)], {
        encoding: 'utf8',
      });
      if (ready.status === 0) return;
      if (proc.exitCode !== null || Date.now() > deadline)
        throw new Error(`PostgreSQL did not start (exit ${proc.exitCode}): ${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const sql = (statements: string, db = 'postgres'): string => {
    const r = asPostgres(
      join(bin, 'psql'),
      ['-h', sock, '-p', String(port), '-U', 'postgres', '-d', db, '-At', '-v', 'ON_ERROR_STOP=1'],
      statements,
    );
    if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
    return r.stdout;
  };
  const kill = (): void => {
    const pm = pidOf(data);
    if (pm === undefined) return;
    // The postmaster and its backends: a killed postmaster's children would linger otherwise.
    spawnSync('pkill', ['-KILL', '-P', String(pm)]);
    try {
      process.kill(pm, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const exited = async (): Promise<void> => {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((r) => {
      p.once('exit', () => r());
      setTimeout(r, 10_000);
    });
  };

  try {
    await launch();
    sql(`CREATE USER ${user} PASSWORD '${password}'; CREATE DATABASE ${database} OWNER ${user};`);
  } catch (err) {
    kill();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  return {
    address,
    port,
    url: `postgres://${user}:${password}@${address}:${port}/${database}`,
    user,
    password,
    database,
    dir,
    sql,
    kill,
    async restart() {
      kill();
      await exited();
      // A killed postmaster leaves its pid file; postgres removes a stale one itself.
      await launch();
    },
    async stop() {
      if (proc && proc.exitCode === null) {
        spawnSync('runuser', [
          '-u',
          'postgres',
          '--',
          join(bin, 'pg_ctl'),
          '-D',
          data,
          '-m',
          'immediate',
          '-w',
          'stop',
        ]);
        await exited();
        kill();
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The running postmaster's pid, from its pid file (undefined when it is not running). */
function pidOf(data: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(join(data, 'postmaster.pid'), 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(text.split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

function chownAll(dir: string): void {
  chownSync(dir, uid('postgres'), gid('postgres'));
  spawnSync('chown', ['-R', 'postgres:postgres', dir]);
}

function uid(name: string): number {
  return Number(spawnSync('id', ['-u', name], { encoding: 'utf8' }).stdout.trim());
}

function gid(name: string): number {
  return Number(spawnSync('id', ['-g', name], { encoding: 'utf8' }).stdout.trim());
}
