/** Shared building blocks: the error class, logging and time helpers. */
export { FerryError, isFerryError, errorMessage } from './errors.js';
export { createLogger, silentLogger, type Logger } from './log.js';
export { sleep, waitFor, abortable } from './time.js';
export { mulberry32 } from './random.js';
