/** `ferry sites SERVER`: the sites of a server's own web server, through the controller's API. */
import type { Command } from 'commander';
import type { WebSitesReport } from '../agent/webconfig/model.js';
import { action, clientOf, withConnection, type ConnectionOptions } from './client.js';
import { formatWebSites } from './web-sites.js';

export function registerSites(program: Command): void {
  withConnection(
    program
      .command('sites')
      .description(
        "List the sites of a server's own nginx or Apache (names, listens, application, user) and whether Ferry can move each, with every refusal's file and line",
      )
      .argument('<server>', 'the server, as ferry servers names it'),
  ).action(
    action(async (server: string, o: ConnectionOptions) => {
      const report = await clientOf(o).get<WebSitesReport & { serverId: string }>(
        `/v1/servers/${encodeURIComponent(server)}/web-sites`,
      );
      process.stdout.write(
        o.json ? JSON.stringify(report) + '\n' : `server ${report.serverId}: ${formatWebSites(report)}`,
      );
      return 0;
    }),
  );
}
