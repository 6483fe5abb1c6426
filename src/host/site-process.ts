/**
 * The built-in site app in a process of its own, so that it outlives the agent that started it,
 * as a customer's application (nginx, PHP-FPM) outlives the agent on a real hosting server.
 * `SiteProcess` runs a `SiteServer` in a child of its own session (`detached`), driven over a Unix
 * socket (`socketPath`, see common/control-socket.ts). `start()` adopts the child already running
 * at that socket with the same name, addresses, port and data folder (a restarted agent takes its
 * app back, sites and modes as they are now) or else starts one.
 *
 * Contract: `SiteApp`, what the agent uses of a site server, each call answered once the child
 * has applied it; the site list, modes and gated sites' upstreams are read from the last known
 * copy (the agent is the only one that changes them). `stop()` stops the child; `detach()` leaves it serving. A child
 * with no agent connected for `orphanTimeoutMs` stops and exits by itself. A child that dies
 * while driven is replaced a second later (or at the next call), serving the same sites in their
 * last modes.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CONTROL_REQUEST_TIMEOUT_MS,
  ControlClient,
  MAX_SOCKET_PATH,
  childEntry,
  spawnDetached,
  type ControlRequest,
} from '../common/control-socket.js';
import { FerryError } from '../common/errors.js';
import { OrderLog, type Order } from './orders.js';
import {
  checkDomain,
  normalizeDomain,
  type SiteMode,
  type SiteServerOptions,
  type SiteStats,
  type SiteUpstream,
} from './site-server.js';

/** What a hosting agent uses of its site app: `SiteServer` in-process, or `SiteProcess`. */
export interface SiteApp {
  readonly name: string;
  /** The port sites are served on (the chosen one once started with port 0). */
  readonly port: number;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Adds (or updates) a site; with `upstream` it is a gate in front of that backend. */
  addSite(domain: string, mode?: SiteMode, opts?: { upstream?: SiteUpstream }): Promise<void>;
  removeSite(domain: string, opts?: { deleteData?: boolean }): Promise<void>;
  hasSite(domain: string): boolean;
  sites(): string[];
  mode(domain: string): SiteMode;
  /** A gated site's upstream (undefined for a built-in app site); SITE_NOT_FOUND for an unknown one. */
  upstream(domain: string): SiteUpstream | undefined;
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
  sites: Array<{ domain: string; mode: SiteMode; upstream?: SiteUpstream }>;
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
  private readonly upstreams = new Map<string, SiteUpstream>();
  private wasAdopted = false;
  /** The port to start a child on: the one of the last child, once there was one. */
  private sitePort: number;
  /** True until started, and once stopped or detached: nothing to bring back then. */
  private stopped = true;
  private reviving: Promise<void> | null = null;

  constructor(opts: SiteProcessOptions) {
    if (Buffer.byteLength(opts.socketPath) > MAX_SOCKET_PATH) {
      throw new FerryError(
        'SITE_SERVER_OPTIONS',
        `socket path ${opts.socketPath} is longer than a Unix socket path may be (${MAX_SOCKET_PATH} bytes); use a shorter data folder`,
      );
    }
    this.opts = opts;
    this.name = opts.site.name;
    this.socketPath = opts.socketPath;
    this.sitePort = opts.site.port;
  }

