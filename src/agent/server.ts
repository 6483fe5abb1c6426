/**
 * `ferry agent`'s HTTP API: the host agent's core (`HostAgent`) on fastify, JSON in and out.
 *
 * Every route needs `Authorization: Bearer <token>` (401 otherwise, compared in constant time);
 * TLS is on when a certificate and key are given. Bodies and parameters are validated with zod:
 * a bad request gets 400 and a message naming the field and what to send instead. Errors
 * answer `{ "error": { "code", "message" } }` with a stable code. Every operation is idempotent,
 * so the controller retries any of them after a timeout or a lost connection.
 *
 * A command may carry the leading controller's fencing token (`x-ferry-fence`, fence.ts): one
 * older than the newest seen is refused with FENCED (409) before it acts.
 *
 * Routes (all under /v1):
 *   GET    /info
 *   GET    /addresses                      PUT|DELETE /addresses/:address
 *   GET    /redirects                      PUT|GET|DELETE /redirects/:id
 *   PUT    /redirects/:id/upstream         POST /redirects/:id/hold, /redirects/:id/release
 *   GET    /sites                          PUT|GET|DELETE /sites/:domain
 *   PUT    /sites/:domain/mode             GET /sites/:domain/stats
 *   POST   /sites/:domain/wait-idle        POST /sites/:domain/reload
 *   POST   /sites/:domain/probe            POST /sites/:domain/push
 *   PUT|DELETE /sync-receivers/:domain     GET /sync-jobs/:id
 *   GET    /web-sites                      (the server's own nginx or Apache sites, read-only)
 *   GET    /web-sites/:domain              GET /web-sites/:domain/bundle (holds private keys)
 *   POST   /web-sites/:domain/check        (whether this server can host the site's needs; reads only)
 *   POST   /web-sites/:domain/gate         POST /web-sites/:domain/ungate
 *   PUT|DELETE /web-sites/:domain/install  POST /web-sites/:domain/finish
 *   POST   /databases/:domain/plan         POST /databases/:domain/check (reads only)
 *   PUT|DELETE /database-migrations/:id/source (PUT answers the replication password)
 *   PUT|DELETE /database-migrations/:id/copy   GET /database-migrations/:id/lag
 *   POST   /database-migrations/:id/freeze, /thaw, /take-over
 *   PUT    /database-migrations/:id/channel (a rollback's reverse channel)
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { FerryError } from '../common/errors.js';
import { clientErrorAnswer, errorAnswer, toApiError } from '../common/http-errors.js';
import type { HostAgent } from './agent.js';
import { FENCE_HEADER, FenceKeeper, parseFenceToken } from './fence.js';
import type { WebSiteBundle } from './webstack/index.js';
import type { DatabaseSource } from '../migration/ports.js';

export interface AgentServerOptions {
  /** The bearer token every request must carry. At least 16 characters. */
  token: string;
  /** PEM certificate and key files; both or neither. */
  tls?: { certFile: string; keyFile: string };
  /** Request log; tokens and bodies never reach it (method, URL, status only). */
  logger?: Logger;
  /** The highest fencing token seen (`startAgent`: kept in the data folder); default in memory. */
  fence?: FenceKeeper;
}

const ip = z
  .string()
  .refine((s) => isIP(s) !== 0, { message: 'must be an IPv4 or IPv6 address literal, e.g. "192.0.2.10"' });
const port = z.number({ message: 'must be a port number 1-65535' }).int().min(1).max(65535);
const domain = z
  .string()
  .regex(
    /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/,
    {
      message: 'must be a domain name, e.g. "shop.example"',
    },
  );
const mode = z.union(
  [
    z.enum(['serve', 'readonly', 'hold']),
    z.object({ proxy: z.object({ address: ip, port, localAddress: ip.optional() }).strict() }).strict(),
  ],
  { message: 'must be "serve", "readonly", "hold" or {"proxy": {"address": "<IP>", "port": <1-65535>}}' },
);
const engine = z.enum(['userspace', 'kernel'], { message: 'must be "userspace" or "kernel"' });

