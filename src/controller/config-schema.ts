/**
 * The shape of `ferry.yaml`: the zod schema every key is checked against (each message says what
 * to write instead), and the validated config the rest of the controller takes. Loading it (env
 * substitution, secret files, hints) is config.ts; docs/deployment.md documents every key.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import type { DatabaseDeclaration, DatabaseOptions, ParityChecks } from '../migration/index.js';

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
      ctx.addIssue({
        code: 'custom',
        message: `must be an IPv${family} address literal, e.g. ${family === 4 ? '192.0.2.10' : '2001:db8::10'}; got ${JSON.stringify(s)}`,
      });
    } else if (f !== family) {
      ctx.addIssue({ code: 'custom', message: `${s} is IPv${f}; IPv${f} addresses go in ${otherKey}` });
    }
  });
}
const portMsg = 'must be a port number from 1 to 65535, e.g. 53';
const port = z
  .number({ message: portMsg })
  .int({ message: portMsg })
  .min(1, { message: portMsg })
  .max(65535, { message: portMsg });
const absMsg = 'must be an absolute path, e.g. /var/www/shop';
const absPath = z.string({ message: absMsg }).regex(/^\/[^\0]*$/, { message: absMsg });
const domainMsg = 'must be a domain name, e.g. shop.example';
const domain = z
  .string({ message: domainMsg })
  .regex(
    /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/,
    { message: domainMsg },
  );

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

/** A size: bytes as a number, or a string with a unit (`500KiB`, `200MiB`, `1GiB`; `MB`, `GB` are powers of 1000). */
const sizeMsg = 'must be a size such as 50MiB, 1GiB or 500MB (a bare number is bytes)';
const size = z.union([z.number(), z.string()], { message: sizeMsg }).transform((v, ctx) => {
  const n = parseSize(v);
  if (n === null) {
    ctx.addIssue({ code: 'custom', message: `${sizeMsg}; got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return n;
});

/** Bytes of a size value, or null when it is not one. */
export function parseSize(v: number | string): number | null {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : null;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?\s*$/.exec(v);
  if (!m) return null;
  const units: Record<string, number> = {
    B: 1,
    KiB: 1024,
    MiB: 1024 ** 2,
    GiB: 1024 ** 3,
    TiB: 1024 ** 4,
    KB: 1e3,
    MB: 1e6,
    GB: 1e9,
    TB: 1e12,
  };
  const n = Math.round(Number(m[1]) * units[m[2] ?? 'B']!);
  return Number.isSafeInteger(n) ? n : null;
}

const secretMsg = (what: string, fileKey: string) =>
  `give the ${what} as ${what === 'token' ? 'token' : 'secret'}: "\${ENV_VAR}" or a literal, or as ${fileKey}: /path/to/file — one of the two`;

const server = z
  .strictObject({
    agent: z
      .string({ message: 'must be the agent URL, e.g. https://192.0.2.10:7070' })
      .refine((s) => /^https?:\/\/[^/\s]+\/?$/.test(s), {
        message: 'must be the agent URL with scheme, host and port only, e.g. https://192.0.2.10:7070',
      }),
    token: z.string().min(1, { message: 'is empty; write the agent token or "${ENV_VAR}"' }).optional(),
    tokenFile: z.string().min(1).optional(),
    ca: z
      .string({ message: 'must be the path of a PEM CA file that signed the agent certificate' })
      .optional(),
    sharedIps: z
      .array(ipOf(4, 'sharedIps6'), { message: 'must be a list of IPv4 addresses, e.g. [192.0.2.10]' })
      .min(1, { message: 'must list at least one shared IP' }),
    tempIpPool: z
      .array(ipOf(4, 'tempIpPool6'), {
        message: 'must be a list of IPv4 addresses, e.g. [192.0.2.100, 192.0.2.101]',
      })
      .default([]),
    /** IPv6: AAAA records of sites moved to this server point at the first; leave out for IPv4 only. */
    sharedIps6: z
      .array(ipOf(6, 'sharedIps'), { message: 'must be a list of IPv6 addresses, e.g. [2001:db8::10]' })
      .min(1, { message: 'must list at least one shared IPv6 address, or be left out' })
      .optional(),
    /** IPv6 temporary addresses, one per migration away from this server whose site has AAAA. */
    tempIpPool6: z
      .array(ipOf(6, 'tempIpPool'), {
        message: 'must be a list of IPv6 addresses, e.g. [2001:db8::100, 2001:db8::101]',
      })
      .optional(),
    engine: z.enum(['userspace', 'kernel'], { message: 'must be userspace or kernel' }).optional(),
    web: z
      .enum(['builtin', 'nginx'], {
        message: 'must be builtin or nginx (how the agent serves sites: ferry agent --web)',
      })
      .default('builtin'),
    timeout: duration.optional(),
    /** Relay-host mode: migrations away from this server bring their temporary IP and redirect up on that server. */
    relayHost: z
      .string({
        message: 'must name another server declared under servers:, whose tempIpPool carries the redirects',
      })
      .optional(),
  })
  .superRefine((s, ctx) => {
    if ((s.token === undefined) === (s.tokenFile === undefined))
      ctx.addIssue({ code: 'custom', message: secretMsg('token', 'tokenFile'), path: ['token'] });
  });

const nameServer = z.strictObject({ address: ip, port: port.default(53) });

const TSIG_ALGORITHMS = ['hmac-sha256', 'hmac-sha384', 'hmac-sha512', 'hmac-sha1', 'hmac-md5'] as const;
export const base64Msg = 'must be the base64 secret as tsig-keygen or keymgr -t print it';
export const isBase64 = (v: string) => /^[A-Za-z0-9+/]+={0,2}$/.test(v.replace(/\s+/g, ''));

/** A TSIG key: the rfc2136 provider's `tsig:` and each of the embedded server's `tsigKeys:`. */
const tsigKey = z
  .strictObject(
    {
      name: domain,
      algorithm: z
        .enum(TSIG_ALGORITHMS, {
          message: 'must be hmac-sha256 (or hmac-sha384, hmac-sha512, hmac-sha1, hmac-md5)',
        })
        .default('hmac-sha256'),
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
    if ((t.secret === undefined) === (t.secretFile === undefined))
      ctx.addIssue({ code: 'custom', message: secretMsg('TSIG secret', 'secretFile'), path: ['secret'] });
  });

const aclMsg =
  'must be an address or prefix (192.0.2.10, 198.51.100.0/24, 2001:db8::/32), { key: KEY-NAME }, or { address, key } for both at once';

/** An address or prefix as an ACL takes it (xfr/acl.ts): `192.0.2.1`, `198.51.100.0/24`, `2001:db8::/32`. */
function prefixProblem(v: string): string | undefined {
  const [addr, len, ...rest] = v.split('/');
  const family = isIP(addr ?? '');
  if (family === 0 || rest.length) return `${JSON.stringify(v)} is not an address or prefix`;
  const max = family === 4 ? 32 : 128;
  if (len !== undefined && !(/^\d{1,3}$/.test(len) && Number(len) <= max))
    return `the prefix length in ${JSON.stringify(v)} must be 0-${max}`;
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
  {
    message:
      'must be a secondary to notify, { address, port } (port default 53; key: KEY-NAME to sign the NOTIFY)',
  },
);

/** Who may transfer and update a zone, and whom to notify: the dns-level default, or one zone's own. */
const zonePolicy = {
  allowTransfer: acl.optional(),
  allowUpdate: acl.optional(),
  notify: z
    .array(notifyTarget, {
      message: 'must be a list of secondaries, e.g. [{ address: 192.0.2.54, port: 53 }]',
    })
    .optional(),
};

const zoneEntry = z.preprocess(
  (v) => (typeof v === 'string' ? { file: v } : v),
  z.strictObject(
    { file: z.string({ message: 'must be the zone file path' }), origin: domain.optional(), ...zonePolicy },
    { message: 'must be a zone file path or { file, origin }' },
  ),
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
  /** SQLite file keeping the zones and every change across restarts; default zones.sqlite beside the journal (in /var/lib/ferry when the journal is in PostgreSQL). */
  db: z
    .string({ message: 'must be the path of the zone database, e.g. /var/lib/ferry/zones.sqlite' })
    .optional(),
  /** Keys that sign transfers, updates and NOTIFY; ACLs and notify targets name them. */
  tsigKeys: z
    .array(tsigKey, {
      message: 'must be a list of TSIG keys, e.g. [{ name: xfr-key., secret: "${XFR_TSIG}" }]',
    })
    .optional(),
  /** For every zone without its own: default no transfers, no updates, no NOTIFY. */
  ...zonePolicy,
  serialPolicy: z.enum(['increment', 'unixtime'], { message: 'must be increment or unixtime' }).optional(),
  /**
   * Produce a catalog zone (RFC 9432) listing every zone, for secondaries that consume catalogs.
   * Off when absent; `catalog: {}` names it catalog.ferry.invalid. Its transfer ACL and NOTIFY
   * targets default to the dns-level ones, like a zone entry's.
   */
  catalog: z
    .strictObject(
      {
        zone: domain.optional(),
        allowTransfer: zonePolicy.allowTransfer,
        notify: zonePolicy.notify,
      },
      {
        message:
          'must be { zone: NAME } (default catalog.ferry.invalid.), optionally with its own allowTransfer and notify',
      },
    )
    .optional(),
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

/** A PowerDNS Authoritative server, changed through its HTTP API (`X-API-Key`). */
const powerDns = z
  .strictObject({
    provider: z.literal('powerdns'),
    api: z
      .string({ message: 'must be the PowerDNS API URL, e.g. http://127.0.0.1:8081' })
      .refine((s) => /^https?:\/\/[^/\s]+\/?$/.test(s), {
        message:
          'must be the PowerDNS API URL with scheme, host and port only (webserver-address and webserver-port in pdns.conf), e.g. http://127.0.0.1:8081',
      }),
    // Never echoed: the message says what is wrong, not what was written.
    apiKey: z.string().min(1, { message: 'is empty; write the API key or "${ENV_VAR}"' }).optional(),
    apiKeyFile: z.string().min(1).optional(),
    server: z
      .string()
      .regex(/^[A-Za-z0-9._-]+$/, { message: 'must be the server id of the API, normally localhost' })
      .default('localhost'),
    zone: domain,
    servers: z.array(nameServer).min(1, { message: 'must list at least one name server' }).optional(),
  })
  .superRefine((d, ctx) => {
    if ((d.apiKey === undefined) === (d.apiKeyFile === undefined))
      ctx.addIssue({
        code: 'custom',
        path: ['apiKey'],
        message:
          'give the API key as apiKey: "${ENV_VAR}" or a literal, or as apiKeyFile: /path/to/file — one of the two',
      });
  });

const dns = z.discriminatedUnion('provider', [embeddedDns, rfc2136Dns, powerDns], {
  message: 'provider must be embedded, rfc2136 or powerdns',
});

/** Whether absolute `name` lies in `zone` (the zone itself or a name under it). */
function inZone(name: string, zone: string): boolean {
  const z = zone.toLowerCase().replace(/\.?$/, '.');
  return name === z || name.endsWith(`.${z}`);
}

const dbNameMsg = 'must be a database name: letters, digits, _, $ or -, at most 64, e.g. wp_shop';
const dbUserMsg = 'must be a database user name (no quotes, spaces or @host), e.g. wp_shop';
const dbHostMsg = 'must be the database host as the application writes it, e.g. localhost or db.example:3306';

const site = z.strictObject({
  domain,
  server: z.string({ message: 'must name a server declared under servers:' }),
  ports: z
    .array(port, { message: 'must be a list of ports, the HTTP port first, e.g. [80, 443]' })
    .min(1, { message: 'must list at least the HTTP port' })
    .default([80]),
  kind: z
    .enum(['builtin', 'nginx', 'web'], {
      message:
        "must be builtin or nginx (the agent's own app, as the server's web: says) or web (a site of the server's own nginx or Apache)",
    })
    .optional(),
  /** A web site's overrides, for layouts the agent cannot read. */
  web: z
    .strictObject(
      {
        declaredRoots: z
          .array(absPath, { message: 'must be a list of absolute folders, e.g. [/var/www, /home]' })
          .min(1, { message: 'must list at least one folder, or be left out' })
          .optional(),
        dataDir: absPath.optional(),
      },
      { message: 'must be { declaredRoots, dataDir }' },
    )
    .optional(),
  /**
   * A web site's other names that move with it (besides those planning finds: the web server's
   * names and the mail exchangers whose A record is the origin's), e.g. [ftp.shop.example].
   */
  names: z
    .array(domain, { message: 'must be a list of domain names, e.g. [ftp.shop.example]' })
    .min(1, { message: 'must list at least one name, or be left out' })
    .optional(),
  /** `false`: the domain's mail stays on the origin (default: it moves with the web site). */
  mail: z
    .boolean({ message: 'must be false to leave the mail on the origin, or be left out (it moves)' })
    .optional(),
  /**
   * A web site's databases, when its application's config cannot be read (no password: the
   * accounts are copied as the origin's MariaDB stores them).
   */
  databases: z
    .array(
      z.strictObject(
        {
          name: z.string({ message: dbNameMsg }).regex(/^[A-Za-z0-9_$-]{1,64}$/, { message: dbNameMsg }),
          users: z
            .array(z.string({ message: dbUserMsg }).regex(/^[^\s'"`\\@]{1,80}$/, { message: dbUserMsg }), {
              message: 'must be a list of database user names, e.g. [wp_shop]',
            })
            .min(1, { message: 'must list at least one user, or be left out' })
            .optional(),
          host: z
            .string({ message: dbHostMsg })
            .regex(/^[^\s'"`\\]{1,255}$/, { message: dbHostMsg })
            .optional(),
          engine: z.enum(['mariadb', 'postgresql'], { message: 'must be mariadb or postgresql' }).optional(),
        },
        {
          message:
            'must be { name, users?, host?, engine? } (no password: the accounts are copied as MariaDB stores them)',
        },
      ),
      { message: 'must be a list of { name, users?, host?, engine? }' },
    )
    .min(1, { message: 'must list at least one database, or be left out' })
    .optional(),
  /** How the cut-over waits for a web site's databases to catch up, and tries again. */
  database: z
    .strictObject(
      {
        catchUpTimeoutMs: duration.optional(),
        catchUpAttempts: z
          .number({ message: 'must be a whole number of attempts, 1 or more' })
          .int({ message: 'must be a whole number of attempts, 1 or more' })
          .min(1, { message: 'must be a whole number of attempts, 1 or more' })
          .max(100, { message: 'must be at most 100' })
          .optional(),
        retryDelayMs: duration.optional(),
        lagWaitMs: duration.optional(),
        copyInHoldMaxBytes: size.optional(),
      },
      {
        message: 'must be { catchUpTimeoutMs, catchUpAttempts, retryDelayMs, lagWaitMs, copyInHoldMaxBytes }',
      },
    )
    .optional(),
  /** Preflight parity checks of the site (default: the built-in app's, or GET / for a web site). */
  parity: z
    .strictObject(
      {
        http: z
          .array(
            z.strictObject(
              {
                path: z.string().regex(/^\//, { message: 'must start with /' }),
                body: z.boolean().optional(),
                port: port.optional(),
                tls: z.boolean().optional(),
              },
              { message: 'must be { path, body?, port?, tls? }' },
            ),
            { message: 'must be a list of { path, body?, port?, tls? }' },
          )
          .min(1, { message: 'must list at least one check, or be left out' })
          .optional(),
        tlsPorts: z.array(port).optional(),
        tlsFingerprint: z.boolean().optional(),
      },
      { message: 'must be { http, tlsPorts, tlsFingerprint }' },
    )
    .optional(),
});

