/** Request checks at the head of the chain: opcode, question count, class and QTYPE. */
import { Opcode, RRClass, RRType, Rcode } from '../wire/types.js';
import { nameKey } from '../wire/name.js';
import type { Handler } from './context.js';

/** NOTIMP for any opcode but QUERY (RFC 1035 §4.1.1; UPDATE/NOTIFY handlers go before this). */
export const checkOpcode: Handler = (ctx, next) => {
  if (ctx.query.opcode !== Opcode.QUERY) {
    ctx.response.rcode = Rcode.NOTIMP;
    return;
  }
  next();
};

/** FORMERR unless QDCOUNT is 1 (RFC 9619 §4 for more than one; none leaves nothing to answer). */
export const checkQuestionCount: Handler = (ctx, next) => {
  const q = ctx.query.questions;
  if (q.length !== 1) {
    ctx.response.rcode = Rcode.FORMERR;
    ctx.response.questions = [];
    return;
  }
  ctx.question = q[0]!;
  ctx.qkey = nameKey(q[0]!.name);
  next();
};

/**
 * Class IN, or ANY which matches it (RFC 1035 §3.2.5); REFUSED otherwise, as no zone of another
 * class is served. QTYPEs that cannot be asked (OPT, TSIG, TKEY) get FORMERR; zone transfers
 * are REFUSED until a transfer handler sits before this one.
 */
export const checkClassAndType: Handler = (ctx, next) => {
  const q = ctx.question!;
  if (q.class !== RRClass.IN && q.class !== RRClass.ANY) {
    ctx.response.rcode = Rcode.REFUSED;
    return;
  }
  switch (q.type) {
    case RRType.OPT:
    case RRType.TSIG:
    case 249: // TKEY
      ctx.response.rcode = Rcode.FORMERR;
      return;
    case RRType.AXFR:
    case RRType.IXFR:
      ctx.response.rcode = Rcode.REFUSED;
      return;
  }
  next();
};
