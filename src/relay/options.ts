/** Options of the userspace relay, with their defaults and the one-time validation. */
import { isIP } from 'node:net';
import { FerryError } from '../common/errors.js';
import type { Upstream } from './engine.js';

/** One listen address and its ports. */
export interface ListenSpec {
  address: string;
  ports: number[];
}

export interface RelayOptions {
  /**
   * Address and ports to listen on (port 0 binds an ephemeral port), or several such entries, e.g.
   * a temporary IPv4 and IPv6 address. Counters are kept per bound address and port.
   */
  listen: ListenSpec | ListenSpec[];
  /** Where to forward; `port` omitted = the port the connection arrived on (port-preserving). */
  upstream: Upstream;
  /** Local address bound for upstream connections (lets the upstream tell relayed traffic apart). */
  sourceAddress?: string;
  /** Also relay UDP on the same ports, through a session table. Default false. */
  udp?: boolean;
  /** Send a PROXY protocol header (v1 text or v2 binary) first on each upstream TCP connection. */
  proxyProtocol?: 'v1' | 'v2';
  /** Expect a PROXY protocol header (v1 or v2) from each client; its source becomes the client. Default false. */
  acceptProxyProtocol?: boolean;
  /** Most connections waiting in the hold queue; more are refused. Default 4096. */
  holdQueueLimit?: number;
  /** Longest a connection may wait held; then it is closed. Default 30 000 ms. */
  maxHoldMs?: number;
  /** Upstream connect timeout. Default 5 000 ms. */
  connectTimeoutMs?: number;
  /** A TCP connection with no traffic either way for this long is closed; 0 = never. Default 300 000 ms. */
  idleTimeoutMs?: number;
  /** Most client TCP connections open at once (held or not); more are refused. Default 10 000. */
  maxConnections?: number;
  /** A UDP session with no datagram either way for this long is removed. Default 30 000 ms. */
  udpIdleTimeoutMs?: number;
  /** Most UDP sessions at once; datagrams that would open more are dropped. Default 4096. */
  maxUdpSessions?: number;
  /** Time allowed for a client to send its PROXY header when `acceptProxyProtocol`. Default 5 000 ms. */
  proxyHeaderTimeoutMs?: number;
  /**
   * Processes that accept and relay TCP. Default 1: this process, through `NativeRelay` or
   * `TcpRelay` (see `dataPlane`). N > 1 needs
   * `createUserspaceRelay()` (a `WorkerRelay`): N worker processes share the listening sockets,
   * and `maxConnections` and `holdQueueLimit` are split evenly among them. At most 64.
   */
  workers?: number;
  /**
   * Who moves the TCP bytes. `auto` (default): the native data plane (native/relay, an N-API
   * addon) when it is built and the options allow it, else the TypeScript one. `native`: the
   * native one or a RELAY_BAD_OPTION error saying why not. `js`: always the TypeScript one.
   * FERRY_NATIVE=0 turns `auto` into `js`. The native plane does not read PROXY headers from
   * clients (`acceptProxyProtocol`) and relays no UDP itself (with `udp`, a single process uses
   * the TypeScript relay; a `WorkerRelay` relays UDP in its own process and TCP in native workers).
   */
  dataPlane?: DataPlane;
}

/** See `RelayOptions.dataPlane`. */
export type DataPlane = 'auto' | 'native' | 'js';

/** Options with every default filled in. */
export type ResolvedRelayOptions = Required<
  Omit<RelayOptions, 'sourceAddress' | 'proxyProtocol' | 'listen'>
> &
  Pick<RelayOptions, 'sourceAddress' | 'proxyProtocol'> & { listen: ListenSpec[] };

function bad(message: string): FerryError {
  return new FerryError('RELAY_BAD_OPTION', message);
}

function checkInt(name: string, v: number | undefined, def: number, min: number): number {
  if (v === undefined) return def;
  if (!Number.isInteger(v) || v < min) throw bad(`${name} must be an integer >= ${min}, got ${String(v)}`);
  return v;
}

function checkWorkers(v: number | undefined): number {
  const n = checkInt('workers', v, 1, 1);
  if (n > 64) throw bad(`workers must be at most 64, got ${n}; one per CPU is plenty`);
  return n;
}

function checkDataPlane(v: DataPlane | undefined): DataPlane {
  if (v === undefined) return 'auto';
  if (v !== 'auto' && v !== 'native' && v !== 'js')
    throw bad(`dataPlane must be 'auto', 'native' or 'js', got ${JSON.stringify(v)}`);
  return v;
}

