/** `ferry relay`: one redirect engine alone, in the foreground, until SIGINT or SIGTERM. */
import { Option, type Command } from 'commander';
import { FerryError } from '../common/errors.js';
import { parseListen, parseUpstream, runRelay } from '../relay/cli.js';
import { number } from './options.js';

export function registerRelay(program: Command): void {
  program
    .command('relay')
    .description(
      'Run a redirect alone: forward every connection (and with --udp, datagram) on ADDR:PORTs to another address',
    )
    .requiredOption('--listen <addr:port[,port...]>', 'address and ports to listen on (IPv6 as [addr]:port)')
    .requiredOption(
      '--to <addr[:port]>',
      'upstream address; without a port, each connection keeps its listen port',
    )
    .option('--udp', 'relay UDP on the same ports as well')
    .addOption(
      new Option('--proxy-protocol <version>', 'send a PROXY protocol header upstream').choices(['v1', 'v2']),
    )
    .option(
      '--accept-proxy-protocol',
      'expect a PROXY protocol header from clients (the relay stands behind another proxy)',
    )
    .addOption(
      new Option('--engine <engine>', 'userspace relay or kernel nftables DNAT')
        .choices(['userspace', 'kernel'])
        .default('userspace'),
    )
    .addOption(
      new Option(
        '--data-plane <plane>',
        'userspace data plane: native (C addon, faster), js (TypeScript), or auto (native where it can)',
      )
        .choices(['auto', 'native', 'js'])
        .default('auto'),
    )
    .option('--workers <n>', 'userspace relay processes sharing the listening sockets', number(1, 64), 1)
    .option('--source <addr>', 'local address of upstream connections')
    .option(
      '--drain-timeout <ms>',
      'on shutdown, wait this long for open connections to finish',
      number(0),
      5000,
    )
    .option('--json', 'print the bound ports and, at exit, the counters as JSON lines')
    .action(async (o: Record<string, unknown>) => {
      let listen;
      let upstream;
      try {
        listen = parseListen(String(o.listen));
        upstream = parseUpstream(String(o.to));
      } catch (err) {
        throw new FerryError('USAGE', (err as Error).message, { cause: err });
      }
      const controller = new AbortController();
      const stop = () => controller.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      const json = Boolean(o.json);
      try {
        const stats = await runRelay(
          {
            engine: o.engine as 'userspace' | 'kernel',
            listen,
            upstream,
            udp: Boolean(o.udp),
            workers: o.workers as number,
            dataPlane: o.dataPlane as 'auto' | 'native' | 'js',
            drainTimeoutMs: o.drainTimeout as number,
            ...(o.proxyProtocol ? { proxyProtocol: o.proxyProtocol as 'v1' | 'v2' } : {}),
            ...(o.acceptProxyProtocol ? { acceptProxyProtocol: true } : {}),
            ...(o.source ? { sourceAddress: String(o.source) } : {}),
            onReady: (engine) => {
              const where = `${listen.address}:${engine.ports.join(',')}`;
              const to = `${upstream.address}${upstream.port ? `:${upstream.port}` : ''}`;
              process.stdout.write(
                json
                  ? JSON.stringify({
                      listening: { address: listen.address, ports: engine.ports },
                      upstream,
                      engine: o.engine,
                    }) + '\n'
                  : `ferry relay (${String(o.engine)}): ${where} → ${to}; Ctrl-C to stop\n`,
              );
            },
          },
          controller.signal,
        );
        process.stdout.write(
          json
            ? JSON.stringify({ stats }) + '\n'
            : `stopped: ${stats.totalConnections} connections, ${stats.bytesToUpstream} bytes up, ${stats.bytesToClient} bytes down\n`,
        );
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
      }
    });
}
