/** Dynamic UPDATE (RFC 2136): the server side and a client. */
export { applyUpdate, updateZone, type UpdateResult } from './update.js';
export { decodeUpdate, encodeUpdate, type UpdateMessage, type UpdateRR } from './wire.js';
export { sendUpdate, upd, type SendUpdateOptions, type UpdateAnswer } from './client.js';
