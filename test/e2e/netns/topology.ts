/**
 * A small hosting network in Linux network namespaces for end-to-end tests: one namespace per
 * host (client, dns, origin, target, and on request a relay host and a database host), each with an `eth0` veth
 * plugged into a bridge that lives in a namespace of its own (`sw`), so nothing is added to the
 * host's own network stack, its firewall or its routes. Addresses come from 10.77.0.0/24 (and,
 * on request, 2001:db8::/64 beside them) and exist only inside these namespaces.
 *
 * `destroy()` kills every process still running in the namespaces (found with `ip netns pids`,
 * children of children included), then deletes the namespaces, which takes their veths, the
 * bridge, their addresses and any nft tables with them.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';

export const NET = {
  prefix: 24,
  client: '10.77.0.5',
  dns: '10.77.0.53',
  origin: '10.77.0.10',
  target: '10.77.0.20',
  relay: '10.77.0.30',
  db: '10.77.0.40',
  tempIp: '10.77.0.100',
} as const;

/** The IPv6 addresses of the same hosts (documentation prefix), with `ipv6: true`. */
export const NET6 = {
  prefix: 64,
  client: '2001:db8::5',
  dns: '2001:db8::53',
  origin: '2001:db8::10',
  target: '2001:db8::20',
  relay: '2001:db8::30',
  db: '2001:db8::40',
  tempIp: '2001:db8::100',
} as const;

export type Host = 'client' | 'dns' | 'origin' | 'target' | 'relay' | 'db';

export interface TopologyOptions {
  /** A fifth host, `relay`, on the same bridge. */
  relay?: boolean;
  /** A host `db` on the same bridge (a database both servers reach). */
  db?: boolean;
  /** IPv6 addresses (NET6) on every host's eth0 beside the IPv4 ones. */
  ipv6?: boolean;
}

/** Why the namespace e2e test cannot run here, or null when it can. */
export function netnsSkipReason(binaries: Record<string, string[]>): string | null {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'not root: creating network namespaces needs root (CI runs as root)';
  for (const [what, names] of Object.entries(binaries)) {
    if (
      !names.some((n) =>
        ['/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/sbin', '/usr/local/bin'].some((d) =>
          existsSync(`${d}/${n}`),
        ),
      )
    ) {
      return `${what} is not installed (apt-get install ${what})`;
    }
  }
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  } catch {
    return 'ip netns is not available';
  }
  return null;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A process started in a namespace, with its output kept as lines. */
export interface NsChild {
  name: string;
  child: ChildProcess;
  lines: string[];
  /** Resolves with the first line (already seen or coming) that `match` accepts. */
  waitLine(match: (line: string) => boolean, timeoutMs: number): Promise<string>;
  exited: Promise<number | null>;
}

/** Start `argv`, keeping its stdout as lines (stderr appended to `logFile`); shared by the namespace helpers. */
export function spawnChild(
  name: string,
  argv: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; logFile?: string; stdin?: boolean } = {},
): NsChild {
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  const log = opts.logFile ? createWriteStream(opts.logFile, { flags: 'a' }) : undefined;
  createInterface({ input: child.stdout! }).on('line', (l) => {
    lines.push(l);
    for (const w of [...waiters]) w();
  });
  createInterface({ input: child.stderr! }).on('line', (l) => log?.write(`${l}\n`));
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      log?.end();
      for (const w of [...waiters]) w();
      resolve(code);
    }),
  );
  const nsChild: NsChild = {
    name,
    child,
    lines,
    exited,
    waitLine: (match, timeoutMs) =>
      new Promise((resolve, reject) => {
        let seen = 0;
        const check = () => {
          for (; seen < lines.length; seen++) {
            if (match(lines[seen]!)) {
              done();
              resolve(lines[seen]!);
              return;
            }
          }
          if (child.exitCode !== null || child.signalCode !== null) {
            done();
            reject(
              new Error(
                `${name} exited (${child.exitCode ?? child.signalCode}) before the expected line; last lines: ${lines.slice(-5).join(' | ')}`,
              ),
            );
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(
              `${name}: no expected line within ${timeoutMs} ms; last lines: ${lines.slice(-5).join(' | ')}`,
            ),
          );
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      }),
  };
  return nsChild;
}

export class Topology {
  readonly id = randomBytes(3).toString('hex');
  readonly ns: Record<Host | 'sw', string>;
  private readonly children: NsChild[] = [];
  private created: string[] = [];
  /** The hosts this topology has (the relay and the database host only when asked for). */
  readonly hosts: Host[];

