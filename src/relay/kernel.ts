/**
 * The kernel redirect engine: nftables DNAT in a table of Ferry's own (`ferry_<id>`), so that
 * the kernel forwards every packet for the listen address and ports without a userspace hop.
 *
 * Ruleset (one table per engine, family `ip` or `ip6` after the listen address):
 * - `nat_pre`/`nat_out` (dstnat, prerouting and output): DNAT listen address:port → upstream.
 *   Only a flow's first packet sees NAT chains, so established flows keep their upstream when
 *   `setUpstream` swaps these rules (in one transaction).
 * - `nat_post` (srcnat): masquerade (or SNAT to `sourceAddress`) of DNATed flows, so replies come
 *   back through this host even when the upstream's route to the client does not.
 * - `nat_in` (srcnat on input), with `sourceAddress` only: SNAT of DNATed flows delivered to this
 *   host itself (the upstream is a local address, as the origin's IP1 is before cut-over), so the
 *   local server sees them coming from `sourceAddress`, as it does behind the userspace relay;
 *   that is how the origin tells relayed requests (from IPt) from direct ones at IP1.
 * - `count_pre`/`count_out` (priority -150, after conntrack, before DNAT): jump to `hold`, then
 *   named counters per protocol and port: bytes each way (`up_`/`down_`, by conntrack direction,
 *   L3 bytes including headers) and new flows (`new_`).
 * - `hold`: empty, except while held: new flows to the listen address are dropped and their
 *   client recorded in the `held` set.
 *
 * Latency cost of hold: a dropped SYN is retransmitted by the client after its retransmission
 * timeout, 1 s on Linux and doubling (retries at about 1, 3, 7, 15, 31 s after the first SYN). A
 * connection attempted during a hold therefore connects at the first retransmission after
 * `release()`: a hold of H seconds costs a client up to about 2H + 1 s, e.g. a 2 s cut-over delays
 * a new connection by up to 3 s, and a hold longer than the client's total SYN budget (about 127 s
 * with Linux defaults, 21 s on Windows) fails it. `maxHoldMs` bounds this: past it, held flows get
 * a TCP reset / ICMP unreachable instead, as a userspace relay closes its held connections.
 * Active connections come from the conntrack table of the engine's network namespace.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { randomBytes } from 'node:crypto';
import { FerryError } from '../common/errors.js';
import type { ListenerStats, RedirectEngine, RelayStats, Upstream } from './engine.js';
import { checkUpstream, type ListenSpec } from './options.js';

/** A client's first SYN retransmission timeout, at most: 1 s on Linux, 3 s on Windows. */
const SYN_FIRST_RETRY_MS = 3000;

export interface KernelRelayOptions {
  /** Address and ports to redirect. Ports must be explicit (no ephemeral 0). */
  listen: ListenSpec;
  /** Port omitted = port-preserving. Same IP family as the listen address. */
  upstream: Upstream;
  /** SNAT redirected flows to this address instead of masquerading. */
  sourceAddress?: string;
  /** Rewrite the source of redirected flows (masquerade or SNAT) so replies return here. Default true. */
  masquerade?: boolean;
  /** Redirect UDP on the same ports too. Default false. */
  udp?: boolean;
  /** Table suffix: `ferry_<id>`; [a-z0-9_], at most 24 characters. Default random. */
  id?: string;
  /** Past this, held flows are refused (reset) instead of dropped. Default 30 000 ms. */
  maxHoldMs?: number;
  /** Run nft and read conntrack inside this named network namespace (`ip netns`). */
  netns?: string;
  /** How often counters are polled for `lastConnectionAt`. Default 1 000 ms. */
  pollMs?: number;
  /** The nft binary. Default `nft`. */
  nftPath?: string;
  /**
   * Take over the table `ferry_<id>` when it exists (left by an engine whose process ended without
   * `close()`): `start()` keeps its rules, counters, hold state and upstream instead of replacing
   * them, and `holding`/`upstream` then say what the table does. Default false: start replaces it.
   */
  adopt?: boolean;
}

