/**
 * The `api:` section of the controller's config (ferry.yaml), turned into `startApi` options.
 * Tokens are written inline, as `${ENV_VAR}`, or read from a file (`tokenFile`); they are never
 * logged. Durations are milliseconds or strings with a unit (`500ms`, `15s`, `1m`).
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { z } from 'zod';
import { FerryError } from '../common/errors.js';
import type { ApiOptions } from './server.js';

const duration = z.union([
  z.number().int().min(0),
  z.string().regex(/^\d+(ms|s|m|h)$/, { message: 'must be a duration, e.g. 500ms, 15s or 1m' }),
]);
const ms = (v: number | string): number => {
  if (typeof v === 'number') return v;
  const m = /^(\d+)(ms|s|m|h)$/.exec(v)!;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
};

const tokenEntry = z
  .strictObject({
    name: z.string().min(1).max(64).optional(),
    scope: z.enum(['read', 'operator'], { message: 'must be read or operator' }),
    token: z.string().min(1).optional(),
    tokenFile: z.string().min(1).optional(),
  })
  .refine((t) => (t.token === undefined) !== (t.tokenFile === undefined), {
    message: 'give the token as token: "${ENV_VAR}" or as tokenFile: /path — one of the two',
  });

/** The schema of `api:`, with defaults. */
export const apiConfigSchema = z.strictObject({
  listen: z
    .strictObject({
      address: z
        .string()
        .refine((s) => isIP(s) !== 0, { message: 'must be an IP address literal, e.g. 127.0.0.1' })
        .default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(7300),
    })
    .default({ address: '127.0.0.1', port: 7300 }),
  tokens: z.array(tokenEntry).min(1, {
    message: 'must list at least one token: [{ name, scope: operator, token: "${FERRY_TOKEN}" }]',
  }),
  rateLimitPerMinute: z.number().int().min(0).default(600),
  writeRateLimitPerMinute: z.number().int().min(1).default(30),
  sse: z
    .strictObject({
      maxSubscribers: z.number().int().min(1).default(100),
      heartbeat: duration.default('15s'),
    })
    .default({ maxSubscribers: 100, heartbeat: '15s' }),
  sampleInterval: duration.default('1s'),
  metrics: z.boolean().default(true),
  dashboard: z.boolean().default(true),
});

export type ApiConfig = z.input<typeof apiConfigSchema>;

/** Validate an `api:` section and resolve its secrets; `baseDir` anchors relative token files. */
export function apiOptionsFromConfig(
  raw: unknown,
  opts: { baseDir?: string; env?: NodeJS.ProcessEnv } = {},
): ApiOptions & { host: string; port: number } {
  const parsed = apiConfigSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `api.${i.path.join('.')}: ${i.message}`);
    throw new FerryError('CONFIG_INVALID', `bad api section: ${problems.join('; ')}`);
  }
  const c = parsed.data;
  const env = opts.env ?? process.env;
  const tokens = c.tokens.map((t, i) => {
    const name = t.name ?? `token-${i + 1}`;
    let token: string;
    if (t.tokenFile !== undefined) {
      try {
        token = readFileSync(resolve(opts.baseDir ?? '.', t.tokenFile), 'utf8').trim();
      } catch (err) {
        throw new FerryError('CONFIG_INVALID', `api.tokens.${i}.tokenFile: cannot read ${t.tokenFile}`, {
          cause: err,
        });
      }
    } else {
      const m = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(t.token!);
      token = m ? (env[m[1]!] ?? '') : t.token!;
      if (m && !token)
        throw new FerryError(
          'CONFIG_INVALID',
          `api.tokens.${i}.token: the environment variable ${m[1]} is not set`,
        );
    }
    return { name, scope: t.scope, token };
  });
  return {
    host: c.listen.address,
    port: c.listen.port,
    tokens,
    rateLimitPerMinute: c.rateLimitPerMinute,
    writeRateLimitPerMinute: c.writeRateLimitPerMinute,
    sse: { maxSubscribers: c.sse.maxSubscribers, heartbeatMs: ms(c.sse.heartbeat) },
    sampleIntervalMs: ms(c.sampleInterval),
    metrics: c.metrics,
    dashboard: c.dashboard,
  };
}
