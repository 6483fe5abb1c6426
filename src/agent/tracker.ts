/**
 * Change tracking for a site's data folder between sync passes, so that a pass after the first
 * copies only what changed and the write pause does not grow with the number of files.
 *
 * One `inotifywait -m -r` child watches the folder (and a barrier folder of the agent's own). It
 * records every path created, written, whose attributes changed, moved in or out, or deleted.
 * `take()` hands over the paths changed since the last `take()` and starts a new set at once, so
 * a change made while a pass runs is in the next set. Before handing over, it creates a file in
 * the barrier folder and waits for that event: inotify queues the events of one watcher in
 * order, so every change that happened before `take()` was called has been read by then.
 *
 * The change set is unknown, and `take()` says so with the reason (the caller then makes a full
 * pass), when the kernel's queue may have overflowed, the watcher failed or exited (it is
 * restarted before `take()` returns, so the full pass is itself tracked), or `invalidate()` was
 * called (a pass that failed half way).
 *
 * Overflow: inotifywait (inotify-tools 3.22) does not report the kernel's IN_Q_OVERFLOW, so it is
 * inferred. The kernel drops events only once `fs.inotify.max_queued_events` events wait unread;
 * those are all read afterwards, before the next barrier or the one after (a take waits for its
 * barrier, so at most one is ever queued). Two windows between barriers that together read that
 * many events therefore cover every overflow, and make the next pass a full one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { FerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';

/** What a pass must copy: the paths changed (relative to the folder), or everything, and why. */
export type ChangeSet = { kind: 'paths'; paths: string[] } | { kind: 'full'; reason: string };

export interface ChangeTrackerOptions {
  /** The folder tracked. */
  root: string;
  /** A folder of the agent's own for the barrier files (created; emptied on stop). */
  barrierDir: string;
  /** The inotifywait binary (Debian's inotify-tools). Default `inotifywait`. */
  inotifywaitPath?: string;
  /** Longest wait for the watches to be set up, or for a barrier. Default 60 000 ms. */
  timeoutMs?: number;
}

const EVENTS = ['modify', 'attrib', 'close_write', 'move', 'create', 'delete'];

/** Records the paths changed under one folder between passes. */
export class ChangeTracker {
  private child: ChildProcess | undefined;
  private paths = new Set<string>();
  /** Why the current set is incomplete, when it is. */
  private lost: string | undefined;
  private readonly barriers = new Map<string, () => void>();
  private stopped = false;
  /** Events read since the last barrier, and between the two barriers before it. */
  private window = 0;
  private lastWindow = 0;
  /** The kernel's queue size for this watcher (`fs.inotify.max_queued_events` when it started). */
  private queueSize = 16384;

  constructor(private readonly opts: ChangeTrackerOptions) {}

