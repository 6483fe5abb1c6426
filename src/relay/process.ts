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
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { toErrorCode } from '../common/error-codes.js';
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

type RelayProcessCall = RelayProcessRequest extends infer R ? (R extends RelayProcessRequest ? Omit<R, 'id'> : never) : never;

/** The child's answer to the request with the same id. */
export type RelayProcessReply = { id: number; ok: true; value?: unknown } | { id: number; ok: false; code: string; message: string };

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

/** Longest wait for an answer over the control socket (drain adds its own timeout). */
const REQUEST_TIMEOUT_MS = 15_000;

function entry(): string {
  // Run from TypeScript sources (tsx) or compiled JavaScript, whichever this module is.
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  return fileURLToPath(new URL(`./process-main${ext}`, import.meta.url));
}

/** This process's flags for the child, less a script given with -e/-p and test runner or debugger flags. */
function childExecArgv(): string[] {
  const out: string[] = [];
  for (let i = 0; i < process.execArgv.length; i++) {
    const a = process.execArgv[i]!;
    if (a === '-e' || a === '-p' || a === '--eval' || a === '--print') i++;
    else if (!/^--(test|inspect|watch|eval|print|input-type)/.test(a)) out.push(a);
  }
  return out;
}

function processError(message: string, cause?: unknown): FerryError {
  return new FerryError('RELAY_PROCESS', message, cause === undefined ? undefined : { cause });
}

/** A userspace redirect in its own supervised process; see the module comment. */
export class RelayProcess implements RedirectEngine {
  readonly kind = 'userspace';
  readonly socketPath: string;
  private readonly opts: RelayProcessOptions | undefined;
  private conn: Socket | null = null;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private info: RelayProcessInfo | null = null;
  private closed = false;

  /** A relay to start with `start()`; with `{ socketPath }` alone, one to adopt (see `adopt`). */
  constructor(opts: RelayProcessOptions | { socketPath: string }) {
    if (Buffer.byteLength(opts.socketPath) > 107) throw new FerryError('RELAY_BAD_OPTION', `socket path ${opts.socketPath} is longer than a Unix socket path may be (107 bytes)`);
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
    if (!o || this.info) throw new FerryError('RELAY_STATE', 'relay process already started (or adopted); create a new RelayProcess to start another');
    const config: RelayProcessConfig = { relay: o.relay, socketPath: o.socketPath, orphanTimeoutMs: o.orphanTimeoutMs ?? 600_000 };
    const log = o.logFile ? openSync(o.logFile, 'a') : 'ignore';
    const execArgv = childExecArgv();
    const child = spawn(process.execPath, [...execArgv, entry(), JSON.stringify(config)], { detached: true, stdio: ['ignore', 'pipe', log] });
    if (typeof log === 'number') closeSync(log);
    child.unref();
    const line = await new Promise<string>((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => fail(processError(`relay process did not start within ${o.startTimeoutMs ?? 30_000} ms`)), o.startTimeoutMs ?? 30_000);
      const fail = (err: Error) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(err);
      };
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (d: string) => {
        buf += d;
        const i = buf.indexOf('\n');
        if (i < 0) return;
        clearTimeout(timer);
        resolve(buf.slice(0, i));
      });
      child.once('error', (err) => fail(processError(`cannot start the relay process: ${err.message}`, err)));
      child.once('exit', (code, signal) => fail(processError(`relay process exited before it forwarded (${signal ?? `code ${String(code)}`})`)));
    });
    child.removeAllListeners('exit');
    child.stdout!.destroy();
    const ready = JSON.parse(line) as { ok: true; info: RelayProcessInfo } | { ok: false; code: string; message: string };
    if (!ready.ok) throw new FerryError(toErrorCode(ready.code, 'RELAY_PROCESS'), ready.message);
    this.info = ready.info;
    await this.connect();
  }

  private connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = createConnection(this.socketPath);
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        this.conn = s;
        s.setEncoding('utf8');
        let buf = '';
        s.on('data', (d: string) => {
          buf += d;
          for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
            const m = JSON.parse(buf.slice(0, i)) as RelayProcessReply;
            buf = buf.slice(i + 1);
            const p = this.pending.get(m.id);
            if (!p) continue;
            this.pending.delete(m.id);
            if (m.ok) p.resolve(m.value);
            else p.reject(new FerryError(toErrorCode(m.code, 'RELAY_PROCESS'), m.message));
          }
        });
        s.on('error', () => undefined); // reported through 'close'
        s.on('close', () => {
          this.conn = null;
          const err = processError(`relay process at ${this.socketPath} closed its control socket`);
          for (const p of this.pending.values()) p.reject(err);
          this.pending.clear();
        });
        resolve();
      });
    });
  }

  private request(msg: RelayProcessCall, timeoutMs = REQUEST_TIMEOUT_MS): Promise<unknown> {
    const s = this.conn;
    if (!s) return Promise.reject(processError(`not connected to the relay process at ${this.socketPath}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(processError(`relay process at ${this.socketPath} did not answer ${msg.op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      s.write(JSON.stringify({ ...msg, id }) + '\n');
    });
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
    return (await this.request({ op: 'drain', timeoutMs }, timeoutMs + REQUEST_TIMEOUT_MS)) as boolean;
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
    const s = this.conn;
    if (!s) return;
    const gone = new Promise<void>((r) => s.once('close', () => r()));
    await this.request({ op: 'stop' }).catch(() => undefined);
    await gone;
  }
}
