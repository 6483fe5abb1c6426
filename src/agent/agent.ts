/**
 * The host agent's core: what one hosting server does when the controller asks, with no HTTP in
 * it. It is the only implementation of a hosting server: `server.ts` puts this object on the
 * wire for `ferry agent` (driven through `HttpHostDriver`), and the sandbox hands it to the
 * orchestrator in-process. It owns the server's addresses, its redirects (userspace or kernel
 * engine), its sites (the built-in site app, alone or behind nginx), data sync (rsync between
 * servers, a plain copy between agents of one process: transport.ts), and the per-site counters
 * at the shared IP.
 *
 * Every operation is idempotent: repeating one leaves the server as the first call did. Sites
 * and redirects are saved to the state store on each change (`<dataDir>/agent-state.json` by
 * default: state.ts) and restored on start, so an agent restarted mid-migration still forwards
 * IPt and serves the site in its mode.
 *
 * Redirects outlive the agent process: a userspace redirect runs in a `RelayProcess` of its own
 * (control socket `<dataDir>/redirects/<hash>.sock`), a kernel one is an nftables table, and
 * neither goes when the agent is killed or stopped with `stop({ keepRedirects: true })`. A
 * restarted agent adopts them (what they do now wins over the saved state, which may lag one
 * call behind) and starts afresh only those that are gone. Only `stopRedirect` removes one.
 * With `siteApp: 'process'` (as `ferry agent` runs) the site app outlives the agent the same way:
 * a `SiteProcess` that the next start adopts, as a customer's application would go on serving.
 */
import { createHash, randomBytes, type BinaryLike } from 'node:crypto';
import { access, mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FerryError, isFerryError } from '../common/errors.js';
import { KeyedLock } from '../common/keyed-lock.js';
import { sleep } from '../common/time.js';
import {
  SiteProcess,
  SiteServer,
  normalizeDomain,
  type SiteApp,
  type SiteMode,
  type SiteServerOptions,
  type SiteStats,
} from '../host/index.js';
import type {
  DatabaseDeclaration,
  DatabasePlanOptions,
  DatabaseLag,
  DatabaseSource,
  HostDriver,
  RedirectStats,
  SiteDatabasesPlan,
  SyncSiteOptions,
} from '../migration/ports.js';
import { KernelRelay, RelayProcess, type RelayStats } from '../relay/index.js';
import type { AddressManager } from './addresses.js';
import { DatabaseMover, findSiteDatabases, type MariaDbAgentOptions } from './database/index.js';
import { Dovecot, MailSites, Postfix } from './mail/index.js';
import { NginxFrontend, type NginxOptions } from './nginx.js';
import { httpProbe } from './probe.js';
import type { SyncEndpoint, SyncProgress } from './rsync.js';
import { FileStateStore, type AgentState, type AgentStateStore } from './state.js';
import {
  readWebSites,
  type SiteNeeds,
  type WebConfigOptions,
  type WebSite,
  type WebSitesReport,
} from './webconfig/index.js';
import {
  ApacheFlavor,
  NginxFlavor,
  WebStack,
  type PhpFpmLayout,
  type PhpFpmOptions,
  type WebFlavor,
  type WebSiteBundle,
} from './webstack/index.js';
import { ChangeTracker, type ChangeSet } from './tracker.js';
import { ownMaildirs, pushMaildirs, type MailCopyHook } from './mail/copy.js';
import {
  RsyncTransport,
  isSyncPeer,
  type PushProgress,
  type SyncPeer,
  type SyncTransport,
} from './transport.js';

export type EngineKind = 'userspace' | 'kernel';

/** How the server's sites are served at its shared IPs. */
export type WebOptions =
  | { kind: 'builtin' }
  | ({ kind: 'nginx' } & Omit<NginxOptions, 'listen' | 'app'> & {
        appAddress?: string;
        appPort?: number;
        /**
         * Who proxies a site to its new server after the cut-over: the site app behind nginx
         * (default: no nginx reload on the cut-over's path) or nginx itself (a `proxy_pass` block,
         * one reload, which closes the idle keep-alive connections of every site).
         */
        proxyWith?: 'app' | 'nginx';
        /** Reload nginx when a site is removed (default false: the block goes at the next reload). */
        reloadOnRemove?: boolean;
      });

export interface HostAgentOptions {
  /** Name of the server, sent in `X-Served-By` by its site app. */
  id: string;
  /** Sites' data (`<dataDir>/sites/<domain>`) and the agent's state. */
  dataDir: string;
  /** The server's shared IPs; the agent never removes them. */
  sharedIps: string[];
  /** Port sites are served on at the shared IPs. Default 80. */
  httpPort?: number;
  addresses: AddressManager;
  web: WebOptions;
  /** Engine of redirects that do not name one. Default userspace. */
  engine?: EngineKind;
  /**
   * Receiving site data: the TLS listener's address (default the first shared IP) and port
   * (default 873), the rsync binary, and the listener's certificate (default a self-signed one
   * kept in `<dataDir>/rsyncd/tls`).
   */
  rsync?: { address?: string; port?: number; path?: string; tls?: { certFile: string; keyFile: string } };
  /** How site data moves between agents. Default rsync (the `rsync` option above). */
  transport?: SyncTransport;
  /** Where the state to restore on start lives. Default `<dataDir>/agent-state.json`. */
  state?: AgentStateStore;
  /** Longest a connection or request may stay held. Default 30 000 ms. */
  maxHoldMs?: number;
  /** A userspace redirect's process with no agent connected this long closes and exits. Default 600 000 ms. */
  redirectOrphanTimeoutMs?: number;
  /**
   * Where the built-in site app runs: in this process (default; the sandbox's in-process agents)
   * or in a process of its own that outlives the agent and that a restarted agent adopts
   * (`ferry agent`), control socket `<dataDir>/site-app/control.sock`.
   */
  siteApp?: 'in-process' | 'process';
  /** The site app's own process with no agent connected this long stops and exits. Default 600 000 ms. */
  siteAppOrphanTimeoutMs?: number;
  /** The hosting server's own web server, whose sites `webSites()` reads. None: it answers WEBCONFIG_NONE. */
  webConfig?: WebConfigOptions;
  /**
   * Track a site's changed files from its first sync pass, so later passes copy only those
   * (tracker.ts). Default on with `inotifywait` from PATH; off: every pass is a full one.
   */
  tracking?: false | { inotifywaitPath?: string };
  /**
   * How the server's own sites (`webConfig`) are gated, recreated and retired (webstack/). The
   * gate is the site app, so it must listen on loopback behind the web server (`web: nginx`).
   */
  webStack?: {
    /**
     * Folder the web server includes (nginx: inside `http {}`). Default /etc/nginx/conf.d, or
     * /etc/apache2/sites-enabled for Apache.
     */
    includeDir?: string;
    /** The flavor; default nginx for `webConfig.kind: nginx` (Apache's is given by its module). */
    flavor?: WebFlavor;
    /** The web server's command for `-t` and `-s reload` (nginx). Default `['nginx']`. */
    command?: string[];
    phpFpm?: PhpFpmOptions;
    /** Where this server's PHP-FPM versions are (the target check). Default Debian's layout. */
    phpLayout?: PhpFpmLayout;
    crontabCommand?: string[];
    /** How often retired sites' backups are pruned. Default 3 600 000 ms. */
    pruneEveryMs?: number;
  };
  /**
   * The server's own MariaDB, whose sites' databases the agent moves (database/mover.ts). Without
   * it every database method answers DB_NOT_CONFIGURED, except a plan of a site with no local database.
   * `address` defaults to the first shared IP.
   */
  mariadb?: Omit<MariaDbAgentOptions, 'address'> & { address?: string };
  /**
   * The server's own Postfix and Dovecot (mail/): a web site's domain with mail here moves its
   * mail with it. Without it, a site with mail cannot come here (MAIL_NOT_CONFIGURED) and an
   * origin's sites are inspected without their mail. `relayPort`: where relayed mail goes on the
   * new server (default 25).
   */
  mail?: { postfixConfig: string; dovecotConfig: string; relayPort?: number };
  /** Hears what the agent reports in passing (a sync pass that falls back to a full copy, and why). */
  /**
   * The domain's mail, when the agent moves mail (set by the mail part): each sync pass of a site
   * also copies the domain's Maildirs (mail/copy.ts). Absent: passes copy the site's data only.
   */
  mailCopy?: MailCopyHook;
  log?: (message: string) => void;
}