/** How migrations treat what they leave behind. */
const migration = z
  .strictObject({
    backupKeepDays: z
      .number({ message: 'must be a number of days, e.g. 7' })
      .min(0, { message: 'must be 0 or more days' })
      .max(3650, { message: 'must be at most 3650 days' })
      .optional(),
  })
  .default({});

const defaults = z
  .strictObject({
    ttl: z
      .number({ message: 'must be a TTL in seconds, e.g. 30' })
      .int()
      .min(1, { message: 'must be at least 1 second' })
      .max(86400)
      .optional(),
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
    if (prior !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['dns', 'tsigKeys', i, 'name'],
        message: `${k.name} is declared twice (also dns.tsigKeys[${prior}])`,
      });
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
  const policy = (
    p: {
      allowTransfer?: Array<{ key?: string | undefined }>;
      allowUpdate?: Array<{ key?: string | undefined }>;
      notify?: Array<{ key?: string | undefined }>;
    },
    at: PropertyKey[],
  ) => {
    for (const list of ['allowTransfer', 'allowUpdate', 'notify'] as const)
      (p[list] ?? []).forEach((e, i) => check(e.key, [...at, list, i, 'key']));
  };
  policy(d, ['dns']);
  d.zones.forEach((z, i) => policy(z, ['dns', 'zones', i]));
  if (d.catalog) policy(d.catalog, ['dns', 'catalog']);
}

