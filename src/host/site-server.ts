/**
 * The built-in site server: name-based virtual hosts on one or more addresses at one port. Each
 * site is a small stateful app (an order log) whose data lives in `dataDir/<domain>/`, or, when
 * added with an `upstream`, a gate in front of the site's own backend (any application); each
 * has a mode switchable at runtime (serve, readonly, hold, proxy) that the migration drives.
 *
 * Request path: Host → site (421 when unknown) → counted in the site's stats → mode:
 * - `hold` queues it (bounded; 503 when full or held longer than `maxHoldMs`); a later
 *   `setMode` releases the queue, in arrival order, into the new mode;
 * - otherwise it is in flight until its response closes, and is served (by the app, or by the
 *   gated site's backend), refused (readonly write, 503) or proxied.
 *
 * Trusted front headers (contract): a request whose TCP peer is a loopback address may carry
 * `X-Ferry-Client` (the client's IP address, as the front saw it) and `X-Ferry-Scheme`
 * (`http` or `https`: how it reached the front). They are believed from loopback peers only,
 * otherwise ignored, and never forwarded. The client address is what `bySource` counts and what
 * `X-Forwarded-For` gets; the scheme picks a gated site's backend (`upstream.http` or
 * `upstream.https`) and, in `proxy` mode, plain HTTP or TLS to the target.
 */
