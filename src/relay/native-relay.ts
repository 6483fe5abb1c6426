/**
 * The userspace relay's native data plane: the same `RedirectEngine` as `TcpRelay`, with every
 * TCP byte moved by native/relay/relay.c (an N-API addon: epoll on Node's own loop, no threads)
 * instead of net.Socket. Why native, with the measured figures, is written at the top of that
 * file. This class keeps the decisions: options, bind errors, upstream, hold and release, drain
 * and the counters' shape; the addon keeps the connections, their hold queue and their timeouts.
 *
 * Not covered by the native plane, so they stay on the TypeScript one (see `useNativeDataPlane`):
 * reading PROXY headers from clients (`acceptProxyProtocol`) and UDP in a single process (a
 * `WorkerRelay` relays UDP in its own process and TCP in native workers).
 */
import { loadNative } from '../common/native.js';
import { FerryError } from '../common/errors.js';
import { DrainWaiters } from './drain.js';
import {
  sumListeners,
  type ListenerStats,
  type RedirectEngine,
  type RelayStats,
  type Upstream,
} from './engine.js';
import {
  checkUpstream,
  resolveRelayOptions,
  type RelayOptions,
  type ResolvedRelayOptions,
} from './options.js';

/** The addon's functions (native/relay/relay.c). */
interface RelayBinding {
  STATS_HEAD: number;
  STATS_PER_LISTENER: number;
  bind(address: string, port: number): [fd: number, port: number];
  closeFd(fd: number): void;
  create(config: NativeConfig, fds: number[], onEvent: (kind: number) => void): object;
  setUpstream(relay: object, address: string, port: number): void;
  hold(relay: object): void;
  release(relay: object): void;
  stats(relay: object, out: Float64Array): void;
  armIdle(relay: object): number;
  close(relay: object): void;
  encodeProxy(
    version: 1 | 2,
    sourceAddress: string,
    sourcePort: number,
    destinationAddress: string,
    destinationPort: number,
  ): Buffer;
}

interface NativeConfig {
  upstreamAddress: string;
  upstreamPort: number;
  sourceAddress: string;
  proxy: 0 | 1 | 2;
  holdQueueLimit: number;
  maxHoldMs: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
  sweepMs: number;
  ownFds: number;
  holding: number;
}

/** The addon, or why it cannot be loaded (not built, not Linux, FERRY_NATIVE=0). */
function binding(): { binding: RelayBinding } | { error: string } {
  return loadNative<RelayBinding>('ferry_relay');
}

/** An IPv6 address with a zone (fe80::1%eth0): the addon parses plain addresses only. */
function scoped(address: string): boolean {
  return address.includes('%');
}

/** Why the native plane cannot relay `opts` in one process, or null when it can. */
export function nativeUnsupported(opts: ResolvedRelayOptions): string | null {
  if (opts.acceptProxyProtocol)
    return 'acceptProxyProtocol needs the TypeScript data plane (the native one reads no PROXY header from clients)';
  if (opts.udp)
    return 'udp in one process needs the TypeScript data plane; with workers >= 2 UDP stays in the engine process and TCP goes native';
  const addresses = [...opts.listen.map((l) => l.address), opts.upstream.address, opts.sourceAddress ?? ''];
  if (addresses.some(scoped)) return 'scoped IPv6 addresses (with %zone) need the TypeScript data plane';
  const b = binding();
  return 'error' in b ? `the native relay addon is not available (${b.error})` : null;
}

/**
 * Whether a single-process relay for `opts` uses the native data plane: `auto` when it can,
 * `native` or a RELAY_BAD_OPTION error saying why not, `js` never.
 */
export function useNativeDataPlane(opts: ResolvedRelayOptions): boolean {
  if (opts.dataPlane === 'js') return false;
  const why = nativeUnsupported(opts);
  if (why !== null && opts.dataPlane === 'native')
    throw new FerryError('RELAY_BAD_OPTION', `dataPlane 'native' cannot be used: ${why}`);
  return why === null;
}