const absPath = z
  .string()
  .regex(/^\/(?!.*(?:^|\/)\.\.(?:\/|$))[^\0]*$/, { message: 'must be an absolute path without ".."' });
const sysName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/, { message: 'must be a system user or group name' });
const id = z.number().int().min(0).max(4_294_967_294);
/** One line of a mail map or passwd-file (no line break). */
const mapLine = z.string().regex(/^[^\r\n\0]{1,8192}$/, { message: 'must be one line' });
/** A site bundle: its parts are checked here, the parsed site is the origin agent's own description. */
const bundle = z
  .object({
    domain,
    server: z.enum(['nginx', 'apache']),
    site: z
      .object({
        server: z.enum(['nginx', 'apache']),
        names: z.array(z.string()),
        listens: z.array(
          z
            .object({ address: z.string().nullable(), port: z.number().int(), tls: z.boolean() })
            .passthrough(),
        ),
        paths: z.array(z.object({ path: z.string() }).passthrough()),
        certificates: z.array(
          z.object({ certificate: z.string(), key: z.string().nullable() }).passthrough(),
        ),
      })
      .passthrough(),
    files: z.array(
      z
        .object({
          path: absPath,
          text: z.string(),
          blocks: z.array(
            z.object({ start: z.number().int().min(1), end: z.number().int().min(1) }).strict(),
          ),
        })
        .strict(),
    ),
    pool: z.object({ path: absPath, text: z.string() }).strict().nullable(),
    certificates: z.array(z.object({ path: absPath, content: z.string(), key: z.boolean() }).strict()),
    user: z.object({ name: sysName, uid: id, gid: id, home: absPath, shell: absPath }).strict().nullable(),
    group: z.object({ name: sysName, gid: id }).strict().nullable(),
    crontab: z.string(),
    dataDir: z
      .object({ path: absPath, user: sysName, group: sysName, mode: z.number().int().min(0).max(0o7777) })
      .strict()
      .nullable(),
    mail: z
      .object({
        domain,
        postfix: z
          .object({ domains: z.array(mapLine), mailboxes: z.array(mapLine), aliases: z.array(mapLine) })
          .strict(),
        users: z.array(mapLine),
        maildirs: z.array(z.string().max(4096)),
      })
      .strict()
      .optional(),
  })
  .strict();

/** What a site needs of the server that hosts it (the origin's inspection's `requires`). */
const needs = z
  .object({
    server: z.enum(['nginx', 'apache'], { message: 'must be "nginx" or "apache"' }),
    requires: z.array(
      z
        .object({
          kind: z.enum(['php-fpm', 'module'], { message: 'must be "php-fpm" or "module"' }),
          name: z.string().regex(/^[A-Za-z0-9_.]{1,64}$/, {
            message: 'must be a PHP version ("8.2") or a module name ("rewrite_module")',
          }),
          neededBy: z.string().max(4096),
        })
        .strict(),
    ),
    mailDomain: domain.optional(),
  })
  .strict();

/** A database name as MariaDB takes one quoted (no NUL, no `/`, `\\`, `.`; at most 64 characters). */
const dbName = z
  .string()
  .regex(/^[^\0/\\.]{1,64}$/, { message: 'must be a database name (1-64 characters, no "/", "\\" or ".")' });
const dbUser = z
  .string()
  .regex(/^[^\0\r\n]{1,80}$/, { message: 'must be a database user name (1-80 characters)' });
const declared = z
  .array(
    z
      .object({
        name: dbName,
        users: z.array(dbUser).optional(),
        host: z.string().max(300).optional(),
        engine: z.enum(['mariadb', 'postgresql']).optional(),
      })
      .strict(),
  )
  .max(64);
const dbPlan = z
  .object({
    move: z.array(
      z
        .object({
          name: dbName,
          bytes: z.number().min(0),
          users: z.array(dbUser),
          source: z.string().max(4096),
        })
        .strict(),
    ),
    leftInPlace: z.array(
      z
        .object({
          name: dbName,
          host: z.string().max(300),
          source: z.string().max(4096),
          reason: z.string().max(4096),
        })
        .strict(),
    ),
    originVersion: z.string().max(200).optional(),
    mode: z.literal('copy-in-hold').optional(),
    estimatedPauseMs: z.number().min(0).optional(),
    binlogProblem: z.string().max(4096).optional(),
  })
  .strict();
