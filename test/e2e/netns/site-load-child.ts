/**
 * Load on real sites (WordPress, the notes app, a static site), run inside the client namespace
 * through `ip netns exec`. Each simulated user belongs to one site and one scheme (HTTP or HTTPS
 * with SNI, the test CA trusted), reuses its connection or opens a new one per request, and
 * resolves through the resolver again when its answer expires: after the TTL, or for a stale user
 * `staleOverstayMs` later, as clients behind stale caches keep using the origin's addresses after
 * the switch (the drain waits for them to go quiet; no server serves a site forever). Loops are
 * bounded: a user stops after `maxRequestsPerClient` requests, at `durationMs`, or at "stop" on
 * stdin, whichever comes first.
 *
 * What a user does: WordPress: the front page, the first post, a comment posted through
 * wp-comments-post.php (acknowledged = a 302 to the new comment), a file through upload.php
 * (acknowledged = 200 with the stored file); notes: its page and a note (acknowledged = 200);
 * static: its two pages. Every request carries `r=<id>` in its query string, so a server's logs
 * name the request. A failure is a connection error, a timeout or a 5xx.
 *
 * Output, JSON lines on stdout: {"type":"ready"}, then after the end: one {"type":"result"} per
 * request and {"type":"summary"} last.
 * Argument: one JSON object, see `SiteLoadArgs`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { createInterface } from 'node:readline';
import { dnsQuery } from '../../../src/dns/index.js';

/** What the load does (the parent builds it: sites.ts `startSiteLoad`). */
export interface SiteLoadArgs {
  sites: Array<{ domain: string; kind: 'wordpress' | 'notes' | 'static' }>;
  /** Fixed addresses by domain (no DNS), or a resolver to ask (A records). */
  addresses?: Record<string, string>;
  resolver?: { address: string; port: number };
  /** Users per site and scheme. */
  clientsPerSite: number;
  /** Share of users that keep an answer past its TTL, and for how long. */
  staleShare: number;
  staleOverstayMs: number;
  /** Share of users that reuse connections. */
  keepAliveShare: number;
  /** Pause between one user's requests. */
  intervalMs: number;
  durationMs: number;
  maxRequestsPerClient: number;
  requestTimeoutMs: number;
  /** Shares of WordPress requests that post a comment / upload a file; the notes app's share of writes. */
  commentShare: number;
  uploadShare: number;
  noteShare: number;
  /** PEM of the CA that issued the sites' certificates. */
  caPem: string;
  /** The first post's id (comments go there). Default 1. */
  postId?: number;
}

export interface SiteRequestResult {
  type: 'result';
  id: string;
  at: number;
  domain: string;
  scheme: 'http' | 'https';
  method: string;
  path: string;
  address: string;
  keepAlive: boolean;
  stale: boolean;
  status: number | null;
  ok: boolean;
  error?: string;
  servedBy: string | null;
  latencyMs: number;
}

export interface SiteLoadSummary {
  type: 'summary';
  total: number;
  failed: number;
  /** Responses that are neither a failure nor what the request expects (4xx, a comment not acknowledged). */
  unexpected: number;
  /** Requests sent again on a new connection after a kept-alive one closed before answering. */
  resent: number;
  byDomain: Record<string, { total: number; failed: number }>;
  comments: Array<{ domain: string; key: string }>;
  uploads: Array<{ domain: string; key: string; sha256: string }>;
  notes: Array<{ domain: string; key: string }>;
}

const args = JSON.parse(process.argv[2] ?? '{}') as SiteLoadArgs;
const out = (v: unknown) => process.stdout.write(JSON.stringify(v) + '\n');
const runId = randomBytes(3).toString('hex');
let seq = 0;
let stopping = false;

const results: SiteRequestResult[] = [];
const summary: SiteLoadSummary = {
  type: 'summary',
  total: 0,
  failed: 0,
  unexpected: 0,
  resent: 0,
  byDomain: {},
  comments: [],
  uploads: [],
  notes: [],
};

