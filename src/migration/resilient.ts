/**
 * Timeouts and retries with backoff around every call the orchestrator makes to agents and DNS.
 * Every port operation is idempotent (see ports.ts), so a call that timed out or failed can be
 * repeated safely; a call that keeps failing surfaces as `AGENT_UNAVAILABLE` / `DNS_UNAVAILABLE`
 * with the last cause, and the migration stops with that reason.
 */
import { FerryError, errorMessage, isFerryError } from '../common/errors.js';
import { statusOfCode, type ErrorCode } from '../common/error-codes.js';
import { sleep } from '../common/time.js';
import type { SiteMode, SiteStats } from '../host/index.js';
import type { SiteNeeds, WebSite, WebSitesReport } from '../agent/webconfig/model.js';
import type {
  DatabaseDeclaration,
  DatabaseLag,
  DatabaseSource,
  DnsProvider,
  HostDriver,
  SiteDatabasesPlan,
  RedirectStats,
  SyncSiteOptions,
  WebBundle,
  WebSiteOverrides,
} from './ports.js';

/** How calls are retried. Defaults beside each field. */
export interface RetryPolicy {
  /** Attempts in all, the first included. Default 4. */
  attempts: number;
  /** Delay before the second attempt; doubles each time, with ±25 % jitter. Default 250 ms. */
  baseDelayMs: number;
  /** Longest delay between attempts. Default 4000 ms. */
  maxDelayMs: number;
  /** Time allowed to one attempt of an ordinary call. Default 10 000 ms. */
  callTimeoutMs: number;
  /** Time allowed to one attempt of a data sync. Default 300 000 ms. */
  syncTimeoutMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 4,
  baseDelayMs: 250,
  maxDelayMs: 4000,
  callTimeoutMs: 10_000,
  syncTimeoutMs: 300_000,
};

/**
 * Errors that repeating the call cannot fix (a bad request, not a flaky peer): every code the error
 * table answers with 400, plus these.
 */
const PERMANENT = new Set<string>([
  'REDIRECT_NOT_FOUND',
  'SITE_NOT_FOUND',
  'SYNC_UNSUPPORTED',
  // A server without a web server for Ferry, or a site it cannot move, stays so until someone acts.
  'WEBCONFIG_NONE',
  'WEB_SITE_NOT_FOUND',
  'SITE_NOT_MOVABLE',
  'TARGET_LACKS',
]);

function isPermanent(code: string): boolean {
  // A database's answer is the server's own (a timed-out catch-up, a refused user): asking again
  // at once changes nothing, and the orchestrator decides what follows.
  return PERMANENT.has(code) || code.startsWith('DB_') || statusOfCode(code) === 400;
}

/** Run `fn` with a per-attempt timeout, retrying transient failures with exponential backoff. */
export async function withRetry<T>(
  what: string,
  fn: () => Promise<T>,
  policy: RetryPolicy,
  opts: { timeoutMs?: number; code?: ErrorCode; onRetry?: (attempt: number, err: unknown) => void } = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? policy.callTimeoutMs;
  let last: unknown;
  for (let attempt = 1; attempt <= policy.attempts; attempt++) {
    try {
      return await withTimeout(what, fn(), timeoutMs);
    } catch (err) {
      last = err;
      if (isFerryError(err) && isPermanent(err.code)) throw err;
      if (attempt === policy.attempts) break;
      opts.onRetry?.(attempt, err);
      const base = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      await sleep(Math.round(base * (0.75 + Math.random() * 0.5)));
    }
  }
  throw new FerryError(
    opts.code ?? 'CALL_FAILED',
    `${what} failed ${policy.attempts} times: ${errorMessage(last)}`,
    { cause: last },
  );
}

