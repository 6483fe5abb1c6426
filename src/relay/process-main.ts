/**
 * Entry point of a `RelayProcess` (see process.ts): one userspace redirect in a process of its own
 * session, driven over a Unix socket by whichever agent holds it. Argument: the JSON of
 * `RelayProcessConfig`. It prints one JSON line on stdout once it forwards (or why it could not
 * start), then writes nothing more there. It stops when asked (`stop`), on SIGTERM or SIGINT, or
 * by itself once no agent has been connected for `orphanTimeoutMs`.
 */
import { FerryError } from '../common/errors.js';
import { runControlledChild } from '../common/control-socket.js';
import { createUserspaceRelay } from './workers.js';
import { resolveRelayOptions } from './options.js';
import type { RelayProcessConfig, RelayProcessInfo, RelayProcessRequest } from './process.js';

const config = JSON.parse(process.argv[2] ?? '{}') as RelayProcessConfig;
let holding = false;
let upstream = resolveRelayOptions(config.relay).upstream;

type Relay = ReturnType<typeof createUserspaceRelay>;

void runControlledChild<Relay>({
  socketPath: config.socketPath,
  orphanTimeoutMs: config.orphanTimeoutMs,
  code: 'RELAY_PROCESS',
  start: async () => {
    const relay = createUserspaceRelay(config.relay);
    await relay.start();
    return relay;
  },
  close: (relay) => relay.close(),
  info: (relay): RelayProcessInfo => ({
    pid: process.pid,
    ports: relay.ports,
    listen: resolveRelayOptions(config.relay).listen,
    upstream,
    holding,
  }),
  handle: async (relay, r) => {
    const req = r as unknown as RelayProcessRequest;
    switch (req.op) {
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
      default:
        throw new FerryError(
          'RELAY_PROCESS',
          `unknown request ${JSON.stringify((req as { op: unknown }).op)}`,
        );
    }
  },
});
