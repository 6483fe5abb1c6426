/**
 * The userspace relay on the TypeScript data plane: accepts TCP (and, with `udp`, UDP) on an
 * address and a list of ports and forwards to the current upstream. New connections can be held
 * at cut-over and released, in arrival order, to whatever upstream is current at release time.
 *
 * `createUserspaceRelay` prefers the native data plane (`NativeRelay`, native-relay.ts: measured
 * about twice as fast per new connection); this class serves what that one does not, namely
 * `acceptProxyProtocol` and UDP in one process, and every relay when `dataPlane: 'js'`,
 * FERRY_NATIVE=0 or the addon is not built. Both pass the same contract suite (contract.test.ts).
 *
 * Flow control: client sockets are accepted paused (`pauseOnConnect`), so a held client's data
 * waits in the kernel's receive buffer and TCP flow control slows the sender; nothing is read
 * until the upstream is connected. Each direction is then one 'data' listener that counts and
 * writes, pausing the reading side whenever the writing side's buffer is full and resuming it on
 * 'drain' (what `pipe()` does, without its eight listeners per pipe). Half-close is relayed: a FIN
 * from one side ends the other side's write half while the reverse direction keeps flowing.
 *
 * Hot path: the per-socket handlers are module-level functions that find their connection through
 * a symbol on the socket, so a connection allocates no closures; the peer addresses (a getpeername
 * and a getsockname system call) are read only when a PROXY header needs them. Connect and idle
 * timeouts are not socket timers (a timer per socket, re-armed on every read and write) but one
 * sweep per relay over the open connections, every quarter of the shorter timeout (20 ms to 1 s):
 * a connection idle for `idleTimeoutMs` is closed within another half of it (at most 2 s later).
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
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
import {
  encodeProxyHeader,
  parseProxyHeader,
  ProxyHeaderError,
  type ProxyAddresses,
  MAX_HEADER_LENGTH,
} from './proxy-protocol.js';
import { UdpListener } from './udp.js';
import { newCounters, type Counters } from './counters.js';

interface TcpListener {
  server: Server;
  address: string;
  port: number;
  counters: Counters;
}

type ConnState = 'accepting' | 'held' | 'connecting' | 'open' | 'closed';

interface Conn {
  relay: TcpRelay;
  client: RelaySocket;
  upstream: RelaySocket | null;
  listener: TcpListener;
  state: ConnState;
  /** Real client endpoints: the accepted socket's, or those of an accepted PROXY header. */
  addresses: ProxyAddresses | null;
  holdTimer: NodeJS.Timeout | null;
  /** Sockets of this connection not yet closed. */
  open: number;
  /** Chunks relayed either way; the sweep compares it with `mark` to see activity. */
  activity: number;
  mark: number;
  /** Epoch ms when the sweep last saw activity, or when connecting started. */
  since: number;
}

const noop = (): void => undefined;

const kConn = Symbol('ferry.conn');
/** A socket of a relayed connection, pointing back at its connection. */
type RelaySocket = Socket & { [kConn]?: Conn };

function peerOf(s: RelaySocket): RelaySocket | null {
  const c = s[kConn]!;
  return s === c.client ? c.upstream : c.client;
}

/** Client → upstream: count, write, and stop reading while the upstream's buffer is full. */
function onClientData(this: RelaySocket, chunk: Buffer): void {
  const c = this[kConn]!;
  c.activity++;
  c.listener.counters.bytesToUpstream += chunk.length;
  if (!c.upstream!.write(chunk)) this.pause();
}

/** Upstream → client, likewise. */
function onUpstreamData(this: RelaySocket, chunk: Buffer): void {
  const c = this[kConn]!;
  c.activity++;
  c.listener.counters.bytesToClient += chunk.length;
  if (!c.client.write(chunk)) this.pause();
}

/** This socket's write buffer drained: read from its peer again. */
function onDrain(this: RelaySocket): void {
  const c = this[kConn]!;
  if (c.state === 'open') peerOf(this)?.resume();
}

/** A FIN arrived: pass it on (half-close) once what was read is written. */
function onEnd(this: RelaySocket): void {
  const other = peerOf(this);
  if (other && !other.destroyed && !other.writableEnded) other.end();
}

