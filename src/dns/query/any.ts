/** Minimal answers to ANY (RFC 8482 §4.2): one RRset instead of all of them. */
import { RRType } from '../wire/types.js';
import { nameKey } from '../wire/name.js';
import type { Handler } from './context.js';

/**
 * After the lookup, an ANY answer keeps only the first RRset owned by the question name (the
 * lookup lists RRsets by type); records of other owners (a DNAME above the name) stay. The same
 * over UDP and TCP.
 */
export const minimalAny: Handler = (ctx, next) => {
  next();
  if (ctx.question!.type !== RRType.ANY) return;
  const qkey = ctx.qkey!;
  const a = ctx.response.answers;
  const first = a.find((r) => nameKey(r.name) === qkey);
  if (!first) return;
  ctx.response.answers = a.filter((r) => nameKey(r.name) !== qkey || r.type === first.type);
};
