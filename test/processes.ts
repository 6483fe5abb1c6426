/** Process helpers shared by the tests. */
import { readdirSync, readFileSync } from 'node:fs';

/** True while a process with this pid exists (signal 0 checks without sending anything). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * SIGKILL every process whose command line names `dir` (a test's temporary folder): what a
 * deployed agent leaves running on purpose when it is killed (its redirects' and its site app's
 * processes, which take their control sockets under the agent's data dir) must not outlive the test.
 * Returns how many were killed.
 */
export function killProcessesUnder(dir: string): number {
  let killed = 0;
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    if (!cmdline.includes(dir)) continue;
    try {
      process.kill(pid, 'SIGKILL');
      killed++;
    } catch {
      // exited meanwhile
    }
  }
  return killed;
}
