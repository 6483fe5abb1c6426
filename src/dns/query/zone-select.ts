/** Zone selection: the longest-match zone for the question (RFC 1034 §4.3.2 step 2). */
import { parentName } from '../wire/name.js';
import { RRType, Rcode } from '../wire/types.js';
import type { Handler } from './context.js';

/**
 * REFUSED (no AA) for names in no zone served. DS at a zone apex belongs to the parent
 * (RFC 4035 §3.1.4.1), so it is answered from the parent zone when that is served too.
 */
export const selectZone: Handler = (ctx, next) => {
  let zone = ctx.store.findZoneByKey(ctx.qkey!);
  if (!zone) {
    ctx.response.rcode = Rcode.REFUSED;
    return;
  }
  if (ctx.question!.type === RRType.DS && zone.originKey === ctx.qkey) {
    const parent = parentName(zone.originKey);
    const above = parent === undefined ? undefined : ctx.store.findZoneByKey(parent);
    if (above) zone = above;
  }
  ctx.zone = zone;
  next();
};
