/**
 * Bad input to every route of the control API, generated from the OpenAPI document the API
 * serves: wrong types, missing and extra keys, bad and huge strings, arrays for scalars, numbers
 * out of range, bad path parameters and query strings, bodies that are not JSON or too large, and
 * URLs past the header limit. No answer is a 5xx; every 4xx is `{"error":{"code","message"}}`
 * with a code of the error table and that code's status; input the schema refuses is a 4xx.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { generateToken, startApi, type StartedApi } from '../../src/api/index.js';
import { ERROR_CODES, isErrorCode } from '../../src/common/error-codes.js';
import { Sandbox } from '../../src/sandbox/index.js';

const OPERATOR = generateToken();

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  minimum?: number;
  maximum?: number;
}

interface Operation {
  parameters?: Array<{ in: 'path' | 'query'; name: string; schema: Schema }>;
  requestBody?: { content: Record<string, { schema: Schema }> };
}

/** One generated request and whether the API must refuse it (input its schema does not allow). */
interface Probe {
  what: string;
  method: string;
  path: string;
  body?: string;
  contentType?: string;
  mustRefuse: boolean;
}

/** Valid values of the fields the API's bodies and paths require, by name. */
const VALID: Record<string, unknown> = {
  domain: 'shop.example',
  to: 'target',
  from: 'origin',
  id: 'fuzz-1',
  concurrency: 1,
  timings: { ttl: 5 },
  ttl: 5,
};

/** A valid value for `s` (named `name`). */
function validOf(name: string, s: Schema): unknown {
  if (name in VALID) return VALID[name];
  if (s.type === 'integer' || s.type === 'number') return s.minimum ?? 0;
  if (s.type === 'boolean') return true;
  if (s.type === 'object') return {};
  return 'x';
}

/** Whether `s` allows `v` (types, lengths, pattern, range, keys: what the API's schemas use). */
function allows(s: Schema, v: unknown): boolean {
  const types = s.type === undefined ? [] : Array.isArray(s.type) ? s.type : [s.type];
  const typeOf =
    v === null ? 'null' : Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v;
  if (types.length && !types.includes(typeOf) && !(typeOf === 'integer' && types.includes('number')))
    return false;
  if (typeof v === 'string') {
    if (s.minLength !== undefined && v.length < s.minLength) return false;
    if (s.maxLength !== undefined && v.length > s.maxLength) return false;
    if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(v)) return false;
  }
  if (typeof v === 'number') {
    if (s.minimum !== undefined && v < s.minimum) return false;
    if (s.maximum !== undefined && v > s.maximum) return false;
  }
  if (typeOf === 'object' && s.properties) {
    const o = v as Record<string, unknown>;
    if ((s.required ?? []).some((k) => !(k in o))) return false;
    if (s.additionalProperties === false && Object.keys(o).some((k) => !(k in s.properties!))) return false;
    return Object.entries(o).every(([k, x]) => !s.properties![k] || allows(s.properties![k]!, x));
  }
  return true;
}

/** Bad strings to try anywhere a string goes. */
const BAD_STRINGS = [
  '',
  ' ',
  'a b',
  'blog..example',
  `${'a'.repeat(64)}.example`,
  `${'a'.repeat(63)}.`.repeat(5),
  '.example',
  '-a.example',
  'a-.example',
  '../etc/passwd',
  'x\u0000y',
  'é.example',
  '<script>',
  'x'.repeat(255),
  'x'.repeat(20_000),
];

/** Values of the wrong JSON type, and out-of-range or malformed ones, for a value of schema `s`. */
function badValues(name: string, s: Schema, depth = 0): Array<{ what: string; value: unknown }> {
  const valid = validOf(name, s);
  const out: Array<{ what: string; value: unknown }> = [];
  for (const [what, value] of [
    ['null', null],
    ['true', true],
    ['7', 7],
    ['1.5', 1.5],
    ['"7"', '7'],
    ['"x"', 'x'],
    ['[]', []],
    ['{}', {}],
    ['[valid]', [valid]],
    ['{valid}', { value: valid }],
  ] as const) {
    out.push({ what: `${name}=${what}`, value });
  }
  if (s.type === 'string')
    for (const v of BAD_STRINGS)
      out.push({ what: `${name}="${v.slice(0, 20)}${v.length > 20 ? `…(${v.length})` : ''}"`, value: v });
  if (s.type === 'integer' || s.type === 'number') {
    for (const v of [
      s.minimum !== undefined ? s.minimum - 1 : undefined,
      s.maximum !== undefined ? s.maximum + 1 : undefined,
      -1,
      1e300,
      2 ** 53 + 1,
      0.5,
    ]) {
      if (v !== undefined) out.push({ what: `${name}=${v}`, value: v });
    }
  }
  if (s.type === 'object' && s.properties && depth < 2) {
    for (const bad of badObjects(s, (valid ?? {}) as Record<string, unknown>, depth + 1))
      out.push({ what: `${name}.${bad.what}`, value: bad.value });
  }
  return out.filter((b) => !allows(s, b.value));
}

