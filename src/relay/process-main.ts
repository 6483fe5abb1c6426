/**
 * Entry point of a `RelayProcess` (see process.ts): one userspace redirect in a process of its own
 * session, driven over a Unix socket by whichever agent holds it. Argument: the JSON of
 * `RelayProcessConfig`. It prints one JSON line on stdout once it forwards (or why it could not
 * start), then writes nothing more there. It stops when asked (`stop`), on SIGTERM or SIGINT, or
 * by itself once no agent has been connected for `orphanTimeoutMs`.
 */
import { FerryError, isFerryError } from '../common/errors.js';
import { serveControl, writeReady, type ControlServer } from '../common/control-socket.js';
import { createUserspaceRelay } from './workers.js';
import { resolveRelayOptions } from './options.js';
import type { RelayProcessConfig, RelayProcessInfo, RelayProcessRequest } from './process.js';

const config = JSON.parse(process.argv[2] ?? '{}') as RelayProcessConfig;
let holding = false;
let upstream = resolveRelayOptions(config.relay).upstream;
let stopping: Promise<void> | null = null;

async function main(): Promise<void> {
  const relay = createUserspaceRelay(config.relay);
  try {
    await relay.start();
  } catch (err) {
    writeReady({
      ok: false,
      code: isFerryError(err) ? err.code : 'RELAY_PROCESS',
      message: (err as Error).message,
    });
    process.exitCode = 1;
    return;
  }
  let control: ControlServer | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      control?.close();
      await relay.close();
      // The reply to `stop` goes out, then the control connections end; the process then ends by
      // itself, or here if something still holds it.
      control?.endConnections();
      setTimeout(() => process.exit(0), 1000).unref();
    })());
  const info = (): RelayProcessInfo => ({
    pid: process.pid,
    ports: relay.ports,
    listen: resolveRelayOptions(config.relay).listen,
    upstream,
    holding,
  });

  const handle = async (req: RelayProcessRequest): Promise<unknown> => {
    switch (req.op) {
      case 'info':
        return info();
      case 'setUpstream':
        await relay.setUpstream(req.upstream);
        upstream = req.upstream;
        return undefined;
      case 'hold':
        await relay.hold();
        holding = true;
        return undefined;
      case 'release':
        await relay.release();
        holding = false;
        return undefined;
      case 'stats':
        return relay.stats();
      case 'drain':
        return relay.drain(req.timeoutMs);
      case 'stop':
        await stop();
        return undefined;
      default:
        throw new FerryError(
          'RELAY_PROCESS',
          `unknown request ${JSON.stringify((req as { op: unknown }).op)}`,
        );
    }
  };

  try {
    control = await serveControl({
      socketPath: config.socketPath,
      orphanTimeoutMs: config.orphanTimeoutMs,
      handle: (req) => handle(req as unknown as RelayProcessRequest),
      onOrphaned: () => void stop(),
      code: 'RELAY_PROCESS',
    });
  } catch (err) {
    await relay.close();
    writeReady({
      ok: false,
      code: 'RELAY_PROCESS',
      message: `cannot listen on ${config.socketPath}: ${(err as Error).message}`,
    });
    process.exit(1);
  }
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  writeReady({ ok: true, info: info() });
}

void main();