export interface RedirectSpec {
  address: string;
  ports: number[];
  upstream: string;
  sourceAddress?: string;
  engine?: EngineKind;
}

interface RedirectEntry {
  spec: Required<Pick<RedirectSpec, 'address' | 'ports' | 'engine'>> & { sourceAddress?: string };
  upstream: string;
  held: boolean;
  engine: RelayProcess | KernelRelay;
}

type SavedRedirect = AgentState['redirects'][number];

const REDIRECT_ID_RE = /^[A-Za-z0-9._-]{1,120}$/;

/** One hosting server, as the agent daemon runs it. */
export class HostAgent implements HostDriver, SyncPeer {
  readonly id: string;
  readonly sites: SiteApp;
  readonly nginx: NginxFrontend | undefined;
  readonly httpPort: number;
  private readonly opts: HostAgentOptions;
  private readonly redirects = new Map<string, RedirectEntry>();
  private readonly added = new Set<string>();
  private readonly transport: SyncTransport;
  private readonly jobs = new Map<string, SyncProgress & { domain: string }>();
  private readonly state: AgentStateStore;
  private stateChain: Promise<unknown> = Promise.resolve();
  /** Serializes operations on one key (a site, a redirect) so repeats and retries never race. */
  private readonly locks = new KeyedLock();
  /** A site's change tracker, for the one receive session its passes go to (`key`). */
  private readonly trackers = new Map<string, { key: string; tracker: ChangeTracker; source: string }>();
  /** The server's own sites that Ferry gates or installed (undefined without `webConfig`). */
  private readonly stack: WebStack | undefined;
  private readonly stackProblem: string | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  /** The site databases' mover (undefined without `mariadb`). */
  private readonly databases: DatabaseMover | undefined;
  /** The domains' mail (undefined without `mail`). */
  private readonly mail: MailSites | undefined;
  /** How syncSite copies the domains' Maildirs (the mail's own, or the one given in the options). */
  private readonly mailCopy: MailCopyHook | undefined;

  constructor(opts: HostAgentOptions) {
    if (opts.sharedIps.length === 0)
      throw new FerryError('AGENT_OPTIONS', 'the agent needs at least one shared IP (--shared-ip)');
    this.opts = opts;
    this.id = opts.id;
    this.httpPort = opts.httpPort ?? 80;
    this.state = opts.state ?? new FileStateStore(join(opts.dataDir, 'agent-state.json'));
    const web = opts.web;
    const app =
      web.kind === 'nginx'
        ? { address: web.appAddress ?? '127.0.0.1', port: web.appPort ?? 8080 }
        : undefined;
    const site: SiteServerOptions = {
      name: opts.id,
      addresses: app ? [app.address] : opts.sharedIps,
      port: app ? app.port : this.httpPort,
      dataDir: join(opts.dataDir, 'sites'),
      ...(opts.maxHoldMs ? { maxHoldMs: opts.maxHoldMs } : {}),
    };
    const dir = join(opts.dataDir, 'site-app');
    this.sites =
      opts.siteApp === 'process'
        ? new SiteProcess({
            site,
            socketPath: join(dir, 'control.sock'),
            logFile: join(dir, 'site-app.log'),
            ...(opts.siteAppOrphanTimeoutMs !== undefined
              ? { orphanTimeoutMs: opts.siteAppOrphanTimeoutMs }
              : {}),
          })
        : new SiteServer(site);
    this.nginx =
      web.kind === 'nginx' && app
        ? new NginxFrontend({ ...web, listen: { addresses: opts.sharedIps, port: this.httpPort }, app })
        : undefined;
    if (opts.webConfig) {
      const flavor =
        opts.webStack?.flavor ??
        (opts.webConfig.kind === 'nginx'
          ? new NginxFlavor(opts.webStack?.command ? { command: opts.webStack.command } : {})
          : new ApacheFlavor({
              ...(opts.webStack?.command ? { command: opts.webStack.command } : {}),
              ...(opts.webConfig.env ? { env: opts.webConfig.env } : {}),
            }));
      if (!app)
        this.stackProblem =
          'the site app listens on the shared IPs (--web builtin); web sites need it on loopback behind the web server (--web nginx)';
      else if (!flavor) this.stackProblem = `no web stack flavor for ${opts.webConfig.kind} in this agent`;
      else
        this.stack = new WebStack({
          flavor,
          webConfig: opts.webConfig,
          dataDir: opts.dataDir,
          includeDir:
            opts.webStack?.includeDir ??
            (opts.webConfig.kind === 'nginx' ? '/etc/nginx/conf.d' : '/etc/apache2/sites-enabled'),
          gate: app,
          sharedIp: opts.sharedIps[0]!,
          statsPort: () => this.nginx?.statsPort,
          ...(opts.webStack?.phpFpm ? { phpFpm: opts.webStack.phpFpm } : {}),
          ...(opts.webStack?.phpLayout ? { phpLayout: opts.webStack.phpLayout } : {}),
          ...(opts.webStack?.crontabCommand ? { crontabCommand: opts.webStack.crontabCommand } : {}),
          ...(opts.log ? { log: opts.log } : {}),
          settle: (d) => this.gateQuiet(d),
        });
    }
    if (opts.mariadb) {
      this.databases = new DatabaseMover({
        ...opts.mariadb,
        address: opts.mariadb.address ?? opts.sharedIps[0]!,
        dataDir: opts.dataDir,
        localAddresses: this.localAddresses(),
        findWpConfig: (d) => this.findWpConfig(d),
      });
    }
    if (opts.mail) {
      this.mail = new MailSites({
        postfix: new Postfix({ configDir: opts.mail.postfixConfig }),
        dovecot: new Dovecot({ configFile: opts.mail.dovecotConfig }),
        dataDir: opts.dataDir,
        ...(opts.mail.relayPort !== undefined ? { relayPort: opts.mail.relayPort } : {}),
        ...(opts.log ? { log: opts.log } : {}),
      });
    }
    this.mailCopy = opts.mailCopy ?? this.mail?.copyHook();
    this.transport =
      opts.transport ??
      new RsyncTransport({
        address: opts.rsync?.address ?? opts.sharedIps[0]!,
        ...(opts.rsync?.port !== undefined ? { port: opts.rsync.port } : {}),
        ...(opts.rsync?.path ? { rsyncPath: opts.rsync.path } : {}),
        ...(opts.rsync?.tls ? { tls: opts.rsync.tls } : {}),
        stateDir: join(opts.dataDir, 'rsyncd'),
      });
  }

