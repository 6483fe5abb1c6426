/**
 * The `powerdns` DNS provider: records live in a PowerDNS Authoritative server and change through
 * its HTTP API. A replacement is one PATCH of the zone (changetype REPLACE, or DELETE for an empty
 * set), which PowerDNS applies in one backend transaction, so readers see the old set or the new
 * one. The zone's SOA-EDIT-API setting must be INCREASE or DEFAULT so that every change raises the
 * serial; the provider checks it on first contact and refuses otherwise, before any change. The
 * propagation check asks each of the zone's name servers over DNS, as the rfc2136 provider does.
 * The API key is sent in `X-API-Key` and never appears in a message.
 */
import { resolve4, resolve6 } from 'node:dns/promises';
import { FerryError, errorMessage } from '../common/errors.js';
import { nameKey, parseName } from '../dns/index.js';
import { nameInZone, observeZone, zoneNameServers, type ZoneNameServer } from './dns-zone-servers.js';
import type { DnsProvider } from './ports.js';

export interface PowerDnsOptions {
  /** Base URL of the API, e.g. `http://127.0.0.1:8081` (the `/api/v1/...` path is added). */
  api: string;
  /** The API key (`api-key` in pdns.conf). Never logged. */
  apiKey: string;
  /** The server id in the API's URLs (default `localhost`, the only one PowerDNS has). */
  server?: string;
  /** Zone the records live in. */
  zone: string;
  /**
   * The zone's authoritative servers for the propagation check. Default: the zone's NS records
   * (from the API), with addresses from the zone's own A/AAAA records or else the system resolver,
   * on `nameServerPort`.
   */
  nameServers?: Array<{ address: string; port: number }>;
  /** Port of the name servers found through NS records (default 53). */
  nameServerPort?: number;
  /** Per HTTP request or DNS exchange (default 5000 ms). */
  timeoutMs?: number;
}

/** SOA-EDIT-API values under which every API change raises the serial. */
const RISING = new Set(['INCREASE', 'DEFAULT']);

interface ApiRRset {
  name: string;
  type: string;
  ttl: number;
  records: Array<{ content: string; disabled: boolean }>;
}
interface ApiZone {
  name: string;
  serial: number;
  soa_edit_api?: string;
  rrsets?: ApiRRset[];
}

/** DNS provider driving a PowerDNS Authoritative server through its HTTP API. */
export class PowerDnsProvider implements DnsProvider {
  readonly zone: string;
  private readonly zoneUrl: string;
  private readonly timeoutMs: number;
  private checked: Promise<void> | undefined;
  /** The zone's SOA-EDIT-API as the first contact found it. */
  constructor(private readonly opts: PowerDnsOptions) {
    this.zone = parseName(opts.zone);
    const base = opts.api.replace(/\/+$/, '');
    this.zoneUrl = `${base}/api/v1/servers/${encodeURIComponent(opts.server ?? 'localhost')}/zones/${encodeURIComponent(this.zone)}`;
    this.timeoutMs = opts.timeoutMs ?? 5000;
  }

