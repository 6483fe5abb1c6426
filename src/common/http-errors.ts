/**
 * How errors become HTTP answers of the control API and the agent: the status from the code
 * table, one JSON shape `{ error: { code, message } }` for every 4xx and 5xx.
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyError } from 'fastify';
import { isFerryError, errorMessage } from './errors.js';
import { ERROR_CODES, type ErrorCode } from './error-codes.js';

/** The body of every 4xx/5xx answer of the API and the agent. */
export interface ApiErrorBody {
  error: { code: string; message: string };
}

/** Fastify's own request errors and the table code each answers with. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_VALIDATION: 'VALIDATION',
  FST_ERR_MAX_PARAM_LENGTH: 'VALIDATION',
  FST_ERR_BAD_URL: 'BAD_REQUEST',
  FST_ERR_CTP_INVALID_JSON_BODY: 'BAD_JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'BAD_JSON',
  FST_ERR_CTP_BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'BAD_REQUEST',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
};

/** The answer for `code` with `message`. */
export function errorAnswer(code: ErrorCode, message: string): { status: number; body: ApiErrorBody } {
  return { status: ERROR_CODES[code].status, body: { error: { code, message } } };
}

/**
 * Status and body for any thrown value: a FerryError by its code; Fastify's request errors
 * (validation, bad JSON, body too large, wrong content type, over-long parameters) as the table
 * codes above, any other 4xx of Fastify or a plugin as `BAD_REQUEST`; anything else a 500 `INTERNAL`.
 */
export function toApiError(err: unknown): { status: number; body: ApiErrorBody } {
  if (isFerryError(err)) return errorAnswer(err.code, err.message);
  const fe = err as Partial<FastifyError> | undefined;
  if (fe && typeof fe === 'object') {
    if (fe.validation) return errorAnswer('VALIDATION', errorMessage(err));
    const mapped = typeof fe.code === 'string' ? FASTIFY_CODES[fe.code] : undefined;
    if (mapped) return errorAnswer(mapped, errorMessage(err));
    if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500)
      return errorAnswer('BAD_REQUEST', errorMessage(err));
  }
  return errorAnswer('INTERNAL', `internal error: ${errorMessage(err)}`);
}

/**
 * Fastify's `clientErrorHandler`: a request Node's parser refuses (headers or URL too large, a
 * malformed request line, a timeout) still gets the JSON error shape before the socket closes.
 */
export function clientErrorAnswer(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const { status, body } =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? errorAnswer('HEADERS_TOO_LARGE', 'the request line and headers are larger than the server accepts')
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? errorAnswer('REQUEST_TIMEOUT', 'the request did not arrive in time')
        : errorAnswer('BAD_REQUEST', 'the request is not valid HTTP');
  const text = JSON.stringify(body);
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(text)}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${text}`,
    );
  }
  socket.destroy(err);
}
