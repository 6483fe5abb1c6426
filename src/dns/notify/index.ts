/** NOTIFY (RFC 1996) to secondaries. */
export { Notifier, type NotifierOptions, type NotifyTarget } from './notifier.js';
