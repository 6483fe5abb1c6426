/** `describeConfig`: what a validated config sets up, for people and logs, without its secrets. */
import { zoneOverride } from '../dns/index.js';
import { redactPostgresUrl } from '../migration/index.js';
import { policyOf, type AclEntryConfig, type DnsPolicyConfig, type FerryConfig } from './config-schema.js';

/** `192.0.2.0/24, key xfr-key., 192.0.2.1+key k.` — or `none` (refused). */
function aclText(l: AclEntryConfig[] | undefined): string {
  if (!l?.length) return 'none';
  return l
    .map((e) => [e.address, e.key !== undefined ? `key ${e.key}` : undefined].filter(Boolean).join(' with '))
    .join(', ');
}

function policyText(p: DnsPolicyConfig): string {
  const notify = p.notify?.length
    ? p.notify
        .map(
          (n) =>
            `${n.address.includes(':') ? `[${n.address}]` : n.address}:${n.port}${n.key ? ` (key ${n.key})` : ''}`,
        )
        .join(', ')
    : 'none';
  return `transfer ${aclText(p.allowTransfer)}; update ${aclText(p.allowUpdate)}; notify ${notify}`;
}

/** A summary of the config for people and logs: everything but the secrets. */
export function describeConfig(c: FerryConfig): string {
  const j = c.journal;
  const lines = [
    `config ${c.file}: ok`,
    `  journal: ${j.kind === 'sqlite' ? j.path : `PostgreSQL ${redactPostgresUrl(j.url)}${j.password !== undefined ? ' (password from passwordFile)' : ''}${j.giveUpAfterMs !== undefined ? `, gives up connecting after ${j.giveUpAfterMs / 1000} s` : ', retries connecting until stopped'}`}`,
  ];
  for (const s of c.servers) {
    lines.push(
      `  server ${s.id}: agent ${s.agent}${s.ca ? ` (CA ${s.ca})` : ''}, web ${s.web}, shared ${s.sharedIps.join(' ')}, temporary pool ${s.tempIpPool.join(' ') || '(none)'}` +
        (s.sharedIps6 || s.tempIpPool6
          ? `, IPv6 shared ${s.sharedIps6?.join(' ') || '(none)'}, IPv6 temporary pool ${s.tempIpPool6?.join(' ') || '(none)'}`
          : '') +
        `, redirect engine ${s.engine ?? "the agent's --engine"}` +
        (s.relayHost ? `, redirects on relay host ${s.relayHost}` : ''),
    );
  }
  // What the redirect engine changes for the operator: each engine named, both when an agent decides.
  const engines = new Set(c.servers.flatMap((s) => (s.engine ? [s.engine] : ['userspace', 'kernel'])));
  if (engines.has('userspace')) {
    lines.push(
      `  engine userspace: a relay in the agent connects from the temporary IP; holds new connections at the cut-over; nothing to configure`,
    );
  }
  if (engines.has('kernel')) {
    lines.push(
      `  engine kernel: nftables DNAT in table ferry_<id> (no userspace hop); needs net.ipv4.ip_forward=1 on the server carrying the temporary IP and a firewall letting forwarded traffic through; ` +
        `holds at the cut-over by dropping SYNs, so a client connecting then waits for its retransmission (1 s, then 3 s, ...)`,
    );
  }
  if (c.dns.provider === 'embedded') {
    const e = c.dns;
    lines.push(
      `  dns: embedded on ${e.listen.address}:${e.listen.port}, zones ${e.zones.map((z) => z.file).join(' ')}, kept in ${e.db}` +
        `, serials ${e.serialPolicy ?? 'increment'}, ${e.workers ?? 1} query worker${(e.workers ?? 1) === 1 ? '' : 's'}`,
    );
    // Key names and algorithms only: the secrets stay out.
    lines.push(
      `  dns tsig keys: ${e.tsigKeys?.length ? e.tsigKeys.map((k) => `${k.name} (${k.algorithm})`).join(', ') : '(none)'}`,
    );
    lines.push(`  dns zones by default: ${policyText(e)}`);
    for (const z of e.zones) {
      const own = zoneOverride(policyOf(e), policyOf(z));
      if (own) lines.push(`  dns zone ${z.origin ?? z.file}: ${policyText(own)}`);
    }
    if (e.catalog) {
      const own = zoneOverride(policyOf(e), policyOf(e.catalog));
      lines.push(
        `  dns catalog zone ${e.catalog.zone} (RFC 9432 v2, lists every other zone): ${own ? policyText(own) : 'as zones by default'}`,
      );
    }
  } else if (c.dns.provider === 'powerdns') {
    // The API key stays out.
    const ns = c.dns.nameServers;
    lines.push(
      `  dns: powerdns API ${c.dns.api} (server ${c.dns.server}), zone ${c.dns.zone}, propagation checked at ${ns ? ns.map((s) => `${s.address}:${s.port}`).join(' ') : 'its NS records (port 53)'}`,
    );
  } else {
    lines.push(
      `  dns: rfc2136 to ${c.dns.server.address}:${c.dns.server.port}, zone ${c.dns.zone}${c.dns.tsig ? `, TSIG key ${c.dns.tsig.name} (${c.dns.tsig.algorithm})` : ''}`,
    );
  }
  for (const s of c.sites)
    lines.push(
      `  site ${s.domain}: on ${s.server}, ports ${s.ports.join(',')}, ${s.kind === 'web' ? "the server's own web server" : s.kind}` +
        (s.web?.declaredRoots ? `, roots ${s.web.declaredRoots.join(' ')}` : '') +
        (s.web?.dataDir ? `, data in ${s.web.dataDir}` : '') +
        (s.names ? `, also the names ${s.names.join(' ')}` : '') +
        (s.mail === false ? ', mail stays on the origin' : '') +
        (s.databases
          ? `, databases ${s.databases.map((d) => `${d.name}${d.users ? ` (users ${d.users.join(' ')})` : ''}${d.host ? ` at ${d.host}` : ''}${d.engine ? ` (${d.engine})` : ''}`).join(', ')}`
          : '') +
        (s.database
          ? `, database catch-up ${Object.entries(s.database)
              .map(([k, v]) => `${k}=${v}`)
              .join(' ')}`
          : ''),
    );
  const d = c.defaults;
  lines.push(
    `  defaults: ${
      Object.entries(d)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ') || '(built-in)'
    }`,
  );
  lines.push(
    `  migration: an origin keeps its backup of a moved web site ${c.migration.backupKeepMs / 86_400_000} days`,
  );
  return lines.join('\n');
}
