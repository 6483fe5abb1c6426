/**
 * `HttpHostDriver`: the orchestrator's `HostDriver` over a host agent's HTTP API. Each call has a
 * timeout; calls that fail before an answer (connection refused or reset, timeout) are retried
 * a few times, which is safe because every agent operation is idempotent. The agent's errors
 * come back as FerryErrors with the agent's own code and message.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { randomBytes } from 'node:crypto';
import { FerryError } from '../common/errors.js';
import { isErrorCode, type ErrorCode } from '../common/error-codes.js';
import { sleep } from '../common/time.js';
import type { SiteMode, SiteStats } from '../host/index.js';
import type {
  DatabaseDeclaration,
  DatabasePlanOptions,
  DatabaseLag,
  DatabaseSource,
  HostDriver,
  RedirectStats,
  SiteDatabasesPlan,
  SyncSiteOptions,
  WebSiteOverrides,
} from '../migration/ports.js';
import { FENCE_HEADER } from './fence.js';
import type { SyncEndpoint, SyncProgress } from './rsync.js';
import { isSyncPeer, type SyncPeer } from './transport.js';
import type { SiteNeeds, WebSite, WebSitesReport } from './webconfig/index.js';
import type { WebSiteBundle } from './webstack/index.js';

export interface HttpHostDriverOptions {
  /** The server's id in the controller. */
  id: string;
  /** Base URL of the agent, e.g. `https://192.0.2.10:7070`. */
  url: string;
  token: string;
  /** PEM CA bundle to trust for an https agent (a self-signed agent certificate, say). */
  ca?: string | Buffer;
  /** Timeout of ordinary calls. Default 15 000 ms. */
  timeoutMs?: number;
  /** Timeout of a data sync pass. Default 30 minutes. */
  syncTimeoutMs?: number;
  /** Attempts for a call that got no answer (backoff 250 ms doubling, at most 2 s apart). Default 5: rides out an agent restart. */
  attempts?: number;
  /** Redirect engine to ask for; default the agent's own. */
  engine?: 'userspace' | 'kernel';
  /**
   * The fencing token every call carries (`x-ferry-fence`), asked at each call: the leader's
   * token; undefined sends none (a single controller).
   */
  fence?: () => bigint | undefined;
  /** Called, before the call throws it, when the agent refused the token with FENCED. */
  onFenced?: (err: FerryError) => void;
}

/** Error codes meaning "no answer came back": the call may be repeated. */
const RETRYABLE = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'AGENT_TIMEOUT',
  'AGENT_UNREACHABLE',
]);

/** A hosting server driven through its agent. */
/** Web stack calls run the web server's checks and reloads, useradd, php-fpm: allow them time. */
const WEB_TIMEOUT_MS = 120_000;

export class HttpHostDriver implements HostDriver, SyncPeer {
  readonly id: string;
  readonly plainTransport?: string;
  private readonly base: URL;
  private readonly token: string;
  private readonly timeoutMs: number;
  private readonly syncTimeoutMs: number;
  private readonly attempts: number;
  private readonly engine: 'userspace' | 'kernel' | undefined;
  private readonly agent: HttpAgent | HttpsAgent;
  private readonly fence: (() => bigint | undefined) | undefined;
  private readonly onFenced: ((err: FerryError) => void) | undefined;

  constructor(opts: HttpHostDriverOptions) {
    let base: URL;
    try {
      base = new URL(opts.url);
    } catch {
      throw new FerryError(
        'AGENT_CLIENT_OPTIONS',
        `agent URL "${opts.url}" is not a URL; write e.g. https://192.0.2.10:7070`,
      );
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new FerryError(
        'AGENT_CLIENT_OPTIONS',
        `agent URL "${opts.url}" must start with http:// or https://`,
      );
    }
    if (!opts.token)
      throw new FerryError('AGENT_CLIENT_OPTIONS', `server ${opts.id}: the agent token is empty`);
    this.id = opts.id;
    this.base = base;
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs ?? 15_000;
    this.syncTimeoutMs = opts.syncTimeoutMs ?? 30 * 60_000;
    this.attempts = Math.max(1, opts.attempts ?? 5);
    this.engine = opts.engine;
    this.fence = opts.fence;
    this.onFenced = opts.onFenced;
    const host = base.hostname.replace(/^\[|\]$/g, '');
    if (base.protocol === 'http:' && !(host === 'localhost' || host === '::1' || /^127\./.test(host)))
      this.plainTransport = base.origin;
    this.agent =
      base.protocol === 'https:'
        ? new HttpsAgent({ keepAlive: true, maxSockets: 16, ...(opts.ca ? { ca: opts.ca } : {}) })
        : new HttpAgent({ keepAlive: true, maxSockets: 16 });
  }