  /**
   * Start the site app (or adopt its process, with its sites in the modes they have now) and
   * nginx's counters, then restore the sites and redirects of the last run.
   */
  async start(): Promise<void> {
    await mkdir(this.opts.dataDir, { recursive: true });
    await this.databases?.start();
    await this.sites.start();
    await this.nginx?.start();
    const saved = await this.state.load();
    // Web sites' upstreams first: restoring a site below gives it its upstream again.
    await this.stack?.load();
    await this.stack
      ?.refresh()
      .catch((err: Error) => this.opts.log?.(`web sites' configuration not refreshed: ${err.message}`));
    if (this.stack) {
      const prune = () =>
        void this.stack!.pruneBackups().catch((err: Error) =>
          this.opts.log?.(`pruning backups: ${err.message}`),
        );
      prune();
      this.pruneTimer = setInterval(prune, this.opts.webStack?.pruneEveryMs ?? 3_600_000);
      this.pruneTimer.unref();
    }
    // What an adopted app serves now wins over the saved state, which may lag one call behind;
    // adding each again restores what the agent keeps beside it (nginx's server block).
    const adopted = this.sites instanceof SiteProcess && this.sites.adopted ? this.listSites() : [];
    for (const s of adopted) await this.addSite(s.domain, s.mode);
    if (!saved) {
      if (this.sites instanceof SiteProcess) await this.saveState();
      return;
    }
    for (const a of saved.addresses ?? []) this.added.add(a);
    for (const s of saved.sites)
      if (!adopted.some((a) => a.domain === normalizeDomain(s.domain))) await this.addSite(s.domain, s.mode);
    for (const r of saved.redirects) {
      if (await this.adoptRedirect(r)) continue;
      await this.startRedirect(r.id, { ...r.spec, upstream: r.upstream });
      if (r.held) await this.holdRedirect(r.id);
    }
    if (saved.redirects.length > 0 || this.sites instanceof SiteProcess) await this.saveState();
  }

  /**
   * Stop (the state store keeps what to restore). Redirects are closed, or with `keepRedirects`
   * left forwarding for the next start to adopt; the site app stops, or with `keepSiteApp` (its
   * own process only) goes on serving for the next start to adopt. The daemon keeps both, so
   * that a restart or an upgrade fails no request.
   */
  async stop(opts: { keepRedirects?: boolean; keepSiteApp?: boolean } = {}): Promise<void> {
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    await Promise.allSettled(
      [...this.redirects.values()].map((r) => (opts.keepRedirects ? r.engine.detach() : r.engine.close())),
    );
    this.redirects.clear();
    for (const d of [...this.trackers.keys()]) await this.stopTracking(d);
    await this.transport.stop().catch(() => undefined);
    if (opts.keepSiteApp && this.sites instanceof SiteProcess) this.sites.detach();
    else await this.sites.stop();
    await this.nginx?.stop();
  }

  info(): Record<string, unknown> {
    return {
      id: this.id,
      web: this.nginx ? 'nginx' : 'builtin',
      sharedIps: [...this.opts.sharedIps],
      httpPort: this.nginx ? this.httpPort : this.sites.port,
      engine: this.opts.engine ?? 'userspace',
      sites: this.sites.sites(),
      redirects: [...this.redirects.keys()],
      syncSessions: this.transport.list(),
      // Where the other server reaches this MariaDB (null: no --mariadb-defaults-file).
      mariadb: this.opts.mariadb
        ? {
            address: this.opts.mariadb.address ?? this.opts.sharedIps[0]!,
            port: this.opts.mariadb.port ?? 3306,
          }
        : null,
    };
  }

  /** The sites of the server's own web server (`webConfig`), each with what Ferry can move and why not. */
  webSites(): Promise<WebSitesReport> {
    if (!this.opts.webConfig) {
      return Promise.reject(
        new FerryError(
          'WEBCONFIG_NONE',
          `${this.id} was not told which web server to read; start the agent with --web-config nginx or apache`,
        ),
      );
    }
    return readWebSites(this.opts.webConfig);
  }

  // --- addresses -------------------------------------------------------------------------

  listAddresses(): Promise<string[]> {
    return this.opts.addresses.list();
  }

  /** Bring `address` up (no-op when up). One that was up already is not the agent's to take down. */
  addAddress(address: string): Promise<void> {
    return this.locked('addresses', async () => {
      if (this.added.has(address)) {
        await this.opts.addresses.add(address);
        return;
      }
      if ((await this.opts.addresses.list()).includes(address)) return;
      await this.opts.addresses.add(address);
      this.added.add(address);
      await this.saveState();
    });
  }

  /**
   * Take down an address this agent brought up (no-op when it is down). Shared IPs and any
   * other address configured on the server by someone else are refused: a controller bug must
   * not take a server off the network.
   */
  removeAddress(address: string): Promise<void> {
    return this.locked('addresses', async () => {
      if (this.opts.sharedIps.includes(address)) {
        throw new FerryError(
          'ADDRESS_PROTECTED',
          `${address} is a shared IP of ${this.id}; the agent never removes it`,
        );
      }
      const using = [...this.redirects].find(([, r]) => r.spec.address === address);
      if (using)
        throw new FerryError(
          'ADDRESS_IN_USE',
          `${address} carries redirect ${using[0]}; stop the redirect first`,
        );
      const up = (await this.opts.addresses.list()).includes(address);
      if (up && !this.added.has(address)) {
        throw new FerryError(
          'ADDRESS_PROTECTED',
          `${address} was not brought up by this agent; it only removes the temporary IPs it added`,
        );
      }
      if (up) await this.opts.addresses.remove(address);
      if (this.added.delete(address)) await this.saveState();
    });
  }

  // --- redirects -------------------------------------------------------------------------

  /** Start redirect `id`, or find it running with the same address, ports, source and engine. */
  startRedirect(id: string, spec: RedirectSpec): Promise<void> {
    checkRedirectId(id);
    return this.locked(`redirect:${id}`, async () => {
      const engineKind = spec.engine ?? this.opts.engine ?? 'userspace';
      const want: RedirectEntry['spec'] = {
        address: spec.address,
        ports: [...spec.ports],
        engine: engineKind,
        ...(spec.sourceAddress ? { sourceAddress: spec.sourceAddress } : {}),
      };
      const existing = this.redirects.get(id);
      if (existing) {
        if (JSON.stringify(existing.spec) !== JSON.stringify(want)) {
          throw new FerryError(
            'REDIRECT_CONFLICT',
            `redirect ${id} runs with ${JSON.stringify(existing.spec)}; stop it before starting it with ${JSON.stringify(want)}`,
          );
        }
        return;
      }
      if (engineKind === 'kernel') await checkForwarding(spec.address);
      const engine = await this.redirectEngine(id, want, spec.upstream, false);
      await engine.start();
      this.redirects.set(id, { spec: want, upstream: spec.upstream, held: false, engine });
      await this.saveState();
    });
  }

