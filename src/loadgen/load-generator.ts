/**
 * Simulated users for several sites, reaching them through DNS as real ones do. Each client
 * belongs to one site, makes one request at a time, and keeps its own stub cache: it resolves
 * again only when its answer expires, after the TTL, or, for a *stale* client, after the TTL
 * plus an overstay (as serve-stale resolvers, TTL clamps and browser caches do). Keep-alive
 * clients reuse a connection per resolved address; the others open a fresh one per request.
 */
import { EventEmitter } from 'node:events';
import { Agent, request } from 'node:http';
import { randomBytes } from 'node:crypto';
import { FerryError, errorMessage } from '../common/errors.js';
import { mulberry32 } from '../common/random.js';

/** One A lookup at the authoritative server: the address and the TTL (seconds) it came with. */
export interface Resolver {
  (name: string): Promise<{ address: string; ttl: number }>;
}

export interface LoadOptions {
  /** Domains to load; clients are spread over them round-robin. */
  sites: string[];
  /** HTTP port on every address the sites resolve to. */
  port: number;
  resolve: Resolver;
  /** Requests per second across all clients. Default 50. */
  rate: number;
  /** Simulated users. Default 20. */
  clients: number;
  /** Share (0..1) of clients that keep answers past their TTL. Default 0.2. */
  staleShare: number;
  /** How long past the TTL stale clients keep an answer. Default 3000 ms. */
  staleOverstayMs: number;
  /** Share (0..1) of clients that reuse connections. Default 0.5. */
  keepAliveShare: number;
  /** Share (0..1) of requests that are `POST /orders`; the rest are `GET /` or `GET /orders`. Default 0.3. */
  writeShare: number;
  /** Sites of static files, among `sites`: their users only `GET /`. Default none. */
  staticSites?: string[];
  /**
   * Send a request once more on a new connection when the server closed a kept-alive one before
   * any byte of the answer, as browsers do: a web server's reload closes its idle connections, and
   * a request sent on one at that instant was never read. Counted in `resent`. Default false
   * (Ferry's own site app never closes them so).
   */
  resendOnClosedKeepAlive?: boolean;
  /** A request (lookup included) that takes longer fails. Default 5000 ms. */
  requestTimeoutMs: number;
  /** Most requests in flight at once; a slot that finds no room is skipped. Default 200. */
  maxInFlight: number;
  /** Results kept for `results()`; older ones are dropped beyond it (summaries stay complete). Default 100 000. */
  maxResults: number;
  /** A keep-alive client closes a connection idle this long; keep it under the servers' keep-alive timeout and the migration's quiet window. Default 1000 ms. */
  idleSocketTimeoutMs: number;
  /** Prefix of order keys, unique per run. Default random. */
  runId: string;
  /** Seed of the request mix, for repeatable runs. Default random. */
  seed: number;
}

/** One request as a client saw it. `address` is '' when the lookup failed. */
export interface RequestResult {
  at: number;
  domain: string;
  client: number;
  method: string;
  path: string;
  address: string;
  status: number | null;
  ok: boolean;
  servedBy: string | null;
  error?: string;
  orderKey?: string;
  orderId?: number;
  /** Sent once more on a new connection after a kept-alive one closed under it (`resendOnClosedKeepAlive`). */
  resent?: boolean;
  latencyMs: number;
}

/** Totals over the whole run (dropped results included). `servedBy` counts responses by their `X-Served-By`. */
export interface LoadSummary {
  total: number;
  failed: number;
  /** Request slots skipped because every client was busy or `maxInFlight` was reached. */
  skipped: number;
  /** Requests sent once more after a kept-alive connection closed under them (`resendOnClosedKeepAlive`). */
  resent: number;
  byDomain: Record<string, { total: number; failed: number }>;
  servedBy: Record<string, number>;
  acknowledgedWrites: Array<{ domain: string; key: string; id: number }>;
}

/** How one simulated user behaves. */
export interface ClientProfile {
  client: number;
  domain: string;
  stale: boolean;
  keepAlive: boolean;
}

interface ClientState extends ClientProfile {
  busy: boolean;
  seq: number;
  cache?: { address: string; expiresAt: number };
  agent?: { address: string; agent: Agent };
}

