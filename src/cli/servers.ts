/** `ferry servers`: the hosting servers, their addresses, free temporary IPs and sites. */
import type { Command } from 'commander';
import type { ServerSummary } from '../controller/index.js';
import { action, clientOf, table, withConnection, type ConnectionOptions } from './client.js';

export function registerServers(program: Command): void {
  withConnection(
    program
      .command('servers')
      .description('List the hosting servers, their addresses, free temporary IPs and sites'),
  ).action(
    action(async (o: ConnectionOptions) => {
      const { servers } = await clientOf(o).get<{ servers: ServerSummary[] }>('/v1/servers');
      if (o.json) {
        process.stdout.write(JSON.stringify({ servers }) + '\n');
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
      return 0;
    }),
  );
}
