/** `ferry servers [SERVER]`: the hosting servers (addresses, free temporary IPs, site counts), or one server's sites. */
import type { Command } from 'commander';
import type { ServerSummary, SiteSummary } from '../controller/index.js';
import { ApiClient, action, clientOf, table, withConnection, type ConnectionOptions } from './client.js';

export function registerServers(program: Command): void {
  withConnection(
    program
      .command('servers')
      .description(
        'List the hosting servers, their addresses, free temporary IPs and how many sites each hosts; with SERVER, the sites it hosts now',
      )
      .argument('[server]', 'list the sites of this server instead')
      .option(
        '--limit <n>',
        'most servers (or sites) listed (default: every one, read a page of 1000 at a time)',
      )
      .option('--all', 'every one (the default)'),
  ).action(
    action(async (server: string | undefined, o: ConnectionOptions & { limit?: string; all?: boolean }) => {
      const client = clientOf(o);
      if (server !== undefined) {
        const { items: sites, more } = await client.list<SiteSummary>(
          `/v1/sites?server=${encodeURIComponent(server)}`,
          'sites',
          ApiClient.listLimit(o, undefined),
        );
        if (o.json) {
          process.stdout.write(JSON.stringify({ server, sites, ...(more ? { more } : {}) }) + '\n');
          return 0;
        }
        process.stdout.write(
          table(
            ['SITE', 'PORTS', 'KIND', 'MIGRATION'],
            sites.map((s) => [s.domain, s.ports.join(','), s.kind, s.migration ?? '—']),
          ) + '\n',
        );
        if (more) process.stdout.write(`… more sites: raise --limit or give --all\n`);
        return 0;
      }
      const { items: servers, more } = await client.list<ServerSummary>(
        '/v1/servers',
        'servers',
        ApiClient.listLimit(o, undefined),
      );
      if (o.json) {
        process.stdout.write(JSON.stringify({ servers, ...(more ? { more } : {}) }) + '\n');
        return 0;
      }
      process.stdout.write(
        table(
          ['SERVER', 'SHARED IPS', 'FREE TEMP IPS', 'SITES'],
          servers.map((s) => [
            s.id,
            [...s.sharedIps, ...(s.sharedIps6 ?? [])].join(','),
            `${s.freeTempIps.length}/${s.tempIpPool.length}` +
              (s.tempIpPool6 ? ` (IPv6 ${s.freeTempIps6?.length ?? 0}/${s.tempIpPool6.length})` : ''),
            String(s.siteCount),
          ]),
        ) + '\n',
      );
      if (more)
        process.stdout.write(
          `… more servers: raise --limit or give --all; ferry servers SERVER lists its sites\n`,
        );
      return 0;
    }),
  );
}