  /** True while the watcher runs. */
  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The watcher's pid (tests kill it to check the fallback). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Start watching; resolves once every watch is set up (changes from then on are recorded). */
  async start(): Promise<void> {
    this.stopped = false;
    await mkdir(this.opts.barrierDir, { recursive: true, mode: 0o700 });
    const max = Number(
      (await readFile('/proc/sys/fs/inotify/max_queued_events', 'utf8').catch(() => '')).trim(),
    );
    if (max > 0) this.queueSize = max;
    this.window = 0;
    this.lastWindow = 0;
    const root = this.opts.root.replace(/\/+$/, '');
    const child = spawn(
      this.opts.inotifywaitPath ?? 'inotifywait',
      [
        '-m',
        '-r',
        ...EVENTS.flatMap((e) => ['-e', e]),
        '--format',
        '%e|%w%f%0',
        '--no-newline',
        root,
        this.opts.barrierDir,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    let buf = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      buf += chunk;
      let nul: number;
      while ((nul = buf.indexOf('\0')) >= 0) {
        this.onEvent(buf.slice(0, nul), root);
        buf = buf.slice(nul + 1);
      }
    });
    let err = '';
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new FerryError('TRACKER_FAILED', `inotifywait set no watches on ${root} in time`));
      }, this.opts.timeoutMs ?? 60_000);
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (chunk: string) => {
        err = (err + chunk).slice(-4096);
        if (err.includes('Watches established')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(new FerryError('TRACKER_FAILED', `cannot run inotifywait: ${e.message}`, { cause: e }));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(
          new FerryError(
            'TRACKER_FAILED',
            `inotifywait on ${root} exited (${signal ?? code}): ${err.trim().split('\n').slice(-2).join(' | ')}`,
          ),
        );
      });
    });
    child.once('exit', (code, signal) => {
      if (this.child !== child) return;
      this.lost ??= this.stopped ? 'the watch was stopped' : `the watch exited (${signal ?? code})`;
      for (const done of this.barriers.values()) done();
    });
    try {
      await ready;
    } catch (e) {
      this.kill();
      throw e;
    }
  }

  /**
   * The paths changed since the last call (or since `start()`), and a new set begun. A full pass
   * is asked for when the set is incomplete; a watcher that is gone is started again first.
   */
  async take(): Promise<ChangeSet> {
    if (this.running) await this.barrier();
    if (this.window + this.lastWindow >= this.queueSize - 2)
      this.lost ??= `the kernel may have dropped events (inotify queue overflow: ${this.window + this.lastWindow} events in two passes, it queues ${this.queueSize})`;
    this.lastWindow = this.window;
    this.window = 0;
    const lost = this.lost ?? (this.running ? undefined : 'the watch is not running');
    const paths = [...this.paths];
    this.paths = new Set();
    this.lost = undefined;
    if (lost === undefined) return { kind: 'paths', paths: outermost(paths) };
    if (!this.running) {
      try {
        await this.start();
      } catch (e) {
        this.lost = `the watch could not restart: ${(e as Error).message}`;
      }
    }
    return { kind: 'full', reason: lost };
  }

  /** Make the next `take()` ask for a full pass (the pass that used the last set failed). */
  invalidate(reason: string): void {
    this.lost ??= reason;
  }

  /** Stop watching; no-op when stopped. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.kill();
    await rm(this.opts.barrierDir, { recursive: true, force: true });
  }

  private kill(): void {
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  }

  private onEvent(line: string, root: string): void {
    this.window++;
    const bar = line.indexOf('|');
    const events = line.slice(0, bar).split(',');
    const path = line.slice(bar + 1);
    if (events.includes('Q_OVERFLOW')) {
      this.lost ??= 'the kernel dropped events (inotify queue overflow)';
      return;
    }
    const barrierDir = this.opts.barrierDir.replace(/\/+$/, '');
    if (path.startsWith(barrierDir + sep)) {
      const name = path.slice(barrierDir.length + 1);
      for (const [prefix, done] of this.barriers) if (name.startsWith(prefix)) done();
      return;
    }
    const rel = relative(root, path);
    if (rel === '' || rel.startsWith('..')) {
      // The folder itself: deleted or moved away, nothing under it can be told apart any more.
      if (events.includes('DELETE_SELF') || events.includes('MOVE_SELF') || events.includes('UNMOUNT'))
        this.lost ??= `${root} itself was ${events.join(',').toLowerCase()}`;
      return;
    }
    this.paths.add(rel);
  }

  /**
   * Waits until the watcher has read every event queued before this call. A barrier written
   * while the kernel's queue is full is dropped, so another is written every 100 ms until one
   * is read.
   */
  private async barrier(): Promise<void> {
    const prefix = `barrier-${randomBytes(6).toString('hex')}-`;
    const written: string[] = [];
    let seen = false;
    const done = new Promise<void>((resolve) => {
      this.barriers.set(prefix, () => {
        seen = true;
        resolve();
      });
    });
    const deadline = Date.now() + (this.opts.timeoutMs ?? 60_000);
    try {
      while (!seen && this.running) {
        if (Date.now() > deadline)
          throw new FerryError('TRACKER_FAILED', 'inotifywait did not report the barrier in time');
        const file = join(this.opts.barrierDir, `${prefix}${written.length}`);
        written.push(file);
        await writeFile(file, '');
        await Promise.race([done, sleep(100)]);
      }
      if (!seen) throw new FerryError('TRACKER_FAILED', 'the watch exited before reporting its barrier');
    } catch (e) {
      this.lost ??= `the watch missed its barrier: ${(e as Error).message}`;
    } finally {
      this.barriers.delete(prefix);
      for (const f of written) await rm(f, { force: true });
    }
  }
}

/**
 * The paths without those under another listed path: a listed folder is copied (or deleted)
 * whole, and a path inside one that is gone would name parents that no longer exist.
 */
function outermost(paths: string[]): string[] {
  const all = new Set(paths);
  return paths
    .filter((p) => {
      for (let i = p.indexOf('/'); i > 0; i = p.indexOf('/', i + 1)) if (all.has(p.slice(0, i))) return false;
      return true;
    })
    .sort();
}
