/**
 * The DNS server's UDP socket, in one of two forms with one interface:
 *
 * - `native` (default on Linux): the ferry_dns_udp addon (native/dns-udp/udp_batch.c) reads up
 *   to SLOTS datagrams per recvmmsg into a reused arena and sends their answers with one
 *   sendmmsg, so a busy server makes one JavaScript call and two system calls per batch instead of
 *   a callback, a Buffer, an address object and a send request per datagram. With `shared`, each
 *   query thread binds a socket of its own with SO_REUSEPORT (Node 20's dgram cannot). With
 *   `spread` (the number of threads), a classic BPF program on the port's group deals datagrams to
 *   the sockets at random instead of by the kernel's hash of the client's address and port, which
 *   left one thread idle while another saturated when a few clients sent most queries.
 * - `dgram`: Node's own socket, used when the addon is not built or FERRY_NATIVE=0; it cannot
 *   share a port between threads, so a server with query threads needs the native form.
 *
 * The handler answers synchronously with the response (or undefined to send nothing); an answer
 * that comes later (a request forwarded to the main thread) goes through `remote.later()`.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { FerryError } from '../common/errors.js';
import { loadNative } from '../common/native.js';

/** Who sent a datagram. `address` and `port` are decoded only when read. */
export interface UdpRemote {
  readonly address: string;
  readonly port: number;
  /** A sender for answers given after the handler returned (copies what it needs). */
  later(): (msg: Buffer) => void;
}

export type UdpHandler = (msg: Buffer, remote: UdpRemote) => Buffer | undefined;

export interface UdpEndpoint {
  readonly kind: 'native' | 'dgram';
  readonly port: number;
  close(): Promise<void>;
}

export interface UdpOpenOptions {
  host: string;
  port: number;
  /** Several threads serve this port: SO_REUSEPORT (native; a non-exclusive bind for dgram). */
  shared: boolean;
  /**
   * With `shared` (native only): how many sockets share the port. Each datagram goes to one of
   * them at random; while fewer are bound (a thread being replaced) the kernel's hash picks for
   * the missing ones. Unset: the kernel's hash of the client's address and port alone.
   */
  spread?: number;
  onMessage: UdpHandler;
  onError: (err: Error) => void;
  /** 'auto' (default): native when the addon loads, else dgram. */
  io?: 'auto' | 'native' | 'dgram';
}

interface Channel {
  readonly __brand: 'channel';
}

interface UdpAddon {
  ADDR_SLOT: number;
  bind(host: string, port: number, reusePort: boolean): [number, number];
  spread(fd: number, count: number, mode: SpreadMode): void;
  open(
    fd: number,
    rx: Buffer,
    lens: Int32Array,
    addrs: Buffer,
    slotSize: number,
    onBatch: (n: number) => void,
  ): Channel;
  reply(ch: Channel, answers: Array<Buffer | undefined>, count: number): void;
  sendTo(ch: Channel, msg: Buffer, addrs: Buffer, offset: number): void;
  peer(addrs: Buffer, offset: number): [string, number];
  stats(ch: Channel): {
    received: number;
    sent: number;
    truncated: number;
    sendDropped: number;
    recvErrors: number;
    /** recvmmsg batches handed to JavaScript (received / batches: datagrams per batch). */
    batches: number;
  };
  close(ch: Channel): void;
  closeFd(fd: number): void;
}

/** How the reuseport program picks a socket: a random number, or the receiving CPU. */
type SpreadMode = 'random' | 'cpu';

/** Datagrams per recvmmsg/sendmmsg. */
const SLOTS = 64;
/**
 * Largest query read whole. A longer datagram is dropped (counted as truncated): DNS queries are
 * a few hundred bytes, and a client with a bigger message (an UPDATE) uses TCP past 512 bytes.
 */
const SLOT_SIZE = 4096;

/** Whether the native path is available here, or why not. */
export function nativeUdp(): { ok: true } | { ok: false; reason: string } {
  const r = loadNative<UdpAddon>('ferry_dns_udp');
  return 'binding' in r ? { ok: true } : { ok: false, reason: r.error };
}

/** Binds and starts reading. Errors are FerryError DNS_BIND_FAILED-worthy: the caller words them. */
export function openUdp(opts: UdpOpenOptions): Promise<UdpEndpoint> {
  const io = opts.io ?? 'auto';
  if (io !== 'dgram') {
    const r = loadNative<UdpAddon>('ferry_dns_udp');
    if ('binding' in r) return Promise.resolve(new NativeUdp(r.binding, opts));
    if (io === 'native') return Promise.reject(new FerryError('DNS_NATIVE_UNAVAILABLE', r.error));
  }
  return openDgram(opts);
}

/**
 * FERRY_DNS_UDP_SPREAD: `random` (default), `cpu` (the CPU that received the datagram), or `hash`
 * (no program: the kernel's address hash). For comparing them; see src/dns/README.md.
 */
function spreadMode(): SpreadMode | 'hash' | { bad: string } {
  const v = process.env.FERRY_DNS_UDP_SPREAD;
  if (v === undefined || v === '' || v === 'random') return 'random';
  return v === 'cpu' || v === 'hash' ? v : { bad: v };
}

