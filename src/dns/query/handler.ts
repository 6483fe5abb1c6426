/**
 * The last link of the request chain: queries, answered by the query engine (its answer cache,
 * then the query chain in chain.ts). A TSIG-signed query is resolved the same way and encoded
 * with room left for the signature; a signed request with another opcode is NOTIMP.
 */
import { bareResponse, type RequestHandler } from '../dispatch/request.js';
import { queryChannel, queryEvent } from '../metrics.js';
import { encodeMessage } from '../wire/message.js';
import { Opcode, Rcode } from '../wire/types.js';
import type { QueryEngine } from './engine.js';

/** Bytes kept free in a signed answer for its TSIG record. */
const TSIG_ROOM = 400;

/** The query handler over `engine`; unsigned answers publish a `ferry.dns.query` event. */
export function queryHandler(engine: QueryEngine): RequestHandler {
  return (req) => {
    if (req.key === undefined) {
      const t0 = queryChannel.hasSubscribers ? performance.now() : -1;
      const res = engine.answer(req.packet, req.transport);
      if (res && t0 >= 0) queryChannel.publish(queryEvent(req.packet, res, req.transport, t0));
      return res;
    }
    if (req.opcode !== Opcode.QUERY) return bareResponse(req.message, Rcode.NOTIMP);
    const query = req.query();
    if (!query) return bareResponse(req.message, Rcode.FORMERR);
    const ctx = engine.resolve(query, req.transport);
    return encodeMessage(ctx.response, {
      maxSize: req.transport === 'udp' ? ctx.udpLimit - TSIG_ROOM : 65535 - TSIG_ROOM,
      requiredAdditional: ctx.requiredAdditional,
    });
  };
}