/** Errors: a failed upstream connect is counted and the client closed gently; an open connection is reset both ways; otherwise 'close' follows. */
function onSocketError(this: RelaySocket): void {
  const c = this[kConn];
  if (!c) return;
  if (c.state === 'connecting' && this === c.upstream) c.relay.connectFailed(c);
  else if (c.state === 'open') c.relay.destroyConn(c, true);
}

function onUpstreamConnect(this: RelaySocket): void {
  const c = this[kConn]!;
  c.relay.opened(c);
}

function onSocketClose(this: RelaySocket): void {
  const c = this[kConn]!;
  c.relay.socketClosed(c, this);
}

/** Userspace TCP/UDP relay; see the module comment. */
export class TcpRelay implements RedirectEngine {
  readonly kind = 'userspace';
  readonly dataPlane = 'js';
  private readonly opts: ResolvedRelayOptions;
  private upstream: Upstream;
  private readonly tcp: TcpListener[] = [];
  private readonly udp: UdpListener[] = [];
  private readonly conns = new Set<Conn>();
  private readonly holdQueue: Conn[] = [];
  private holding = false;
  private started = false;
  private closed = false;
  private active = 0;
  private upstreamFailures = 0;
  private rejected = 0;
  private holdExpired = 0;
  private idleTimeouts = 0;
  private readonly drainWaiters = new DrainWaiters();
  private sweeper: NodeJS.Timeout | null = null;
  private boundPorts: number[] = [];

  constructor(opts: RelayOptions) {
    this.opts = resolveRelayOptions(opts);
    if (this.opts.workers > 1) {
      throw new FerryError(
        'RELAY_BAD_OPTION',
        `TcpRelay runs in this process only; for workers: ${this.opts.workers} use createUserspaceRelay(opts)`,
      );
    }
    if (this.opts.dataPlane === 'native') {
      throw new FerryError(
        'RELAY_BAD_OPTION',
        "TcpRelay is the TypeScript data plane; for dataPlane 'native' use createUserspaceRelay(opts) or NativeRelay",
      );
    }
    this.upstream = this.opts.upstream;
  }

  /** Bound ports, in the order of `listen.ports`. Empty before `start()`. */
  get ports(): number[] {
    return [...this.boundPorts];
  }

