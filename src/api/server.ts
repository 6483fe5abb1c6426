/**
 * The control API: REST over JSON on fastify, described by OpenAPI at /openapi.json. Every API
 * route needs a bearer token (`read` to look, `operator` to change); the dashboard's static files
 * are public (they hold no data, and ask for a token). Errors answer `{ error: { code, message } }`.
 */
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
} from 'fastify';
import { AjvCompiler } from '@fastify/ajv-compiler';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import type { Logger } from 'pino';
import { FerryError, errorMessage } from '../common/errors.js';
import type { Controller, LeaderView } from '../controller/index.js';
import type { MigrationRecord } from '../migration/index.js';
import { TrafficSampler, createMetrics, type FerryMetrics } from '../metrics/index.js';
import { registerDashboard } from '../web/index.js';
import { TokenVerifier, allows, bearer, type ApiToken, type Scope } from './auth.js';
import { clientErrorAnswer, errorAnswer, toApiError } from '../common/http-errors.js';
import { errorSchema, migrationSchema, schemas, webSitesSchema } from './schemas.js';
import { EventHub, type SseOptions } from './sse.js';

export interface ApiOptions {
  /** Accepted tokens and their scopes; at least one. */
  tokens: ApiToken[];
  /** Requests per minute per client address (SSE connects count once). Default 600; 0 turns limits off. */
  rateLimitPerMinute?: number;
  /** Writes (start, roll back, evacuate) per minute per client address. Default 30. */
  writeRateLimitPerMinute?: number;
  /** Server-Sent Events limits. */
  sse?: SseOptions;
  /** Traffic sampling interval; 0 turns sampling (and the dashboard chart) off. Default 1000 ms. */
  sampleIntervalMs?: number;
  /** Serve `/metrics` (Prometheus, needs a read token). Default true. */
  metrics?: boolean;
  /** Serve the web dashboard at `/`. Default true. */
  dashboard?: boolean;
  /** Request log (pino); default none. Tokens never reach it: only method, URL and status are logged. */
  logger?: Logger;
  /** How long a rollback or evacuation request waits for its outcome before answering 202. Default 1000 ms. */
  syncWaitMs?: number;
  /**
   * Several controllers on one PostgreSQL: the leader lease. A follower serves reads itself and
   * forwards writes to the leader (below); without it this controller is the only one.
   */
  leader?: LeaderView;
}

/** Marks a write forwarded by a follower: never forwarded twice. */
const FORWARDED = 'x-ferry-forwarded-by';

/**
 * A follower passes a write to the leader's API with the caller's own token and answers with the
 * leader's answer. Server-side, not a redirect: clients drop Authorization on a redirect to
 * another origin. No leader, or one that cannot be reached: NO_LEADER (503).
 */
