/**
 * What the providers of someone else's DNS (rfc2136, powerdns) share: a name checked to lie in
 * their zone, the zone's name servers found from its NS records, and the propagation check that
 * asks each of them over DNS.
 */
import { isIP } from 'node:net';
import { FerryError } from '../common/errors.js';
import { nameKey, parseName } from '../dns/index.js';
import { observeServer } from './dns-embedded.js';

/** One authoritative server of a zone (`name`: its NS target, when found through NS records). */
export interface ZoneNameServer {
  name?: string;
  address: string;
  port: number;
}

/** `name` as an absolute name when it lies in `zone`; DNS_NOT_AUTHORITATIVE otherwise. */
export function nameInZone(zone: string, name: string): string {
  const n = parseName(name);
  const k = nameKey(n);
  const z = nameKey(zone);
  if (k !== z && !k.endsWith('.' + z))
    throw new FerryError('DNS_NOT_AUTHORITATIVE', `${name} is not in zone ${zone}`);
  return n;
}

/** How a provider reads its zone's NS records and their addresses. */
export interface NsLookup {
  /** The zone's NS targets. */
  targets(): Promise<string[]>;
  /** The addresses of one NS target (empty when it has none). */
  addresses(target: string): Promise<string[]>;
  /** The port the name servers found this way listen on. */
  port: number;
}

/**
 * The zone's name servers: `configured` when given, else every address of every NS target;
 * DNS_BAD_RESPONSE when no NS target has an address.
 */
export async function zoneNameServers(
  zone: string,
  configured: Array<{ address: string; port: number }> | undefined,
  ns: NsLookup,
): Promise<ZoneNameServer[]> {
  if (configured) return configured.map((s) => ({ ...s }));
  const out: ZoneNameServer[] = [];
  for (const target of await ns.targets()) {
    const addresses = [...new Set(await ns.addresses(target))].filter((a) => isIP(a));
    for (const address of addresses) out.push({ name: target, address, port: ns.port });
  }
  if (out.length === 0)
    throw new FerryError('DNS_BAD_RESPONSE', `${zone} has no name server with an address`);
  return out;
}

/** The propagation check: each server's serial of `zone` and its RRset of `name` `type`. */
export function observeZone(
  servers: ZoneNameServer[],
  zone: string,
  name: string,
  type: string,
  timeoutMs: number,
): Promise<Array<{ server: string; serial: number | null; rdata: string[] }>> {
  return Promise.all(servers.map((s) => observeServer(s, zone, parseName(name), type, timeoutMs)));
}