/** True for a `postgres://` or `postgresql://` URL (the journal on PostgreSQL). */
export function isPostgresUrl(s: string): boolean {
  return /^postgres(ql)?:\/\//i.test(s);
}

// Never echoed: it may hold the password.
const postgresUrl = z.string().refine((s) => isPostgresUrl(s) && URL.canParse(s), {
  message: 'must be a PostgreSQL URL, e.g. postgres://ferry@db.example:5432/ferry',
});

/** Where the journal is: a SQLite file (the default) or PostgreSQL, shared by several controllers. */
export type JournalConfig =
  | { kind: 'sqlite'; path: string }
  | {
      kind: 'postgres';
      /** As written (may hold a password: log it only through `redactPostgresUrl`). */
      url: string;
      /** From `passwordFile`; else the URL's, else `PGPASSWORD`. */
      password?: string;
      /** Give up connecting at start after this long (default: retry until stopped). */
      giveUpAfterMs?: number;
    };

/** Several controllers on one PostgreSQL journal: this one's place in the leader lease (leader.ts). */
const leader = z.strictObject({
  /** This controller's id among those of the database; default `<hostname>-<pid>`. */
  id: z
    .string()
    .regex(/^[A-Za-z0-9._:@-]{1,128}$/, { message: 'must be 1-128 letters, digits or . _ : @ -' })
    .optional(),
  /** Lease time (default 6s: another controller takes over within about 8 s of this one's death). */
  ttl: duration
    .refine((ms) => ms >= 300 && ms <= 600_000, { message: 'must be between 300ms and 10m' })
    .optional(),
  /** This controller's API URL as the others reach it (they forward writes there); default from api.listen. */
  advertise: z
    .string()
    .refine(
      (u) => {
        try {
          return ['http:', 'https:'].includes(new URL(u).protocol);
        } catch {
          return false;
        }
      },
      { message: 'must be an http(s) URL, e.g. http://10.0.0.5:7300' },
    )
    .optional(),
});

