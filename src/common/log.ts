/**
 * Logging at the edges (server loops, CLI, API) through pino. Inner code returns errors instead
 * of logging. Secrets are redacted by path wherever they might appear in a logged object.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

const redact = ['secret', 'token', 'key', 'password', '*.secret', '*.token', '*.password', '*.tsigSecret'];

/** A logger writing JSON lines to stderr; `FERRY_LOG_LEVEL` sets the level (default `info`). */
export function createLogger(name: string, level = process.env.FERRY_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, redact: { paths: redact, censor: '[redacted]' } }, pino.destination(2));
}

/** A logger that drops everything; the default for library use and tests. */
export const silentLogger: Logger = pino({ level: 'silent' });