  async start(): Promise<void> {
    if (this.started)
      throw new FerryError('RELAY_STATE', 'relay already started; create a new TcpRelay to start again');
    this.started = true;
    try {
      for (const spec of this.opts.listen) {
        for (const want of spec.ports) this.boundPorts.push(await this.bindPort(spec.address, want));
      }
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /**
   * Worker processes (see workers.ts): serve TCP on listening sockets inherited from the engine's
   * process as file descriptors, one per `listen` port in order, instead of binding them.
   */
  async startOnFds(fds: number[]): Promise<void> {
    if (this.started)
      throw new FerryError('RELAY_STATE', 'relay already started; create a new TcpRelay to start again');
    this.started = true;
    const ports = this.opts.listen.flatMap((spec) =>
      spec.ports.map((port) => ({ address: spec.address, port })),
    );
    if (ports.length !== fds.length)
      throw new FerryError('RELAY_STATE', `got ${fds.length} listening sockets for ${ports.length} ports`);
    try {
      for (let i = 0; i < fds.length; i++) {
        const l = await this.bindTcp(ports[i]!.address, ports[i]!.port, fds[i]!);
        this.boundPorts.push(l.port);
      }
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** The listening TCP sockets' file descriptors, in `ports` order, for worker processes to inherit. */
  tcpListenerFds(): number[] {
    return this.tcp.map((l) => {
      const fd = (l.server as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (typeof fd !== 'number' || fd < 0)
        throw new FerryError(
          'RELAY_STATE',
          'listening socket has no file descriptor (workers need a POSIX system)',
        );
      return fd;
    });
  }

  /**
   * Stops accepting TCP in this process (the workers accept from the same sockets); connections
   * already accepted here and UDP carry on.
   */
  async stopAcceptingTcp(): Promise<void> {
    await Promise.all(this.tcp.map((l) => new Promise<void>((r) => l.server.close(() => r()))));
  }

  /** Binds TCP (and UDP) on one port; an ephemeral port whose UDP twin is taken is retried. */
  private async bindPort(address: string, want: number): Promise<number> {
    for (let attempt = 1; ; attempt++) {
      const l = await this.bindTcp(address, want);
      if (!this.opts.udp) return l.port;
      try {
        this.udp.push(await this.bindUdp(address, l.port));
        return l.port;
      } catch (err) {
        if (want !== 0 || attempt >= 10) throw err;
        this.tcp.splice(this.tcp.indexOf(l), 1);
        await new Promise<void>((r) => l.server.close(() => r()));
      }
    }
  }

  private startSweeper(): void {
    if (this.sweeper || this.closed) return;
    const { connectTimeoutMs, idleTimeoutMs } = this.opts;
    const shortest = idleTimeoutMs > 0 ? Math.min(connectTimeoutMs, idleTimeoutMs) : connectTimeoutMs;
    this.sweeper = setInterval(() => this.sweep(), Math.min(1_000, Math.max(20, Math.floor(shortest / 4))));
    this.sweeper.unref();
  }

  private bindTcp(address: string, port: number, fd?: number): Promise<TcpListener> {
    this.startSweeper();
    const server = createServer({ pauseOnConnect: true, allowHalfOpen: true, noDelay: true });
    const l: TcpListener = { server, address, port, counters: newCounters() };
    server.on('connection', (s) => this.accept(l, s));
    server.on('error', noop); // errors after listen() concern single accepts (e.g. EMFILE)
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        server.close();
        reject(
          new FerryError('RELAY_LISTEN', `cannot listen on ${address}:${port}/tcp: ${err.message}`, {
            cause: err,
          }),
        );
      };
      server.once('error', onError);
      server.listen(
        fd !== undefined ? { fd, backlog: 4096 } : { host: address, port, backlog: 4096, ipv6Only: true },
        () => {
          server.off('error', onError);
          l.port = (server.address() as { port: number }).port;
          this.tcp.push(l);
          resolve(l);
        },
      );
    });
  }

  private async bindUdp(address: string, port: number): Promise<UdpListener> {
    const u = new UdpListener({
      address,
      port,
      sourceAddress: this.opts.sourceAddress,
      idleTimeoutMs: this.opts.udpIdleTimeoutMs,
      maxSessions: this.opts.maxUdpSessions,
      upstream: () => this.upstream,
      isHolding: () => this.holding,
      holdQueueLimit: this.opts.holdQueueLimit,
      onSessionEnd: (idle) => {
        if (idle) this.idleTimeouts++;
        this.notifyDrain();
      },
    });
    await u.start();
    return u;
  }

  setUpstream(u: Upstream): void {
    this.upstream = checkUpstream(u, this.opts.sourceAddress);
  }

  hold(): void {
    this.holding = true;
  }

  release(): void {
    this.holding = false;
    const queue = this.holdQueue.splice(0);
    for (const c of queue) {
      if (c.holdTimer) clearTimeout(c.holdTimer);
      c.holdTimer = null;
      if (c.state === 'held') this.connectUpstream(c);
    }
    for (const u of this.udp) u.release();
  }

  stats(): RelayStats {
    const listeners: ListenerStats[] = [];
    for (const l of this.tcp) {
      const c = l.counters;
      listeners.push({
        address: l.address,
        port: l.port,
        protocol: 'tcp',
        activeConnections: c.active,
        totalConnections: c.total,
        bytesToUpstream: c.bytesToUpstream,
        bytesToClient: c.bytesToClient,
        lastConnectionAt: c.lastConnectionAt,
      });
    }
    let udpSessions = 0;
    for (const u of this.udp) {
      const c = u.counters;
      udpSessions += u.sessionCount;
      listeners.push({
        address: u.address,
        port: u.port,
        protocol: 'udp',
        activeConnections: u.sessionCount,
        totalConnections: c.total,
        bytesToUpstream: c.bytesToUpstream,
        bytesToClient: c.bytesToClient,
        lastConnectionAt: c.lastConnectionAt,
      });
    }
    return {
      activeConnections: this.active,
      ...sumListeners(listeners),
      held: this.holdQueue.length + this.udp.reduce((n, u) => n + u.heldCount, 0),
      upstreamFailures: this.upstreamFailures + this.udp.reduce((n, u) => n + u.upstreamFailures, 0),
      rejected: this.rejected + this.udp.reduce((n, u) => n + u.rejected, 0),
      holdExpired: this.holdExpired,
      idleTimeouts: this.idleTimeouts,
      udpSessions,
      listeners,
    };
  }

  /** Waits until no TCP connection is connecting or open and no UDP session remains. */
  drain(timeoutMs: number): Promise<boolean> {
    const idle = () => this.active === 0 && this.udp.every((u) => u.sessionCount === 0);
    return this.drainWaiters.wait(idle, timeoutMs);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.holding = false;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    const closing = this.tcp.map((l) => new Promise<void>((r) => l.server.close(() => r())));
    for (const c of [...this.conns]) this.destroy(c);
    this.holdQueue.length = 0;
    await Promise.all([...closing, ...this.udp.map((u) => u.close())]);
    this.notifyDrain();
  }

  private notifyDrain(): void {
    this.drainWaiters.notify();
  }

  private accept(l: TcpListener, client: RelaySocket): void {
    client.on('error', onSocketError);
    if (this.closed || this.conns.size >= this.opts.maxConnections) {
      this.rejected++;
      client.destroy();
      return;
    }
    l.counters.total++;
    l.counters.lastConnectionAt = Date.now();
    const c: Conn = {
      relay: this,
      client,
      upstream: null,
      listener: l,
      state: 'accepting',
      addresses: null,
      holdTimer: null,
      open: 1,
      activity: 0,
      mark: 0,
      since: 0,
    };
    (client as RelaySocket)[kConn] = c;
    this.conns.add(c);
    client.on('close', onSocketClose);
    if (this.opts.proxyProtocol && client.remoteAddress && client.localAddress) {
      c.addresses = {
        sourceAddress: client.remoteAddress,
        sourcePort: client.remotePort ?? 0,
        destinationAddress: client.localAddress,
        destinationPort: client.localPort ?? l.port,
      };
    }
    if (this.opts.acceptProxyProtocol) this.readProxyHeader(c);
    else this.route(c);
  }

  /** Reads a bounded PROXY header from the client, then routes the connection. */
  private readProxyHeader(c: Conn): void {
    const { client } = c;
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => this.destroy(c), this.opts.proxyHeaderTimeoutMs);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      let parsed;
      try {
        parsed = parseProxyHeader(buf);
      } catch (err) {
        if (!(err instanceof ProxyHeaderError)) throw err;
        clearTimeout(timer);
        this.rejected++;
        this.destroy(c);
        return;
      }
      if (parsed === null) {
        if (buf.length > MAX_HEADER_LENGTH) this.destroy(c);
        return;
      }
      clearTimeout(timer);
      client.off('data', onData);
      client.pause();
      const rest = buf.subarray(parsed.length);
      if (rest.length > 0) client.unshift(rest);
      if (parsed.addresses) c.addresses = parsed.addresses;
      this.route(c);
    };
    client.on('data', onData);
    client.resume(); // accepted sockets start with readableFlowing = false
    client.once('close', () => clearTimeout(timer));
  }

