/**
 * `drain(timeoutMs)` for the relays: waiters re-check an idle condition whenever the relay says a
 * connection ended (`notify`), and give up after their timeout.
 */
export class DrainWaiters {
  private waiters: Array<() => void> = [];

  /** True once `idle()` holds (checked now and on each `notify`); false when `timeoutMs` passes first. */
  wait(idle: () => boolean, timeoutMs: number): Promise<boolean> {
    if (idle()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        resolve(false);
      }, timeoutMs);
      const check = () => {
        if (!idle()) return;
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
        resolve(true);
      };
      this.waiters.push(check);
    });
  }

  /** Something ended: every waiter checks its condition again. */
  notify(): void {
    for (const w of [...this.waiters]) w();
  }
}