async function resolveA(name: string): Promise<{ address: string; ttl: number }> {
  const fixed = args.addresses?.[name];
  if (fixed) return { address: fixed, ttl: 3600 };
  if (!args.resolver) throw new Error(`no address for ${name}`);
  const res = await dnsQuery({ server: args.resolver, name, type: 'A', rd: true, timeoutMs: 1500 });
  const a = res.answers.find((r) => r.typeName === 'A');
  if (!a) throw new Error(`${name}: no A record (${res.rcodeName})`);
  return { address: a.rdata, ttl: a.ttl };
}

interface Sent {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Buffer;
}

interface Got {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

class User {
  private answer: { address: string; until: number } | null = null;
  private readonly agent: HttpAgent | HttpsAgent | false;
  private n = 0;

  constructor(
    readonly domain: string,
    readonly kind: SiteLoadArgs['sites'][number]['kind'],
    readonly scheme: 'http' | 'https',
    readonly stale: boolean,
    readonly keepAlive: boolean,
  ) {
    const opts = { keepAlive: true, maxSockets: 1, timeout: 1000 };
    this.agent = keepAlive
      ? scheme === 'https'
        ? new HttpsAgent({ ...opts, ca: args.caPem })
        : new HttpAgent(opts)
      : false;
  }

  private async address(): Promise<string> {
    if (this.answer && Date.now() < this.answer.until) return this.answer.address;
    const a = await resolveA(this.domain);
    this.answer = {
      address: a.address,
      until: Date.now() + a.ttl * 1000 + (this.stale ? args.staleOverstayMs : 0),
    };
    return a.address;
  }

  /**
   * One request, as a browser sends it: when the server closed the connection before any byte of
   * the answer, the request is sent again once on a new connection if the connection was a
   * kept-alive one (a web-server reload closes its idle connections; the request was never read),
   * or if the request is idempotent (RFC 9110 9.2.2: a GET may be repeated automatically). A write
   * on a new connection is never repeated: that would be a failure.
   */
  private async send(address: string, s: Sent): Promise<Got> {
    try {
      return await this.sendOnce(address, s, this.agent);
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { reusedSocket?: boolean };
      const closedEarly = ['ECONNRESET', 'EPIPE'].includes(e.code ?? '');
      if (!closedEarly || !(e.reusedSocket || s.method === 'GET')) throw err;
      summary.resent += 1;
      return this.sendOnce(address, s, false);
    }
  }

