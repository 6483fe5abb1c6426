/** `ferry agent sites` and `ferry agent --web-config`: the hosting server's own nginx or Apache sites. */
import { InvalidArgumentError, type Command } from 'commander';
import { readWebSites, type WebConfigOptions, type WebSitesReport } from '../agent/index.js';
import { FerryError } from '../common/errors.js';
import { action, table } from './client.js';

function many(value: string, previous: string[] = []): string[] {
  if (!value.startsWith('/')) throw new InvalidArgumentError(`expected an absolute path, got "${value}"`);
  return [...previous, value];
}

/** The options that say which web server to read; shared by `ferry agent` and `ferry agent sites`. */
export function withWebConfig(cmd: Command): Command {
  return cmd
    .option(
      '--web-config <kind>',
      "read the server's own web server: nginx (nginx -T) or apache (apache2ctl -S)",
    )
    .option(
      '--web-config-command <cmd>',
      'the dump command and its arguments, space separated (default nginx -T, apache2ctl -S)',
    )
    .option(
      '--php-pool-dir <dir>',
      'a folder of PHP-FPM pool files (repeat; default /etc/php/*/fpm/pool.d)',
      many,
    )
    .option(
      '--site-root <dir>',
      "a folder sites' files may live under (repeat; default /var/www and /srv)",
      many,
    );
}

/** WebConfigOptions from those options; undefined without --web-config. */
export function webConfigOf(o: Record<string, unknown>): WebConfigOptions | undefined {
  const kind = o.webConfig as string | undefined;
  if (kind === undefined) return undefined;
  if (kind !== 'nginx' && kind !== 'apache')
    throw new FerryError('AGENT_OPTIONS', `--web-config must be nginx or apache, got "${kind}"`);
  const command = (o.webConfigCommand as string | undefined)?.split(/\s+/).filter(Boolean);
  return {
    kind,
    ...(command?.length ? { command } : {}),
    ...(o.phpPoolDir ? { poolDirs: o.phpPoolDir as string[] } : {}),
    ...(o.siteRoot ? { declaredRoots: o.siteRoot as string[] } : {}),
  };
}

/** The report as a table: one line per site, then each refusal with its file and line. */
export function formatWebSites(r: WebSitesReport): string {
  const rows = r.sites.map((s) => [
    s.names.join(' ') || '(no name)',
    s.listens.map((l) => `${l.address ?? '*'}:${l.port}${l.tls ? '/tls' : ''}`).join(' '),
    s.application + (s.user ? ` (${s.user}:${s.group ?? ''})` : ''),
    s.paths.map((p) => p.path).join(' ') || '—',
    s.movable ? 'yes' : 'no',
    `${s.at.file}:${s.at.line}${s.defaultServer ? ' (default)' : ''}`,
  ]);
  const why = r.sites.flatMap((s) =>
    s.refusals.map(
      (x) =>
        `  ${s.names[0] ?? `${s.at.file}:${s.at.line}`}: ${x.code}: ${x.message}${x.at ? ` (${x.at.file}:${x.at.line})` : ''}`,
    ),
  );
  return (
    `${r.server} sites, from ${r.command}; site roots ${r.declaredRoots.join(', ')}\n` +
    table(['NAMES', 'LISTENS', 'APPLICATION', 'PATHS', 'MOVABLE', 'BLOCK'], rows) +
    (why.length ? `\nnot movable:\n${why.join('\n')}` : '') +
    '\n'
  );
}

/** `ferry agent sites`: read this server's web server configuration and print its sites. */
export function registerAgentSites(agent: Command): void {
  // The --web-config options are `ferry agent`'s own (commander hands them to the parent wherever they stand).
  agent
    .command('sites')
    .description(
      "List this server's own nginx or Apache sites and what Ferry can move (reads, changes nothing); takes the --web-config options above",
    )
    .option('--json', 'print JSON')
    .action(
      action(async (o: { json?: boolean }, cmd: Command) => {
        const cfg = webConfigOf(cmd.optsWithGlobals());
        if (!cfg)
          throw new FerryError('AGENT_OPTIONS', 'name the web server with --web-config nginx or apache');
        const report = await readWebSites(cfg);
        process.stdout.write(o.json ? JSON.stringify(report) + '\n' : formatWebSites(report));
      }),
    );
}
