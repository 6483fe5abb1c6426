/**
 * What leading means for a controller on a shared journal: on winning the lease it takes in the
 * whole journal and resumes every unfinished migration (the restart path); on losing it stops
 * driving (the migrations stay resumable) and follows, keeping its copy of the journal current
 * for the read API. Agents see the lease's fencing token on every command, and one refusing it
 * (FENCED) makes this controller step down.
 */
import type { Logger } from 'pino';
import { errorMessage, type FerryError } from '../common/errors.js';
import type { Controller } from './controller.js';
import type { LeaderLease } from './leader.js';

/** The journal as leading needs it (any JournalStore). */
export interface SharedJournal {
  refresh(): Promise<number>;
  on(event: 'lost', listener: (err: Error) => void): unknown;
}

/** How often a follower takes in what the leader journaled. */
export const FOLLOW_REFRESH_MS = 500;

/** The options of an agent's driver under a lease: the token on every call, FENCED stepping down. */
export function fencing(
  lease: LeaderLease,
  server: string,
  log?: Logger,
): { fence: () => bigint | undefined; onFenced: (err: FerryError) => void } {
  return {
    fence: () => lease.fence(),
    onFenced: (err) => {
      const m = /token (\d+) < (\d+)/.exec(err.message);
      const what = m ? `token ${m[1]} < ${m[2]}` : err.message;
      if (!lease.isLeader) {
        log?.warn({ server }, `fenced by agent ${server}: ${what}; already stepped down`);
        return;
      }
      log?.error({ server }, `fenced by agent ${server}: ${what}; stepping down`);
      lease.stepDown(`fenced by agent ${server}: ${what}`);
    },
  };
}

/** Run `controller` under `lease`; resolves once the lease made its first attempt. Close to stop following. */
export async function lead(opts: {
  lease: LeaderLease;
  controller: Controller;
  journal: SharedJournal;
  logger?: Logger;
  /** Resume unfinished migrations on winning (default true; `ferry controller --no-resume`). */
  resume?: boolean;
}): Promise<{ close(): Promise<void> }> {
  const { lease, controller, journal, logger: log } = opts;
  let stopping: Promise<void> = Promise.resolve();
  let following = false;
  lease.on('deposed', (reason) => {
    log?.warn({ role: 'follower' }, `stepping down: ${reason}`);
    stopping = controller.stopDriving(`this controller stepped down: ${reason}`);
  });
  lease.on('elected', (token) => {
    log?.info({ role: 'leader', fence: token.toString() }, `leading with fencing token ${token}`);
    void (async () => {
      await stopping;
      // The whole journal first: the last leader's final steps may have landed after our last refresh.
      await journal.refresh();
      if (!lease.isLeader || lease.fence() !== token) return;
      const resumed = opts.resume === false ? [] : controller.resumeAll();
      log?.info({ resumed }, `resumed ${resumed.length} unfinished migration(s)`);
    })().catch((err: unknown) => {
      log?.error(`cannot take over: ${errorMessage(err)}`);
      lease.stepDown(`the journal could not be read in full: ${errorMessage(err)}`);
    });
  });
  lease.on('warning', (m) => log?.warn(m));
  // `ferry controller` says the journal is lost; here: out of the race until restarted.
  journal.on('lost', (err) => {
    lease.stepDown(`the journal lost its connection: ${errorMessage(err)}`, { retire: true });
  });
  const timer = setInterval(() => {
    if (lease.isLeader || following) return;
    following = true;
    journal
      .refresh()
      .catch(() => undefined)
      .finally(() => (following = false));
  }, FOLLOW_REFRESH_MS);
  await lease.start();
  return {
    close: async () => {
      clearInterval(timer);
      await lease.close();
      await stopping;
    },
  };
}
