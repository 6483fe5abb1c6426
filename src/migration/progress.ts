/**
 * Throttling of sync progress into events. A driver may report progress as often as it likes (the
 * in-process sync after every file, an agent once a second); the controller keeps a bounded event
 * history (10 000 by default) that late subscribers replay, so progress must not crowd it out.
 *
 * Per sync pass (the passes of one migration run one after another, so this is per migration):
 * - the first report is published at once, then at most one a second;
 * - the spacing grows with the pass's age, to `elapsed / STRETCH` (6 s after 10 minutes, 36 s
 *   after an hour), so a pass publishes about STRETCH · (1 + ln(T / STRETCH s)) events in T
 *   seconds: ~210 in 5 minutes, ~460 in an hour, ~780 in a day;
 * - never more than MAX_PER_PASS in all;
 * - a new attempt (the retrying wrapper numbers them; a retried pass starts again from 0 bytes) is
 *   published at once, so the reset shows with its attempt number instead of looking like a drop;
 * - when the pass ends, the last report held back is published (the final figure), then nothing.
 */
import type { SyncProgressReport } from './ports.js';

export const PROGRESS_MIN_INTERVAL_MS = 1000;
export const PROGRESS_STRETCH = 100;
export const PROGRESS_MAX_PER_PASS = 1000;

export class ProgressThrottle {
  private lastAt = Number.NEGATIVE_INFINITY;
  private lastAttempt: number | undefined;
  private pending: SyncProgressReport | undefined;
  private ended = false;
  /** Events published so far. */
  count = 0;

  constructor(
    private readonly publish: (p: SyncProgressReport) => void,
    private readonly now: () => number = Date.now,
    private readonly startedAt: number = now(),
  ) {}

  /** A report from the driver: published now, or held back until the next one may go. */
  report(p: SyncProgressReport): void {
    if (this.ended) return;
    const at = this.now();
    const newAttempt = this.count > 0 && p.attempt !== this.lastAttempt;
    const interval = Math.max(PROGRESS_MIN_INTERVAL_MS, (at - this.startedAt) / PROGRESS_STRETCH);
    if (this.count < PROGRESS_MAX_PER_PASS && (newAttempt || at - this.lastAt >= interval)) {
      this.emit(p, at);
    } else {
      this.pending = p;
    }
  }

  /** The pass ended: publish what was held back (when it succeeded), then ignore late reports. */
  end(success: boolean): void {
    if (this.ended) return;
    this.ended = true;
    if (success && this.pending) this.emit(this.pending, this.now());
    this.pending = undefined;
  }

  private emit(p: SyncProgressReport, at: number): void {
    this.pending = undefined;
    this.lastAt = at;
    this.lastAttempt = p.attempt;
    this.count += 1;
    try {
      this.publish(p);
    } catch {
      // a listener's failure must not fail the copy that reported
    }
  }
}
