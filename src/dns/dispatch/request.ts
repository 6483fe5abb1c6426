/**
 * What every request handler sees and returns (the order of the handlers is in chain.ts). A
 * handler either answers (a refusal is an rcode) or passes the request on with `next(req)`, and
 * may change the answers that come back (TSIG signs them).
 */
import type { TsigKey } from '../tsig/tsig.js';
import {
  decodeMessage,
  encodeMessage,
  HEADER_SIZE,
  NO_FLAGS,
  unpackHeader,
  unpackQuestion,
  type DnsMessage,
  type Question,
} from '../wire/message.js';
import { skipName } from '../wire/name.js';
import { Opcode, RRType, Rcode } from '../wire/types.js';

/** Who sent a request. */
export interface Peer {
  /** The sender's address (on the native UDP path decoded only when read). */
  readonly address: string;
  /** A sender for an answer given after the handler returned (a request forwarded elsewhere). */
  later(): (msg: Buffer) => void;
}

/**
 * The response messages: one (the common case, not wrapped), several (a zone transfer), or
 * undefined for none now (dropped, or sent later through `peer.later()`).
 */
export type Answer = Buffer | Buffer[] | undefined;

/** One request on its way through the chain. */
export class DnsRequest {
  /** Whether a primary-role handler (TSIG, transfer, UPDATE, NOTIFY) may want it: `wantsPrimary`. */
  readonly forPrimary: boolean;
  /** The message the handlers read: the packet, or after TSIG the packet without its TSIG record. */
  message: Buffer;
  /** The key that signed the request (set by the TSIG handler); its answers get signed. */
  key: TsigKey | undefined = undefined;
  private decoded: DnsMessage | null | undefined = undefined;

  constructor(
    readonly packet: Buffer,
    readonly transport: 'udp' | 'tcp',
    readonly peer: Peer,
  ) {
    this.forPrimary = wantsPrimary(packet);
    this.message = packet;
  }

  /** The opcode of `message`. */
  get opcode(): number {
    return (this.message[2]! >> 3) & 0xf;
  }

  /** `message` decoded once, or undefined when it is malformed. */
  query(): DnsMessage | undefined {
    if (this.decoded === undefined) {
      try {
        this.decoded = decodeMessage(this.message);
      } catch {
        this.decoded = null;
      }
    }
    return this.decoded ?? undefined;
  }
}

/** The rest of the chain. */
export type Next = (req: DnsRequest) => Answer;
/** One link of the chain. */
export type RequestHandler = (req: DnsRequest, next: Next) => Answer;

/** The chain as one function, composed once (no allocation per request). */
export function compose(handlers: readonly RequestHandler[]): Next {
  let next: Next = () => undefined;
  for (let i = handlers.length - 1; i >= 0; i--) {
    const h = handlers[i]!;
    const rest = next;
    next = (req) => h(req, rest);
  }
  return next;
}

/**
 * Cheap first look: true for UPDATE and NOTIFY, zone transfer questions, and messages whose last
 * record is a TSIG. Plain queries (the hot path) are recognised from a few bytes.
 */
export function wantsPrimary(p: Uint8Array): boolean {
  if (p.length < HEADER_SIZE || (p[2]! & 0x80) !== 0) return false;
  const opcode = (p[2]! >> 3) & 0xf;
  if (opcode === Opcode.UPDATE || opcode === Opcode.NOTIFY) return true;
  const qd = (p[4]! << 8) | p[5]!;
  const rrs = ((p[6]! << 8) | p[7]!) + ((p[8]! << 8) | p[9]!) + ((p[10]! << 8) | p[11]!);
  let off = HEADER_SIZE;
  for (let i = 0; i < qd; i++) {
    off = skipName(p, off);
    if (off < 0 || off + 4 > p.length) return false;
    const t = (p[off]! << 8) | p[off + 1]!;
    if (t === RRType.AXFR || t === RRType.IXFR) return true;
    off += 4;
  }
  if (((p[10]! << 8) | p[11]!) === 0) return false;
  let type = -1;
  for (let i = 0; i < rrs; i++) {
    off = skipName(p, off);
    if (off < 0 || off + 10 > p.length) return false;
    type = (p[off]! << 8) | p[off + 1]!;
    off += 10 + ((p[off + 8]! << 8) | p[off + 9]!);
  }
  return type === RRType.TSIG;
}

/** Questions of a message, as far as they can be read. */
function questionsOf(p: Uint8Array): Question[] {
  const out: Question[] = [];
  try {
    const h = unpackHeader(p);
    let off = HEADER_SIZE;
    for (let i = 0; i < h.qdcount; i++) {
      const [q, o] = unpackQuestion(p, off);
      out.push(q);
      off = o;
    }
  } catch {
    // echo what could be read
  }
  return out;
}

/** A bare answer: header, question echoed (none for FORMERR), rcode. */
export function bareResponse(p: Uint8Array, rcode: number, extra: Partial<DnsMessage> = {}): Buffer {
  const h = unpackHeader(p);
  return encodeMessage({
    id: h.id,
    opcode: h.opcode,
    rcode,
    flags: { ...NO_FLAGS, qr: true, rd: h.flags.rd, cd: h.flags.cd },
    questions: rcode === Rcode.FORMERR ? [] : questionsOf(p).slice(0, 1),
    answers: [],
    authority: [],
    additional: [],
    ...extra,
  });
}