  /** The engine of redirect `id` (not started); `adopt` takes over a kernel table left running. */
  private async redirectEngine(
    id: string,
    spec: RedirectEntry['spec'],
    upstream: string,
    adopt: boolean,
  ): Promise<RelayProcess | KernelRelay> {
    const maxHoldMs = this.opts.maxHoldMs ?? 30_000;
    const name = createHash('sha256').update(id).digest('hex').slice(0, 12);
    const common = {
      upstream: { address: upstream },
      ...(spec.sourceAddress ? { sourceAddress: spec.sourceAddress } : {}),
      maxHoldMs,
    };
    if (spec.engine === 'kernel')
      return new KernelRelay({
        ...common,
        listen: { address: spec.address, ports: spec.ports },
        id: name,
        adopt,
      });
    const dir = join(this.opts.dataDir, 'redirects');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // A relay still at this socket was started by a run that died before saving it: it goes.
    if (!adopt) await (await RelayProcess.adopt(join(dir, `${name}.sock`)))?.close();
    return new RelayProcess({
      relay: { ...common, listen: { address: spec.address, ports: spec.ports } },
      socketPath: join(dir, `${name}.sock`),
      logFile: join(dir, `${name}.log`),
      ...(this.opts.redirectOrphanTimeoutMs !== undefined
        ? { orphanTimeoutMs: this.opts.redirectOrphanTimeoutMs }
        : {}),
    });
  }

  /**
   * Takes back a redirect of the last run that still forwards: its process (userspace) or its
   * table (kernel), with the upstream and hold state it has now. False when it is gone, or runs
   * on other addresses than saved (then it is stopped).
   */
  private async adoptRedirect(r: SavedRedirect): Promise<boolean> {
    checkRedirectId(r.id);
    let engine: RelayProcess | KernelRelay | undefined;
    if (r.spec.engine === 'kernel') {
      const k = (await this.redirectEngine(r.id, r.spec, r.upstream, true)) as KernelRelay;
      await k.start();
      if (!k.adopted) {
        await k.close();
        return false;
      }
      engine = k;
    } else {
      engine = r.socket ? await RelayProcess.adopt(r.socket) : undefined;
      if (!engine) return false;
      const l = engine.listen;
      if (
        l.length !== 1 ||
        l[0]!.address !== r.spec.address ||
        JSON.stringify(l[0]!.ports) !== JSON.stringify(r.spec.ports)
      ) {
        await engine.close();
        return false;
      }
    }
    const upstream =
      engine instanceof KernelRelay
        ? engine.currentUpstream.address
        : (engine.upstream?.address ?? r.upstream);
    const held = engine instanceof KernelRelay ? engine.isHolding : engine.holding;
    this.redirects.set(r.id, { spec: r.spec, upstream, held, engine });
    return true;
  }

  setRedirectUpstream(id: string, upstream: string): Promise<void> {
    return this.locked(`redirect:${id}`, async () => {
      const r = this.redirect(id);
      if (r.upstream === upstream) return;
      await r.engine.setUpstream({ address: upstream });
      r.upstream = upstream;
      await this.saveState();
    });
  }

  holdRedirect(id: string): Promise<void> {
    return this.locked(`redirect:${id}`, async () => {
      const r = this.redirect(id);
      if (r.held) return;
      await r.engine.hold();
      r.held = true;
      await this.saveState();
    });
  }

  /** Release held connections to the current upstream; no-op when not held or absent. */
  releaseRedirect(id: string): Promise<void> {
    return this.locked(`redirect:${id}`, async () => {
      const r = this.redirects.get(id);
      if (!r) return;
      await r.engine.release();
      if (!r.held) return;
      r.held = false;
      await this.saveState();
    });
  }

  /** Counters of redirect `id`, or undefined when it does not run. */
  async redirectStats(
    id: string,
  ): Promise<
    (RedirectStats & RelayStats & { upstream: string; engine: EngineKind; holding: boolean }) | undefined
  > {
    const r = this.redirects.get(id);
    if (!r) return undefined;
    return { ...(await r.engine.stats()), upstream: r.upstream, engine: r.spec.engine, holding: r.held };
  }

  listRedirects(): Array<{
    id: string;
    address: string;
    ports: number[];
    upstream: string;
    engine: EngineKind;
    holding: boolean;
  }> {
    return [...this.redirects].map(([id, r]) => ({
      id,
      address: r.spec.address,
      ports: [...r.spec.ports],
      upstream: r.upstream,
      engine: r.spec.engine,
      holding: r.held,
    }));
  }

  stopRedirect(id: string): Promise<void> {
    return this.locked(`redirect:${id}`, async () => {
      const r = this.redirects.get(id);
      if (!r) return;
      this.redirects.delete(id);
      await r.engine.close();
      await this.saveState();
    });
  }

  private redirect(id: string): RedirectEntry {
    const r = this.redirects.get(id);
    if (!r) throw new FerryError('REDIRECT_NOT_FOUND', `no redirect ${id} on ${this.id}; start it first`);
    return r;
  }

  // --- sites -----------------------------------------------------------------------------

  /**
   * Serve `domain` in `mode` (adding it when new). With nginx in front the server block sends
   * requests to the app, which applies the mode; with `proxyWith: 'nginx'`, `proxy` turns the
   * block itself into a reverse proxy to the target (after the app released its held requests).
   */
  addSite(domain: string, mode: SiteMode): Promise<void> {
    const d = normalizeDomain(domain);
    return this.locked(`site:${d}`, () => this.applySite(d, mode));
  }

  /** addSite's work, under the site's lock. */
  private async applySite(d: string, mode: SiteMode): Promise<void> {
    {
      // The domain's mail takes the mode's state first: in a hold, no message is delivered here
      // once the site's requests are held (mail/mail.ts has the table).
      if (this.stack?.has(d) && (await this.hasMail(d))) await this.mail!.applyMode(d, mode);
      await this.appAddSite(d, mode);
      // A site that takes writes here must never be overwritten by a sync: its session ends.
      if (mode === 'serve') await this.closeReceivers(d);
      // A web site's front is the web server's own block (webstack/), not a Ferry vhost.
      if (this.nginx && !this.stack?.has(d)) {
        const viaNginx =
          typeof mode === 'object' && this.opts.web.kind === 'nginx' && this.opts.web.proxyWith === 'nginx';
        await this.nginx.setVhost(
          d,
          viaNginx ? { proxy: { address: mode.proxy.address, port: mode.proxy.port } } : { app: true },
        );
      }
      await this.saveState();
      if (typeof mode === 'object') {
        // Proxying elsewhere, the site has moved away from here: no pass will follow, so its
        // receive session (if any) and its change tracker end. That is cleanup: the caller (the
        // cut-over, with requests held until it goes on) does not wait for it; the next call for
        // this site does (the site's lock).
        void this.locked(`site:${d}`, async () => {
          await this.closeReceivers(d);
          await this.stopTracking(d);
        }).catch((err: Error) =>
          this.opts.log?.(`${d}: ending its sync session and tracker: ${err.message}`),
        );
      }
    }
  }

