/**
 * Site data sync between agents with rsync over TLS.
 *
 * Receiving side: a TLS listener (node:tls) on the agent's own address, up while at least one
 * receive session is open. Each connection that completes the handshake and sends its first byte
 * gets one `rsync --server --daemon --config=<stateDir>/rsyncd.conf .` (rsync's daemon protocol
 * over a remote shell), its stdin and stdout piped to the TLS socket. Each session is a module of
 * its own (`ferry-<session>`), write-only, unlisted, with its own auth user and a random secret in
 * a secrets file of mode 0600 that goes when the session closes. The listener's certificate is the
 * agent's HTTPS one when given, else a self-signed one it keeps in `<stateDir>/tls` (rsync-tls.ts);
 * a session's endpoint pins its fingerprint. Nothing ever speaks the bare rsync daemon protocol on
 * the network. The agent keeps a site's session from its first pass to its last (one secret per
 * migration) and closes it when the site starts taking writes there.
 *
 * Sending side: `rsync -a --delete -e <TLS connector>` of the site's data folder into that module,
 * the connector pinning the receiver's certificate, reporting progress while it runs and the files
 * and bytes moved at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { FerryError } from '../common/errors.js';
import {
  connector,
  pinRefused,
  pinnedCertificate,
  receiverCertificate,
  type ReceiverCertificate,
} from './rsync-tls.js';

/** What a sender needs to push into a receive session. */
export interface SyncEndpoint {
  address: string;
  port: number;
  module: string;
  user: string;
  secret: string;
  /**
   * SHA-256 of the receiver's TLS certificate (DER, lower-case hex): the only certificate a sender
   * accepts there. Set by rsync sessions; in-process ones have none.
   */
  fingerprint?: string;
  /** Set for a session of an in-process agent (transport.ts); rsync sessions have none. */
  transport?: 'in-process';
  /** The session of the site's mail (its Maildirs), when the receiver takes mail for the domain. */
  mail?: SyncEndpoint;
}

export interface RsyncReceiverOptions {
  /** Address the TLS listener binds (the agent's own address, reachable from other agents). */
  address: string;
  /** Port of the listener. Default 873. */
  port?: number;
  /** Folder for the rsync config, secrets, log and the self-signed certificate. */
  stateDir: string;
  /** The rsync binary. Default `rsync`. */
  rsyncPath?: string;
  /** Certificate and key of the listener (the agent's HTTPS ones); default a self-signed one. */
  tls?: { certFile: string; keyFile: string };
}

const SESSION_RE = /^[a-z0-9][a-z0-9._-]{0,99}$/;
/** One connection of the receiver: its rsync daemon, and the module its client asked for once it did. */
interface Conn {
  socket: TLSSocket;
  child?: ChildProcess;
  module?: string;
}
/** Connections served at once; one more is closed at once (that sender's pass fails). */
const MAX_CONNECTIONS = 32;
/** A connection must complete its handshake, then send its first byte, within this time. */
const START_TIMEOUT_MS = 10_000;

