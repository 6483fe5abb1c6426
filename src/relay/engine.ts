/**
 * The redirect engine contract, shared by the userspace relay and the kernel (nftables) engine.
 * The orchestrator drives an engine through these calls only, so the two are interchangeable.
 *
 * Life cycle: `start()` → any of `setUpstream`/`hold`/`release`/`stats`/`drain` → `close()`.
 * Cut-over contract: `hold()` makes new connections wait (they are not refused and not forwarded);
 * `drain()` waits for the in-flight ones; `setUpstream()` points at the new server; `release()`
 * sends every held connection to the current upstream, in arrival order.
 */

/** Where traffic is sent. `port` omitted: the same port the traffic arrived on (port-preserving). */
export interface Upstream {
  address: string;
  port?: number;
}

/** Counters of one bound listener (one address, port and protocol). */
export interface ListenerStats {
  address: string;
  port: number;
  protocol: 'tcp' | 'udp';
  /** TCP: connections connecting or connected upstream. UDP: live sessions. */
  activeConnections: number;
  /** TCP connections accepted, or UDP sessions created, since start. */
  totalConnections: number;
  bytesToUpstream: number;
  bytesToClient: number;
  /** Epoch ms of the last accepted connection (or new UDP session); null if none yet. */
  lastConnectionAt: number | null;
}

/** Engine-wide counters; the sums over `listeners` plus the engine's own events. */
export interface RelayStats {
  /** TCP connections connecting or connected upstream (not held). */
  activeConnections: number;
  totalConnections: number;
  bytesToUpstream: number;
  bytesToClient: number;
  lastConnectionAt: number | null;
  /**
   * Connections waiting in the hold queue; with the kernel engine, clients whose SYN the hold
   * dropped, counted after the release until their retransmission is due.
   */
  held: number;
  /** Upstream connects that failed (refused, unreachable, timed out); their clients were closed. */
  upstreamFailures: number;
  /** Connections refused at once: connection limit or hold queue full. */
  rejected?: number;
  /** Held connections closed because they waited longer than maxHoldMs. */
  holdExpired?: number;
  /** Connections (or UDP sessions) closed by the idle timeout. */
  idleTimeouts?: number;
  /** Live UDP sessions (already included in the UDP listeners' activeConnections). */
  udpSessions?: number;
  /** Per-listener counters, in bind order. */
  listeners?: ListenerStats[];
}

/** Totals of per-listener counters, as `RelayStats` carries them beside the engine's own. */
export function sumListeners(
  listeners: ListenerStats[],
): Pick<RelayStats, 'totalConnections' | 'bytesToUpstream' | 'bytesToClient' | 'lastConnectionAt'> {
  let totalConnections = 0;
  let bytesToUpstream = 0;
  let bytesToClient = 0;
  let lastConnectionAt: number | null = null;
  for (const l of listeners) {
    totalConnections += l.totalConnections;
    bytesToUpstream += l.bytesToUpstream;
    bytesToClient += l.bytesToClient;
    if (l.lastConnectionAt !== null && (lastConnectionAt === null || l.lastConnectionAt > lastConnectionAt))
      lastConnectionAt = l.lastConnectionAt;
  }
  return { totalConnections, bytesToUpstream, bytesToClient, lastConnectionAt };
}

/** The same contract for every redirect engine. Calls may return promises; callers await them. */
export interface RedirectEngine {
  /** `userspace` or `kernel`. */
  readonly kind: string;
  /** Bound ports, in the order of the configured listen ports (ephemeral ports resolved). */
  readonly ports: number[];
  /** Binds and starts forwarding. */
  start(): Promise<void>;
  /** New connections go to `upstream`; established ones stay where they are. */
  setUpstream(upstream: Upstream): void | Promise<void>;
  /** New connections wait (are neither refused nor forwarded) until `release()`. */
  hold(): void | Promise<void>;
  /** Stops holding; held connections go to the current upstream in arrival order. */
  release(): void | Promise<void>;
  stats(): RelayStats | Promise<RelayStats>;
  /** True once no in-flight (non-held) connection remains; false when `timeoutMs` passes first. */
  drain(timeoutMs: number): Promise<boolean>;
  /** Stops listening, ends every connection, removes everything the engine set up. Idempotent. */
  close(): Promise<void>;
}