import { createServer, type Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../common/errors.js';
import { OrderLog, type Order } from './orders.js';
import {
  FRONT_HEADERS,
  createProxyAgent,
  isLoopback,
  normalizeAddress,
  proxyRequest,
  type ProxyTarget,
  type ProxyTls,
} from './proxy.js';

/** How a site answers: normally, GETs only, queueing new requests, or through another server. */
export type SiteMode = 'serve' | 'readonly' | 'hold' | { proxy: ProxyTarget };

/**
 * How a gated site reaches its own backend, and the target's TLS port. Requests that came in
 * plain go to `http`, those that came over TLS to `https` (TLS, SNI = the Host name, certificate
 * not verified: it is the site's own copy on loopback). In `proxy` mode, requests that came over
 * TLS go over TLS to the target at `tlsPort` with SNI = the Host name, its certificate verified
 * against Node's CA list, plus `ca` when given.
 */
export interface SiteUpstream {
  /** Backend for requests that came in plain. */
  http?: { address: string; port: number };
  /** Backend for requests that came over TLS (spoken to over TLS, without verification). */
  https?: { address: string; port: number };
  /** The target's TLS port in `proxy` mode. Default 443. */
  tlsPort?: number;
  /** PEM certificate(s) trusted, beside Node's CA list, for the target's certificate in `proxy` mode. */
  ca?: string;
  /**
   * The site's other names (server_name / ServerAlias): exact names, `*.suffix` (any name ending
   * in `.suffix`) or nginx's `.suffix` (the suffix itself and any name under it).
   */
  aliases?: string[];
}

/** Counters of one site, for the orchestrator's quiet windows. Sources are client addresses. */
export interface SiteStats {
  /** Requests that arrived for the site (held ones included). */
  requests: number;
  /** Requests with a write method (anything but GET, HEAD, OPTIONS) that arrived, whatever their outcome. */
  writes: number;
  /** Requests being served or proxied now (held ones not included). */
  inFlight: number;
  /** Requests waiting in the hold queue now. */
  held: number;
  lastRequestAt: number | null;
  /** Per client address (a trusted front's `X-Ferry-Client`, else the TCP peer; IPv4-mapped IPv6 shown as IPv4); the 10 000 most recently seen. */
  bySource: Record<string, { requests: number; lastAt: number }>;
}

export interface SiteServerOptions {
  /** Server name, sent in `X-Served-By` and written into each order. */
  name: string;
  /** Addresses to listen on (IPv4 or IPv6 literals). */
  addresses: string[];
  /** Port for every address; 0 picks an ephemeral port on the first address, then uses it for all. */
  port: number;
  /** Folder holding one data folder per site. */
  dataDir: string;
  /** Most requests one site may hold at once; more get 503. Default 1000. */
  holdQueueLimit?: number;
  /** Longest a request may stay held before it gets 503. Default 30 000 ms. */
  maxHoldMs?: number;
  /** Largest request body a site accepts (413 above). Default 64 KiB. */
  maxBodyBytes?: number;
  /** Idle keep-alive connections are closed after this; keep it above every client's idle timeout. Default 65 000 ms. */
  keepAliveTimeoutMs?: number;
  /** Idle time on a proxied request's upstream connection before it fails (504). Default 30 000 ms. */
  proxyTimeoutMs?: number;
}

/** A stored order as `readOrders` returns it. */
export type { Order };

interface Held {
  req: IncomingMessage;
  res: ServerResponse;
  timer: NodeJS.Timeout;
}

/** What a request brought from its front: the client's address and the scheme it came in by. */
interface Front {
  client: string;
  scheme: 'http' | 'https';
}

interface Site {
  domain: string;
  dir: string;
  mode: SiteMode;
  /** The built-in app's order log; null for a gated site. */
  log: OrderLog | null;
  gate: Gate | null;
  requests: number;
  writes: number;
  inFlight: number;
  lastRequestAt: number | null;
  bySource: Map<string, { requests: number; lastAt: number }>;
  held: Held[];
  idleWaiters: Set<() => void>;
}

/** A gated site's upstream, with what its connections need made once. */
interface Gate {
  upstream: SiteUpstream;
  /** Trust anchors for the target's certificate when `ca` is given. */
  targetContext?: SecureContext;
  /** Tells this gate's agents apart from those of an earlier upstream of the same site. */
  generation: number;
}

const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
const DOMAIN_RE =
  /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;
/** Sources remembered per site; the least recently seen is forgotten beyond this. */
const MAX_SOURCES = 10_000;
/** Grace for in-flight requests when an address or the server closes, before connections are cut. */
const CLOSE_GRACE_MS = 5000;

/** Lower-case, without a trailing dot: the form sites are keyed and stored by. */
export function normalizeDomain(domain: string): string {
  return domain.trim().toLowerCase().replace(/\.$/, '');
}

/** A name-based virtual-host HTTP server for many small stateful sites. */
export class SiteServer {
  readonly name: string;
  private readonly dataDir: string;
  private readonly holdQueueLimit: number;
  private readonly maxHoldMs: number;
  private readonly maxBodyBytes: number;
  private readonly keepAliveTimeoutMs: number;
  private readonly proxyTimeoutMs: number;
  private readonly addressList: string[];
  private readonly servers = new Map<string, Server>();
  private readonly siteMap = new Map<string, Site>();
  /** Gated sites' other names (`*.suffix` for wildcards) → their domain. */
  private aliasMap = new Map<string, string>();
  private readonly proxyAgents = new Map<string, Agent>();
  private readonly fronts = new WeakMap<IncomingMessage, Front>();
  private gateGenerations = 0;
  private readonly sockets = new Set<Socket>();
  private readonly activeResponses = new WeakMap<Server, Set<ServerResponse>>();
  private readonly closing = new WeakSet<Server>();
  private connectionsTotal = 0;
  private listenPort: number;
  private started = false;

  constructor(opts: SiteServerOptions) {
    const problems: string[] = [];
    if (!opts.name || typeof opts.name !== 'string')
      problems.push('name must be a non-empty string (e.g. "origin")');
    if (!Array.isArray(opts.addresses) || opts.addresses.length === 0) {
      problems.push('addresses must list at least one IP address to listen on (e.g. ["127.0.0.1"])');
    } else {
      for (const a of opts.addresses)
        if (!isIP(a)) problems.push(`addresses: "${a}" is not an IP address literal`);
    }
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
      problems.push(`port must be an integer 0..65535 (0 = ephemeral), got ${opts.port}`);
    }
    if (!opts.dataDir) problems.push("dataDir must name a folder for the sites' data");
    const positive = (key: keyof SiteServerOptions, value: unknown) => {
      if (value !== undefined && !(Number.isInteger(value) && (value as number) > 0)) {
        problems.push(`${key} must be a positive integer or left out, got ${String(value)}`);
      }
    };
    positive('holdQueueLimit', opts.holdQueueLimit);
    positive('maxHoldMs', opts.maxHoldMs);
    positive('maxBodyBytes', opts.maxBodyBytes);
    positive('keepAliveTimeoutMs', opts.keepAliveTimeoutMs);
    positive('proxyTimeoutMs', opts.proxyTimeoutMs);
    if (problems.length)
      throw new FerryError('SITE_SERVER_OPTIONS', `bad SiteServer options: ${problems.join('; ')}`);
    this.name = opts.name;
    this.addressList = [...new Set(opts.addresses)];
    this.listenPort = opts.port;
    this.dataDir = opts.dataDir;
    this.holdQueueLimit = opts.holdQueueLimit ?? 1000;
    this.maxHoldMs = opts.maxHoldMs ?? 30_000;
    this.maxBodyBytes = opts.maxBodyBytes ?? 64 * 1024;
    this.keepAliveTimeoutMs = opts.keepAliveTimeoutMs ?? 65_000;
    this.proxyTimeoutMs = opts.proxyTimeoutMs ?? 30_000;
  }

  /** The port every address listens on (the ephemeral one once started with port 0). */
  get port(): number {
    return this.listenPort;
  }

  /** Addresses listened on (or to be, before start). */
  addresses(): string[] {
    return [...this.addressList];
  }

  /** Connections accepted since start, and open now, over all addresses. */
  connectionStats(): { total: number; open: number } {
    return { total: this.connectionsTotal, open: this.sockets.size };
  }

  /** Create the data folder and listen on every address. */
  async start(): Promise<void> {
    if (this.started) return;
    await mkdir(this.dataDir, { recursive: true });
    this.started = true;
    try {
      for (const address of this.addressList) await this.listen(address);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Stop listening, answer held requests 503, give in-flight ones a short grace, then cut connections. */
  async stop(): Promise<void> {
    this.started = false;
    for (const site of this.siteMap.values()) this.flushHeld(site, 503, 'server shutting down');
    await Promise.all([...this.servers.keys()].map((a) => this.closeServer(a)));
    for (const agent of this.proxyAgents.values()) agent.destroy();
    this.proxyAgents.clear();
  }

  /** Listen on one more address at the same port (no-op when already listening there). */
  async addAddress(address: string): Promise<void> {
    if (!isIP(address))
      throw new FerryError('SITE_ADDRESS_INVALID', `"${address}" is not an IP address literal`);
    if (!this.addressList.includes(address)) this.addressList.push(address);
    if (this.started && !this.servers.has(address)) await this.listen(address);
  }

  /** Stop listening on an address; requests in flight there get a short grace to finish. */
  async removeAddress(address: string): Promise<void> {
    const i = this.addressList.indexOf(address);
    if (i >= 0) this.addressList.splice(i, 1);
    await this.closeServer(address);
  }

  /**
   * Add a site or, when it exists, set its mode (and its upstream, when given). Without
   * `upstream` it is the built-in app (its data folder is created); with one it is a gate in
   * front of that backend (nothing is created on disk).
   */
  async addSite(
    domain: string,
    mode: SiteMode = 'serve',
    opts: { upstream?: SiteUpstream } = {},
  ): Promise<void> {
    const d = checkDomain(domain);
    checkMode(mode);
    const gate = opts.upstream === undefined ? null : this.makeGate(opts.upstream);
    this.checkNames(d, gate?.upstream.aliases ?? []);
    const update = (site: Site) => {
      if (gate) this.setGate(site, gate);
      this.setMode(d, mode);
    };
    const existing = this.siteMap.get(d);
    if (existing) return update(existing);
    const dir = this.siteDataDir(d);
    let log: OrderLog | null = null;
    if (!gate) {
      await mkdir(dir, { recursive: true });
      log = new OrderLog(dir);
      await log.reload();
    }
    const raced = this.siteMap.get(d);
    if (raced) return update(raced);
    this.siteMap.set(d, {
      domain: d,
      dir,
      mode,
      log,
      gate,
      requests: 0,
      writes: 0,
      inFlight: 0,
      lastRequestAt: null,
      bySource: new Map(),
      held: [],
      idleWaiters: new Set(),
    });
    if (gate) this.indexAliases();
  }

  /**
   * Stop serving a site: new requests get 421, held ones too, in-flight ones finish. With
   * `deleteData` the data folder is removed once pending writes are on disk.
   */
  async removeSite(domain: string, opts: { deleteData?: boolean } = {}): Promise<void> {
    const d = normalizeDomain(domain);
    const site = this.siteMap.get(d);
    if (site) {
      this.siteMap.delete(d);
      this.indexAliases();
      this.flushHeld(site, 421, `site ${d} is no longer served by ${this.name}`);
      await site.log?.settled();
      this.forgetAgents(site);
    }
    if (opts.deleteData) await rm(this.siteDataDir(d), { recursive: true, force: true });
  }

  hasSite(domain: string): boolean {
    return this.siteMap.has(normalizeDomain(domain));
  }

  sites(): string[] {
    return [...this.siteMap.keys()];
  }

  /** Switch a site's mode; leaving `hold` releases the held requests, in arrival order, into the new mode. */
  setMode(domain: string, mode: SiteMode): void {
    checkMode(mode);
    const site = this.site(domain);
    site.mode = typeof mode === 'string' ? mode : { proxy: { ...mode.proxy } };
    if (mode === 'hold') return;
    const held = site.held.splice(0);
    for (const h of held) {
      clearTimeout(h.timer);
      if (!h.res.destroyed) this.dispatch(site, h.req, h.res);
    }
  }

  /** A gated site's upstream; undefined for a built-in app site. */
  upstream(domain: string): SiteUpstream | undefined {
    const g = this.site(domain).gate;
    return g ? copyUpstream(g.upstream) : undefined;
  }

  mode(domain: string): SiteMode {
    const m = this.site(domain).mode;
    return typeof m === 'string' ? m : { proxy: { ...m.proxy } };
  }

  siteStats(domain: string): SiteStats {
    const s = this.site(domain);
    return {
      requests: s.requests,
      writes: s.writes,
      inFlight: s.inFlight,
      held: s.held.length,
      lastRequestAt: s.lastRequestAt,
      bySource: Object.fromEntries([...s.bySource].map(([k, v]) => [k, { ...v }])),
    };
  }

  /** Resolves true once no request for the site is in flight (held ones do not count), false after `timeoutMs`. */
  waitIdle(domain: string, timeoutMs: number): Promise<boolean> {
    const site = this.siteMap.get(normalizeDomain(domain));
    if (!site || site.inFlight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (idle: boolean) => {
        clearTimeout(timer);
        site.idleWaiters.delete(onIdle);
        resolve(idle);
      };
      const onIdle = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      site.idleWaiters.add(onIdle);
    });
  }

  /** The site's data folder (whether or not the site is served here). */
  siteDataDir(domain: string): string {
    return join(this.dataDir, checkDomain(domain));
  }

  /** Re-read the site's data from disk (after a sync wrote into its folder); nothing to do for a gated site. */
  async reloadSite(domain: string): Promise<void> {
    await this.site(domain).log?.reload();
  }

  /** The orders on disk in the site's data folder (also after the site was removed, unless its data was deleted). */
  async readOrders(domain: string): Promise<Order[]> {
    const site = this.siteMap.get(normalizeDomain(domain));
    return (site?.log ?? new OrderLog(this.siteDataDir(domain))).read();
  }

  private site(domain: string): Site {
    const d = normalizeDomain(domain);
    const site = this.siteMap.get(d);
    if (!site)
      throw new FerryError('SITE_NOT_FOUND', `${this.name} does not serve ${d}; add it with addSite first`);
    return site;
  }

  private async listen(address: string): Promise<void> {
    const server = createServer({
      keepAliveTimeout: this.keepAliveTimeoutMs,
      headersTimeout: 20_000,
      // Covers receiving the whole request, which for a held one includes its time in the queue.
      requestTimeout: Math.max(120_000, this.maxHoldMs + 30_000),
    });
    server.maxRequestsPerSocket = 0;
    const active = new Set<ServerResponse>();
    this.activeResponses.set(server, active);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      // A closing server finishes what it has, but tells clients not to reuse the connection.
      if (this.closing.has(server)) res.shouldKeepAlive = false;
      active.add(res);
      res.once('close', () => active.delete(res));
      this.onRequest(req, res);
    });
    server.on('connection', (socket: Socket) => {
      this.connectionsTotal += 1;
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => {
        reject(
          new FerryError(
            'SITE_LISTEN',
            `${this.name} cannot listen on ${address}:${this.listenPort}: ${err.message}`,
            { cause: err },
          ),
        );
      };
      server.once('error', onError);
      server.listen({ host: address, port: this.listenPort }, () => {
        server.off('error', onError);
        resolve();
      });
    });
    if (this.listenPort === 0) {
      const a = server.address();
      if (a && typeof a === 'object') this.listenPort = a.port;
    }
    this.servers.set(address, server);
  }

  private async closeServer(address: string): Promise<void> {
    const server = this.servers.get(address);
    if (!server) return;
    this.servers.delete(address);
    this.closing.add(server);
    for (const res of this.activeResponses.get(server) ?? [])
      if (!res.headersSent) res.shouldKeepAlive = false;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    // Responses already under way keep their connection open afterwards; close those as they go idle.
    const sweep = setInterval(() => server.closeIdleConnections(), 50);
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), CLOSE_GRACE_MS);
    });
    if ((await Promise.race([closed, grace])) === 'timeout') {
      server.closeAllConnections();
      await closed;
    }
    clearTimeout(timer);
    clearInterval(sweep);
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const domain = hostOf(req.headers.host);
    const site = domain ? this.siteFor(domain) : undefined;
    if (!site) {
      this.reply(res, 421, `${this.name} does not serve ${domain || 'this host'}\n`);
      return;
    }
    const now = Date.now();
    site.requests += 1;
    if (!READ_METHODS.has(req.method ?? 'GET')) site.writes += 1;
    site.lastRequestAt = now;
    const front = frontOf(req);
    this.fronts.set(req, front);
    const source = front.client;
    // Re-inserted on each request, so the map runs from least to most recently seen source.
    const prior = site.bySource.get(source);
    site.bySource.delete(source);
    site.bySource.set(source, { requests: (prior?.requests ?? 0) + 1, lastAt: now });
    if (site.bySource.size > MAX_SOURCES) site.bySource.delete(site.bySource.keys().next().value as string);
    this.dispatch(site, req, res);
  }

  /** Apply the site's current mode to a request (on arrival, or on release from hold). */
  private dispatch(site: Site, req: IncomingMessage, res: ServerResponse): void {
    if (this.siteMap.get(site.domain) !== site) {
      this.reply(res, 421, `site ${site.domain} is no longer served by ${this.name}\n`);
      return;
    }
    const mode = site.mode;
    if (mode === 'hold') {
      this.hold(site, req, res);
      return;
    }
    site.inFlight += 1;
    res.once('close', () => {
      site.inFlight -= 1;
      if (site.inFlight === 0) for (const w of [...site.idleWaiters]) w();
    });
    const front = this.fronts.get(req) ?? frontOf(req);
    if (typeof mode === 'object') {
      if (site.gate) this.toTarget(site, site.gate, mode.proxy, front, req, res);
      else this.forward(req, res, mode.proxy, this.proxyAgent(mode.proxy), front);
      return;
    }
    if (mode === 'readonly' && !READ_METHODS.has(req.method ?? 'GET')) {
      this.reply(res, 503, `${site.domain} is read-only on ${this.name}\n`, { 'retry-after': '1' });
      return;
    }
    if (site.gate) {
      this.toBackend(site, site.gate, front, req, res);
      return;
    }
    // Every site without a gate has its order log (addSite makes one).
    void this.serveApp(site, site.log!, req, res).catch((err: unknown) => {
      this.reply(res, 500, `internal error: ${(err as Error).message}\n`);
    });
  }

  private hold(site: Site, req: IncomingMessage, res: ServerResponse): void {
    if (site.held.length >= this.holdQueueLimit) {
      this.reply(res, 503, `${site.domain}: hold queue full on ${this.name}\n`, { 'retry-after': '1' });
      return;
    }
    const entry: Held = {
      req,
      res,
      timer: setTimeout(() => {
        remove();
        this.reply(res, 503, `${site.domain}: held longer than ${this.maxHoldMs} ms on ${this.name}\n`, {
          'retry-after': '1',
        });
      }, this.maxHoldMs),
    };
    const remove = () => {
      clearTimeout(entry.timer);
      const i = site.held.indexOf(entry);
      if (i >= 0) site.held.splice(i, 1);
    };
    res.once('close', remove);
    site.held.push(entry);
  }

  private flushHeld(site: Site, status: number, message: string): void {
    for (const h of site.held.splice(0)) {
      clearTimeout(h.timer);
      this.reply(h.res, status, message + '\n', status === 503 ? { 'retry-after': '1' } : {});
    }
  }

  /** A gated site in `serve`/`readonly`: to its backend for the scheme the request came in by. */
  private toBackend(site: Site, gate: Gate, front: Front, req: IncomingMessage, res: ServerResponse): void {
    const backend = front.scheme === 'https' ? gate.upstream.https : gate.upstream.http;
    if (!backend) {
      this.reply(res, 502, `${site.domain} has no backend for ${front.scheme} requests on ${this.name}\n`);
      return;
    }
    const tls: ProxyTls | undefined =
      front.scheme === 'https' ? { servername: hostOf(req.headers.host), verify: false } : undefined;
    this.forward(req, res, backend, this.gateAgent(site, gate, 'backend', backend, tls), front, tls);
  }

  /** A gated site in `proxy`: plain HTTP to the target's port, or TLS to its `tlsPort` for requests that came over TLS. */
  private toTarget(
    site: Site,
    gate: Gate,
    target: ProxyTarget,
    front: Front,
    req: IncomingMessage,
    res: ServerResponse,
  ): void {
    if (front.scheme === 'http') {
      this.forward(req, res, target, this.gateAgent(site, gate, 'target', target), front);
      return;
    }
    const to: ProxyTarget = { ...target, port: gate.upstream.tlsPort ?? 443 };
    const tls: ProxyTls = {
      servername: hostOf(req.headers.host),
      verify: true,
      ...(gate.targetContext ? { secureContext: gate.targetContext } : {}),
    };
    this.forward(req, res, to, this.gateAgent(site, gate, 'target', to, tls), front, tls);
  }

  private forward(
    req: IncomingMessage,
    res: ServerResponse,
    target: ProxyTarget,
    agent: Agent,
    front: Front,
    tls?: ProxyTls,
  ): void {
    proxyRequest(req, res, target, {
      agent,
      ...(tls ? { tls } : {}),
      client: front.client,
      timeoutMs: this.proxyTimeoutMs,
      maxReplayBytes: this.maxBodyBytes,
      fail: (status, message) => this.reply(res, status, message + '\n', { 'retry-after': '1' }),
    });
  }

  /** Validate an upstream and prepare what its connections need; SITE_UPSTREAM_INVALID when it is wrong. */
  private makeGate(upstream: SiteUpstream): Gate {
    const u = checkUpstream(upstream);
    let targetContext: SecureContext | undefined;
    if (u.ca !== undefined) {
      try {
        targetContext = createSecureContext({ ca: [...rootCertificates, ...extraCaCertificates(), u.ca] });
      } catch (err) {
        throw new FerryError(
          'SITE_UPSTREAM_INVALID',
          `upstream.ca is not a usable PEM certificate: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
    return { upstream: u, ...(targetContext ? { targetContext } : {}), generation: ++this.gateGenerations };
  }

  private setGate(site: Site, gate: Gate): void {
    if (site.gate && JSON.stringify(site.gate.upstream) === JSON.stringify(gate.upstream)) return;
    this.forgetAgents(site);
    site.gate = gate;
    this.indexAliases();
  }

  /** The site a Host name is for: a domain, else a gated site's alias, else its longest matching wildcard. */
  private siteFor(host: string): Site | undefined {
    const byName = this.siteMap.get(host) ?? this.siteMap.get(this.aliasMap.get(host) ?? '');
    if (byName) return byName;
    for (let i = host.indexOf('.'); i >= 0; i = host.indexOf('.', i + 1)) {
      const d = this.aliasMap.get('*' + host.slice(i));
      if (d) return this.siteMap.get(d);
    }
    return undefined;
  }

  private indexAliases(): void {
    const map = new Map<string, string>();
    for (const site of this.siteMap.values())
      for (const a of site.gate?.upstream.aliases ?? [])
        for (const n of aliasKeys(a)) map.set(n, site.domain);
    this.aliasMap = map;
  }

  /** SITE_NAME_TAKEN when the domain or one of the aliases is already another site's name. */
  private checkNames(domain: string, aliases: string[]): void {
    const owner = (name: string) => {
      if (this.siteMap.has(name)) return name;
      return this.aliasMap.get(name);
    };
    for (const name of [domain, ...aliases.flatMap(aliasKeys)]) {
      const o = owner(name);
      if (o !== undefined && o !== domain)
        throw new FerryError('SITE_NAME_TAKEN', `${name} is already a name of ${o} on ${this.name}`);
    }
  }

  /** Connections of a gated site: one agent per site, upstream generation, role and destination. */
  private gateAgent(site: Site, gate: Gate, role: string, to: ProxyTarget, tls?: ProxyTls): Agent {
    const key = `${site.domain}|${gate.generation}|${role}|${tls ? 'tls' : 'plain'}|${to.address}|${to.port}|${to.localAddress ?? ''}`;
    let agent = this.proxyAgents.get(key);
    if (!agent) {
      agent = createProxyAgent(2000, tls !== undefined);
      this.proxyAgents.set(key, agent);
    }
    return agent;
  }

  /** Drop a site's agents from the pool; requests under way finish, idle connections close by themselves. */
  private forgetAgents(site: Site): void {
    for (const key of [...this.proxyAgents.keys()])
      if (key.startsWith(`${site.domain}|`)) this.proxyAgents.delete(key);
  }

  private proxyAgent(target: ProxyTarget): Agent {
    const key = `${target.address}|${target.port}|${target.localAddress ?? ''}`;
    let agent = this.proxyAgents.get(key);
    if (!agent) {
      agent = createProxyAgent();
      this.proxyAgents.set(key, agent);
    }
    return agent;
  }

  /** The site's own app: a page, a health check and the order log. */
  private async serveApp(
    site: Site,
    log: OrderLog,
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<void> {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0];
    const read = method === 'GET' || method === 'HEAD';
    if (path === '/') {
      if (!read) return this.notAllowed(res, 'GET, HEAD');
      const html = `<!doctype html><html><head><title>${site.domain}</title></head><body><h1>${site.domain}</h1><p>Served by ${this.name}.</p></body></html>\n`;
      return this.reply(res, 200, html, { 'content-type': 'text/html; charset=utf-8' }, method === 'HEAD');
    }
    if (path === '/healthz') {
      if (!read) return this.notAllowed(res, 'GET, HEAD');
      return this.reply(res, 200, 'ok\n', {}, method === 'HEAD');
    }
    if (path === '/orders') {
      if (read) {
        const orders = await log.read();
        return this.replyJson(res, 200, orders, method === 'HEAD');
      }
      if (method !== 'POST') return this.notAllowed(res, 'GET, HEAD, POST');
      const body = await readBody(req, this.maxBodyBytes);
      if (body === 'too-large') {
        return this.reply(res, 413, `request body larger than ${this.maxBodyBytes} bytes\n`, {
          connection: 'close',
        });
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch {
        return this.replyJson(res, 400, { error: 'body must be JSON: {"key": "<unique order key>", ...}' });
      }
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
        return this.replyJson(res, 400, { error: 'body must be a JSON object with a string "key"' });
      }
      const { key, ...data } = parsed as Record<string, unknown>;
      if (typeof key !== 'string' || key.length === 0 || key.length > 256) {
        return this.replyJson(res, 400, {
          error: '"key" must be a non-empty string of at most 256 characters',
        });
      }
      const order = await log.append(key, this.name, data);
      return this.replyJson(res, 201, { id: order.id, key: order.key, at: order.at, server: order.server });
    }
    return this.reply(res, 404, `no ${path} on ${site.domain}\n`);
  }

  private notAllowed(res: ServerResponse, allow: string): void {
    this.reply(res, 405, `method not allowed; use ${allow}\n`, { allow });
  }

  private replyJson(res: ServerResponse, status: number, value: unknown, headOnly = false): void {
    this.reply(res, status, JSON.stringify(value) + '\n', { 'content-type': 'application/json' }, headOnly);
  }

  /** Answer locally, with `X-Served-By`; quietly does nothing when the client is gone or headers went out. */
  private reply(
    res: ServerResponse,
    status: number,
    body: string,
    headers: Record<string, string> = {},
    headOnly = false,
  ): void {
    if (res.headersSent || res.destroyed) return;
    const buf = Buffer.from(body);
    res.writeHead(status, {
      'content-type': 'text/plain; charset=utf-8',
      ...headers,
      'content-length': String(buf.length),
      'x-served-by': this.name,
    });
    res.end(headOnly ? undefined : buf);
  }
}

/** The client and scheme of a request: from a loopback front's `X-Ferry-*` headers, else its TCP peer, plain. */
function frontOf(req: IncomingMessage): Front {
  const peer = normalizeAddress(req.socket.remoteAddress ?? 'unknown');
  if (!isLoopback(peer)) return { client: peer, scheme: 'http' };
  const [clientHeader, schemeHeader] = FRONT_HEADERS.map((h) => req.headers[h]);
  const claimed = typeof clientHeader === 'string' ? normalizeAddress(clientHeader.trim()) : '';
  const scheme = typeof schemeHeader === 'string' ? schemeHeader.trim().toLowerCase() : '';
  return { client: isIP(claimed) ? claimed : peer, scheme: scheme === 'https' ? 'https' : 'http' };
}

/** The Host header's name: lower-case, no port, no trailing dot; '' when absent. */
function hostOf(host: string | undefined): string {
  if (!host) return '';
  let h = host.trim();
  if (h.startsWith('[')) h = h.slice(0, h.indexOf(']') + 1);
  else if (h.includes(':')) h = h.slice(0, h.lastIndexOf(':'));
  return normalizeDomain(h);
}

/** The domain in the form sites are keyed by; SITE_DOMAIN_INVALID when it is not a domain name. */
export function checkDomain(domain: string): string {
  const d = normalizeDomain(String(domain));
  if (!DOMAIN_RE.test(d))
    throw new FerryError('SITE_DOMAIN_INVALID', `"${domain}" is not a valid domain name (e.g. shop.example)`);
  return d;
}

/** The keys an alias is indexed by: `.suffix` stands for `suffix` and `*.suffix`. */
function aliasKeys(alias: string): string[] {
  return alias.startsWith('.') ? [alias.slice(1), '*' + alias] : [alias];
}

function copyUpstream(u: SiteUpstream): SiteUpstream {
  return {
    ...(u.http ? { http: { address: u.http.address, port: u.http.port } } : {}),
    ...(u.https ? { https: { address: u.https.address, port: u.https.port } } : {}),
    ...(u.tlsPort !== undefined ? { tlsPort: u.tlsPort } : {}),
    ...(u.ca !== undefined ? { ca: u.ca } : {}),
    ...(u.aliases !== undefined ? { aliases: [...u.aliases] } : {}),
  };
}

/** The upstream, checked and copied (only its own fields); SITE_UPSTREAM_INVALID naming each problem. */
function checkUpstream(u: SiteUpstream): SiteUpstream {
  const problems: string[] = [];
  if (!u || typeof u !== 'object' || Array.isArray(u)) {
    problems.push('upstream must be an object { http?, https?, tlsPort?, ca? }');
  } else {
    const port = (v: unknown) => Number.isInteger(v) && (v as number) > 0 && (v as number) < 65536;
    for (const key of ['http', 'https'] as const) {
      const b = u[key] as unknown;
      if (b === undefined) continue;
      const o = b as { address?: unknown; port?: unknown };
      if (!o || typeof o !== 'object' || typeof o.address !== 'string' || !isIP(o.address) || !port(o.port))
        problems.push(
          `upstream.${key} must be { address: <IP>, port: <1..65535> }, got ${JSON.stringify(b)}`,
        );
    }
    if (u.http === undefined && u.https === undefined)
      problems.push('upstream needs a backend: http, https or both');
    if (u.tlsPort !== undefined && !port(u.tlsPort))
      problems.push(`upstream.tlsPort must be an integer 1..65535, got ${JSON.stringify(u.tlsPort)}`);
    if (u.ca !== undefined) {
      const blocks = typeof u.ca === 'string' ? (u.ca.match(PEM_CERT_RE) ?? []) : [];
      if (blocks.length === 0) problems.push('upstream.ca must be PEM text (-----BEGIN CERTIFICATE-----)');
      for (const b of blocks) {
        try {
          new X509Certificate(b);
        } catch (err) {
          problems.push(`upstream.ca holds a certificate that cannot be read: ${(err as Error).message}`);
        }
      }
    }
    if (u.aliases !== undefined) {
      if (!Array.isArray(u.aliases)) problems.push('upstream.aliases must be a list of names');
      else
        for (const a of u.aliases) {
          const bare = typeof a === 'string' ? normalizeDomain(a).replace(/^\*?\./, '') : '';
          if (!DOMAIN_RE.test(bare))
            problems.push(`upstream.aliases: ${JSON.stringify(a)} is not a name, *.name or .name`);
        }
    }
  }
  if (problems.length)
    throw new FerryError('SITE_UPSTREAM_INVALID', `bad site upstream: ${problems.join('; ')}`);
  const copy = copyUpstream(u);
  if (copy.aliases) copy.aliases = [...new Set(copy.aliases.map(normalizeDomain))];
  return copy;
}

function checkMode(mode: SiteMode): void {
  if (mode === 'serve' || mode === 'readonly' || mode === 'hold') return;
  const p = typeof mode === 'object' && mode !== null ? mode.proxy : undefined;
  if (
    p &&
    isIP(p.address) &&
    Number.isInteger(p.port) &&
    p.port > 0 &&
    p.port < 65536 &&
    (p.localAddress === undefined || isIP(p.localAddress))
  ) {
    return;
  }
  throw new FerryError(
    'SITE_MODE_INVALID',
    `mode must be 'serve', 'readonly', 'hold' or { proxy: { address: <IP>, port: <1..65535> } }, got ${JSON.stringify(mode)}`,
  );
}

/** Read a request body up to `max` bytes; 'too-large' (and stop reading) beyond. */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | 'too-large'> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > max) return Promise.resolve('too-large');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > max) {
        cleanup();
        req.pause();
        resolve('too-large');
        return;
      }
      chunks.push(c);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

/**
 * The CAs of `NODE_EXTRA_CA_CERTS`, which Node 20 adds to its default trust only: a context made
 * with a `ca` of its own would lose them (a private CA the operator trusts for the whole agent).
 */
function extraCaCertificates(): string[] {
  const file = process.env.NODE_EXTRA_CA_CERTS;
  if (!file) return [];
  try {
    return (
      readFileSync(file, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
    );
  } catch {
    return [];
  }
}
