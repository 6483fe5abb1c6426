/** `ferry agent`: the host agent daemon on a hosting server (foreground; systemd runs it). */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { InvalidArgumentError, type Command } from 'commander';
import { IprouteAddresses, LoopbackAddresses, runAgent, type WebOptions } from '../agent/index.js';
import { FerryError } from '../common/errors.js';
import { createLogger } from '../common/log.js';
import { number, port } from './options.js';
import { registerAgentSites, webConfigOf, withWebConfig } from './web-sites.js';

function ipArg(value: string, previous: string[] = []): string[] {
  if (!isIP(value)) throw new InvalidArgumentError(`expected an IP address literal, got "${value}"`);
  return [...previous, value];
}

function oneIp(value: string): string {
  if (!isIP(value)) throw new InvalidArgumentError(`expected an IP address literal, got "${value}"`);
  return value;
}

/** The token from --token-file or FERRY_AGENT_TOKEN; never from the command line (ps shows it). */
export function readToken(file: string | undefined, env = process.env): string {
  if (file) {
    try {
      return readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new FerryError('AGENT_OPTIONS', `cannot read the token file ${file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  const t = env.FERRY_AGENT_TOKEN?.trim();
  if (!t) throw new FerryError('AGENT_OPTIONS', 'no token: pass --token-file FILE or set FERRY_AGENT_TOKEN');
  return t;
}

export function registerAgent(program: Command): void {
  const agent = program
    .command('agent')
    .description('Run the host agent: the API through which the controller drives this hosting server')
    .option('--listen <ip>', 'address of the agent API', oneIp, '0.0.0.0')
    .option('--port <port>', 'port of the agent API', port, 7070)
    .option('--token-file <file>', 'file holding the bearer token (else FERRY_AGENT_TOKEN)')
    .option('--tls-cert <file>', 'PEM certificate: serve the API over HTTPS')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option('--id <name>', "this server's name (sent in X-Served-By)", hostname())
    .option('--shared-ip <ip>', 'a shared IP of this server (repeat for several; required)', ipArg)
    .option('--http-port <port>', 'port the sites are served on at the shared IPs', port, 80)
    .option('--data-dir <dir>', "sites' data and the agent's state", '/var/lib/ferry/agent')
    .option('--interface <dev>', 'interface temporary IPs are added to (iproute2)')
    .option(
      '--loopback-addresses',
      'sandbox only: temporary IPs are 127.0.0.0/8 addresses, nothing is configured',
    )
    .option(
      '--web <kind>',
      'how sites are served: builtin (the site app on the shared IPs) or nginx (nginx in front of the app)',
      'builtin',
    )
    .option(
      '--nginx-conf-dir <dir>',
      'folder nginx includes inside http {} for the server blocks',
      '/etc/nginx/ferry.d',
    )
    .option('--nginx-command <cmd>', 'nginx command and fixed arguments, space separated', 'nginx')
    .option(
      '--apachectl-command <cmd>',
      'apachectl command and fixed arguments (config test, graceful reload), space separated',
      'apache2ctl',
    )
    .option('--app-address <ip>', 'where the site app listens behind nginx', oneIp, '127.0.0.1')
    .option('--app-port <port>', 'port of the site app behind nginx', port, 8080)
    .option(
      '--stats-port <port>',
      'loopback UDP port nginx sends per-request log lines to (0 = any)',
      port,
      0,
    )
    .option(
      '--nginx-proxy-with <who>',
      'after the cut-over, proxy a moved site with the app behind nginx (app: no reload) or with an nginx proxy_pass block (nginx)',
      'app',
    )
    .option(
      '--nginx-reload-on-remove',
      'reload nginx as soon as a site is removed (default: its block goes at the next reload)',
    )
    .option(
      '--web-include-dir <dir>',
      "folder the server's own web server includes (nginx: inside http {}) where the agent writes a moved site's front and backend (default /etc/nginx/conf.d, or /etc/apache2/sites-enabled)",
    )
    .option(
      '--php-fpm-command <cmd>',
      "PHP-FPM binary and fixed arguments, space separated, checked with -t (default php-fpm<version>, the version of the pool file's folder)",
    )
    .option(
      '--php-fpm-pid-file <file>',
      "PHP-FPM master's pid file, signalled to reload the pools (default /run/php/php<version>-fpm.pid)",
    )
    .option(
      '--crontab-command <cmd>',
      'crontab command, space separated (without it: the cron spool files)',
      'crontab',
    )
    .option(
      '--engine <kind>',
      'redirect engine when the controller names none: userspace or kernel',
      'userspace',
    )
    .option(
      '--rsync-address <ip>',
      'address the TLS listener that receives site data (rsync over TLS) binds (default the first shared IP)',
      oneIp,
    )
    .option('--rsync-port <port>', 'port of the TLS listener that receives site data', port, 873)
    .option(
      '--redirect-orphan-timeout <seconds>',
      'a redirect outlives the agent (restart, upgrade); with no agent back within this time it stops by itself',
      number(1),
      600,
    )
    .option(
      '--site-app <where>',
      'where the site app runs: process (its own, which outlives the agent and is adopted by its next start) or in-process (stops with the agent)',
      'process',
    )
    .option(
      '--mariadb-defaults-file <file>',
      "MariaDB option file with an administrator account ([client] user, password, socket or host, port; e.g. /etc/mysql/debian.cnf): the agent moves sites' databases",
    )
    .option(
      '--mariadb-address <ip>',
      'address other servers reach this MariaDB at, and the one it replicates from (default the first shared IP)',
      oneIp,
    )
    .option('--mariadb-port <port>', 'port of this MariaDB at --mariadb-address', port, 3306)
    .option('--mariadb-ca <file>', "CA (PEM) of this MariaDB's certificate, handed to replicas to verify it")
    .option(
      '--mariadb-option-dir <dir>',
      "folder this MariaDB reads option files from, where a migration channel's filter is kept",
      '/etc/mysql/mariadb.conf.d',
    )
    .option(
      '--postfix-config <dir>',
      "this server's Postfix configuration directory (postconf -c DIR): a site's domain moves its mail with it (with --dovecot-config)",
    )
    .option(
      '--dovecot-config <file>',
      "this server's Dovecot configuration file (doveconf -c FILE), with --postfix-config",
    )
    .option(
      '--site-app-orphan-timeout <seconds>',
      "the site app's own process outlives the agent; with no agent back within this time it stops by itself",
      number(1),
      600,
    );
  withWebConfig(agent).action(async (o: Record<string, unknown>) => {
    // Checked here, not by commander: a required option of `agent` would be demanded of `agent sites` too.
    if (!(o.sharedIp as string[] | undefined)?.length)
      throw new FerryError('AGENT_OPTIONS', 'name a shared IP of this server with --shared-ip IP');
    const web = o.web as string;
    if (web !== 'builtin' && web !== 'nginx')
      throw new FerryError('AGENT_OPTIONS', `--web must be builtin or nginx, got "${web}"`);
    const engine = o.engine as string;
    if (engine !== 'userspace' && engine !== 'kernel')
      throw new FerryError('AGENT_OPTIONS', `--engine must be userspace or kernel, got "${engine}"`);
    if (Boolean(o.postfixConfig) !== Boolean(o.dovecotConfig))
      throw new FerryError(
        'AGENT_OPTIONS',
        'moving mail needs both Postfix and Dovecot: pass both --postfix-config and --dovecot-config, or neither',
      );
    if (Boolean(o.tlsCert) !== Boolean(o.tlsKey))
      throw new FerryError('AGENT_OPTIONS', 'pass both --tls-cert and --tls-key, or neither');
    if (!o.interface && !o.loopbackAddresses) {
      throw new FerryError(
        'AGENT_OPTIONS',
        'name the interface temporary IPs go on with --interface DEV (or --loopback-addresses in a sandbox)',
      );
    }
    if (o.nginxProxyWith !== 'app' && o.nginxProxyWith !== 'nginx') {
      throw new FerryError(
        'AGENT_OPTIONS',
        `--nginx-proxy-with must be app or nginx, got "${String(o.nginxProxyWith)}"`,
      );
    }
    if (o.siteApp !== 'process' && o.siteApp !== 'in-process')
      throw new FerryError(
        'AGENT_OPTIONS',
        `--site-app must be process or in-process, got "${String(o.siteApp)}"`,
      );
    const webConfig = webConfigOf(o);
    const token = readToken(o.tokenFile as string | undefined);
    const webOpts: WebOptions =
      web === 'nginx'
        ? {
            kind: 'nginx',
            confDir: o.nginxConfDir as string,
            command: (o.nginxCommand as string).split(/\s+/).filter(Boolean),
            appAddress: o.appAddress as string,
            appPort: o.appPort as number,
            statsPort: o.statsPort as number,
            proxyWith: o.nginxProxyWith === 'nginx' ? 'nginx' : 'app',
            reloadOnRemove: Boolean(o.nginxReloadOnRemove),
          }
        : { kind: 'builtin' };
    const log = createLogger('ferry-agent');
    const controller = new AbortController();
    const stop = () => controller.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      await runAgent(
        {
          id: o.id as string,
          dataDir: o.dataDir as string,
          sharedIps: o.sharedIp as string[],
          httpPort: o.httpPort as number,
          addresses: o.loopbackAddresses
            ? new LoopbackAddresses()
            : new IprouteAddresses(o.interface as string),
          web: webOpts,
          engine,
          redirectOrphanTimeoutMs: (o.redirectOrphanTimeout as number) * 1000,
          siteApp: o.siteApp === 'in-process' ? 'in-process' : 'process',
          siteAppOrphanTimeoutMs: (o.siteAppOrphanTimeout as number) * 1000,
          ...(webConfig ? { webConfig } : {}),
          webStack: {
            ...(o.webIncludeDir ? { includeDir: o.webIncludeDir as string } : {}),
            command: ((webConfig?.kind === 'apache' ? o.apachectlCommand : o.nginxCommand) as string)
              .split(/\s+/)
              .filter(Boolean),
            phpFpm: {
              ...(o.phpFpmCommand
                ? { command: (o.phpFpmCommand as string).split(/\s+/).filter(Boolean) }
                : {}),
              ...(o.phpFpmPidFile ? { pidFile: o.phpFpmPidFile as string } : {}),
            },
            crontabCommand: (o.crontabCommand as string).split(/\s+/).filter(Boolean),
          },
          ...(o.mariadbDefaultsFile
            ? {
                mariadb: {
                  defaultsFile: o.mariadbDefaultsFile as string,
                  ...(o.mariadbAddress ? { address: o.mariadbAddress as string } : {}),
                  port: o.mariadbPort as number,
                  ...(o.mariadbCa ? { caFile: o.mariadbCa as string } : {}),
                  optionDir: o.mariadbOptionDir as string,
                },
              }
            : {}),
          ...(o.postfixConfig
            ? {
                mail: {
                  postfixConfig: o.postfixConfig as string,
                  dovecotConfig: o.dovecotConfig as string,
                },
              }
            : {}),
          rsync: {
            ...(o.rsyncAddress ? { address: o.rsyncAddress as string } : {}),
            port: o.rsyncPort as number,
          },
          listen: { address: o.listen as string, port: o.port as number },
          token,
          ...(o.tlsCert ? { tls: { certFile: o.tlsCert as string, keyFile: o.tlsKey as string } } : {}),
          logger: log,
          onReady: (url) => {
            log.info({ url, id: o.id, web }, 'agent listening');
            process.stdout.write(`ferry agent ${o.id as string} listening on ${url}\n`);
          },
        },
        controller.signal,
      );
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
  });
  registerAgentSites(agent);
}
