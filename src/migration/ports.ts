/**
 * What the orchestrator needs from the world, as interfaces: a DNS provider and hosting servers.
 * A hosting server is a host agent (`HostAgent`), driven in-process (the sandbox) or through its
 * HTTP API (`HttpHostDriver`); DNS is the embedded server or any primary through RFC 2136. Every operation is idempotent, so that a
 * resumed migration can repeat the step it was in.
 */
import type { SiteMode, SiteStats } from '../host/index.js';
import type { RelayStats } from '../relay/index.js';

/** The authoritative DNS the domain lives in. */
export interface DnsProvider {
  /** Current RRset (presentation-format rdata), or undefined when the name has none of that type. */
  getRRset(name: string, type: string): Promise<{ ttl: number; rdata: string[] } | undefined>;
  /** Replace the RRset atomically; returns the zone's new SOA serial. */
  replaceRRset(name: string, type: string, ttl: number, rdata: string[]): Promise<{ serial: number }>;
  /**
   * What every authoritative server of the zone answers now: its SOA serial and the RRset. The
   * propagation check waits until all of them show at least the serial of the change.
   */
  observe(
    name: string,
    type: string,
  ): Promise<Array<{ server: string; serial: number | null; rdata: string[] }>>;
}

/** Counters of a redirect at the temporary IP: the part of the engines' stats the waits use. */
export type RedirectStats = Pick<
  RelayStats,
  'activeConnections' | 'totalConnections' | 'bytesToUpstream' | 'bytesToClient' | 'lastConnectionAt' | 'held'
>;

/**
 * Progress of one sync pass while it runs, as the copying side knows it: `bytes` copied (or sent)
 * so far in this attempt, `percent` of the whole when the driver knows the total (rsync's estimate
 * through an agent; the in-process sync walks the source first), else null; `files` when known.
 * `attempt` is set by the retrying wrapper (resilient.ts): a retried pass starts again from 0 bytes
 * with the next attempt number, and reports of an abandoned attempt are dropped.
 */
export interface SyncProgressReport {
  bytes: number;
  percent: number | null;
  files?: number;
  attempt?: number;
}

export interface SyncSiteOptions {
  /** Called as the copy goes; as often as the driver learns something (callers throttle). */
  onProgress?: (p: SyncProgressReport) => void;
}

/** One hosting server, as the orchestrator drives it (in-process or through its agent). */
export interface HostDriver {
  readonly id: string;
  /** Bring an address up on the server (no-op when already there). */
  addAddress(address: string): Promise<void>;
  removeAddress(address: string): Promise<void>;
  /** Start (or find, when already running) redirect `id`: listen on address:ports, forward to upstream. */
  startRedirect(
    id: string,
    spec: { address: string; ports: number[]; upstream: string; sourceAddress?: string },
  ): Promise<void>;
  setRedirectUpstream(id: string, upstream: string): Promise<void>;
  holdRedirect(id: string): Promise<void>;
  releaseRedirect(id: string): Promise<void>;
  redirectStats(id: string): Promise<RedirectStats | undefined>;
  stopRedirect(id: string): Promise<void>;
  /** Site (virtual host) management on this server's built-in site server or web server. */
  addSite(domain: string, mode: SiteMode): Promise<void>;
  removeSite(domain: string): Promise<void>;
  hasSite(domain: string): Promise<boolean>;
  setSiteMode(domain: string, mode: SiteMode): Promise<void>;
  siteStats(domain: string): Promise<SiteStats>;
  /** Wait until no request for the site is in flight; false on timeout. */
  waitSiteIdle(domain: string, timeoutMs: number): Promise<boolean>;
  /**
   * Copy the site's data to `to` (a delta after the first pass); the receiver reloads it.
   * `opts.onProgress` hears how far the copy is; no report comes after the promise settles.
   */
  syncSite(domain: string, to: HostDriver, opts?: SyncSiteOptions): Promise<{ files: number; bytes: number }>;
  /** GET a path of the site on one of this server's addresses (preflight parity). */
  probe(
    domain: string,
    address: string,
    port: number,
    path: string,
  ): Promise<{ status: number; bodySha256: string }>;
  /**
   * The site's mode now, or null when the server does not host it. Optional for older agents;
   * without it a resumed migration relies on its journal alone to know whether it had switched.
   */
  siteMode?(domain: string): Promise<SiteMode | null>;
  /** Addresses brought up through `addAddress` and still up (optional; used to record real state). */
  listAddresses?(): Promise<string[]>;
}
