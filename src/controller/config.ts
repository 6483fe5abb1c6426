/**
 * Loading `ferry.yaml`: `${VAR}` replaced from the environment, every key checked against the
 * schema (config-schema.ts) with all problems reported at once, each with the path of the key and
 * what to write instead (unknown keys get a "did you mean" from the schema's own keys), then secret
 * files read and relative paths resolved against the file's folder.
 *
 * Secrets (agent tokens, TSIG keys) may be written inline, as `${ENV_VAR}`, or read from a file
 * (`tokenFile`, `secretFile`). They are kept out of `describeConfig` and never logged.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import type { ParityChecks } from '../migration/index.js';
import { FerryError } from '../common/errors.js';
import { DEFAULT_CATALOG_ZONE } from '../dns/index.js';
import {
  base64Msg,
  canonicalIp6,
  configSchema,
  isBase64,
  policyOf,
  isPostgresUrl,
  type DnsConfig,
  type JournalConfig,
  type FerryConfig,
  type RawConfig,
  type ServerConfig,
  type TsigKeySecret,
} from './config-schema.js';

/** Every key a schema (or any schema inside it) declares. */
function schemaKeys(schema: z.core.$ZodType, into = new Set<string>()): Set<string> {
  const def = schema._zod.def as unknown as { type: string; [k: string]: unknown };
  const inner: unknown[] = [];
  if (def.type === 'object') {
    for (const [key, value] of Object.entries(def.shape as Record<string, unknown>)) {
      into.add(key);
      inner.push(value);
    }
  } else if (def.type === 'array') inner.push(def.element);
  else if (def.type === 'record') inner.push(def.valueType);
  else if (def.type === 'union') inner.push(...(def.options as unknown[]));
  else if (def.type === 'pipe') inner.push(def.in, def.out);
  else if (def.innerType) inner.push(def.innerType); // optional, default, nullable, ...
  for (const s of inner) schemaKeys(s as z.core.$ZodType, into);
  return into;
}

/** Every key the schema knows, for "did you mean" hints on unknown keys. */
const KNOWN_KEYS = [...schemaKeys(configSchema)];

function editDistance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  const d = Array.from({ length: x.length + 1 }, (_, i) => [i, ...Array<number>(y.length).fill(0)]);
  for (let j = 1; j <= y.length; j++) d[0]![j] = j;
  for (let i = 1; i <= x.length; i++) {
    for (let j = 1; j <= y.length; j++) {
      d[i]![j] = Math.min(
        d[i - 1]![j]! + 1,
        d[i]![j - 1]! + 1,
        d[i - 1]![j - 1]! + (x[i - 1] === y[j - 1] ? 0 : 1),
      );
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
      for (const k of i.keys)
        lines.push(
          `${pathText([...i.path, k])}: unknown key${
            k === 'password' && i.path.includes('databases')
              ? "; a declared database has no password (its accounts are copied as the origin's MariaDB stores them)"
              : suggest(k)
          }`,
        );
    } else if (i.code === 'invalid_union' && 'note' in i && i.note === 'No matching discriminator') {
      const p = i.path[i.path.length - 1] === 'provider' ? i.path : [...i.path, 'provider'];
      lines.push(`${pathText(p)}: must be embedded, rfc2136 or powerdns`);
    } else if (
      i.code === 'invalid_type' &&
      i.message.startsWith('Invalid input: expected') &&
      /received undefined/.test(i.message)
    ) {
      lines.push(`${pathText(i.path)}: is required`);
    } else {
      lines.push(`${pathText(i.path)}: ${i.message}`);
    }
  }
  return [...new Set(lines)];
}

/** Replace `${NAME}` in every string with the environment's value; missing ones are problems. */
function substituteEnv(
  value: unknown,
  env: NodeJS.ProcessEnv,
  path: PropertyKey[],
  problems: string[],
): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (whole, name: string) => {
      const v = env[name];
      if (v === undefined) {
        problems.push(
          `${pathText(path)}: environment variable ${name} is not set; export it before starting ferry, or write the value in a file and use a ...File key`,
        );
        return whole; // kept, so that the one missing variable is the one problem reported
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, [...path, i], problems));
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, substituteEnv(v, env, [...path, k], problems)]),
    );
  }
  return value;
}

export interface LoadConfigOptions {
  env?: NodeJS.ProcessEnv;
  /** Read token and secret files (default true); `ferry config check --no-files` skips it. */
  readSecretFiles?: boolean;
}