  private route(c: Conn): void {
    if (c.state !== 'accepting') return;
    if (!this.holding) return this.connectUpstream(c);
    if (this.holdQueue.length >= this.opts.holdQueueLimit) {
      this.rejected++;
      this.destroy(c);
      return;
    }
    c.state = 'held';
    this.holdQueue.push(c);
    c.holdTimer = setTimeout(() => {
      c.holdTimer = null;
      if (c.state !== 'held') return;
      this.holdExpired++;
      this.dequeue(c);
      this.closeClient(c);
    }, this.opts.maxHoldMs);
  }

  private dequeue(c: Conn): void {
    const i = this.holdQueue.indexOf(c);
    if (i >= 0) this.holdQueue.splice(i, 1);
  }

  private connectUpstream(c: Conn): void {
    const { listener } = c;
    c.state = 'connecting';
    c.since = Date.now();
    this.active++;
    listener.counters.active++;
    const target = this.upstream;
    const upstream: RelaySocket = connect({
      host: target.address,
      port: target.port ?? listener.port,
      allowHalfOpen: true,
      noDelay: true,
      ...(this.opts.sourceAddress !== undefined ? { localAddress: this.opts.sourceAddress } : {}),
    });
    upstream[kConn] = c;
    c.upstream = upstream;
    c.open++;
    upstream.on('close', onSocketClose);
    upstream.on('error', onSocketError);
    upstream.once('connect', onUpstreamConnect);
  }

