/** `ferry servers`: the hosting servers, their addresses, free temporary IPs and sites. */
import type { Command } from 'commander';
import type { ServerSummary } from '../controller/index.js';
import { ApiClient, action, clientOf, table, withConnection, type ConnectionOptions } from './client.js';

export function registerServers(program: Command): void {
  withConnection(
    program
      .command('servers')
      .description('List the hosting servers, their addresses, free temporary IPs and sites')
      .option('--limit <n>', 'most servers listed (default: every one, read a page of 1000 at a time)')
      .option('--all', 'every server (the default)'),
  ).action(
    action(async (o: ConnectionOptions & { limit?: string; all?: boolean }) => {
      const client = clientOf(o);
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
            s.sites.join(' ') || '—',
          ]),
        ) + '\n',
      );
      if (more) process.stdout.write(`… more servers: raise --limit or give --all\n`);
      return 0;
    }),
  );
}