const DEFAULTS = {
  rate: 50,
  clients: 20,
  staleShare: 0.2,
  staleOverstayMs: 3000,
  keepAliveShare: 0.5,
  writeShare: 0.3,
  requestTimeoutMs: 5000,
  maxInFlight: 200,
  maxResults: 100_000,
  idleSocketTimeoutMs: 1000,
};

/** Most request slots issued in one scheduler turn, so a stalled event loop does not cause a burst. */
const MAX_BURST = 50;
/** Bytes of a response body kept for parsing (the order answer); the rest is read and dropped. */
const MAX_KEPT_BODY = 64 * 1024;

/** Runs simulated users until stopped; emits `'result'` with each RequestResult. */
export class LoadGenerator extends EventEmitter {
  readonly options: Readonly<LoadOptions>;
  private readonly clientList: ClientState[];
  private readonly kept: RequestResult[] = [];
  private readonly acked: Array<{ domain: string; key: string; id: number }> = [];
  private readonly byDomain = new Map<string, { total: number; failed: number }>();
  private readonly servedByCount = new Map<string, number>();
  private readonly idleWaiters = new Set<() => void>();
  private total = 0;
  private failed = 0;
  private skipped = 0;
  private resent = 0;
  private inFlight = 0;
  private nextClient = 0;
  private issued = 0;
  private startedAt = 0;
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private random: () => number;

  constructor(opts: Partial<LoadOptions> & Pick<LoadOptions, 'sites' | 'port' | 'resolve'>) {
    super();
    const o: LoadOptions = {
      ...DEFAULTS,
      runId: randomBytes(4).toString('hex'),
      seed: randomBytes(4).readUInt32LE(0),
      ...stripUndefined(opts),
      sites: opts.sites,
      port: opts.port,
      resolve: opts.resolve,
    };
    checkOptions(o);
    this.options = Object.freeze({ ...o, sites: [...o.sites] });
    this.random = mulberry32(o.seed);
    this.clientList = Array.from({ length: o.clients }, (_, i) => ({
      client: i,
      domain: o.sites[i % o.sites.length]!,
      stale: spread(i, o.staleShare, 0),
      keepAlive: spread(i, o.keepAliveShare, 0.5),
      busy: false,
      seq: 0,
    }));
    for (const s of o.sites) this.byDomain.set(s, { total: 0, failed: 0 });
  }

  /** The simulated users: which site each loads, and how it caches and connects. */
  clients(): ClientProfile[] {
    return this.clientList.map(({ client, domain, stale, keepAlive }) => ({
      client,
      domain,
      stale,
      keepAlive,
    }));
  }

  /** Start issuing requests at `rate`. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.startedAt = Date.now();
    this.issued = 0;
    this.tick();
  }

  /** Stop issuing, wait for requests in flight (each bounded by its timeout), close connections. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          this.idleWaiters.delete(done);
          resolve();
        };
        const t = setTimeout(done, this.options.requestTimeoutMs + 1000);
        this.idleWaiters.add(done);
      });
    }
    for (const c of this.clientList) {
      c.agent?.agent.destroy();
      c.agent = undefined;
    }
  }

  /** Results kept so far, oldest first (at most `maxResults`). */
  results(): RequestResult[] {
    return [...this.kept];
  }

  summary(): LoadSummary {
    return {
      total: this.total,
      failed: this.failed,
      skipped: this.skipped,
      resent: this.resent,
      byDomain: Object.fromEntries([...this.byDomain].map(([k, v]) => [k, { ...v }])),
      servedBy: Object.fromEntries(this.servedByCount),
      acknowledgedWrites: this.acked.map((w) => ({ ...w })),
    };
  }

  /** Issue every slot due by now, then sleep until the next one. */
  private tick(): void {
    if (!this.running) return;
    const { rate } = this.options;
    const now = Date.now();
    const due = Math.floor(((now - this.startedAt) * rate) / 1000) + 1 - this.issued;
    for (let i = 0; i < Math.min(due, MAX_BURST); i++) this.issueOne();
    // Slots beyond the burst limit are given up rather than caught up later.
    if (due > MAX_BURST) this.skipped += due - MAX_BURST;
    this.issued += Math.max(due, 0);
    const nextAt = this.startedAt + (this.issued * 1000) / rate;
    this.timer = setTimeout(() => this.tick(), Math.max(1, nextAt - Date.now()));
  }