/** Throws RELAY_BAD_OPTION unless `u` is a literal IP address with an optional valid port. */
export function checkUpstream(u: Upstream, sourceAddress?: string): Upstream {
  if (!u || typeof u.address !== 'string' || isIP(u.address) === 0) {
    throw bad(`upstream.address must be a literal IPv4 or IPv6 address, got ${JSON.stringify(u?.address)}`);
  }
  if (u.port !== undefined && (!Number.isInteger(u.port) || u.port < 1 || u.port > 65535)) {
    throw bad(`upstream.port must be 1-65535 or omitted (port-preserving), got ${String(u.port)}`);
  }
  if (sourceAddress !== undefined && isIP(sourceAddress) !== isIP(u.address)) {
    throw bad(
      `sourceAddress ${sourceAddress} and upstream ${u.address} are of different IP families; use one family`,
    );
  }
  return { address: u.address, ...(u.port !== undefined ? { port: u.port } : {}) };
}

/** Validates `opts` once and fills in defaults; throws RELAY_BAD_OPTION saying what to change. */
export function resolveRelayOptions(opts: RelayOptions): ResolvedRelayOptions {
  if (!opts || !opts.listen) throw bad('listen is required: { address, ports }');
  const specs = Array.isArray(opts.listen) ? opts.listen : [opts.listen];
  if (specs.length === 0) throw bad('listen must have at least one { address, ports } entry');
  const listen = specs.map((spec) => {
    const { address, ports } = spec ?? {};
    if (typeof address !== 'string' || isIP(address) === 0) {
      throw bad(`listen.address must be a literal IPv4 or IPv6 address, got ${JSON.stringify(address)}`);
    }
    if (!Array.isArray(ports) || ports.length === 0)
      throw bad('listen.ports must list at least one port (0 = ephemeral)');
    for (const p of ports) {
      if (!Number.isInteger(p) || p < 0 || p > 65535)
        throw bad(`listen.ports entries must be 0-65535, got ${String(p)}`);
    }
    const fixed = ports.filter((p) => p !== 0);
    if (new Set(fixed).size !== fixed.length)
      throw bad(`listen.ports lists a port twice for ${address}; list each port once`);
    return { address, ports: [...ports] };
  });
  if (opts.sourceAddress !== undefined && isIP(opts.sourceAddress) === 0) {
    throw bad(`sourceAddress must be a literal IP address, got ${JSON.stringify(opts.sourceAddress)}`);
  }
  const upstream = checkUpstream(opts.upstream, opts.sourceAddress);
  if (opts.proxyProtocol !== undefined && opts.proxyProtocol !== 'v1' && opts.proxyProtocol !== 'v2') {
    throw bad(`proxyProtocol must be 'v1' or 'v2' (or omitted), got ${JSON.stringify(opts.proxyProtocol)}`);
  }
  return {
    listen,
    upstream,
    ...(opts.sourceAddress !== undefined ? { sourceAddress: opts.sourceAddress } : {}),
    ...(opts.proxyProtocol !== undefined ? { proxyProtocol: opts.proxyProtocol } : {}),
    udp: opts.udp ?? false,
    acceptProxyProtocol: opts.acceptProxyProtocol ?? false,
    holdQueueLimit: checkInt('holdQueueLimit', opts.holdQueueLimit, 4096, 0),
    maxHoldMs: checkInt('maxHoldMs', opts.maxHoldMs, 30_000, 1),
    connectTimeoutMs: checkInt('connectTimeoutMs', opts.connectTimeoutMs, 5_000, 1),
    idleTimeoutMs: checkInt('idleTimeoutMs', opts.idleTimeoutMs, 300_000, 0),
    maxConnections: checkInt('maxConnections', opts.maxConnections, 10_000, 1),
    udpIdleTimeoutMs: checkInt('udpIdleTimeoutMs', opts.udpIdleTimeoutMs, 30_000, 1),
    maxUdpSessions: checkInt('maxUdpSessions', opts.maxUdpSessions, 4096, 1),
    proxyHeaderTimeoutMs: checkInt('proxyHeaderTimeoutMs', opts.proxyHeaderTimeoutMs, 5_000, 1),
    workers: checkWorkers(opts.workers),
    dataPlane: checkDataPlane(opts.dataPlane),
  };
}