/** The receiving half: a TLS listener whose connections speak to rsync daemons of the sessions. */
export class RsyncReceiver {
  private readonly sessions = new Map<string, { path: string; endpoint: SyncEndpoint }>();
  private server: Server | undefined;
  private readonly conns = new Set<Conn>();
  private certificate: ReceiverCertificate | undefined;
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
      this.certificate ??= await receiverCertificate(join(this.opts.stateDir, 'tls'), this.opts.tls);
      const module = `ferry-${session}`;
      const endpoint: SyncEndpoint = {
        address: this.opts.address,
        port: this.port,
        module,
        user: module,
        secret: existing?.endpoint.secret ?? randomBytes(24).toString('base64url'),
        fingerprint: this.certificate.fingerprint,
      };
      this.sessions.set(session, { path, endpoint });
      await this.writeConfig();
      await this.listen();
      return endpoint;
    });
  }

  has(session: string): boolean {
    return this.sessions.has(session);
  }

  /**
   * Close a session (no-op when it is not open): its module and secret are gone for the next
   * connection at once. The listener stops with the last session, and the rsync processes still
   * serving connections are ended.
   */
  close(session: string): Promise<void> {
    return this.serialize(async () => {
      if (!this.sessions.delete(session)) return;
      // A connection already in the session (a sender's prepared pass) ends with it.
      for (const c of this.conns) if (c.module === `ferry-${session}`) this.end(c);
      await rm(join(this.opts.stateDir, `ferry-${session}.secret`), { force: true });
      await this.writeConfig();
      if (this.sessions.size === 0) await this.stopListening();
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
      await this.writeConfig().catch(() => undefined);
      await this.stopListening();
    });
  }

  private async writeConfig(): Promise<void> {
    const dir = this.opts.stateDir;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const root = process.getuid?.() === 0;
    const lines = [
      '# Written by the ferry agent; one module per open receive session.',
      'use chroot = no',
      'reverse lookup = no',
      'max verbosity = 0',
      'timeout = 600',
      `log file = ${join(dir, 'rsyncd.log')}`,
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

  private async listen(): Promise<void> {
    if (this.server) return;
    const cert = this.certificate!;
    const server = createServer(
      { cert: cert.cert, key: cert.key, minVersion: 'TLSv1.3', handshakeTimeout: START_TIMEOUT_MS },
      (socket) => this.serve(socket),
    );
    server.maxConnections = MAX_CONNECTIONS;
    // A failed handshake (a plain rsync client, a wrong pin) ends that connection only.
    server.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(
          new FerryError(
            'RSYNC_DAEMON_FAILED',
            `cannot listen for site data on ${this.opts.address}:${this.port}: ${err.message}`,
            { cause: err },
          ),
        ),
      );
      server.listen(this.port, this.opts.address, () => resolve());
    });
    server.on('error', () => undefined);
    this.server = server;
  }

  /**
   * One authenticated TLS connection: an rsync daemon process for it once it sends something.
   * The module the client names (the line after its greeting) is noted: a connection to a session
   * that is closed, or that closes later, is ended before the daemon takes any data.
   */
  private serve(socket: TLSSocket): void {
    const conn: Conn = { socket };
    this.conns.add(conn);
    socket.on('error', () => undefined);
    socket.setTimeout(START_TIMEOUT_MS, () => socket.destroy());
    socket.once('close', () => {
      this.conns.delete(conn);
      const child = conn.child;
      if (child && child.exitCode === null && child.signalCode === null) {
        child.stdin?.end();
        setTimeout(() => child.kill('SIGKILL'), 2000).unref();
      }
    });
    socket.once('data', (first: Buffer) => {
      socket.pause();
      socket.setTimeout(0); // rsync's own `timeout` watches the transfer from here
      const child = spawn(
        this.opts.rsyncPath ?? 'rsync',
        ['--server', '--daemon', `--config=${join(this.opts.stateDir, 'rsyncd.conf')}`, '.'],
        {
          stdio: ['pipe', 'pipe', 'ignore'],
          env: {
            PATH: process.env.PATH ?? '/usr/bin:/bin',
            LC_ALL: 'C',
            // rsync's daemon-over-remote-shell mode names its peer from this (its log, `hosts allow`).
            SSH_CONNECTION: `${socket.remoteAddress ?? '-'} ${socket.remotePort ?? 0} ${this.opts.address} ${this.port}`,
          },
        },
      );
      conn.child = child;
      child.once('error', () => socket.destroy());
      child.stdin!.on('error', () => undefined);
      let head = '';
      const watch = (chunk: Buffer) => {
        head += chunk.toString('latin1');
        const lines = head.split('\n');
        const module = lines.slice(0, -1).find((l) => l !== '' && !l.startsWith('@RSYNCD:'));
        if (module === undefined && head.length < 4096) return;
        socket.off('data', watch);
        conn.module = module ?? '';
        if (![...this.sessions.values()].some((x) => x.endpoint.module === conn.module)) this.end(conn);
      };
      watch(first);
      if (conn.module === undefined) socket.on('data', watch);
      if (socket.destroyed) return;
      child.stdin!.write(first);
      socket.pipe(child.stdin!);
      child.stdout!.pipe(socket);
    });
  }

  /** End a connection and its daemon. */
  private end(c: Conn): void {
    c.child?.kill('SIGTERM');
    c.socket.destroy();
    this.conns.delete(c);
  }

  private async stopListening(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const c of this.conns) this.end(c);
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
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
  /** rsync `--exclude` patterns (excluded files are neither sent nor deleted on the receiver). */
  exclude?: string[];
  /** Copy symlinks to folders as the folders they point to (`--copy-dirlinks`). */
  copyDirLinks?: boolean;
}

/**
 * Push `source` into the receive session `to` (delete what the source no longer has), or with
 * `paths` only those paths (`--files-from`, a missing one deleted: `--delete-missing-args`), over
 * TLS to the certificate `to.fingerprint` pins (RSYNC_TLS_PIN for any other, or none).
 */
export async function rsyncPush(
  opts: PushOptions,
): Promise<{ files: number; bytes: number; totalBytes: number }> {
  const run = await startRsync(opts, opts.paths !== undefined);
  if (opts.paths) run.givePaths(opts.paths);
  return run.result;
}

/**
 * A push of tracked paths started before they are known: rsync is running, connected over TLS
 * to the session's receiver, authenticated and waiting for its file list. A pass inside the
 * cut-over's write pause that finds one spends no time starting processes or shaking hands
 * (about half of a small pass). Nothing is sent before `run`; the receiver ends it when the
 * session closes, and rsync's own I/O timeout (`ioTimeoutS`) ends one left waiting, so its owner
 * replaces it well before that.
 */
export class PreparedPush {
  private used = false;
  private exited = false;
  /** When it started (its owner replaces it before rsync's I/O timeout). */
  readonly startedAt = Date.now();