  /** The agent's URL (without credentials). */
  get url(): string {
    return this.base.origin;
  }

  /** Close idle keep-alive connections to the agent. */
  close(): void {
    this.agent.destroy();
  }

  /** One API call: JSON in and out, retried when no answer came. */
  async call<T>(
    method: string,
    path: string,
    body?: unknown,
    opts: { timeoutMs?: number; notFound?: T } = {},
  ): Promise<T> {
    let lastErr: unknown;
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      try {
        const { status, json } = await this.once(method, path, body, opts.timeoutMs ?? this.timeoutMs);
        if (status >= 200 && status < 300) return json as T;
        const e = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
        if (status === 404 && 'notFound' in opts && e?.code !== 'ROUTE_NOT_FOUND') return opts.notFound as T;
        throw this.answerError(method, path, status, e);
      } catch (err) {
        lastErr = err;
        const code = (err as { code?: string }).code ?? '';
        if (!RETRYABLE.has(code) || attempt === this.attempts) break;
        await sleep(Math.min(2000, 250 * 2 ** (attempt - 1)));
      }
    }
    throw lastErr;
  }

  private once(
    method: string,
    path: string,
    body: unknown,
    timeoutMs: number,
  ): Promise<{ status: number; json: unknown }> {
    const url = new URL(path, this.base);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const fence = this.fence?.();
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            authorization: `Bearer ${this.token}`,
            accept: 'application/json',
            ...(fence !== undefined ? { [FENCE_HEADER]: fence.toString() } : {}),
            ...(payload
              ? { 'content-type': 'application/json', 'content-length': String(payload.length) }
              : {}),
          },
        },
        (res: IncomingMessage) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            clearTimeout(timer);
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = text ? JSON.parse(text) : undefined;
            } catch {
              json = { error: { message: text.slice(0, 200) } };
            }
            resolve({ status: res.statusCode ?? 0, json });
          });
          res.on('error', reject);
        },
      );
      const timer = setTimeout(() => {
        req.destroy(
          new FerryError(
            'AGENT_TIMEOUT',
            `agent ${this.id}: ${method} ${url.pathname} got no answer within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (err instanceof FerryError) return reject(err);
        const e = new FerryError(
          'AGENT_UNREACHABLE',
          `agent ${this.id} at ${this.base.origin}: ${err.message}`,
          { cause: err },
        );
        reject(Object.assign(e, { errno: err.code }));
      });
      req.end(payload);
    });
  }

  private static enc(s: string): string {
    return encodeURIComponent(s);
  }

  info(): Promise<Record<string, unknown>> {
    return this.call('GET', '/v1/info');
  }

  /** The sites of the agent's own web server (`GET /v1/web-sites`). */
  webSites(): Promise<WebSitesReport> {
    return this.call('GET', '/v1/web-sites');
  }

  /** The web server's site named `domain`, or null (`GET /v1/web-sites/{domain}`). */
  inspectWebSite(domain: string): Promise<WebSite | null> {
    return this.call<WebSite | null>('GET', `/v1/web-sites/${HttpHostDriver.enc(domain)}`, undefined, {
      notFound: null,
    });
  }

  /** Whether this server can host the site's `needs`; TARGET_LACKS naming each lack (`POST /v1/web-sites/{domain}/check`). */
  async checkWebSite(domain: string, needs: SiteNeeds): Promise<void> {
    await this.call('POST', `/v1/web-sites/${HttpHostDriver.enc(domain)}/check`, needs, {
      timeoutMs: WEB_TIMEOUT_MS,
    });
  }

  async gateWebSite(domain: string, overrides: WebSiteOverrides = {}): Promise<void> {
    await this.call(
      'POST',
      `/v1/web-sites/${HttpHostDriver.enc(domain)}/gate`,
      overrides.mail === false ? { mail: false } : {},
      { timeoutMs: WEB_TIMEOUT_MS },
    );
  }

  /** The site's bundle; it holds private keys: keep it out of logs. */
  exportWebSite(domain: string): Promise<WebSiteBundle> {
    return this.call<WebSiteBundle>('GET', `/v1/web-sites/${HttpHostDriver.enc(domain)}/bundle`, undefined, {
      timeoutMs: WEB_TIMEOUT_MS,
    });
  }

  async installWebSite(bundle: WebSiteBundle): Promise<void> {
    await this.call('PUT', `/v1/web-sites/${HttpHostDriver.enc(bundle.domain)}/install`, bundle, {
      timeoutMs: WEB_TIMEOUT_MS,
    });
  }

  async ungateWebSite(domain: string): Promise<void> {
    await this.call(
      'POST',
      `/v1/web-sites/${HttpHostDriver.enc(domain)}/ungate`,
      {},
      { timeoutMs: WEB_TIMEOUT_MS },
    );
  }

  async uninstallWebSite(domain: string): Promise<void> {
    await this.call('DELETE', `/v1/web-sites/${HttpHostDriver.enc(domain)}/install`, undefined, {
      timeoutMs: WEB_TIMEOUT_MS,
    });
  }

  async finishWebSite(
    domain: string,
    role: 'origin' | 'target',
    opts: { backupKeepMs?: number } = {},
  ): Promise<void> {
    await this.call(
      'POST',
      `/v1/web-sites/${HttpHostDriver.enc(domain)}/finish`,
      { role, ...(opts.backupKeepMs !== undefined ? { backupKeepMs: opts.backupKeepMs } : {}) },
      { timeoutMs: WEB_TIMEOUT_MS },
    );
  }

  // --- a site's databases (the agent's --mariadb-defaults-file) -------------------------------

  planDatabases(
    domain: string,
    declared?: DatabaseDeclaration[],
    opts?: DatabasePlanOptions,
  ): Promise<SiteDatabasesPlan> {
    const max = opts?.copyInHoldMaxBytes;
    return this.call(
      'POST',
      `/v1/databases/${HttpHostDriver.enc(domain)}/plan`,
      { ...(declared ? { declared } : {}), ...(max ? { copyInHoldMaxBytes: max } : {}) },
      { timeoutMs: WEB_TIMEOUT_MS },
    );
  }

  checkDatabases(domain: string, plan: SiteDatabasesPlan): Promise<{ replicaAddress: string }> {
    return this.call(
      'POST',
      `/v1/databases/${HttpHostDriver.enc(domain)}/check`,
      { plan },
      {
        timeoutMs: WEB_TIMEOUT_MS,
      },
    );
  }

  /** The migration's replication user; the answer holds its password: keep it out of logs. */
  openDatabaseSource(
    migrationId: string,
    domain: string,
    replicaAddress: string,
    declared?: DatabaseDeclaration[],
  ): Promise<DatabaseSource> {
    return this.call(
      'PUT',
      `/v1/database-migrations/${HttpHostDriver.enc(migrationId)}/source`,
      { domain, replicaAddress, ...(declared ? { declared } : {}) },
      { timeoutMs: WEB_TIMEOUT_MS },
    );
  }

  /**
   * Not retried here: a copy that timed out may still be running in the agent. Calling again is
   * safe (the agent runs one copy of a migration at a time and answers a finished one's result).
   */
  copyDatabases(
    migrationId: string,
    domain: string,
    source: DatabaseSource,
    plan: SiteDatabasesPlan,
    opts?: { timeoutMs?: number },
  ): Promise<{ bytes: number; ms: number }> {
    return this.callOnce(
      'PUT',
      `/v1/database-migrations/${HttpHostDriver.enc(migrationId)}/copy`,
      { domain, source, plan, ...(opts?.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) },
      this.syncTimeoutMs,
    );
  }

  databaseLag(migrationId: string): Promise<DatabaseLag> {
    return this.call('GET', `/v1/database-migrations/${HttpHostDriver.enc(migrationId)}/lag`);
  }

  freezeDatabases(migrationId: string, domain: string): Promise<{ position: string }> {
    return this.call(
      'POST',
      `/v1/database-migrations/${HttpHostDriver.enc(migrationId)}/freeze`,
      { domain },
      { timeoutMs: WEB_TIMEOUT_MS },
    );
  }

  async thawDatabases(migrationId: string, domain: string): Promise<void> {
    await this.call(
      'POST',
      `/v1/database-migrations/${HttpHostDriver.enc(migrationId)}/thaw`,
      { domain },
      { timeoutMs: WEB_TIMEOUT_MS },
    );
  }

  takeOverDatabases(
    migrationId: string,
    domain: string,
    position: string,
    timeoutMs: number,
  ): Promise<{ waitedMs: number; writerPosition: string }> {
    return this.call(
      'POST',
      `/v1/database-migrations/${HttpHostDriver.enc(migrationId)}/take-over`,
      { domain, position, timeoutMs },
      { timeoutMs: timeoutMs + this.timeoutMs },
    );
  }

  async startDatabaseChannel(
    migrationId: string,
    domain: string,
    source: DatabaseSource,
    position: string,
  ): Promise<void> {
    await this.call(
      'PUT',
      `/v1/database-migrations/${HttpHostDriver.enc(migrationId)}/channel`,
      { domain, source, position },
      { timeoutMs: WEB_TIMEOUT_MS },
    );
  }

  async dropDatabaseCopy(migrationId: string, domain: string): Promise<void> {
    await this.call(
      'DELETE',
      `/v1/database-migrations/${HttpHostDriver.enc(migrationId)}/copy?domain=${HttpHostDriver.enc(domain)}`,
      undefined,
      { timeoutMs: WEB_TIMEOUT_MS },
    );
  }

  async closeDatabaseSource(migrationId: string): Promise<void> {
    await this.call(
      'DELETE',
      `/v1/database-migrations/${HttpHostDriver.enc(migrationId)}/source`,
      undefined,
      {
        timeoutMs: WEB_TIMEOUT_MS,
      },
    );
  }

  async addAddress(address: string): Promise<void> {
    await this.call('PUT', `/v1/addresses/${HttpHostDriver.enc(address)}`);
  }

  async removeAddress(address: string): Promise<void> {
    await this.call('DELETE', `/v1/addresses/${HttpHostDriver.enc(address)}`);
  }

  async listAddresses(): Promise<string[]> {
    return (await this.call<{ addresses: string[] }>('GET', '/v1/addresses')).addresses;
  }

  async startRedirect(
    id: string,
    spec: { address: string; ports: number[]; upstream: string; sourceAddress?: string },
  ): Promise<void> {
    await this.call('PUT', `/v1/redirects/${HttpHostDriver.enc(id)}`, {
      ...spec,
      ...(this.engine ? { engine: this.engine } : {}),
    });
  }

  async setRedirectUpstream(id: string, upstream: string): Promise<void> {
    await this.call('PUT', `/v1/redirects/${HttpHostDriver.enc(id)}/upstream`, { upstream });
  }

  async holdRedirect(id: string): Promise<void> {
    await this.call('POST', `/v1/redirects/${HttpHostDriver.enc(id)}/hold`, {});
  }

  async releaseRedirect(id: string): Promise<void> {
    await this.call('POST', `/v1/redirects/${HttpHostDriver.enc(id)}/release`, {});
  }

  redirectStats(id: string): Promise<RedirectStats | undefined> {
    return this.call<RedirectStats | undefined>('GET', `/v1/redirects/${HttpHostDriver.enc(id)}`, undefined, {
      notFound: undefined,
    });
  }

  async stopRedirect(id: string): Promise<void> {
    await this.call('DELETE', `/v1/redirects/${HttpHostDriver.enc(id)}`);
  }

  async addSite(domain: string, mode: SiteMode): Promise<void> {
    await this.call(
      'PUT',
      `/v1/sites/${HttpHostDriver.enc(domain)}`,
      { mode },
      { timeoutMs: this.timeoutMs * 2 },
    );
  }

  async removeSite(domain: string): Promise<void> {
    await this.call('DELETE', `/v1/sites/${HttpHostDriver.enc(domain)}`, undefined, {
      timeoutMs: this.timeoutMs * 2,
    });
  }

  async hasSite(domain: string): Promise<boolean> {
    return (await this.siteMode(domain)) !== null;
  }

  async siteMode(domain: string): Promise<SiteMode | null> {
    const r = await this.call<{ mode: SiteMode } | null>(
      'GET',
      `/v1/sites/${HttpHostDriver.enc(domain)}`,
      undefined,
      { notFound: null },
    );
    return r ? r.mode : null;
  }

  async setSiteMode(domain: string, mode: SiteMode): Promise<void> {
    await this.call(
      'PUT',
      `/v1/sites/${HttpHostDriver.enc(domain)}/mode`,
      { mode },
      { timeoutMs: this.timeoutMs * 2 },
    );
  }

  siteStats(domain: string): Promise<SiteStats> {
    return this.call('GET', `/v1/sites/${HttpHostDriver.enc(domain)}/stats`);
  }

  async waitSiteIdle(domain: string, timeoutMs: number): Promise<boolean> {
    const r = await this.call<{ idle: boolean }>(
      'POST',
      `/v1/sites/${HttpHostDriver.enc(domain)}/wait-idle`,
      { timeoutMs },
      { timeoutMs: timeoutMs + this.timeoutMs },
    );
    return r.idle;
  }

  async reloadSite(domain: string): Promise<void> {
    await this.call('POST', `/v1/sites/${HttpHostDriver.enc(domain)}/reload`, {});
  }

  probe(
    domain: string,
    address: string,
    port: number,
    path: string,
  ): Promise<{ status: number; bodySha256: string }> {
    return this.call('POST', `/v1/sites/${HttpHostDriver.enc(domain)}/probe`, { address, port, path });
  }

  /** Open a receive session for `domain` on this agent: where and how another agent may push. */
  openSyncReceiver(domain: string): Promise<SyncEndpoint> {
    return this.call('PUT', `/v1/sync-receivers/${HttpHostDriver.enc(domain)}`, {});
  }

  async closeSyncReceiver(domain: string): Promise<void> {
    await this.call('DELETE', `/v1/sync-receivers/${HttpHostDriver.enc(domain)}`);
  }

  /** Progress of a push this agent runs (or ran). */
  syncProgress(jobId: string): Promise<(SyncProgress & { domain: string }) | undefined> {
    return this.call('GET', `/v1/sync-jobs/${HttpHostDriver.enc(jobId)}`, undefined, { notFound: undefined });
  }

  /**
   * One sync pass of `domain` from this server to `to` (an agent too): `to` opens (or finds open)
   * its receive session for the site, this agent pushes into it, `to` reloads the site's data
   * (`HostAgent.syncSite`'s steps, through the API).
   * The session, and its secret, serve every pass of the migration; `to` closes it when the site
   * starts taking writes there, so no pass can ever overwrite them.
   */
  async syncSite(
    domain: string,
    to: HostDriver,
    opts: SyncSiteOptions = {},
  ): Promise<{ files: number; bytes: number }> {
    if (!isSyncPeer(to)) {
      throw new FerryError(
        'SYNC_UNSUPPORTED',
        `host ${this.id} syncs through its agent; the target ${to.id} must be an agent too`,
      );
    }
    const endpoint = await to.openSyncReceiver(domain);
    const jobId = `${domain.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 40)}-${randomBytes(4).toString('hex')}`;
    let poller: NodeJS.Timeout | undefined;
    let polling = true;
    if (opts.onProgress) {
      const report = opts.onProgress;
      poller = setInterval(() => {
        // A read still in flight when the push ends is dropped: no report after the pass settles.
        this.syncProgress(jobId).then(
          (p) =>
            polling &&
            p &&
            report({
              bytes: p.bytes,
              percent: p.percent,
              ...(p.files !== undefined ? { files: p.files } : {}),
            }),
          () => undefined,
        );
      }, 1000);
    }
    try {
      // Not retried: a push that timed out may still be running; the next pass is the retry.
      const r = await this.callOnce<{ files: number; bytes: number }>(
        'POST',
        `/v1/sites/${HttpHostDriver.enc(domain)}/push`,
        { jobId, to: endpoint },
        this.syncTimeoutMs,
      );
      await to.reloadSite(domain);
      return { files: r.files, bytes: r.bytes };
    } finally {
      polling = false;
      if (poller) clearInterval(poller);
    }
  }

  private async callOnce<T>(method: string, path: string, body: unknown, timeoutMs: number): Promise<T> {
    const { status, json } = await this.once(method, path, body, timeoutMs);
    if (status >= 200 && status < 300) return json as T;
    const e = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
    throw this.answerError(method, path, status, e);
  }

  /** The agent's error answer as a FerryError with its code; a code this version does not know becomes AGENT_HTTP. */
  private answerError(
    method: string,
    path: string,
    status: number,
    e: { code?: string; message?: string } | undefined,
  ): FerryError {
    const known = isErrorCode(e?.code);
    const what = `agent ${this.id}: ${method} ${path}: ${e?.message ?? `HTTP ${status}`}`;
    const err = new FerryError(
      known ? (e!.code as ErrorCode) : 'AGENT_HTTP',
      known ? what : `${what} (HTTP ${status}${e?.code ? `, code ${e.code}` : ''})`,
    );
    if (err.code === 'FENCED') this.onFenced?.(err);
    return err;
  }
}
