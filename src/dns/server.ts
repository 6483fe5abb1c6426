/**
 * The authoritative server's sockets: UDP and TCP on one address and port. TCP follows RFC 7766:
 * 2-byte length framing (§8), several queries per connection and pipelining (§6.2.1), idle
 * timeouts (§6.2.3) and a connection cap. Logging happens here, at the edge, and nowhere inside.
 */
import net from 'node:net';
import { FerryError, errorMessage, isFerryError } from '../common/errors.js';
import { silentLogger, type Logger } from '../common/log.js';
import { Dispatcher, type Forward } from './dispatch/chain.js';
import type { Answer, Peer } from './dispatch/request.js';
import { QueryEngine } from './query/engine.js';
import { DnsWorkerPool, type WorkerStats } from './workers/pool.js';
import { nativeUdp, openUdp, type UdpEndpoint, type UdpRemote } from './udp-io.js';
import { ZoneStore, type SerialPolicy } from './zone/store.js';
import { Primary, type PrimaryOptions } from './xfr/primary.js';
import { Catalog, type CatalogOptions } from './catalog/catalog.js';
import type { Zone } from './zone/zone.js';

/**
 * Besides the socket options below, the primary role's (xfr/primary.ts): `db` (SQLite file, so
 * zones and every change survive a restart), `journalLimit`, `tsigKeys`, `zonePolicies` (per-zone
 * transfer/update ACLs and NOTIFY targets; default refuse) and `notify` timing.
 */
export interface DnsServerOptions extends Omit<PrimaryOptions, 'logger'> {
  /** Address to bind, IPv4 or IPv6 (default '127.0.0.1'). */
  address?: string;
  /** Port for both UDP and TCP (default 53; 0 picks a free port used by both). */
  port?: number;
  /** Zones served from the start (more via `server.zones.add`). */
  zones?: Zone[];
  /** Close a TCP connection idle this long (default 10000 ms, RFC 7766 §6.2.3). */
  tcpIdleTimeoutMs?: number;
  /** Most TCP connections at once; more are refused (default 1000). */
  maxTcpConnections?: number;
  /** Our EDNS UDP payload size (default 1232). */
  maxUdpPayload?: number;
  /** How changes bump SOA serials: 'increment' (default) or 'unixtime' with increment fallback. */
  serialPolicy?: SerialPolicy;
  /** Logger for the socket edge (default silent). */
  logger?: Logger;
  /**
   * UDP I/O: 'auto' (default) batches datagrams through the native addon when it is built, else
   * Node's dgram; 'native' fails to start without the addon (see udp-io.ts).
   */
  udpIo?: 'auto' | 'native' | 'dgram';
  /**
   * Threads answering UDP queries (default 1: this thread). With N > 1, N query threads bind the
   * UDP port each (SO_REUSEPORT, which needs the native UDP addon) and read `zones` in place;
   * `zones` stays the one store changes go through, and this thread serves TCP; see
   * workers/pool.ts. `sync()` waits until a change reaches every thread. Without the addon this
   * thread answers alone, with a warning.
   */
  workers?: number;
  /**
   * Produce a catalog zone (RFC 9432) listing every other zone; see catalog/catalog.ts. Its
   * transfer ACL and NOTIFY targets are `zonePolicies[catalog name]` (or `*`), as for any zone.
   */
  catalog?: CatalogOptions;
}

/**
 * How a query thread's server differs (workers/worker-main.ts): a UDP socket sharing the port
 * (no TCP: the main thread serves it), and the primary role's requests forwarded to the main
 * thread, which holds the zone store (dispatch/chain.ts).
 */
export interface WorkerRole {
  forward: Forward;
  /** The thread's zone set (workers/thread-zones.ts), used instead of a new store. */
  zones?: ZoneStore;
  /** Threads sharing the UDP port, over which datagrams are spread at random (udp-io.ts). */
  threads?: number;
}

/** Output buffered for one TCP client before we stop reading its queries (slow readers). */
const TCP_WRITE_HIGH_WATER = 256 * 1024;
/** Attempts to find a port free for both UDP and TCP when the port is 0. */
const BIND_ATTEMPTS = 20;

/** Writes one message with its RFC 7766 §8 length prefix (nothing once the socket is gone). */
function writeFramed(sock: net.Socket, m: Buffer): void {
  if (sock.destroyed) return;
  const f = Buffer.allocUnsafe(2 + m.length);
  f.writeUInt16BE(m.length, 0);
  m.copy(f, 2);
  sock.write(f);
}

