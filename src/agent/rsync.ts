/**
 * Site data sync between agents with rsync.
 *
 * Receiving side: one `rsync --daemon` bound to the agent's own address, started when the first
 * receive session opens and stopped when the last one closes. Each session is a module of its
 * own (`ferry-<session>`), write-only, unlisted, with its own auth user and a random secret in a
 * secrets file of mode 0600. rsync re-reads its config on each connection, so sessions come and
 * go without a restart. The agent keeps a site's session from its first pass to its last (one
 * secret per migration) and closes it when the site starts taking writes there.
 *
 * Sending side: `rsync -a --delete` of the site's data folder into that module, reporting
 * progress while it runs and the files and bytes moved at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile, chmod } from 'node:fs/promises';
import { connect, isIP } from 'node:net';
import { join } from 'node:path';
import { FerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';

/** What a sender needs to push into a receive session. */
export interface SyncEndpoint {
  address: string;
  port: number;
  module: string;
  user: string;
  secret: string;
  /** Set for a session of an in-process agent (transport.ts); rsync sessions have none. */
  transport?: 'in-process';
}

export interface RsyncReceiverOptions {
  /** Address the daemon binds (the agent's own address, reachable from other agents). */
  address: string;
  /** Port of the daemon. Default 873. */
  port?: number;
  /** Folder for the daemon's config, secrets, pid and log. */
  stateDir: string;
  /** The rsync binary. Default `rsync`. */
  rsyncPath?: string;
}

const SESSION_RE = /^[a-z0-9][a-z0-9._-]{0,99}$/;

/** The receiving half: an rsync daemon whose modules are receive sessions. */
export class RsyncReceiver {
  private readonly sessions = new Map<string, { path: string; endpoint: SyncEndpoint }>();
  private daemon: ChildProcess | undefined;
  private stopping: Promise<void> = Promise.resolve();
  private readonly port: number;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: RsyncReceiverOptions) {
    if (!isIP(opts.address))
      throw new FerryError('RSYNC_OPTIONS', `rsync address "${opts.address}" is not an IP address literal`);
    this.port = opts.port ?? 873;
  }

  /** Open (or return the already open) session `session` writing into `path`. */
  open(session: string, path: string): Promise<SyncEndpoint> {
    if (!SESSION_RE.test(session))
      throw new FerryError(
        'RSYNC_SESSION_INVALID',
        `session "${session}" must be lower-case letters, digits, '.', '_' or '-'`,
      );
    return this.serialize(async () => {
      const existing = this.sessions.get(session);
      if (existing && existing.path === path) return existing.endpoint;
      const module = `ferry-${session}`;
      const endpoint: SyncEndpoint = {
        address: this.opts.address,
        port: this.port,
        module,
        user: module,
        secret: existing?.endpoint.secret ?? randomBytes(24).toString('base64url'),
      };
      this.sessions.set(session, { path, endpoint });
      await this.writeConfig();
      await this.ensureDaemon();
      return endpoint;
    });
  }

  has(session: string): boolean {
    return this.sessions.has(session);
  }

  /**
   * Close a session (no-op when it is not open): its module and secret are gone for the next
   * connection at once. The daemon stops with the last session, in the background (an rsync
   * daemon takes a few hundred ms to exit and nobody needs to wait for it).
   */
  close(session: string): Promise<void> {
    return this.serialize(async () => {
      if (!this.sessions.delete(session)) return;
      await rm(join(this.opts.stateDir, `ferry-${session}.secret`), { force: true });
      await this.writeConfig();
      if (this.sessions.size === 0) this.stopping = this.stopDaemon();
    });
  }

  list(): string[] {
    return [...this.sessions.keys()];
  }

  async stop(): Promise<void> {
    await this.serialize(async () => {
      for (const s of this.sessions.keys())
        await rm(join(this.opts.stateDir, `ferry-${s}.secret`), { force: true });
      this.sessions.clear();
      await this.stopping;
      await this.stopDaemon();
    });
  }

  private async writeConfig(): Promise<void> {
    const dir = this.opts.stateDir;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const root = process.getuid?.() === 0;
    const lines = [
      '# Written by the ferry agent; one module per open receive session.',
      `pid file = ${join(dir, 'rsyncd.pid')}`,
      'use chroot = no',
      'reverse lookup = no',
      'max verbosity = 0',
    ];
    for (const [session, { path, endpoint }] of this.sessions) {
      const secrets = join(dir, `ferry-${session}.secret`);
      await writeFile(secrets, `${endpoint.user}:${endpoint.secret}\n`, { mode: 0o600 });
      await chmod(secrets, 0o600);
      lines.push(
        '',
        `[${endpoint.module}]`,
        `    path = ${path}`,
        '    read only = no',
        '    write only = yes',
        '    list = no',
        `    auth users = ${endpoint.user}`,
        `    secrets file = ${secrets}`,
        '    strict modes = yes',
        ...(root
          ? [`    uid = ${process.getuid!()}`, `    gid = ${process.getgid!()}`, '    numeric ids = yes']
          : []),
      );
    }
    await writeFile(join(dir, 'rsyncd.conf'), lines.join('\n') + '\n', { mode: 0o600 });
  }

  private async ensureDaemon(): Promise<void> {
    if (this.daemon && this.daemon.exitCode === null) return;
    await this.stopping; // the previous daemon must have let go of the port
    const dir = this.opts.stateDir;
    const log = join(dir, 'rsyncd.log');
    const child = spawn(
      this.opts.rsyncPath ?? 'rsync',
      [
        '--daemon',
        '--no-detach',
        `--config=${join(dir, 'rsyncd.conf')}`,
        `--address=${this.opts.address}`,
        `--port=${this.port}`,
        `--log-file=${log}`,
      ],
      { stdio: 'ignore' },
    );
    let failed: Error | undefined;
    child.once('error', (err) => (failed = err));
    this.daemon = child;
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      if (failed || child.exitCode !== null) break;
      if (await canConnect(this.opts.address, this.port)) return;
      await sleep(50);
    }
    const tail = (await readFile(log, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' | ');
    await this.stopDaemon();
    throw new FerryError(
      'RSYNC_DAEMON_FAILED',
      `rsync daemon did not listen on ${this.opts.address}:${this.port}: ${failed?.message ?? tail ?? 'no log'}`,
    );
  }

  private async stopDaemon(): Promise<void> {
    const d = this.daemon;
    this.daemon = undefined;
    if (!d || d.exitCode !== null || d.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => d.once('exit', () => resolve()));
    d.kill('SIGTERM');
    const timer = setTimeout(() => d.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }
}

