/**
 * A helper process that outlives the process that started it, driven over a Unix socket with one
 * JSON line per request and per reply: the plumbing shared by `RelayProcess` (a userspace
 * redirect) and `SiteProcess` (the built-in site app).
 *
 * Contract. Parent side: `spawnDetached` starts the child in its own session (a SIGKILL of the
 * parent or of its process group leaves it running) and resolves with what the child's one ready
 * line on stdout says about itself; `ControlClient` connects to a child's socket, any time later
 * and from any process, and sends requests `{ id, op, ... }`. Child side: `serveControl` answers
 * `{ id, ok: true, value }` or `{ id, ok: false, code, message }` to each, and calls `onOrphaned`
 * once no controller has been connected for `orphanTimeoutMs`, so nothing outlives a dead parent
 * for ever. Nothing is written to the child's stdout after the ready line.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { toErrorCode, type ErrorCode } from './error-codes.js';
import { FerryError, isFerryError } from './errors.js';

/** A request: an operation and its arguments. */
export type ControlRequest = { op: string } & Record<string, unknown>;

/** The child's answer to the request with the same id. */
export type ControlReply =
  { id: number; ok: true; value?: unknown } | { id: number; ok: false; code: string; message: string };

/** Longest wait for an answer, unless the caller gives its own. */
export const CONTROL_REQUEST_TIMEOUT_MS = 15_000;

/** The longest Unix socket path (bytes). */
export const MAX_SOCKET_PATH = 107;

/** The child's entry script `<base>.ts` or `.js` beside `moduleUrl`, whichever that module is (tsx or compiled). */
export function childEntry(moduleUrl: string, base: string): string {
  const ext = moduleUrl.endsWith('.ts') ? '.ts' : '.js';
  return fileURLToPath(new URL(`./${base}${ext}`, moduleUrl));
}

/** This process's flags for a child, less a script given with -e/-p and test runner or debugger flags. */
function childExecArgv(): string[] {
  const out: string[] = [];
  for (let i = 0; i < process.execArgv.length; i++) {
    const a = process.execArgv[i]!;
    if (a === '-e' || a === '-p' || a === '--eval' || a === '--print') i++;
    else if (!/^--(test|inspect|watch|eval|print|input-type)/.test(a)) out.push(a);
  }
  return out;
}

export interface SpawnDetachedOptions {
  /** The child's script (see `childEntry`) and its one argument. */
  entry: string;
  arg: string;
  /** The child's stderr is appended here (default: discarded). */
  logFile?: string;
  startTimeoutMs: number;
  /** Names the child in errors ("relay process"). */
  what: string;
  /** Code of the errors about the child itself (and of a failure it reports with an unknown code). */
  code: ErrorCode;
}

/** Starts a child in its own session and resolves with the `info` of its ready line (`{ ok, info }`). */
export async function spawnDetached<T>(o: SpawnDetachedOptions): Promise<T> {
  const log = o.logFile ? openSync(o.logFile, 'a') : 'ignore';
  const child = spawn(process.execPath, [...childExecArgv(), o.entry, o.arg], {
    detached: true,
    stdio: ['ignore', 'pipe', log],
  });
  if (typeof log === 'number') closeSync(log);
  child.unref();
  const line = await new Promise<string>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(
      () => fail(new FerryError(o.code, `${o.what} did not start within ${o.startTimeoutMs} ms`)),
      o.startTimeoutMs,
    );
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
    child.once('error', (err) =>
      fail(new FerryError(o.code, `cannot start the ${o.what}: ${err.message}`, { cause: err })),
    );
    child.once('exit', (code, signal) =>
      fail(
        new FerryError(o.code, `${o.what} exited before it was ready (${signal ?? `code ${String(code)}`})`),
      ),
    );
  });
  child.removeAllListeners('exit');
  child.stdout!.destroy();
  const ready = JSON.parse(line) as { ok: true; info: T } | { ok: false; code: string; message: string };
  if (!ready.ok) throw new FerryError(toErrorCode(ready.code, o.code), ready.message);
  return ready.info;
}

