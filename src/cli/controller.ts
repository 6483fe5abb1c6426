/**
 * `ferry controller --config ferry.yaml`: the controller in the foreground: the DNS provider (the
 * embedded name server by default), the agents over HTTP, and every migration of the journal,
 * resumed at start; with an `api:` section, the control API and dashboard too. `--migrate` starts migrations at once (before the control API exists, or for
 * scripts), `--events` prints the event stream as JSON lines on stdout.
 */
import type { Command } from 'commander';
import { FerryError } from '../common/errors.js';
import { createLogger } from '../common/log.js';
import { sleep } from '../common/time.js';
import { dirname, resolve } from 'node:path';
import { apiOptionsFromConfig, startApi, type StartedApi } from '../api/index.js';
import { loadConfig, parseDuration, startController, type ControllerEvent } from '../controller/index.js';
import { redactPostgresUrl } from '../migration/index.js';
import { registerControllerStatus } from './controller-status.js';

function migrateArg(
  value: string,
  previous: Array<{ domain: string; to: string }> = [],
): Array<{ domain: string; to: string }> {
  const m = /^([^=\s]+)=([A-Za-z0-9._-]+)$/.exec(value);
  if (!m)
    throw new FerryError('USAGE', `--migrate takes DOMAIN=SERVER, e.g. shop.example=target; got "${value}"`);
  return [...previous, { domain: m[1]!, to: m[2]! }];
}

export function registerController(program: Command): void {
  const cmd = program
    .command('controller')
    .description(
      'Run the controller: DNS, agents over HTTP, and the migrations of the journal (ferry controller status: who leads)',
    )
    // Checked in the action: a required option here would be demanded of `controller status` too.
    .option('--config <file>', 'the YAML config (check it with: ferry config check FILE)')
    .option(
      '--migrate <domain=server>',
      'start migrating DOMAIN to SERVER once running (repeatable)',
      migrateArg,
    )
    .option(
      '--migrate-delay <duration>',
      'wait this long after start before the --migrate migrations begin (e.g. 10s)',
      '0',
    )
    .option(
      '--exit-when-done',
      'exit once the migrations started with --migrate have ended (status 0 when all completed)',
    )
    .option('--events', 'print every controller event as a JSON line on stdout')
    .option('--no-resume', 'do not resume unfinished migrations of the journal')
    .action(
      async (o: {
        config?: string;
        migrate?: Array<{ domain: string; to: string }>;
        migrateDelay: string;
        exitWhenDone?: boolean;
        events?: boolean;
        resume: boolean;
      }) => {
        if (!o.config)
          throw new FerryError(
            'USAGE',
            'name the config with --config FILE (ferry controller --config ferry.yaml)',
          );
        const delayMs = parseDuration(o.migrateDelay);
        if (delayMs === null)
          throw new FerryError(
            'USAGE',
            `--migrate-delay takes a duration such as 10s, got "${o.migrateDelay}"`,
          );
        const log = createLogger('ferry-controller');
        const config = await loadConfig(o.config);
        const apiOptions = config.api
          ? apiOptionsFromConfig(config.api, { baseDir: dirname(resolve(config.file)) })
          : undefined;
        // Installed before the start: a SIGTERM while PostgreSQL is unreachable stops the wait.
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        let running: Awaited<ReturnType<typeof startController>>;
        try {
          if (config.journal.kind === 'postgres')
            log.info(
              { journal: redactPostgresUrl(config.journal.url) },
              'connecting to the journal on PostgreSQL',
            );
          running = await startController(config, {
            resume: o.resume,
            signal: stop.signal,
            logger: log,
            // Where the other controllers forward writes, unless leader.advertise says otherwise.
            ...(apiOptions && !['0.0.0.0', '::'].includes(apiOptions.host)
              ? {
                  advertise: `http://${apiOptions.host.includes(':') ? `[${apiOptions.host}]` : apiOptions.host}:${apiOptions.port}`,
                }
              : {}),
            onJournalRetry: (r) =>
              log.warn({ attempt: r.attempt, retryInMs: r.delayMs }, `${r.message}; retrying`),
          });
        } catch (err) {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          if (stop.signal.aborted) {
            log.info('stopped while starting (the journal was not reachable yet); nothing was left running');
            return;
          }
          throw err;
        }
        const { controller } = running;
        const onLost = (err: Error) =>
          log.error(
            { journal: 'lost' },
            `${err.message}; migrations stopped where they were (resumable); restart the controller once PostgreSQL is back`,
          );
        controller.journal.on('lost', onLost);
        let api: StartedApi | undefined;
        try {
          if (apiOptions)
            api = await startApi(controller, {
              ...apiOptions,
              logger: log,
              ...(running.leader ? { leader: running.leader } : {}),
            });
        } catch (err) {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          controller.journal.off('lost', onLost);
          await running.close();
          throw err;
        }
        const onEvent = (e: ControllerEvent) => {
          if (o.events) process.stdout.write(JSON.stringify(e) + '\n');
          if (e.type === 'phase') log.info({ migration: e.migrationId, phase: e.data.phase }, 'phase');
          if (e.type === 'error') log.warn({ migration: e.migrationId, ...e.data }, 'migration error');
        };
        controller.on('event', onEvent);
        try {
          const dnsAt = running.dnsServer
            ? `${running.dnsServer.address}:${running.dnsServer.port}`
            : config.dns.provider;
          log.info(
            {
              config: config.file,
              dns: dnsAt,
              api: api?.url ?? null,
              servers: config.servers.length,
              sites: config.sites.length,
              resumed: running.resumed,
            },
            'controller running',
          );
          const dnsCheck = await running.checkDns();
          if (dnsCheck?.ok) log.info({ dns: config.dns.provider }, dnsCheck.message);
          else if (dnsCheck) log.warn({ dns: config.dns.provider }, `dns check failed: ${dnsCheck.message}`);
          for (const c of await running.checkAgents()) {
            if (c.ok) log.info({ server: c.server }, c.message);
            else log.warn({ server: c.server }, `agent check failed: ${c.message}`);
          }
          if (o.events)
            process.stdout.write(
              JSON.stringify({ type: 'ready', dns: dnsAt, api: api?.url ?? null, resumed: running.resumed }) +
                '\n',
            );
          const started = [];
          if (o.migrate?.length && delayMs > 0) await sleep(delayMs, stop.signal).catch(() => undefined);
          for (const m of stop.signal.aborted ? [] : (o.migrate ?? []))
            started.push((await controller.startMigration(m)).plan.id);
          const ended = started.length
            ? Promise.all(started.map((id) => controller.wait(id))).then((done) => {
                const failed = done.filter((r) => r.phase !== 'completed');
                if (o.events)
                  process.stdout.write(
                    JSON.stringify({
                      type: 'done',
                      migrations: done.map((r) => ({
                        id: r.plan.id,
                        phase: r.phase,
                        error: r.error ?? null,
                      })),
                    }) + '\n',
                  );
                for (const r of done)
                  log.info({ migration: r.plan.id, phase: r.phase, error: r.error }, 'migration ended');
                process.exitCode = failed.length ? 1 : 0;
              })
            : new Promise<void>(() => undefined);
          const stopped = new Promise<void>((resolve) =>
            stop.signal.addEventListener('abort', () => resolve(), { once: true }),
          );
          await Promise.race([o.exitWhenDone && started.length ? ended : stopped, stopped]);
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          controller.off('event', onEvent);
          controller.journal.off('lost', onLost);
          await api?.close();
          await running.close();
        }
      },
    );
  registerControllerStatus(cmd);
}
