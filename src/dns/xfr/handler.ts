/**
 * The zone transfer link of the request chain: AXFR (RFC 5936) and IXFR (RFC 1995) for clients
 * the zone's `allowTransfer` ACL admits. An unsigned request it refuses passes on, so the query
 * chain answers it exactly as it answers any meta-type query; a signed one gets REFUSED.
 */
import { bareResponse, type DnsRequest, type RequestHandler } from '../dispatch/request.js';
import { encodeMessage, type DnsMessage, type Question } from '../wire/message.js';
import { nameKey } from '../wire/name.js';
import { Opcode, RRClass, RRType, Rcode } from '../wire/types.js';
import { serialGreater } from '../zone/store.js';
import type { Primary } from './primary.js';
import { axfrRecords, ixfrRecords, packTransfer } from './transfer.js';

/** The transfer handler for the zones and policies of `primary`. */
export function transferHandler(primary: Primary): RequestHandler {
  return (req, next) => {
    if (!req.forPrimary || req.opcode !== Opcode.QUERY) return next(req);
    const query = req.query();
    if (!query) return bareResponse(req.message, Rcode.FORMERR);
    const q = query.questions[0];
    if (query.questions.length !== 1 || !q || (q.type !== RRType.AXFR && q.type !== RRType.IXFR))
      return next(req);
    const res = transfer(primary, req, query, q);
    if (res) return res;
    return req.key ? bareResponse(req.message, Rcode.REFUSED) : next(req);
  };
}

/** The transfer's messages, or undefined when refused. */
function transfer(primary: Primary, req: DnsRequest, query: DnsMessage, q: Question): Buffer[] | undefined {
  if (q.class !== RRClass.IN) return undefined;
  const zone = primary.store.findZone(q.name);
  if (!zone || zone.originKey !== nameKey(q.name)) return undefined;
  const address = req.peer.address;
  if (!primary.policy(zone).transfer.allows(address, req.key?.name)) {
    primary.log.info({ from: address, zone: zone.origin, key: req.key?.name }, 'zone transfer refused');
    return undefined;
  }
  const head = { id: query.id, question: q };
  if (q.type === RRType.AXFR) {
    // RFC 5936 §4.2: AXFR is a TCP affair.
    if (req.transport === 'udp') return [bareResponse(encodeMessage(query), Rcode.FORMERR)];
    primary.stats.axfr++;
    return packTransfer(head, axfrRecords(zone));
  }
  // IXFR: the client's serial is the SOA in the authority section (RFC 1995 §3).
  const soa = query.authority.find((r) => r.type === RRType.SOA);
  if (!soa) return [bareResponse(encodeMessage(query), Rcode.FORMERR)];
  const have = soa.data[2] as number;
  if (!serialGreater(zone.serial, have) || req.transport === 'udp') {
    // Up to date (or over UDP: the current SOA alone tells the client to come back over TCP).
    return packTransfer(head, ixfrRecords(zone, []));
  }
  const diffs = primary.diffsSince(zone, have);
  if (diffs) primary.stats.ixfr++;
  else primary.stats.ixfrAsAxfr++;
  return packTransfer(head, diffs ? ixfrRecords(zone, diffs) : axfrRecords(zone));
}
