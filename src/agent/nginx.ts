/**
 * nginx as a hosting server's front: one generated server block per site in a folder that
 * nginx includes inside its `http {}` block, checked with `nginx -t` before every reload.
 *
 * A site's block either forwards to the built-in site app behind nginx (the app keeps the
 * order log and the serve/readonly/hold modes) or, after the cut-over, reverse-proxies to the
 * target. Each block answers `/.well-known/ferry-vhost` with its own hash, which is how a reload
 * is known to have taken effect (nginx's reload signal returns before the new workers run).
 *
 * Per-site counters come from nginx itself: every block logs one line per request to the
 * agent over syslog (UDP, loopback), so the quiet windows see the client addresses at the
 * shared IP, not the app's view behind nginx.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { request } from 'node:http';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FerryError } from '../common/errors.js';
import { sleep } from '../common/time.js';

const run = promisify(execFile);

export interface NginxOptions {
  /** Folder nginx includes inside `http {}` (`include <confDir>/*.conf;`). */
  confDir: string;
  /** The nginx command and its fixed arguments, e.g. `['nginx', '-c', '/etc/nginx/nginx.conf']`. Default `['nginx']`. */
  command?: string[];
  /** Addresses and port the sites' server blocks listen on (the server's shared IPs). */
  listen: { addresses: string[]; port: number };
  /** Where the built-in site app listens behind nginx. */
  app: { address: string; port: number };
  /** Loopback UDP port nginx sends per-request log lines to (0: any free port). Default 0. */
  statsPort?: number;
  /** How long to wait for a reload to show. Default 10 000 ms. */
  reloadTimeoutMs?: number;
}

/** What a server block sends requests to. */
export type VhostBackend = { app: true } | { proxy: { address: string; port: number } };

/** Counters nginx reported for one site. */
export interface NginxSiteCounters {
  requests: number;
  writes: number;
  lastRequestAt: number | null;
  bySource: Map<string, { requests: number; lastAt: number }>;
}

const LOG_FORMAT = 'ferry_stats';
const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const MAX_SOURCES = 10_000;
export const VHOST_PROBE_PATH = '/.well-known/ferry-vhost';