  private issueOne(): void {
    if (this.inFlight >= this.options.maxInFlight) {
      this.skipped += 1;
      return;
    }
    const n = this.clientList.length;
    for (let k = 0; k < n; k++) {
      const c = this.clientList[(this.nextClient + k) % n]!;
      if (c.busy) continue;
      this.nextClient = (this.nextClient + k + 1) % n;
      void this.run(c);
      return;
    }
    this.skipped += 1;
  }

  private async run(c: ClientState): Promise<void> {
    c.busy = true;
    this.inFlight += 1;
    const at = Date.now();
    const o = this.options;
    const r = this.random();
    const still = o.staticSites?.includes(c.domain) ?? false;
    const write = !still && r < o.writeShare;
    const method = write ? 'POST' : 'GET';
    const path = write ? '/orders' : this.random() < 0.5 || still ? '/' : '/orders';
    c.seq += 1;
    const orderKey = write ? `${o.runId}-${c.client}-${c.seq}` : undefined;
    const result: RequestResult = {
      at,
      domain: c.domain,
      client: c.client,
      method,
      path,
      address: '',
      status: null,
      ok: false,
      servedBy: null,
      latencyMs: 0,
      ...(orderKey ? { orderKey } : {}),
    };
    try {
      result.address = await this.lookup(c, at + o.requestTimeoutMs);
      const body = orderKey ? JSON.stringify({ key: orderKey, client: c.client }) : undefined;
      const deadline = at + o.requestTimeoutMs;
      const res = await this.http(c, result.address, method, path, body, deadline).catch((err: unknown) => {
        const e = err as NodeJS.ErrnoException & { reusedSocket?: boolean };
        if (!o.resendOnClosedKeepAlive || !e.reusedSocket || !['ECONNRESET', 'EPIPE'].includes(e.code ?? ''))
          throw err;
        this.resent += 1;
        result.resent = true;
        return this.http(c, result.address, method, path, body, deadline, true);
      });
      result.status = res.status;
      result.servedBy = res.servedBy;
      result.ok = res.status >= 200 && res.status < 300;
      if (!result.ok) result.error = `HTTP ${res.status}: ${res.body.slice(0, 200).trim()}`;
      if (result.ok && orderKey) {
        const id = parseOrderId(res.body);
        if (id === undefined) {
          result.ok = false;
          result.error = `order answer without an id: ${res.body.slice(0, 200)}`;
        } else {
          result.orderId = id;
        }
      }
    } catch (err) {
      result.error = errorMessage(err);
    } finally {
      result.latencyMs = Date.now() - at;
      c.busy = false;
      this.inFlight -= 1;
      this.record(result);
      if (this.inFlight === 0) for (const w of [...this.idleWaiters]) w();
    }
  }

  /** The client's cached answer, or a fresh lookup when it expired. */
  private async lookup(c: ClientState, deadline: number): Promise<string> {
    const now = Date.now();
    if (c.cache && now < c.cache.expiresAt) return c.cache.address;
    c.cache = undefined;
    let answer: { address: string; ttl: number };
    try {
      answer = await withDeadline(
        this.options.resolve(c.domain),
        deadline,
        `lookup of ${c.domain} timed out`,
      );
    } catch (err) {
      throw new FerryError('LOADGEN_RESOLVE', `resolve ${c.domain}: ${errorMessage(err)}`, { cause: err });
    }
    const keep = Math.max(0, answer.ttl) * 1000 + (c.stale ? this.options.staleOverstayMs : 0);
    c.cache = { address: answer.address, expiresAt: Date.now() + keep };
    return answer.address;
  }

  /** The client's agent for `address`: a keep-alive one per address, or none (a fresh connection). */
  private agentFor(c: ClientState, address: string): Agent | false {
    if (!c.keepAlive) return false;
    if (c.agent?.address === address) return c.agent.agent;
    // The client makes one request at a time, so the old agent has no request in flight.
    c.agent?.agent.destroy();
    const agent = new Agent({
      keepAlive: true,
      maxSockets: 1,
      maxFreeSockets: 1,
      timeout: this.options.idleSocketTimeoutMs,
    });
    c.agent = { address, agent };
    return agent;
  }