async function forwardToLeader(leader: LeaderView, req: FastifyRequest, reply: FastifyReply): Promise<void> {
  const { self, leader: holder } = leader.status();
  if (!holder || holder.id === self.id || req.headers[FORWARDED] !== undefined)
    throw new FerryError(
      'NO_LEADER',
      holder
        ? `this controller (${self.id}) follows ${holder.id}, which does not lead any more; retry in a few seconds`
        : `no controller holds the lead now (this one, ${self.id}, follows); retry in a few seconds`,
    );
  if (!holder.url)
    throw new FerryError(
      'NO_LEADER',
      `the leader ${holder.id} advertises no API URL (set leader.advertise in its ferry.yaml); send writes to it directly`,
    );
  let res: Response;
  try {
    res = await fetch(new URL(req.url, holder.url), {
      method: req.method,
      headers: {
        accept: 'application/json',
        [FORWARDED]: self.id,
        ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
        ...(req.body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(req.body !== undefined ? { body: JSON.stringify(req.body) } : {}),
      redirect: 'manual',
      signal: AbortSignal.timeout(60_000),
    });
  } catch (err) {
    throw new FerryError(
      'NO_LEADER',
      `the leader ${holder.id} at ${holder.url} cannot be reached from ${self.id}: ${errorMessage(err)}; retry in a few seconds`,
    );
  }
  const text = await res.text();
  reply.code(res.status);
  for (const h of ['content-type', 'location', 'retry-after']) {
    const v = res.headers.get(h);
    if (v !== null) reply.header(h, v);
  }
  reply.header('x-ferry-leader', holder.id);
  await reply.send(text);
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route: `public` (no token), `read` (default) or `operator`. */
    scope?: Scope | 'public';
  }
  interface FastifyRequest {
    principal?: { scope: Scope; name: string };
  }
}

const TERMINAL = new Set(['completed', 'failed', 'rolled-back']);

/**
 * A migration as GET /v1/migrations lists it: what it moves where, its phase and phase timeline;
 * not its plan (addresses, names, timings), which GET /v1/migrations/{id} gives.
 */
export function migrationSummary(rec: MigrationRecord) {
  return {
    id: rec.plan.id,
    domain: rec.plan.domain,
    from: rec.plan.origin,
    to: rec.plan.target,
    phase: rec.phase,
    createdAt: rec.createdAt,
    updatedAt: rec.updatedAt,
    ...(rec.error !== undefined ? { error: rec.error } : {}),
    phases: rec.phases,
    ...(rec.redirectRemovedAt !== undefined ? { redirectRemovedAt: rec.redirectRemovedAt } : {}),
    ...(rec.tempIpRemovedAt !== undefined ? { tempIpRemovedAt: rec.tempIpRemovedAt } : {}),
  };
}

/** A migration as the API shows it alone: its summary and its plan. */
export function migrationView(rec: MigrationRecord) {
  return { ...migrationSummary(rec), plan: rec.plan };
}

const security = [{ bearer: [] }];
const errors = {
  400: errorSchema,
  401: errorSchema,
  403: errorSchema,
  404: errorSchema,
  409: errorSchema,
  429: errorSchema,
};

/** Wait for `p` up to `ms`: its value, or undefined when still pending (its failure is then only logged). */
async function settleWithin<T>(
  p: Promise<T>,
  ms: number,
  log: (msg: string) => void,
): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const pending = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  p.catch((err: unknown) => log(errorMessage(err)));
  try {
    return await Promise.race([p, pending]);
  } finally {
    clearTimeout(timer);
  }
}

const validators = AjvCompiler();
const ajvOptions = { removeAdditional: false, allErrors: false } as const;

/**
 * Request validators: query strings and path parameters are text, so their numbers and booleans
 * are coerced (and `1e400`, which coerces to Infinity and passes ajv's bounds, is refused); JSON
 * bodies are taken as sent (`["a"]` is not the string `"a"`, `"5"` not 5).
 */
const buildValidator: NonNullable<
  NonNullable<FastifyServerOptions['schemaController']>['compilersFactory']
>['buildValidator'] = (external) => {
  const coercing = validators(external, { customOptions: { ...ajvOptions, coerceTypes: 'array' } });
  const strict = validators(external, { customOptions: { ...ajvOptions, coerceTypes: false } });
  return (route) => {
    if (route.httpPart === 'body') return strict(route);
    const validate = coercing(route);
    const check: typeof validate = Object.assign(
      (data: unknown): data is unknown => {
        check.errors = validate(data) ? null : validate.errors;
        const values = (data ?? {}) as Record<string, unknown>;
        const infinite = check.errors
          ? undefined
          : Object.keys(values).find((k) => values[k] === Infinity || values[k] === -Infinity);
        if (infinite)
          check.errors = [
            {
              instancePath: `/${infinite}`,
              schemaPath: '#/type',
              keyword: 'type',
              params: {},
              message: 'must be a finite number',
            },
          ];
        return !check.errors;
      },
      { schema: validate.schema, schemaEnv: validate.schemaEnv },
    );
    return check;
  };
};

