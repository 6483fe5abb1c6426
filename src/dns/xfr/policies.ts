/**
 * Zone policies from a server-wide default and per-zone overrides, as an operator writes them:
 * the default is the `*` policy (zones without their own); a zone that sets any key gets a policy
 * of its own, each key it leaves out taken from the default. `Primary` itself does not merge.
 */
import type { ZonePolicy } from './primary.js';

/** The keys `p` sets, and only those. */
function setKeys<P extends ZonePolicy>(p: P): P {
  return {
    ...(p.allowTransfer ? { allowTransfer: p.allowTransfer } : {}),
    ...(p.allowUpdate ? { allowUpdate: p.allowUpdate } : {}),
    ...(p.notify ? { notify: p.notify } : {}),
    ...(p.maxRecords !== undefined ? { maxRecords: p.maxRecords } : {}),
  } as P;
}

/** The policy a zone with its own keys `own` gets over `base`, or undefined when it sets none. */
export function zoneOverride<P extends ZonePolicy>(base: P, own: P): P | undefined {
  const mine = setKeys(own);
  return Object.keys(mine).length ? { ...setKeys(base), ...mine } : undefined;
}

/**
 * `PrimaryOptions.zonePolicies` for a default and per-zone overrides; undefined when nothing is
 * set anywhere (then transfers and updates are refused and nobody is notified).
 */
export function mergeZonePolicies<P extends ZonePolicy>(
  base: P,
  zones: ReadonlyArray<{ origin: string; policy: P }>,
): Record<string, P> | undefined {
  const out: Record<string, P> = {};
  const all = setKeys(base);
  if (Object.keys(all).length) out['*'] = all;
  for (const z of zones) {
    const p = zoneOverride(base, z.policy);
    if (p) out[z.origin] = p;
  }
  return Object.keys(out).length ? out : undefined;
}
