/**
 * How a host agent moves a site's bytes to another agent. The agent's sync (open a receive
 * session on the peer, push into it, the peer reloads) is one code path; only the transport
 * differs:
 * - `RsyncTransport`: rsync daemons behind a TLS listener receive, `rsync -a --delete` pushes
 *   over TLS pinned to the receiver's certificate (rsync.ts). What `ferry agent` uses between
 *   servers.
 * - `InProcessTransport`: both agents live in one process (the sandbox); the push copies with
 *   `syncDirectory` into the folder the peer's session names. No daemon, no privileges.
 * A push into a session of the other kind fails with SYNC_UNSUPPORTED.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { FerryError } from '../common/errors.js';
import { syncDirectory, syncPaths } from '../host/index.js';
import { PreparedPush, RsyncReceiver, rsyncPush, type SyncEndpoint } from './rsync.js';

/**
 * A prepared pass is replaced after this long unused: rsync's I/O timeout (60 s) would end it,
 * and a pass should not find one about to be ended.
 */
const PREPARED_MAX_AGE_MS = 30_000;

/** What a peer of a sync offers: a receive session for a site, and a reload once data is in. */
export interface SyncPeer {
  readonly id: string;
  openSyncReceiver(domain: string): Promise<SyncEndpoint>;
  reloadSite(domain: string): Promise<void>;
}

/** True when `to` can receive a sync (a `HostAgent` or an `HttpHostDriver`). */
export function isSyncPeer(to: unknown): to is SyncPeer {
  const p = to as Partial<SyncPeer> | undefined;
  return typeof p?.openSyncReceiver === 'function' && typeof p.reloadSite === 'function';
}

/** Bytes (and files, when known) pushed so far, and the percent done. */
export type PushProgress = { bytes: number; percent: number; files?: number };

/** Both halves of a byte transport: receive sessions, and pushes into another agent's session. */
export interface SyncTransport {
  readonly kind: 'rsync' | 'in-process';
  /** Open (or find open, same secret) the receive session `session` writing into `path`. */
  open(session: string, path: string): Promise<SyncEndpoint>;
  /** Close a receive session; no-op when it is not open. */
  close(session: string): Promise<void>;
  /** Open receive sessions. */
  list(): string[];
  /** Close every session and whatever serves them. */
  stop(): Promise<void>;
  /**
   * Make the session `to` a copy of `source` (deleting what `source` no longer has); with `paths`
   * (relative to `source`), only those paths: a tracked pass's delta (tracker.ts).
   */
  push(
    source: string,
    to: SyncEndpoint,
    onProgress?: (p: PushProgress) => void,
    paths?: string[],
  ): Promise<{ files: number; bytes: number; totalBytes?: number }>;
  /**
   * Get the next pass of paths from `source` into `to` ready before it is asked for (rsync:
   * connected and waiting for its paths), so that it starts at once; no-op where a pass has no
   * start-up cost. `push` uses it when its source and session match. Idempotent.
   */
  prepare?(source: string, to: SyncEndpoint): void;
  /** Drop what `prepare` made ready for `source` (its migration ended or moved on). */
  unprepare?(source: string): void;
}

/** rsync sessions behind a TLS listener, and rsync pushes over TLS. */
export class RsyncTransport implements SyncTransport {
  readonly kind = 'rsync';
  private readonly receiver: RsyncReceiver;

  /** Prepared passes by source folder: the session they push into, and their replacement timer. */
  private readonly prepared = new Map<
    string,
    { to: SyncEndpoint; push: Promise<PreparedPush | undefined>; timer: NodeJS.Timeout }
  >();

  constructor(
    private readonly opts: {
      address: string;
      port?: number;
      stateDir: string;
      rsyncPath?: string;
      tls?: { certFile: string; keyFile: string };
    },
  ) {
    this.receiver = new RsyncReceiver(opts);
  }

  prepare(source: string, to: SyncEndpoint, replace = false): void {
    const current = this.prepared.get(source);
    if (current && !replace && sameSession(current.to, to)) return;
    this.unprepare(source);
    if (to.transport === 'in-process' || !to.fingerprint) return;
    const push = PreparedPush.start({
      source,
      to,
      ...(this.opts.rsyncPath ? { rsyncPath: this.opts.rsyncPath } : {}),
    }).catch(() => undefined); // not ready: the pass starts its own rsync
    // Replaced while it still waits; one the receiver ended (its session closed) is not.
    const timer = setTimeout(() => {
      void push.then((x) => {
        if (this.prepared.get(source)?.timer !== timer) return;
        if (x?.ready) this.prepare(source, to, true);
        else this.unprepare(source);
      });
    }, PREPARED_MAX_AGE_MS);
    timer.unref();
    this.prepared.set(source, { to, push, timer });
  }

  unprepare(source: string): void {
    const p = this.prepared.get(source);
    if (!p) return;
    this.prepared.delete(source);
    clearTimeout(p.timer);
    void p.push.then((x) => x?.cancel());
  }

