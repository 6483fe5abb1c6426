/**
 * The `embedded` DNS provider: records change in Ferry's own name server, in-process, and the
 * propagation check asks every listed authoritative server over the wire, as a resolver would.
 */
import { dnsQuery, type DnsServer } from '../dns/index.js';
import { errorMessage } from '../common/errors.js';
import type { DnsProvider } from './ports.js';

export interface EmbeddedDnsOptions {
  server: DnsServer;
  /** Authoritative servers to check for propagation; default: the embedded server itself. */
  nameServers?: Array<{ address: string; port: number }>;
  timeoutMs?: number;
}

/** DNS provider backed by the embedded authoritative server. */
export class EmbeddedDnsProvider implements DnsProvider {
  constructor(private readonly opts: EmbeddedDnsOptions) {}

  async getRRset(name: string, type: string): Promise<{ ttl: number; rdata: string[] } | undefined> {
    return this.opts.server.zones.getRRset(name, type);
  }

  async replaceRRset(name: string, type: string, ttl: number, rdata: string[]): Promise<{ serial: number }> {
    return this.opts.server.zones.replaceRRset(name, type, ttl, rdata);
  }

  /** The zone's authoritative servers: the configured ones, or the embedded server itself. */
  async nameServers(): Promise<Array<{ address: string; port: number }>> {
    return this.opts.nameServers ?? [{ address: this.opts.server.address, port: this.opts.server.port }];
  }

  async observe(
    name: string,
    type: string,
  ): Promise<Array<{ server: string; serial: number | null; rdata: string[] }>> {
    const servers = await this.nameServers();
    const zone = this.opts.server.zones.findZone(name);
    const origin = zone ? zoneOrigin(zone) : name;
    return Promise.all(servers.map((s) => observeServer(s, origin, name, type, this.opts.timeoutMs ?? 2000)));
  }
}

function zoneOrigin(zone: unknown): string {
  return (zone as { origin: string }).origin;
}

/** Ask one authoritative server for the zone's SOA serial and the RRset (both over UDP). */
export async function observeServer(
  server: { address: string; port: number },
  origin: string,
  name: string,
  type: string,
  timeoutMs: number,
): Promise<{ server: string; serial: number | null; rdata: string[]; error?: string }> {
  const label = `${server.address}:${server.port}`;
  try {
    const [soa, rr] = await Promise.all([
      dnsQuery({ server, name: origin, type: 'SOA', timeoutMs }),
      dnsQuery({ server, name, type, timeoutMs }),
    ]);
    const soaRecord = soa.answers.find((a) => a.typeName === 'SOA');
    const serial = soaRecord ? Number(soaRecord.rdata.split(/\s+/)[2]) : null;
    const rdata = rr.answers.filter((a) => a.typeName === type).map((a) => a.rdata);
    return { server: label, serial: Number.isFinite(serial) ? serial : null, rdata };
  } catch (err) {
    return { server: label, serial: null, rdata: [], error: errorMessage(err) };
  }
}
