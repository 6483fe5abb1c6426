/**
 * The host agent's core, in-process: one hosting server's addresses, redirects and sites. The
 * sandbox gives it to the orchestrator directly; the HTTP agent wraps the same object.
 */
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { FerryError } from '../common/errors.js';
import { SiteServer, syncDirectory, type SiteMode, type SiteStats } from '../host/index.js';
import type { HostDriver, RedirectStats, SyncSiteOptions } from '../migration/ports.js';
import { createUserspaceRelay, type RedirectEngine } from '../relay/index.js';
import type { AddressManager } from './addresses.js';

export interface LocalHostOptions {
  id: string;
  sites: SiteServer;
  addresses: AddressManager;
  /** How long a held connection may wait at the redirect before it is closed. Default 30 s. */
  maxHoldMs?: number;
}

/** A HostDriver backed by objects in this process. */
export class LocalHost implements HostDriver {
  readonly id: string;
  readonly sites: SiteServer;
  private readonly addresses: AddressManager;
  private readonly redirects = new Map<string, RedirectEngine>();
  private readonly maxHoldMs: number;

  constructor(opts: LocalHostOptions) {
    this.id = opts.id;
    this.sites = opts.sites;
    this.addresses = opts.addresses;
    this.maxHoldMs = opts.maxHoldMs ?? 30_000;
  }

  addAddress(address: string): Promise<void> {
    return this.addresses.add(address);
  }

  removeAddress(address: string): Promise<void> {
    return this.addresses.remove(address);
  }

  listAddresses(): Promise<string[]> {
    return this.addresses.list();
  }

  async startRedirect(
    id: string,
    spec: { address: string; ports: number[]; upstream: string; sourceAddress?: string },
  ): Promise<void> {
    if (this.redirects.has(id)) return;
    // The native data plane where it is built (src/relay/native-relay.ts), else the TypeScript relay.
    const relay = createUserspaceRelay({
      listen: { address: spec.address, ports: spec.ports },
      upstream: { address: spec.upstream },
      ...(spec.sourceAddress ? { sourceAddress: spec.sourceAddress } : {}),
      maxHoldMs: this.maxHoldMs,
    });
    await relay.start();
    this.redirects.set(id, relay);
  }

  private redirect(id: string): RedirectEngine {
    const r = this.redirects.get(id);
    if (!r) throw new FerryError('REDIRECT_NOT_FOUND', `no redirect ${id} on host ${this.id}`);
    return r;
  }

  async setRedirectUpstream(id: string, upstream: string): Promise<void> {
    await this.redirect(id).setUpstream({ address: upstream });
  }

  async holdRedirect(id: string): Promise<void> {
    await this.redirect(id).hold();
  }

  async releaseRedirect(id: string): Promise<void> {
    await this.redirects.get(id)?.release();
  }

  async redirectStats(id: string): Promise<RedirectStats | undefined> {
    return this.redirects.get(id)?.stats();
  }

  async stopRedirect(id: string): Promise<void> {
    const r = this.redirects.get(id);
    if (!r) return;
    this.redirects.delete(id);
    await r.close();
  }

  /** Close every redirect this host runs (shutdown). */
  async stopAllRedirects(): Promise<void> {
    const all = [...this.redirects.values()];
    this.redirects.clear();
    await Promise.all(all.map((r) => r.close()));
  }

  addSite(domain: string, mode: SiteMode): Promise<void> {
    return this.sites.addSite(domain, mode);
  }

  removeSite(domain: string): Promise<void> {
    return this.sites.removeSite(domain);
  }

  async hasSite(domain: string): Promise<boolean> {
    return this.sites.hasSite(domain);
  }

  async siteMode(domain: string): Promise<SiteMode | null> {
    return this.sites.hasSite(domain) ? this.sites.mode(domain) : null;
  }

  async setSiteMode(domain: string, mode: SiteMode): Promise<void> {
    this.sites.setMode(domain, mode);
  }

  async siteStats(domain: string): Promise<SiteStats> {
    return this.sites.siteStats(domain);
  }

  waitSiteIdle(domain: string, timeoutMs: number): Promise<boolean> {
    return this.sites.waitIdle(domain, timeoutMs);
  }

  /**
   * Copy in-process with syncDirectory. With `onProgress`, the source is walked first for its total
   * size, so reports carry a percent; they come after each file (bytes copied so far) and at the end.
   */
  async syncSite(domain: string, to: HostDriver, opts: SyncSiteOptions = {}): Promise<{ files: number; bytes: number }> {
    if (!(to instanceof LocalHost)) {
      throw new FerryError('SYNC_UNSUPPORTED', `host ${this.id} can only sync in-process to another local host`);
    }
    const report = opts.onProgress;
    const res = await syncDirectory(this.sites.siteDataDir(domain), to.sites.siteDataDir(domain), {
      delete: true,
      ...(report ? { onProgress: (p: { bytes: number; files: number; percent: number }) => report({ bytes: p.bytes, percent: p.percent, files: p.files }) } : {}),
    });
    await to.sites.reloadSite(domain);
    return res;
  }

  probe(domain: string, address: string, port: number, path: string): Promise<{ status: number; bodySha256: string }> {
    return httpProbe(domain, address, port, path);
  }
}

/** GET `path` with Host `domain` at address:port; the status and a SHA-256 of the body. */
export function httpProbe(
  domain: string,
  address: string,
  port: number,
  path: string,
  timeoutMs = 5000,
): Promise<{ status: number; bodySha256: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: address, port, path, method: 'GET', headers: { host: domain }, agent: false, timeout: timeoutMs }, (res) => {
      const hash = createHash('sha256');
      res.on('data', (c: Buffer) => hash.update(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bodySha256: hash.digest('hex') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new FerryError('PROBE_TIMEOUT', `GET http://${domain}${path} at ${address}:${port} timed out`)));
    req.on('error', (err) =>
      reject(err instanceof FerryError ? err : new FerryError('PROBE_FAILED', `GET http://${domain}${path} at ${address}:${port}: ${err.message}`, { cause: err })),
    );
    req.end();
  });
}