  /** The prepared pass for `source` into `to`, taken (unprepared), when one is ready now. */
  private async takePrepared(source: string, to: SyncEndpoint): Promise<PreparedPush | undefined> {
    const p = this.prepared.get(source);
    if (!p || !sameSession(p.to, to)) return undefined;
    this.prepared.delete(source);
    clearTimeout(p.timer);
    const push = await p.push;
    if (push?.ready && Date.now() - push.startedAt < PREPARED_MAX_AGE_MS) return push;
    push?.cancel();
    return undefined;
  }

  open(session: string, path: string): Promise<SyncEndpoint> {
    return this.receiver.open(session, path);
  }

  close(session: string): Promise<void> {
    return this.receiver.close(session);
  }

  list(): string[] {
    return this.receiver.list();
  }

  stop(): Promise<void> {
    for (const source of [...this.prepared.keys()]) this.unprepare(source);
    return this.receiver.stop();
  }

  async push(
    source: string,
    to: SyncEndpoint,
    onProgress?: (p: PushProgress) => void,
    paths?: string[],
  ): Promise<{ files: number; bytes: number; totalBytes: number }> {
    if (to.transport === 'in-process') {
      throw new FerryError(
        'SYNC_UNSUPPORTED',
        `receive session ${to.module} is in-process; this agent pushes with rsync`,
      );
    }
    const ready = await this.takePrepared(source, to);
    if (ready && paths?.length) return ready.run(paths, onProgress);
    ready?.cancel();
    return rsyncPush({
      source,
      to,
      ...(this.opts.rsyncPath ? { rsyncPath: this.opts.rsyncPath } : {}),
      ...(onProgress ? { onProgress } : {}),
      ...(paths ? { paths } : {}),
    });
  }
}

/** Whether two endpoints name the same receive session, with the same secret and certificate. */
function sameSession(a: SyncEndpoint, b: SyncEndpoint): boolean {
  return (
    a.address === b.address &&
    a.port === b.port &&
    a.module === b.module &&
    a.user === b.user &&
    a.secret === b.secret &&
    a.fingerprint === b.fingerprint
  );
}

/** Every in-process session of this process, by module: where it writes, and its secret. */
const inProcessSessions = new Map<string, { path: string; secret: string }>();

/** Sessions in this process's memory; pushes copy with syncDirectory. */
export class InProcessTransport implements SyncTransport {
  readonly kind = 'in-process';
  private readonly sessions = new Map<string, SyncEndpoint>();

  /** `address` is only reported in endpoints (the agent's own address). */
  constructor(private readonly address: string) {}

  async open(session: string, path: string): Promise<SyncEndpoint> {
    const existing = this.sessions.get(session);
    if (existing && inProcessSessions.get(existing.module)?.path === path) return existing;
    const module = existing?.module ?? `ferry-${session}-${randomBytes(4).toString('hex')}`;
    const secret = existing?.secret ?? randomBytes(24).toString('base64url');
    const endpoint: SyncEndpoint = {
      address: this.address,
      port: 0,
      module,
      user: module,
      secret,
      transport: 'in-process',
    };
    inProcessSessions.set(module, { path, secret });
    this.sessions.set(session, endpoint);
    return endpoint;
  }

  async close(session: string): Promise<void> {
    const e = this.sessions.get(session);
    if (!e) return;
    this.sessions.delete(session);
    inProcessSessions.delete(e.module);
  }

  list(): string[] {
    return [...this.sessions.keys()];
  }

  async stop(): Promise<void> {
    for (const s of [...this.sessions.keys()]) await this.close(s);
  }

  async push(
    source: string,
    to: SyncEndpoint,
    onProgress?: (p: PushProgress) => void,
    paths?: string[],
  ): Promise<{ files: number; bytes: number }> {
    if (to.transport !== 'in-process') {
      throw new FerryError(
        'SYNC_UNSUPPORTED',
        `receive session ${to.module} at ${to.address}:${to.port} is rsync; this agent copies in-process only`,
      );
    }
    const session = inProcessSessions.get(to.module);
    if (!session || !sameSecret(session.secret, to.secret)) {
      throw new FerryError(
        'SYNC_SESSION_CLOSED',
        `receive session ${to.module} is closed (the site takes writes there, or was removed)`,
      );
    }
    if (paths) {
      const res = await syncPaths(source, session.path, paths);
      onProgress?.({ bytes: res.bytes, percent: 100, files: res.files });
      return { files: res.files, bytes: res.bytes };
    }
    const res = await syncDirectory(source, session.path, {
      delete: true,
      ...(onProgress
        ? {
            onProgress: (p: { bytes: number; files: number; percent: number }) =>
              onProgress({ bytes: p.bytes, percent: p.percent, files: p.files }),
          }
        : {}),
    });
    return { files: res.files, bytes: res.bytes };
  }
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
