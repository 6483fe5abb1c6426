/** `ferry migrate DOMAIN --to SERVER [--watch]`: start a migration through the control API. */
import { Option, type Command } from 'commander';
import {
  action,
  clientOf,
  exitOfPhase,
  withConnection,
  type ConnectionOptions,
  type MigrationView,
} from './client.js';
import type { SiteMail } from '../agent/webconfig/model.js';
import {
  describeDatabases,
  describeMail,
  describeSiteNames,
  type DatabasesPlanned,
  type NameLeftAlone,
} from '../migration/index.js';
import { number } from './options.js';
import { watchMigration } from './watch.js';

interface MigrateOptions extends ConnectionOptions {
  to: string;
  id?: string;
  watch?: boolean;
  ttl?: number;
  quietWindow?: number;
  dnsTempCap?: number;
  drainCap?: number;
  kind?: 'builtin' | 'web';
  dryRun?: boolean;
}

/** The plan lines of a web site's databases (what moves, what stays), indented under a heading. */
function databaseLines(dbPlan: DatabasesPlanned | undefined): string {
  return dbPlan && (dbPlan.move.length || dbPlan.leftInPlace.length)
    ? `Databases:\n${describeDatabases(dbPlan)
        .map((l) => `  ${l}\n`)
        .join('')}`
    : '';
}

/** The plan lines of a web site's names and mail, each under a heading. */
function namesAndMailLines(p: {
  names?: string[];
  namesLeftAlone?: NameLeftAlone[];
  mail?: SiteMail;
  mailStays?: boolean;
}): string {
  const names = p.names ? describeSiteNames(p.names, p.namesLeftAlone) : [];
  const mail = describeMail(p.mail, p.mailStays);
  return [
    ...(names.length ? ['Names:', ...names.map((l) => `  ${l}`)] : []),
    ...(mail.length ? ['Mail:', ...mail.map((l) => `  ${l}`)] : []),
  ]
    .map((l) => `${l}\n`)
    .join('');
}

export function registerMigrate(program: Command): void {
  withConnection(
    program
      .command('migrate')
      .description(
        'Start migrating a domain to another server; with --watch, follow it (exit 0 completed, 1 failed or rolled back)',
      )
      .argument('<domain>', 'the domain (site) to move, e.g. shop.example')
      .requiredOption('--to <server>', 'id of the target server (see ferry servers)')
      .option('--watch', 'follow the migration live until it ends')
      .option(
        '--dry-run',
        "ask both agents what the migration would do (its refusals, a web site's names, mail and databases, and the pause of a copy inside the hold) and start nothing",
      )
      .option('--id <id>', 'migration id (default: domain and a time stamp)')
      .option('--ttl <seconds>', 'TTL of the A record while at IPt and IP2', number(1, 86400))
      .option('--quiet-window <ms>', 'traffic must be absent this long before a wait ends', number(0))
      .option('--dns-temp-cap <ms>', 'longest wait for IP1 to go quiet after the TTL', number(0))
      .option('--drain-cap <ms>', 'longest wait for IPt to go quiet after the TTL', number(0))
      .addOption(
        new Option(
          '--kind <kind>',
          "what serves the site when the config does not say: builtin (the agent's app) or web (the server's own nginx or Apache)",
        ).choices(['builtin', 'web']),
      ),
  ).action(
    action(async (domain: string, o: MigrateOptions) => {
      const client = clientOf(o);
      if (o.dryRun) {
        const p = await client.post<{
          domain: string;
          from: string;
          to: string;
          kind: string;
          ports: number[];
          databases?: DatabasesPlanned;
          names?: string[];
          namesLeftAlone?: NameLeftAlone[];
          mail?: SiteMail;
          mailStays?: boolean;
        }>('/v1/migrations/preview', { domain, to: o.to, ...(o.kind ? { kind: o.kind } : {}) });
        process.stdout.write(
          o.json
            ? JSON.stringify(p) + '\n'
            : `Would move ${p.domain} ${p.from} → ${p.to} (${p.kind === 'web' ? "the server's own web server" : "the agent's site app"}, ports ${p.ports.join(', ')}); nothing was started\n${namesAndMailLines(p)}${databaseLines(p.databases)}`,
        );
        return 0;
      }
      const timings = {
        ...(o.ttl !== undefined ? { ttl: o.ttl } : {}),
        ...(o.quietWindow !== undefined ? { quietWindowMs: o.quietWindow } : {}),
        ...(o.dnsTempCap !== undefined ? { dnsTempCapMs: o.dnsTempCap } : {}),
        ...(o.drainCap !== undefined ? { drainCapMs: o.drainCap } : {}),
      };
      const rec = await client.post<MigrationView>('/v1/migrations', {
        domain,
        to: o.to,
        ...(o.id ? { id: o.id } : {}),
        ...(o.kind ? { kind: o.kind } : {}),
        ...(Object.keys(timings).length ? { timings } : {}),
      });
      // A web site's databases: what moves (size, users) and what is left in place, with why.
      const databases =
        namesAndMailLines({
          ...(rec.plan.names ? { names: rec.plan.names } : {}),
          ...(rec.plan.namesLeftAlone ? { namesLeftAlone: rec.plan.namesLeftAlone } : {}),
          ...(rec.plan.web?.mail ? { mail: rec.plan.web.mail } : {}),
          ...(rec.plan.web?.mailStays ? { mailStays: true } : {}),
        }) + databaseLines(rec.plan.web?.databasePlan);
      if (!o.watch) {
        process.stdout.write(
          o.json
            ? JSON.stringify(rec) + '\n'
            : `Started ${rec.id}: ${rec.domain} ${rec.from} → ${rec.to} through ${rec.plan.tempIp}\n${databases}Follow it with: ferry watch ${rec.id}\n`,
        );
        return 0;
      }
      if (!o.json && databases) process.stdout.write(databases);
      if (o.json) process.stdout.write(JSON.stringify({ event: 'created', ...rec }) + '\n');
      const end = await watchMigration(client, rec.id, { json: Boolean(o.json) });
      return exitOfPhase(end.phase);
    }),
  );
}