function bad(message: string): FerryError {
  return new FerryError('RELAY_BAD_OPTION', message);
}

interface Counter {
  packets: number;
  bytes: number;
}

/** Conntrack TCP states that still carry (or are about to carry) data. */
const LIVE_TCP = new Set(['SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK']);

/** nftables DNAT redirect engine; see the module comment. */
export class KernelRelay implements RedirectEngine {
  readonly kind = 'kernel';
  readonly table: string;
  private readonly family: 'ip' | 'ip6';
  private readonly address: string;
  private readonly listenPorts: number[];
  private readonly protocols: Array<'tcp' | 'udp'>;
  private upstream: Upstream;
  private readonly opts: KernelRelayOptions & {
    masquerade: boolean;
    maxHoldMs: number;
    pollMs: number;
    nftPath: string;
  };
  private started = false;
  private closed = false;
  private holding = false;
  private holdTimer: NodeJS.Timeout | null = null;
  /** When the current (or last) hold began, and the hold_drops counter then. */
  private holdStartedAt = 0;
  private dropsAtHold = 0;
  /** After a release: clients whose SYN the hold dropped, and until when their retries may come. */
  private heldAtRelease = 0;
  private retriesDueUntil = 0;
  private poller: NodeJS.Timeout | null = null;
  private lastNew = 0;
  private lastConnectionAt: number | null = null;
  private perPortLast = new Map<string, number | null>();
  private perPortNew = new Map<string, number>();
  private tookOver = false;

  constructor(opts: KernelRelayOptions) {
    if (!opts?.listen || typeof opts.listen.address !== 'string' || isIP(opts.listen.address) === 0) {
      throw bad(`listen.address must be a literal IP address, got ${JSON.stringify(opts?.listen?.address)}`);
    }
    const ports = opts.listen.ports;
    if (!Array.isArray(ports) || ports.length === 0) throw bad('listen.ports must list at least one port');
    for (const p of ports) {
      if (!Number.isInteger(p) || p < 1 || p > 65535)
        throw bad(`kernel mode needs explicit ports 1-65535, got ${String(p)}`);
    }
    if (new Set(ports).size !== ports.length)
      throw bad('listen.ports lists a port twice; list each port once');
    const fam = isIP(opts.listen.address);
    this.upstream = checkUpstream(opts.upstream, opts.sourceAddress);
    if (isIP(this.upstream.address) !== fam) {
      throw bad(
        `kernel mode cannot translate between IP families: listen ${opts.listen.address}, upstream ${this.upstream.address}; use the userspace engine`,
      );
    }
    const id = opts.id ?? randomBytes(4).toString('hex');
    if (!/^[a-z0-9_]{1,24}$/.test(id)) throw bad(`id must match [a-z0-9_]{1,24}, got ${JSON.stringify(id)}`);
    if (opts.netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(opts.netns))
      throw bad(`netns must be a plain namespace name, got ${JSON.stringify(opts.netns)}`);
    const int = (name: string, v: number | undefined, def: number) => {
      if (v === undefined) return def;
      if (!Number.isInteger(v) || v < 1) throw bad(`${name} must be a positive integer, got ${String(v)}`);
      return v;
    };
    this.opts = {
      ...opts,
      masquerade: opts.masquerade ?? true,
      maxHoldMs: int('maxHoldMs', opts.maxHoldMs, 30_000),
      pollMs: int('pollMs', opts.pollMs, 1_000),
      nftPath: opts.nftPath ?? 'nft',
    };
    this.table = `ferry_${id}`;
    this.family = fam === 4 ? 'ip' : 'ip6';
    this.address = opts.listen.address;
    this.listenPorts = [...ports];
    this.protocols = opts.udp ? ['tcp', 'udp'] : ['tcp'];
  }

