/** EDNS(0) (RFC 6891): answers an OPT with an OPT and sets the UDP size limit. */
import { Rcode } from '../wire/types.js';
import type { Handler } from './context.js';

/** Smallest UDP payload any resolver must accept (RFC 1035 §4.2.1, RFC 6891 §6.2.5). */
export const MIN_UDP = 512;

/**
 * With an OPT in the query the response carries ours (our payload size, version 0, DO copied,
 * RFC 3225 §3) and may be as large as min(their size, ours), never below 512. A version other
 * than 0 gets BADVERS (RFC 6891 §6.1.3). Options are not echoed (§6.1.2: only known ones are).
 */
export const edns: Handler = (ctx, next) => {
  const e = ctx.query.edns;
  if (!e) {
    ctx.udpLimit = MIN_UDP;
    next();
    return;
  }
  ctx.response.edns = { udpSize: ctx.maxUdpPayload, version: 0, dnssecOk: e.dnssecOk, options: [] };
  if (e.version !== 0) {
    ctx.response.rcode = Rcode.BADVERS;
    return;
  }
  ctx.udpLimit = Math.max(MIN_UDP, Math.min(e.udpSize, ctx.maxUdpPayload));
  next();
};