/** Where the replica connects (holds a password: only inside TLS between hosts). */
const dbSource = z
  .object({
    host: z.string().regex(/^[A-Za-z0-9.:_-]{1,253}$/, { message: 'must be an address or a host name' }),
    port,
    user: dbUser,
    password: z.string().min(1).max(200),
    caPem: z.string().max(32_768).optional(),
  })
  .strict();
/** A GTID position: `domain-server-sequence`, comma separated (may be empty). */
const gtidPos = z.string().regex(/^(\d+-\d+-\d+(,\s*\d+-\d+-\d+)*)?$/, {
  message: 'must be a GTID position, e.g. "1-1-42,2-2-7"',
});

/** A receive session of another agent (the site's; its mail's has the same shape). */
const syncEndpoint = z
  .object({
    address: ip,
    port,
    module: z.string().regex(/^[A-Za-z0-9._-]{1,120}$/),
    user: z.string().regex(/^[A-Za-z0-9._-]{1,120}$/),
    secret: z.string().min(16).max(200),
    fingerprint: z.string().regex(/^[0-9a-f]{64}$/, {
      message: "must be the SHA-256 of the receiver's certificate, 64 hex digits",
    }),
  })
  .strict();

const schemas = {
  bundle,
  needs,
  migrationParam: z.object({
    id: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,64}$/, { message: "must be 1-64 letters, digits, '.', '_' or '-'" }),
  }),
  dbPlanBody: z
    .object({ declared: declared.optional(), copyInHoldMaxBytes: z.number().int().min(0).optional() })
    .strict(),
  dbCheckBody: z.object({ plan: dbPlan }).strict(),
  dbOpenBody: z.object({ domain, replicaAddress: ip, declared: declared.optional() }).strict(),
  dbCopyBody: z
    .object({
      domain,
      source: dbSource,
      plan: dbPlan,
      timeoutMs: z.number().int().min(1).max(3_600_000).optional(),
    })
    .strict(),
  dbDomainBody: z.object({ domain }).strict(),
  dbDomainQuery: z.object({ domain }).strict(),
  dbTakeOverBody: z
    .object({ domain, position: gtidPos, timeoutMs: z.number().int().min(0).max(3_600_000) })
    .strict(),
  dbChannelBody: z.object({ domain, source: dbSource, position: gtidPos }).strict(),
  finish: z
    .object({
      role: z.enum(['origin', 'target'], { message: 'must be "origin" or "target"' }),
      backupKeepMs: z.number().int().min(0).optional(),
    })
    .strict(),
  addressParam: z.object({ address: ip }),
  redirectParam: z.object({
    id: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,120}$/, { message: "must be 1-120 letters, digits, '.', '_' or '-'" }),
  }),
  domainParam: z.object({ domain }),
  /** `mail: false`: the site's mail stays on the origin. */
  gateBody: z.object({ mail: z.literal(false).optional() }).strict(),
  jobParam: z.object({
    id: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,64}$/, { message: "must be 1-64 letters, digits, '.', '_' or '-'" }),
  }),
  startRedirect: z
    .object({
      address: ip,
      ports: z
        .array(port, { message: 'must be a list of ports, e.g. [80, 443]' })
        .min(1, { message: 'must list at least one port' }),
      upstream: ip,
      sourceAddress: ip.optional(),
      engine: engine.optional(),
    })
    .strict(),
  upstream: z.object({ upstream: ip }).strict(),
  putSite: z.object({ mode: mode.default('serve') }).strict(),
  setMode: z.object({ mode }).strict(),
  removeSite: z.object({ deleteData: z.enum(['true', 'false']).optional() }).strict(),
  waitIdle: z.object({ timeoutMs: z.number().int().min(0).max(600_000) }).strict(),
  probe: z
    .object({
      address: ip,
      port,
      path: z.string().startsWith('/', { message: 'must start with "/"' }).max(2048).default('/'),
    })
    .strict(),
  push: z
    .object({
      jobId: z
        .string()
        .regex(/^[A-Za-z0-9._-]{1,64}$/)
        .optional(),
      to: syncEndpoint.extend({ mail: syncEndpoint.optional() }).strict(),
    })
    .strict(),
};

