/** Mutable counters of one userspace listener (TCP or UDP), summed into `ListenerStats`. */
export interface Counters {
  active: number;
  total: number;
  bytesToUpstream: number;
  bytesToClient: number;
  lastConnectionAt: number | null;
}

/** Counters at zero. */
export function newCounters(): Counters {
  return { active: 0, total: 0, bytesToUpstream: 0, bytesToClient: 0, lastConnectionAt: null };
}
