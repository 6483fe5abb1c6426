/**
 * The query path as a chain of small handlers (CoreDNS style). Each handler has one job: it
 * either finishes the response itself (a refusal is an rcode) or calls `next()` to pass the query
 * on, and may post-process after `next()` returns. The order is written once, in `QUERY_CHAIN`.
 */
import { checkClassAndType, checkOpcode, checkQuestionCount } from './checks.js';
import type { Handler, QueryContext } from './context.js';
import { edns } from './edns.js';
import { selectZone } from './zone-select.js';
import { minimalAny } from './any.js';
import { additional } from './additional.js';
import { lookup } from './lookup.js';

/** The chain, in order. */
export const QUERY_CHAIN: readonly Handler[] = [
  edns, // OPT parsed and answered; BADVERS
  checkOpcode, // NOTIMP for opcodes other than QUERY
  checkQuestionCount, // FORMERR unless exactly one question
  checkClassAndType, // class IN only; meta QTYPEs
  selectZone, // longest-match zone, REFUSED outside
  additional, // post: A/AAAA for NS/MX/SRV targets
  minimalAny, // post: RFC 8482 one RRset for ANY
  lookup, // the authoritative answer (RFC 1034 §4.3.2)
];

/** Runs `ctx` through `handlers` from index `i`. */
export function runChain(ctx: QueryContext, handlers: readonly Handler[] = QUERY_CHAIN, i = 0): void {
  const h = handlers[i];
  if (!h) return;
  h(ctx, () => runChain(ctx, handlers, i + 1));
}
