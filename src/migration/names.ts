/**
 * Planning a site's names: a site is several names (its domain, the web server's other names, the
 * domain's mail exchangers, the ones the config adds), and the migration moves together every one
 * whose records point at the origin's shared address. The others are left alone, each with why.
 * Everything here only reads DNS.
 */
import { FerryError, errorMessage } from '../common/errors.js';
import type { DnsProvider } from './ports.js';
import type { NameLeftAlone } from './types.js';

/** What `planSiteNames` needs: the domain, where its names may come from, and the origin's addresses. */
export interface SiteNamesInput {
  /** The site's domain, absolute (`shop.example.`). */
  domain: string;
  /** The web server's names of the site (`server_name`, `ServerAlias`), as written. */
  webNames: string[];
  /** Names the config adds (`ferry.yaml` `sites[].names`): refused with `PLAN_NAME_REFUSED` unless they move. */
  declared: string[];
  /** The origin's shared IPv4 address the moving names point at. */
  originIp: string;
  /** The origin's shared IPv6 address, when the migration moves AAAA records too. */
  originIp6?: string;
}

/** The names that move (the domain first) and those left alone. */
export interface SiteNames {
  names: string[];
  leftAlone: NameLeftAlone[];
}

/** `name` lower-case and absolute. */
export function absoluteName(name: string): string {
  const n = name.trim().toLowerCase();
  return n.endsWith('.') ? n : `${n}.`;
}

const HOSTNAME = /^([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+$/;

/**
 * The zone `name` belongs to, as the provider serves it: the closest enclosing name with an SOA
 * record. Undefined when the provider serves no zone of it.
 */
export async function zoneOf(dns: DnsProvider, name: string): Promise<string | undefined> {
  const labels = absoluteName(name).split('.').filter(Boolean);
  for (let i = 0; i < labels.length; i++) {
    const candidate = `${labels.slice(i).join('.')}.`;
    try {
      if (await dns.getRRset(candidate, 'SOA')) return candidate;
    } catch {
      return undefined; // a provider of one zone refuses names outside it
    }
  }
  return undefined;
}

/** The targets of the domain's MX records (`10 mail.shop.example.` → `mail.shop.example.`). */
async function mxTargets(dns: DnsProvider, domain: string): Promise<string[]> {
  const mx = await dns.getRRset(domain, 'MX');
  return (mx?.rdata ?? [])
    .map((r) => r.trim().split(/\s+/)[1])
    .filter((t): t is string => !!t && t !== '.')
    .map(absoluteName);
}

/**
 * Which names of the site move with it: the domain, then the web server's names, the MX targets
 * and the declared names that lie in the domain's zone, are not CNAMEs, and whose A record (and
 * AAAA, when IPv6 moves) is the origin's shared address alone. A declared name that does not
 * qualify is refused (`PLAN_NAME_REFUSED`) with the reason; any other is listed as left alone.
 */
export async function planSiteNames(dns: DnsProvider, input: SiteNamesInput): Promise<SiteNames> {
  const domain = absoluteName(input.domain);
  const zone = await zoneOf(dns, domain);
  const names = [domain];
  const leftAlone: NameLeftAlone[] = [];
  const declared = new Set(input.declared.map(absoluteName));
  const candidates = [
    ...input.webNames.map((n) => [n, 'web'] as const),
    ...(await mxTargets(dns, domain)).map((n) => [n, 'mx'] as const),
    ...[...declared].map((n) => [n, 'declared'] as const),
  ];
  const seen = new Set<string>([domain]);
  for (const [raw, source] of candidates) {
    const name = absoluteName(raw);
    if (seen.has(name)) continue;
    seen.add(name);
    const reason = await whyLeftAlone(dns, name, zone, input);
    if (reason === undefined) names.push(name);
    else if (declared.has(name) || source === 'declared')
      throw new FerryError(
        'PLAN_NAME_REFUSED',
        `${name} (sites[].names of ${domain}) cannot move with the site: ${reason}; nothing was changed`,
      );
    else leftAlone.push({ name, reason });
  }
  return { names, leftAlone };
}

/** Why `name` stays where it is, or undefined when it moves. */
async function whyLeftAlone(
  dns: DnsProvider,
  name: string,
  zone: string | undefined,
  input: SiteNamesInput,
): Promise<string | undefined> {
  if (!HOSTNAME.test(name)) return 'not a plain host name (a wildcard or a pattern)';
  if (!zone || (name !== zone && !name.endsWith(`.${zone}`)) || (await zoneOf(dns, name)) !== zone)
    return zone ? `outside the zone ${zone}` : 'outside the zone';
  try {
    if (await dns.getRRset(name, 'CNAME')) return 'a CNAME (it follows its target)';
    const a = await dns.getRRset(name, 'A');
    if (!a?.rdata.length) return 'no A record';
    if (a.rdata.length !== 1 || a.rdata[0] !== input.originIp)
      return `points at ${a.rdata.join(', ')}, not the origin's shared IP ${input.originIp}`;
    if (input.originIp6 !== undefined) {
      const aaaa = await dns.getRRset(name, 'AAAA');
      if (!aaaa?.rdata.length) return 'no AAAA record (the domain moves its IPv6 address too)';
      if (aaaa.rdata.length !== 1 || aaaa.rdata[0] !== input.originIp6)
        return `AAAA points at ${aaaa.rdata.join(', ')}, not the origin's shared IPv6 address ${input.originIp6}`;
    }
  } catch (err) {
    return `its records cannot be read (${errorMessage(err)})`;
  }
  return undefined;
}

/** The plan lines of a site's names: those that move together, then each left alone with why. */
export function describeSiteNames(names: string[], leftAlone: NameLeftAlone[] = []): string[] {
  return [
    `move together: ${names.join(', ')}`,
    ...leftAlone.map((l) => `left alone: ${l.name} (${l.reason})`),
  ];
}
