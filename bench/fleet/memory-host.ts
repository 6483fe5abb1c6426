/**
 * A hosting server simulated in memory at the HostDriver boundary, for the fleet benchmark: it
 * answers every call the orchestrator makes from its own state (addresses, redirects, sites with
 * their mode and data) and opens no socket. `syncSite` copies a site's data to another host of
 * the same `MemoryFleet`. Traffic counters stay at zero: no client uses these sites.
 */
import { createHash } from 'node:crypto';
import { FerryError } from '../../src/common/errors.js';
import type { HostDriver, RedirectStats, SyncSiteOptions } from '../../src/migration/index.js';
import type { SiteMode, SiteStats } from '../../src/host/site-server.js';

interface SiteState {
  mode: SiteMode;
  /** The site's data as the copy moves it: a version and a size. */
  data: { version: number; bytes: number };
}

interface Redirect {
  address: string;
  ports: number[];
  upstream: string;
  held: boolean;
}

/** The hosts of one simulated fleet, by id (what `syncSite` copies between). */
export class MemoryFleet {
  readonly hosts = new Map<string, MemoryHost>();
  /** Calls answered, by method name (for the report). */
  readonly calls = new Map<string, number>();

  host(id: string): MemoryHost {
    let h = this.hosts.get(id);
    if (!h) this.hosts.set(id, (h = new MemoryHost(id, this)));
    return h;
  }

  count(method: string): void {
    this.calls.set(method, (this.calls.get(method) ?? 0) + 1);
  }
}

/** One simulated server. */
export class MemoryHost implements HostDriver {
  private readonly sites = new Map<string, SiteState>();
  private readonly addresses = new Set<string>();
  private readonly redirects = new Map<string, Redirect>();

  constructor(
    readonly id: string,
    private readonly fleet: MemoryFleet,
  ) {}

  /** Put a site here before the controller starts (what an agent serves at start). */
  seed(domain: string, bytes = 64 * 1024): void {
    this.sites.set(key(domain), { mode: 'serve', data: { version: 1, bytes } });
  }

  /** Domains hosted here now. */
  hosted(): string[] {
    return [...this.sites.keys()];
  }

  private site(domain: string): SiteState {
    this.fleet.count('site');
    const s = this.sites.get(key(domain));
    if (!s) throw new FerryError('SITE_NOT_FOUND', `${this.id} does not host ${domain}`);
    return s;
  }

  async addAddress(address: string): Promise<void> {
    this.fleet.count('addAddress');
    this.addresses.add(address);
  }

  async removeAddress(address: string): Promise<void> {
    this.fleet.count('removeAddress');
    this.addresses.delete(address);
  }

  async listAddresses(): Promise<string[]> {
    return [...this.addresses];
  }

  async startRedirect(
    id: string,
    spec: { address: string; ports: number[]; upstream: string; sourceAddress?: string },
  ): Promise<void> {
    this.fleet.count('startRedirect');
    if (!this.addresses.has(spec.address))
      throw new FerryError('RELAY_LISTEN', `${spec.address} is not up on ${this.id}`);
    if (!this.redirects.has(id))
      this.redirects.set(id, {
        address: spec.address,
        ports: spec.ports,
        upstream: spec.upstream,
        held: false,
      });
  }

  private redirect(id: string): Redirect {
    const r = this.redirects.get(id);
    if (!r) throw new FerryError('REDIRECT_NOT_FOUND', `no redirect ${id} on ${this.id}`);
    return r;
  }

  async setRedirectUpstream(id: string, upstream: string): Promise<void> {
    this.redirect(id).upstream = upstream;
  }

  async holdRedirect(id: string): Promise<void> {
    this.redirect(id).held = true;
  }

  async releaseRedirect(id: string): Promise<void> {
    this.redirect(id).held = false;
  }

  async redirectStats(id: string): Promise<RedirectStats | undefined> {
    this.fleet.count('redirectStats');
    if (!this.redirects.has(id)) return undefined;
    return {
      activeConnections: 0,
      totalConnections: 0,
      bytesToUpstream: 0,
      bytesToClient: 0,
      lastConnectionAt: null,
      held: 0,
    };
  }

  async stopRedirect(id: string): Promise<void> {
    this.fleet.count('stopRedirect');
    this.redirects.delete(id);
  }

  async addSite(domain: string, mode: SiteMode): Promise<void> {
    this.fleet.count('addSite');
    const s = this.sites.get(key(domain));
    if (s) s.mode = mode;
    else this.sites.set(key(domain), { mode, data: { version: 0, bytes: 0 } });
  }

  async removeSite(domain: string): Promise<void> {
    this.fleet.count('removeSite');
    this.sites.delete(key(domain));
  }

  async hasSite(domain: string): Promise<boolean> {
    this.fleet.count('hasSite');
    return this.sites.has(key(domain));
  }

  async siteMode(domain: string): Promise<SiteMode | null> {
    return this.sites.get(key(domain))?.mode ?? null;
  }

  async setSiteMode(domain: string, mode: SiteMode): Promise<void> {
    this.site(domain).mode = mode;
  }

  async siteStats(domain: string): Promise<SiteStats> {
    this.site(domain);
    return { requests: 0, writes: 0, inFlight: 0, held: 0, lastRequestAt: null, bySource: {} };
  }

  async waitSiteIdle(domain: string): Promise<boolean> {
    this.site(domain);
    return true;
  }

  async syncSite(
    domain: string,
    to: HostDriver,
    opts?: SyncSiteOptions,
  ): Promise<{ files: number; bytes: number }> {
    const from = this.site(domain);
    const target = this.fleet.hosts.get(to.id);
    if (!target) throw new FerryError('HOST_UNKNOWN', `no simulated host ${to.id}`);
    const there = target.sites.get(key(domain));
    const delta = there && there.data.version === from.data.version ? 0 : from.data.bytes;
    opts?.onProgress?.({ bytes: delta, percent: 100, files: delta ? 1 : 0 });
    if (there) there.data = { ...from.data };
    else target.sites.set(key(domain), { mode: 'readonly', data: { ...from.data } });
    return { files: delta ? 1 : 0, bytes: delta };
  }

  async probe(domain: string, address: string, port: number, path: string) {
    this.fleet.count('probe');
    const s = this.sites.get(key(domain));
    const r = [...this.redirects.values()].find((x) => x.address === address && x.ports.includes(port));
    if (!s && !r) return { status: 404, bodySha256: sha(`none ${path}`) };
    return { status: 200, bodySha256: sha(`${key(domain)} ${path}`) };
  }
}

function key(domain: string): string {
  const d = domain.toLowerCase();
  return d.endsWith('.') ? d : `${d}.`;
}

function sha(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