/** The addon's PROXY header encoder (the one its data path uses), for tests. */
export function nativeEncodeProxy(
  version: 'v1' | 'v2',
  a: { sourceAddress: string; sourcePort: number; destinationAddress: string; destinationPort: number },
): Buffer {
  const b = binding();
  if ('error' in b)
    throw new FerryError('RELAY_BAD_OPTION', `the native relay addon is not available (${b.error})`);
  return b.binding.encodeProxy(
    version === 'v1' ? 1 : 2,
    a.sourceAddress,
    a.sourcePort,
    a.destinationAddress,
    a.destinationPort,
  );
}

/** Userspace TCP relay on the native data plane; see the module comment. */
export class NativeRelay implements RedirectEngine {
  readonly kind = 'userspace';
  readonly dataPlane = 'native';
  private readonly opts: ResolvedRelayOptions;
  private readonly b: RelayBinding;
  private upstream: Upstream;
  private handle: object | null = null;
  private listeners: Array<{ address: string; port: number }> = [];
  private holding = false;
  private started = false;
  private closed = false;
  private statsBuf = new Float64Array(0);
  private readonly drainWaiters = new DrainWaiters();

  constructor(opts: RelayOptions) {
    this.opts = resolveRelayOptions(opts);
    if (this.opts.workers > 1) {
      throw new FerryError(
        'RELAY_BAD_OPTION',
        `NativeRelay runs in this process only; for workers: ${this.opts.workers} use createUserspaceRelay(opts)`,
      );
    }
    if (this.opts.dataPlane === 'js')
      throw new FerryError(
        'RELAY_BAD_OPTION',
        "NativeRelay is the native data plane; for dataPlane 'js' use TcpRelay",
      );
    const why = nativeUnsupported(this.opts);
    if (why !== null) throw new FerryError('RELAY_BAD_OPTION', `NativeRelay cannot be used: ${why}`);
    this.b = (binding() as { binding: RelayBinding }).binding;
    this.upstream = this.opts.upstream;
  }

  /** Bound ports, in the order of `listen.ports`. Empty before `start()`. */
  get ports(): number[] {
    return this.listeners.map((l) => l.port);
  }

  async start(): Promise<void> {
    this.begin();
    const fds: number[] = [];
    try {
      for (const spec of this.opts.listen) {
        for (const want of spec.ports) {
          let bound: [number, number];
          try {
            bound = this.b.bind(spec.address, want);
          } catch (err) {
            const e = err as Error;
            throw new FerryError(
              'RELAY_LISTEN',
              `cannot listen on ${spec.address}:${want}/tcp: ${e.message}`,
              { cause: err },
            );
          }
          fds.push(bound[0]);
          this.listeners.push({ address: spec.address, port: bound[1] });
        }
      }
      this.open(fds, true);
    } catch (err) {
      for (const fd of fds) this.b.closeFd(fd);
      this.listeners = [];
      this.closed = true;
      throw err;
    }
  }

  /**
   * Worker processes (see workers.ts): serve TCP on listening sockets inherited from the engine's
   * process, one per `listen` port in order. They stay open after `close()` (the worker exits).
   */
  async startOnFds(fds: number[]): Promise<void> {
    this.begin();
    const ports = this.opts.listen.flatMap((spec) =>
      spec.ports.map((port) => ({ address: spec.address, port })),
    );
    if (ports.length !== fds.length)
      throw new FerryError('RELAY_STATE', `got ${fds.length} listening sockets for ${ports.length} ports`);
    this.listeners = ports;
    this.open(fds, false);
  }

  private begin(): void {
    if (this.started)
      throw new FerryError('RELAY_STATE', 'relay already started; create a new NativeRelay to start again');
    this.started = true;
  }

