/** `ferry status [ID]`: the migrations, or one of them with its phases, wait and errors. */
import type { Command } from 'commander';
import {
  ApiClient,
  CLI_EXIT,
  TERMINAL,
  action,
  clientOf,
  duration,
  table,
  withConnection,
  type ConnectionOptions,
  type MigrationView,
  type MigrationSummaryView,
} from './client.js';
import { removedLines, summaryOf } from './watch.js';

interface Detail extends MigrationView {
  wait?: { what: string; remainingMs: number; at: number };
  errors?: Array<{ at: number; phase?: string; message: string }>;
}

export function registerStatus(program: Command): void {
  withConnection(
    program
      .command('status')
      .description('List migrations, or show one (exit 1 when it failed or was rolled back)')
      .argument('[id]', 'migration id')
      .option('--active', 'only migrations still running')
      .option('--limit <n>', 'most migrations listed, newest first (default 50)')
      .option('--all', 'every migration, read a page of 1000 at a time'),
  ).action(
    action(
      async (
        id: string | undefined,
        o: ConnectionOptions & { active?: boolean; limit?: string; all?: boolean },
      ) => {
        const client = clientOf(o);
        if (!id) {
          const { items: migrations, more } = await client.list<MigrationSummaryView>(
            `/v1/migrations${o.active ? '?active=true' : ''}`,
            'migrations',
            ApiClient.listLimit(o, 50),
          );
          if (o.json) {
            process.stdout.write(
              JSON.stringify({ migrations: migrations.map(summaryOf), ...(more ? { more } : {}) }) + '\n',
            );
            return 0;
          }
          if (migrations.length === 0) {
            process.stdout.write('No migrations.\n');
            return 0;
          }
          const now = Date.now();
          process.stdout.write(
            table(
              ['ID', 'DOMAIN', 'FROM → TO', 'PHASE', 'AGE'],
              migrations.map((m) => [
                m.id,
                m.domain,
                `${m.from} → ${m.to}`,
                m.phase + (m.error ? ' !' : ''),
                duration(now - m.createdAt),
              ]),
            ) + '\n',
          );
          if (more) process.stdout.write(`… older migrations: raise --limit or give --all\n`);
          return 0;
        }
        const m = await client.get<Detail>(`/v1/migrations/${encodeURIComponent(id)}`);
        if (o.json) {
          process.stdout.write(
            JSON.stringify({ ...summaryOf(m), ...(m.wait ? { wait: m.wait } : {}), errors: m.errors ?? [] }) +
              '\n',
          );
        } else {
          const lines = [
            `${m.id}: ${m.domain} ${m.from} → ${m.to}`,
            `  phase     ${m.phase}${m.error ? ` (${m.error})` : ''}`,
            `  addresses IP1 ${m.plan.originIp} · IPt ${m.plan.tempIp} · IP2 ${m.plan.targetIp}`,
          ];
          if (m.wait && !TERMINAL.has(m.phase))
            lines.push(
              `  waiting   ${m.wait.what}, at most ${duration(Math.max(0, m.wait.remainingMs - (Date.now() - m.wait.at)))} more`,
            );
          for (const p of m.phases) {
            lines.push(
              `  ${p.name.padEnd(12)} ${new Date(p.startedAt).toISOString()}  ${p.endedAt === null ? (TERMINAL.has(p.name) ? '' : 'running') : duration(p.endedAt - p.startedAt)}`,
            );
          }
          lines.push(...removedLines(m));
          for (const e of m.errors ?? [])
            lines.push(`  error ${new Date(e.at).toISOString()} ${e.phase ?? ''} ${e.message}`);
          process.stdout.write(lines.join('\n') + '\n');
        }
        return m.phase === 'failed' || m.phase === 'rolled-back' ? CLI_EXIT.failed : CLI_EXIT.ok;
      },
    ),
  );
}