/** Build the API (not listening) on `controller`. Close it with `app.close()`. */
export async function buildApi(controller: Controller, opts: ApiOptions): Promise<FastifyInstance> {
  const verifier = new TokenVerifier(opts.tokens);
  const app = Fastify({
    // Fastify 5 takes a pino instance as `loggerInstance`; `logger` accepts only options.
    ...(opts.logger ? { loggerInstance: opts.logger as FastifyBaseLogger } : { logger: false }),
    bodyLimit: 64 * 1024,
    // Room for a 253-character domain in a path; longer parameters answer 400 VALIDATION.
    routerOptions: { maxParamLength: 256 },
    schemaController: { compilersFactory: { buildValidator } },
    clientErrorHandler: clientErrorAnswer,
    // Errors of the router (an over-long or badly encoded path parameter) answer like every other.
    frameworkErrors: (err, _req, reply) => {
      const { status, body } = toApiError(err);
      void (reply as FastifyReply).code(status).send(body);
    },
  });
  const sampler =
    opts.sampleIntervalMs === 0
      ? undefined
      : new TrafficSampler(controller, { intervalMs: opts.sampleIntervalMs ?? 1000 });
  sampler?.start();
  const hub = new EventHub(controller, sampler, opts.sse);
  const metrics: FerryMetrics | undefined =
    opts.metrics === false ? undefined : createMetrics(controller, sampler);
  const syncWaitMs = opts.syncWaitMs ?? 1000;
  // preClose, not onClose: open event streams would otherwise keep close() waiting.
  app.addHook('preClose', async () => {
    hub.close();
    sampler?.stop();
    metrics?.close();
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Ferry control API',
        version: '1',
        description: 'Servers, sites, migrations and their live events.',
      },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'a read or operator token' },
        },
      },
    },
  });
  const perMinute = opts.rateLimitPerMinute ?? 600;
  if (perMinute > 0) {
    await app.register(rateLimit, {
      global: true,
      max: perMinute,
      timeWindow: 60_000,
      errorResponseBuilder: (_req, ctx) =>
        new FerryError(
          'RATE_LIMITED',
          `too many requests: at most ${ctx.max} per minute; retry in ${Math.ceil(ctx.ttl / 1000)} s`,
        ),
    });
  }
  const writeLimit =
    perMinute > 0 ? { rateLimit: { max: opts.writeRateLimitPerMinute ?? 30, timeWindow: 60_000 } } : {};

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const need = req.routeOptions.config?.scope ?? 'read';
    if (need === 'public') return;
    const presented = bearer(req.headers.authorization);
    const who = verifier.verify(presented);
    if (!who) {
      reply.header('www-authenticate', 'Bearer realm="ferry"');
      throw new FerryError(
        presented ? 'AUTH_INVALID_TOKEN' : 'AUTH_MISSING_TOKEN',
        presented
          ? 'the token is not valid for this controller'
          : 'a token is required: send "Authorization: Bearer <token>"',
      );
    }
    if (!allows(who.scope, need))
      throw new FerryError(
        'AUTH_FORBIDDEN',
        `this route needs an ${need} token; the token given has scope ${who.scope}`,
      );
    req.principal = who;
  });

  // A follower forwards every write once it is authorized and validated (a bad one is refused here).
  const lease = opts.leader;
  if (lease)
    app.addHook('preHandler', async (req: FastifyRequest, reply: FastifyReply) => {
      if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return;
      if (lease.status().role === 'leader') return;
      await forwardToLeader(lease, req, reply);
      return reply;
    });

  // Statuses come from the code table; Fastify's own request errors are mapped to its codes.
  app.setErrorHandler((err, req, reply) => {
    const { status, body } = toApiError(err);
    if (status >= 500) req.log.error({ code: body.error.code, err: errorMessage(err) }, 'request failed');
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    const { status, body } = errorAnswer(
      'ROUTE_NOT_FOUND',
      `no route ${req.method} ${req.url.split('?')[0]}; see /openapi.json`,
    );
    reply.code(status).send(body);
  });

  // Servers, sites, records
  app.get<{ Querystring: { limit: number; cursor?: string } }>(
    '/v1/servers',
    {
      schema: {
        tags: ['servers'],
        summary:
          'Servers in config order, their addresses, free temporary IPs and how many sites each hosts (the sites: GET /v1/sites?server=ID); a page of `limit`, with `next` when more follow',
        querystring: schemas.pageQuery,
        security,
        response: errors,
      },
    },
    async (req) => {
      const page = controller.serversPage(req.query);
      return { servers: page.items, ...(page.next ? { next: page.next } : {}) };
    },
  );
  app.get<{ Params: { id: string } }>(
    '/v1/servers/:id',
    {
      schema: {
        tags: ['servers'],
        summary: 'One server',
        params: schemas.serverParam,
        security,
        response: errors,
      },
    },
    async (req) => {
      return controller.serverView(req.params.id);
    },
  );
  app.get<{ Params: { id: string } }>(
    '/v1/servers/:id/web-sites',
    {
      schema: {
        tags: ['servers'],
        summary:
          "The sites of the server's own web server as its agent reads them: names, listens, application, user, and whether Ferry can move each (refusals with file and line)",
        params: schemas.serverParam,
        security,
        response: { 200: webSitesSchema, ...errors },
      },
    },
    async (req) => controller.webSites(req.params.id),
  );
  app.get<{ Querystring: { limit: number; cursor?: string; server?: string } }>(
    '/v1/sites',
    {
      schema: {
        tags: ['sites'],
        summary:
          'Sites in config order and the server hosting each now (with `server`, only the sites it hosts); a page of `limit`, with `next` when more follow',
        querystring: schemas.sitesQuery,
        security,
        response: errors,
      },
    },
    async (req) => {
      const page = controller.sitesPage(req.query);
      return { sites: page.items, ...(page.next ? { next: page.next } : {}) };
    },
  );
  app.get<{ Params: { domain: string } }>(
    '/v1/sites/:domain',
    {
      schema: {
        tags: ['sites'],
        summary: 'One site',
        params: schemas.domainParam,
        security,
        response: errors,
      },
    },
    async (req) => controller.site(req.params.domain),
  );
  app.get<{ Params: { domain: string } }>(
    '/v1/records/:domain',
    {
      schema: {
        tags: ['sites'],
        summary: "A domain's A RRset as the DNS provider has it",
        params: schemas.domainParam,
        security,
        response: errors,
      },
    },
    async (req) => {
      controller.site(req.params.domain);
      return controller.records(req.params.domain);
    },
  );

  // Migrations
  app.get<{ Querystring: { limit: number; cursor?: string; domain?: string; active?: boolean } }>(
    '/v1/migrations',
    {
      schema: {
        tags: ['migrations'],
        summary:
          'Migrations, newest first, each without its plan (GET /v1/migrations/{id} has it); a page of `limit`, with `next` when more follow',
        querystring: schemas.listQuery,
        security,
        response: errors,
      },
    },
    async (req) => {
      const page = controller.migrationsPage(req.query);
      return { migrations: page.items.map(migrationSummary), ...(page.next ? { next: page.next } : {}) };
    },
  );
  app.post<{
    Body: {
      domain: string;
      to: string;
      id?: string;
      timings?: Record<string, number>;
      kind?: 'builtin' | 'web';
    };
  }>(
    '/v1/migrations',
    {
      config: { scope: 'operator', ...writeLimit },
      schema: {
        tags: ['migrations'],
        summary: 'Start migrating a domain to a server; answers at once with the planned migration',
        body: schemas.createMigration,
        security,
        response: { 201: migrationSchema, ...errors },
      },
    },
    async (req, reply) => {
      const rec = await controller.startMigration(req.body);
      req.log.info({ migration: rec.plan.id, by: req.principal?.name }, 'migration started');
      return reply
        .code(201)
        .header('location', `/v1/migrations/${encodeURIComponent(rec.plan.id)}`)
        .send(migrationView(rec));
    },
  );
  app.post<{ Body: { domain: string; to: string; kind?: 'builtin' | 'web' } }>(
    '/v1/migrations/preview',
    {
      config: { scope: 'operator', ...writeLimit },
      schema: {
        tags: ['migrations'],
        summary:
          "What a migration would do, asked of both agents as a migration asks them (its refusals, a web site's ports and databases, the copy-in-hold mode's pause); starts nothing",
        body: schemas.previewMigration,
        security,
        response: errors,
      },
    },
    async (req) => controller.previewMigration(req.body),
  );
  app.get<{ Params: { id: string } }>(
    '/v1/migrations/:id',
    {
      schema: {
        tags: ['migrations'],
        summary: 'One migration with its phases, journal and last wait',
        params: schemas.idParam,
        security,
        response: errors,
      },
    },
    async (req) => {
      const rec = controller.migration(req.params.id);
      const events = controller.eventsSince(0, rec.plan.id);
      const lastWait = [...events].reverse().find((e) => e.type === 'wait');
      const lastErrors = events.filter((e) => e.type === 'error').slice(-20);
      return {
        ...migrationView(rec),
        journal: controller.journal.entries(rec.plan.id),
        ...(lastWait && !TERMINAL.has(rec.phase) ? { wait: { at: lastWait.at, ...lastWait.data } } : {}),
        errors: lastErrors.map((e) => ({ at: e.at, ...e.data })),
      };
    },
  );
  app.get<{ Params: { id: string } }>(
    '/v1/migrations/:id/traffic',
    {
      schema: {
        tags: ['migrations'],
        summary: 'Traffic samples at IP1, IPt and IP2 (one a second while it ran)',
        params: schemas.idParam,
        security,
        response: errors,
      },
    },
    async (req) => {
      const rec = controller.migration(req.params.id);
      return { migration: rec.plan.id, samples: sampler?.history(rec.plan.id) ?? [] };
    },
  );
  app.post<{ Params: { id: string } }>(
    '/v1/migrations/:id/rollback',
    {
      config: { scope: 'operator', ...writeLimit },
      schema: {
        tags: ['migrations'],
        summary: 'Roll a migration back: 200 with the record when it ended at once, else 202 while it runs',
        params: schemas.idParam,
        security,
        response: errors,
      },
    },
    async (req, reply) => {
      const rec = controller.migration(req.params.id);
      req.log.info({ migration: rec.plan.id, by: req.principal?.name }, 'rollback requested');
      const done = await settleWithin(controller.rollback(rec.plan.id), syncWaitMs, (m) =>
        req.log.warn({ migration: rec.plan.id }, `rollback: ${m}`),
      );
      if (done) return reply.code(200).send(migrationView(done));
      return reply.code(202).send({ ...migrationView(controller.migration(rec.plan.id)), accepted: true });
    },
  );
  app.post<{ Body: { from: string; to: string; concurrency?: number; timings?: Record<string, number> } }>(
    '/v1/evacuations',
    {
      config: { scope: 'operator', ...writeLimit },
      schema: {
        tags: ['migrations'],
        summary:
          'Migrate every site of a server to another: 200 with the migrations when known at once, else 202',
        body: schemas.evacuate,
        security,
        response: errors,
      },
    },
    async (req, reply) => {
      controller.server(req.body.from);
      controller.server(req.body.to);
      req.log.info({ from: req.body.from, to: req.body.to, by: req.principal?.name }, 'evacuation requested');
      const done = await settleWithin(controller.evacuate(req.body), syncWaitMs, (m) =>
        req.log.warn(`evacuation: ${m}`),
      );
      if (done) return reply.code(200).send({ ...done, migrations: done.migrations.map(migrationView) });
      const started = controller.journal
        .briefs()
        .filter((r) => r.plan.origin === req.body.from && !TERMINAL.has(r.phase))
        .map((r) => controller.migration(r.id));
      return reply.code(202).send({ accepted: true, migrations: started.map(migrationView) });
    },
  );

  // Events
  app.get<{ Querystring: { migration?: string; since?: number } }>(
    '/v1/events',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['events'],
        summary:
          'Server-Sent Events: phase, step, wait, error, migration, dns, traffic, held, sync (started, progress, done), database (copied, lag, frozen, caught-up, catchup-timeout), retry, evacuation (with ids, replayable with Last-Event-ID) and sample (no id)',
        querystring: schemas.eventsQuery,
        security,
        response: { ...errors, 503: errorSchema },
      },
    },
    async (req, reply) => {
      const header = req.headers['last-event-id'];
      const lastId = typeof header === 'string' && /^\d+$/.test(header) ? Number(header) : undefined;
      if (req.query.migration) controller.migration(req.query.migration); // 404 for an unknown id
      if (hub.full) throw new FerryError('SSE_FULL', 'too many event subscribers; try again later');
      reply.hijack();
      hub.subscribe(reply.raw, {
        ...(req.query.migration ? { migration: req.query.migration } : {}),
        afterSeq: lastId ?? req.query.since ?? Number.MAX_SAFE_INTEGER,
      });
    },
  );

  if (metrics) {
    app.get(
      '/metrics',
      {
        schema: {
          tags: ['metrics'],
          summary: 'Prometheus metrics (text format); needs a read token',
          security,
        },
      },
      async (_req, reply) => {
        reply.header('content-type', metrics.registry.contentType);
        return metrics.registry.metrics();
      },
    );
  }

  app.get(
    '/v1/controller',
    {
      schema: {
        tags: ['controller'],
        summary:
          "Who leads: this controller's role, the leader's id, API URL, fencing token and lease expiry (mode single: one controller, no lease)",
        security,
        response: errors,
      },
    },
    async () => {
      if (!lease) return { mode: 'single', role: 'leader', self: null, leader: null };
      return { mode: 'lease', ...lease.status() };
    },
  );

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  if (opts.dashboard ?? true) registerDashboard(app);
  return app;
}

export interface StartedApi {
  app: FastifyInstance;
  /** Base URL, e.g. `http://127.0.0.1:7300`. */
  url: string;
  close(): Promise<void>;
}

/** Build the API and listen on `host:port` (port 0 picks one). */
export async function startApi(
  controller: Controller,
  opts: ApiOptions & { host?: string; port?: number },
): Promise<StartedApi> {
  const app = await buildApi(controller, opts);
  const host = opts.host ?? '127.0.0.1';
  await app.listen({ host, port: opts.port ?? 7300 });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  return { app, url, close: () => app.close() };
}