function optionError(message: string): FerryError {
  return new FerryError('DNS_BAD_OPTIONS', message);
}

/** An authoritative DNS server over UDP and TCP. */
export class DnsServer {
  readonly zones: ZoneStore;
  readonly engine: QueryEngine;
  /** Transfers, UPDATE, NOTIFY, TSIG and persistence. */
  readonly primary: Primary;
  /** The catalog zone's producer, when `catalog` was given. */
  readonly catalog: Catalog | undefined;
  private readonly requestedPort: number;
  private readonly host: string;
  private readonly idleMs: number;
  private readonly maxConns: number;
  private readonly log: Logger;
  private udp: UdpEndpoint | undefined;
  private readonly udpIo: 'auto' | 'native' | 'dgram';
  private tcp: net.Server | undefined;
  private readonly conns = new Set<net.Socket>();
  private boundPort = 0;
  private readonly workerCount: number;
  private pool: DnsWorkerPool | undefined;
  /** Every request goes through it (dispatch/chain.ts). */
  private readonly dispatcher: Dispatcher;
  /** Requests received by this process's sockets, by transport. */
  readonly received = { udp: 0, tcp: 0 };

  /** `role` is for the worker pool's own use. */
  constructor(
    opts: DnsServerOptions = {},
    private readonly role?: WorkerRole,
  ) {
    this.host = opts.address ?? '127.0.0.1';
    if (net.isIP(this.host) === 0)
      throw optionError(`address must be an IP address, got ${JSON.stringify(opts.address)}`);
    this.requestedPort = opts.port ?? 53;
    if (!Number.isInteger(this.requestedPort) || this.requestedPort < 0 || this.requestedPort > 65535) {
      throw optionError(`port must be an integer from 0 to 65535 (0 = any free port), got ${opts.port}`);
    }
    this.idleMs = opts.tcpIdleTimeoutMs ?? 10_000;
    if (!(this.idleMs > 0))
      throw optionError(
        `tcpIdleTimeoutMs must be a positive number of milliseconds, got ${opts.tcpIdleTimeoutMs}`,
      );
    this.maxConns = opts.maxTcpConnections ?? 1000;
    if (!Number.isInteger(this.maxConns) || this.maxConns < 1) {
      throw optionError(`maxTcpConnections must be a positive integer, got ${opts.maxTcpConnections}`);
    }
    this.log = opts.logger ?? silentLogger;
    this.udpIo = opts.udpIo ?? 'auto';
    if (!['auto', 'native', 'dgram'].includes(this.udpIo))
      throw optionError(`udpIo must be 'auto', 'native' or 'dgram', got ${JSON.stringify(opts.udpIo)}`);
    this.workerCount = opts.workers ?? 1;
    if (!Number.isInteger(this.workerCount) || this.workerCount < 1 || this.workerCount > 64) {
      throw optionError(
        `workers must be an integer from 1 to 64 (1 = no query threads), got ${opts.workers}`,
      );
    }
    this.zones =
      role?.zones ??
      new ZoneStore(opts.zones ?? [], opts.serialPolicy ? { serialPolicy: opts.serialPolicy } : {});
    this.engine = new QueryEngine(
      this.zones,
      opts.maxUdpPayload === undefined ? {} : { maxUdpPayload: opts.maxUdpPayload },
    );
    this.primary = new Primary(this.zones, { ...opts, logger: this.log });
    // After the database is restored, so that the catalog lists the zones kept there.
    try {
      this.catalog = opts.catalog && !role ? new Catalog(this.zones, opts.catalog) : undefined;
    } catch (err) {
      this.primary.close();
      throw err;
    }
    this.dispatcher = new Dispatcher({ engine: this.engine, primary: this.primary }, role?.forward);
  }

  /** The bound address. */
  get address(): string {
    return this.host;
  }

  /** The bound port after `start()` (the requested one before). */
  get port(): number {
    return this.udp || this.pool ? this.boundPort : this.requestedPort;
  }

  /** Resolves once every worker serves the zones as they are now (at once without workers). */
  sync(): Promise<void> {
    return this.pool ? this.pool.sync() : Promise.resolve();
  }

