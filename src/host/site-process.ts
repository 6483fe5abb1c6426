/**
 * The built-in site app in a process of its own, so that it outlives the agent that started it,
 * as a customer's application (nginx, PHP-FPM) outlives the agent on a real hosting server.
 * `SiteProcess` runs a `SiteServer` in a child of its own session (`detached`), driven over a Unix
 * socket (`socketPath`, see common/control-socket.ts). `start()` adopts the child already running
 * at that socket with the same name, addresses, port and data folder (a restarted agent takes its
 * app back, sites and modes as they are now) or else starts one.
 *
 * Contract: `SiteApp`, what the agent uses of a site server, each call answered once the child
 * has applied it; the site list and modes are read from the last known copy (the agent is the
 * only one that changes them). `stop()` stops the child; `detach()` leaves it serving. A child
 * with no agent connected for `orphanTimeoutMs` stops and exits by itself.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CONTROL_REQUEST_TIMEOUT_MS, ControlClient, MAX_SOCKET_PATH, childEntry, spawnDetached, type ControlRequest } from '../common/control-socket.js';
import { FerryError } from '../common/errors.js';
import { OrderLog, type Order } from './orders.js';
import { checkDomain, normalizeDomain, type SiteMode, type SiteServerOptions, type SiteStats } from './site-server.js';

/** What a hosting agent uses of its site app: `SiteServer` in-process, or `SiteProcess`. */
export interface SiteApp {
  readonly name: string;
  /** The port sites are served on (the chosen one once started with port 0). */
  readonly port: number;
  start(): Promise<void>;
  stop(): Promise<void>;
  addSite(domain: string, mode?: SiteMode): Promise<void>;
  removeSite(domain: string, opts?: { deleteData?: boolean }): Promise<void>;
  hasSite(domain: string): boolean;
  sites(): string[];
  mode(domain: string): SiteMode;
  siteStats(domain: string): SiteStats | Promise<SiteStats>;
  waitIdle(domain: string, timeoutMs: number): Promise<boolean>;
  reloadSite(domain: string): Promise<void>;
  siteDataDir(domain: string): string;
  readOrders(domain: string): Promise<Order[]>;
}

/** What the child is started with (its one argument, as JSON). */
export interface SiteProcessConfig {
  site: SiteServerOptions;
  socketPath: string;
  orphanTimeoutMs: number;
}

/** What a running child says about itself. */
export interface SiteProcessInfo {
  pid: number;
  name: string;
  addresses: string[];
  port: number;
  dataDir: string;
  sites: Array<{ domain: string; mode: SiteMode }>;
}

export interface SiteProcessOptions {
  site: SiteServerOptions;
  /** The control socket (at most 107 bytes: a Unix socket path); its folder is made mode 0700. */
  socketPath: string;
  /** With no agent connected this long, the child stops and exits. Default 600 000 ms. */
  orphanTimeoutMs?: number;
  /** The child's stderr is appended here (default: discarded). */
  logFile?: string;
  /** Longest wait for the child to listen. Default 30 000 ms. */
  startTimeoutMs?: number;
}

const WHAT = 'site app process';

/** The site app in its own process; see the module comment. */
export class SiteProcess implements SiteApp {
  readonly name: string;
  readonly socketPath: string;
  private readonly opts: SiteProcessOptions;
  private conn: ControlClient | null = null;
  private info: SiteProcessInfo | null = null;
  private readonly modes = new Map<string, SiteMode>();
  private wasAdopted = false;

  constructor(opts: SiteProcessOptions) {
    if (Buffer.byteLength(opts.socketPath) > MAX_SOCKET_PATH) {
      throw new FerryError('SITE_SERVER_OPTIONS', `socket path ${opts.socketPath} is longer than a Unix socket path may be (${MAX_SOCKET_PATH} bytes); use a shorter data folder`);
    }
    this.opts = opts;
    this.name = opts.site.name;
    this.socketPath = opts.socketPath;
  }

  get port(): number {
    return this.info?.port ?? this.opts.site.port;
  }

  /** The child's process id (undefined before start). */
  get pid(): number | undefined {
    return this.info?.pid;
  }

  /** Whether `start()` took over a child that was already running. */
  get adopted(): boolean {
    return this.wasAdopted;
  }

