/**
 * The request chain: every DNS request, over UDP or TCP, in the server's main thread or in a
 * query thread, goes through these handlers in this order, and nowhere else (CoreDNS style).
 * Each handler answers (a refusal is an rcode) or passes the request on.
 *
 * The first four belong to the primary role: they need the one zone store that changes go
 * through, its policies, journal and TSIG keys, so they run only in the thread that holds it. A
 * query thread (workers/worker-main.ts) puts a single `forward` link in their place, which sends
 * what they would look at (`wantsPrimary`) to that thread, where it runs through this chain.
 */
import { notifyHandler } from '../notify/handler.js';
import { queryHandler } from '../query/handler.js';
import type { QueryEngine } from '../query/engine.js';
import { tsigHandler } from '../tsig/handler.js';
import { updateHandler } from '../update/handler.js';
import { transferHandler } from '../xfr/handler.js';
import type { Primary } from '../xfr/primary.js';
import { compose, DnsRequest, type Answer, type Peer, type RequestHandler } from './request.js';

/** What the handlers are built from. */
export interface ChainParts {
  engine: QueryEngine;
  primary: Primary;
}

interface Link {
  name: string;
  /** Runs only where the zone store is (a query thread forwards instead). */
  primaryRole: boolean;
  build(parts: ChainParts): RequestHandler;
}

/** The chain, in order. */
export const REQUEST_CHAIN: readonly Link[] = [
  // TSIG (tsig/handler.ts): verify, answer failures, sign every answer to a signed request
  { name: 'tsig', primaryRole: true, build: (p) => tsigHandler(p.primary.keys, p.primary.log) },
  // AXFR/IXFR (xfr/handler.ts) by the zone's transfer ACL; unsigned refusals pass on
  { name: 'transfer', primaryRole: true, build: (p) => transferHandler(p.primary) },
  // UPDATE (update/handler.ts) by the zone's update ACL
  { name: 'update', primaryRole: true, build: (p) => updateHandler(p.primary) },
  // NOTIFY (notify/handler.ts): NOTIMP
  { name: 'notify', primaryRole: true, build: () => notifyHandler },
  // queries (query/handler.ts): answer cache, then the query chain (query/chain.ts)
  { name: 'query', primaryRole: false, build: (p) => queryHandler(p.engine) },
];

/** Sends a request to the process holding the zone store; `reply` gets its answers. */
export type Forward = (
  msg: Buffer,
  from: { address: string; transport: 'udp' | 'tcp' },
  reply: (messages: Buffer[]) => void,
) => void;

/** Runs requests through the chain. */
export class Dispatcher {
  private readonly run: (req: DnsRequest) => Answer;

  /** With `forward` (a query thread), the primary-role links become one forward link. */
  constructor(parts: ChainParts, forward?: Forward) {
    const handlers: RequestHandler[] = [];
    for (const link of REQUEST_CHAIN) {
      if (!link.primaryRole || !forward) handlers.push(link.build(parts));
      else if (link === REQUEST_CHAIN.find((l) => l.primaryRole)) handlers.push(forwardHandler(forward));
    }
    this.run = compose(handlers);
  }

  /** The answer to one request (see `Answer`); throws only on a bug, which the caller logs. */
  dispatch(packet: Buffer, transport: 'udp' | 'tcp', peer: Peer): Answer {
    return this.run(new DnsRequest(packet, transport, peer));
  }
}

/** A query thread's link in place of the primary role's: forwards what they want. */
function forwardHandler(forward: Forward): RequestHandler {
  return (req, next) => {
    if (!req.forPrimary) return next(req);
    const send = req.peer.later();
    // A copy: the packet may live in a buffer that the next datagrams reuse.
    forward(Buffer.from(req.packet), { address: req.peer.address, transport: req.transport }, (out) => {
      for (const m of out) send(m);
    });
    return undefined;
  };
}
