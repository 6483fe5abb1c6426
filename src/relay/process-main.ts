/**
 * Entry point of a `RelayProcess` (see process.ts): one userspace redirect in a process of its own
 * session, driven over a Unix socket by whichever agent holds it. Argument: the JSON of
 * `RelayProcessConfig`. It prints one JSON line on stdout once it forwards (or why it could not
 * start), then writes nothing more there. It stops when asked (`stop`), on SIGTERM or SIGINT, or
 * by itself once no agent has been connected for `orphanTimeoutMs`.
 */
import { createServer, type Socket } from 'node:net';
import { unlinkSync } from 'node:fs';
import { isFerryError } from '../common/errors.js';
import { createUserspaceRelay } from './workers.js';
import { resolveRelayOptions } from './options.js';
import type { RelayProcessConfig, RelayProcessInfo, RelayProcessReply, RelayProcessRequest } from './process.js';

const config = JSON.parse(process.argv[2] ?? '{}') as RelayProcessConfig;
let holding = false;
let upstream = resolveRelayOptions(config.relay).upstream;
let stopping: Promise<void> | null = null;
let orphanTimer: NodeJS.Timeout | null = null;
const agents = new Set<Socket>();

function removeSocket(): void {
  try {
    unlinkSync(config.socketPath);
  } catch {
    // already gone
  }
}

async function main(): Promise<void> {
  const relay = createUserspaceRelay(config.relay);
  try {
    await relay.start();
  } catch (err) {
    process.stdout.write(JSON.stringify({ ok: false, code: isFerryError(err) ? err.code : 'RELAY_PROCESS', message: (err as Error).message }) + '\n');
    process.exitCode = 1;
    return;
  }
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (orphanTimer) clearTimeout(orphanTimer);
      control.close();
      removeSocket();
      await relay.close();
      // After the reply to `stop` is written (a microtask away), end the control connections;
      // the process then ends by itself, or here if something still holds it.
      setImmediate(() => {
        for (const s of agents) s.end();
      });
      setTimeout(() => process.exit(0), 1000).unref();
    })());
  const info = (): RelayProcessInfo => ({ pid: process.pid, ports: relay.ports, listen: resolveRelayOptions(config.relay).listen, upstream, holding });

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
    }
  };

  const orphaned = () => {
    if (agents.size > 0 || stopping) return;
    if (orphanTimer) clearTimeout(orphanTimer);
    orphanTimer = setTimeout(() => void stop(), config.orphanTimeoutMs);
  };

  const control = createServer((s) => {
    agents.add(s);
    if (orphanTimer) clearTimeout(orphanTimer);
    orphanTimer = null;
    s.setEncoding('utf8');
    let buf = '';
    s.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 1 << 20) return void s.destroy(); // no request is that long
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let req: RelayProcessRequest;
        try {
          req = JSON.parse(line) as RelayProcessRequest;
        } catch {
          s.destroy();
          return;
        }
        handle(req).then(
          (value) => send(s, { id: req.id, ok: true, ...(value === undefined ? {} : { value }) }),
          (err: unknown) => send(s, { id: req.id, ok: false, code: isFerryError(err) ? err.code : 'RELAY_PROCESS', message: (err as Error)?.message ?? String(err) }),
        );
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      agents.delete(s);
      orphaned();
    });
  });
  removeSocket(); // a socket file left by a relay that died with this id
  await new Promise<void>((resolve, reject) => {
    control.once('error', reject);
    control.listen(config.socketPath, () => resolve());
  }).catch(async (err: Error) => {
    await relay.close();
    process.stdout.write(JSON.stringify({ ok: false, code: 'RELAY_PROCESS', message: `cannot listen on ${config.socketPath}: ${err.message}` }) + '\n');
    process.exit(1);
  });
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  // Nothing more goes to stdout: the agent that started us may be gone and its pipe with it.
  process.stdout.on('error', () => undefined);
  process.stdout.write(JSON.stringify({ ok: true, info: info() }) + '\n');
  orphaned();
}

function send(s: Socket, m: RelayProcessReply): void {
  if (!s.destroyed) s.write(JSON.stringify(m) + '\n');
}

void main();
