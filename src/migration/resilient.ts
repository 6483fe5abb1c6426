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
  DatabasePlanOptions,
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
  // A site's databases: refusals and failures the server reported (its own message follows); a
  // catch-up that ran out of time is the orchestrator's to retry later, never at once.
  'DB_NOT_CONFIGURED',
  'DB_AUTH',
  'DB_BINLOG_FORMAT',
  'DB_BINLOG_OFF',
  'DB_CATCHUP_TIMEOUT',
  'DB_COPY_FAILED',
  'DB_EXISTS',
  'DB_GLOBAL_PRIVILEGES',
  'DB_GTID',
  'DB_MISSING',
  'DB_REPLICATION',
  'DB_VERSION',
  // PowerDNS refused the API key or the zone: it says so again until the operator acts.
  'DNS_API_AUTH',
  'DNS_API_REFUSED',
  // An agent refused a fencing token older than the newest it has seen: this controller is no
  // longer the leader, and asking again cannot change that.
  'FENCED',
]);

function isPermanent(code: string): boolean {
  return PERMANENT.has(code) || statusOfCode(code) === 400;
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

  readonly planDatabases?: (
    domain: string,
    declared?: DatabaseDeclaration[],
    opts?: DatabasePlanOptions,
  ) => Promise<SiteDatabasesPlan>;
  readonly checkDatabases?: (domain: string, plan: SiteDatabasesPlan) => Promise<{ replicaAddress: string }>;
  readonly openDatabaseSource?: (
    migrationId: string,
    domain: string,
    replicaAddress: string,
    declared?: DatabaseDeclaration[],
  ) => Promise<DatabaseSource>;
  readonly copyDatabases?: (
    migrationId: string,
    domain: string,
    source: DatabaseSource,
    plan: SiteDatabasesPlan,
    opts?: { timeoutMs?: number },
  ) => Promise<{ bytes: number; ms: number }>;
  readonly databaseLag?: (migrationId: string) => Promise<DatabaseLag>;
  readonly freezeDatabases?: (migrationId: string, domain: string) => Promise<{ position: string }>;
  readonly thawDatabases?: (migrationId: string, domain: string) => Promise<void>;
  readonly takeOverDatabases?: (
    migrationId: string,
    domain: string,
    position: string,
    timeoutMs: number,
  ) => Promise<{ waitedMs: number; writerPosition: string }>;
  readonly startDatabaseChannel?: (
    migrationId: string,
    domain: string,
    source: DatabaseSource,
    position: string,
  ) => Promise<void>;
  readonly dropDatabaseCopy?: (migrationId: string, domain: string) => Promise<void>;
  readonly closeDatabaseSource?: (migrationId: string) => Promise<void>;

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
   * The database calls, wrapped only when the inner driver has them. Labels name the migration and
   * the domain, never a DatabaseSource (it holds a password). Each is idempotent for one migration
   * and retried, except the copy: one attempt, bounded like a sync, because an attempt that timed
   * out may still be copying in the agent (calling it again later is safe: the agent answers a
   * finished copy's result).
   */
  private wrapDatabases(inner: HostDriver): void {
    const self = this as {
      -readonly [K in keyof ResilientHost]: ResilientHost[K];
    };
    const slow = this.policy.syncTimeoutMs;
    if (inner.planDatabases) {
      const f = inner.planDatabases.bind(inner);
      self.planDatabases = (d, decl, o) =>
        this.call(`planDatabases(${d})`, () => (o ? f(d, decl, o) : f(d, decl)), slow);
    }
    if (inner.checkDatabases) {
      const f = inner.checkDatabases.bind(inner);
      self.checkDatabases = (d, p) => this.call(`checkDatabases(${d})`, () => f(d, p), slow);
    }
    if (inner.openDatabaseSource) {
      const f = inner.openDatabaseSource.bind(inner);
      self.openDatabaseSource = (m, d, r, decl) =>
        this.call(`openDatabaseSource(${m}, ${d})`, () => f(m, d, r, decl), slow);
    }
    if (inner.copyDatabases) {
      const f = inner.copyDatabases.bind(inner);
      self.copyDatabases = (m, d, src, p, o) =>
        withTimeout(
          `host ${this.id}: copyDatabases(${m}, ${d})`,
          o ? f(m, d, src, p, o) : f(m, d, src, p),
          slow,
        );
    }
    if (inner.databaseLag) {
      const f = inner.databaseLag.bind(inner);
      self.databaseLag = (m) => this.call(`databaseLag(${m})`, () => f(m));
    }
    if (inner.freezeDatabases) {
      const f = inner.freezeDatabases.bind(inner);
      self.freezeDatabases = (m, d) => this.call(`freezeDatabases(${m}, ${d})`, () => f(m, d), slow);
    }
    if (inner.thawDatabases) {
      const f = inner.thawDatabases.bind(inner);
      self.thawDatabases = (m, d) => this.call(`thawDatabases(${m}, ${d})`, () => f(m, d), slow);
    }
    if (inner.takeOverDatabases) {
      const f = inner.takeOverDatabases.bind(inner);
      self.takeOverDatabases = (m, d, pos, t) =>
        this.call(`takeOverDatabases(${m}, ${d})`, () => f(m, d, pos, t), t + this.policy.callTimeoutMs);
    }
    if (inner.startDatabaseChannel) {
      const f = inner.startDatabaseChannel.bind(inner);
      self.startDatabaseChannel = (m, d, src, pos) =>
        this.call(`startDatabaseChannel(${m}, ${d})`, () => f(m, d, src, pos), slow);
    }
    if (inner.dropDatabaseCopy) {
      const f = inner.dropDatabaseCopy.bind(inner);
      self.dropDatabaseCopy = (m, d) => this.call(`dropDatabaseCopy(${m}, ${d})`, () => f(m, d), slow);
    }
    if (inner.closeDatabaseSource) {
      const f = inner.closeDatabaseSource.bind(inner);
      self.closeDatabaseSource = (m) => this.call(`closeDatabaseSource(${m})`, () => f(m), slow);
    }
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
