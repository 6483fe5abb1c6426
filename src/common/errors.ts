/**
 * One error class for the whole project, with a stable `code` that callers and tests match on
 * (never on the message). Wrap lower-level failures with `{ cause }`.
 */
export class FerryError extends Error {
  /** Stable machine-readable code, e.g. `ZONE_SYNTAX`, `RELAY_UPSTREAM_DOWN`. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FerryError';
    this.code = code;
  }
}

/** True when `err` is a FerryError, optionally with the given code. */
export function isFerryError(err: unknown, code?: string): err is FerryError {
  return err instanceof FerryError && (code === undefined || err.code === code);
}

/** Best-effort message of an unknown thrown value. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
