/**
 * The built-in site server: name-based virtual hosts on one or more addresses at one port. Each
 * site is a small stateful app (an order log) whose data lives in `dataDir/<domain>/`, and each
 * has a mode switchable at runtime (serve, readonly, hold, proxy) that the migration drives.
 *
 * Request path: Host → site (421 when unknown) → counted in the site's stats → mode:
 * - `hold` queues it (bounded; 503 when full or held longer than `maxHoldMs`); a later
 *   `setMode` releases the queue, in arrival order, into the new mode;
 * - otherwise it is in flight until its response closes, and is served, refused (readonly
 *   write, 503) or proxied.
 */
import { createServer, type Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../common/errors.js';
import { OrderLog, type Order } from './orders.js';
import { createProxyAgent, normalizeAddress, proxyRequest, type ProxyTarget } from './proxy.js';

/** How a site answers: normally, GETs only, queueing new requests, or through another server. */
export type SiteMode = 'serve' | 'readonly' | 'hold' | { proxy: ProxyTarget };

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
  /** Per client address (IPv4-mapped IPv6 shown as IPv4); the 10 000 most recently seen. */
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

interface Site {
  domain: string;
  dir: string;
  mode: SiteMode;
  log: OrderLog;
  requests: number;
  writes: number;
  inFlight: number;
  lastRequestAt: number | null;
  bySource: Map<string, { requests: number; lastAt: number }>;
  held: Held[];
  idleWaiters: Set<() => void>;
}

const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
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
  private readonly proxyAgents = new Map<string, Agent>();
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

  /** Add a site (creating its data folder) or, when it exists, set its mode. */
  async addSite(domain: string, mode: SiteMode = 'serve'): Promise<void> {
    const d = checkDomain(domain);
    checkMode(mode);
    const existing = this.siteMap.get(d);
    if (existing) {
      this.setMode(d, mode);
      return;
    }
    const dir = this.siteDataDir(d);
    await mkdir(dir, { recursive: true });
    const log = new OrderLog(dir);
    await log.reload();
    if (this.siteMap.has(d)) {
      this.setMode(d, mode);
      return;
    }
    this.siteMap.set(d, {
      domain: d,
      dir,
      mode,
      log,
      requests: 0,
      writes: 0,
      inFlight: 0,
      lastRequestAt: null,
      bySource: new Map(),
      held: [],
      idleWaiters: new Set(),
    });
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
      this.flushHeld(site, 421, `site ${d} is no longer served by ${this.name}`);
      await site.log.settled();
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

  /** Re-read the site's data from disk (after a sync wrote into its folder). */
  async reloadSite(domain: string): Promise<void> {
    await this.site(domain).log.reload();
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
    const site = domain ? this.siteMap.get(domain) : undefined;
    if (!site) {
      this.reply(res, 421, `${this.name} does not serve ${domain || 'this host'}\n`);
      return;
    }
    const now = Date.now();
    site.requests += 1;
    if (!READ_METHODS.has(req.method ?? 'GET')) site.writes += 1;
    site.lastRequestAt = now;
    const source = normalizeAddress(req.socket.remoteAddress ?? 'unknown');
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
    if (typeof mode === 'object') {
      proxyRequest(req, res, mode.proxy, {
        agent: this.proxyAgent(mode.proxy),
        timeoutMs: this.proxyTimeoutMs,
        maxReplayBytes: this.maxBodyBytes,
        fail: (status, message) => this.reply(res, status, message + '\n', { 'retry-after': '1' }),
      });
      return;
    }
    if (mode === 'readonly' && !READ_METHODS.has(req.method ?? 'GET')) {
      this.reply(res, 503, `${site.domain} is read-only on ${this.name}\n`, { 'retry-after': '1' });
      return;
    }
    void this.serveApp(site, req, res).catch((err: unknown) => {
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
  private async serveApp(site: Site, req: IncomingMessage, res: ServerResponse): Promise<void> {
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
        const orders = await site.log.read();
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
      const order = await site.log.append(key, this.name, data);
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
