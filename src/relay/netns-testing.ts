/**
 * Test helpers for the kernel engine: a client, relay and upstream network namespace joined by
 * veth pairs, with RFC 1918 / documentation-style addresses that exist only inside them, and
 * node helper processes run inside the namespaces. Not part of the public API.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';

/** Why kernel tests cannot run here, or null when they can. */
export function kernelSkipReason(): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  const nft = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].find((p) => existsSync(p));
  if (!nft) return 'nft is not installed (apt-get install nftables)';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  } catch {
    return 'ip netns is unavailable';
  }
  return null;
}

export const ADDR = {
  client: '10.99.1.2',
  relayClientSide: '10.99.1.1',
  /** The temporary IP, on the relay's client-side interface. */
  tempIp: '10.99.1.100',
  relayUpstreamSide: '10.99.2.1',
  upstreamA: '10.99.2.2',
  upstreamB: '10.99.2.3',
};

export interface Topology {
  client: string;
  relay: string;
  upstream: string;
  /** Deletes the namespaces (and with them their veths, addresses and nft tables). */
  destroy(): void;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Creates the three namespaces; on any failure removes what was made and rethrows. */
export function createTopology(): Topology {
  const id = randomBytes(3).toString('hex');
  const names = { client: `ferry-c-${id}`, relay: `ferry-r-${id}`, upstream: `ferry-u-${id}` };
  const made: string[] = [];
  const destroy = () => {
    for (const ns of made.splice(0).reverse()) {
      try {
        ip('netns', 'del', ns);
      } catch {
        // already gone
      }
    }
  };
  try {
    for (const ns of Object.values(names)) {
      ip('netns', 'add', ns);
      made.push(ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    ip(
      'link',
      'add',
      `vc${id}`,
      'netns',
      names.client,
      'type',
      'veth',
      'peer',
      'name',
      `vrc${id}`,
      'netns',
      names.relay,
    );
    ip(
      'link',
      'add',
      `vu${id}`,
      'netns',
      names.upstream,
      'type',
      'veth',
      'peer',
      'name',
      `vru${id}`,
      'netns',
      names.relay,
    );
    ip('-n', names.client, 'addr', 'add', `${ADDR.client}/24`, 'dev', `vc${id}`);
    ip('-n', names.client, 'link', 'set', `vc${id}`, 'up');
    ip('-n', names.client, 'route', 'add', 'default', 'via', ADDR.relayClientSide);
    ip('-n', names.relay, 'addr', 'add', `${ADDR.relayClientSide}/24`, 'dev', `vrc${id}`);
    ip('-n', names.relay, 'addr', 'add', `${ADDR.tempIp}/32`, 'dev', `vrc${id}`);
    ip('-n', names.relay, 'link', 'set', `vrc${id}`, 'up');
    ip('-n', names.relay, 'addr', 'add', `${ADDR.relayUpstreamSide}/24`, 'dev', `vru${id}`);
    ip('-n', names.relay, 'link', 'set', `vru${id}`, 'up');
    ip('-n', names.upstream, 'addr', 'add', `${ADDR.upstreamA}/24`, 'dev', `vu${id}`);
    ip('-n', names.upstream, 'addr', 'add', `${ADDR.upstreamB}/24`, 'dev', `vu${id}`);
    ip('-n', names.upstream, 'link', 'set', `vu${id}`, 'up');
    ip('-n', names.upstream, 'route', 'add', 'default', 'via', ADDR.relayUpstreamSide);
    execFileSync('ip', ['netns', 'exec', names.relay, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  } catch (err) {
    destroy();
    throw err;
  }
  return { ...names, destroy };
}

/** A line-oriented node helper running inside a namespace. */
export interface NsProcess {
  child: ChildProcess;
  send(line: string): void;
  /** Resolves the next output line starting with `prefix` (rejects after `timeoutMs`). */
  next(prefix: string, timeoutMs?: number): Promise<string>;
  kill(): void;
}

export function runInNs(ns: string, source: string, args: string[] = []): NsProcess {
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', source, ...args],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  createInterface({ input: child.stdout! }).on('line', (l) => {
    lines.push(l);
    for (const w of [...waiters]) w();
  });
  return {
    child,
    send: (line) => child.stdin!.write(`${line}\n`),
    next: (prefix, timeoutMs = 5000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const i = lines.findIndex((l) => l.startsWith(prefix));
          if (i < 0) return;
          waiters.delete(check);
          clearTimeout(t);
          resolve(lines.splice(i, 1)[0]!);
        };
        const t = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no "${prefix}" line within ${timeoutMs} ms; have ${JSON.stringify(lines)}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
    kill: () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

/** Upstream helper: TCP servers greeting `NAME peer=ADDR` then echoing, and UDP echo, on each address:port given. */
export const upstreamSource = `
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
const specs = process.argv.slice(1);
let pending = 0;
for (const spec of specs) {
  const [name, addr, port] = spec.split(':');
  pending += 2;
  createServer((s) => { s.on('error', () => {}); s.write(name + ' peer=' + s.remoteAddress + '\\n'); s.pipe(s); })
    .listen(Number(port), addr, () => { if (--pending === 0) console.log('ready'); });
  const u = createSocket('udp4');
  u.on('message', (m, r) => u.send(name + ':' + m, r.port, r.address));
  u.bind(Number(port), addr, () => { if (--pending === 0) console.log('ready'); });
}
`;

/** Client helper: commands `open ID HOST PORT`, `send ID TEXT`, `close ID`, `udp HOST PORT TEXT`. */
export const clientSource = `
import { connect } from 'node:net';
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';
const conns = new Map();
createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, id, a, b] = line.split(' ');
  if (cmd === 'open') {
    const t0 = Date.now();
    const s = connect({ host: a, port: Number(b) });
    conns.set(id, s);
    let buf = '';
    let greeted = false;
    s.setEncoding('utf8');
    s.on('data', (d) => {
      buf += d;
      if (!greeted && buf.includes('\\n')) { greeted = true; const g = buf.slice(0, buf.indexOf('\\n')); buf = buf.slice(g.length + 1); console.log('open ' + id + ' ' + (Date.now() - t0) + ' ' + g); }
      else if (greeted && buf.length) { console.log('echo ' + id + ' ' + buf); buf = ''; }
    });
    s.on('error', (e) => console.log('error ' + id + ' ' + e.code));
  } else if (cmd === 'send') {
    conns.get(id)?.write(a);
  } else if (cmd === 'close') {
    const s = conns.get(id); conns.delete(id);
    if (s) { s.once('close', () => console.log('closed ' + id)); s.end(); } else console.log('closed ' + id);
  } else if (cmd === 'udp') {
    const u = createSocket('udp4');
    const t = setTimeout(() => { console.log('udp timeout'); u.close(); }, 3000);
    u.on('message', (m) => { clearTimeout(t); console.log('udp ' + m); u.close(); });
    u.send(b, Number(a), id);
  }
});
console.log('ready');
`;
