/** Minimal answers to ANY (RFC 8482 §4.2): one RRset instead of all of them. */
import { RRType } from '../wire/types.js';
import { nameKey } from '../wire/name.js';
import type { Handler } from './chain.js';

/**
 * After the lookup, an ANY answer keeps only its first RRset (the lookup lists a CNAME first,
 * otherwise RRsets by type), over UDP and TCP alike.
 */
export const minimalAny: Handler = (ctx, next) => {
  next();
  if (ctx.question!.type !== RRType.ANY) return;
  const a = ctx.response.answers;
  const first = a[0];
  if (!first) return;
  const k = nameKey(first.name);
  ctx.response.answers = a.filter((r) => r.type === first.type && nameKey(r.name) === k);
};
