/**
 * The error code table: every code maps to the status, exit code and meaning the operator guide
 * documents, through each reader (the HTTP answer of the API and the agent, the CLI's exit code),
 * and Fastify's own request errors map to codes of the table.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { cliErrorOf } from '../cli/client.js';
import {
  ERROR_CODES,
  EXIT,
  exitOfCode,
  isErrorCode,
  statusOfCode,
  toErrorCode,
  type ErrorCode,
} from './error-codes.js';
import { FerryError, isFerryError } from './errors.js';
import { toApiError } from './http-errors.js';

const codes = Object.keys(ERROR_CODES) as ErrorCode[];

test('the table: codes sorted and well formed, statuses of errors, exit codes of the README, one-line meanings', () => {
  assert.deepEqual([...codes].sort(), codes, 'keep the table sorted by code');
  const exits = new Set<number>(Object.values(EXIT));
  for (const code of codes) {
    const { status, exit, meaning } = ERROR_CODES[code];
    assert.match(code, /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$/, code);
    assert.ok(status >= 400 && status <= 599, `${code}: status ${status}`);
    assert.ok(exits.has(exit) && exit > 0, `${code}: exit ${exit}`);
    assert.ok(meaning.length > 0 && !meaning.includes('\n'), `${code}: meaning`);
    // 401 and 403 are "authentication refused" and only they are; 3 is the unreachable controller only.
    assert.equal(
      status === 401 || status === 403,
      exit === EXIT.auth,
      `${code}: status ${status}, exit ${exit}`,
    );
    assert.equal(exit === EXIT.unreachable, code === 'UNREACHABLE', code);
  }
  assert.equal(EXIT.ok, 0);
  assert.deepEqual([EXIT.failed, EXIT.usage, EXIT.unreachable, EXIT.auth], [1, 2, 3, 4]);
});

test('the issue: bad requests the controller refuses are 4xx', () => {
  assert.equal(statusOfCode('MIGRATION_NO_IPV6'), 409);
  assert.equal(statusOfCode('MIGRATION_DIRECT_NO_IP'), 409);
  assert.equal(statusOfCode('DNS_BAD_TEXT'), 400);
  assert.equal(statusOfCode('VALIDATION'), 400);
  assert.equal(exitOfCode('VALIDATION'), EXIT.usage);
});

test('every code maps as the operator guide documents: HTTP answer, CLI exit code, meaning', () => {
  const guide = readFileSync(new URL('../../docs/operator-guide.md', import.meta.url), 'utf8');
  const documented = new Map<string, { status: number; exit: number; meaning: string }>();
  for (const m of guide.matchAll(/^\| `([A-Z0-9_]+)` \| (\d{3}) \| (\d) \| (.+) \|$/gm)) {
    documented.set(m[1]!, { status: Number(m[2]), exit: Number(m[3]), meaning: m[4]! });
  }
  const row = (c: ErrorCode) =>
    `| \`${c}\` | ${ERROR_CODES[c].status} | ${ERROR_CODES[c].exit} | ${ERROR_CODES[c].meaning} |`;
  const missing = codes.filter((c) => !documented.has(c));
  assert.deepEqual(missing, [], `add to the operator guide's error table:\n${missing.map(row).join('\n')}`);
  assert.deepEqual(
    [...documented.keys()].filter((c) => !isErrorCode(c)),
    [],
    'the guide documents codes the table does not have',
  );
  for (const code of codes) {
    const { status, exit } = ERROR_CODES[code];
    assert.deepEqual(
      documented.get(code),
      { status, exit, meaning: ERROR_CODES[code].meaning },
      `the guide's row should be: ${row(code)}`,
    );
    // The readers: the API's and the agent's answer, the CLI's exit code.
    const err = new FerryError(code, `a ${code}`);
    assert.deepEqual(toApiError(err), { status, body: { error: { code, message: `a ${code}` } } });
    assert.equal(statusOfCode(code), status);
    assert.equal(exitOfCode(code), exit);
    const cli = cliErrorOf(err);
    assert.equal(cli.exitCode, exit, code);
    assert.equal(cli.code, code);
    assert.ok(isFerryError(err, code));
  }
});

test("Fastify's request errors answer codes of the table; anything else is INTERNAL", () => {
  const fst = (code: string, statusCode: number, extra: object = {}) =>
    Object.assign(new Error(`fastify ${code}`), { code, statusCode, ...extra });
  const cases: Array<[Error, ErrorCode, number]> = [
    [fst('FST_ERR_VALIDATION', 400, { validation: [] }), 'VALIDATION', 400],
    [fst('FST_ERR_MAX_PARAM_LENGTH', 414), 'VALIDATION', 400],
    [fst('FST_ERR_BAD_URL', 400), 'BAD_REQUEST', 400],
    [fst('FST_ERR_CTP_INVALID_JSON_BODY', 400), 'BAD_JSON', 400],
    [fst('FST_ERR_CTP_EMPTY_JSON_BODY', 400), 'BAD_JSON', 400],
    [fst('FST_ERR_CTP_BODY_TOO_LARGE', 413), 'BODY_TOO_LARGE', 413],
    [fst('FST_ERR_CTP_INVALID_MEDIA_TYPE', 415), 'UNSUPPORTED_MEDIA_TYPE', 415],
    [fst('FST_ERR_SOMETHING_NEW', 405), 'BAD_REQUEST', 400],
    [fst('FST_ERR_SOMETHING_BROKEN', 500), 'INTERNAL', 500],
    [new TypeError('x is undefined'), 'INTERNAL', 500],
  ];
  for (const [err, code, status] of cases) {
    const a = toApiError(err);
    assert.equal(a.status, status, err.message);
    assert.equal(a.body.error.code, code, err.message);
    assert.equal(a.status, ERROR_CODES[code].status);
  }
  assert.match(toApiError('a string').body.error.message, /internal error: a string/);
});

test('codes from a wire or a worker: kept when known, else the fallback', () => {
  assert.equal(toErrorCode('SITE_NOT_FOUND', 'AGENT_HTTP'), 'SITE_NOT_FOUND');
  assert.equal(toErrorCode('FROM_A_NEWER_AGENT', 'AGENT_HTTP'), 'AGENT_HTTP');
  assert.equal(toErrorCode(undefined, 'RELAY_WORKER'), 'RELAY_WORKER');
  assert.equal(toErrorCode('toString', 'AGENT_HTTP'), 'AGENT_HTTP');
  assert.equal(statusOfCode('NOT_A_CODE'), 500);
  assert.equal(exitOfCode('NOT_A_CODE'), EXIT.failed);
});