/** A slot's sender, decoded lazily from the arena (valid during the handler call only). */
class SlotRemote implements UdpRemote {
  decoded: [string, number] | null = null;
  constructor(
    private readonly owner: NativeUdp,
    private readonly offset: number,
  ) {}
  private get peer(): [string, number] {
    return (this.decoded ??= this.owner.addon.peer(this.owner.addrs, this.offset));
  }
  get address(): string {
    return this.peer[0];
  }
  get port(): number {
    return this.peer[1];
  }
  later(): (msg: Buffer) => void {
    const addr = Buffer.from(
      this.owner.addrs.subarray(this.offset, this.offset + this.owner.addon.ADDR_SLOT),
    );
    return (msg) => this.owner.sendTo(msg, addr);
  }
}

class NativeUdp implements UdpEndpoint {
  readonly kind = 'native';
  readonly port: number;
  readonly addrs: Buffer;
  private readonly rx: Buffer;
  private readonly lens = new Int32Array(SLOTS);
  private readonly answers: Array<Buffer | undefined> = new Array<Buffer | undefined>(SLOTS).fill(undefined);
  private readonly remotes: SlotRemote[] = [];
  private channel: Channel | null;

  constructor(
    readonly addon: UdpAddon,
    private readonly opts: UdpOpenOptions,
  ) {
    const [fd, port] = addon.bind(opts.host, opts.port, opts.shared);
    this.port = port;
    let mode = spreadMode();
    if (typeof mode === 'object') {
      opts.onError(
        new Error(
          `FERRY_DNS_UDP_SPREAD must be random, cpu or hash, got ${JSON.stringify(mode.bad)}: using random`,
        ),
      );
      mode = 'random';
    }
    if (opts.shared && opts.spread !== undefined && opts.spread > 1 && mode !== 'hash') {
      try {
        addon.spread(fd, opts.spread, mode);
      } catch (err) {
        // Still a working socket: clients are spread by the kernel's address hash instead.
        opts.onError(
          new Error(
            `cannot spread UDP queries evenly over the threads, using the address hash: ${String(err)}`,
          ),
        );
      }
    }
    this.rx = Buffer.alloc(SLOTS * SLOT_SIZE);
    this.addrs = Buffer.alloc(SLOTS * addon.ADDR_SLOT);
    for (let i = 0; i < SLOTS; i++) this.remotes.push(new SlotRemote(this, i * addon.ADDR_SLOT));
    try {
      this.channel = addon.open(fd, this.rx, this.lens, this.addrs, SLOT_SIZE, (n) => this.onBatch(n));
    } catch (err) {
      addon.closeFd(fd);
      throw err;
    }
  }

  private onBatch(n: number): void {
    const { rx, lens, answers, opts } = this;
    for (let i = 0; i < n; i++) {
      const len = lens[i]!;
      answers[i] = undefined;
      if (len < 0) continue; // longer than a slot: dropped
      const msg = rx.subarray(i * SLOT_SIZE, i * SLOT_SIZE + len);
      const remote = this.remotes[i]!;
      remote.decoded = null; // it caches the decoded address of this datagram only
      try {
        answers[i] = opts.onMessage(msg, remote);
      } catch (err) {
        opts.onError(err instanceof Error ? err : new Error(String(err)));
      }
    }
    if (this.channel) this.addon.reply(this.channel, answers, n);
    answers.fill(undefined, 0, n); // let the answers be collected
  }

  sendTo(msg: Buffer, addr: Buffer): void {
    if (this.channel) this.addon.sendTo(this.channel, msg, addr, 0);
  }

  close(): Promise<void> {
    if (this.channel) this.addon.close(this.channel);
    this.channel = null;
    return Promise.resolve();
  }
}

class DgramUdp implements UdpEndpoint {
  readonly kind = 'dgram';
  constructor(private readonly sock: dgram.Socket) {}
  get port(): number {
    return this.sock.address().port;
  }
  close(): Promise<void> {
    return new Promise<void>((r) => this.sock.close(() => r()));
  }
}

function openDgram(opts: UdpOpenOptions): Promise<UdpEndpoint> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket({
      type: net.isIPv6(opts.host) ? 'udp6' : 'udp4',
      // As the native socket: room for bursts (the kernel caps it at net.core.rmem_max).
      recvBufferSize: 4 * 1024 * 1024,
      sendBufferSize: 4 * 1024 * 1024,
    });
    const onBindError = (err: Error) => {
      sock.close();
      reject(err);
    };
    sock.once('error', onBindError);
    sock.bind({ address: opts.host, port: opts.port, exclusive: !opts.shared }, () => {
      sock.off('error', onBindError);
      sock.on('error', opts.onError);
      sock.on('message', (msg, rinfo) => {
        if (rinfo.port === 0) return; // port 0 cannot be answered (and send would throw)
        const remote: UdpRemote = {
          address: rinfo.address,
          port: rinfo.port,
          later: () => (m) => sock.send(m, rinfo.port, rinfo.address),
        };
        let res: Buffer | undefined;
        try {
          res = opts.onMessage(msg, remote);
        } catch (err) {
          opts.onError(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        // No callback: a failed send is the socket's 'error' event.
        if (res) sock.send(res, rinfo.port, rinfo.address);
      });
      resolve(new DgramUdp(sock));
    });
  });
}