  private http(
    c: ClientState,
    address: string,
    method: string,
    path: string,
    body: string | undefined,
    deadline: number,
    fresh = false,
  ): Promise<{ status: number; servedBy: string | null; body: string }> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { host: c.domain.replace(/\.$/, '') };
      if (!c.keepAlive) headers.connection = 'close';
      if (body !== undefined) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = String(Buffer.byteLength(body));
      }
      const req = request({
        host: address,
        port: this.options.port,
        method,
        path,
        headers,
        agent: fresh ? false : this.agentFor(c, address),
      });
      const timer = setTimeout(
        () =>
          req.destroy(
            new FerryError(
              'LOADGEN_TIMEOUT',
              `no complete answer within ${this.options.requestTimeoutMs} ms`,
            ),
          ),
        Math.max(1, deadline - Date.now()),
      );
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          if (size < MAX_KEPT_BODY) chunks.push(chunk);
          size += chunk.length;
        });
        res.on('end', () => {
          clearTimeout(timer);
          const servedBy = res.headers['x-served-by'];
          resolve({
            status: res.statusCode ?? 0,
            servedBy: typeof servedBy === 'string' ? servedBy : null,
            body: Buffer.concat(chunks).toString('utf8'),
          });
        });
        res.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(Object.assign(err, { reusedSocket: req.reusedSocket }));
      });
      req.end(body);
    });
  }

  private record(r: RequestResult): void {
    this.total += 1;
    const d = this.byDomain.get(r.domain)!;
    d.total += 1;
    if (!r.ok) {
      this.failed += 1;
      d.failed += 1;
    }
    if (r.servedBy !== null)
      this.servedByCount.set(r.servedBy, (this.servedByCount.get(r.servedBy) ?? 0) + 1);
    if (r.ok && r.orderKey !== undefined && r.orderId !== undefined) {
      this.acked.push({ domain: r.domain, key: r.orderKey, id: r.orderId });
    }
    const max = this.options.maxResults;
    if (this.kept.length >= max) this.kept.splice(0, Math.max(1, Math.ceil(max / 10)));
    this.kept.push(r);
    this.emit('result', r);
  }
}

/** Whether client `i` is among the `share` of clients, spread evenly; `phase` decorrelates traits. */
function spread(i: number, share: number, phase: number): boolean {
  return Math.floor((i + 1) * share + phase) > Math.floor(i * share + phase);
}

function parseOrderId(body: string): number | undefined {
  try {
    const v = JSON.parse(body) as { id?: unknown };
    return typeof v.id === 'number' ? v.id : undefined;
  } catch {
    return undefined;
  }
}

function withDeadline<T>(p: Promise<T>, deadline: number, message: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(message)), Math.max(1, deadline - Date.now()));
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(t);
        reject(err);
      },
    );
  });
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function checkOptions(o: LoadOptions): void {
  const problems: string[] = [];
  if (!Array.isArray(o.sites) || o.sites.length === 0 || o.sites.some((s) => typeof s !== 'string' || !s)) {
    problems.push('sites must list at least one domain name');
  }
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535)
    problems.push(`port must be an integer 1..65535, got ${o.port}`);
  if (typeof o.resolve !== 'function')
    problems.push('resolve must be a function (name) => Promise<{ address, ttl }>');
  if (!(Number.isFinite(o.rate) && o.rate > 0))
    problems.push(`rate must be a positive number of requests/s, got ${o.rate}`);
  if (!(Number.isInteger(o.clients) && o.clients >= 1))
    problems.push(`clients must be an integer of at least 1, got ${o.clients}`);
  for (const k of ['staleShare', 'keepAliveShare', 'writeShare'] as const) {
    if (!(o[k] >= 0 && o[k] <= 1)) problems.push(`${k} must be a share between 0 and 1, got ${o[k]}`);
  }
  if (!(Number.isFinite(o.staleOverstayMs) && o.staleOverstayMs >= 0))
    problems.push(`staleOverstayMs must be 0 or more, got ${o.staleOverstayMs}`);
  for (const k of ['requestTimeoutMs', 'maxInFlight', 'maxResults', 'idleSocketTimeoutMs'] as const) {
    if (!(Number.isInteger(o[k]) && o[k] >= 1)) problems.push(`${k} must be a positive integer, got ${o[k]}`);
  }
  if (problems.length) throw new FerryError('LOADGEN_OPTIONS', `bad load options: ${problems.join('; ')}`);
}