/** Objects of schema `s` with one thing wrong, from the valid `base`. */
function badObjects(
  s: Schema,
  base: Record<string, unknown>,
  depth = 0,
): Array<{ what: string; value: unknown }> {
  const out: Array<{ what: string; value: unknown }> = [];
  for (const k of s.required ?? []) {
    const { [k]: _gone, ...rest } = base;
    out.push({ what: `missing ${k}`, value: rest });
  }
  out.push({ what: 'extra key', value: { ...base, unexpected: 1 } });
  for (const [k, ps] of Object.entries(s.properties ?? {})) {
    for (const bad of badValues(k, ps, depth))
      out.push({ what: bad.what, value: { ...base, [k]: bad.value } });
  }
  return out;
}

/** The requests to make for one operation. */
function probesOf(method: string, template: string, op: Operation): Probe[] {
  const params = op.parameters ?? [];
  const pathParams = params.filter((p) => p.in === 'path');
  const queryParams = params.filter((p) => p.in === 'query');
  const fill = (over: Record<string, string> = {}) =>
    template.replace(
      /\{(\w+)\}/g,
      (_m, n: string) =>
        over[n] ?? encodeURIComponent(String(validOf(n, pathParams.find((p) => p.name === n)!.schema))),
    );
  const M = method.toUpperCase();
  const probes: Probe[] = [];
  const bodySchema = op.requestBody?.content['application/json']?.schema;
  const base = bodySchema
    ? Object.fromEntries((bodySchema.required ?? []).map((k) => [k, validOf(k, bodySchema.properties![k]!)]))
    : undefined;
  const validBody = base ? JSON.stringify(base) : undefined;

  // Path parameters: invalid values, badly encoded ones, over the router's limit, past the header limit.
  for (const p of pathParams) {
    for (const bad of badValues(p.name, p.schema)) {
      if (typeof bad.value !== 'string') continue;
      probes.push({
        what: `path ${bad.what}`,
        method: M,
        path: fill({ [p.name]: encodeURIComponent(bad.value) }),
        body: validBody,
        contentType: validBody && 'application/json',
        mustRefuse: bad.value !== '',
      });
    }
    for (const raw of ['%zz', '%', '%00', 'x'.repeat(300)]) {
      probes.push({
        what: `path ${p.name}=${raw.slice(0, 10)}`,
        method: M,
        path: fill({ [p.name]: raw }),
        body: validBody,
        contentType: validBody && 'application/json',
        mustRefuse: true,
      });
    }
  }
  // Query strings: bad values, unknown and repeated keys.
  for (const q of queryParams) {
    const bads: string[] =
      q.schema.type === 'integer'
        ? ['abc', '1.5', '-1', '1e400', String((q.schema.maximum ?? 1e20) + 1)]
        : q.schema.type === 'boolean'
          ? ['maybe', 'yes', '2']
          : BAD_STRINGS.filter((v) => v !== '');
    for (const v of bads) {
      const coerced = q.schema.type === 'integer' && /^-?\d+$/.test(v) ? Number(v) : v;
      if (q.schema.type === 'integer' && typeof coerced === 'number' && allows(q.schema, coerced)) continue;
      if (q.schema.type === 'string' && allows(q.schema, v)) continue;
      probes.push({
        what: `query ${q.name}=${v.slice(0, 20)}`,
        method: M,
        path: `${fill()}?${q.name}=${encodeURIComponent(v)}`,
        mustRefuse: true,
      });
    }
    probes.push({
      what: `query ${q.name} twice`,
      method: M,
      path: `${fill()}?${q.name}=${encodeURIComponent(String(validOf(q.name, q.schema)))}&${q.name}=x`,
      mustRefuse: true,
    });
  }
  if (queryParams.length)
    probes.push({ what: 'query unknown key', method: M, path: `${fill()}?unexpected=1`, mustRefuse: true });
  // Bodies.
  if (bodySchema && base) {
    for (const bad of badObjects(bodySchema, base)) {
      if (allows(bodySchema, bad.value)) continue;
      probes.push({
        what: `body ${bad.what}`,
        method: M,
        path: fill(),
        body: JSON.stringify(bad.value),
        contentType: 'application/json',
        mustRefuse: true,
      });
    }
    for (const [what, body] of [
      ['body []', '[]'],
      ['body "text"', '"text"'],
      ['body 1', '1'],
      ['body null', 'null'],
      ['body [valid]', `[${validBody}]`],
      ['body not JSON', '{"domain":'],
      ['body empty', ''],
      ['body __proto__', `{"__proto__":{"admin":true},${validBody!.slice(1)}`],
      ['body too large', JSON.stringify({ ...base, pad: 'x'.repeat(70_000) })],
    ] as const) {
      probes.push({ what, method: M, path: fill(), body, contentType: 'application/json', mustRefuse: true });
    }
    probes.push({
      what: 'body as text/plain',
      method: M,
      path: fill(),
      body: validBody!,
      contentType: 'text/plain',
      mustRefuse: true,
    });
    probes.push({
      what: 'body as a form',
      method: M,
      path: fill(),
      body: 'domain=shop.example&to=target',
      contentType: 'application/x-www-form-urlencoded',
      mustRefuse: true,
    });
    probes.push({
      what: 'body as XML',
      method: M,
      path: fill(),
      body: '<x/>',
      contentType: 'application/xml',
      mustRefuse: true,
    });
    probes.push({ what: 'no body', method: M, path: fill(), mustRefuse: true });
  } else if (M === 'POST') {
    // A route without a body schema ignores a JSON body, but not one that is not JSON.
    probes.push({
      what: 'body not JSON',
      method: M,
      path: fill(),
      body: '{"x":',
      contentType: 'application/json',
      mustRefuse: true,
    });
    probes.push({
      what: 'body too large',
      method: M,
      path: fill(),
      body: JSON.stringify({ pad: 'x'.repeat(70_000) }),
      contentType: 'application/json',
      mustRefuse: true,
    });
  }
  // A URL past Node's header limit.
  probes.push({
    what: 'URL of 20 kB',
    method: M,
    path: `${fill()}?pad=${'x'.repeat(20_000)}`,
    mustRefuse: true,
  });
  return probes;
}