  constructor(private readonly opts: TopologyOptions = {}) {
    this.hosts = [
      'client',
      'dns',
      'origin',
      'target',
      ...(opts.relay ? (['relay'] as const) : []),
      ...(opts.db ? (['db'] as const) : []),
    ];
    this.ns = {
      sw: `ferry-sw-${this.id}`,
      client: `ferry-c-${this.id}`,
      dns: `ferry-d-${this.id}`,
      origin: `ferry-o-${this.id}`,
      target: `ferry-t-${this.id}`,
      relay: `ferry-r-${this.id}`,
      db: `ferry-b-${this.id}`,
    };
  }

  /** Create the namespaces, the bridge and the links; on failure remove what was made. */
  create(): void {
    try {
      for (const name of [this.ns.sw, ...this.hosts.map((h) => this.ns[h])]) {
        ip('netns', 'add', name);
        this.created.push(name);
        ip('-n', name, 'link', 'set', 'lo', 'up');
      }
      // No multicast snooping: IPv6 neighbour discovery of an address added later (a temporary
      // IP) reaches every port at once.
      ip('-n', this.ns.sw, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0');
      ip('-n', this.ns.sw, 'link', 'set', 'br0', 'up');
      for (const h of this.hosts) {
        const port = `p-${h}`;
        ip(
          'link',
          'add',
          `fe${this.id}${h === 'db' ? 'b' : h[0]}`,
          'netns',
          this.ns[h],
          'type',
          'veth',
          'peer',
          'name',
          port,
          'netns',
          this.ns.sw,
        );
        ip('-n', this.ns[h], 'link', 'set', `fe${this.id}${h === 'db' ? 'b' : h[0]}`, 'name', 'eth0');
        ip('-n', this.ns[h], 'addr', 'add', `${NET[h]}/${NET.prefix}`, 'dev', 'eth0');
        // nodad: usable at once, not tentative for a second (addresses the agents add keep DAD).
        if (this.opts.ipv6)
          ip('-n', this.ns[h], 'addr', 'add', `${NET6[h]}/${NET6.prefix}`, 'dev', 'eth0', 'nodad');
        ip('-n', this.ns[h], 'link', 'set', 'eth0', 'up');
        ip('-n', this.ns.sw, 'link', 'set', port, 'master', 'br0');
        ip('-n', this.ns.sw, 'link', 'set', port, 'up');
      }
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  /** `ip -n <host> -j addr show dev eth0`: the addresses on the host's interface. */
  addresses(host: Host): string[] {
    const parsed = JSON.parse(ip('-n', this.ns[host], '-j', 'addr', 'show', 'dev', 'eth0')) as Array<{
      addr_info?: Array<{ local: string }>;
    }>;
    return parsed.flatMap((l) => (l.addr_info ?? []).map((a) => a.local));
  }

  /** Run `argv` inside `host`'s namespace; stdout and stderr are kept as lines (and stderr logged to `logFile`). */
  spawn(
    host: Host,
    name: string,
    argv: string[],
    opts: { cwd?: string; env?: NodeJS.ProcessEnv; logFile?: string; stdin?: boolean } = {},
  ): NsChild {
    const c = spawnChild(name, ['ip', 'netns', 'exec', this.ns[host], ...argv], opts);
    this.children.push(c);
    return c;
  }

  /** SIGTERM a child and wait for it (SIGKILL after `graceMs`). */
  async stop(c: NsChild, graceMs = 5000): Promise<void> {
    if (c.child.exitCode !== null || c.child.signalCode !== null) return;
    c.child.kill('SIGTERM');
    const timer = setTimeout(() => c.child.kill('SIGKILL'), graceMs);
    await c.exited;
    clearTimeout(timer);
  }

  /** Every process in our namespaces, by pid. */
  pids(): number[] {
    const out: number[] = [];
    for (const name of this.created) {
      try {
        out.push(...ip('netns', 'pids', name).split('\n').filter(Boolean).map(Number));
      } catch {
        // namespace already gone
      }
    }
    return out;
  }

  /** Kill what runs in the namespaces and delete them. Safe to call twice. */
  destroy(): void {
    for (const c of this.children)
      if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
    for (let round = 0; round < 20; round++) {
      const pids = this.pids();
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      execFileSync('sleep', ['0.1']);
    }
    for (const name of this.created.splice(0).reverse()) {
      try {
        ip('netns', 'del', name);
      } catch {
        // gone already
      }
    }
  }
}