/** A connection to a child's control socket. */
export class ControlClient {
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private conn: Socket | null;
  /** Resolves once the connection is closed (by either side). */
  readonly closed: Promise<void>;

  private constructor(
    readonly socketPath: string,
    private readonly what: string,
    private readonly code: ErrorCode,
    s: Socket,
  ) {
    this.conn = s;
    s.setEncoding('utf8');
    let buf = '';
    s.on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        let m: ControlReply;
        try {
          m = JSON.parse(buf.slice(0, i)) as ControlReply;
        } catch {
          s.destroy(); // not the child's protocol: the pending requests fail through 'close'
          return;
        }
        buf = buf.slice(i + 1);
        const p = this.pending.get(m.id);
        if (!p) continue;
        this.pending.delete(m.id);
        if (m.ok) p.resolve(m.value);
        else p.reject(new FerryError(toErrorCode(m.code, code), m.message));
      }
    });
    s.on('error', () => undefined); // reported through 'close'
    this.closed = new Promise((resolve) =>
      s.once('close', () => {
        this.conn = null;
        const err = new FerryError(code, `${what} at ${socketPath} closed its control socket`);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        resolve();
      }),
    );
  }

  /** Connects to the child listening at `socketPath` (rejects when none does). */
  static connect(socketPath: string, what: string, code: ErrorCode): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const s = createConnection(socketPath);
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new ControlClient(socketPath, what, code, s));
      });
    });
  }

  get connected(): boolean {
    return this.conn !== null;
  }

  /** Sends one request; resolves with the child's value, rejects with its error or after `timeoutMs`. */
  request(msg: ControlRequest, timeoutMs = CONTROL_REQUEST_TIMEOUT_MS): Promise<unknown> {
    const s = this.conn;
    if (!s)
      return Promise.reject(
        new FerryError(this.code, `not connected to the ${this.what} at ${this.socketPath}`),
      );
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new FerryError(
            this.code,
            `${this.what} at ${this.socketPath} did not answer ${msg.op} within ${timeoutMs} ms`,
          ),
        );
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

  /** Drops the connection (the child counts as orphaned from now, unless another is connected). */
  destroy(): void {
    this.conn?.destroy();
    this.conn = null;
  }
}

/** Writes the child's one ready line: `{ ok: true, info }` or why it cannot start. */
export function writeReady(
  m: { ok: true; info: unknown } | { ok: false; code: string; message: string },
): void {
  process.stdout.on('error', () => undefined); // the parent may be gone, and its pipe with it
  process.stdout.write(JSON.stringify(m) + '\n');
}

export interface ControlServerOptions {
  socketPath: string;
  orphanTimeoutMs: number;
  /** Answers one request (its value, or a thrown error: a FerryError's code is passed on). */
  handle: (req: ControlRequest & { id: number }) => Promise<unknown>;
  /** Called once no controller has been connected for `orphanTimeoutMs`. */
  onOrphaned: () => void;
  /** Code of a thrown error that is not a FerryError. */
  code: ErrorCode;
}

/** The child's side of the control socket. */
export interface ControlServer {
  /** Stops listening, removes the socket file and the orphan timer; connections stay for the last replies. */
  close(): void;
  /** Ends every connection once the replies under way are written. */
  endConnections(): void;
}