  /** Queries each query thread answered since it started (empty without): how load spreads. */
  workerStats(): Promise<WorkerStats[]> {
    return this.pool ? this.pool.workerStats() : Promise.resolve([]);
  }

  /** Binds UDP, then TCP on the same port (retrying other ports when the port was 0). */
  async start(): Promise<void> {
    if (this.udp || this.pool) throw new FerryError('DNS_ALREADY_STARTED', 'server already started');
    if (this.role) return this.startThreadUdp();
    if (this.workerCount > 1) {
      const native =
        this.udpIo === 'dgram' ? { ok: false as const, reason: "udpIo is 'dgram'" } : nativeUdp();
      if (native.ok) return this.startWorkers();
      // 'native' fails below, with the addon's reason; 'auto' and 'dgram' answer here alone.
      if (this.udpIo !== 'native')
        this.log.warn(
          { workers: this.workerCount, reason: native.reason },
          'dns workers need the native UDP addon (SO_REUSEPORT); answering in one thread',
        );
    }
    const attempts = this.requestedPort === 0 ? BIND_ATTEMPTS : 1;
    let lastErr: unknown;
    for (let i = 0; i < attempts; i++) {
      const udp = await this.bindUdp(this.requestedPort).catch((err: unknown) => {
        lastErr = err;
        return undefined;
      });
      if (!udp) continue;
      const port = udp.port;
      try {
        this.tcp = await this.listenTcp(port);
        this.udp = udp;
        this.boundPort = port;
        if (!this.role) this.primary.start(this.host);
        this.log.info({ address: this.host, port, udp: udp.kind }, 'dns server listening');
        return;
      } catch (err) {
        lastErr = err;
        await udp.close();
      }
    }
    throw new FerryError(
      'DNS_BIND_FAILED',
      `cannot bind UDP and TCP on ${this.host}:${this.requestedPort}: ${errorMessage(lastErr)}`,
      {
        cause: lastErr,
      },
    );
  }

  /** A query thread's socket: UDP only, sharing the port (SO_REUSEPORT). */
  private async startThreadUdp(): Promise<void> {
    try {
      this.udp = await this.bindUdp(this.requestedPort);
      this.boundPort = this.udp.port;
    } catch (err) {
      throw new FerryError(
        'DNS_BIND_FAILED',
        `cannot bind UDP on ${this.host}:${this.requestedPort}: ${errorMessage(err)}`,
        { cause: err },
      );
    }
  }

  // Finds a port free for UDP and TCP, keeps TCP here and has the query threads bind UDP.
  private async startWorkers(): Promise<void> {
    const attempts = this.requestedPort === 0 ? BIND_ATTEMPTS : 1;
    let lastErr: unknown;
    for (let i = 0; i < attempts; i++) {
      let tcp: net.Server | undefined;
      try {
        const udp = await this.bindUdp(this.requestedPort, 'dgram');
        const port = udp.port;
        await udp.close();
        tcp = await this.listenTcp(port);
        this.pool = await DnsWorkerPool.start(this.zones, {
          count: this.workerCount,
          address: this.host,
          port,
          maxUdpPayload: this.engine.maxUdpPayload,
          logger: this.log,
          forward: (msg, from) => {
            // Run here through the whole chain; its handlers answer at once (`later` is unused).
            const extra: Buffer[] = [];
            const peer: Peer = { address: from.address, later: () => (m) => extra.push(m) };
            const out = this.dispatcher.dispatch(msg, from.transport, peer);
            return out === undefined ? extra : Array.isArray(out) ? out.concat(extra) : [out, ...extra];
          },
        });
        this.tcp = tcp;
        this.boundPort = port;
        this.primary.start(this.host);
        this.log.info({ address: this.host, port, workers: this.workerCount }, 'dns server listening');
        return;
      } catch (err) {
        const t = tcp;
        if (t) await new Promise<void>((r) => t.close(() => r()));
        // A worker that died or stalled is no port problem: another port would not help.
        if (isFerryError(err, 'DNS_WORKER'))
          throw new FerryError(
            'DNS_WORKER',
            `cannot start ${this.workerCount} workers on ${this.host}:${this.requestedPort}: ${err.message}`,
            { cause: err },
          );
        lastErr = err;
      }
    }
    throw new FerryError(
      'DNS_BIND_FAILED',
      `cannot start ${this.workerCount} workers on ${this.host}:${this.requestedPort}: ${errorMessage(lastErr)}`,
      { cause: lastErr },
    );
  }

