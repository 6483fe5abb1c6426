/**
 * What the operator commands share: the controller's URL and token (`--controller`/`--token` or
 * `FERRY_CONTROLLER`/`FERRY_TOKEN`), an HTTP client of the control API with friendly errors, the
 * SSE reader, and the exit codes scripts rely on.
 */
import { Command, Option } from 'commander';
import { errorMessage, isFerryError } from '../common/errors.js';
import { EXIT, exitOfCode, isErrorCode } from '../common/error-codes.js';
import type { SiteMail } from '../agent/webconfig/model.js';
import type { DatabasesPlanned, NameLeftAlone } from '../migration/index.js';

/** Exit codes of the operator commands (the code table's; a failed or rolled-back migration is `failed`). */
export const CLI_EXIT = EXIT;

export const DEFAULT_CONTROLLER = 'http://127.0.0.1:7300';

/** An error that ends a command with a message, an exit code and the error code (the controller's, when it refused). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    readonly code: string,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export interface ConnectionOptions {
  controller?: string;
  token?: string;
  json?: boolean;
}

/** Add `--controller`, `--token` and `--json` to a command. */
export function withConnection(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        '--controller <url>',
        `controller API URL (env FERRY_CONTROLLER, default ${DEFAULT_CONTROLLER})`,
      ),
    )
    .addOption(
      new Option(
        '--token <token>',
        'API token (env FERRY_TOKEN); prefer the environment: arguments show in ps',
      ),
    )
    .option('--json', 'machine-readable output (one JSON document, or JSON lines when streaming)');
}

/** One Server-Sent Event as read from the stream. */
export interface StreamEvent {
  id?: number;
  event: string;
  data: Record<string, unknown>;
}