  /** One API call; PowerDNS's own error text in the FerryError when it refuses. */
  private async request(method: 'GET' | 'PATCH', query: string, body?: unknown): Promise<unknown> {
    const url = this.zoneUrl + query;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: {
          'X-API-Key': this.opts.apiKey,
          Accept: 'application/json',
          ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: unknown }).cause;
      throw new FerryError(
        'DNS_NETWORK',
        `cannot reach the PowerDNS API at ${this.opts.api}: ${errorMessage(cause ?? err)}`,
      );
    }
    const text = await res.text();
    if (res.ok) {
      if (!text) return undefined;
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new FerryError('DNS_BAD_RESPONSE', `the PowerDNS API at ${this.opts.api} answered no JSON`);
      }
    }
    const said = powerDnsMessage(text) || res.statusText;
    const what = `PowerDNS at ${this.opts.api} answered ${method} of zone ${this.zone} with ${res.status}: ${said}`;
    if (res.status === 401 || res.status === 403)
      throw new FerryError('DNS_API_AUTH', `${what} (check dns.apiKey against api-key in pdns.conf)`);
    if (res.status === 404)
      throw new FerryError(
        'DNS_API_REFUSED',
        `${what} (no such zone on server ${this.opts.server ?? 'localhost'}: create it, or fix dns.zone)`,
      );
    if (res.status >= 400 && res.status < 500) throw new FerryError('DNS_API_REFUSED', what);
    throw new FerryError('DNS_BAD_RESPONSE', what);
  }

  /**
   * First contact: the key is accepted, the zone exists, and API changes raise its serial. Every
   * call makes it once; the controller also makes it at start, to say so in its log.
   */
  verify(): Promise<string> {
    return this.check().then(
      () => `PowerDNS at ${this.opts.api} takes the key and has ${this.zone} (SOA-EDIT-API ${this.editApi})`,
    );
  }

  private editApi = '';

  private check(): Promise<void> {
    this.checked ??= (async () => {
      const z = (await this.request('GET', '?rrsets=false')) as ApiZone;
      const edit = (z.soa_edit_api ?? '').toUpperCase();
      this.editApi = edit;
      if (!RISING.has(edit))
        throw new FerryError(
          'DNS_API_REFUSED',
          `zone ${this.zone} at PowerDNS ${this.opts.api} has SOA-EDIT-API ${edit ? edit : '(none)'}: ` +
            `its serial would not rise at each change, so secondaries and the propagation check would miss it; ` +
            `set it with "pdnsutil set-meta ${this.zone} SOA-EDIT-API INCREASE"`,
        );
    })().catch((err: unknown) => {
      this.checked = undefined; // a later call checks again (the operator may fix it meanwhile)
      throw err;
    });
    return this.checked;
  }

  private async rrset(owner: string, type: string): Promise<ApiRRset | undefined> {
    const q = `?rrset_name=${encodeURIComponent(owner)}&rrset_type=${encodeURIComponent(type.toUpperCase())}`;
    const z = (await this.request('GET', q)) as ApiZone;
    return (z.rrsets ?? []).find(
      (r) => nameKey(r.name) === nameKey(owner) && r.type.toUpperCase() === type.toUpperCase(),
    );
  }

  async getRRset(name: string, type: string): Promise<{ ttl: number; rdata: string[] } | undefined> {
    const owner = nameInZone(this.zone, name);
    await this.check();
    const rr = await this.rrset(owner, type);
    const live = rr?.records.filter((r) => !r.disabled) ?? [];
    if (!rr || live.length === 0) return undefined;
    return { ttl: rr.ttl, rdata: live.map((r) => r.content) };
  }

  async replaceRRset(name: string, type: string, ttl: number, rdata: string[]): Promise<{ serial: number }> {
    const owner = nameInZone(this.zone, name);
    await this.check();
    const t = type.toUpperCase();
    const change =
      rdata.length === 0
        ? { name: owner, type: t, changetype: 'DELETE' }
        : {
            name: owner,
            type: t,
            ttl,
            changetype: 'REPLACE',
            records: rdata.map((content) => ({ content, disabled: false })),
          };
    await this.request('PATCH', '', { rrsets: [change] });
    const soa = await this.rrset(this.zone, 'SOA');
    const serial = Number(soa?.records[0]?.content.split(/\s+/)[2]);
    if (!Number.isFinite(serial))
      throw new FerryError('DNS_BAD_RESPONSE', `no SOA for ${this.zone} in PowerDNS after the change`);
    return { serial };
  }

  /** The zone's name servers: from the options, or its NS records with their addresses. */
  nameServers(): Promise<ZoneNameServer[]> {
    const inZone = (target: string) => {
      const k = nameKey(target);
      return k === nameKey(this.zone) || k.endsWith('.' + nameKey(this.zone));
    };
    return zoneNameServers(this.zone, this.opts.nameServers, {
      port: this.opts.nameServerPort ?? 53,
      targets: async () => {
        await this.check();
        const ns = await this.rrset(this.zone, 'NS');
        return (ns?.records ?? []).filter((r) => !r.disabled).map((r) => parseName(r.content));
      },
      // The zone's own A/AAAA records for a name inside it, else the system resolver.
      addresses: async (target) => {
        const addrs: string[] = [];
        if (inZone(target))
          for (const t of ['A', 'AAAA'])
            addrs.push(...((await this.rrset(target, t))?.records.map((r) => r.content) ?? []));
        if (addrs.length > 0) return addrs;
        const host = target.replace(/\.$/, '');
        const found = await Promise.all([resolve4(host).catch(() => []), resolve6(host).catch(() => [])]);
        return found.flat();
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

/** PowerDNS's `{"error": "..."}` text, or the body itself when short. */
function powerDnsMessage(body: string): string {
  try {
    const j = JSON.parse(body) as { error?: unknown };
    if (typeof j.error === 'string') return j.error;
  } catch {
    // not JSON: PowerDNS answers 401 with a plain "Unauthorized"
  }
  const t = body.trim();
  return t.length <= 300 ? t : t.slice(0, 300) + '…';
}

/** The provider a config's `dns:` block describes (for `provider: powerdns`). */
export function createPowerDnsProvider(cfg: {
  api: string;
  apiKey: string;
  server?: string;
  zone: string;
  nameServers?: Array<{ address: string; port: number }>;
}): PowerDnsProvider {
  return new PowerDnsProvider({
    api: cfg.api,
    apiKey: cfg.apiKey,
    zone: cfg.zone,
    ...(cfg.server ? { server: cfg.server } : {}),
    ...(cfg.nameServers ? { nameServers: cfg.nameServers } : {}),
  });
}
