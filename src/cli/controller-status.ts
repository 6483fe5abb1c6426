/** `ferry controller status`: who leads among the controllers on one PostgreSQL (GET /v1/controller). */
import type { Command } from 'commander';
import type { LeaderStatus } from '../controller/index.js';
import { action, clientOf, table, withConnection, type ConnectionOptions } from './client.js';

/** What GET /v1/controller answers. */
type ControllerView =
  { mode: 'single'; role: 'leader'; self: null; leader: null } | ({ mode: 'lease' } & LeaderStatus);

/** Add `status` under the `controller` command. */
export function registerControllerStatus(controller: Command): void {
  withConnection(
    controller
      .command('status')
      .description(
        "Show which controller leads, its API URL, fencing token and lease expiry, and this one's role",
      ),
  ).action(
    action(async (o: ConnectionOptions) => {
      const v = await clientOf(o).get<ControllerView>('/v1/controller');
      if (o.json) {
        process.stdout.write(JSON.stringify(v) + '\n');
        return 0;
      }
      if (v.mode === 'single') {
        process.stdout.write('one controller (SQLite journal, no leader lease): it drives every migration\n');
        return 0;
      }
      const rows = [
        ['this controller', `${v.self.id} (${v.role})`, v.self.url || '—'],
        v.leader
          ? [
              'leader',
              v.leader.id,
              `${v.leader.url || '— (no API URL)'}, fencing token ${v.leader.token}, lease until ${v.leader.expiresAt}`,
            ]
          : ['leader', 'none', 'no controller holds the lease now: writes answer NO_LEADER until one does'],
      ];
      process.stdout.write(table(['', 'ID', 'WHERE'], rows) + '\n');
      process.stdout.write(`lease time ${v.ttlMs} ms\n`);
      return 0;
    }),
  );
}
