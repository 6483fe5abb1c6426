/** JSON schemas of the API's requests and answers: fastify validates with them, OpenAPI shows them. */

const timings = {
  type: 'object',
  additionalProperties: false,
  description: 'Timing knobs of this migration; omitted ones take the controller defaults',
  properties: {
    ttl: {
      type: 'integer',
      minimum: 1,
      maximum: 86400,
      description: 'TTL (s) of the A record while at IPt and at IP2',
    },
    quietWindowMs: { type: 'integer', minimum: 0, maximum: 3_600_000 },
    dnsTempCapMs: { type: 'integer', minimum: 0, maximum: 86_400_000 },
    drainCapMs: { type: 'integer', minimum: 0, maximum: 86_400_000 },
    cutoverDrainTimeoutMs: { type: 'integer', minimum: 0, maximum: 3_600_000 },
    pollMs: { type: 'integer', minimum: 10, maximum: 60_000 },
  },
} as const;

/** A domain name: dot-separated labels of 1-63 letters, digits, '-' or '_' (not at a label's ends), 253 characters at most, an optional final dot. */
const domain = {
  type: 'string',
  minLength: 1,
  maxLength: 254,
  pattern:
    '^(?=.{1,253}\\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\\.?$',
} as const;
const serverId = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' } as const;
const migrationId = { type: 'string', minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9._-]+$' } as const;

const pageLimit = {
  type: 'integer',
  minimum: 1,
  maximum: 1000,
  default: 100,
  description: 'most items in the answer (1-1000, default 100)',
} as const;
const cursor = {
  type: 'string',
  minLength: 1,
  maxLength: 1000,
  description: "the `next` of the previous page's answer; the first page without one",
} as const;

export const errorSchema = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: { code: { type: 'string' }, message: { type: 'string' } },
      required: ['code', 'message'],
    },
  },
  required: ['error'],
} as const;

const phase = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    startedAt: { type: 'number' },
    endedAt: { type: ['number', 'null'] },
  },
} as const;

export const migrationSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    id: { type: 'string' },
    domain: { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
    phase: { type: 'string' },
    createdAt: { type: 'number' },
    updatedAt: { type: 'number' },
    error: { type: 'string' },
    plan: { type: 'object', additionalProperties: true },
    phases: { type: 'array', items: phase },
    redirectRemovedAt: { type: 'number', description: 'when the redirect at the temporary IP was stopped' },
    tempIpRemovedAt: { type: 'number', description: 'when the temporary IP was taken down' },
  },
} as const;

const sourceRef = {
  type: 'object',
  additionalProperties: true,
  description: 'where it was read: configuration file and line (from 1)',
  properties: { file: { type: 'string' }, line: { type: 'integer' } },
} as const;

/** One site of a server's own web server (an nginx server block or Apache virtual host). */
const webSite = {
  type: 'object',
  additionalProperties: true,
  properties: {
    server: { type: 'string', enum: ['nginx', 'apache'] },
    at: sourceRef,
    names: { type: 'array', items: { type: 'string' } },
    defaultServer: { type: 'boolean' },
    listens: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: true,
        properties: {
          address: { type: ['string', 'null'], description: 'null: every address' },
          port: { type: 'integer' },
          tls: { type: 'boolean' },
          at: sourceRef,
        },
      },
    },
    paths: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: true,
        properties: { path: { type: 'string' }, directive: { type: 'string' }, at: sourceRef },
      },
    },
    application: { type: 'string', enum: ['static', 'php-fpm', 'proxy', 'mixed'] },
    apps: { type: 'array', items: { type: 'object', additionalProperties: true } },
    certificates: {
      type: 'array',
      description: 'file paths only; certificate and key contents never leave the agent here',
      items: {
        type: 'object',
        additionalProperties: true,
        properties: { certificate: { type: 'string' }, key: { type: ['string', 'null'] }, at: sourceRef },
      },
    },
    user: { type: ['string', 'null'] },
    group: { type: ['string', 'null'] },
    movable: { type: 'boolean' },
    refusals: {
      type: 'array',
      description: 'why Ferry will not move the site, each with a stable code',
      items: {
        type: 'object',
        additionalProperties: true,
        properties: { code: { type: 'string' }, message: { type: 'string' }, at: sourceRef },
      },
    },
  },
} as const;

/** The answer of GET /v1/servers/{id}/web-sites: the agent's report. */
export const webSitesSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    serverId: { type: 'string' },
    server: { type: 'string', enum: ['nginx', 'apache'], description: 'which web server was read' },
    command: { type: 'string', description: 'the dump command whose output was read, e.g. nginx -T' },
    declaredRoots: { type: 'array', items: { type: 'string' } },
    sites: { type: 'array', items: webSite },
  },
} as const;

export const schemas = {
  createMigration: {
    type: 'object',
    additionalProperties: false,
    required: ['domain', 'to'],
    properties: {
      domain,
      to: serverId,
      id: migrationId,
      timings,
      kind: {
        type: 'string',
        enum: ['builtin', 'web'],
        description:
          "what serves the site when the config does not say: builtin (the agent's app) or web (the server's own nginx or Apache)",
      },
    },
  },
  previewMigration: {
    type: 'object',
    additionalProperties: false,
    required: ['domain', 'to'],
    properties: {
      domain,
      to: serverId,
      kind: {
        type: 'string',
        enum: ['builtin', 'web'],
        description: 'as for a migration: what serves the site when the config does not say',
      },
    },
  },
  evacuate: {
    type: 'object',
    additionalProperties: false,
    required: ['from', 'to'],
    properties: {
      from: serverId,
      to: serverId,
      concurrency: { type: 'integer', minimum: 1, maximum: 64 },
      timings,
    },
  },
  idParam: { type: 'object', required: ['id'], properties: { id: migrationId } },
  serverParam: { type: 'object', required: ['id'], properties: { id: serverId } },
  domainParam: { type: 'object', required: ['domain'], properties: { domain } },
  pageQuery: {
    type: 'object',
    additionalProperties: false,
    properties: { limit: pageLimit, cursor },
  },
  sitesQuery: {
    type: 'object',
    additionalProperties: false,
    properties: {
      limit: pageLimit,
      cursor,
      server: { ...serverId, description: 'only the sites this server hosts now' },
    },
  },
  listQuery: {
    type: 'object',
    additionalProperties: false,
    properties: {
      limit: pageLimit,
      cursor,
      domain,
      active: { type: 'boolean', description: 'only migrations not yet ended' },
    },
  },
  eventsQuery: {
    type: 'object',
    additionalProperties: false,
    properties: {
      migration: migrationId,
      since: {
        type: 'integer',
        minimum: 0,
        description: 'replay events after this seq (Last-Event-ID wins when both are given)',
      },
    },
  },
} as const;
