/**
 * Entry point of a `WorkerRelay` worker process (see workers.ts): a `NativeRelay` (native data
 * plane) or a `TcpRelay` (TypeScript), as `dataPlane` chooses, on the listening sockets inherited
 * from the engine's process, driven by its requests over IPC. The worker closes and exits when
 * asked, or when the engine's process goes away (the IPC channel disconnects).
 */
import { isFerryError } from '../common/errors.js';
import { NativeRelay, useNativeDataPlane } from './native-relay.js';
import { resolveRelayOptions } from './options.js';
import { TcpRelay } from './tcp-relay.js';
import type { WorkerReply, WorkerRequest } from './workers.js';

let relay: TcpRelay | NativeRelay | null = null;

function reply(m: WorkerReply): void {
  if (process.connected) process.send!(m);
}

async function handle(req: WorkerRequest): Promise<unknown> {
  if (req.op === 'init') {
    relay = useNativeDataPlane(resolveRelayOptions(req.opts))
      ? new NativeRelay(req.opts)
      : new TcpRelay({ ...req.opts, dataPlane: 'js' });
    if (req.holding) relay.hold();
    await relay.startOnFds(req.fds);
    return relay.dataPlane;
  }
  if (!relay) throw new Error(`${req.op} before init`);
  switch (req.op) {
    case 'setUpstream':
      return relay.setUpstream(req.upstream);
    case 'hold':
      return relay.hold();
    case 'release':
      return relay.release();
    case 'stats':
      return relay.stats();
    case 'drain':
      return relay.drain(req.timeoutMs);
    case 'close':
      return relay.close();
  }
}

process.on('message', (req: WorkerRequest) => {
  handle(req).then(
    (value) => reply({ id: req.id, ok: true, value }),
    (err: unknown) =>
      reply({
        id: req.id,
        ok: false,
        code: isFerryError(err) ? err.code : 'RELAY_WORKER',
        message: err instanceof Error ? err.message : String(err),
      }),
  );
});

process.once('disconnect', () => {
  void (relay?.close() ?? Promise.resolve()).finally(() => process.exit(0));
});