/** True when the journal value names PostgreSQL (a URL, or an object with `postgres`). */
export function isPostgresJournal(j: unknown): boolean {
  if (typeof j === 'string') return isPostgresUrl(j);
  return typeof j === 'object' && j !== null && 'postgres' in j;
}

/** The whole of ferry.yaml. */
export const configSchema = z
  .strictObject({
    journal: z
      .union(
        [
          z.string().min(1),
          z.strictObject({
            postgres: postgresUrl,
            passwordFile: z.string().min(1).optional(),
            giveUpAfterSeconds: z.number().positive().optional(),
          }),
        ],
        {
          message:
            'must be the path of the journal database (/var/lib/ferry/journal.sqlite), a PostgreSQL URL (postgres://ferry@db.example:5432/ferry) or { postgres: URL, passwordFile, giveUpAfterSeconds }',
        },
      )
      .default('/var/lib/ferry/journal.sqlite'),
    servers: z.record(
      z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, {
        message: "server names are 1-64 letters, digits, '.', '_' or '-'",
      }),
      server,
      {
        message: 'must map server names to { agent, token, sharedIps, tempIpPool, sharedIps6, tempIpPool6 }',
      },
    ),
    dns,
    sites: z.array(site, { message: 'must be a list of { domain, server, ports }' }).default([]),
    defaults,
    migration,
    /** The control API's settings; validated by the API itself (src/api). */
    api: z.looseObject({}).optional(),
    leader: leader.optional(),
  })
  .superRefine((c, ctx) => {
    if (c.leader && !isPostgresJournal(c.journal))
      ctx.addIssue({
        code: 'custom',
        path: ['leader'],
        message:
          "the leader lease lives in the journal's PostgreSQL: set journal: postgres://… (several controllers need it), or remove leader",
      });
    const names = Object.keys(c.servers);
    if (names.length === 0)
      ctx.addIssue({ code: 'custom', path: ['servers'], message: 'must declare at least one server' });
    const owner = new Map<string, string>();
    for (const [name, s] of Object.entries(c.servers)) {
      const six = (l: string[] | undefined) => (l ?? []).map(canonicalIp6);
      const lists = [
        ['sharedIps', s.sharedIps],
        ['tempIpPool', s.tempIpPool],
        ['sharedIps6', six(s.sharedIps6)],
        ['tempIpPool6', six(s.tempIpPool6)],
      ] as const;
      for (const [key, list] of lists) {
        // IPv6 compared canonical: 2001:DB8::1 and 2001:db8:0::1 are one address.
        list.forEach((a, i) => {
          const prior = owner.get(a);
          if (prior)
            ctx.addIssue({
              code: 'custom',
              path: ['servers', name, key, i],
              message: `${a} is already used by ${prior}; each address belongs to one server and one role`,
            });
          else owner.set(a, `servers.${name}.${key}`);
        });
      }
      if (s.relayHost !== undefined) {
        const relay = c.servers[s.relayHost];
        const path = ['servers', name, 'relayHost'];
        if (s.relayHost === name)
          ctx.addIssue({
            code: 'custom',
            path,
            message: 'names this server itself; leave relayHost out for its own temporary IPs',
          });
        else if (!relay)
          ctx.addIssue({
            code: 'custom',
            path,
            message: `"${s.relayHost}" is not declared under servers:; write one of ${names.filter((n) => n !== name).join(', ') || '(none)'}`,
          });
        else if (relay.tempIpPool.length === 0)
          ctx.addIssue({
            code: 'custom',
            path,
            message: `server ${s.relayHost} has no tempIpPool; the relay host's pool holds the temporary IPs`,
          });
      }
    }
    if (c.dns.provider === 'embedded') checkDnsKeys(c.dns, ctx);
    const seen = new Map<string, number>();
    c.sites.forEach((s, i) => {
      const d = s.domain.toLowerCase().replace(/\.$/, '');
      if (seen.has(d))
        ctx.addIssue({
          code: 'custom',
          path: ['sites', i, 'domain'],
          message: `${d} is declared twice (also sites[${seen.get(d)}])`,
        });
      seen.set(d, i);
      const srv = c.servers[s.server];
      if (!srv) {
        ctx.addIssue({
          code: 'custom',
          path: ['sites', i, 'server'],
          message: `"${s.server}" is not declared under servers:; write one of ${names.join(', ') || '(none)'}`,
        });
      } else if (s.kind && s.kind !== 'web' && s.kind !== srv.web) {
        ctx.addIssue({
          code: 'custom',
          path: ['sites', i, 'kind'],
          message: `is ${s.kind} but server ${s.server} serves sites with ${srv.web}; set servers.${s.server}.web or drop kind`,
        });
      }
      for (const key of ['web', 'databases', 'database', 'names', 'mail'] as const)
        if (s[key] !== undefined && s.kind !== 'web')
          ctx.addIssue({
            code: 'custom',
            path: ['sites', i, key],
            message: "is for web sites only; add kind: web (a site of the server's own nginx or Apache)",
          });
      const siteNames = new Set<string>([`${d}.`]);
      s.names?.forEach((n, j) => {
        const k = n.toLowerCase().replace(/\.?$/, '.');
        if (siteNames.has(k))
          ctx.addIssue({
            code: 'custom',
            path: ['sites', i, 'names', j],
            message:
              k === `${d}.`
                ? "is the site's domain itself; list only its other names"
                : `${n} is listed twice`,
          });
        else if (c.dns.provider === 'rfc2136' && !inZone(k, c.dns.zone))
          ctx.addIssue({
            code: 'custom',
            path: ['sites', i, 'names', j],
            message: `${n} is outside the zone ${c.dns.zone}; Ferry can move only names of its zone`,
          });
        siteNames.add(k);
      });
      const dbNames = new Set<string>();
      s.databases?.forEach((d, j) => {
        if (dbNames.has(d.name))
          ctx.addIssue({
            code: 'custom',
            path: ['sites', i, 'databases', j, 'name'],
            message: `${d.name} is declared twice`,
          });
        dbNames.add(d.name);
      });
    });
  });

