/** How FerryError codes become HTTP statuses, and the JSON shape of every error answer. */
import { isFerryError, errorMessage } from '../common/errors.js';

/** The body of every 4xx/5xx answer of the API. */
export interface ApiErrorBody {
  error: { code: string; message: string };
}

const CONFLICT = new Set([
  'MIGRATION_RUNNING',
  'MIGRATION_SAME_SERVER',
  'TEMP_IP_EXHAUSTED',
  'JOURNAL_DUPLICATE',
  'MIGRATION_TERMINAL',
  'MIGRATION_NOT_RUNNING',
  'CONFLICT',
]);

/** HTTP status of a FerryError code. */
export function statusOfCode(code: string): number {
  if (code.endsWith('_NOT_FOUND') || code === 'NOT_FOUND') return 404;
  if (CONFLICT.has(code) || code.endsWith('_RUNNING') || code.endsWith('_CONFLICT')) return 409;
  if (code === 'NOT_IMPLEMENTED') return 501;
  if (code === 'VALIDATION' || code.endsWith('_INVALID') || code.endsWith('_OPTIONS') || code === 'USAGE') return 400;
  if (code === 'CONTROLLER_STOPPING' || code.endsWith('_FULL') || code.endsWith('_UNAVAILABLE')) return 503;
  return 500;
}

/** Status and body for any thrown value; anything but a FerryError is a 500 `INTERNAL`. */
export function toApiError(err: unknown): { status: number; body: ApiErrorBody } {
  if (isFerryError(err)) return { status: statusOfCode(err.code), body: { error: { code: err.code, message: err.message } } };
  return { status: 500, body: { error: { code: 'INTERNAL', message: `internal error: ${errorMessage(err)}` } } };
}