  get port(): number {
    return this.info?.port ?? this.sitePort;
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
      const info = (await found.request({ op: 'info' }).catch(() => undefined)) as
        SiteProcessInfo | undefined;
      const same =
        info !== undefined &&
        info.name === o.site.name &&
        info.dataDir === o.site.dataDir &&
        (this.sitePort === 0 || info.port === this.sitePort) &&
        JSON.stringify([...info.addresses].sort()) === JSON.stringify([...new Set(o.site.addresses)].sort());
      if (same) {
        this.adopt(info);
        this.connected(found);
        return;
      }
      // Started with other options (a changed command line): it goes, and a new one starts.
      await found.request({ op: 'stop' }).catch(() => undefined);
      await found.closed;
    }
    await mkdir(join(this.socketPath, '..'), { recursive: true, mode: 0o700 });
    const config: SiteProcessConfig = {
      site: { ...o.site, port: this.sitePort },
      socketPath: this.socketPath,
      orphanTimeoutMs: o.orphanTimeoutMs ?? 600_000,
    };
    const info = await spawnDetached<SiteProcessInfo>({
      entry: childEntry(import.meta.url, 'site-process-main'),
      arg: JSON.stringify(config),
      ...(o.logFile ? { logFile: o.logFile } : {}),
      startTimeoutMs: o.startTimeoutMs ?? 30_000,
      what: WHAT,
      code: 'SITE_PROCESS',
    });
    this.info = info;
    this.connected(await ControlClient.connect(this.socketPath, WHAT, 'SITE_PROCESS'));
  }

  private adopt(info: SiteProcessInfo): void {
    this.info = info;
    this.wasAdopted = true;
    for (const s of info.sites) {
      this.modes.set(s.domain, s.mode);
      if (s.upstream) this.upstreams.set(s.domain, s.upstream);
    }
  }

  /** Drives the child through `c`; should the child die while driven, a new one takes its place a second later. */
  private connected(c: ControlClient): void {
    this.conn = c;
    this.stopped = false;
    this.sitePort = this.info!.port;
    void c.closed.then(() => {
      if (this.conn === c && !this.stopped)
        setTimeout(() => void this.revive().catch(() => undefined), 1000).unref();
    });
  }

  /**
   * Brings the site app back after its process died under a running agent: a new child (or one
   * found at the socket) serving the known sites in their last modes. One at a time.
   */
  private revive(): Promise<void> {
    return (this.reviving ??= (async () => {
      try {
        if (this.stopped || this.conn?.connected) return;
        this.conn = null;
        this.info = null;
        await this.start();
        const serving = new Set(this.info!.sites.map((x) => x.domain));
        for (const [domain, mode] of this.modes) {
          if (serving.has(domain)) continue;
          const upstream = this.upstreams.get(domain);
          await this.conn!.request({ op: 'addSite', domain, mode, ...(upstream ? { upstream } : {}) });
        }
      } finally {
        this.reviving = null;
      }
    })());
  }

  private async request(msg: ControlRequest, timeoutMs = CONTROL_REQUEST_TIMEOUT_MS): Promise<unknown> {
    if (this.reviving || (!this.stopped && !this.conn?.connected)) await this.revive();
    if (!this.conn)
      throw new FerryError('SITE_PROCESS', `not connected to the site app process at ${this.socketPath}`);
    return this.conn.request(msg, timeoutMs);
  }

  /** Stops the child: it stops serving (held requests get 503, in-flight ones a short grace) and exits. */
  async stop(): Promise<void> {
    this.stopped = true;
    const c = this.conn;
    this.conn = null;
    if (!c) return;
    await c.request({ op: 'stop' }, 30_000).catch(() => undefined);
    await c.closed;
  }

  /** Leaves the child serving and drops the connection (it counts as orphaned from now). */
  detach(): void {
    this.stopped = true;
    this.conn?.destroy();
    this.conn = null;
  }

  async addSite(
    domain: string,
    mode: SiteMode = 'serve',
    opts: { upstream?: SiteUpstream } = {},
  ): Promise<void> {
    const upstream = opts.upstream;
    // The child checks both and answers with what it keeps (the upstream as it copied it).
    const kept = (await this.request({ op: 'addSite', domain, mode, ...(upstream ? { upstream } : {}) })) as
      { upstream?: SiteUpstream } | undefined;
    const d = normalizeDomain(domain);
    this.modes.set(d, typeof mode === 'string' ? mode : { proxy: { ...mode.proxy } });
    if (kept?.upstream) this.upstreams.set(d, kept.upstream);
  }

  async removeSite(domain: string, opts: { deleteData?: boolean } = {}): Promise<void> {
    await this.request({ op: 'removeSite', domain, deleteData: opts.deleteData === true });
    this.modes.delete(normalizeDomain(domain));
    this.upstreams.delete(normalizeDomain(domain));
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
    if (m === undefined)
      throw new FerryError('SITE_NOT_FOUND', `${this.name} does not serve ${d}; add it with addSite first`);
    return typeof m === 'string' ? m : { proxy: { ...m.proxy } };
  }

  upstream(domain: string): SiteUpstream | undefined {
    this.mode(domain); // SITE_NOT_FOUND for a site not served here
    const u = this.upstreams.get(normalizeDomain(domain));
    return u ? structuredClone(u) : undefined;
  }

  async siteStats(domain: string): Promise<SiteStats> {
    return (await this.request({ op: 'siteStats', domain })) as SiteStats;
  }

  async waitIdle(domain: string, timeoutMs: number): Promise<boolean> {
    return (await this.request(
      { op: 'waitIdle', domain, timeoutMs },
      timeoutMs + CONTROL_REQUEST_TIMEOUT_MS,
    )) as boolean;
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