/** A config as the schema outputs it, before secrets are read and paths resolved. */
export type RawConfig = z.output<typeof configSchema>;

// The validated config.

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
  /** Relay-host mode: the server whose temporary IPs carry the redirects of migrations away from this one. */
  relayHost?: string;
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
      /** The catalog zone (RFC 9432) to produce; its own policy keys override the dns-level ones. */
      catalog?: { zone: string } & Omit<DnsPolicyConfig, 'allowUpdate'>;
    } & DnsPolicyConfig)
  | {
      provider: 'rfc2136';
      server: { address: string; port: number };
      zone: string;
      tsig?: TsigKeySecret;
      nameServers?: Array<{ address: string; port: number }>;
    }
  | {
      provider: 'powerdns';
      /** Base URL of PowerDNS's HTTP API. */
      api: string;
      /** From the config or its file. Never logged, never in `describeConfig`. */
      apiKey: string;
      /** The API's server id (`localhost`). */
      server: string;
      zone: string;
      /** The zone's name servers for the propagation check (default: its NS records, port 53). */
      nameServers?: Array<{ address: string; port: number }>;
    };

export interface SiteConfig {
  domain: string;
  server: string;
  ports: number[];
  /** `builtin`/`nginx`: the agent's own app (served as the server's `web` says); `web`: the server's own web server. */
  kind: 'builtin' | 'nginx' | 'web';
  /** A web site's overrides. */
  web?: { declaredRoots?: string[]; dataDir?: string };
  /** A web site's declared databases (else its agent reads them from the application's config). */
  databases?: DatabaseDeclaration[];
  /** The bounds of a web site's database catch-up at the cut-over. */
  database?: Partial<DatabaseOptions>;
  /** Preflight parity checks, when the default ones do not fit the site. */
  parity?: ParityChecks;
  /** A web site's other names that move with it (absolute), besides those planning finds. */
  names?: string[];
  /** `false`: the domain's mail stays on the origin. */
  mail?: false;
}