  private sendOnce(address: string, s: Sent, agent: HttpAgent | HttpsAgent | false): Promise<Got> {
    return new Promise((resolve, reject) => {
      const common = {
        host: address,
        port: this.scheme === 'https' ? 443 : 80,
        method: s.method,
        path: s.path,
        headers: { host: this.domain, ...(s.headers ?? {}) },
        agent,
        timeout: args.requestTimeoutMs,
      };
      const req =
        this.scheme === 'https'
          ? httpsRequest({ ...common, servername: this.domain, ca: args.caPem })
          : httpRequest(common);
      const timer = setTimeout(() => req.destroy(new Error('timeout')), args.requestTimeoutMs);
      req.once('timeout', () => req.destroy(new Error('timeout')));
      req.once('error', (e) => {
        clearTimeout(timer);
        reject(Object.assign(e, { reusedSocket: req.reusedSocket }));
      });
      req.once('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('error', (e) => {
          clearTimeout(timer);
          reject(e);
        });
        res.once('end', () => {
          clearTimeout(timer);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          });
        });
      });
      req.end(s.body);
    });
  }

  /** One request of this user's mix; its result recorded, a write recorded once acknowledged. */
  async step(): Promise<void> {
    const id = `${runId}-${++seq}`;
    const r = Math.random();
    let s: Sent;
    let acknowledge: ((g: Got) => boolean) | null = null;
    const q = (path: string) => `${path}${path.includes('?') ? '&' : '?'}r=${id}`;
    if (this.kind === 'wordpress' && r < args.commentShare) {
      const key = `c-${id}`;
      const form = new URLSearchParams({
        comment_post_ID: String(args.postId ?? 1),
        author: 'Load Client',
        email: 'load@client.example',
        url: '',
        comment: key,
        submit: 'Post Comment',
      });
      s = {
        method: 'POST',
        path: q('/wp-comments-post.php'),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: Buffer.from(form.toString()),
      };
      acknowledge = (g) => {
        const ok = g.status === 302 && /#comment-\d+/.test(String(g.headers.location ?? ''));
        if (ok) summary.comments.push({ domain: this.domain, key });
        return ok;
      };
    } else if (this.kind === 'wordpress' && r < args.commentShare + args.uploadShare) {
      const key = `u-${id}`;
      const content = randomBytes(2048 + Math.floor(Math.random() * 8192));
      const sha256 = createHash('sha256').update(content).digest('hex');
      const boundary = `----load${randomBytes(8).toString('hex')}`;
      const body = Buffer.concat([
        Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="key"\r\n\r\n${key}\r\n`),
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${key}.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
        ),
        content,
        Buffer.from(`\r\n--${boundary}--\r\n`),
      ]);
      s = {
        method: 'POST',
        path: q('/upload.php'),
        headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
        body,
      };
      acknowledge = (g) => {
        let ok = false;
        try {
          ok = g.status === 200 && (JSON.parse(g.body) as { sha256?: string }).sha256 === sha256;
        } catch {
          ok = false;
        }
        if (ok) summary.uploads.push({ domain: this.domain, key, sha256 });
        return ok;
      };
    } else if (this.kind === 'notes' && r < args.noteShare) {
      const key = `n-${id}`;
      s = {
        method: 'POST',
        path: q('/index.php'),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: Buffer.from(`key=${key}`),
      };
      acknowledge = (g) => {
        const ok = g.status === 200 && g.body.includes(`"key":"${key}"`);
        if (ok) summary.notes.push({ domain: this.domain, key });
        return ok;
      };
    } else {
      const pages =
        this.kind === 'wordpress'
          ? ['/', `/?p=${args.postId ?? 1}`]
          : this.kind === 'notes'
            ? ['/']
            : ['/', '/about.html'];
      s = { method: 'GET', path: q(pages[this.n % pages.length]!) };
    }
    this.n++;
    const at = Date.now();
    const result: SiteRequestResult = {
      type: 'result',
      id,
      at,
      domain: this.domain,
      scheme: this.scheme,
      method: s.method,
      path: s.path,
      address: '',
      keepAlive: this.keepAlive,
      stale: this.stale,
      status: null,
      ok: false,
      servedBy: null,
      latencyMs: 0,
    };
    let unexpected = false;
    try {
      result.address = await this.address();
      const g = await this.send(result.address, s);
      result.status = g.status;
      result.ok = g.status < 500;
      const by = g.headers['x-test-server'];
      result.servedBy = typeof by === 'string' ? by : null;
      if (result.ok) unexpected = acknowledge ? !acknowledge(g) : g.status >= 400;
    } catch (e) {
      result.error = (e as Error).message;
    }
    result.latencyMs = Date.now() - at;
    results.push(result);
    summary.total++;
    const d = (summary.byDomain[this.domain] ??= { total: 0, failed: 0 });
    d.total++;
    if (!result.ok) {
      summary.failed++;
      d.failed++;
    } else if (unexpected) summary.unexpected++;
  }

  async loop(deadline: number): Promise<void> {
    // Spread the users' first requests over one interval.
    await new Promise((r) => setTimeout(r, Math.random() * args.intervalMs));
    while (!stopping && Date.now() < deadline && this.n < args.maxRequestsPerClient) {
      await this.step();
      await new Promise((r) => setTimeout(r, args.intervalMs));
    }
    if (this.agent) this.agent.destroy();
  }
}

const users: User[] = [];
for (const site of args.sites) {
  for (const scheme of ['http', 'https'] as const) {
    for (let i = 0; i < args.clientsPerSite; i++) {
      const frac = (i + 0.5) / args.clientsPerSite;
      // Stale users are the first ones; keep-alive is spread across them and the others.
      const keepAlive = (i * 0.618) % 1 < args.keepAliveShare;
      users.push(new User(site.domain, site.kind, scheme, frac < args.staleShare, keepAlive));
    }
  }
}

const deadline = Date.now() + args.durationMs;
const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  if (line.trim() === 'stop') stopping = true;
});
input.on('close', () => undefined);
out({ type: 'ready', users: users.length });
void Promise.all(users.map((u) => u.loop(deadline))).then(() => {
  input.close();
  for (const r of results) out(r);
  // Written last; the process ends once stdout has drained.
  out(summary);
});
