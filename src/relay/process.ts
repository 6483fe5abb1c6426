/**
 * A userspace redirect that outlives the process that started it. `RelayProcess` runs the relay
 * (`createUserspaceRelay`) in a child process of its own session (`detached`), so a SIGKILL of
 * the starting process, or of its process group, leaves it listening and relaying. The child is
 * driven over a Unix socket (`socketPath`) with one JSON line per request and reply; any process
 * may connect to it later: `RelayProcess.adopt(socketPath)` is how a restarted agent takes back
 * the redirects of its previous run.
 *
 * Contract: the `RedirectEngine` calls, each answered once the child has applied it; `close()`
 * stops the child (it closes its relay, removes its socket and exits); `detach()` drops the
 * connection and leaves the child running. A child with no connected controller for
 * `orphanTimeoutMs` closes and exits by itself, so nothing outlives a dead agent for ever.
 */
import {
  CONTROL_REQUEST_TIMEOUT_MS,
  ControlClient,
  MAX_SOCKET_PATH,
  childEntry,
  spawnDetached,
} from '../common/control-socket.js';
import { FerryError } from '../common/errors.js';
import type { ListenSpec, RelayOptions } from './options.js';
import type { RedirectEngine, RelayStats, Upstream } from './engine.js';
import { resolveRelayOptions } from './options.js';

/** What the child is started with (its one argument, as JSON). */
export interface RelayProcessConfig {
  relay: RelayOptions;
  socketPath: string;
  orphanTimeoutMs: number;
}

/** Requests over the control socket. */
export type RelayProcessRequest =
  | { id: number; op: 'info' | 'hold' | 'release' | 'stats' | 'stop' }
  | { id: number; op: 'setUpstream'; upstream: Upstream }
  | { id: number; op: 'drain'; timeoutMs: number };

type RelayProcessCall = RelayProcessRequest extends infer R
  ? R extends RelayProcessRequest
    ? Omit<R, 'id'>
    : never
  : never;

/** What a running child says about itself. */
export interface RelayProcessInfo {
  pid: number;
  ports: number[];
  listen: ListenSpec[];
  upstream: Upstream;
  holding: boolean;
}

export interface RelayProcessOptions {
  relay: RelayOptions;
  /** The control socket (at most 107 bytes: a Unix socket path). */
  socketPath: string;
  /** With no controller connected this long, the child closes and exits. Default 600 000 ms. */
  orphanTimeoutMs?: number;
  /** The child's stderr is appended here (default: discarded). */
  logFile?: string;
  /** Longest wait for the child to forward. Default 30 000 ms. */
  startTimeoutMs?: number;
}

const WHAT = 'relay process';

/** A userspace redirect in its own supervised process; see the module comment. */
export class RelayProcess implements RedirectEngine {
  readonly kind = 'userspace';
  readonly socketPath: string;
  private readonly opts: RelayProcessOptions | undefined;
  private conn: ControlClient | null = null;
  private info: RelayProcessInfo | null = null;
  private closed = false;

  /** A relay to start with `start()`; with `{ socketPath }` alone, one to adopt (see `adopt`). */
  constructor(opts: RelayProcessOptions | { socketPath: string }) {
    if (Buffer.byteLength(opts.socketPath) > MAX_SOCKET_PATH)
      throw new FerryError(
        'RELAY_BAD_OPTION',
        `socket path ${opts.socketPath} is longer than a Unix socket path may be (${MAX_SOCKET_PATH} bytes)`,
      );
    if ('relay' in opts) resolveRelayOptions(opts.relay); // bad options fail here, not in the child
    this.opts = 'relay' in opts ? opts : undefined;
    this.socketPath = opts.socketPath;
  }

  /** Connects to the child already running at `socketPath`; undefined when none answers there. */
  static async adopt(socketPath: string): Promise<RelayProcess | undefined> {
    const rp = new RelayProcess({ socketPath });
    try {
      await rp.connect();
      rp.info = (await rp.request({ op: 'info' })) as RelayProcessInfo;
      return rp;
    } catch {
      rp.detach();
      return undefined;
    }
  }

  get ports(): number[] {
    return [...(this.info?.ports ?? [])];
  }

  /** The child's process id (undefined before start). */
  get pid(): number | undefined {
    return this.info?.pid;
  }

  /** Whether the child holds new connections (as of start, adoption or the last hold/release). */
  get holding(): boolean {
    return this.info?.holding ?? false;
  }

  /** The child's upstream (as of start, adoption or the last setUpstream). */
  get upstream(): Upstream | undefined {
    return this.info?.upstream;
  }

  /** Where the child listens. */
  get listen(): ListenSpec[] {
    return this.info?.listen ?? [];
  }

  /** Starts the child and waits until it forwards (or says why it cannot). */
  async start(): Promise<void> {
    const o = this.opts;
    if (!o || this.info)
      throw new FerryError(
        'RELAY_STATE',
        'relay process already started (or adopted); create a new RelayProcess to start another',
      );
    const config: RelayProcessConfig = {
      relay: o.relay,
      socketPath: o.socketPath,
      orphanTimeoutMs: o.orphanTimeoutMs ?? 600_000,
    };
    this.info = await spawnDetached<RelayProcessInfo>({
      entry: childEntry(import.meta.url, 'process-main'),
      arg: JSON.stringify(config),
      ...(o.logFile ? { logFile: o.logFile } : {}),
      startTimeoutMs: o.startTimeoutMs ?? 30_000,
      what: WHAT,
      code: 'RELAY_PROCESS',
    });
    await this.connect();
  }

  private async connect(): Promise<void> {
    this.conn = await ControlClient.connect(this.socketPath, WHAT, 'RELAY_PROCESS');
  }

  private request(msg: RelayProcessCall, timeoutMs = CONTROL_REQUEST_TIMEOUT_MS): Promise<unknown> {
    if (!this.conn)
      return Promise.reject(
        new FerryError('RELAY_PROCESS', `not connected to the relay process at ${this.socketPath}`),
      );
    return this.conn.request(msg, timeoutMs);
  }

  async setUpstream(upstream: Upstream): Promise<void> {
    await this.request({ op: 'setUpstream', upstream });
    if (this.info) this.info.upstream = upstream;
  }

  async hold(): Promise<void> {
    await this.request({ op: 'hold' });
    if (this.info) this.info.holding = true;
  }

  async release(): Promise<void> {
    await this.request({ op: 'release' });
    if (this.info) this.info.holding = false;
  }

  async stats(): Promise<RelayStats> {
    return (await this.request({ op: 'stats' })) as RelayStats;
  }

  async drain(timeoutMs: number): Promise<boolean> {
    return (await this.request(
      { op: 'drain', timeoutMs },
      timeoutMs + CONTROL_REQUEST_TIMEOUT_MS,
    )) as boolean;
  }

  /** Leaves the child running and drops the connection (it counts as orphaned from now). */
  detach(): void {
    this.conn?.destroy();
    this.conn = null;
  }

  /** Stops the child: its relay closes, its socket goes, it exits. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const c = this.conn;
    if (!c) return;
    await c.request({ op: 'stop' }).catch(() => undefined);
    await c.closed;
  }
}
