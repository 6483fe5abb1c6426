/**
 * From a query packet to a response packet: decode, run the handler chain, encode within the
 * transport's size limit. Pure and synchronous; the server adds the sockets.
 */
import {
  decodeMessage,
  encodeMessage,
  unpackHeader,
  HEADER_SIZE,
  NO_FLAGS,
  type DnsMessage,
} from '../wire/message.js';
import { isFerryError } from '../../common/errors.js';
import { Rcode } from '../wire/types.js';
import type { ZoneStore } from '../zone/store.js';
import { QUERY_CHAIN, runChain } from './chain.js';
import type { Handler, QueryContext } from './context.js';
import { MIN_UDP } from './edns.js';
import { AnswerCache, patch, probe } from './cache.js';
import { fastAnswer } from './fast.js';

export interface QueryEngineOptions {
  /** Our EDNS UDP payload size (default 1232, the DNS Flag Day 2020 value). */
  maxUdpPayload?: number;
  /** Replaces the default chain (tests, or transfer/update handlers put in front). */
  chain?: readonly Handler[];
  /**
   * Precompiled answers kept for the hot path (default 100000, some 20 MB at most; 0 turns the
   * cache off). Eviction is oldest-first, so it should exceed the distinct questions asked.
   */
  answerCacheSize?: number;
  /**
   * Answer plain queries straight from the zone's wire data (fast.ts; default true). Off, every
   * query takes the chain: the tests compare the two.
   */
  fastPath?: boolean;
}

/** Answers DNS queries for a zone store. */
export class QueryEngine {
  readonly maxUdpPayload: number;
  private readonly chain: readonly Handler[];
  /** The precompiled answers, when enabled. */
  readonly cache: AnswerCache | undefined;
  private readonly fast: boolean;

  constructor(
    readonly store: ZoneStore,
    opts: QueryEngineOptions = {},
  ) {
    this.maxUdpPayload = opts.maxUdpPayload ?? 1232;
    if (!Number.isInteger(this.maxUdpPayload) || this.maxUdpPayload < MIN_UDP || this.maxUdpPayload > 65535) {
      throw new RangeError(`maxUdpPayload must be an integer from 512 to 65535, got ${opts.maxUdpPayload}`);
    }
    this.chain = opts.chain ?? QUERY_CHAIN;
    const size = opts.answerCacheSize ?? 100_000;
    if (!Number.isInteger(size) || size < 0)
      throw new RangeError(`answerCacheSize must be a non-negative integer, got ${size}`);
    this.cache = size > 0 ? new AnswerCache(size) : undefined;
    this.fast = opts.fastPath ?? true;
  }

  /**
   * The response to a packet, or undefined when it must be dropped: shorter than a header, or a
   * response itself (QR set). Anything else malformed gets FORMERR (RFC 1035 §4.1.1).
   */
  answer(packet: Uint8Array, transport: 'udp' | 'tcp'): Buffer | undefined {
    const hot = this.cache || this.fast ? probe(packet, transport, this.maxUdpPayload) : undefined;
    if (hot) {
      const hit = this.cache?.get(hot.key, this.store.generation);
      if (hit) return patch(hit, packet, hot.qnameEnd);
      const generation = this.store.generation;
      const res = this.fast ? fastAnswer(this.store, packet, hot, this.maxUdpPayload) : undefined;
      if (res) {
        this.cache?.set(hot.key, generation, res);
        return res;
      }
    }
    if (packet.length < HEADER_SIZE) return undefined;
    const h = unpackHeader(packet);
    if (h.flags.qr) return undefined;
    let query: DnsMessage;
    try {
      query = decodeMessage(packet);
    } catch (err) {
      if (!isFerryError(err, 'DNS_MALFORMED')) throw err;
      return encodeMessage({
        id: h.id,
        opcode: h.opcode,
        rcode: Rcode.FORMERR,
        flags: { ...NO_FLAGS, qr: true, rd: h.flags.rd, cd: h.flags.cd },
        questions: [],
        answers: [],
        authority: [],
        additional: [],
      });
    }
    const generation = this.store.generation;
    const ctx = this.resolve(query, transport);
    const res = encodeMessage(ctx.response, {
      maxSize: transport === 'udp' ? ctx.udpLimit : 65535,
      requiredAdditional: ctx.requiredAdditional,
    });
    if (hot && ctx.cacheable) this.cache?.set(hot.key, generation, res);
    return res;
  }

  /** Runs a decoded query through the chain; the response is `ctx.response`. */
  resolve(query: DnsMessage, transport: 'udp' | 'tcp'): QueryContext {
    const ctx: QueryContext = {
      query,
      transport,
      store: this.store,
      maxUdpPayload: this.maxUdpPayload,
      response: {
        id: query.id,
        opcode: query.opcode,
        rcode: Rcode.NOERROR,
        flags: { ...NO_FLAGS, qr: true, rd: query.flags.rd, cd: query.flags.cd },
        questions: query.questions.slice(0, 1),
        answers: [],
        authority: [],
        additional: [],
      },
      udpLimit: MIN_UDP,
      requiredAdditional: 0,
      cacheable: true,
    };
    runChain(ctx, this.chain);
    return ctx;
  }
}
