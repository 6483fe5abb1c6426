/**
 * The `rfc2136` DNS provider: records live on someone else's primary (BIND, Knot, PowerDNS) and
 * change through TSIG-signed dynamic UPDATE (RFC 2136, RFC 8945). A replacement is one UPDATE
 * (delete the RRset, add the new records with their TTL), so the primary applies it atomically.
 * The propagation check asks each of the zone's name servers for its SOA serial.
 */
import { FerryError } from '../common/errors.js';
import { dnsQuery, nameKey, parseName, rcodeName } from '../dns/index.js';
import { TsigKey, type TsigKeyConfig } from '../dns/tsig/index.js';
import { sendUpdate, upd } from '../dns/update/index.js';
import { nameInZone, observeZone, zoneNameServers, type ZoneNameServer } from './dns-zone-servers.js';
import type { DnsProvider } from './ports.js';

export interface Rfc2136Options {
  /** The primary that takes the updates (and answers the reads). */
  server: { address: string; port: number };
  /** Zone the records live in. */
  zone: string;
  /** TSIG key for the updates (base64 secret); unsigned updates when absent. */
  tsig?: TsigKeyConfig;
  /**
   * The zone's authoritative servers for the propagation check. Default: the zone's NS records
   * at the primary, with their addresses from glue (or an A/AAAA query), on the primary's port.
   */
  nameServers?: Array<{ address: string; port: number }>;
  /** Per exchange (default 3000 ms). */
  timeoutMs?: number;
}

/** DNS provider driving any primary through RFC 2136 UPDATE. */
export class Rfc2136DnsProvider implements DnsProvider {
  readonly zone: string;
  private readonly key: TsigKey | undefined;
  private readonly timeoutMs: number;

  constructor(private readonly opts: Rfc2136Options) {
    this.zone = parseName(opts.zone);
    this.key = opts.tsig ? new TsigKey(opts.tsig) : undefined;
    this.timeoutMs = opts.timeoutMs ?? 3000;
  }

  async getRRset(name: string, type: string): Promise<{ ttl: number; rdata: string[] } | undefined> {
    const owner = nameInZone(this.zone, name);
    const res = await dnsQuery({
      server: this.opts.server,
      name: owner,
      type,
      tcp: true,
      timeoutMs: this.timeoutMs,
    });
    const rrs = res.answers.filter(
      (a) => a.typeName === type.toUpperCase() && nameKey(a.name) === nameKey(owner),
    );
    if (rrs.length === 0) return undefined;
    return { ttl: Math.min(...rrs.map((r) => r.ttl)), rdata: rrs.map((r) => r.rdata) };
  }

  async replaceRRset(name: string, type: string, ttl: number, rdata: string[]): Promise<{ serial: number }> {
    const owner = nameInZone(this.zone, name);
    const answer = await sendUpdate({
      server: this.opts.server,
      zone: this.zone,
      updates: [upd.deleteRRset(owner, type), ...rdata.map((r) => upd.add(owner, type, ttl, r))],
      ...(this.key ? { key: this.key } : {}),
      timeoutMs: this.timeoutMs,
    });
    if (answer.rcode !== 0 || answer.tsigError !== 0) {
      const tsig = answer.tsigError ? `, TSIG error ${rcodeName(answer.tsigError)}` : '';
      throw new FerryError(
        'DNS_UPDATE_REFUSED',
        `${this.opts.server.address}:${this.opts.server.port} refused the update of ${owner} ${type}: ${rcodeName(answer.rcode)}${tsig}`,
      );
    }
    if (this.key && !answer.verified)
      throw new FerryError(
        'DNS_TSIG',
        `the answer to the update of ${owner} ${type} is not signed with ${this.key.name}`,
      );
    const serial = await this.serialAt(this.opts.server);
    if (serial === null)
      throw new FerryError('DNS_BAD_RESPONSE', `no SOA for ${this.zone} at the primary after the update`);
    return { serial };
  }

  private async serialAt(server: { address: string; port: number }): Promise<number | null> {
    const res = await dnsQuery({ server, name: this.zone, type: 'SOA', timeoutMs: this.timeoutMs });
    const soa = res.answers.find((a) => a.typeName === 'SOA');
    return soa ? Number(soa.rdata.split(/\s+/)[2]) : null;
  }

  /** The zone's name servers: from the options, or NS records with glue at the primary. */
  nameServers(): Promise<ZoneNameServer[]> {
    let glue: Array<{ name: string; typeName: string; rdata: string }> = [];
    return zoneNameServers(this.zone, this.opts.nameServers, {
      port: this.opts.server.port,
      targets: async () => {
        const ns = await dnsQuery({
          server: this.opts.server,
          name: this.zone,
          type: 'NS',
          tcp: true,
          timeoutMs: this.timeoutMs,
        });
        glue = ns.additional;
        return ns.answers.filter((a) => a.typeName === 'NS').map((a) => a.rdata);
      },
      // The glue of the NS answer, else an A/AAAA query at the primary.
      addresses: async (target) => {
        const addrs = glue
          .filter((a) => (a.typeName === 'A' || a.typeName === 'AAAA') && nameKey(a.name) === nameKey(target))
          .map((a) => a.rdata);
        if (addrs.length > 0) return addrs;
        for (const t of ['A', 'AAAA']) {
          const r = await dnsQuery({
            server: this.opts.server,
            name: target,
            type: t,
            timeoutMs: this.timeoutMs,
          }).catch(() => undefined);
          addrs.push(...(r?.answers.filter((a) => a.typeName === t).map((a) => a.rdata) ?? []));
        }
        return addrs;
      },
    });
  }

  async observe(
    name: string,
    type: string,
  ): Promise<Array<{ server: string; serial: number | null; rdata: string[] }>> {
    return observeZone(await this.nameServers(), this.zone, name, type, this.timeoutMs);
  }
}

/** The provider a config's `dns:` block describes (for `provider: rfc2136`). */
export function createRfc2136Provider(cfg: {
  server: { address: string; port: number };
  zone: string;
  tsig?: { name: string; algorithm: string; secret: string };
  nameServers?: Array<{ address: string; port: number }>;
}): Rfc2136DnsProvider {
  return new Rfc2136DnsProvider({
    server: cfg.server,
    zone: cfg.zone,
    ...(cfg.tsig ? { tsig: cfg.tsig } : {}),
    ...(cfg.nameServers ? { nameServers: cfg.nameServers } : {}),
  });
}