  private open(fds: number[], own: boolean): void {
    const o = this.opts;
    const shortest = Math.min(
      o.connectTimeoutMs,
      o.maxHoldMs,
      o.idleTimeoutMs > 0 ? o.idleTimeoutMs : Infinity,
    );
    this.statsBuf = new Float64Array(this.b.STATS_HEAD + fds.length * this.b.STATS_PER_LISTENER);
    this.handle = this.b.create(
      {
        upstreamAddress: this.upstream.address,
        upstreamPort: this.upstream.port ?? 0,
        sourceAddress: o.sourceAddress ?? '',
        proxy: o.proxyProtocol === 'v1' ? 1 : o.proxyProtocol === 'v2' ? 2 : 0,
        holdQueueLimit: o.holdQueueLimit,
        maxHoldMs: o.maxHoldMs,
        connectTimeoutMs: o.connectTimeoutMs,
        idleTimeoutMs: o.idleTimeoutMs,
        maxConnections: o.maxConnections,
        // One sweep for every timeout, as in tcp-relay.ts: a quarter of the shortest, 20 ms to 1 s.
        sweepMs: Math.min(1_000, Math.max(20, Math.floor(shortest / 4))),
        ownFds: own ? 1 : 0,
        holding: this.holding ? 1 : 0,
      },
      fds,
      () => this.notifyDrain(),
    );
  }

  setUpstream(u: Upstream): void {
    const upstream = checkUpstream(u, this.opts.sourceAddress);
    if (scoped(upstream.address))
      throw new FerryError(
        'RELAY_BAD_OPTION',
        `upstream ${upstream.address}: scoped IPv6 addresses need dataPlane 'js'`,
      );
    this.upstream = upstream;
    if (this.handle && !this.closed)
      this.b.setUpstream(this.handle, this.upstream.address, this.upstream.port ?? 0);
  }

  hold(): void {
    this.holding = true;
    if (this.handle && !this.closed) this.b.hold(this.handle);
  }

  release(): void {
    this.holding = false;
    if (this.handle && !this.closed) this.b.release(this.handle);
  }

  stats(): RelayStats {
    const s = this.statsBuf;
    const live = this.handle !== null && !this.closed;
    if (live) this.b.stats(this.handle!, s);
    const head = this.b.STATS_HEAD;
    const per = this.b.STATS_PER_LISTENER;
    const listeners: ListenerStats[] = this.listeners.map((l, i) => {
      const p = head + i * per;
      return {
        address: l.address,
        port: l.port,
        protocol: 'tcp',
        activeConnections: live ? s[p]! : 0,
        totalConnections: s[p + 1] ?? 0,
        bytesToUpstream: s[p + 2] ?? 0,
        bytesToClient: s[p + 3] ?? 0,
        lastConnectionAt: s[p + 4] ? s[p + 4]! : null,
      };
    });
    return {
      activeConnections: live ? s[0]! : 0,
      ...sumListeners(listeners),
      held: live ? s[1]! : 0,
      upstreamFailures: s[2] ?? 0,
      rejected: s[3] ?? 0,
      holdExpired: s[4] ?? 0,
      idleTimeouts: s[5] ?? 0,
      udpSessions: 0,
      listeners,
    };
  }

  /** True once no connection is connecting or open (held ones do not count); false after `timeoutMs`. */
  drain(timeoutMs: number): Promise<boolean> {
    const idle = () => !this.handle || this.closed || this.b.armIdle(this.handle) === 0;
    return this.drainWaiters.wait(idle, timeoutMs);
  }

  private notifyDrain(): void {
    this.drainWaiters.notify();
  }

  /** Stops listening (closing the sockets it bound itself), ends every connection. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.handle) this.b.stats(this.handle, this.statsBuf); // keep the final counters
    this.closed = true;
    this.holding = false;
    if (this.handle) this.b.close(this.handle);
    this.notifyDrain();
  }
}