/** A client of the control API. */
export class ApiClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
    private readonly timeoutMs = 15_000,
  ) {}

  get<T>(path: string): Promise<T> {
    return this.call<T>('GET', path);
  }

  /**
   * The items (under `key`) of a paged list, following `next` until `max` items or the end, a
   * page of at most 1000 at a time; `more` when the list had items beyond `max`.
   */
  async list<T>(path: string, key: string, max = Infinity): Promise<{ items: T[]; more: boolean }> {
    const items: T[] = [];
    let cursor: string | undefined;
    for (;;) {
      const limit = Math.min(1000, max - items.length);
      const sep = path.includes('?') ? '&' : '?';
      const page = await this.get<Record<string, unknown>>(
        `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      );
      items.push(...((page[key] as T[] | undefined) ?? []));
      cursor = typeof page.next === 'string' ? page.next : undefined;
      if (!cursor) return { items, more: false };
      if (items.length >= max) return { items, more: true };
    }
  }

  /** `--limit N` of a listing command: a positive integer, or undefined (no bound) for `--all`. */
  static listLimit(o: { limit?: string; all?: boolean }, fallback: number | undefined): number {
    if (o.all) return Infinity;
    if (o.limit === undefined) return fallback ?? Infinity;
    const n = Number(o.limit);
    if (!Number.isInteger(n) || n < 1)
      throw new CliError(`--limit must be a positive integer (got ${o.limit})`, EXIT.usage, 'USAGE');
    return n;
  }

  post<T>(path: string, body?: unknown): Promise<T> {
    return this.call<T>('POST', path, body);
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.fetch(path, {
      method,
      headers: { ...this.headers(), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      throw new CliError(
        `the controller at ${this.baseUrl} answered ${res.status} with something that is not JSON; is --controller right?`,
        CLI_EXIT.failed,
        'API_BAD_ANSWER',
      );
    }
    if (!res.ok) throw this.httpError(res.status, json);
    return json as T;
  }

  /**
   * Read `/v1/events` (or any SSE path) until `signal` aborts or the server ends the stream. The
   * first item is `{ event: 'open' }`, once the server has taken the subscription.
   */
  async *stream(
    path: string,
    opts: { lastEventId?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<StreamEvent> {
    const res = await this.fetch(path, {
      headers: {
        ...this.headers(),
        accept: 'text/event-stream',
        ...(opts.lastEventId !== undefined ? { 'last-event-id': String(opts.lastEventId) } : {}),
      },
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    if (!res.ok) {
      const json = (await res.json().catch(() => ({}))) as unknown;
      throw this.httpError(res.status, json);
    }
    yield { event: 'open', data: {} };
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let id: number | undefined;
        let event = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('id: ')) id = Number(line.slice(4));
          else if (line.startsWith('event: ')) event = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
        }
        if (!data) continue;
        yield {
          ...(id !== undefined ? { id } : {}),
          event,
          data: JSON.parse(data) as Record<string, unknown>,
        };
      }
    }
  }

  private headers(): Record<string, string> {
    return { authorization: `Bearer ${this.token}` };
  }

  private async fetch(path: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(new URL(path, this.baseUrl), init);
    } catch (err) {
      if (init.signal?.aborted && (init.signal.reason as Error | undefined)?.name !== 'TimeoutError')
        throw err;
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? errorMessage(err);
      throw new CliError(
        `cannot reach the controller at ${this.baseUrl} (${why}). Is it running? Point --controller or FERRY_CONTROLLER at it.`,
        CLI_EXIT.unreachable,
        'UNREACHABLE',
      );
    }
  }

  private httpError(status: number, json: unknown): CliError {
    const e = (json as { error?: { code?: string; message?: string } }).error;
    const code = e?.code ?? 'API_BAD_ANSWER';
    const msg = e?.message ?? `HTTP ${status}`;
    // The code table gives the exit code; a code this version does not know goes by the status.
    const exit = isErrorCode(code)
      ? exitOfCode(code)
      : status === 401 || status === 403
        ? CLI_EXIT.auth
        : status === 400
          ? CLI_EXIT.usage
          : CLI_EXIT.failed;
    if (status === 401) {
      return new CliError(
        `the controller at ${this.baseUrl} refused the token (${msg}). Check --token or FERRY_TOKEN.`,
        exit,
        code,
      );
    }
    if (status === 403)
      return new CliError(`${msg}. Ask for an operator token for this command.`, exit, code);
    if (status === 400) return new CliError(`bad request: ${msg}`, exit, code);
    return new CliError(`${msg} [${code}]`, exit, code);
  }
}

/** The API client a command's options and the environment describe. */
export function clientOf(opts: ConnectionOptions): ApiClient {
  const url = opts.controller ?? process.env.FERRY_CONTROLLER ?? DEFAULT_CONTROLLER;
  const token = opts.token ?? process.env.FERRY_TOKEN;
  try {
    new URL(url);
  } catch {
    throw new CliError(
      `--controller "${url}" is not a URL; expected e.g. ${DEFAULT_CONTROLLER}`,
      CLI_EXIT.usage,
      'USAGE',
    );
  }
  if (!token)
    throw new CliError(
      'no API token: set FERRY_TOKEN (or pass --token); `ferry demo --serve` prints one',
      CLI_EXIT.auth,
      'AUTH_MISSING_TOKEN',
    );
  return new ApiClient(url.replace(/\/+$/, ''), token);
}

/**
 * Wrap a command's action: a CliError becomes its message on stderr (and, with --json, an error
 * object on stdout) and its exit code; the action's own return value is the exit code.
 */
export function action<A extends unknown[]>(
  fn: (...args: A) => Promise<number | void>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const cmd = args[args.length - 1] as Command;
    const json = Boolean((cmd.opts() as ConnectionOptions).json);
    try {
      const code = await fn(...args);
      process.exitCode = code ?? CLI_EXIT.ok;
    } catch (err) {
      const e = err instanceof CliError ? err : cliErrorOf(err);
      if (json)
        process.stdout.write(
          JSON.stringify({ error: { code: e.code, message: e.message, exitCode: e.exitCode } }) + '\n',
        );
      process.stderr.write(`ferry: ${e.message}\n`);
      process.exitCode = e.exitCode;
    }
  };
}

/** Any thrown value as a CliError: a FerryError keeps its code and takes its exit code from the table. */
export function cliErrorOf(err: unknown): CliError {
  if (err instanceof CliError) return err;
  if (isFerryError(err)) return new CliError(err.message, exitOfCode(err.code), err.code);
  return new CliError(errorMessage(err), CLI_EXIT.failed, 'INTERNAL');
}

/** Print `rows` as aligned columns under `header`. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

/** `12.3 s`, `4 min 05 s`. */
export function duration(ms: number): string {
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(ms / 60_000);
  return `${m} min ${String(Math.round((ms % 60_000) / 1000)).padStart(2, '0')} s`;
}

/** `4.7 kB`. */
export function bytes(n: number): string {
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

/** A migration as GET /v1/migrations lists it: a `MigrationView` without its plan. */
export type MigrationSummaryView = Omit<MigrationView, 'plan'>;

/** The shape of a migration in the API's answers (the fields the CLI uses). */
export interface MigrationView {
  id: string;
  domain: string;
  from: string;
  to: string;
  phase: string;
  createdAt: number;
  updatedAt: number;
  error?: string;
  plan: {
    originIp: string;
    tempIp: string;
    targetIp: string;
    /** The site's names that move together (the domain first), and those left alone with why. */
    names?: string[];
    namesLeftAlone?: NameLeftAlone[];
    /**
     * A web site's databases as planning found them (what moves, what is left in place and why),
     * and its mail (what moves, or that it stays on the origin).
     */
    web?: { databasePlan?: DatabasesPlanned; mail?: SiteMail; mailStays?: boolean };
  };
  phases: Array<{ name: string; startedAt: number; endedAt: number | null }>;
  /** When the redirect at IPt was stopped and IPt taken down (absent until then). */
  redirectRemovedAt?: number;
  tempIpRemovedAt?: number;
}

export const TERMINAL = new Set(['completed', 'failed', 'rolled-back']);

/** Exit code of a migration that ended in `phase`. */
export function exitOfPhase(phase: string): number {
  return phase === 'completed' ? CLI_EXIT.ok : CLI_EXIT.failed;
}

/** Commander's `Command` type, re-exported for the command modules. */
export type { Command };
