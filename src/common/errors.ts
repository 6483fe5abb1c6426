import type { ErrorCode } from './error-codes.js';

/**
 * One error class for the whole project, with a stable `code` that callers and tests match on
 * (never on the message). Codes come from the table in `error-codes.ts`, which also gives each
 * its HTTP status and exit code. Wrap lower-level failures with `{ cause }`.
 */
export class FerryError extends Error {
  /** Stable machine-readable code, e.g. `ZONE_SYNTAX`, `RELAY_LISTEN`. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FerryError';
    this.code = code;
  }
}

/** True when `err` is a FerryError, optionally with the given code. */
export function isFerryError(err: unknown, code?: ErrorCode): err is FerryError {
  return err instanceof FerryError && (code === undefined || err.code === code);
}

/** Best-effort message of an unknown thrown value. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