  /** The upstream connected: relay both ways. */
  opened(c: Conn): void {
    if (c.state !== 'connecting') return;
    const client = c.client;
    const upstream = c.upstream!;
    c.state = 'open';
    c.since = Date.now();
    if (this.opts.proxyProtocol && c.addresses)
      upstream.write(encodeProxyHeader(this.opts.proxyProtocol, c.addresses));
    upstream.on('drain', onDrain);
    client.on('drain', onDrain);
    client.on('end', onEnd);
    upstream.on('end', onEnd);
    client.on('data', onClientData);
    upstream.on('data', onUpstreamData);
    client.resume(); // accepted paused (readableFlowing false), so 'data' alone does not start it
  }

  /** The upstream connect failed or timed out: count it and close the client gently. */
  connectFailed(c: Conn): void {
    if (c.state !== 'connecting') return;
    this.upstreamFailures++;
    c.upstream?.destroy();
    this.closeClient(c);
  }

  /** Connect and idle timeouts of every connection; see the module comment. */
  private sweep(): void {
    const now = Date.now();
    const { connectTimeoutMs, idleTimeoutMs } = this.opts;
    for (const c of this.conns) {
      if (c.state === 'connecting') {
        if (now - c.since >= connectTimeoutMs) this.connectFailed(c);
      } else if (c.state === 'open' && idleTimeoutMs > 0) {
        if (c.activity !== c.mark) {
          c.mark = c.activity;
          c.since = now;
        } else if (now - c.since >= idleTimeoutMs) {
          this.idleTimedOut(c);
        }
      }
    }
  }

  /** Idle timeout of an open connection (either socket). */
  idleTimedOut(c: Conn): void {
    this.idleTimeouts++;
    this.destroy(c);
  }

  /** Error on an open connection's socket: reset the other side too. */
  destroyConn(c: Conn, reset: boolean): void {
    this.destroy(c, reset);
  }

  /** Ends the client gently (FIN, not RST): reads and discards what it still sends, then frees it. */
  private closeClient(c: Conn): void {
    const { client } = c;
    if (c.state === 'closed' || client.destroyed) return;
    const wasActive = c.state === 'connecting' || c.state === 'open';
    this.leaveActive(c, wasActive);
    c.state = 'closed';
    client.resume();
    client.end();
    const t = setTimeout(() => client.destroy(), 2_000);
    client.once('end', () => client.destroy());
    client.once('close', () => clearTimeout(t));
  }

  /** Tears the connection down at once; `reset` propagates an RST to the other side. */
  private destroy(c: Conn, reset = false): void {
    if (c.holdTimer) clearTimeout(c.holdTimer);
    c.holdTimer = null;
    if (c.state === 'held') this.dequeue(c);
    this.leaveActive(c, c.state === 'connecting' || c.state === 'open');
    c.state = 'closed';
    for (const s of [c.client, c.upstream]) {
      if (!s || s.destroyed) continue;
      if (reset && typeof s.resetAndDestroy === 'function' && !s.connecting) s.resetAndDestroy();
      else s.destroy();
    }
  }

  private leaveActive(c: Conn, wasActive: boolean): void {
    if (!wasActive) return;
    this.active--;
    c.listener.counters.active--;
  }

  /** One socket of `c` closed. */
  socketClosed(c: Conn, s: Socket): void {
    c.open--;
    if (c.state === 'held') {
      // The client gave up while held.
      this.destroy(c);
    } else if (c.state === 'accepting' && s === c.client) {
      this.destroy(c);
    } else if (c.state === 'open' || c.state === 'connecting') {
      // One side is fully closed: the other has nothing left to exchange with it.
      const other = s === c.client ? c.upstream : c.client;
      if (other && !other.destroyed) {
        if (other.writableFinished || !other.writable) other.destroy();
        else other.end();
      }
    }
    if (c.open === 0) {
      this.conns.delete(c);
      if (c.state !== 'closed') {
        this.leaveActive(c, c.state === 'connecting' || c.state === 'open');
        c.state = 'closed';
      }
      this.notifyDrain();
    }
  }
}
