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

export const schemas = {
  createMigration: {
    type: 'object',
    additionalProperties: false,
    required: ['domain', 'to'],
    properties: { domain, to: serverId, id: migrationId, timings },
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
  listQuery: {
    type: 'object',
    additionalProperties: false,
    properties: {
      limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
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