function withTimeout<T>(what: string, p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(
      () => reject(new FerryError('CALL_TIMEOUT', `${what} took longer than ${ms} ms`)),
      ms,
    );
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

/** A HostDriver whose every call has a timeout and retries; `inner` is the wrapped driver. */
export class ResilientHost implements HostDriver {
  readonly id: string;
  readonly plainTransport?: string;
  readonly siteMode?: (domain: string) => Promise<SiteMode | null>;
  readonly listAddresses?: () => Promise<string[]>;
  readonly webSites?: () => Promise<WebSitesReport>;
  readonly inspectWebSite?: (domain: string, overrides?: WebSiteOverrides) => Promise<WebSite | null>;
  readonly checkWebSite?: (domain: string, needs: SiteNeeds) => Promise<void>;
  readonly gateWebSite?: (domain: string, overrides?: WebSiteOverrides) => Promise<void>;
  readonly exportWebSite?: (domain: string, overrides?: WebSiteOverrides) => Promise<WebBundle>;
  readonly installWebSite?: (bundle: WebBundle) => Promise<void>;
  readonly ungateWebSite?: (domain: string) => Promise<void>;
  readonly uninstallWebSite?: (domain: string) => Promise<void>;
  readonly finishWebSite?: (
    domain: string,
    role: 'origin' | 'target',
    opts?: { backupKeepMs?: number },
  ) => Promise<void>;
  planDatabases?: HostDriver['planDatabases'];
  checkDatabases?: HostDriver['checkDatabases'];
  openDatabaseSource?: HostDriver['openDatabaseSource'];
  copyDatabases?: HostDriver['copyDatabases'];
  databaseLag?: HostDriver['databaseLag'];
  freezeDatabases?: HostDriver['freezeDatabases'];
  thawDatabases?: HostDriver['thawDatabases'];
  takeOverDatabases?: HostDriver['takeOverDatabases'];
  startDatabaseChannel?: HostDriver['startDatabaseChannel'];
  dropDatabaseCopy?: HostDriver['dropDatabaseCopy'];
  closeDatabaseSource?: HostDriver['closeDatabaseSource'];

  constructor(
    readonly inner: HostDriver,
    private readonly policy: RetryPolicy = DEFAULT_RETRY,
    private readonly onRetry?: (what: string, attempt: number, err: unknown) => void,
  ) {
    this.id = inner.id;
    if (inner.plainTransport) this.plainTransport = inner.plainTransport;
    if (inner.siteMode) {
      const f = inner.siteMode.bind(inner);
      this.siteMode = (domain) => this.call(`siteMode(${domain})`, () => f(domain));
    }
    if (inner.listAddresses) {
      const f = inner.listAddresses.bind(inner);
      this.listAddresses = () => this.call('listAddresses()', f);
    }
    // The web-site calls, wrapped only when the inner driver has them. Labels (retry events, error
    // messages) name the domain alone: a bundle holds secrets and is never printed.
    if (inner.webSites) {
      const f = inner.webSites.bind(inner);
      this.webSites = () => this.call('webSites()', f);
    }
    if (inner.inspectWebSite) {
      const f = inner.inspectWebSite.bind(inner);
      this.inspectWebSite = (d, o) => this.call(`inspectWebSite(${d})`, () => (o ? f(d, o) : f(d)));
    }
    if (inner.checkWebSite) {
      const f = inner.checkWebSite.bind(inner);
      this.checkWebSite = (d, n) => this.call(`checkWebSite(${d})`, () => f(d, n));
    }
    if (inner.gateWebSite) {
      const f = inner.gateWebSite.bind(inner);
      this.gateWebSite = (d, o) => this.call(`gateWebSite(${d})`, () => (o ? f(d, o) : f(d)));
    }
    if (inner.exportWebSite) {
      const f = inner.exportWebSite.bind(inner);
      this.exportWebSite = (d, o) => this.call(`exportWebSite(${d})`, () => (o ? f(d, o) : f(d)));
    }
    if (inner.installWebSite) {
      const f = inner.installWebSite.bind(inner);
      this.installWebSite = (b) =>
        this.call(`installWebSite(${b.domain})`, () => f(b), this.policy.syncTimeoutMs);
    }
    if (inner.ungateWebSite) {
      const f = inner.ungateWebSite.bind(inner);
      this.ungateWebSite = (d) => this.call(`ungateWebSite(${d})`, () => f(d));
    }
    if (inner.uninstallWebSite) {
      const f = inner.uninstallWebSite.bind(inner);
      this.uninstallWebSite = (d) => this.call(`uninstallWebSite(${d})`, () => f(d));
    }
    if (inner.finishWebSite) {
      const f = inner.finishWebSite.bind(inner);
      this.finishWebSite = (d, role, o) =>
        this.call(
          `finishWebSite(${d}, ${role})`,
          () => (o ? f(d, role, o) : f(d, role)),
          this.policy.syncTimeoutMs,
        );
    }
    this.wrapDatabases(inner);
  }

  /**
   * The database calls, wrapped only when the inner driver has them. Labels name the migration
   * and the domain, never a source (a secret). The copy gets the sync's time; the take-over its
   * own bound on top of the ordinary call's.
   */
  private wrapDatabases(inner: HostDriver): void {
    const bind = <K extends keyof HostDriver>(k: K) => {
      const f = inner[k];
      return typeof f === 'function' ? (f as (...a: unknown[]) => unknown).bind(inner) : undefined;
    };
    const plan = bind('planDatabases') as HostDriver['planDatabases'];
    if (plan)
      this.planDatabases = (d: string, decl?: DatabaseDeclaration[]) =>
        this.call(`planDatabases(${d})`, () => (decl ? plan(d, decl) : plan(d)));
    const check = bind('checkDatabases') as HostDriver['checkDatabases'];
    if (check)
      this.checkDatabases = (d: string, p: SiteDatabasesPlan) =>
        this.call(`checkDatabases(${d})`, () => check(d, p));
    const open = bind('openDatabaseSource') as HostDriver['openDatabaseSource'];
    if (open)
      this.openDatabaseSource = (id: string, d: string, addr: string, decl?: DatabaseDeclaration[]) =>
        this.call(`openDatabaseSource(${id}, ${d})`, () =>
          decl ? open(id, d, addr, decl) : open(id, d, addr),
        );
    const copy = bind('copyDatabases') as HostDriver['copyDatabases'];
    if (copy)
      this.copyDatabases = (id: string, d: string, src: DatabaseSource, p: SiteDatabasesPlan) =>
        this.call(`copyDatabases(${id}, ${d})`, () => copy(id, d, src, p), this.policy.syncTimeoutMs);
    const lag = bind('databaseLag') as HostDriver['databaseLag'];
    if (lag)
      this.databaseLag = (id: string): Promise<DatabaseLag> => this.call(`databaseLag(${id})`, () => lag(id));
    const freeze = bind('freezeDatabases') as HostDriver['freezeDatabases'];
    if (freeze)
      this.freezeDatabases = (id: string, d: string) =>
        this.call(`freezeDatabases(${id}, ${d})`, () => freeze(id, d));
    const thaw = bind('thawDatabases') as HostDriver['thawDatabases'];
    if (thaw)
      this.thawDatabases = (id: string, d: string) =>
        this.call(`thawDatabases(${id}, ${d})`, () => thaw(id, d));
    const take = bind('takeOverDatabases') as HostDriver['takeOverDatabases'];
    if (take)
      this.takeOverDatabases = (id: string, d: string, pos: string, ms: number) =>
        this.call(
          `takeOverDatabases(${id}, ${d}, ${pos})`,
          () => take(id, d, pos, ms),
          ms + this.policy.callTimeoutMs,
        );
    const start = bind('startDatabaseChannel') as HostDriver['startDatabaseChannel'];
    if (start)
      this.startDatabaseChannel = (id: string, d: string, src: DatabaseSource, pos: string) =>
        this.call(`startDatabaseChannel(${id}, ${d}, ${pos})`, () => start(id, d, src, pos));
    const drop = bind('dropDatabaseCopy') as HostDriver['dropDatabaseCopy'];
    if (drop)
      this.dropDatabaseCopy = (id: string, d: string) =>
        this.call(`dropDatabaseCopy(${id}, ${d})`, () => drop(id, d));
    const close = bind('closeDatabaseSource') as HostDriver['closeDatabaseSource'];
    if (close)
      this.closeDatabaseSource = (id: string) => this.call(`closeDatabaseSource(${id})`, () => close(id));
  }

  /** `attemptFailed` runs as soon as an attempt failed or timed out, before the backoff. */
  private call<T>(
    what: string,
    fn: () => Promise<T>,
    timeoutMs?: number,
    attemptFailed?: () => void,
  ): Promise<T> {
    const label = `host ${this.id}: ${what}`;
    return withRetry(label, fn, this.policy, {
      code: 'AGENT_UNAVAILABLE',
      ...(timeoutMs ? { timeoutMs } : {}),
      ...(this.onRetry || attemptFailed
        ? {
            onRetry: (a: number, e: unknown) => {
              attemptFailed?.();
              this.onRetry?.(label, a, e);
            },
          }
        : {}),
    });
  }

  addAddress(address: string): Promise<void> {
    return this.call(`addAddress(${address})`, () => this.inner.addAddress(address));
  }
  removeAddress(address: string): Promise<void> {
    return this.call(`removeAddress(${address})`, () => this.inner.removeAddress(address));
  }
  startRedirect(
    id: string,
    spec: { address: string; ports: number[]; upstream: string; sourceAddress?: string },
  ): Promise<void> {
    return this.call(`startRedirect(${id})`, () => this.inner.startRedirect(id, spec));
  }
  setRedirectUpstream(id: string, upstream: string): Promise<void> {
    return this.call(`setRedirectUpstream(${id}, ${upstream})`, () =>
      this.inner.setRedirectUpstream(id, upstream),
    );
  }
  holdRedirect(id: string): Promise<void> {
    return this.call(`holdRedirect(${id})`, () => this.inner.holdRedirect(id));
  }
  releaseRedirect(id: string): Promise<void> {
    return this.call(`releaseRedirect(${id})`, () => this.inner.releaseRedirect(id));
  }
  redirectStats(id: string): Promise<RedirectStats | undefined> {
    return this.call(`redirectStats(${id})`, () => this.inner.redirectStats(id));
  }
  stopRedirect(id: string): Promise<void> {
    return this.call(`stopRedirect(${id})`, () => this.inner.stopRedirect(id));
  }
  addSite(domain: string, mode: SiteMode): Promise<void> {
    return this.call(`addSite(${domain})`, () => this.inner.addSite(domain, mode));
  }
  removeSite(domain: string): Promise<void> {
    return this.call(`removeSite(${domain})`, () => this.inner.removeSite(domain));
  }
  hasSite(domain: string): Promise<boolean> {
    return this.call(`hasSite(${domain})`, () => this.inner.hasSite(domain));
  }
  setSiteMode(domain: string, mode: SiteMode): Promise<void> {
    return this.call(`setSiteMode(${domain})`, () => this.inner.setSiteMode(domain, mode));
  }
  siteStats(domain: string): Promise<SiteStats> {
    return this.call(`siteStats(${domain})`, () => this.inner.siteStats(domain));
  }
  waitSiteIdle(domain: string, timeoutMs: number): Promise<boolean> {
    return this.call(
      `waitSiteIdle(${domain})`,
      () => this.inner.waitSiteIdle(domain, timeoutMs),
      timeoutMs + this.policy.callTimeoutMs,
    );
  }
  /**
   * A sync, retried like any call. Progress: each attempt reports with its `attempt` number (from
   * 1) and its own count, so a retried pass starts again from 0 bytes under the next number; the
   * reports of an attempt that timed out (it may still be copying in the background) or of a sync
   * that has settled are dropped, so they never interleave with the current attempt's.
   */
  async syncSite(
    domain: string,
    to: HostDriver,
    opts: SyncSiteOptions = {},
  ): Promise<{ files: number; bytes: number }> {
    const dest = to instanceof ResilientHost ? to.inner : to;
    const report = opts.onProgress;
    if (!report)
      return this.call(
        `syncSite(${domain} → ${to.id})`,
        () => this.inner.syncSite(domain, dest),
        this.policy.syncTimeoutMs,
      );
    let attempts = 0;
    let live = 0; // the attempt whose reports count; 0 between attempts and once settled
    try {
      return await this.call(
        `syncSite(${domain} → ${to.id})`,
        () => {
          const attempt = ++attempts;
          live = attempt;
          return this.inner.syncSite(domain, dest, {
            onProgress: (p) => {
              if (attempt !== live) return;
              report({
                bytes: p.bytes,
                percent: p.percent,
                ...(p.files !== undefined ? { files: p.files } : {}),
                attempt,
              });
            },
          });
        },
        this.policy.syncTimeoutMs,
        () => (live = 0),
      );
    } finally {
      live = 0;
    }
  }
  probe(
    domain: string,
    address: string,
    port: number,
    path: string,
  ): Promise<{ status: number; bodySha256: string }> {
    return this.call(`probe(${domain} ${address}:${port}${path})`, () =>
      this.inner.probe(domain, address, port, path),
    );
  }
}

/** A DnsProvider whose every call has a timeout and retries. */
export class ResilientDns implements DnsProvider {
  constructor(
    readonly inner: DnsProvider,
    private readonly policy: RetryPolicy = DEFAULT_RETRY,
  ) {}

  private call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return withRetry(`dns: ${what}`, fn, this.policy, { code: 'DNS_UNAVAILABLE' });
  }

  getRRset(name: string, type: string): Promise<{ ttl: number; rdata: string[] } | undefined> {
    return this.call(`getRRset(${name} ${type})`, () => this.inner.getRRset(name, type));
  }
  replaceRRset(name: string, type: string, ttl: number, rdata: string[]): Promise<{ serial: number }> {
    return this.call(`replaceRRset(${name} ${type} ${ttl} ${rdata.join(',')})`, () =>
      this.inner.replaceRRset(name, type, ttl, rdata),
    );
  }
  observe(
    name: string,
    type: string,
  ): Promise<Array<{ server: string; serial: number | null; rdata: string[] }>> {
    return this.call(`observe(${name} ${type})`, () => this.inner.observe(name, type));
  }
}
