/**
 * The NOTIFY link of the request chain: Ferry is a primary only, so an incoming NOTIFY
 * (RFC 1996) is answered NOTIMP. Outgoing NOTIFY is notifier.ts.
 */
import { bareResponse, type RequestHandler } from '../dispatch/request.js';
import { Opcode, Rcode } from '../wire/types.js';

/** NOTIFY to us: NOTIMP (we are no secondary). */
export const notifyHandler: RequestHandler = (req, next) =>
  req.forPrimary && req.opcode === Opcode.NOTIFY ? bareResponse(req.message, Rcode.NOTIMP) : next(req);
