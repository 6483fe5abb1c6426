/** What both cut-over benchmarks compute: percentiles, and where the pause of a hold goes. */
import { STEP, type JournalEntry } from '../../src/migration/index.js';

/** p50, p99 and max of `ms` (NaN when empty); a percentile is the smallest value at or above it. */
export function stats(ms: number[]): { p50: number; p99: number; max: number } {
  if (ms.length === 0) return { p50: NaN, p99: NaN, max: NaN };
  const s = [...ms].sort((x, y) => x - y);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
  return { p50: at(0.5), p99: at(0.99), max: s[s.length - 1]! };
}

export const median = (xs: number[]): number => stats(xs).p50;

/**
 * The steps of the last hold, from the journal: each step's start to the next entry's, the last
 * one (the release) to `releasedAt`. A cut-over tried again after a timed-out catch-up holds more
 * than once; the last hold is the one that switched.
 */
export function pauseSteps(entries: JournalEntry[], releasedAt: number): Map<string, number> {
  const steps = entries.filter((e) => e.kind === 'step' || e.kind === 'note');
  let first = -1;
  steps.forEach((e, i) => {
    if (e.step === STEP.holdRedirect) first = i;
  });
  const last = steps.findIndex((e, i) => i > first && e.step === STEP.releaseRedirect);
  const out = new Map<string, number>();
  for (let i = first; i >= 0 && i <= last; i++) {
    const end = i < last ? steps[i + 1]!.at : releasedAt;
    out.set(steps[i]!.step!, (out.get(steps[i]!.step!) ?? 0) + end - steps[i]!.at);
  }
  return out;
}