  /**
   * The one place a site goes into the site app: a web site with its `upstream` (its backend on
   * loopback), so the gate forwards to it in serve and readonly.
   */
  private appAddSite(d: string, mode: SiteMode): Promise<void> {
    const upstream = this.stack?.upstream(d);
    return upstream ? this.sites.addSite(d, mode, { upstream }) : this.sites.addSite(d, mode);
  }

  /** Set the mode of a site this server has (SITE_NOT_FOUND otherwise). */
  setSiteMode(domain: string, mode: SiteMode): Promise<void> {
    if (!this.sites.hasSite(domain)) {
      return Promise.reject(
        new FerryError(
          'SITE_NOT_FOUND',
          `${this.id} does not serve ${normalizeDomain(domain)}; add it with PUT /v1/sites/{domain} first`,
        ),
      );
    }
    return this.addSite(domain, mode);
  }

  /** Stop serving `domain` (no-op when not served); `deleteData` also removes its data folder. */
  removeSite(domain: string, deleteData = false): Promise<void> {
    const d = normalizeDomain(domain);
    return this.locked(`site:${d}`, async () => {
      await this.closeReceivers(d);
      await this.stopTracking(d);
      await this.nginx?.removeVhost(d, {
        reload: this.opts.web.kind === 'nginx' && this.opts.web.reloadOnRemove === true,
      });
      await this.sites.removeSite(d, { deleteData });
      await this.saveState();
    });
  }

  async hasSite(domain: string): Promise<boolean> {
    return this.sites.hasSite(domain);
  }

  listSites(): Array<{ domain: string; mode: SiteMode }> {
    return this.sites.sites().map((domain) => ({ domain, mode: this.sites.mode(domain) }));
  }

  /** The site's mode, or null when this server does not serve it. */
  async siteMode(domain: string): Promise<SiteMode | null> {
    return this.sites.hasSite(domain) ? this.sites.mode(domain) : null;
  }

  /**
   * The site's counters at the shared IP. Behind nginx, arrivals and their sources are nginx's
   * (the app only sees nginx); in-flight and held requests are the app's.
   */
  async siteStats(domain: string): Promise<SiteStats> {
    const app = await this.sites.siteStats(domain);
    if (!this.nginx) return app;
    const n = this.nginx.siteCounters(normalizeDomain(domain));
    return {
      requests: n.requests,
      writes: n.writes,
      inFlight: app.inFlight,
      held: app.held,
      lastRequestAt: Math.max(n.lastRequestAt ?? 0, app.lastRequestAt ?? 0) || null,
      bySource: Object.fromEntries([...n.bySource].map(([k, v]) => [k, { ...v }])),
    };
  }

  /** Until the site has no request in flight and, with mail, no queued message nor mail session of its domain. */
  async waitSiteIdle(domain: string, timeoutMs: number): Promise<boolean> {
    const d = normalizeDomain(domain);
    const deadline = Date.now() + timeoutMs;
    if (!(await this.sites.waitIdle(d, timeoutMs))) return false;
    if (!this.stack?.has(d) || !(await this.hasMail(d))) return true;
    for (;;) {
      if (await this.mail!.idle(d)) return true;
      if (Date.now() >= deadline) return false;
      await sleep(Math.min(200, Math.max(1, deadline - Date.now())));
    }
  }

  /** Whether the domain has mail on this server's Postfix (false without a mail configuration). */
  private async hasMail(d: string): Promise<boolean> {
    if (!this.mail) return false;
    try {
      return (await this.mail.has(d)) && !(await this.mail.leftBehind(d));
    } catch (err) {
      // Maps Ferry cannot read: a site with mail was refused at its inspection or check, so this
      // one has none that moves; its web part goes on.
      if (!isFerryError(err, 'MAIL_UNREADABLE')) throw err;
      this.opts.log?.(`${d}: its mail is not read (${err.message})`);
      return false;
    }
  }

  private mailSites(): MailSites {
    if (this.mail) return this.mail;
    throw new FerryError(
      'MAIL_NOT_CONFIGURED',
      `this agent (${this.id}) has no --postfix-config and --dovecot-config: it cannot take a site's mail; start it with the configuration of this server's Postfix and Dovecot`,
    );
  }

  /** Reread the site's data after a sync (a web site's own application reads its files itself: no-op). */
  async reloadSite(domain: string): Promise<void> {
    const d = normalizeDomain(domain);
    await this.reloadMail(d);
    if (this.stack?.has(d)) return;
    return this.sites.reloadSite(domain);
  }

  /** After a pass that brought mail: the Maildirs given to the mail user, Dovecot's indexes rebuilt. */
  private async reloadMail(d: string): Promise<void> {
    if (!this.mailCopy || !this.transport.list().includes(mailSession(d))) return;
    const target = await this.mailCopy.mailRoot(d);
    if (!target) return;
    await ownMaildirs(target.root, target.uid, target.gid);
    await this.mailCopy.afterPass(d);
  }

  /** Where the site's data lives: a web site's own folder, else the site app's. */
  siteDataDir(domain: string): string {
    const d = normalizeDomain(domain);
    const web = this.stack?.dataDir(d);
    if (web) return web;
    if (web === null)
      throw new FerryError('SITE_DATA_READ', `${d} has no folder of its own to sync (it serves no files)`);
    return this.sites.siteDataDir(d);
  }

  // --- the server's own web sites (webstack/) ---------------------------------------------
  // Their configuration changes run one at a time (lock `webstack`): a web server's check must
  // never read another site's half-written files.

  private webStack(): WebStack {
    if (this.stack) return this.stack;
    throw new FerryError(
      this.opts.webConfig ? 'WEBSTACK_OPTIONS' : 'WEBCONFIG_NONE',
      this.stackProblem ??
        `${this.id} was not told which web server to read; start the agent with --web-config nginx or apache`,
    );
  }

  /** The server's own site named `domain` (its blocks merged), or null when it has none. */
  async inspectWebSite(domain: string): Promise<WebSite | null> {
    const d = normalizeDomain(domain);
    const site = await this.webStack().inspect(d);
    if (!site || !this.mail) return site;
    const { mail, refusals } = await this.mail.inspect(d);
    return {
      ...site,
      ...(mail ? { mail } : {}),
      refusals: [...site.refusals, ...refusals],
      movable: site.movable && refusals.length === 0,
    };
  }

  /**
   * Target, at plan time: whether this server can host a site with `needs` (what the origin's
   * inspection said it requires). Throws `TARGET_LACKS` naming each lack; changes nothing. The
   * install runs the same check.
   */
  async checkWebSite(domain: string, needs: SiteNeeds): Promise<void> {
    const d = normalizeDomain(domain);
    await this.webStack().assertCanHost(d, needs);
    if (needs.mailDomain) await this.mailSites().assertCanHost(normalizeDomain(needs.mailDomain));
  }