  /** Adopts the child serving at `socketPath` with these options, or starts one (stopping a different one found there). */
  async start(): Promise<void> {
    if (this.info) return;
    const o = this.opts;
    const found = await ControlClient.connect(this.socketPath, WHAT, 'SITE_PROCESS').catch(() => undefined);
    if (found) {
      const info = (await found.request({ op: 'info' }).catch(() => undefined)) as SiteProcessInfo | undefined;
      const same =
        info !== undefined &&
        info.name === o.site.name &&
        info.dataDir === o.site.dataDir &&
        (o.site.port === 0 || info.port === o.site.port) &&
        JSON.stringify([...info.addresses].sort()) === JSON.stringify([...new Set(o.site.addresses)].sort());
      if (same) {
        this.conn = found;
        this.adopt(info);
        return;
      }
      // Started with other options (a changed command line): it goes, and a new one starts.
      await found.request({ op: 'stop' }).catch(() => undefined);
      await found.closed;
    }
    await mkdir(join(this.socketPath, '..'), { recursive: true, mode: 0o700 });
    const config: SiteProcessConfig = { site: o.site, socketPath: this.socketPath, orphanTimeoutMs: o.orphanTimeoutMs ?? 600_000 };
    const info = await spawnDetached<SiteProcessInfo>({
      entry: childEntry(import.meta.url, 'site-process-main'),
      arg: JSON.stringify(config),
      ...(o.logFile ? { logFile: o.logFile } : {}),
      startTimeoutMs: o.startTimeoutMs ?? 30_000,
      what: WHAT,
      code: 'SITE_PROCESS',
    });
    this.conn = await ControlClient.connect(this.socketPath, WHAT, 'SITE_PROCESS');
    this.info = info;
  }

  private adopt(info: SiteProcessInfo): void {
    this.info = info;
    this.wasAdopted = true;
    for (const s of info.sites) this.modes.set(s.domain, s.mode);
  }

  private request(msg: ControlRequest, timeoutMs = CONTROL_REQUEST_TIMEOUT_MS): Promise<unknown> {
    if (!this.conn) return Promise.reject(new FerryError('SITE_PROCESS', `not connected to the site app process at ${this.socketPath}`));
    return this.conn.request(msg, timeoutMs);
  }

  /** Stops the child: it stops serving (held requests get 503, in-flight ones a short grace) and exits. */
  async stop(): Promise<void> {
    const c = this.conn;
    this.conn = null;
    if (!c) return;
    await c.request({ op: 'stop' }, 30_000).catch(() => undefined);
    await c.closed;
  }

  /** Leaves the child serving and drops the connection (it counts as orphaned from now). */
  detach(): void {
    this.conn?.destroy();
    this.conn = null;
  }

  async addSite(domain: string, mode: SiteMode = 'serve'): Promise<void> {
    await this.request({ op: 'addSite', domain, mode });
    this.modes.set(normalizeDomain(domain), typeof mode === 'string' ? mode : { proxy: { ...mode.proxy } });
  }

  async removeSite(domain: string, opts: { deleteData?: boolean } = {}): Promise<void> {
    await this.request({ op: 'removeSite', domain, deleteData: opts.deleteData === true });
    this.modes.delete(normalizeDomain(domain));
  }

  hasSite(domain: string): boolean {
    return this.modes.has(normalizeDomain(domain));
  }

  sites(): string[] {
    return [...this.modes.keys()];
  }

  mode(domain: string): SiteMode {
    const d = normalizeDomain(domain);
    const m = this.modes.get(d);
    if (m === undefined) throw new FerryError('SITE_NOT_FOUND', `${this.name} does not serve ${d}; add it with addSite first`);
    return typeof m === 'string' ? m : { proxy: { ...m.proxy } };
  }

  async siteStats(domain: string): Promise<SiteStats> {
    return (await this.request({ op: 'siteStats', domain })) as SiteStats;
  }

  async waitIdle(domain: string, timeoutMs: number): Promise<boolean> {
    return (await this.request({ op: 'waitIdle', domain, timeoutMs }, timeoutMs + CONTROL_REQUEST_TIMEOUT_MS)) as boolean;
  }

  async reloadSite(domain: string): Promise<void> {
    await this.request({ op: 'reloadSite', domain });
  }

  siteDataDir(domain: string): string {
    return join(this.opts.site.dataDir, checkDomain(domain));
  }

  /** The orders on disk in the site's data folder (read here: it is the same folder). */
  readOrders(domain: string): Promise<Order[]> {
    return new OrderLog(this.siteDataDir(domain)).read();
  }
}
