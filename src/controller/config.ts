/**
 * The controller's YAML configuration (`ferry.yaml`): servers and their agents, the DNS
 * provider, the sites, and the migration defaults. `loadConfig` validates it with zod and
 * reports every problem at once, each with the path of the key and what to write instead;
 * `startController` builds the running controller from it (agents over HTTP, the embedded name
 * server or another provider). See docs/deployment.md for the reference of every key.
 *
 * Secrets (agent tokens, TSIG keys) may be written inline, as `${ENV_VAR}`, or read from a file
 * (`tokenFile`, `secretFile`). They are kept out of `describeConfig` and never logged.
 */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { HttpHostDriver } from '../agent/client.js';
import { FerryError } from '../common/errors.js';
import { DnsServer, loadZoneFile } from '../dns/index.js';
import { EmbeddedDnsProvider, Journal, createRfc2136Provider, type DnsProvider } from '../migration/index.js';
import { Controller } from './controller.js';

// --- schema ------------------------------------------------------------------------------

const ipMsg = 'must be an IPv4 or IPv6 address literal, e.g. 192.0.2.10';
const ip = z.string({ message: ipMsg }).refine((s) => isIP(s) !== 0, { message: ipMsg });

/** An IPv6 address in its one canonical text (RFC 5952: lower case, longest zero run as ::). */
export function canonicalIp6(a: string): string {
  return new URL(`http://[${a}]/`).hostname.slice(1, -1);
}

/**
 * An address of one family, for a key that holds only that family; the message names the key
 * the address belongs in instead. (A refinement, not a transform, so that the server's other
 * checks still run and every problem is reported at once; IPv6 is made canonical afterwards.)
 */
function ipOf(family: 4 | 6, otherKey: string) {
  return z.string({ message: ipMsg }).superRefine((s, ctx) => {
    const f = isIP(s);
    if (f === 0) {
      ctx.addIssue({ code: 'custom', message: `must be an IPv${family} address literal, e.g. ${family === 4 ? '192.0.2.10' : '2001:db8::10'}; got ${JSON.stringify(s)}` });
    } else if (f !== family) {
      ctx.addIssue({ code: 'custom', message: `${s} is IPv${f}; IPv${f} addresses go in ${otherKey}` });
    }
  });
}
const portMsg = 'must be a port number from 1 to 65535, e.g. 53';
const port = z.number({ message: portMsg }).int({ message: portMsg }).min(1, { message: portMsg }).max(65535, { message: portMsg });
const domainMsg = 'must be a domain name, e.g. shop.example';
const domain = z
  .string({ message: domainMsg })
  .regex(/^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/, { message: domainMsg });