  /**
   * Origin: put the gate in front of the site (one reload); the site serves through it. Idempotent.
   * `mail: false` (the site's `ferry.yaml` entry): the domain's mail stays on this server.
   */
  gateWebSite(domain: string, opts: { mail?: false } = {}): Promise<void> {
    const d = normalizeDomain(domain);
    const stack = this.webStack();
    return this.locked(`site:${d}`, async () => {
      await this.mail?.leaveBehind(d, opts.mail === false);
      if (await this.hasMail(d)) await this.mail!.prepare();
      const mode = this.sites.hasSite(d) ? this.sites.mode(d) : 'serve';
      await this.locked('webstack', () => stack.gate(d, () => this.applySite(d, mode)));
      await this.applySite(d, mode);
    });
  }

  /** Everything that recreates the site on another server (keys included: never log it). */
  async exportWebSite(domain: string): Promise<WebSiteBundle> {
    const d = normalizeDomain(domain);
    const bundle = await this.webStack().export(d);
    const mail = this.mail ? await this.mail.export(d) : undefined;
    return mail ? { ...bundle, mail } : bundle;
  }

  /** Target: recreate the site; it ends a site of the site app in mode readonly. Idempotent. */
  installWebSite(bundle: WebSiteBundle): Promise<void> {
    const d = normalizeDomain(bundle.domain);
    const stack = this.webStack();
    const mail = bundle.mail;
    if (mail && normalizeDomain(mail.domain) !== d)
      return Promise.reject(
        new FerryError('VALIDATION', `the bundle's mail is of ${mail.domain}, not of the site ${d}`),
      );
    const mailSites = mail ? this.mailSites() : undefined;
    return this.locked(`site:${d}`, async () => {
      const mode = this.sites.hasSite(d) ? this.sites.mode(d) : 'readonly';
      // The mail first, in the site's mode (readonly: 4xx, logins refused), then the site, whose
      // applySite keeps the mail in that state.
      if (mail && mailSites) await mailSites.install({ ...mail, domain: d }, mode);
      await this.locked('webstack', () =>
        stack.install({ ...bundle, domain: d }, () => this.applySite(d, mode)),
      );
      await this.applySite(d, mode);
    });
  }

  /** Origin rollback: the site's own files back, gate gone (one reload). No-op when not gated. */
  ungateWebSite(domain: string): Promise<void> {
    const d = normalizeDomain(domain);
    const stack = this.webStack();
    return this.locked(`site:${d}`, async () => {
      // The domain's mail is delivered here again before the site's gate goes.
      if (await this.hasMail(d)) await this.mail!.applyMode(d, 'serve');
      await this.locked('webstack', () => stack.ungate(d));
      await this.forgetSite(d);
    });
  }

  /** Target rollback: everything the install created goes. No-op when not installed. */
  uninstallWebSite(domain: string): Promise<void> {
    const d = normalizeDomain(domain);
    const stack = this.webStack();
    return this.locked(`site:${d}`, async () => {
      await this.mail?.uninstall(d).catch((err: unknown) => {
        // Maps Ferry cannot read hold nothing it installed (the install reads them first).
        if (!isFerryError(err, 'MAIL_UNREADABLE')) throw err;
      });
      await this.locked('webstack', () => stack.uninstall(d));
      await this.forgetSite(d);
    });
  }

  /**
   * After completion. Target: the plain site on the shared IP, gate gone. Origin: the site's
   * configuration, pool, crontab and data moved into a backup kept `backupKeepMs` (default 7 days).
   */
  finishWebSite(
    domain: string,
    role: 'origin' | 'target',
    opts: { backupKeepMs?: number } = {},
  ): Promise<void> {
    const d = normalizeDomain(domain);
    const stack = this.webStack();
    return this.locked(`site:${d}`, async () => {
      await this.closeReceivers(d);
      await this.stopTracking(d);
      const keep = opts.backupKeepMs ?? 7 * 24 * 3_600_000;
      if (await this.hasMail(d)) await this.mail!.finish(d, role, keep);
      await this.locked('webstack', () => stack.finish(d, role, keep));
      await this.forgetSite(d);
    });
  }