  private constructor(private readonly rs: RunningRsync) {
    rs.child.once('exit', () => (this.exited = true));
    rs.result.catch(() => undefined); // read by `run`, or dropped with the prepared push
  }

  /** Start rsync for a pass of paths into `to` from `source`. */
  static async start(opts: Omit<PushOptions, 'paths' | 'onProgress'>): Promise<PreparedPush> {
    return new PreparedPush(await startRsync(opts, true));
  }

  /** Whether it can still take its paths: rsync runs and has none yet. */
  get ready(): boolean {
    return !this.used && !this.exited;
  }

  /** Give rsync its paths (relative to `source`; not empty) and wait for the pass, as `rsyncPush` with `paths`. */
  run(
    paths: string[],
    onProgress?: (p: { bytes: number; percent: number }) => void,
  ): Promise<{ files: number; bytes: number; totalBytes: number }> {
    if (!this.ready)
      throw new FerryError('RSYNC_FAILED', 'this prepared rsync pass was used or has ended; start another');
    this.used = true;
    this.rs.onProgress = onProgress;
    this.rs.givePaths(paths);
    return this.rs.result;
  }

  /** End it unused (no-op once used or ended). */
  cancel(): void {
    if (!this.ready) return;
    this.used = true;
    this.rs.child.kill('SIGTERM');
  }
}

interface RunningRsync {
  child: ChildProcess;
  result: Promise<{ files: number; bytes: number; totalBytes: number }>;
  onProgress: ((p: { bytes: number; percent: number }) => void) | undefined;
  givePaths(paths: string[]): void;
}

/** Start rsync into `to` over the TLS connector; with `byPaths`, it waits for `givePaths`. */
async function startRsync(opts: Omit<PushOptions, 'paths'>, byPaths: boolean): Promise<RunningRsync> {
  const { to } = opts;
  if (!to.fingerprint) {
    throw new FerryError(
      'RSYNC_TLS_PIN',
      `receive session ${to.module} at ${to.address}:${to.port} pins no TLS certificate; site data is never sent without one`,
    );
  }
  const pem = await pinnedCertificate(to.address, to.port, to.fingerprint);
  const tmp = await mkdtemp(join(tmpdir(), 'ferry-push-'));
  try {
    const pinFile = join(tmp, 'receiver.crt');
    await writeFile(pinFile, pem, { mode: 0o600 });
    const run = spawnRsync(opts, connector(to.address, to.port, pinFile), byPaths);
    const cleanup = () => rm(tmp, { recursive: true, force: true });
    run.result = run.result.finally(cleanup);
    return run;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

function spawnRsync(
  opts: Omit<PushOptions, 'paths'>,
  tls: { rsh: string; env: Record<string, string> },
  byPaths: boolean,
): RunningRsync {
  const { to } = opts;
  const host = isIP(to.address) === 6 ? `[${to.address}]` : to.address;
  const args = [
    '-a',
    '--delete',
    '--numeric-ids',
    '--stats',
    '--info=progress2',
    '--no-inc-recursive',
    `--timeout=${opts.ioTimeoutS ?? 60}`,
    '-e',
    tls.rsh,
    ...(byPaths ? ['-r', '--files-from=-', '--from0', '--delete-missing-args', '--force'] : []),
    ...(opts.copyDirLinks ? ['--copy-dirlinks'] : []),
    ...(opts.exclude ?? []).map((x) => `--exclude=${x}`),
    `${opts.source.replace(/\/+$/, '')}/`,
    `${to.user}@${host}::${to.module}/`,
  ];
  const child = spawn(opts.rsyncPath ?? 'rsync', args, {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      RSYNC_PASSWORD: to.secret,
      LC_ALL: 'C',
      ...tls.env,
    },
    stdio: [byPaths ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  const run: RunningRsync = {
    child,
    result: Promise.resolve({ files: 0, bytes: 0, totalBytes: 0 }),
    onProgress: opts.onProgress,
    givePaths(paths) {
      child.stdin!.end(paths.map((p) => `${p}\0`).join(''));
    },
  };
  if (byPaths) child.stdin!.on('error', () => undefined); // rsync exiting early is reported by its exit code
  run.result = new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      out += chunk;
      if (out.length > 1 << 20) out = out.slice(-65536);
      // progress2 lines end in \r: "  1,234,567  45%  1.23MB/s  0:00:01 (xfr#3, to-chk=0/10)"
      const m = /([\d,]+)\s+(\d+)%[^\r\n]*[\r\n]*$/.exec(chunk);
      if (m) run.onProgress?.({ bytes: num(m[1]!), percent: Number(m[2]) });
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
      if (code !== 0 && !(code === 24 && byPaths)) {
        if (pinRefused(err)) {
          reject(
            new FerryError(
              'RSYNC_TLS_PIN',
              `the receiver at ${to.address}:${to.port} presented a TLS certificate other than the ${to.fingerprint} its receive session pins; nothing was sent`,
            ),
          );
          return;
        }
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
  return run;
}

function num(s: string | undefined): number {
  return s ? Number(s.replace(/,/g, '')) : 0;
}