/** Listens at `socketPath` (replacing a socket file left there) and answers requests; see the module comment. */
export async function serveControl(o: ControlServerOptions): Promise<ControlServer> {
  const conns = new Set<Socket>();
  let orphanTimer: NodeJS.Timeout | null = null;
  let closed = false;
  const removeSocket = () => {
    try {
      unlinkSync(o.socketPath);
    } catch {
      // already gone
    }
  };
  const orphaned = () => {
    if (conns.size > 0 || closed) return;
    if (orphanTimer) clearTimeout(orphanTimer);
    orphanTimer = setTimeout(() => o.onOrphaned(), o.orphanTimeoutMs);
  };
  const send = (s: Socket, m: ControlReply) => {
    if (!s.destroyed) s.write(JSON.stringify(m) + '\n');
  };
  const server: Server = createServer((s) => {
    conns.add(s);
    if (orphanTimer) clearTimeout(orphanTimer);
    orphanTimer = null;
    s.setEncoding('utf8');
    let buf = '';
    s.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 1 << 20) return void s.destroy(); // no request is that long
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let req: ControlRequest & { id: number };
        try {
          req = JSON.parse(line) as ControlRequest & { id: number };
          if (!req || typeof req !== 'object' || typeof req.op !== 'string') throw new Error('not a request');
        } catch {
          s.destroy();
          return;
        }
        o.handle(req).then(
          (value) => send(s, { id: req.id, ok: true, ...(value === undefined ? {} : { value }) }),
          (err: unknown) =>
            send(s, {
              id: req.id,
              ok: false,
              code: isFerryError(err) ? err.code : o.code,
              message: (err as Error)?.message ?? String(err),
            }),
        );
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      conns.delete(s);
      orphaned();
    });
  });
  removeSocket(); // a socket file left by a child that died at this path
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  orphaned();
  return {
    close: () => {
      closed = true;
      if (orphanTimer) clearTimeout(orphanTimer);
      server.close();
      removeSocket();
    },
    endConnections: () => {
      // After the replies already written (a microtask away), so the last one still reaches its caller.
      setImmediate(() => {
        for (const s of conns) s.end();
      });
    },
  };
}

/** What a supervised child runs: its service, and the requests of its own beyond `info` and `stop`. */
export interface ControlledChild<S> {
  socketPath: string;
  orphanTimeoutMs: number;
  /** Code of errors that are not FerryErrors (the child's own, e.g. RELAY_PROCESS). */
  code: ErrorCode;
  /** Starts the service; a throw is reported on the ready line and the process exits 1. */
  start(): Promise<S>;
  /** Stops the service (on `stop`, SIGTERM, SIGINT or when orphaned). */
  close(service: S): Promise<void>;
  /** What `info` answers, and the ready line carries. */
  info(service: S): unknown;
  /** Any other request; throw for an unknown one. */
  handle(service: S, req: ControlRequest): Promise<unknown>;
}

/**
 * The life of a supervised child process (the `*-main.ts` entry points): start the service, serve
 * the control socket, write the ready line; stop once, on `stop`, SIGTERM, SIGINT or when
 * orphaned, and end the process once the reply to `stop` is out.
 */
export async function runControlledChild<S>(c: ControlledChild<S>): Promise<void> {
  let service: S;
  try {
    service = await c.start();
  } catch (err) {
    writeReady({ ok: false, code: isFerryError(err) ? err.code : c.code, message: (err as Error).message });
    process.exitCode = 1;
    return;
  }
  let control: ControlServer | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      control?.close();
      await c.close(service);
      // The reply to `stop` goes out, then the control connections end; the process then ends by
      // itself, or here if something still holds it.
      control?.endConnections();
      setTimeout(() => process.exit(0), 1000).unref();
    })());
  try {
    control = await serveControl({
      socketPath: c.socketPath,
      orphanTimeoutMs: c.orphanTimeoutMs,
      handle: async (req) => {
        if (req.op === 'info') return c.info(service);
        if (req.op === 'stop') return void (await stop());
        return c.handle(service, req);
      },
      onOrphaned: () => void stop(),
      code: c.code,
    });
  } catch (err) {
    await c.close(service);
    writeReady({
      ok: false,
      code: c.code,
      message: `cannot listen on ${c.socketPath}: ${(err as Error).message}`,
    });
    process.exit(1);
  }
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  writeReady({ ok: true, info: c.info(service) });
}