export interface FerryConfig {
  /** The file it came from (relative paths in it are resolved against its folder). */
  file: string;
  journal: JournalConfig;
  servers: ServerConfig[];
  dns: DnsConfig;
  sites: SiteConfig[];
  defaults: {
    ttl?: number;
    quietWindowMs?: number;
    dnsTempCapMs?: number;
    drainCapMs?: number;
    cutoverDrainTimeoutMs?: number;
    pollMs?: number;
  };
  migration: {
    /** How long an origin keeps its backup of a moved web site (`migration.backupKeepDays`). */
    backupKeepMs: number;
  };
  api?: Record<string, unknown>;
  /** Only with a PostgreSQL journal (where the lease always runs): this controller's id, lease time, API URL. */
  leader?: { id?: string; ttlMs?: number; advertise?: string };
}

/** The policy keys a dns block or zone entry sets, and only those (an absent key is inherited or refused). */
export function policyOf(p: {
  allowTransfer?: AclEntryConfig[] | undefined;
  allowUpdate?: AclEntryConfig[] | undefined;
  notify?: DnsPolicyConfig['notify'] | undefined;
}): DnsPolicyConfig {
  const entries = (l: AclEntryConfig[]) =>
    l.map((e) => ({
      ...(e.address !== undefined ? { address: e.address } : {}),
      ...(e.key !== undefined ? { key: e.key } : {}),
    }));
  return {
    ...(p.allowTransfer ? { allowTransfer: entries(p.allowTransfer) } : {}),
    ...(p.allowUpdate ? { allowUpdate: entries(p.allowUpdate) } : {}),
    ...(p.notify
      ? {
          notify: p.notify.map((n) => ({
            address: n.address,
            port: n.port,
            ...(n.key !== undefined ? { key: n.key } : {}),
          })),
        }
      : {}),
  };
}