/** A duration: milliseconds as a number, or a string with a unit (`500ms`, `30s`, `2m`, `1h`). */
const durationMsg = 'must be a duration such as 500ms, 30s, 2m or 1h (a bare number is milliseconds)';
const duration = z.union([z.number(), z.string()], { message: durationMsg }).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === null) {
    ctx.addIssue({ code: 'custom', message: `${durationMsg}; got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return ms;
});

/** Milliseconds of a duration value, or null when it is not one. */
export function parseDuration(v: number | string): number | null {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? v : null;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(v);
  if (!m) return null;
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 'ms') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(n * unit);
}

const secretMsg = (what: string, fileKey: string) => `give the ${what} as ${what === 'token' ? 'token' : 'secret'}: "\${ENV_VAR}" or a literal, or as ${fileKey}: /path/to/file — one of the two`;

const server = z
  .strictObject({
    agent: z
      .string({ message: 'must be the agent URL, e.g. https://192.0.2.10:7070' })
      .refine((s) => /^https?:\/\/[^/\s]+\/?$/.test(s), { message: 'must be the agent URL with scheme, host and port only, e.g. https://192.0.2.10:7070' }),
    token: z.string().min(1, { message: 'is empty; write the agent token or "${ENV_VAR}"' }).optional(),
    tokenFile: z.string().min(1).optional(),
    ca: z.string({ message: 'must be the path of a PEM CA file that signed the agent certificate' }).optional(),
    sharedIps: z.array(ipOf(4, 'sharedIps6'), { message: 'must be a list of IPv4 addresses, e.g. [192.0.2.10]' }).min(1, { message: 'must list at least one shared IP' }),
    tempIpPool: z.array(ipOf(4, 'tempIpPool6'), { message: 'must be a list of IPv4 addresses, e.g. [192.0.2.100, 192.0.2.101]' }).default([]),
    /** IPv6: AAAA records of sites moved to this server point at the first; leave out for IPv4 only. */
    sharedIps6: z
      .array(ipOf(6, 'sharedIps'), { message: 'must be a list of IPv6 addresses, e.g. [2001:db8::10]' })
      .min(1, { message: 'must list at least one shared IPv6 address, or be left out' })
      .optional(),
    /** IPv6 temporary addresses, one per migration away from this server whose site has AAAA. */
    tempIpPool6: z.array(ipOf(6, 'tempIpPool'), { message: 'must be a list of IPv6 addresses, e.g. [2001:db8::100, 2001:db8::101]' }).optional(),
    engine: z.enum(['userspace', 'kernel'], { message: 'must be userspace or kernel' }).optional(),
    web: z.enum(['builtin', 'nginx'], { message: 'must be builtin or nginx (how the agent serves sites: ferry agent --web)' }).default('builtin'),
    timeout: duration.optional(),
  })
  .superRefine((s, ctx) => {
    if ((s.token === undefined) === (s.tokenFile === undefined)) ctx.addIssue({ code: 'custom', message: secretMsg('token', 'tokenFile'), path: ['token'] });
  });

const nameServer = z.strictObject({ address: ip, port: port.default(53) });

const TSIG_ALGORITHMS = ['hmac-sha256', 'hmac-sha384', 'hmac-sha512', 'hmac-sha1', 'hmac-md5'] as const;
const base64Msg = 'must be the base64 secret as tsig-keygen or keymgr -t print it';
const isBase64 = (v: string) => /^[A-Za-z0-9+/]+={0,2}$/.test(v.replace(/\s+/g, ''));

/** A TSIG key: the rfc2136 provider's `tsig:` and each of the embedded server's `tsigKeys:`. */
const tsigKey = z
  .strictObject(
    {
      name: domain,
      algorithm: z.enum(TSIG_ALGORITHMS, { message: 'must be hmac-sha256 (or hmac-sha384, hmac-sha512, hmac-sha1, hmac-md5)' }).default('hmac-sha256'),
      // Never echoed: the message says what is wrong, not what was written.
      secret: z
        .string()
        .min(1)
        .refine((v) => /\$\{[A-Za-z_][A-Za-z0-9_]*\}/.test(v) || isBase64(v), { message: base64Msg })
        .optional(),
      secretFile: z.string().min(1).optional(),
    },
    { message: 'must be a TSIG key { name, algorithm, secret or secretFile }' },
  )
  .superRefine((t, ctx) => {
    if ((t.secret === undefined) === (t.secretFile === undefined)) ctx.addIssue({ code: 'custom', message: secretMsg('TSIG secret', 'secretFile'), path: ['secret'] });
  });

const aclMsg = 'must be an address or prefix (192.0.2.10, 198.51.100.0/24, 2001:db8::/32), { key: KEY-NAME }, or { address, key } for both at once';

/** An address or prefix as an ACL takes it (xfr/acl.ts): `192.0.2.1`, `198.51.100.0/24`, `2001:db8::/32`. */
function prefixProblem(v: string): string | undefined {
  const [addr, len, ...rest] = v.split('/');
  const family = isIP(addr ?? '');
  if (family === 0 || rest.length) return `${JSON.stringify(v)} is not an address or prefix`;
  const max = family === 4 ? 32 : 128;
  if (len !== undefined && !(/^\d{1,3}$/.test(len) && Number(len) <= max)) return `the prefix length in ${JSON.stringify(v)} must be 0-${max}`;
  return undefined;
}

const aclAddress = z.string({ message: aclMsg }).superRefine((v, ctx) => {
  const p = prefixProblem(v);
  if (p) ctx.addIssue({ code: 'custom', message: `${p}; ${aclMsg}` });
});

/**
 * One ACL entry, exactly an `AclEntry` of the name server: a request is allowed when it comes from
 * the address or prefix (if given) and is signed with the key (if given). A bare string is an
 * address or prefix.
 */
const aclEntry = z.preprocess(
  (v, ctx) => {
    if (typeof v !== 'string') return v;
    // Checked here so that the problem is reported at the entry the user wrote, not at .address.
    const p = prefixProblem(v);
    if (p) {
      ctx.addIssue({ code: 'custom', message: `${p}; ${aclMsg}` });
      return z.NEVER;
    }
    return { address: v };
  },
  z
    .strictObject({ address: aclAddress.optional(), key: domain.optional() }, { message: aclMsg })
    .refine((e) => e.address !== undefined || e.key !== undefined, { message: aclMsg }),
);
const acl = z.array(aclEntry, { message: `must be a list; each entry ${aclMsg}` });

/** A secondary told of every change by DNS NOTIFY (RFC 1996). */
const notifyTarget = z.strictObject(
  { address: ip, port: port.default(53), key: domain.optional() },
  { message: 'must be a secondary to notify, { address, port } (port default 53; key: KEY-NAME to sign the NOTIFY)' },
);

/** Who may transfer and update a zone, and whom to notify: the dns-level default, or one zone's own. */
const zonePolicy = {
  allowTransfer: acl.optional(),
  allowUpdate: acl.optional(),
  notify: z.array(notifyTarget, { message: 'must be a list of secondaries, e.g. [{ address: 192.0.2.54, port: 53 }]' }).optional(),
};

const zoneEntry = z.preprocess(
  (v) => (typeof v === 'string' ? { file: v } : v),
  z.strictObject({ file: z.string({ message: 'must be the zone file path' }), origin: domain.optional(), ...zonePolicy }, { message: 'must be a zone file path or { file, origin }' }),
);

const embeddedDns = z.strictObject({
  provider: z.literal('embedded'),
  listen: z.strictObject({ address: ip, port: port.default(53) }),
  zones: z
    .array(zoneEntry, {
      message: 'must be a list of zone files, e.g. [/etc/ferry/zones/example.zone]',
    })
    .min(1, { message: 'must list at least one zone file' }),
  /** Authoritative servers the propagation check asks; default the embedded server itself. */
  nameServers: z.array(nameServer).optional(),
  /** SQLite file keeping the zones and every change across restarts; default zones.sqlite beside the journal. */
  db: z.string({ message: 'must be the path of the zone database, e.g. /var/lib/ferry/zones.sqlite' }).optional(),
  /** Keys that sign transfers, updates and NOTIFY; ACLs and notify targets name them. */
  tsigKeys: z.array(tsigKey, { message: 'must be a list of TSIG keys, e.g. [{ name: xfr-key., secret: "${XFR_TSIG}" }]' }).optional(),
  /** For every zone without its own: default no transfers, no updates, no NOTIFY. */
  ...zonePolicy,
  serialPolicy: z.enum(['increment', 'unixtime'], { message: 'must be increment or unixtime' }).optional(),
  workers: z
    .number({ message: 'must be the number of query worker processes, 1 to 64' })
    .int({ message: 'must be the number of query worker processes, 1 to 64' })
    .min(1, { message: 'must be the number of query worker processes, 1 to 64' })
    .max(64, { message: 'must be the number of query worker processes, 1 to 64' })
    .optional(),
});

/** The slot for RFC 2136 dynamic updates to an existing BIND, Knot or PowerDNS (built separately). */
const rfc2136Dns = z.strictObject({
  provider: z.literal('rfc2136'),
  server: nameServer,
  zone: domain,
  tsig: tsigKey.optional(),
  nameServers: z.array(nameServer).optional(),
});

const dns = z.discriminatedUnion('provider', [embeddedDns, rfc2136Dns], { message: 'provider must be embedded or rfc2136' });

const site = z.strictObject({
  domain,
  server: z.string({ message: 'must name a server declared under servers:' }),
  ports: z.array(port, { message: 'must be a list of ports, the HTTP port first, e.g. [80, 443]' }).min(1, { message: 'must list at least the HTTP port' }).default([80]),
  kind: z.enum(['builtin', 'nginx'], { message: 'must be builtin or nginx' }).optional(),
});

const defaults = z
  .strictObject({
    ttl: z.number({ message: 'must be a TTL in seconds, e.g. 30' }).int().min(1, { message: 'must be at least 1 second' }).max(86400).optional(),
    quietWindow: duration.optional(),
    dnsTempCap: duration.optional(),
    drainCap: duration.optional(),
    cutoverDrainTimeout: duration.optional(),
    poll: duration.optional(),
  })
  .default({});

/** A TSIG key name as the name server compares them: case-folded, without the final dot. */
const keyId = (name: string) => name.toLowerCase().replace(/\.$/, '');

/** Key names are declared once, and every ACL entry and notify target names a declared key. */
function checkDnsKeys(d: z.output<typeof embeddedDns>, ctx: z.RefinementCtx): void {
  const declared = new Map<string, number>();
  (d.tsigKeys ?? []).forEach((k, i) => {
    const id = keyId(k.name);
    const prior = declared.get(id);
    if (prior !== undefined) ctx.addIssue({ code: 'custom', path: ['dns', 'tsigKeys', i, 'name'], message: `${k.name} is declared twice (also dns.tsigKeys[${prior}])` });
    else declared.set(id, i);
  });
  const known = [...(d.tsigKeys ?? [])].map((k) => k.name);
  const check = (name: string | undefined, path: PropertyKey[]) => {
    if (name === undefined || declared.has(keyId(name))) return;
    ctx.addIssue({
      code: 'custom',
      path,
      message: `names TSIG key ${name}, which is not declared under dns.tsigKeys; ${known.length ? `declared: ${known.join(', ')}` : 'declare it there with its secret'}`,
    });
  };
  const policy = (p: { allowTransfer?: Array<{ key?: string | undefined }>; allowUpdate?: Array<{ key?: string | undefined }>; notify?: Array<{ key?: string | undefined }> }, at: PropertyKey[]) => {
    for (const list of ['allowTransfer', 'allowUpdate', 'notify'] as const) (p[list] ?? []).forEach((e, i) => check(e.key, [...at, list, i, 'key']));
  };
  policy(d, ['dns']);
  d.zones.forEach((z, i) => policy(z, ['dns', 'zones', i]));
}

const configSchema = z
  .strictObject({
    journal: z.string({ message: 'must be the path of the journal database, e.g. /var/lib/ferry/journal.sqlite' }).default('/var/lib/ferry/journal.sqlite'),
    servers: z.record(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, { message: "server names are 1-64 letters, digits, '.', '_' or '-'" }), server, {
      message: 'must map server names to { agent, token, sharedIps, tempIpPool, sharedIps6, tempIpPool6 }',
    }),
    dns,
    sites: z.array(site, { message: 'must be a list of { domain, server, ports }' }).default([]),
    defaults,
    /** The control API's settings; validated by the API itself (src/api). */
    api: z.looseObject({}).optional(),
  })
  .superRefine((c, ctx) => {
    const names = Object.keys(c.servers);
    if (names.length === 0) ctx.addIssue({ code: 'custom', path: ['servers'], message: 'must declare at least one server' });
    const owner = new Map<string, string>();
    for (const [name, s] of Object.entries(c.servers)) {
      const six = (l: string[] | undefined) => (l ?? []).map(canonicalIp6);
      const lists = [['sharedIps', s.sharedIps], ['tempIpPool', s.tempIpPool], ['sharedIps6', six(s.sharedIps6)], ['tempIpPool6', six(s.tempIpPool6)]] as const;
      for (const [key, list] of lists) {
        // IPv6 compared canonical: 2001:DB8::1 and 2001:db8:0::1 are one address.
        list.forEach((a, i) => {
          const prior = owner.get(a);
          if (prior) ctx.addIssue({ code: 'custom', path: ['servers', name, key, i], message: `${a} is already used by ${prior}; each address belongs to one server and one role` });
          else owner.set(a, `servers.${name}.${key}`);
        });
      }
    }
    if (c.dns.provider === 'embedded') checkDnsKeys(c.dns, ctx);
    const seen = new Map<string, number>();
    c.sites.forEach((s, i) => {
      const d = s.domain.toLowerCase().replace(/\.$/, '');
      if (seen.has(d)) ctx.addIssue({ code: 'custom', path: ['sites', i, 'domain'], message: `${d} is declared twice (also sites[${seen.get(d)}])` });
      seen.set(d, i);
      const srv = c.servers[s.server];
      if (!srv) {
        ctx.addIssue({ code: 'custom', path: ['sites', i, 'server'], message: `"${s.server}" is not declared under servers:; write one of ${names.join(', ') || '(none)'}` });
      } else if (s.kind && s.kind !== srv.web) {
        ctx.addIssue({ code: 'custom', path: ['sites', i, 'kind'], message: `is ${s.kind} but server ${s.server} serves sites with ${srv.web}; set servers.${s.server}.web or drop kind` });
      }
    });
  });

type RawConfig = z.output<typeof configSchema>;

// --- the validated config ----------------------------------------------------------------

export interface ServerConfig {
  id: string;
  agent: string;
  /** The agent's bearer token, resolved from the env or its file. Never logged. */
  token: string;
  ca?: string;
  sharedIps: string[];
  tempIpPool: string[];
  /** IPv6 shared addresses (canonical form); absent for an IPv4-only server. */
  sharedIps6?: string[];
  tempIpPool6?: string[];
  engine?: 'userspace' | 'kernel';
  web: 'builtin' | 'nginx';
  timeoutMs?: number;
}

/** An ACL entry as the name server takes it (src/dns/xfr/acl.ts): address or prefix, key, or both. */
export interface AclEntryConfig {
  address?: string;
  key?: string;
}

/** Who may transfer and update zones and whom to NOTIFY; absent lists mean none (refused). */
export interface DnsPolicyConfig {
  allowTransfer?: AclEntryConfig[];
  allowUpdate?: AclEntryConfig[];
  notify?: Array<{ address: string; port: number; key?: string }>;
}

export interface TsigKeySecret {
  name: string;
  algorithm: string;
  /** Base64. Never logged, never in `describeConfig`. */
  secret: string;
}

export type DnsConfig =
  | ({
      provider: 'embedded';
      listen: { address: string; port: number };
      /** Each zone may carry its own policy; a key it leaves out is taken from the dns-level one. */
      zones: Array<{ file: string; origin?: string } & DnsPolicyConfig>;
      nameServers?: Array<{ address: string; port: number }>;
      /** Zones and their changes survive restarts here; a zone file with a higher serial wins. */
      db: string;
      tsigKeys?: TsigKeySecret[];
      serialPolicy?: 'increment' | 'unixtime';
      workers?: number;
    } & DnsPolicyConfig)
  | {
      provider: 'rfc2136';
      server: { address: string; port: number };
      zone: string;
      tsig?: TsigKeySecret;
      nameServers?: Array<{ address: string; port: number }>;
    };

export interface SiteConfig {
  domain: string;
  server: string;
  ports: number[];
  kind: 'builtin' | 'nginx';
}

export interface FerryConfig {
  /** The file it came from (relative paths in it are resolved against its folder). */
  file: string;
  journal: string;
  servers: ServerConfig[];
  dns: DnsConfig;
  sites: SiteConfig[];
  defaults: { ttl?: number; quietWindowMs?: number; dnsTempCapMs?: number; drainCapMs?: number; cutoverDrainTimeoutMs?: number; pollMs?: number };
  api?: Record<string, unknown>;
}

/** Every key the schema knows, for "did you mean" hints on unknown keys. */
const KNOWN_KEYS = [
  'journal', 'servers', 'dns', 'sites', 'defaults', 'api',
  'agent', 'token', 'tokenFile', 'ca', 'sharedIps', 'tempIpPool', 'sharedIps6', 'tempIpPool6', 'engine', 'web', 'timeout',
  'provider', 'listen', 'address', 'port', 'zones', 'file', 'origin', 'nameServers', 'db', 'server', 'zone', 'tsig', 'name', 'algorithm', 'secret', 'secretFile',
  'tsigKeys', 'allowTransfer', 'allowUpdate', 'notify', 'key', 'serialPolicy', 'workers',
  'domain', 'ports', 'kind',
  'ttl', 'quietWindow', 'dnsTempCap', 'drainCap', 'cutoverDrainTimeout', 'poll',
];

function editDistance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  const d = Array.from({ length: x.length + 1 }, (_, i) => [i, ...Array<number>(y.length).fill(0)]);
  for (let j = 1; j <= y.length; j++) d[0]![j] = j;
  for (let i = 1; i <= x.length; i++) {
    for (let j = 1; j <= y.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (x[i - 1] === y[j - 1] ? 0 : 1));
    }
  }
  return d[x.length]![y.length]!;
}

function suggest(key: string): string {
  let best = '';
  let bestD = Infinity;
  let bestRank: number[] = [];
  const common = (a: string, b: string) => {
    let n = 0;
    while (n < a.length && n < b.length && a[n]!.toLowerCase() === b[n]!.toLowerCase()) n++;
    return n;
  };
  const family = (k: string) => (/6$/.test(k) ? 1 : 0);
  // A key of another block (port: in an ACL entry): say so rather than suggest itself.
  if (KNOWN_KEYS.includes(key)) return `; ${key} is not valid here`;
  for (const k of KNOWN_KEYS) {
    const ed = editDistance(key, k);
    // A long shared beginning counts as close: tempIPs → tempIpPool.
    const dd = common(key, k) >= 5 ? Math.min(1, ed) : ed;
    // Ties go to the nearer spelling, then to the same address family (tempIPs6 → tempIpPool6).
    const rank = [dd, ed, family(key) === family(k) ? 0 : 1];
    const at = rank.findIndex((r, i) => r !== bestRank[i]);
    if (!bestRank.length || (at >= 0 && rank[at]! < bestRank[at]!)) {
      bestRank = rank;
      bestD = dd;
      best = k;
    }
  }
  return bestD <= Math.max(2, Math.floor(key.length / 3)) ? `; did you mean ${best}?` : '';
}

function pathText(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(top level)';
}

/** One line per zod issue: `servers.origin.sharedIps[0]: must be an IPv4 ...`. */
function issueLines(err: z.ZodError): string[] {
  const lines: string[] = [];
  for (const i of err.issues) {
    if (i.code === 'unrecognized_keys') {
      for (const k of i.keys) lines.push(`${pathText([...i.path, k])}: unknown key${suggest(k)}`);
    } else if (i.code === 'invalid_union' && 'note' in i && i.note === 'No matching discriminator') {
      const p = i.path[i.path.length - 1] === 'provider' ? i.path : [...i.path, 'provider'];
      lines.push(`${pathText(p)}: must be embedded or rfc2136`);
    } else if (i.code === 'invalid_type' && i.message.startsWith('Invalid input: expected') && /received undefined/.test(i.message)) {
      lines.push(`${pathText(i.path)}: is required`);
    } else {
      lines.push(`${pathText(i.path)}: ${i.message}`);
    }
  }
  return [...new Set(lines)];
}

/** Replace `${NAME}` in every string with the environment's value; missing ones are problems. */
function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, path: PropertyKey[], problems: string[]): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (whole, name: string) => {
      const v = env[name];
      if (v === undefined) {
        problems.push(`${pathText(path)}: environment variable ${name} is not set; export it before starting ferry, or write the value in a file and use a ...File key`);
        return whole; // kept, so that the one missing variable is the one problem reported
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, [...path, i], problems));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substituteEnv(v, env, [...path, k], problems)]));
  }
  return value;
}

export interface LoadConfigOptions {
  env?: NodeJS.ProcessEnv;
  /** Read token and secret files (default true); `ferry config check --no-files` skips it. */
  readSecretFiles?: boolean;
}

/** Parse and validate YAML text; throws CONFIG_INVALID listing every problem. */
export async function parseConfig(text: string, file: string, opts: LoadConfigOptions = {}): Promise<FerryConfig> {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    throw new FerryError('CONFIG_INVALID', `${file} is not valid YAML:\n${doc.errors.map((e) => `  ${e.message.split('\n')[0]}`).join('\n')}`);
  }
  const raw: unknown = doc.toJS();
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new FerryError('CONFIG_INVALID', `${file}: the top level must be a mapping with servers:, dns: and sites:`);
  }
  const problems: string[] = [];
  const substituted = substituteEnv(raw, opts.env ?? process.env, [], problems);
  const parsed = configSchema.safeParse(substituted);
  if (!parsed.success) problems.push(...issueLines(parsed.error));
  if (problems.length || !parsed.success) {
    throw new FerryError('CONFIG_INVALID', `${file} has ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
  return resolveConfig(parsed.data, file, opts, problems);
}

/** Read, parse and validate a config file. */
export async function loadConfig(file: string, opts: LoadConfigOptions = {}): Promise<FerryConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new FerryError('CONFIG_INVALID', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parseConfig(text, file, opts);
}

async function resolveConfig(c: RawConfig, file: string, opts: LoadConfigOptions, problems: string[]): Promise<FerryConfig> {
  const base = dirname(resolve(file));
  const abs = (p: string) => resolve(base, p);
  const readSecret = async (path: string, where: string): Promise<string> => {
    if (opts.readSecretFiles === false) return '<from file>';
    try {
      const v = (await readFile(abs(path), 'utf8')).trim();
      if (!v) problems.push(`${where}: ${abs(path)} is empty`);
      return v;
    } catch (err) {
      problems.push(`${where}: cannot read ${abs(path)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      return '';
    }
  };
  const servers: ServerConfig[] = [];
  for (const [id, s] of Object.entries(c.servers)) {
    const token = s.token ?? (await readSecret(s.tokenFile!, `servers.${id}.tokenFile`));
    servers.push({
      id,
      agent: s.agent.replace(/\/$/, ''),
      token,
      ...(s.ca ? { ca: abs(s.ca) } : {}),
      sharedIps: s.sharedIps,
      tempIpPool: s.tempIpPool,
      // Canonical, as the AAAA records the controller compares them with are written.
      ...(s.sharedIps6 ? { sharedIps6: s.sharedIps6.map(canonicalIp6) } : {}),
      ...(s.tempIpPool6 ? { tempIpPool6: s.tempIpPool6.map(canonicalIp6) } : {}),
      ...(s.engine ? { engine: s.engine } : {}),
      web: s.web,
      ...(s.timeout !== undefined ? { timeoutMs: s.timeout } : {}),
    });
  }
  /** A TSIG key with its secret, from the config or its file (checked to be base64, never echoed). */
  const keySecret = async (t: { name: string; algorithm: string; secret?: string | undefined; secretFile?: string | undefined }, where: string): Promise<TsigKeySecret> => {
    let secret = t.secret;
    if (secret === undefined) {
      secret = await readSecret(t.secretFile!, `${where}.secretFile`);
      if (secret && opts.readSecretFiles !== false && !isBase64(secret)) problems.push(`${where}.secretFile: ${abs(t.secretFile!)} ${base64Msg.replace('must be', 'must hold')}`);
    }
    return { name: t.name, algorithm: t.algorithm, secret };
  };
  let dnsCfg: DnsConfig;
  if (c.dns.provider === 'embedded') {
    const d = c.dns;
    const tsigKeys: TsigKeySecret[] = [];
    for (const [i, k] of (d.tsigKeys ?? []).entries()) tsigKeys.push(await keySecret(k, `dns.tsigKeys[${i}]`));
    dnsCfg = {
      provider: 'embedded',
      listen: d.listen,
      zones: d.zones.map((z) => ({ file: abs(z.file), ...(z.origin ? { origin: z.origin } : {}), ...policyOf(z) })),
      ...(d.nameServers ? { nameServers: d.nameServers } : {}),
      db: d.db ? abs(d.db) : join(dirname(abs(c.journal)), 'zones.sqlite'),
      ...(d.tsigKeys ? { tsigKeys } : {}),
      ...policyOf(d),
      ...(d.serialPolicy ? { serialPolicy: d.serialPolicy } : {}),
      ...(d.workers !== undefined ? { workers: d.workers } : {}),
    };
  } else {
    const t = c.dns.tsig;
    dnsCfg = {
      provider: 'rfc2136',
      server: c.dns.server,
      zone: c.dns.zone,
      ...(t ? { tsig: await keySecret(t, 'dns.tsig') } : {}),
      ...(c.dns.nameServers ? { nameServers: c.dns.nameServers } : {}),
    };
  }
  if (problems.length) {
    throw new FerryError('CONFIG_INVALID', `${file} has ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
  const webOf = new Map(servers.map((s) => [s.id, s.web]));
  const d = c.defaults;
  return {
    file,
    journal: abs(c.journal),
    servers,
    dns: dnsCfg,
    sites: c.sites.map((s) => ({ domain: s.domain, server: s.server, ports: s.ports, kind: s.kind ?? webOf.get(s.server)! })),
    defaults: {
      ...(d.ttl !== undefined ? { ttl: d.ttl } : {}),
      ...(d.quietWindow !== undefined ? { quietWindowMs: d.quietWindow } : {}),
      ...(d.dnsTempCap !== undefined ? { dnsTempCapMs: d.dnsTempCap } : {}),
      ...(d.drainCap !== undefined ? { drainCapMs: d.drainCap } : {}),
      ...(d.cutoverDrainTimeout !== undefined ? { cutoverDrainTimeoutMs: d.cutoverDrainTimeout } : {}),
      ...(d.poll !== undefined ? { pollMs: d.poll } : {}),
    },
    ...(c.api ? { api: c.api } : {}),
  };
}

/** The policy keys a dns block or zone entry sets, and only those (an absent key is inherited or refused). */
function policyOf(p: { allowTransfer?: AclEntryConfig[] | undefined; allowUpdate?: AclEntryConfig[] | undefined; notify?: DnsPolicyConfig['notify'] | undefined }): DnsPolicyConfig {
  const entries = (l: AclEntryConfig[]) => l.map((e) => ({ ...(e.address !== undefined ? { address: e.address } : {}), ...(e.key !== undefined ? { key: e.key } : {}) }));
  return {
    ...(p.allowTransfer ? { allowTransfer: entries(p.allowTransfer) } : {}),
    ...(p.allowUpdate ? { allowUpdate: entries(p.allowUpdate) } : {}),
    ...(p.notify ? { notify: p.notify.map((n) => ({ address: n.address, port: n.port, ...(n.key !== undefined ? { key: n.key } : {}) })) } : {}),
  };
}

/** `192.0.2.0/24, key xfr-key., 192.0.2.1+key k.` — or `none` (refused). */
function aclText(l: AclEntryConfig[] | undefined): string {
  if (!l?.length) return 'none';
  return l.map((e) => [e.address, e.key !== undefined ? `key ${e.key}` : undefined].filter(Boolean).join(' with ')).join(', ');
}

function policyText(p: DnsPolicyConfig): string {
  const notify = p.notify?.length ? p.notify.map((n) => `${n.address.includes(':') ? `[${n.address}]` : n.address}:${n.port}${n.key ? ` (key ${n.key})` : ''}`).join(', ') : 'none';
  return `transfer ${aclText(p.allowTransfer)}; update ${aclText(p.allowUpdate)}; notify ${notify}`;
}

/** A summary of the config for people and logs: everything but the secrets. */
export function describeConfig(c: FerryConfig): string {
  const lines = [`config ${c.file}: ok`, `  journal: ${c.journal}`];
  for (const s of c.servers) {
    lines.push(
      `  server ${s.id}: agent ${s.agent}${s.ca ? ` (CA ${s.ca})` : ''}, web ${s.web}, shared ${s.sharedIps.join(' ')}, temporary pool ${s.tempIpPool.join(' ') || '(none)'}` +
        (s.sharedIps6 || s.tempIpPool6 ? `, IPv6 shared ${s.sharedIps6?.join(' ') || '(none)'}, IPv6 temporary pool ${s.tempIpPool6?.join(' ') || '(none)'}` : '') +
        `, redirect engine ${s.engine ?? "the agent's --engine"}`,
    );
  }
  // What the redirect engine changes for the operator: each engine named, both when an agent decides.
  const engines = new Set(c.servers.flatMap((s) => (s.engine ? [s.engine] : ['userspace', 'kernel'])));
  if (engines.has('userspace')) {
    lines.push(`  engine userspace: a relay in the agent connects from the temporary IP; holds new connections at the cut-over; nothing to configure`);
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
    lines.push(`  dns tsig keys: ${e.tsigKeys?.length ? e.tsigKeys.map((k) => `${k.name} (${k.algorithm})`).join(', ') : '(none)'}`);
    lines.push(`  dns zones by default: ${policyText(e)}`);
    for (const z of e.zones) {
      if (z.allowTransfer || z.allowUpdate || z.notify) lines.push(`  dns zone ${z.origin ?? z.file}: ${policyText({ ...policyOf(e), ...policyOf(z) })}`);
    }
  } else {
    lines.push(`  dns: rfc2136 to ${c.dns.server.address}:${c.dns.server.port}, zone ${c.dns.zone}${c.dns.tsig ? `, TSIG key ${c.dns.tsig.name} (${c.dns.tsig.algorithm})` : ''}`);
  }
  for (const s of c.sites) lines.push(`  site ${s.domain}: on ${s.server}, ports ${s.ports.join(',')}, ${s.kind}`);
  const d = c.defaults;
  lines.push(`  defaults: ${Object.entries(d).map(([k, v]) => `${k}=${v}`).join(', ') || '(built-in)'}`);
  return lines.join('\n');
}

// --- building the controller -----------------------------------------------------------------

/** Builds a DNS provider from its config block (the `rfc2136` provider registers one). */
export type DnsProviderFactory = (cfg: DnsConfig) => DnsProvider | Promise<DnsProvider>;

const dnsProviders = new Map<string, DnsProviderFactory>();

/** Make `provider: <name>` in the config build its provider with `factory`. */
export function registerDnsProvider(name: DnsConfig['provider'], factory: DnsProviderFactory): void {
  dnsProviders.set(name, factory);
}

// `provider: rfc2136`: any primary (BIND, Knot, PowerDNS) through TSIG-signed UPDATE.
registerDnsProvider('rfc2136', (cfg) => {
  if (cfg.provider !== 'rfc2136') throw new FerryError('CONFIG_INVALID', 'rfc2136 factory given another provider');
  return createRfc2136Provider(cfg);
});

/**
 * The name server's TSIG keys and zone policies (xfr/primary.ts `PrimaryOptions`) from the config:
 * the dns-level policy is the `*` policy, for every zone without its own; a zone entry with any
 * policy key gets a policy of its own, each key it leaves out taken from the dns-level one (the
 * name server itself does not merge). Nothing configured: no policies, so transfers and updates are
 * refused and nobody is notified. `origins` are the loaded zones' origins, in config order.
 */
export function dnsSecurityOptions(
  cfg: Extract<DnsConfig, { provider: 'embedded' }>,
  origins: string[],
): { tsigKeys?: TsigKeySecret[]; zonePolicies?: Record<string, DnsPolicyConfig> } {
  const zonePolicies: Record<string, DnsPolicyConfig> = {};
  const base = policyOf(cfg);
  if (Object.keys(base).length) zonePolicies['*'] = base;
  cfg.zones.forEach((z, i) => {
    const own = policyOf(z);
    if (Object.keys(own).length) zonePolicies[origins[i]!] = { ...base, ...own };
  });
  return {
    ...(cfg.tsigKeys?.length ? { tsigKeys: cfg.tsigKeys.map((k) => ({ name: k.name, algorithm: k.algorithm, secret: k.secret })) } : {}),
    ...(Object.keys(zonePolicies).length ? { zonePolicies } : {}),
  };
}

/** A controller started from a config: close it to stop the migrations' drivers and the name server. */
export interface RunningController {
  config: FerryConfig;
  controller: Controller;
  /** The embedded name server, when the config uses it. */
  dnsServer: DnsServer | undefined;
  drivers: Map<string, HttpHostDriver>;
  /** Migrations resumed at start. */
  resumed: string[];
  /** Ask every agent for its info: reachable, and serving sites the way the config says. */
  checkAgents(): Promise<Array<{ server: string; ok: boolean; message: string }>>;
  close(): Promise<void>;
}

export interface StartControllerOptions {
  /** Resume unfinished migrations of the journal (default true). */
  resume?: boolean;
}

/**
 * Build and start the controller a config describes: the DNS provider (the embedded name server
 * listening, zones loaded), one `HttpHostDriver` per server, the journal, and the controller,
 * which then resumes unfinished migrations. The control API mounts its routes on `controller`.
 */
export async function startController(config: FerryConfig, opts: StartControllerOptions = {}): Promise<RunningController> {
  let dnsServer: DnsServer | undefined;
  let journal: Journal | undefined;
  const drivers = new Map<string, HttpHostDriver>();
  try {
    let provider: DnsProvider;
    const dnsCfg = config.dns;
    if (dnsCfg.provider === 'embedded') {
      const zones = await Promise.all(dnsCfg.zones.map((z) => loadZoneFile(z.file, z.origin ? { origin: z.origin } : {})));
      dnsServer = new DnsServer({
        address: dnsCfg.listen.address,
        port: dnsCfg.listen.port,
        zones,
        db: dnsCfg.db,
        ...dnsSecurityOptions(dnsCfg, zones.map((z) => z.origin)),
        ...(dnsCfg.serialPolicy ? { serialPolicy: dnsCfg.serialPolicy } : {}),
        ...(dnsCfg.workers !== undefined ? { workers: dnsCfg.workers } : {}),
      });
      await dnsServer.start();
      provider = new EmbeddedDnsProvider({ server: dnsServer, ...(dnsCfg.nameServers ? { nameServers: dnsCfg.nameServers } : {}) });
    } else {
      const factory = dnsProviders.get(dnsCfg.provider);
      if (!factory) {
        throw new FerryError('CONFIG_DNS_UNAVAILABLE', `dns.provider ${dnsCfg.provider} is not available in this build; use provider: embedded`);
      }
      provider = await factory(dnsCfg);
    }
    for (const s of config.servers) {
      const ca = s.ca ? await readFile(s.ca) : undefined;
      drivers.set(
        s.id,
        new HttpHostDriver({
          id: s.id,
          url: s.agent,
          token: s.token,
          ...(ca ? { ca } : {}),
          ...(s.timeoutMs !== undefined ? { timeoutMs: s.timeoutMs } : {}),
          ...(s.engine ? { engine: s.engine } : {}),
        }),
      );
    }
    journal = new Journal(config.journal);
    const controller = new Controller({
      dns: provider,
      servers: config.servers.map((s) => ({
        id: s.id,
        driver: drivers.get(s.id)!,
        sharedIps: s.sharedIps,
        tempIpPool: s.tempIpPool,
        ...(s.sharedIps6 ? { sharedIps6: s.sharedIps6 } : {}),
        ...(s.tempIpPool6 ? { tempIpPool6: s.tempIpPool6 } : {}),
      })),
      sites: config.sites.map((s) => ({ domain: s.domain, server: s.server, ports: s.ports })),
      journal,
      defaults: config.defaults,
    });
    const resumed = opts.resume === false ? [] : controller.resumeAll();
    const j = journal;
    const server = dnsServer;
    return {
      config,
      controller,
      dnsServer,
      drivers,
      resumed,
      checkAgents: () =>
        Promise.all(
          config.servers.map(async (s) => {
            try {
              const info = await drivers.get(s.id)!.info();
              if (info.web !== s.web) {
                return { server: s.id, ok: false, message: `agent serves sites with ${String(info.web)}, the config says web: ${s.web}` };
              }
              // Every site placed here must exist on the agent (created with PUT /v1/sites/{domain}),
              // and be served on the port its migrations probe and proxy to.
              const bare = (d: string) => d.toLowerCase().replace(/\.$/, '');
              const served = new Set(Array.isArray(info.sites) ? info.sites.map((d) => bare(String(d))) : []);
              const here = controller.listSites().filter((x) => x.server === s.id);
              const missing = here.filter((x) => !served.has(bare(x.domain))).map((x) => bare(x.domain));
              const problems: string[] = [];
              if (missing.length) problems.push(`the agent does not serve ${missing.join(', ')}; create each on it first: PUT /v1/sites/{domain} {"mode":"serve"}`);
              const port = typeof info.httpPort === 'number' ? info.httpPort : undefined;
              const offPort = port === undefined ? [] : here.filter((x) => x.ports[0] !== port);
              if (offPort.length) problems.push(`the agent serves sites on --http-port ${port}, but ${offPort.map((x) => `${bare(x.domain)} has ports [${x.ports.join(', ')}]`).join(', ')}`);
              if (problems.length) return { server: s.id, ok: false, message: problems.join('; ') };
              return { server: s.id, ok: true, message: `agent ${String(info.id)} at ${s.agent}, web ${String(info.web)}, ${here.length} site${here.length === 1 ? '' : 's'} present` };
            } catch (err) {
              return { server: s.id, ok: false, message: (err as Error).message };
            }
          }),
        ),
      close: async () => {
        await controller.close();
        for (const d of drivers.values()) d.close();
        await server?.stop();
        j.close();
      },
    };
  } catch (err) {
    for (const d of drivers.values()) d.close();
    await dnsServer?.stop().catch(() => undefined);
    journal?.close();
    throw err;
  }
}