/** Progress of one push, as the agent reports it while it runs and after. */
export interface SyncProgress {
  state: 'running' | 'done' | 'failed';
  startedAt: number;
  endedAt: number | null;
  /** Bytes sent so far (rsync's overall progress) and its percent estimate. */
  bytes: number;
  percent: number;
  /** Set when done: files and bytes of data transferred. */
  files?: number;
  error?: string;
}

export interface PushOptions {
  /** Local folder whose content is pushed (a trailing slash is added). */
  source: string;
  to: SyncEndpoint;
  rsyncPath?: string;
  /** rsync's I/O timeout in seconds. Default 60. */
  ioTimeoutS?: number;
  onProgress?: (p: { bytes: number; percent: number }) => void;
  /**
   * Push only these paths (relative to `source`): each file is copied, each folder copied whole,
   * each path the source no longer has deleted on the receiver. Default: the whole folder.
   */
  paths?: string[];
}

/**
 * Push `source` into the receive session `to` (delete what the source no longer has), or with
 * `paths` only those paths (`--files-from`, a missing one deleted: `--delete-missing-args`).
 */
export function rsyncPush(opts: PushOptions): Promise<{ files: number; bytes: number; totalBytes: number }> {
  const { to } = opts;
  const host = isIP(to.address) === 6 ? `[${to.address}]` : to.address;
  const url = `rsync://${to.user}@${host}:${to.port}/${to.module}/`;
  const args = [
    '-a',
    '--delete',
    '--numeric-ids',
    '--stats',
    '--info=progress2',
    '--no-inc-recursive',
    `--timeout=${opts.ioTimeoutS ?? 60}`,
    '--contimeout=10',
    ...(opts.paths ? ['-r', '--files-from=-', '--from0', '--delete-missing-args', '--force'] : []),
    `${opts.source.replace(/\/+$/, '')}/`,
    url,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(opts.rsyncPath ?? 'rsync', args, {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', RSYNC_PASSWORD: to.secret, LC_ALL: 'C' },
      stdio: [opts.paths ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    if (opts.paths) {
      child.stdin!.on('error', () => undefined); // rsync exiting early is reported by its exit code
      child.stdin!.end(opts.paths.map((p) => `${p}\0`).join(''));
    }
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      out += chunk;
      if (out.length > 1 << 20) out = out.slice(-65536);
      // progress2 lines end in \r: "  1,234,567  45%  1.23MB/s  0:00:01 (xfr#3, to-chk=0/10)"
      const m = /([\d,]+)\s+(\d+)%[^\r\n]*[\r\n]*$/.exec(chunk);
      if (m) opts.onProgress?.({ bytes: num(m[1]!), percent: Number(m[2]) });
    });
    child.stderr!.on('data', (chunk: string) => {
      err = (err + chunk).slice(-4096);
    });
    child.once('error', (e) =>
      reject(new FerryError('RSYNC_FAILED', `cannot run rsync: ${e.message}`, { cause: e })),
    );
    child.once('close', (code) => {
      // 24: files vanished while rsync ran. In a pass of tracked paths, their removal is tracked
      // too and is in the next pass.
      if (code !== 0 && !(code === 24 && opts.paths)) {
        reject(
          new FerryError(
            'RSYNC_FAILED',
            `rsync to ${to.address}:${to.port}/${to.module} exited ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`,
          ),
        );
        return;
      }
      const files = num(/Number of regular files transferred: ([\d,]+)/.exec(out)?.[1]);
      const bytes = num(/Total transferred file size: ([\d,]+)/.exec(out)?.[1]);
      const totalBytes = num(/Total file size: ([\d,]+)/.exec(out)?.[1]);
      resolve({ files, bytes, totalBytes });
    });
  });
}

function num(s: string | undefined): number {
  return s ? Number(s.replace(/,/g, '')) : 0;
}

function canConnect(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: address, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
