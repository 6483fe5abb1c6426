/** `ferry demo`: the sandbox migration under live load (what `npm start` runs). */
import { InvalidArgumentError, type Command } from 'commander';
import { DEFAULT_SANDBOX, runDemo } from '../sandbox/index.js';
import { millis, number, port, positive, share } from './options.js';

function stack(value: string): 'builtin' | 'nginx-php' {
  if (value !== 'builtin' && value !== 'nginx-php')
    throw new InvalidArgumentError(`expected builtin or nginx-php, got "${value}"`);
  return value;
}

function database(value: string): 'none' | 'mariadb' {
  if (value !== 'none' && value !== 'mariadb')
    throw new InvalidArgumentError(`expected none or mariadb, got "${value}"`);
  return value;
}

export function registerDemo(program: Command): void {
  const d = DEFAULT_SANDBOX;
  program
    .command('demo')
    .description('Run a whole platform on loopback and migrate one site under live load, printing a timeline')
    .option('--json', 'print the summary as a JSON line, last')
    .option(
      '--stack <stack>',
      "what the hosting servers run: builtin (Ferry's demo app) or nginx-php (a private nginx and php-fpm8.2 per server, a PHP site that moves and a static one that stays)",
      stack,
      'builtin',
    )
    .option(
      '--database <kind>',
      "with --stack nginx-php: none, or mariadb (a private MariaDB per server; the PHP site's orders live in the origin's and move with it)",
      database,
      'none',
    )
    .option(
      '--serve',
      'keep the sandbox up after the migration, until Ctrl-C, with the control API and dashboard',
    )
    .option(
      '--no-migrate',
      'with --serve: run the load but start no migration (start one from the dashboard or CLI)',
    )
    .option('--api-address <ip>', 'with --serve: address of the control API and dashboard', '127.0.0.1')
    .option(
      '--api-port <port>',
      'with --serve: port of the control API and dashboard (0 picks one)',
      port,
      7300,
    )
    .option('--ttl <seconds>', 'TTL of the sites A records', number(1, 86400), d.ttl)
    .option('--rate <rps>', 'total requests per second across all sites', positive, d.rate)
    .option('--clients <n>', 'simulated users', number(1, 10000), d.clients)
    .option(
      '--stale-share <0..1>',
      'share of users whose caches keep answers past the TTL',
      share,
      d.staleShare,
    )
    .option(
      '--stale-overstay <ms>',
      'how long past the TTL stale users keep an answer',
      millis,
      d.staleOverstayMs,
    )
    .option('--keep-alive-share <0..1>', 'share of users that reuse connections', share, d.keepAliveShare)
    .option('--write-share <0..1>', 'share of requests that are writes (POST /orders)', share, d.writeShare)
    .option(
      '--quiet-window <ms>',
      'traffic must be absent this long before a wait ends',
      millis,
      d.quietWindowMs,
    )
    .option('--dns-temp-cap <ms>', 'longest wait for IP1 to go quiet after the TTL', millis, d.dnsTempCapMs)
    .option(
      '--drain-cap <ms>',
      'longest wait for the temporary IP to go quiet after the TTL',
      millis,
      d.drainCapMs,
    )
    .option('--warmup <ms>', 'load before the migration starts', millis, d.warmupMs)
    .option('--cooldown <ms>', 'load after the migration ends', millis, d.cooldownMs)
    .option('--dns-address <ip>', 'address of the name server', d.dnsAddress)
    .option('--dns-port <port>', 'port of the name server (UDP and TCP)', port, d.dnsPort)
    .option('--http-port <port>', 'port of every site on every address', port, d.httpPort)
    .option('--origin-ip <ip>', 'shared IP of the origin (IP1)', d.originIp)
    .option('--target-ip <ip>', 'IP of the target (IP2)', d.targetIp)
    .option('--temp-ip <ip>', 'temporary IP (IPt)', d.tempIp)
    .action(async (o: Record<string, unknown>) => {
      const controller = new AbortController();
      // The first signal stops the demo in order; a second one exits at once (what the demo
      // started is then killed and removed by its exit hooks).
      const stop = () => {
        if (controller.signal.aborted) process.exit(130);
        controller.abort(new Error('interrupted'));
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      try {
        const summary = await runDemo({
          json: Boolean(o.json),
          stack: o.stack as 'builtin' | 'nginx-php',
          database: o.database as 'none' | 'mariadb',
          serve: Boolean(o.serve),
          migrate: o.migrate !== false,
          apiAddress: o.apiAddress as string,
          apiPort: o.apiPort as number,
          ...(process.env.FERRY_TOKEN ? { apiToken: process.env.FERRY_TOKEN } : {}),
          signal: controller.signal,
          ttl: o.ttl as number,
          rate: o.rate as number,
          clients: o.clients as number,
          staleShare: o.staleShare as number,
          staleOverstayMs: o.staleOverstay as number,
          keepAliveShare: o.keepAliveShare as number,
          writeShare: o.writeShare as number,
          quietWindowMs: o.quietWindow as number,
          dnsTempCapMs: o.dnsTempCap as number,
          drainCapMs: o.drainCap as number,
          warmupMs: o.warmup as number,
          cooldownMs: o.cooldown as number,
          dnsAddress: o.dnsAddress as string,
          dnsPort: o.dnsPort as number,
          httpPort: o.httpPort as number,
          originIp: o.originIp as string,
          targetIp: o.targetIp as string,
          tempIp: o.tempIp as string,
        });
        if (!summary) return; // --no-migrate: nothing to judge
        const ok =
          summary.finalPhase === 'completed' &&
          summary.requests.failed === 0 &&
          summary.otherSites.failed === 0 &&
          summary.writes.missing === 0 &&
          summary.writes.duplicated === 0 &&
          summary.writes.onOriginAfterCutover === 0;
        process.exitCode = ok ? 0 : 1;
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
      }
    });
}