/** A zod failure as one line: `body.ports[0]: must be a port number 1-65535`. */
function describe(where: string, err: z.ZodError): string {
  return err.issues
    .map((i) => {
      const path = i.path.reduce<string>(
        (acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : `${acc}.${String(p)}`),
        where,
      );
      return `${path}: ${i.message}`;
    })
    .join('; ');
}

function parse<S extends z.ZodType>(schema: S, value: unknown, where: string): z.output<S> {
  const r = schema.safeParse(value ?? (where === 'body' ? {} : value));
  if (!r.success) throw new FerryError('BAD_REQUEST', describe(where, r.error));
  return r.data;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Build the agent's fastify app (not listening). */
/**
 * A site's bundle holds its private keys and configs (database passwords among them): the routes
 * that carry one (the bundle out, the install in) answer only inside TLS, or to a caller on this
 * same host. Over plain HTTP between two servers the keys would cross the network in clear.
 */
function requireSecretsTransport(req: FastifyRequest, tls: boolean, what = "the site's private keys"): void {
  if (tls) return;
  const peer = req.socket.remoteAddress ?? '';
  const local = peer === '::1' || peer.startsWith('127.') || peer.startsWith('::ffff:127.');
  if (!local)
    throw new FerryError(
      'SECRETS_NEED_TLS',
      `${req.url} carries ${what}: this agent serves it over HTTPS only (start it with --tls-cert and --tls-key), or to a caller on this host`,
    );
}

const DB_SECRET = "a database replication user's password";

export function buildAgentServer(agent: HostAgent, opts: AgentServerOptions): FastifyInstance {
  if (typeof opts.token !== 'string' || opts.token.length < 16) {
    throw new FerryError(
      'AGENT_OPTIONS',
      'the agent token must be at least 16 characters (generate one with: openssl rand -hex 32)',
    );
  }
  if (opts.tls && !(opts.tls.certFile && opts.tls.keyFile)) {
    throw new FerryError('AGENT_OPTIONS', 'TLS needs both a certificate file and a key file');
  }
  const want = digest(opts.token);
  const fence = opts.fence ?? new FenceKeeper(agent.id);
  const https = opts.tls
    ? { cert: readFileSync(opts.tls.certFile), key: readFileSync(opts.tls.keyFile) }
    : null;
  const app = Fastify({
    ...(https ? { https } : {}),
    ...(opts.logger ? { loggerInstance: opts.logger } : {}),
    bodyLimit: 64 * 1024,
    // Room for a 253-character domain in a path.
    routerOptions: { maxParamLength: 256 },
    clientErrorHandler: clientErrorAnswer,
    // Errors of the router (an over-long or badly encoded path parameter) answer like every other.
    frameworkErrors: (err: Error, _req: unknown, reply: FastifyReply) => {
      const { status, body } = toApiError(err);
      void reply.code(status).send(body);
    },
    // Long operations (a site's sync, a drain) answer when done; the client sets its own timeouts.
    requestTimeout: 0,
  } as Parameters<typeof Fastify>[0]) as unknown as FastifyInstance;

  app.addHook('onRequest', async (req, reply) => {
    const h = req.headers.authorization;
    const m = typeof h === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
    // Hashing first makes the compare constant-time whatever the presented token's length.
    if (!m || !timingSafeEqual(digest(m[1]!), want)) {
      reply.header('www-authenticate', 'Bearer realm="ferry-agent"');
      const { status, body } = errorAnswer(
        'UNAUTHORIZED',
        m ? 'wrong bearer token' : 'send Authorization: Bearer <agent token>',
      );
      return reply.code(status).send(body);
    }
    // Fencing (fence.ts): a command of a controller that lost the lead is refused before it acts.
    const f = req.headers[FENCE_HEADER];
    if (f !== undefined) {
      try {
        await fence.admit(parseFenceToken(Array.isArray(f) ? f.join(',') : f));
      } catch (err) {
        const { status, body } = toApiError(err);
        if (err instanceof FerryError && err.code === 'FENCED')
          opts.logger?.warn({ code: err.code, method: req.method, url: req.url }, err.message);
        return reply.code(status).send(body);
      }
    }
  });

  // Statuses come from the code table; Fastify's own request errors are mapped to its codes.
  app.setErrorHandler((err, _req, reply) => {
    const { status, body } = toApiError(err);
    if (status >= 500) {
      if (err instanceof FerryError)
        opts.logger?.error({ code: err.code, msg: err.message }, 'agent operation failed');
      else opts.logger?.error({ err }, 'agent internal error');
    }
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    const { status, body } = errorAnswer(
      'ROUTE_NOT_FOUND',
      `no route ${req.method} ${req.url.split('?')[0]}; see GET /v1/info`,
    );
    return reply.code(status).send(body);
  });

  const ok = { ok: true };

  app.get('/v1/info', async () => ({ ...(await agent.info()), fence: fence.highest?.toString() ?? null }));

  // addresses
  app.get('/v1/addresses', async () => ({ addresses: await agent.listAddresses() }));
  app.put('/v1/addresses/:address', async (req) => {
    const { address } = parse(schemas.addressParam, req.params, 'params');
    await agent.addAddress(address);
    return ok;
  });
  app.delete('/v1/addresses/:address', async (req) => {
    const { address } = parse(schemas.addressParam, req.params, 'params');
    await agent.removeAddress(address);
    return ok;
  });

  // redirects
  app.get('/v1/redirects', async () => ({ redirects: agent.listRedirects() }));
  app.put('/v1/redirects/:id', async (req) => {
    const { id } = parse(schemas.redirectParam, req.params, 'params');
    const body = parse(schemas.startRedirect, req.body, 'body');
    await agent.startRedirect(id, {
      address: body.address,
      ports: body.ports,
      upstream: body.upstream,
      ...(body.sourceAddress ? { sourceAddress: body.sourceAddress } : {}),
      ...(body.engine ? { engine: body.engine } : {}),
    });
    return ok;
  });
  app.get('/v1/redirects/:id', async (req) => {
    const { id } = parse(schemas.redirectParam, req.params, 'params');
    const stats = await agent.redirectStats(id);
    if (!stats) throw new FerryError('REDIRECT_NOT_FOUND', `no redirect ${id} on ${agent.id}`);
    return stats;
  });
  app.put('/v1/redirects/:id/upstream', async (req) => {
    const { id } = parse(schemas.redirectParam, req.params, 'params');
    const { upstream } = parse(schemas.upstream, req.body, 'body');
    await agent.setRedirectUpstream(id, upstream);
    return ok;
  });
  app.post('/v1/redirects/:id/hold', async (req) => {
    const { id } = parse(schemas.redirectParam, req.params, 'params');
    await agent.holdRedirect(id);
    return ok;
  });
  app.post('/v1/redirects/:id/release', async (req) => {
    const { id } = parse(schemas.redirectParam, req.params, 'params');
    await agent.releaseRedirect(id);
    return ok;
  });
  app.delete('/v1/redirects/:id', async (req) => {
    const { id } = parse(schemas.redirectParam, req.params, 'params');
    await agent.stopRedirect(id);
    return ok;
  });

  // sites
  app.get('/v1/sites', async () => ({ sites: agent.listSites() }));
  app.put('/v1/sites/:domain', async (req) => {
    const { domain } = parse(schemas.domainParam, req.params, 'params');
    const { mode } = parse(schemas.putSite, req.body, 'body');
    await agent.addSite(domain, mode);
    return ok;
  });
  app.get('/v1/sites/:domain', async (req) => {
    const { domain } = parse(schemas.domainParam, req.params, 'params');
    const mode = await agent.siteMode(domain);
    if (mode === null)
      throw new FerryError(
        'SITE_NOT_FOUND',
        `${agent.id} does not serve ${domain}; add it with PUT /v1/sites/{domain} first`,
      );
    return { domain, mode };
  });
  app.put('/v1/sites/:domain/mode', async (req) => {
    const { domain } = parse(schemas.domainParam, req.params, 'params');
    const { mode } = parse(schemas.setMode, req.body, 'body');
    await agent.setSiteMode(domain, mode);
    return ok;
  });
  app.delete('/v1/sites/:domain', async (req) => {
    const { domain } = parse(schemas.domainParam, req.params, 'params');
    const { deleteData } = parse(schemas.removeSite, req.query, 'query');
    await agent.removeSite(domain, deleteData === 'true');
    return ok;
  });
  app.get('/v1/sites/:domain/stats', async (req) => {
    const { domain } = parse(schemas.domainParam, req.params, 'params');
    return agent.siteStats(domain);
  });
  app.post('/v1/sites/:domain/wait-idle', async (req) => {
    const { domain } = parse(schemas.domainParam, req.params, 'params');
    const { timeoutMs } = parse(schemas.waitIdle, req.body, 'body');
    return { idle: await agent.waitSiteIdle(domain, timeoutMs) };
  });
  app.post('/v1/sites/:domain/reload', async (req) => {
    const { domain } = parse(schemas.domainParam, req.params, 'params');
    await agent.reloadSite(domain);
    return ok;
  });
  app.post('/v1/sites/:domain/probe', async (req) => {
    const { domain } = parse(schemas.domainParam, req.params, 'params');
    const b = parse(schemas.probe, req.body, 'body');
    return agent.probe(domain, b.address, b.port, b.path);
  });
  app.post('/v1/sites/:domain/push', async (req) => {
    const { domain } = parse(schemas.domainParam, req.params, 'params');
    const b = parse(schemas.push, req.body, 'body');
    return agent.pushSite(domain, b.to, b.jobId);
  });

  // the web server's own sites
  app.get('/v1/web-sites', async () => agent.webSites());
  app.get('/v1/web-sites/:domain', async (req) => {
    const { domain: d } = parse(schemas.domainParam, req.params, 'params');
    const site = await agent.inspectWebSite(d);
    if (!site) throw new FerryError('SITE_NOT_FOUND', `${agent.id}'s web server has no site named ${d}`);
    return site;
  });
  app.post('/v1/web-sites/:domain/check', async (req) => {
    const { domain: d } = parse(schemas.domainParam, req.params, 'params');
    const body = parse(schemas.needs, req.body, 'body');
    await agent.checkWebSite(d, body);
    return ok;
  });
  app.get('/v1/web-sites/:domain/bundle', async (req) => {
    const { domain: d } = parse(schemas.domainParam, req.params, 'params');
    requireSecretsTransport(req, https !== null);
    return agent.exportWebSite(d);
  });
  app.post('/v1/web-sites/:domain/gate', async (req) => {
    const { domain: d } = parse(schemas.domainParam, req.params, 'params');
    const { mail } = parse(schemas.gateBody, req.body ?? {}, 'body');
    await agent.gateWebSite(d, mail === false ? { mail } : {});
    return ok;
  });
  app.post('/v1/web-sites/:domain/ungate', async (req) => {
    const { domain: d } = parse(schemas.domainParam, req.params, 'params');
    await agent.ungateWebSite(d);
    return ok;
  });
  app.put('/v1/web-sites/:domain/install', async (req) => {
    const { domain: d } = parse(schemas.domainParam, req.params, 'params');
    requireSecretsTransport(req, https !== null);
    const b = parse(schemas.bundle, req.body, 'body');
    if (b.domain.toLowerCase() !== d.toLowerCase())
      throw new FerryError('VALIDATION', `body.domain ${b.domain} is not the domain of the URL (${d})`);
    await agent.installWebSite(b as unknown as WebSiteBundle);
    return ok;
  });
  app.delete('/v1/web-sites/:domain/install', async (req) => {
    const { domain: d } = parse(schemas.domainParam, req.params, 'params');
    await agent.uninstallWebSite(d);
    return ok;
  });
  app.post('/v1/web-sites/:domain/finish', async (req) => {
    const { domain: d } = parse(schemas.domainParam, req.params, 'params');
    const body = parse(schemas.finish, req.body, 'body');
    await agent.finishWebSite(d, body.role, {
      ...(body.backupKeepMs !== undefined ? { backupKeepMs: body.backupKeepMs } : {}),
    });
    return ok;
  });

  // the server's own MariaDB: a site's databases (database/mover.ts)
  app.post('/v1/databases/:domain/plan', async (req) => {
    const { domain: d } = parse(schemas.domainParam, req.params, 'params');
    const b = parse(schemas.dbPlanBody, req.body, 'body');
    return agent.planDatabases(
      d,
      b.declared,
      b.copyInHoldMaxBytes ? { copyInHoldMaxBytes: b.copyInHoldMaxBytes } : undefined,
    );
  });
  app.post('/v1/databases/:domain/check', async (req) => {
    const { domain: d } = parse(schemas.domainParam, req.params, 'params');
    const b = parse(schemas.dbCheckBody, req.body, 'body');
    return agent.checkDatabases(d, b.plan);
  });
  /**
   * A route of one database migration: its id and `schema`'s input (`body` unless said) parsed,
   * after the secrets-transport check for a route carrying a replication password; answers what
   * `call` returns, or `ok` when it returns nothing.
   */
  const dbRoute = <S extends z.ZodType>(
    method: 'get' | 'put' | 'post' | 'delete',
    action: string,
    schema: S | null,
    call: (migrationId: string, input: z.output<S>) => Promise<unknown>,
    opts: { secret?: true; from?: 'query' } = {},
  ): void => {
    app[method](`/v1/database-migrations/:id/${action}`, async (req) => {
      const { id: m } = parse(schemas.migrationParam, req.params, 'params');
      if (opts.secret) requireSecretsTransport(req, https !== null, DB_SECRET);
      const where = opts.from ?? 'body';
      const input = schema ? parse(schema, where === 'query' ? req.query : req.body, where) : undefined;
      const answer = await call(m, input as z.output<S>);
      return answer === undefined ? ok : answer;
    });
  };
  dbRoute(
    'put',
    'source',
    schemas.dbOpenBody,
    (m, b) => agent.openDatabaseSource(m, b.domain, b.replicaAddress, b.declared),
    { secret: true },
  );
  dbRoute('delete', 'source', null, (m) => agent.closeDatabaseSource(m));
  dbRoute(
    'put',
    'copy',
    schemas.dbCopyBody,
    (m, b) =>
      agent.copyDatabases(
        m,
        b.domain,
        b.source as DatabaseSource,
        b.plan,
        b.timeoutMs !== undefined ? { timeoutMs: b.timeoutMs } : undefined,
      ),
    { secret: true },
  );
  dbRoute('delete', 'copy', schemas.dbDomainQuery, (m, q) => agent.dropDatabaseCopy(m, q.domain), {
    from: 'query',
  });
  dbRoute('get', 'lag', null, (m) => agent.databaseLag(m));
  dbRoute('post', 'freeze', schemas.dbDomainBody, (m, b) => agent.freezeDatabases(m, b.domain));
  dbRoute('post', 'thaw', schemas.dbDomainBody, (m, b) => agent.thawDatabases(m, b.domain));
  dbRoute('post', 'take-over', schemas.dbTakeOverBody, (m, b) =>
    agent.takeOverDatabases(m, b.domain, b.position, b.timeoutMs),
  );
  dbRoute(
    'put',
    'channel',
    schemas.dbChannelBody,
    (m, b) => agent.startDatabaseChannel(m, b.domain, b.source as DatabaseSource, b.position),
    { secret: true },
  );

  // data sync
  app.put('/v1/sync-receivers/:domain', async (req) => {
    const { domain } = parse(schemas.domainParam, req.params, 'params');
    return agent.openSyncReceiver(domain);
  });
  app.delete('/v1/sync-receivers/:domain', async (req) => {
    const { domain } = parse(schemas.domainParam, req.params, 'params');
    await agent.closeSyncReceiver(domain);
    return ok;
  });
  app.get('/v1/sync-jobs/:id', async (req) => {
    const { id } = parse(schemas.jobParam, req.params, 'params');
    const job = agent.syncJob(id);
    if (!job) throw new FerryError('SYNC_JOB_NOT_FOUND', `no sync job ${id} on ${agent.id}`);
    return job;
  });

  return app;
}
