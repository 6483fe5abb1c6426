/** `ferry records DOMAIN`: the domain's A record as the controller's DNS provider has it. */
import type { Command } from 'commander';
import { action, clientOf, withConnection, type ConnectionOptions } from './client.js';

export function registerRecords(program: Command): void {
  withConnection(
    program
      .command('records')
      .description("Show a domain's A record (where it points now)")
      .argument('<domain>', 'e.g. shop.example'),
  ).action(
    action(async (domain: string, o: ConnectionOptions) => {
      const res = await clientOf(o).get<{ domain: string; A: { ttl: number; rdata: string[] } | null }>(
        `/v1/records/${encodeURIComponent(domain)}`,
      );
      if (o.json) process.stdout.write(JSON.stringify(res) + '\n');
      else if (!res.A) process.stdout.write(`${res.domain} has no A record\n`);
      else
        process.stdout.write(
          res.A.rdata.map((a) => `${res.domain}\t${res.A!.ttl}\tIN\tA\t${a}`).join('\n') + '\n',
        );
      return 0;
    }),
  );
}