  /** Closes both sockets and every TCP connection (and the query threads). */
  async stop(): Promise<void> {
    const pool = this.pool;
    this.pool = undefined;
    await pool?.stop();
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    this.catalog?.close();
    this.primary.close(); // NOTIFY stops, the database closes
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    await Promise.all([udp?.close(), tcp ? new Promise<void>((r) => tcp.close(() => r())) : undefined]);
  }

  /** The UDP form in use ('native' or 'dgram'; undefined before start or with query threads). */
  get udpKind(): 'native' | 'dgram' | undefined {
    return this.udp?.kind;
  }

  private bindUdp(port: number, io = this.udpIo): Promise<UdpEndpoint> {
    return openUdp({
      host: this.host,
      port,
      // A query thread shares the port with the other threads (udp-io.ts).
      shared: this.role !== undefined,
      ...(this.role?.threads === undefined ? {} : { spread: this.role.threads }),
      io,
      onMessage: (msg, remote) => this.onUdp(msg, remote),
      onError: (err) => this.log.warn({ err }, 'dns udp socket error'),
    });
  }

  private onUdp(msg: Buffer, remote: UdpRemote): Buffer | undefined {
    this.received.udp++;
    let out: Answer;
    try {
      out = this.dispatcher.dispatch(msg, 'udp', remote);
    } catch (err) {
      this.log.error({ err, from: remote.address }, 'dns query failed');
      return undefined;
    }
    if (out === undefined || !Array.isArray(out)) return out;
    if (out.length === 1) return out[0];
    const send = remote.later();
    for (const m of out) send(m);
    return undefined;
  }

  private listenTcp(port: number): Promise<net.Server> {
    return new Promise((resolve, reject) => {
      const server = net.createServer((s) => this.onTcp(s));
      server.maxConnections = this.maxConns;
      server.once('error', reject);
      server.listen({ host: this.host, port, exclusive: true }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.log.warn({ err }, 'dns tcp server error'));
        resolve(server);
      });
    });
  }

  private onTcp(sock: net.Socket): void {
    this.conns.add(sock);
    sock.setNoDelay(true);
    sock.setTimeout(this.idleMs, () => sock.destroy());
    sock.on('close', () => this.conns.delete(sock));
    sock.on('error', () => sock.destroy());
    // Answers given later (forwarded by a worker) go out framed, unless the client has gone.
    const peer: Peer = {
      address: sock.remoteAddress ?? '',
      later: () => (m) => writeFramed(sock, m),
    };
    let pending: Buffer = Buffer.alloc(0);
    // When the unfinished message at the head of `pending` began: a client trickling bytes must
    // still finish a message within the idle timeout (slowloris).
    let partialSince = 0;
    sock.on('drain', () => sock.resume());
    sock.on('data', (chunk: Buffer) => {
      if (partialSince !== 0 && Date.now() - partialSince > this.idleMs) {
        sock.destroy();
        return;
      }
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      // RFC 7766 §8: each message is preceded by its length; several may arrive at once.
      let consumed = false;
      while (pending.length >= 2) {
        const len = pending.readUInt16BE(0);
        if (pending.length < 2 + len) break;
        const msg = pending.subarray(2, 2 + len);
        pending = pending.subarray(2 + len);
        consumed = true;
        if (len < 12) {
          sock.destroy(); // not even a header: the stream is garbage
          return;
        }
        this.received.tcp++;
        let out: Answer;
        try {
          // Transfers answer with several messages (RFC 5936 §2.2).
          out = this.dispatcher.dispatch(msg, 'tcp', peer);
        } catch (err) {
          this.log.error({ err, from: sock.remoteAddress }, 'dns query failed');
          continue;
        }
        if (out === undefined) continue;
        if (!Array.isArray(out)) writeFramed(sock, out);
        else for (const m of out) writeFramed(sock, m);
      }
      if (pending.length === 0) {
        pending = Buffer.alloc(0);
        partialSince = 0;
      } else {
        if (consumed || partialSince === 0) partialSince = Date.now();
        if (pending.byteOffset > 0 && pending.length < 4096) pending = Buffer.from(pending);
      }
      // Back-pressure: a client that does not read its answers stops being read (RFC 7766 §6.2.1).
      if (sock.writableLength > TCP_WRITE_HIGH_WATER) sock.pause();
    });
  }
}
