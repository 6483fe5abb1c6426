/** Shared building blocks: the error class and its code table, logging and time helpers. */
export { FerryError, isFerryError, errorMessage } from './errors.js';
export { ERROR_CODES, EXIT, isErrorCode, toErrorCode, statusOfCode, exitOfCode, type ErrorCode, type ErrorCodeInfo } from './error-codes.js';
export { toApiError, errorAnswer, clientErrorAnswer, type ApiErrorBody } from './http-errors.js';
export { createLogger, silentLogger, type Logger } from './log.js';
export { sleep, waitFor, abortable } from './time.js';
export { mulberry32 } from './random.js';
