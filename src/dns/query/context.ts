/** What every query handler sees (the chain and its order are in chain.ts). */
import type { DnsMessage, Question } from '../wire/message.js';
import type { Zone } from '../zone/zone.js';
import type { ZoneStore } from '../zone/store.js';

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
