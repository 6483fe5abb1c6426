/**
 * The dynamic UPDATE link of the request chain (RFC 2136): applies an update the zone's
 * `allowUpdate` ACL admits; every outcome, refusals included, is an rcode.
 */
import { bareResponse, type RequestHandler } from '../dispatch/request.js';
import { NO_FLAGS } from '../wire/message.js';
import { Opcode, Rcode } from '../wire/types.js';
import type { Primary } from '../xfr/primary.js';
import { applyUpdate, updateZone } from './update.js';
import { decodeUpdate } from './wire.js';

/** The UPDATE handler for the zones and policies of `primary`. */
export function updateHandler(primary: Primary): RequestHandler {
  return (req, next) => {
    if (!req.forPrimary || req.opcode !== Opcode.UPDATE) return next(req);
    const msg = req.message;
    let upd;
    try {
      upd = decodeUpdate(msg);
    } catch {
      return bareResponse(msg, Rcode.FORMERR);
    }
    const zone = updateZone(primary.store, upd.zone);
    const reply = (rcode: number) =>
      bareResponse(msg, rcode, { questions: upd.zone.slice(0, 1), flags: { ...NO_FLAGS, qr: true } });
    if (!('originKey' in zone)) return reply(zone.rcode);
    const from = req.peer.address;
    const key = req.key?.name;
    if (!primary.policy(zone).update.allows(from, key)) {
      primary.log.info({ from, zone: zone.origin, key }, 'update refused');
      return reply(Rcode.REFUSED);
    }
    const maxRecords = primary.policy(zone).maxRecords;
    const res = applyUpdate(
      primary.store,
      zone,
      upd.prerequisites,
      upd.updates,
      maxRecords === undefined ? {} : { maxRecords },
    );
    if (res.rcode === Rcode.NOERROR) primary.stats.updates++;
    else if (res.sizeLimit)
      primary.log.warn(
        { from, zone: zone.origin, limit: res.sizeLimit.maxRecords, size: res.sizeLimit.size },
        `update refused: zone ${zone.origin} would hold ${res.sizeLimit.size} records, over its limit of ${res.sizeLimit.maxRecords}`,
      );
    else
      primary.log.info(
        { from, zone: zone.origin, rcode: res.rcode, reason: res.reason },
        'update not applied',
      );
    return reply(res.rcode);
  };
}