/**
 * The document in `text`. YAML 1.2 is a superset of JSON, so a config written as one JSON
 * document (as tools generate a big fleet's) is read by JSON.parse: the YAML parser's document
 * model of a 100,000-site config peaks at several hundred megabytes, JSON.parse at a fraction.
 * A repeated key is then not reported (the last one counts), as JSON.parse does; anything that is
 * not JSON is read as YAML, whose errors name the line.
 */
function parseText(text: string, file: string): unknown {
  if (/^\s*\{/.test(text)) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      // Not JSON after all (YAML flow style, or a mistake): the YAML parser says where.
    }
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    throw new FerryError(
      'CONFIG_INVALID',
      `${file} is not valid YAML:\n${doc.errors.map((e) => `  ${e.message.split('\n')[0]}`).join('\n')}`,
    );
  }
  return doc.toJS() as unknown;
}

/** Parse and validate YAML text; throws CONFIG_INVALID listing every problem. */
export async function parseConfig(
  text: string,
  file: string,
  opts: LoadConfigOptions = {},
): Promise<FerryConfig> {
  const raw = parseText(text, file);
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new FerryError(
      'CONFIG_INVALID',
      `${file}: the top level must be a mapping with servers:, dns: and sites:`,
    );
  }
  const problems: string[] = [];
  const substituted = substituteEnv(raw, opts.env ?? process.env, [], problems);
  const parsed = configSchema.safeParse(substituted);
  if (!parsed.success) problems.push(...issueLines(parsed.error));
  if (problems.length || !parsed.success) {
    throw new FerryError(
      'CONFIG_INVALID',
      `${file} has ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  ${p}`).join('\n')}`,
    );
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

async function resolveConfig(
  c: RawConfig,
  file: string,
  opts: LoadConfigOptions,
  problems: string[],
): Promise<FerryConfig> {
  const base = dirname(resolve(file));
  const abs = (p: string) => resolve(base, p);
  const readSecret = async (path: string, where: string): Promise<string> => {
    if (opts.readSecretFiles === false) return '<from file>';
    try {
      const v = (await readFile(abs(path), 'utf8')).trim();
      if (!v) problems.push(`${where}: ${abs(path)} is empty`);
      return v;
    } catch (err) {
      problems.push(
        `${where}: cannot read ${abs(path)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      );
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
      ...(s.relayHost !== undefined ? { relayHost: s.relayHost } : {}),
    });
  }
  /** A TSIG key with its secret, from the config or its file (checked to be base64, never echoed). */
  const keySecret = async (
    t: { name: string; algorithm: string; secret?: string | undefined; secretFile?: string | undefined },
    where: string,
  ): Promise<TsigKeySecret> => {
    let secret = t.secret;
    if (secret === undefined) {
      secret = await readSecret(t.secretFile!, `${where}.secretFile`);
      if (secret && opts.readSecretFiles !== false && !isBase64(secret))
        problems.push(
          `${where}.secretFile: ${abs(t.secretFile!)} ${base64Msg.replace('must be', 'must hold')}`,
        );
    }
    return { name: t.name, algorithm: t.algorithm, secret };
  };
  const j = c.journal;
  const pgUrl = typeof j === 'string' ? (isPostgresUrl(j) ? j : undefined) : j.postgres;
  if (pgUrl !== undefined && !URL.canParse(pgUrl))
    problems.push('journal: must be a PostgreSQL URL, e.g. postgres://ferry@db.example:5432/ferry');
  const journal: JournalConfig =
    pgUrl === undefined
      ? { kind: 'sqlite', path: abs(j as string) }
      : {
          kind: 'postgres',
          url: pgUrl,
          ...(typeof j === 'object' && j.passwordFile
            ? { password: await readSecret(j.passwordFile, 'journal.passwordFile') }
            : {}),
          ...(typeof j === 'object' && j.giveUpAfterSeconds !== undefined
            ? { giveUpAfterMs: j.giveUpAfterSeconds * 1000 }
            : {}),
        };
  let dnsCfg: DnsConfig;
  if (c.dns.provider === 'embedded') {
    const d = c.dns;
    const tsigKeys: TsigKeySecret[] = [];
    for (const [i, k] of (d.tsigKeys ?? []).entries())
      tsigKeys.push(await keySecret(k, `dns.tsigKeys[${i}]`));
    dnsCfg = {
      provider: 'embedded',
      listen: d.listen,
      zones: d.zones.map((z) => ({
        file: abs(z.file),
        ...(z.origin ? { origin: z.origin } : {}),
        ...policyOf(z),
      })),
      ...(d.nameServers ? { nameServers: d.nameServers } : {}),
      db: d.db
        ? abs(d.db)
        : join(journal.kind === 'sqlite' ? dirname(journal.path) : '/var/lib/ferry', 'zones.sqlite'),
      ...(d.tsigKeys ? { tsigKeys } : {}),
      ...policyOf(d),
      ...(d.serialPolicy ? { serialPolicy: d.serialPolicy } : {}),
      ...(d.workers !== undefined ? { workers: d.workers } : {}),
      ...(d.catalog
        ? { catalog: { zone: d.catalog.zone ?? DEFAULT_CATALOG_ZONE, ...policyOf(d.catalog) } }
        : {}),
    };
  } else if (c.dns.provider === 'powerdns') {
    const d = c.dns;
    dnsCfg = {
      provider: 'powerdns',
      api: d.api.replace(/\/$/, ''),
      apiKey: d.apiKey ?? (await readSecret(d.apiKeyFile!, 'dns.apiKeyFile')),
      server: d.server,
      zone: d.zone,
      ...(d.servers ? { nameServers: d.servers } : {}),
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
    throw new FerryError(
      'CONFIG_INVALID',
      `${file} has ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  ${p}`).join('\n')}`,
    );
  }
  const webOf = new Map(servers.map((s) => [s.id, s.web]));
  const d = c.defaults;
  return {
    file,
    journal,
    servers,
    dns: dnsCfg,
    sites: c.sites.map((s) => ({
      domain: s.domain,
      server: s.server,
      ports: s.ports,
      kind: s.kind ?? webOf.get(s.server)!,
      ...(s.parity ? { parity: s.parity as ParityChecks } : {}),
      ...(s.web
        ? {
            web: {
              ...(s.web.declaredRoots ? { declaredRoots: s.web.declaredRoots } : {}),
              ...(s.web.dataDir ? { dataDir: s.web.dataDir } : {}),
            },
          }
        : {}),
      ...(s.names ? { names: s.names.map((n) => n.toLowerCase().replace(/\.?$/, '.')) } : {}),
      ...(s.mail === false ? { mail: false as const } : {}),
      ...(s.databases
        ? {
            databases: s.databases.map((d) => ({
              name: d.name,
              ...(d.users ? { users: d.users } : {}),
              ...(d.host ? { host: d.host } : {}),
              ...(d.engine ? { engine: d.engine } : {}),
            })),
          }
        : {}),
      ...(s.database
        ? {
            database: {
              ...(s.database.catchUpTimeoutMs !== undefined
                ? { catchUpTimeoutMs: s.database.catchUpTimeoutMs }
                : {}),
              ...(s.database.catchUpAttempts !== undefined
                ? { catchUpAttempts: s.database.catchUpAttempts }
                : {}),
              ...(s.database.retryDelayMs !== undefined ? { retryDelayMs: s.database.retryDelayMs } : {}),
              ...(s.database.lagWaitMs !== undefined ? { lagWaitMs: s.database.lagWaitMs } : {}),
              ...(s.database.copyInHoldMaxBytes !== undefined
                ? { copyInHoldMaxBytes: s.database.copyInHoldMaxBytes }
                : {}),
            },
          }
        : {}),
    })),
    defaults: {
      ...(d.ttl !== undefined ? { ttl: d.ttl } : {}),
      ...(d.quietWindow !== undefined ? { quietWindowMs: d.quietWindow } : {}),
      ...(d.dnsTempCap !== undefined ? { dnsTempCapMs: d.dnsTempCap } : {}),
      ...(d.drainCap !== undefined ? { drainCapMs: d.drainCap } : {}),
      ...(d.cutoverDrainTimeout !== undefined ? { cutoverDrainTimeoutMs: d.cutoverDrainTimeout } : {}),
      ...(d.poll !== undefined ? { pollMs: d.poll } : {}),
    },
    migration: {
      backupKeepMs: Math.round((c.migration.backupKeepDays ?? 7) * 24 * 3600 * 1000),
    },
    ...(c.api ? { api: c.api } : {}),
    ...(c.leader
      ? {
          leader: {
            ...(c.leader.id !== undefined ? { id: c.leader.id } : {}),
            ...(c.leader.ttl !== undefined ? { ttlMs: c.leader.ttl } : {}),
            ...(c.leader.advertise !== undefined ? { advertise: c.leader.advertise } : {}),
          },
        }
      : {}),
  };
}
