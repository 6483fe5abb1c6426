/** `ferry rollback ID [--watch]`: roll a migration back from whatever phase it is in. */
import type { Command } from 'commander';
import {
  CLI_EXIT,
  action,
  clientOf,
  withConnection,
  type ConnectionOptions,
  type MigrationView,
} from './client.js';
import { watchMigration } from './watch.js';

export function registerRollback(program: Command): void {
  withConnection(
    program
      .command('rollback')
      .description(
        'Roll a migration back; with --watch, follow it until it ends (exit 0 rolled back, 1 otherwise)',
      )
      .argument('<id>', 'migration id')
      .option('--watch', 'follow the rollback until it ends'),
  ).action(
    action(async (id: string, o: ConnectionOptions & { watch?: boolean }) => {
      const client = clientOf(o);
      const res = await client.post<MigrationView & { accepted?: boolean }>(
        `/v1/migrations/${encodeURIComponent(id)}/rollback`,
      );
      if (!o.watch) {
        process.stdout.write(
          o.json
            ? JSON.stringify(res) + '\n'
            : `Rollback of ${res.id} ${res.accepted ? 'under way' : 'done'}: ${res.phase}${res.error ? ` (${res.error})` : ''}\n`,
        );
        return res.accepted || res.phase === 'rolled-back' ? CLI_EXIT.ok : CLI_EXIT.failed;
      }
      const end = await watchMigration(client, id, { json: Boolean(o.json) });
      return end.phase === 'rolled-back' ? CLI_EXIT.ok : CLI_EXIT.failed;
    }),
  );
}
