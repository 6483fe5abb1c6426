/**
 * The query path as a chain of small handlers (CoreDNS style). Each handler has one job: it
 * either finishes the response itself (a refusal is an rcode) or calls `next()` to pass the query
 * on, and may post-process after `next()` returns. The order is written once, in `QUERY_CHAIN`.
 */
import type { DnsMessage, Question } from '../wire/message.js';
import type { Zone } from '../zone/zone.js';
import type { ZoneStore } from '../zone/store.js';
import { checkClassAndType, checkOpcode, checkQuestionCount } from './checks.js';
import { edns } from './edns.js';
import { selectZone } from './zone-select.js';
import { minimalAny } from './any.js';
import { additional } from './additional.js';
import { lookup } from './lookup.js';

/** Everything a handler sees: the query, the response under construction, and the choices made. */
export interface QueryContext {
  readonly query: DnsMessage;
  readonly transport: 'udp' | 'tcp';
  readonly store: ZoneStore;
  /** Largest UDP payload this server sends (its EDNS advertisement). */
  readonly maxUdpPayload: number;
  /** The reply; starts as header flags and question echoed from the query. */
  response: DnsMessage;
  /** Set once the question count is checked. */
  question?: Question;
  /** Case-folded question name. */
  qkey?: string;
  /** Set by `selectZone`. */
  zone?: Zone;
  /** Size limit for this response over UDP (512 without EDNS, RFC 6891 §6.2.5). */
  udpLimit: number;
  /** Leading additional records that must fit or TC is set (referral glue, RFC 9471). */
  requiredAdditional: number;
  /** False when the response may not be reused for other spellings of the question (see cache.ts). */
  cacheable: boolean;
}

export type Next = () => void;
export type Handler = (ctx: QueryContext, next: Next) => void;

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