  /**
   * Until the gate has no request of `d` in flight and none came for 1.5 s (at most 30 s): the
   * web server's old workers have finished what they had of the site.
   */
  private async gateQuiet(d: string): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && this.sites.hasSite(d)) {
      const st = await this.sites.siteStats(d);
      if (st.inFlight === 0 && st.held === 0 && Date.now() - (st.lastRequestAt ?? 0) >= 1_500) return;
      await sleep(250);
    }
  }

  /** The site app forgets a web site that is no longer gated (its files stay where they are). */
  private async forgetSite(d: string): Promise<void> {
    await this.closeReceivers(d);
    await this.stopTracking(d);
    if (this.sites.hasSite(d)) await this.sites.removeSite(d, { deleteData: false });
    await this.saveState();
  }

  probe(
    domain: string,
    address: string,
    port: number,
    path: string,
  ): Promise<{ status: number; bodySha256: string }> {
    return httpProbe(domain, address, port, path);
  }

  // --- data sync -------------------------------------------------------------------------

  /**
   * Open (or find open) the receive session for `domain`'s data. The site must be here and not
   * taking writes (`readonly`, `hold`, or proxying them elsewhere, as an origin does when a
   * rollback after the switch syncs the data back): a sync replaces its data. The session, and
   * its secret, last until the site serves here or is removed, or `closeSyncReceiver`.
   */
  openSyncReceiver(domain: string): Promise<SyncEndpoint> {
    const d = normalizeDomain(domain);
    if (!this.sites.hasSite(d)) {
      return Promise.reject(
        new FerryError(
          'SITE_NOT_FOUND',
          `${this.id} does not serve ${d}; add the site (readonly) before receiving its data`,
        ),
      );
    }
    const mode = this.sites.mode(d);
    if (mode === 'serve') {
      return Promise.reject(
        new FerryError(
          'SYNC_TARGET_LIVE',
          `${d} takes writes on ${this.id} (mode ${JSON.stringify(mode)}); receiving data would overwrite them. Set it readonly first.`,
        ),
      );
    }
    return this.openReceivers(d);
  }

  /**
   * The site's receive session, with its mail session when the mail part gives the domain a mail
   * root here (rsync transport only: the sandbox's in-process agents move no mail).
   */
  private async openReceivers(d: string): Promise<SyncEndpoint> {
    const endpoint = await this.transport.open(d, this.siteDataDir(d));
    const target = this.mailCopy && this.transport.kind === 'rsync' ? await this.mailCopy.mailRoot(d) : null;
    if (!target) return endpoint;
    // Folders above the root stay traversable for the mail user; the root becomes its own after the pass.
    await mkdir(dirname(target.root), { recursive: true, mode: 0o755 });
    await mkdir(target.root, { recursive: true, mode: 0o700 });
    return { ...endpoint, mail: await this.transport.open(mailSession(d), target.root) };
  }

  closeSyncReceiver(domain: string): Promise<void> {
    return this.closeReceivers(normalizeDomain(domain));
  }

  /** Close the site's receive session and its mail session. */
  private async closeReceivers(d: string): Promise<void> {
    await this.transport.close(d);
    await this.transport.close(mailSession(d));
  }

  /**
   * One sync pass of `domain` to `to`: `to` opens (or finds open) its receive session for the
   * site, this agent pushes into it (`pushSite`), `to` reloads the site's data. `HttpHostDriver`
   * runs the same three steps through the agents' API.
   */
  async syncSite(
    domain: string,
    to: HostDriver,
    opts: SyncSiteOptions = {},
  ): Promise<{ files: number; bytes: number }> {
    if (!isSyncPeer(to)) {
      throw new FerryError(
        'SYNC_UNSUPPORTED',
        `${to.id} cannot receive site data (it offers no receive session); sync between agents`,
      );
    }
    const endpoint = await to.openSyncReceiver(domain);
    const report = opts.onProgress;
    const res = await this.pushSite(
      domain,
      endpoint,
      undefined,
      report
        ? (p) =>
            report({
              bytes: p.bytes,
              percent: p.percent,
              ...(p.files !== undefined ? { files: p.files } : {}),
            })
        : undefined,
    );
    await to.reloadSite(domain);
    return { files: res.files, bytes: res.bytes };
  }

  /**
   * Push `domain`'s data to a receive session of another agent. `jobId` names the push for
   * progress reads; repeating a finished job's id runs a new pass (a delta, rsync being rsync).
   */
  async pushSite(
    domain: string,
    to: SyncEndpoint,
    jobId = randomBytes(6).toString('hex'),
    onProgress?: (p: PushProgress) => void,
  ): Promise<{
    jobId: string;
    files: number;
    bytes: number;
    totalBytes?: number;
    durationMs: number;
    pass: 'full' | 'tracked';
  }> {
    const d = normalizeDomain(domain);
    const source = this.siteDataDir(d);
    const running = this.jobs.get(jobId);
    if (running?.state === 'running')
      throw new FerryError(
        'SYNC_RUNNING',
        `sync job ${jobId} is running; read its progress at GET /v1/sync-jobs/${jobId}`,
      );
    const job: SyncProgress & { domain: string } = {
      domain: d,
      state: 'running',
      startedAt: Date.now(),
      endedAt: null,
      bytes: 0,
      percent: 0,
    };
    this.jobs.set(jobId, job);
    if (this.jobs.size > 200) this.jobs.delete(this.jobs.keys().next().value as string);
    let tracker: ChangeTracker | undefined;
    try {
      const changes = await this.changesSince(d, source, to);
      tracker = changes.tracker;
      const set = changes.set;
      if (set.kind === 'full') this.opts.log?.(`sync of ${d}: full pass (${set.reason})`);
      let reported = false;
      // Nothing changed since the last pass: no connection to the peer at all.
      const site =
        set.kind === 'paths' && set.paths.length === 0
          ? { files: 0, bytes: 0 }
          : await this.transport.push(
              source,
              to,
              (p) => {
                reported = true;
                job.bytes = p.bytes;
                job.percent = p.percent;
                onProgress?.(p);
              },
              set.kind === 'paths' ? set.paths : undefined,
            );
      // The domain's Maildirs, in the same pass, after the site's data (bytes counted on).
      const res = await this.pushMail(d, to, site, (p) => {
        reported = true;
        job.bytes = p.bytes;
        job.percent = p.percent;
        onProgress?.(p);
      });
      // Every pass ends with its figure, also one that copied too little to report along the way.
      if (!reported) onProgress?.({ bytes: res.bytes, percent: 100, files: res.files });
      // After the first pass of a session, the next one (the final pass, inside the cut-over's
      // write pause) finds its rsync started. Not after later passes: the final pass is the last,
      // and starting processes then would only compete with the rest of the cut-over.
      if (set.kind === 'full' && tracker && this.trackers.get(d)?.tracker === tracker)
        this.transport.prepare?.(source, to);
      Object.assign(job, {
        state: 'done',
        endedAt: Date.now(),
        bytes: res.bytes,
        percent: 100,
        files: res.files,
      });
      return {
        jobId,
        ...res,
        durationMs: job.endedAt! - job.startedAt,
        pass: set.kind === 'paths' ? 'tracked' : 'full',
      };
    } catch (err) {
      // What this pass was to copy is not known to be there: the next pass copies everything.
      tracker?.invalidate(`the last pass failed: ${(err as Error).message}`);
      Object.assign(job, { state: 'failed', endedAt: Date.now(), error: (err as Error).message });
      throw err;
    }
  }

  /**
   * The mail part of a pass: the domain's Maildirs into the receiver's mail session, when the
   * mail part lists some (none: `site` as it is, nothing started). Progress counts on from the
   * site's bytes; MAIL_SYNC when the receiver offers no mail session for them.
   */
  private async pushMail(
    d: string,
    to: SyncEndpoint,
    site: { files: number; bytes: number; totalBytes?: number },
    onProgress: (p: PushProgress) => void,
  ): Promise<{ files: number; bytes: number; totalBytes?: number }> {
    const dirs = this.mailCopy ? await this.mailCopy.mailDirs(d) : [];
    if (dirs.length === 0) return site;
    if (!to.mail)
      throw new FerryError(
        'MAIL_SYNC',
        `${d} has mail here but the receiver offers no mail session for it; start its agent with the mail configuration`,
      );
    const mail = await pushMaildirs(dirs, to.mail, (p) =>
      onProgress({ bytes: site.bytes + p.bytes, percent: p.percent }),
    );
    return {
      files: site.files + mail.files,
      bytes: site.bytes + mail.bytes,
      ...(site.totalBytes !== undefined ? { totalBytes: site.totalBytes } : {}),
    };
  }

  /**
   * What a pass of `d` into `to` must copy. The first pass into a receive session starts the
   * site's tracker (before copying: what changes during it is in the next set) and copies
   * everything; later passes into the same session copy the tracked set, or everything when it
   * is incomplete. A tracker of another session (an earlier migration) is stopped.
   */
  private async changesSince(
    d: string,
    source: string,
    to: SyncEndpoint,
  ): Promise<{ set: ChangeSet; tracker?: ChangeTracker }> {
    if (this.opts.tracking === false) return { set: { kind: 'full', reason: 'tracking is off' } };
    const key = sessionKey(to);
    const current = this.trackers.get(d);
    if (current?.key === key) return { set: await current.tracker.take(), tracker: current.tracker };
    await this.stopTracking(d);
    const tracker = new ChangeTracker({
      root: source,
      barrierDir: join(
        this.opts.dataDir,
        'tracking',
        createHash('sha256').update(d).digest('hex').slice(0, 12),
      ),
      ...(this.opts.tracking?.inotifywaitPath ? { inotifywaitPath: this.opts.tracking.inotifywaitPath } : {}),
    });
    try {
      await tracker.start();
    } catch (err) {
      await tracker.stop();
      return { set: { kind: 'full', reason: `no tracking: ${(err as Error).message}` } };
    }
    this.trackers.set(d, { key, tracker, source });
    return {
      set: {
        kind: 'full',
        reason: current
          ? 'first pass into a new receive session'
          : 'first pass (no change set: first copy, or the agent restarted)',
      },
      tracker,
    };
  }

  /** Stop `d`'s change tracker, if any (the migration ended or moved on). */
  private async stopTracking(d: string): Promise<void> {
    const t = this.trackers.get(d);
    if (!t) return;
    this.trackers.delete(d);
    this.transport.unprepare?.(t.source);
    await t.tracker.stop();
  }

  /** Whether `domain`'s passes are tracked now (tests and the API's info). */
  tracking(domain: string): { pid?: number; running: boolean } | undefined {
    const t = this.trackers.get(normalizeDomain(domain));
    return (
      t && { running: t.tracker.running, ...(t.tracker.pid !== undefined ? { pid: t.tracker.pid } : {}) }
    );
  }

  syncJob(jobId: string): (SyncProgress & { domain: string }) | undefined {
    const j = this.jobs.get(jobId);
    return j && { ...j };
  }

  // --- the server's own MariaDB (database/mover.ts) -----------------------------------------

  private dbMover(): DatabaseMover {
    if (this.databases) return this.databases;
    throw new FerryError(
      'DB_NOT_CONFIGURED',
      `this agent (${this.id}) has no --mariadb-defaults-file: it cannot move a site's databases; start it with the MariaDB option file of an administrator account`,
    );
  }

  private localAddresses(): string[] {
    const m = this.opts.mariadb?.address;
    return [...this.opts.sharedIps, ...(m ? [m] : [])];
  }

  /** The wp-config.php of the site's web server site: in a document root, or the folder above it (as WordPress looks). */
  private async findWpConfig(domain: string): Promise<string | undefined> {
    if (!this.stack) return undefined;
    const site = await this.stack.inspect(normalizeDomain(domain)).catch(() => null);
    for (const p of site?.paths ?? []) {
      for (const f of [join(p.path, 'wp-config.php'), join(dirname(p.path), 'wp-config.php')]) {
        if (
          await access(f).then(
            () => true,
            () => false,
          )
        )
          return f;
      }
    }
    return undefined;
  }

  /** Origin: the site's databases and their prerequisites (a site with none here needs no MariaDB option file). */
  async planDatabases(
    domain: string,
    declared?: DatabaseDeclaration[],
    opts?: DatabasePlanOptions,
  ): Promise<SiteDatabasesPlan> {
    const d = normalizeDomain(domain);
    if (this.databases) return this.databases.plan(d, declared, opts);
    const site = await findSiteDatabases(d, declared, {
      findWpConfig: (x) => this.findWpConfig(x),
      localAddresses: this.localAddresses(),
    });
    if (site.move.length > 0) this.dbMover();
    return { move: [], leftInPlace: site.leftInPlace };
  }

  /** Target: whether it can take the plan's databases; its MariaDB's address for the source. */
  checkDatabases(domain: string, plan: SiteDatabasesPlan): Promise<{ replicaAddress: string }> {
    return this.dbMover().check(normalizeDomain(domain), plan);
  }

  /** Origin: the migration's replication user (a secret: never log the answer). */
  openDatabaseSource(
    migrationId: string,
    domain: string,
    replicaAddress: string,
    declared?: DatabaseDeclaration[],
  ): Promise<DatabaseSource> {
    return this.dbMover().openSource(migrationId, normalizeDomain(domain), replicaAddress, declared);
  }

  /** Target: copy, recreate the accounts without writes, start the channel (a finished copy answers its result). */
  copyDatabases(
    migrationId: string,
    domain: string,
    source: DatabaseSource,
    plan: SiteDatabasesPlan,
    opts?: { timeoutMs?: number },
  ): Promise<{ bytes: number; ms: number }> {
    return this.dbMover().copy(migrationId, normalizeDomain(domain), source, plan, opts);
  }

  /** Target: the channel's lag. */
  databaseLag(migrationId: string): Promise<DatabaseLag> {
    return this.dbMover().lag(migrationId);
  }

  /** The site's users lose their writes here; the GTID position after that. */
  freezeDatabases(migrationId: string, domain: string): Promise<{ position: string }> {
    return this.dbMover().freeze(migrationId, normalizeDomain(domain));
  }

  /** The grants recorded at the freeze come back. */
  thawDatabases(migrationId: string, domain: string): Promise<void> {
    return this.dbMover().thaw(migrationId, normalizeDomain(domain));
  }

  /** Target: bounded catch-up to `position`, channel removed, the site's users write here. */
  takeOverDatabases(
    migrationId: string,
    domain: string,
    position: string,
    timeoutMs: number,
  ): Promise<{ waitedMs: number; writerPosition: string }> {
    return this.dbMover().takeOver(migrationId, normalizeDomain(domain), position, timeoutMs);
  }

  /** A rollback's reverse channel into this server, from `position`, with no copy. */
  startDatabaseChannel(
    migrationId: string,
    domain: string,
    source: DatabaseSource,
    position: string,
  ): Promise<void> {
    return this.dbMover().startReverse(migrationId, normalizeDomain(domain), source, position);
  }

  /** Target, rollback before the switch: channel, copied databases and accounts removed. */
  dropDatabaseCopy(migrationId: string, domain: string): Promise<void> {
    return this.dbMover().dropCopy(migrationId, normalizeDomain(domain));
  }

  /** Origin: the migration's replication user goes. */
  closeDatabaseSource(migrationId: string): Promise<void> {
    return this.dbMover().closeSource(migrationId);
  }

  // --- internals -------------------------------------------------------------------------

  private locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(key, fn);
  }

  private saveState(): Promise<void> {
    const write = async () => {
      const state: AgentState = {
        addresses: [...this.added],
        sites: this.listSites(),
        redirects: [...this.redirects].map(([id, r]) => ({
          id,
          spec: r.spec,
          upstream: r.upstream,
          held: r.held,
          ...(r.engine instanceof RelayProcess ? { pid: r.engine.pid, socket: r.engine.socketPath } : {}),
        })),
        ...(this.sites instanceof SiteProcess
          ? {
              siteApp: {
                ...(this.sites.pid !== undefined ? { pid: this.sites.pid } : {}),
                socket: this.sites.socketPath,
              },
            }
          : {}),
      };
      await this.state.save(state);
    };
    const p = this.stateChain.then(write, write);
    this.stateChain = p.catch(() => undefined);
    return p;
  }
}

