/**
 * UDP side of the userspace relay: one listening socket per port and a session table mapping
 * each client (address, port) to its own upstream socket, so replies find their way back.
 * Sessions expire after `idleTimeoutMs` without a datagram either way. UDP has no flow control:
 * what the kernel cannot queue is dropped, and the relay itself keeps only bounded queues (a few
 * datagrams per session while its upstream socket binds, and the hold queue).
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { FerryError } from '../common/errors.js';
import type { Upstream } from './engine.js';
import type { Counters } from './counters.js';

export interface UdpListenerOptions {
  address: string;
  port: number;
  sourceAddress?: string;
  idleTimeoutMs: number;
  maxSessions: number;
  holdQueueLimit: number;
  /** The current upstream, read when a session is created. */
  upstream: () => Upstream;
  isHolding: () => boolean;
  /** Called after a session is removed; `idle` when it expired. */
  onSessionEnd: (idle: boolean) => void;
}

interface Session {
  address: string;
  port: number;
  socket: Socket;
  ready: boolean;
  pending: Buffer[];
  lastActive: number;
}

/** Datagrams kept per session while its upstream socket binds and connects. */
const MAX_PENDING = 64;

/** A UDP listener with its session table. */
export class UdpListener {
  readonly counters: Counters = {
    active: 0,
    total: 0,
    bytesToUpstream: 0,
    bytesToClient: 0,
    lastConnectionAt: null,
  };
  upstreamFailures = 0;
  rejected = 0;
  port: number;
  private readonly sessions = new Map<string, Session>();
  private readonly held: Array<{ msg: Buffer; rinfo: RemoteInfo }> = [];
  private socket: Socket | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  private closed = false;

  readonly address: string;

  constructor(private readonly opts: UdpListenerOptions) {
    this.port = opts.port;
    this.address = opts.address;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  get heldCount(): number {
    return this.held.length;
  }

  async start(): Promise<void> {
    const type = isIPv6(this.opts.address) ? 'udp6' : 'udp4';
    const socket = createSocket({ type, ipv6Only: type === 'udp6' });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (err) =>
        reject(
          new FerryError(
            'RELAY_LISTEN',
            `cannot listen on ${this.opts.address}:${this.opts.port}/udp: ${err.message}`,
            { cause: err },
          ),
        ),
      );
      socket.bind({ address: this.opts.address, port: this.opts.port }, () => resolve());
    });
    socket.removeAllListeners('error');
    socket.on('error', () => undefined);
    socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    this.socket = socket;
    this.port = socket.address().port;
    const every = Math.max(10, Math.min(1000, Math.floor(this.opts.idleTimeoutMs / 4)));
    this.sweeper = setInterval(() => this.sweep(), every);
    this.sweeper.unref();
  }

  /** Sends held datagrams on, in arrival order, through new sessions to the current upstream. */
  release(): void {
    for (const { msg, rinfo } of this.held.splice(0)) this.onMessage(msg, rinfo, true);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.held.length = 0;
    for (const key of [...this.sessions.keys()]) this.endSession(key);
    const s = this.socket;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }

  private onMessage(msg: Buffer, rinfo: RemoteInfo, released = false): void {
    if (this.closed) return;
    const key = `${rinfo.address}|${rinfo.port}`;
    let s = this.sessions.get(key);
    if (!s) {
      if (this.opts.isHolding() && !released) {
        if (this.held.length < this.opts.holdQueueLimit) this.held.push({ msg, rinfo });
        else this.rejected++;
        return;
      }
      if (this.sessions.size >= this.opts.maxSessions) {
        this.rejected++;
        return;
      }
      s = this.openSession(key, rinfo);
    }
    s.lastActive = Date.now();
    this.counters.bytesToUpstream += msg.length;
    if (s.ready) s.socket.send(msg);
    else if (s.pending.length < MAX_PENDING) s.pending.push(msg);
  }

  private openSession(key: string, rinfo: RemoteInfo): Session {
    const up = this.opts.upstream();
    const socket = createSocket(isIPv6(up.address) ? 'udp6' : 'udp4');
    const s: Session = {
      address: rinfo.address,
      port: rinfo.port,
      socket,
      ready: false,
      pending: [],
      lastActive: Date.now(),
    };
    this.sessions.set(key, s);
    this.counters.total++;
    this.counters.lastConnectionAt = Date.now();
    socket.on('error', () => {
      // A connected UDP socket reports ICMP unreachable as ECONNREFUSED: the upstream is down.
      this.upstreamFailures++;
      this.endSession(key);
    });
    socket.on('message', (msg) => {
      if (this.sessions.get(key) !== s) return;
      s.lastActive = Date.now();
      this.counters.bytesToClient += msg.length;
      this.socket?.send(msg, s.port, s.address);
    });
    socket.bind(
      { port: 0, ...(this.opts.sourceAddress !== undefined ? { address: this.opts.sourceAddress } : {}) },
      () => {
        socket.connect(up.port ?? this.port, up.address, () => {
          if (this.sessions.get(key) !== s) return;
          s.ready = true;
          for (const m of s.pending.splice(0)) socket.send(m);
        });
      },
    );
    return s;
  }

  private endSession(key: string, idle = false): void {
    const s = this.sessions.get(key);
    if (!s) return;
    this.sessions.delete(key);
    try {
      s.socket.close();
    } catch {
      // already closed
    }
    this.opts.onSessionEnd(idle);
  }

  private sweep(): void {
    const cutoff = Date.now() - this.opts.idleTimeoutMs;
    for (const [key, s] of this.sessions) {
      if (s.lastActive > cutoff) continue;
      this.endSession(key, true);
    }
  }
}