function send(base: string, p: Probe): Promise<{ status: number; contentType: string; text: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(base);
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        method: p.method,
        path: p.path,
        headers: {
          authorization: `Bearer ${OPERATOR}`,
          ...(p.contentType ? { 'content-type': p.contentType } : {}),
          ...(p.body !== undefined ? { 'content-length': String(Buffer.byteLength(p.body)) } : {}),
        },
        timeout: 10_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            contentType: String(res.headers['content-type'] ?? ''),
            text,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within 10 s`)));
    req.on('error', reject);
    req.end(p.body);
  });
}

describe('control API: generated bad input to every route', () => {
  const sb = new Sandbox({
    dnsAddress: '127.0.86.53',
    dnsPort: 0,
    httpPort: 0,
    originIp: '127.0.86.1',
    targetIp: '127.0.86.2',
    tempIp: '127.0.86.100',
    ttl: 1,
  });
  let api: StartedApi;

  before(async () => {
    await sb.start();
    api = await startApi(sb.controller, {
      tokens: [{ token: OPERATOR, scope: 'operator' }],
      host: '127.0.86.10',
      port: 0,
      rateLimitPerMinute: 0,
      sampleIntervalMs: 0,
      dashboard: false,
    });
  });
  after(async () => {
    await api?.close();
    await sb.stop();
  });

  it(
    'no 5xx; every 4xx has the error shape, a code of the table and its status; refused input is a 4xx',
    { timeout: 120_000 },
    async () => {
      const doc = JSON.parse(
        (await send(api.url, { what: 'openapi', method: 'GET', path: '/openapi.json', mustRefuse: false }))
          .text,
      ) as {
        paths: Record<string, Record<string, Operation>>;
      };
      const probes = Object.entries(doc.paths).flatMap(([path, ops]) =>
        Object.entries(ops).flatMap(([method, op]) => probesOf(method, path, op)),
      );
      const routes = Object.values(doc.paths).reduce((n, ops) => n + Object.keys(ops).length, 0);
      assert.ok(
        Object.keys(doc.paths).length >= 12,
        `routes in the document: ${Object.keys(doc.paths).join(', ')}`,
      );
      assert.ok(probes.length > 300, `${probes.length} probes`);

      const problems: string[] = [];
      const seen = new Map<string, number>();
      for (const p of probes) {
        const res = await send(api.url, p).catch((err: Error) => ({
          status: 0,
          contentType: '',
          text: err.message,
        }));
        const tag = `${p.method} ${p.path.slice(0, 80)} (${p.what}) → ${res.status} ${res.text.slice(0, 160)}`;
        if (res.status === 0) problems.push(`no answer: ${tag}`);
        if (res.status >= 500) problems.push(`5xx: ${tag}`);
        if (p.mustRefuse && (res.status < 400 || res.status >= 500)) problems.push(`not refused: ${tag}`);
        if (res.status < 400) continue;
        let body: { error?: { code?: unknown; message?: unknown } } | undefined;
        try {
          body = JSON.parse(res.text) as typeof body;
        } catch {
          problems.push(`not JSON: ${tag}`);
          continue;
        }
        const keys = Object.keys(body ?? {});
        const e = body?.error;
        if (
          keys.length !== 1 ||
          !e ||
          typeof e.message !== 'string' ||
          !e.message ||
          Object.keys(e).sort().join() !== 'code,message'
        ) {
          problems.push(`shape: ${tag}`);
        } else if (!isErrorCode(e.code)) problems.push(`code not in the table: ${tag}`);
        else {
          if (ERROR_CODES[e.code].status !== res.status)
            problems.push(`status ${res.status} is not ${e.code}'s ${ERROR_CODES[e.code].status}: ${tag}`);
          seen.set(e.code, (seen.get(e.code) ?? 0) + 1);
        }
        if (!/^application\/json/.test(res.contentType))
          problems.push(`content type ${res.contentType}: ${tag}`);
      }
      assert.deepEqual(problems, [], `${problems.length} of ${probes.length} probes over ${routes} routes`);
      // The generator reached every kind of refusal, Fastify's own included.
      for (const code of [
        'VALIDATION',
        'BAD_JSON',
        'BODY_TOO_LARGE',
        'UNSUPPORTED_MEDIA_TYPE',
        'BAD_REQUEST',
        'HEADERS_TOO_LARGE',
      ]) {
        assert.ok(seen.has(code), `no probe answered ${code}: ${JSON.stringify([...seen])}`);
      }
      // Nothing got through: no migration was started.
      assert.deepEqual(sb.controller.listMigrations(), []);
    },
  );

  it('the domains of the issue: empty and 64-character labels, arrays for strings, are 400', async () => {
    for (const body of [
      { domain: 'blog..example', to: 'target' },
      { domain: `${'a'.repeat(64)}.example`, to: 'target' },
      { domain: ['blog.example'], to: 'target' },
      { domain: 'blog.example', to: ['target'] },
      { domain: 'blog.example', to: 'target', timings: { ttl: '5' } },
    ]) {
      const res = await send(api.url, {
        what: '',
        method: 'POST',
        path: '/v1/migrations',
        body: JSON.stringify(body),
        contentType: 'application/json',
        mustRefuse: true,
      });
      assert.equal(res.status, 400, `${JSON.stringify(body)}: ${res.text}`);
      assert.equal((JSON.parse(res.text) as { error: { code: string } }).error.code, 'VALIDATION');
    }
    const long = await send(api.url, {
      what: '',
      method: 'GET',
      path: `/v1/sites/${'a'.repeat(300)}`,
      mustRefuse: true,
    });
    assert.equal(long.status, 400, long.text);
    assert.equal((JSON.parse(long.text) as { error: { code: string } }).error.code, 'VALIDATION');
    assert.deepEqual(sb.controller.listMigrations(), []);
  });
});