/** The kernel engine forwards packets to another host: the kernel must be allowed to. */
async function checkForwarding(address: string): Promise<void> {
  const v6 = address.includes(':');
  const file = v6 ? '/proc/sys/net/ipv6/conf/all/forwarding' : '/proc/sys/net/ipv4/ip_forward';
  const value = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (value === '0') {
    throw new FerryError(
      'REDIRECT_PRECONDITION',
      `the kernel engine needs packet forwarding on this server: sysctl -w ${v6 ? 'net.ipv6.conf.all.forwarding' : 'net.ipv4.ip_forward'}=1 (or use the userspace engine)`,
    );
  }
}

/** Names one receive session (a new secret is a new session) without keeping its secret. */
function sessionKey(to: SyncEndpoint): string {
  const h = createHash('sha256');
  for (const part of [
    to.transport ?? 'rsync',
    to.address,
    String(to.port),
    to.module,
    to.secret,
  ] as BinaryLike[])
    h.update(part).update('\0');
  return h.digest('hex');
}

function checkRedirectId(id: string): void {
  if (!REDIRECT_ID_RE.test(id))
    throw new FerryError(
      'REDIRECT_ID_INVALID',
      `redirect id "${id}" must be 1-120 letters, digits, '.', '_' or '-'`,
    );
}

/** The receive session of a site's mail (a session name no domain has). */
function mailSession(d: string): string {
  return `${d}_mail`;
}
