/**
 * `ferry relay`: one redirect engine in the foreground until aborted (SIGINT/SIGTERM wired by the
 * CLI), then a clean shutdown. Also the parsers for the `--listen` and `--to` arguments.
 */
import { isIP } from 'node:net';
import { FerryError } from '../common/errors.js';
import type { RedirectEngine, RelayStats, Upstream } from './engine.js';
import { KernelRelay } from './kernel.js';
import type { ListenSpec, RelayOptions } from './options.js';
import { createUserspaceRelay } from './workers.js';

export type RunRelayOptions = RelayOptions & {
  engine: 'userspace' | 'kernel';
  udp?: boolean;
  /** Called once the engine forwards, e.g. to print the bound ports. */
  onReady?: (engine: RedirectEngine) => void;
  /** Before closing, wait this long for in-flight connections to finish. Default 0. */
  drainTimeoutMs?: number;
};

/** Builds the engine for `opts` (not started). */
export function createEngine(opts: Omit<RunRelayOptions, 'onReady' | 'drainTimeoutMs'>): RedirectEngine {
  const { engine, ...rest } = opts;
  if (engine === 'userspace') return createUserspaceRelay(rest);
  if (engine !== 'kernel')
    throw new FerryError(
      'RELAY_BAD_OPTION',
      `engine must be 'userspace' or 'kernel', got ${JSON.stringify(engine)}`,
    );
  if (Array.isArray(rest.listen)) {
    if (rest.listen.length !== 1)
      throw new FerryError(
        'RELAY_BAD_OPTION',
        'the kernel engine takes one listen address; run one relay per address',
      );
  }
  if ((rest.workers ?? 1) > 1) {
    throw new FerryError(
      'RELAY_BAD_OPTION',
      'the kernel engine runs in the kernel; workers apply to --engine userspace only',
    );
  }
  if (rest.proxyProtocol || rest.acceptProxyProtocol) {
    throw new FerryError(
      'RELAY_BAD_OPTION',
      'the kernel engine cannot speak the PROXY protocol; use --engine userspace',
    );
  }
  if (rest.dataPlane !== undefined && rest.dataPlane !== 'auto') {
    throw new FerryError(
      'RELAY_BAD_OPTION',
      'the kernel engine has no userspace data plane; --data-plane applies to --engine userspace only',
    );
  }
  const listen = Array.isArray(rest.listen) ? rest.listen[0]! : rest.listen;
  return new KernelRelay({
    listen,
    upstream: rest.upstream,
    ...(rest.sourceAddress !== undefined ? { sourceAddress: rest.sourceAddress } : {}),
    ...(rest.maxHoldMs !== undefined ? { maxHoldMs: rest.maxHoldMs } : {}),
    udp: rest.udp ?? false,
  });
}

/** Runs a relay until `signal` aborts, then drains (optionally) and closes; resolves the final stats. */
export async function runRelay(opts: RunRelayOptions, signal: AbortSignal): Promise<RelayStats> {
  const { onReady, drainTimeoutMs = 0, ...engineOpts } = opts;
  const engine = createEngine(engineOpts);
  await engine.start();
  try {
    onReady?.(engine);
    // The kernel engine holds no socket open, so something must keep the event loop alive until
    // the signal: without it Node would exit at once, leaving the nftables table behind.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    try {
      if (!signal.aborted)
        await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
    } finally {
      clearInterval(keepAlive);
    }
    if (drainTimeoutMs > 0) await engine.drain(drainTimeoutMs);
    return await engine.stats();
  } finally {
    await engine.close();
  }
}

function splitHostPort(s: string, what: string): { address: string; port: string | undefined } {
  const m = /^\[([^\]]+)\](?::(.*))?$/.exec(s);
  if (m) return { address: m[1]!, port: m[2] };
  if (isIP(s) === 6) return { address: s, port: undefined };
  const i = s.lastIndexOf(':');
  if (i < 0) return { address: s, port: undefined };
  if (s.indexOf(':') !== i)
    throw new FerryError(
      'RELAY_BAD_OPTION',
      `${what}: write IPv6 addresses in brackets, e.g. [2001:db8::1]:80`,
    );
  return { address: s.slice(0, i), port: s.slice(i + 1) };
}

function parsePort(p: string, what: string, allowZero: boolean): number {
  const n = Number(p);
  if (!/^\d+$/.test(p) || n > 65535 || (!allowZero && n === 0))
    throw new FerryError('RELAY_BAD_OPTION', `${what}: bad port ${JSON.stringify(p)}`);
  return n;
}

/** Parses `--listen ADDR:PORT[,PORT...]` (IPv6 as `[ADDR]:PORT,...`). */
export function parseListen(arg: string): ListenSpec {
  const { address, port } = splitHostPort(arg, '--listen');
  if (isIP(address) === 0)
    throw new FerryError('RELAY_BAD_OPTION', `--listen: ${JSON.stringify(address)} is not an IP address`);
  if (!port) throw new FerryError('RELAY_BAD_OPTION', '--listen needs ports: ADDR:PORT[,PORT...]');
  return { address, ports: port.split(',').map((p) => parsePort(p, '--listen', true)) };
}

/** Parses `--to ADDR[:PORT]` (IPv6 as `[ADDR]:PORT` or a bare address). */
export function parseUpstream(arg: string): Upstream {
  const { address, port } = splitHostPort(arg, '--to');
  if (isIP(address) === 0)
    throw new FerryError('RELAY_BAD_OPTION', `--to: ${JSON.stringify(address)} is not an IP address`);
  return port === undefined || port === '' ? { address } : { address, port: parsePort(port, '--to', false) };
}