/** Server blocks for sites, nginx reloads and nginx's per-site request counters. */
export class NginxFrontend {
  private readonly command: string[];
  private readonly reloadTimeoutMs: number;
  private stats: UdpSocket | undefined;
  private statsPortBound = 0;
  private readonly counters = new Map<string, NginxSiteCounters>();
  /** Serializes config changes: one `nginx -t` + reload at a time. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: NginxOptions) {
    this.command = opts.command?.length ? opts.command : ['nginx'];
    this.reloadTimeoutMs = opts.reloadTimeoutMs ?? 10_000;
    if (opts.listen.addresses.length === 0)
      throw new FerryError('NGINX_OPTIONS', 'nginx needs at least one shared IP to listen on');
    for (const a of [...opts.listen.addresses, opts.app.address]) {
      if (!isIP(a)) throw new FerryError('NGINX_OPTIONS', `"${a}" is not an IP address literal`);
    }
  }

  /** Bind the stats socket and write the shared log format; call before adding sites. */
  async start(): Promise<void> {
    await mkdir(this.opts.confDir, { recursive: true });
    const sock = createSocket('udp4');
    sock.on('message', (msg) => this.onLogLine(msg.toString('utf8')));
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(this.opts.statsPort ?? 0, '127.0.0.1', () => {
        sock.off('error', reject);
        resolve();
      });
    });
    this.stats = sock;
    this.statsPortBound = sock.address().port;
    const format =
      `# Written by the ferry agent: the per-request line its site counters read.\n` +
      `log_format ${LOG_FORMAT} '$server_name $remote_addr $request_method $status';\n`;
    await writeAtomic(join(this.opts.confDir, '00-ferry-log-format.conf'), format);
  }

  async stop(): Promise<void> {
    await this.chain.catch(() => undefined);
    const s = this.stats;
    this.stats = undefined;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /** The loopback UDP port the sites' access logs go to. */
  get statsPort(): number {
    return this.statsPortBound;
  }

  vhostFile(domain: string): string {
    return join(this.opts.confDir, `site-${domain}.conf`);
  }

  /** The server block for `domain` sending requests to `backend`. */
  render(domain: string, backend: VhostBackend): string {
    const upstream = 'app' in backend ? this.opts.app : backend.proxy;
    const hostPort =
      isIP(upstream.address) === 6
        ? `[${upstream.address}]:${upstream.port}`
        : `${upstream.address}:${upstream.port}`;
    const body = [
      `server {`,
      ...this.opts.listen.addresses.map(
        (a) => `    listen ${isIP(a) === 6 ? `[${a}]` : a}:${this.opts.listen.port};`,
      ),
      `    server_name ${domain};`,
      `    access_log syslog:server=127.0.0.1:${this.statsPortBound},tag=ferry,nohostname ${LOG_FORMAT};`,
      `    location / {`,
      `        proxy_pass http://${hostPort};`,
      `        proxy_http_version 1.1;`,
      `        proxy_set_header Host $host;`,
      `        proxy_set_header Connection "";`,
      `        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`,
      `        proxy_read_timeout 120s;`,
      `        proxy_buffering off;`,
      `    }`,
    ];
    const hash = createHash('sha256').update(body.join('\n')).digest('hex').slice(0, 16);
    return [
      `# Written by the ferry agent for ${domain} (${'app' in backend ? 'served by the site app' : 'proxied to the new server'}); edits are overwritten.`,
      ...body,
      `    location = ${VHOST_PROBE_PATH} {`,
      `        access_log off;`,
      `        return 200 "${hash}";`,
      `    }`,
      `}`,
      ``,
    ].join('\n');
  }

  /** Make `domain`'s server block send requests to `backend`; no-op when it already does. */
  setVhost(domain: string, backend: VhostBackend): Promise<void> {
    return this.serialize(async () => {
      const file = this.vhostFile(domain);
      const text = this.render(domain, backend);
      const before = await readFile(file, 'utf8').catch(() => undefined);
      if (before === text) return;
      await writeAtomic(file, text);
      try {
        await this.check();
      } catch (err) {
        if (before === undefined) await rm(file, { force: true });
        else await writeAtomic(file, before);
        throw err;
      }
      await this.reload();
      await this.waitServing(domain, hashOf(text));
    });
  }

  /**
   * Remove `domain`'s server block; no-op when it has none. With `reload: false` the file goes and
   * `nginx -t` checks the rest, but nginx keeps the block until its next reload: a reload closes
   * every idle keep-alive connection of every site, and a client that sends on one at that
   * instant sees its request fail, so the agent does not reload only to forget a site.
   */
  removeVhost(domain: string, opts: { reload?: boolean } = {}): Promise<void> {
    return this.serialize(async () => {
      const file = this.vhostFile(domain);
      const before = await readFile(file, 'utf8').catch(() => undefined);
      if (before === undefined) return;
      await rm(file, { force: true });
      try {
        await this.check();
      } catch (err) {
        await writeAtomic(file, before);
        throw err;
      }
      if (opts.reload !== false) {
        await this.reload();
        await this.waitGone(domain, hashOf(before));
      }
      this.counters.delete(domain);
    });
  }

  async hasVhost(domain: string): Promise<boolean> {
    return (await readFile(this.vhostFile(domain), 'utf8').catch(() => undefined)) !== undefined;
  }

  /** Counters nginx reported for `domain` since the agent started. */
  siteCounters(domain: string): NginxSiteCounters {
    return this.counters.get(domain) ?? { requests: 0, writes: 0, lastRequestAt: null, bySource: new Map() };
  }

  /** `nginx -t`: throws NGINX_CONFIG_INVALID with nginx's own words. */
  async check(): Promise<void> {
    await this.nginx(['-t'], 'NGINX_CONFIG_INVALID');
  }

  async reload(): Promise<void> {
    await this.nginx(['-s', 'reload'], 'NGINX_RELOAD_FAILED');
  }

  private nginx(args: string[], code: 'NGINX_CONFIG_INVALID' | 'NGINX_RELOAD_FAILED'): Promise<void> {
    return runNginx(this.command, args, code);
  }

  /** Wait until nginx answers `domain`'s probe path with `hash`: the new block is live. */
  private waitServing(domain: string, hash: string): Promise<void> {
    return this.waitProbe(domain, (answer) => answer === hash, 'serve the new');
  }

  /** Wait until nginx no longer answers `domain`'s probe path with the removed block's `hash`. */
  private waitGone(domain: string, hash: string): Promise<void> {
    return this.waitProbe(domain, (answer) => answer !== hash, 'drop the');
  }

  private async waitProbe(domain: string, done: (answer: string) => boolean, what: string): Promise<void> {
    const deadline = Date.now() + this.reloadTimeoutMs;
    const address = this.opts.listen.addresses[0]!;
    let last = '';
    while (Date.now() < deadline) {
      last = await getText(address, this.opts.listen.port, domain, VHOST_PROBE_PATH).catch(
        (err: Error) => `error: ${err.message}`,
      );
      if (done(last)) return;
      await sleep(50);
    }
    throw new FerryError(
      'NGINX_RELOAD_TIMEOUT',
      `nginx did not ${what} server block of ${domain} within ${this.reloadTimeoutMs} ms (last answer: ${last.slice(0, 80)})`,
    );
  }

  private onLogLine(line: string): void {
    // "<190>Nov 25 11:46:17 ferry: shop.example 192.0.2.7 POST 201"
    const m = /ferry: (\S+) (\S+) (\S+) (\d+)\s*$/.exec(line);
    if (!m) return;
    const [, domain, source, method] = m as unknown as [string, string, string, string];
    const now = Date.now();
    let c = this.counters.get(domain);
    if (!c) {
      c = { requests: 0, writes: 0, lastRequestAt: null, bySource: new Map() };
      this.counters.set(domain, c);
    }
    c.requests += 1;
    if (!READ_METHODS.has(method)) c.writes += 1;
    c.lastRequestAt = now;
    const prior = c.bySource.get(source);
    c.bySource.delete(source);
    c.bySource.set(source, { requests: (prior?.requests ?? 0) + 1, lastAt: now });
    if (c.bySource.size > MAX_SOURCES) c.bySource.delete(c.bySource.keys().next().value as string);
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }
}

function hashOf(text: string): string {
  return /return 200 "([0-9a-f]{16})"/.exec(text)![1]!;
}

async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, text, { mode: 0o644 });
  await rename(tmp, file);
}

function getText(address: string, port: number, host: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: address, port, path, headers: { host }, agent: false, timeout: 2000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve(res.statusCode === 200 ? body : `status ${res.statusCode}`));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Run nginx (`command` and its fixed arguments, then `args`); a failure throws `code` with nginx's
 * own words (the lines that say what is wrong, not its "syntax is ok" or "test failed").
 */
export async function runNginx(
  command: string[],
  args: string[],
  code: 'NGINX_CONFIG_INVALID' | 'NGINX_RELOAD_FAILED',
): Promise<void> {
  const [bin, ...fixed] = command;
  try {
    await run(bin!, [...fixed, ...args], { timeout: 30_000 });
  } catch (err) {
    const said = ((err as { stderr?: string }).stderr ?? '')
      .split('\n')
      .filter((l) => l.trim() && !/syntax is ok|test failed/.test(l))
      .join(' / ');
    throw new FerryError(
      code,
      `${command.join(' ')} ${args.join(' ')} failed: ${said || (err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}