  get ports(): number[] {
    return [...this.listenPorts];
  }

  /** Whether new flows are held (as of start, adoption or the last hold/release). */
  get isHolding(): boolean {
    return this.holding;
  }

  /** Where new flows go (an adopted table's own DNAT target). */
  get currentUpstream(): Upstream {
    return { ...this.upstream };
  }

  /** True when `start()` took over an existing table (`adopt`) rather than creating one. */
  get adopted(): boolean {
    return this.tookOver;
  }

  /** Runs a command, inside the engine's namespace when set; resolves stdout. */
  private run(argv: string[], input?: string): Promise<string> {
    const [cmd, ...args] = this.opts.netns ? ['ip', 'netns', 'exec', this.opts.netns, ...argv] : argv;
    return new Promise((resolve, reject) => {
      const child = execFile(cmd!, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
        if (err)
          reject(
            new FerryError('RELAY_NFT', `${argv.join(' ')} failed: ${stderr.trim() || err.message}`, {
              cause: err,
            }),
          );
        else resolve(stdout);
      });
      if (input !== undefined) child.stdin?.end(input);
    });
  }

  private nftScript(script: string): Promise<string> {
    return this.run([this.opts.nftPath, '-f', '-'], script);
  }

  private fmt(address: string, port?: number): string {
    const a = this.family === 'ip6' ? `[${address}]` : address;
    return port === undefined ? address : `${a}:${port}`;
  }

  private natRules(chain: string): string {
    const f = this.family;
    const up = this.upstream;
    const lines = [`flush chain ${f} ${this.table} ${chain}`];
    for (const proto of this.protocols) {
      lines.push(
        `add rule ${f} ${this.table} ${chain} ${f} daddr ${this.address} ${proto} dport { ${this.listenPorts.join(', ')} } dnat to ${this.fmt(up.address, up.port)}`,
      );
    }
    return lines.join('\n');
  }

  private ruleset(): string {
    const f = this.family;
    const t = this.table;
    const counters: string[] = [];
    const count: string[] = [];
    for (const proto of this.protocols) {
      for (const p of this.listenPorts) {
        for (const k of ['up', 'down', 'new']) counters.push(`  counter ${k}_${proto}_${p} {}`);
        const m = `ct original ${f} daddr ${this.address} ct original protocol ${proto} ct original proto-dst ${p}`;
        count.push(`    ${m} ct direction original counter name up_${proto}_${p}`);
        count.push(`    ${m} ct direction reply counter name down_${proto}_${p}`);
        count.push(`    ${m} ct state new counter name new_${proto}_${p}`);
      }
    }
    // Masquerade picks no usable source on loopback, where replies come back locally anyway.
    const src =
      this.opts.sourceAddress !== undefined
        ? `snat to ${this.opts.sourceAddress}`
        : 'oifname != "lo" masquerade';
    const settype = f === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
    return [
      `table ${f} ${t} {`,
      `  set held { type ${settype} . inet_service; flags dynamic,timeout; timeout ${Math.ceil(this.opts.maxHoldMs / 1000) + 5}s; size 65536; }`,
      '  counter hold_drops {}',
      '  counter hold_refused {}',
      ...counters,
      '  chain hold {}',
      '  chain count_pre {',
      '    type filter hook prerouting priority -150; policy accept;',
      '    iifname "lo" return', // loopback traffic was already seen in count_out
      '    jump hold',
      ...count,
      '  }',
      '  chain count_out {',
      '    type filter hook output priority -150; policy accept;',
      '    jump hold',
      ...count,
      '  }',
      '  chain nat_pre { type nat hook prerouting priority dstnat; policy accept; }',
      '  chain nat_out { type nat hook output priority -100; policy accept; }',
      '  chain nat_post {',
      '    type nat hook postrouting priority srcnat; policy accept;',
      ...(this.opts.masquerade ? [`    ct status dnat ct original ${f} daddr ${this.address} ${src}`] : []),
      '  }',
      ...(this.opts.masquerade && this.opts.sourceAddress !== undefined
        ? [
            '  chain nat_in {',
            '    type nat hook input priority 100; policy accept;',
            `    ct status dnat ct original ${f} daddr ${this.address} snat to ${this.opts.sourceAddress}`,
            '  }',
          ]
        : []),
      '}',
      this.natRules('nat_pre'),
      this.natRules('nat_out'),
      '',
    ].join('\n');
  }

  async start(): Promise<void> {
    if (this.started)
      throw new FerryError('RELAY_STATE', 'kernel relay already started; create a new one to start again');
    this.started = true;
    if (this.opts.adopt && (await this.takeOver())) {
      this.startPolling();
      return;
    }
    // Replace a table left behind by a crashed run with the same id.
    await this.nftScript(
      `add table ${this.family} ${this.table}\ndelete table ${this.family} ${this.table}\n${this.ruleset()}`,
    );
    this.startPolling();
  }

  private startPolling(): void {
    this.poller = setInterval(() => void this.poll().catch(() => undefined), this.opts.pollMs);
    this.poller.unref();
  }

  /**
   * Adopts the existing table, if any: reads its upstream (the DNAT target of `nat_pre`), whether
   * it holds (a rule in `hold`) and its counters. Flows it counted before count as seen now, so a
   * quiet window restarts at adoption rather than ending early. False when there is no table.
   */
  private async takeOver(): Promise<boolean> {
    let text: string;
    try {
      text = await this.run([this.opts.nftPath, 'list', 'table', this.family, this.table]);
    } catch {
      return false;
    }
    const dnat = /\bdnat (?:ip6? )?to (\S+)/.exec(text)?.[1];
    if (dnat) {
      const m =
        /^\[([^\]]+)\](?::(\d+))?$/.exec(dnat) ??
        (this.family === 'ip' ? /^([^:]+)(?::(\d+))?$/.exec(dnat) : [dnat, dnat, undefined]);
      if (m?.[1]) this.upstream = { address: m[1], ...(m[2] ? { port: Number(m[2]) } : {}) };
    }
    // Rules hold braces of their own: the chain ends at the closing brace on a line by itself.
    const holdChain = /chain hold \{\n([\s\S]*?)\n\s*\}\n/.exec(text)?.[1] ?? '';
    this.holding = /\bdrop\b|\breject\b/.test(holdChain);
    if (this.holding) {
      this.holdStartedAt = Date.now(); // when it began is not recorded: from now, as the timer below
      this.holdTimer = setTimeout(() => {
        this.holdTimer = null;
        if (this.holding && !this.closed) void this.nftScript(this.holdRule('refuse')).catch(() => undefined);
      }, this.opts.maxHoldMs);
      this.holdTimer.unref();
    }
    await this.poll();
    if (this.lastNew > 0) {
      const now = Date.now();
      this.lastConnectionAt = now;
      for (const [key, n] of this.perPortNew) if (n > 0) this.perPortLast.set(key, now);
    }
    this.tookOver = true;
    return true;
  }

  async setUpstream(u: Upstream): Promise<void> {
    const next = checkUpstream(u, this.opts.sourceAddress);
    if (isIP(next.address) !== (this.family === 'ip' ? 4 : 6)) {
      throw bad(
        `kernel mode cannot translate between IP families: listen ${this.address}, upstream ${next.address}`,
      );
    }
    const prev = this.upstream;
    this.upstream = next;
    if (!this.started || this.closed) return;
    try {
      await this.nftScript(`${this.natRules('nat_pre')}\n${this.natRules('nat_out')}\n`);
    } catch (err) {
      this.upstream = prev;
      throw err;
    }
  }

  private holdRule(verdict: 'drop' | 'refuse'): string {
    const f = this.family;
    const m = `${f} daddr ${this.address} meta l4proto { ${this.protocols.join(', ')} } th dport { ${this.listenPorts.join(', ')} } ct state new`;
    const lines = [`flush chain ${f} ${this.table} hold`];
    if (verdict === 'drop') {
      lines.push(
        `add rule ${f} ${this.table} hold ${m} update @held { ${f} saddr . th sport } counter name hold_drops drop`,
      );
    } else {
      lines.push(
        `add rule ${f} ${this.table} hold ${m} meta l4proto tcp counter name hold_refused reject with tcp reset`,
      );
      lines.push(`add rule ${f} ${this.table} hold ${m} counter name hold_refused reject`);
    }
    return lines.join('\n') + '\n';
  }

  async hold(): Promise<void> {
    if (this.holding) return;
    this.dropsAtHold = (await this.counters().catch(() => null))?.counters.get('hold_drops')?.packets ?? 0;
    await this.nftScript(this.holdRule('drop'));
    this.holding = true;
    this.holdStartedAt = Date.now();
    this.holdTimer = setTimeout(() => {
      this.holdTimer = null;
      if (this.holding && !this.closed) void this.nftScript(this.holdRule('refuse')).catch(() => undefined);
    }, this.opts.maxHoldMs);
    this.holdTimer.unref();
  }

  async release(): Promise<void> {
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = null;
    if (!this.holding) return;
    const seen = await this.counters().catch(() => null);
    await this.nftScript(
      `flush chain ${this.family} ${this.table} hold\nflush set ${this.family} ${this.table} held\n`,
    );
    this.holding = false;
    // A client whose SYN was dropped connects only at its next retransmission, up to the hold's
    // length plus its first timeout after the release (see the file comment). Until then `held`
    // still counts it, so a drain that waits for quiet does not take the address away first.
    const drops = seen?.counters.get('hold_drops')?.packets;
    if (drops === undefined || drops > this.dropsAtHold) {
      const now = Date.now();
      this.heldAtRelease = Math.max(1, seen?.held ?? 0);
      this.retriesDueUntil =
        now + Math.min(now - this.holdStartedAt, this.opts.maxHoldMs) + SYN_FIRST_RETRY_MS;
    }
  }

  private async counters(): Promise<{ counters: Map<string, Counter>; held: number }> {
    const out = await this.run([this.opts.nftPath, '-j', 'list', 'table', this.family, this.table]);
    const counters = new Map<string, Counter>();
    let held = 0;
    const items = (JSON.parse(out) as { nftables: Array<Record<string, unknown>> }).nftables;
    for (const item of items) {
      const c = item.counter as { name: string; packets: number; bytes: number } | undefined;
      if (c) counters.set(c.name, { packets: c.packets, bytes: c.bytes });
      const s = item.set as { name: string; elem?: unknown[] } | undefined;
      if (s?.name === 'held') held = s.elem?.length ?? 0;
    }
    return { counters, held };
  }

  /** Updates `lastConnectionAt` (overall and per port) when new-flow counters moved. */
  private async poll(): Promise<Map<string, Counter> | null> {
    if (!this.started || this.closed) return null;
    const { counters } = await this.counters();
    const now = Date.now();
    let total = 0;
    for (const proto of this.protocols) {
      for (const p of this.listenPorts) {
        const key = `${proto}_${p}`;
        const n = counters.get(`new_${key}`)?.packets ?? 0;
        total += n;
        if (n !== (this.perPortNew.get(key) ?? 0)) this.perPortLast.set(key, now);
        this.perPortNew.set(key, n);
      }
    }
    if (total !== this.lastNew) this.lastConnectionAt = now;
    this.lastNew = total;
    return counters;
  }

  /** Live flows to the listen address from the namespace's conntrack table, by protocol and port. */
  private async conntrack(): Promise<Map<string, number>> {
    const text = this.opts.netns
      ? await this.run(['cat', '/proc/net/nf_conntrack'])
      : await readFile('/proc/net/nf_conntrack', 'utf8').catch(() => '');
    const live = new Map<string, number>();
    const want = this.family === 'ip' ? 'ipv4' : 'ipv6';
    const dst = this.address;
    for (const line of text.split('\n')) {
      const f = line.split(/\s+/);
      if (f[0] !== want) continue;
      const proto = f[2];
      if (proto !== 'tcp' && proto !== 'udp') continue;
      if (proto === 'tcp' && !LIVE_TCP.has(f[5] ?? '')) continue;
      const d = line.match(/ dst=(\S+)/)?.[1];
      const dport = Number(line.match(/ dport=(\d+)/)?.[1]);
      if (d === undefined || !sameAddress(d, dst) || !this.listenPorts.includes(dport)) continue;
      const key = `${proto}_${dport}`;
      live.set(key, (live.get(key) ?? 0) + 1);
    }
    return live;
  }

  async stats(): Promise<RelayStats> {
    const counters = (await this.poll()) ?? new Map<string, Counter>();
    const [{ counters: c2, held }, live] = this.closed
      ? [{ counters, held: 0 }, new Map<string, number>()]
      : await Promise.all([this.counters(), this.conntrack()]);
    const get = (name: string) => c2.get(name) ?? { packets: 0, bytes: 0 };
    const listeners: ListenerStats[] = [];
    for (const proto of this.protocols) {
      for (const p of this.listenPorts) {
        const key = `${proto}_${p}`;
        listeners.push({
          address: this.address,
          port: p,
          protocol: proto,
          activeConnections: live.get(key) ?? 0,
          totalConnections: get(`new_${key}`).packets,
          bytesToUpstream: get(`up_${key}`).bytes,
          bytesToClient: get(`down_${key}`).bytes,
          lastConnectionAt: this.perPortLast.get(key) ?? null,
        });
      }
    }
    const sum = (
      k: 'activeConnections' | 'totalConnections' | 'bytesToUpstream' | 'bytesToClient',
      proto?: string,
    ) => listeners.filter((l) => proto === undefined || l.protocol === proto).reduce((n, l) => n + l[k], 0);
    return {
      activeConnections: sum('activeConnections', 'tcp'),
      totalConnections: sum('totalConnections'),
      bytesToUpstream: sum('bytesToUpstream'),
      bytesToClient: sum('bytesToClient'),
      lastConnectionAt: this.lastConnectionAt,
      held: held > 0 || Date.now() >= this.retriesDueUntil ? held : this.heldAtRelease,
      upstreamFailures: 0, // the kernel does not report them; clients see the upstream's own refusal
      rejected: get('hold_refused').packets,
      holdExpired: get('hold_refused').packets,
      udpSessions: sum('activeConnections', 'udp'),
      listeners,
    };
  }

  /** Polls conntrack until no live TCP flow or UDP flow to the listen address remains. */
  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.closed) return true;
      const live = await this.conntrack();
      if ([...live.values()].every((n) => n === 0)) return true;
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, Math.min(100, Math.max(1, deadline - Date.now()))));
    }
  }

  /** Stops polling and leaves the table in the kernel, forwarding, for a later engine to adopt. */
  detach(): void {
    this.closed = true;
    if (this.poller) clearInterval(this.poller);
    if (this.holdTimer) clearTimeout(this.holdTimer);
  }

  /** Deletes the table (every rule, set and counter Ferry added). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.poller) clearInterval(this.poller);
    if (this.holdTimer) clearTimeout(this.holdTimer);
    if (!this.started) return;
    await this.nftScript(
      `add table ${this.family} ${this.table}\ndelete table ${this.family} ${this.table}\n`,
    );
  }
}

function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  if (!a.includes(':') || !b.includes(':')) return false;
  // conntrack prints IPv6 in full or compressed form depending on the kernel; compare expanded.
  return expand(a) === expand(b);
}

function expand(a: string): string {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups =
    tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => parseInt(g, 16).toString(16)).join(':');
}
