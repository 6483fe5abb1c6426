/**
 * Runs inside the `client` namespace (spawned through `ip netns exec`): mail load through the
 * names as the local resolver (unbound on 127.0.0.1:53) answers them. SMTP senders run swaks, one
 * message per run with a unique Message-ID, to the moved domain's mailboxes and alias (the MX's A
 * record: fresh senders resolve it for every message, stale ones keep their first answer); a 4xx
 * or a refused connection is retried after a pause (bounded). A sender to the other domain runs
 * the whole time. An IMAP client (its own small client over a socket) logs in over and over,
 * reads, flags and moves messages, recording what the server confirmed. Writes JSON lines on
 * stdout: {"type":"ready"}, then after "stop" on stdin (and at least `minMessages` sent):
 * {"type":"message",...} per message, {"type":"imap",...} per action, then {"type":"summary",...}.
 * Options come as one JSON argument (MailLoadArgs).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { dnsQuery } from '../../../src/dns/index.js';

export interface MailLoadArgs {
  resolver: { address: string; port: number };
  /** The moved domain and its recipients (`local@domain`, the alias among them). */
  domain: string;
  recipients: string[];
  /** The domain that stays on the origin, and its recipients. */
  stays: { domain: string; recipients: string[] };
  /** Concurrent senders to `domain`; `staleShare` of them keep their first answer. */
  senders: number;
  staleShare: number;
  /** Pause between one sender's messages. */
  intervalMs: number;
  /** "stop" waits until this many messages to `domain` were sent (N of the issue). */
  minMessages: number;
  /** After a 4xx (or a refused connection), the pause and how many tries a message gets in all. */
  retryPauseMs: number;
  maxTries: number;
  /** Share of messages sent to 587 (submission) instead of 25. */
  submissionShare: number;
  /** The IMAP client: its login and how often it acts. */
  imap: { user: string; password: string; intervalMs: number; folder: string };
}

/** One try of a message: when, where, and the answer's code (0: no SMTP answer, e.g. refused). */
export interface MailTry {
  at: number;
  address: string;
  port: number;
  code: number;
  reply: string;
}

/** What happened to one message. */
export interface MailResult {
  messageId: string;
  to: string;
  domain: string;
  sender: number;
  stale: boolean;
  /** The last try's code: 250 when accepted. */
  code: number;
  tries: MailTry[];
  /** When it was accepted (the 250), if it was. */
  acceptedAt?: number;
}

/** One IMAP action the server confirmed (or refused). */
export interface ImapAction {
  at: number;
  action: 'read' | 'flag' | 'move' | 'login';
  messageId: string;
  ok: boolean;
  address: string;
  detail: string;
}

export interface MailLoadSummary {
  sent: number;
  accepted: number;
  deferredTries: number;
  staysSent: number;
  imapActions: number;
}

const args = JSON.parse(process.argv[2] ?? '{}') as MailLoadArgs;
const out = (v: unknown) => process.stdout.write(JSON.stringify(v) + '\n');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The A record of `domain`'s MX target, as the resolver answers. */
async function mxAddress(domain: string): Promise<string> {
  const mx = await dnsQuery({ server: args.resolver, name: domain, type: 'MX', rd: true, timeoutMs: 1500 });
  const rr = mx.answers.find((r) => r.typeName === 'MX');
  if (!rr) throw new Error(`${domain}: no MX from the resolver (${mx.rcodeName})`);
  const host = rr.rdata.split(/\s+/).pop()!;
  const a = await dnsQuery({ server: args.resolver, name: host, type: 'A', rd: true, timeoutMs: 1500 });
  const ar = a.answers.find((r) => r.typeName === 'A');
  if (!ar) throw new Error(`${host}: no A record from the resolver (${a.rcodeName})`);
  return ar.rdata;
}

/** One swaks run: the code of the first refusal in its transcript, else 250 once queued, else 0. */
function swaks(
  address: string,
  port: number,
  to: string,
  messageId: string,
): Promise<{ code: number; reply: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      'swaks',
      [
        '--server',
        address,
        '--port',
        String(port),
        '--helo',
        'client.test',
        '--from',
        'load@client.test',
        '--to',
        to,
        '--header',
        `Message-Id: <${messageId}>`,
        '--header',
        `Subject: load ${messageId}`,
        '--body',
        `Mail load message ${messageId}.`,
        '--timeout',
        '20',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let text = '';
    child.stdout.on('data', (b: Buffer) => (text += b.toString('utf8')));
    child.stderr.on('data', (b: Buffer) => (text += b.toString('utf8')));
    child.once('error', (e) => resolve({ code: 0, reply: String(e) }));
    child.once('close', () => {
      const refusal = /^<\*\*\s+(\d{3})[ -](.*)$/m.exec(text);
      if (refusal) return resolve({ code: Number(refusal[1]), reply: refusal[0] });
      const queued = /^<-\s+(250)[ -](.*queued.*)$/im.exec(text);
      if (queued) return resolve({ code: 250, reply: queued[0] });
      resolve({ code: 0, reply: text.trim().split('\n').slice(-2).join(' | ').slice(0, 300) });
    });
  });
}

const results: MailResult[] = [];
const imapActions: ImapAction[] = [];
let stopping = false;
let sent = 0;

/** Send one message, retrying 4xx and unanswered tries (`maxTries` in all); `where` gives the address for each try. */
async function sendOne(
  sender: number,
  stale: boolean,
  to: string,
  domain: string,
  where: () => Promise<string>,
  maxTries = args.maxTries,
): Promise<MailResult> {
  const messageId = `${Date.now().toString(36)}.${sender}.${randomBytes(6).toString('hex')}@load.test`;
  const port = Math.random() < args.submissionShare ? 587 : 25;
  const r: MailResult = { messageId, to, domain, sender, stale, code: 0, tries: [] };
  for (let i = 0; i < maxTries; i++) {
    let address = '';
    try {
      address = await where();
    } catch (err) {
      r.tries.push({ at: Date.now(), address, port, code: 0, reply: String(err) });
      await sleep(args.retryPauseMs);
      continue;
    }
    const at = Date.now();
    const { code, reply } = await swaks(address, port, to, messageId);
    r.tries.push({ at, address, port, code, reply });
    r.code = code;
    if (code === 250) {
      r.acceptedAt = Date.now();
      break;
    }
    if (code >= 500) break;
    await sleep(args.retryPauseMs);
  }
  return r;
}

async function sender(n: number, stale: boolean): Promise<void> {
  let kept: string | undefined;
  const where = async () => (stale ? (kept ??= await mxAddress(args.domain)) : mxAddress(args.domain));
  for (let i = 0; !stopping || sent < args.minMessages; i++) {
    const to = args.recipients[(n + i) % args.recipients.length]!;
    sent++;
    results.push(await sendOne(n, stale, to, args.domain, where));
    await sleep(args.intervalMs);
  }
}

let staysSent = 0;
async function staysSender(): Promise<void> {
  for (let i = 0; !stopping; i++) {
    const to = args.stays.recipients[i % args.stays.recipients.length]!;
    staysSent++;
    // One try only: the other domain must never be deferred.
    results.push(await sendOne(-1, false, to, args.stays.domain, () => mxAddress(args.stays.domain), 1));
    await sleep(args.intervalMs * 2);
  }
}

// ---------------------------------------------------------------------------------------------
// A small IMAP client: tagged commands, untagged lines and literals ({n}) collected per command.

class Imap {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  private closed = false;
  private tag = 0;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (b: Buffer) => {
      this.buf = Buffer.concat([this.buf, b]);
      this.wake?.();
    });
    const end = () => {
      this.closed = true;
      this.wake?.();
    };
    sock.on('close', end);
    sock.on('error', end);
  }

  static open(address: string, port: number): Promise<Imap> {
    return new Promise((resolve, reject) => {
      const sock = connect({ host: address, port, timeout: 10_000 });
      sock.once('connect', () => resolve(new Imap(sock)));
      sock.once('error', reject);
      sock.once('timeout', () => sock.destroy(new Error('connect timeout')));
    });
  }

  /** The next line (CRLF removed), a literal that follows it joined into it. */
  private async line(): Promise<string> {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const i = this.buf.indexOf('\r\n');
      if (i >= 0) {
        let l = this.buf.subarray(0, i).toString('latin1');
        const lit = /\{(\d+)\}$/.exec(l);
        if (lit) {
          const n = Number(lit[1]);
          if (this.buf.length >= i + 2 + n) {
            l += this.buf.subarray(i + 2, i + 2 + n).toString('latin1');
            this.buf = this.buf.subarray(i + 2 + n);
            return l + (await this.line());
          }
        } else {
          this.buf = this.buf.subarray(i + 2);
          return l;
        }
      }
      if (this.closed) throw new Error('connection closed');
      if (Date.now() > deadline) throw new Error('IMAP answer timed out');
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 1000);
      });
      this.wake = null;
    }
  }

  async greeting(): Promise<string> {
    return this.line();
  }

  /** Send a command; its untagged lines and the tagged status line. */
  async cmd(text: string): Promise<{ ok: boolean; status: string; untagged: string[] }> {
    const tag = `a${++this.tag}`;
    this.sock.write(`${tag} ${text}\r\n`);
    const untagged: string[] = [];
    for (;;) {
      const l = await this.line();
      if (l.startsWith(`${tag} `)) return { ok: l.startsWith(`${tag} OK`), status: l, untagged };
      untagged.push(l);
    }
  }

  close(): void {
    this.sock.destroy();
  }
}

const quote = (s: string) => `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"`;

async function imapClient(): Promise<void> {
  const done = new Set<string>();
  const kinds: Array<ImapAction['action']> = ['read', 'flag', 'move'];
  let turn = 0;
  const domain = args.imap.user.split('@')[1]!;
  while (!stopping) {
    let address = '';
    let c: Imap | undefined;
    try {
      address = await mxAddress(domain);
      c = await Imap.open(address, 143);
      const hello = await c.greeting();
      if (!hello.startsWith('* OK')) throw new Error(`greeting: ${hello}`);
      const login = await c.cmd(`LOGIN ${quote(args.imap.user)} ${quote(args.imap.password)}`);
      if (!login.ok) {
        imapActions.push({
          at: Date.now(),
          action: 'login',
          messageId: '',
          ok: false,
          address,
          detail: login.status,
        });
        throw new Error(login.status);
      }
      const sel = await c.cmd('SELECT INBOX');
      if (!sel.ok) throw new Error(sel.status);
      const search = await c.cmd('UID SEARCH ALL');
      const uids = (search.untagged.find((l) => l.startsWith('* SEARCH')) ?? '')
        .slice('* SEARCH'.length)
        .trim()
        .split(/\s+/)
        .filter(Boolean);
      let acted = 0;
      for (const uid of uids) {
        if (acted >= 2 || stopping) break;
        const f = await c.cmd(`UID FETCH ${uid} (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])`);
        const id = /<([^>]+)>/.exec(f.untagged.join('\n'))?.[1];
        if (!id || done.has(id)) continue;
        const action = kinds[turn % kinds.length]!;
        const command =
          action === 'read'
            ? `UID FETCH ${uid} (BODY[])`
            : action === 'flag'
              ? `UID STORE ${uid} +FLAGS (\\Flagged)`
              : `UID MOVE ${uid} ${args.imap.folder}`;
        const at = Date.now();
        const r = await c.cmd(command);
        imapActions.push({ at, action, messageId: id, ok: r.ok, address, detail: r.status.slice(0, 200) });
        if (r.ok) {
          done.add(id);
          turn++;
          acted++;
        }
      }
      await c.cmd('LOGOUT').catch(() => undefined);
    } catch (err) {
      imapActions.push({
        at: Date.now(),
        action: 'login',
        messageId: '',
        ok: false,
        address,
        detail: String(err).slice(0, 200),
      });
    } finally {
      c?.close();
    }
    await sleep(args.imap.intervalMs);
  }
}

const staleCount = Math.round(args.senders * args.staleShare);
const work = [
  ...Array.from({ length: args.senders }, (_, n) => sender(n, n < staleCount)),
  staysSender(),
  imapClient(),
];
out({ type: 'ready' });

const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  if (line.trim() !== 'stop') return;
  input.close();
  stopping = true;
  void Promise.all(work).then(() => {
    for (const r of results) out({ type: 'message', ...r });
    for (const a of imapActions) out({ type: 'imap', ...a });
    const mine = results.filter((r) => r.domain === args.domain);
    const summary: MailLoadSummary = {
      sent: mine.length,
      accepted: mine.filter((r) => r.code === 250).length,
      deferredTries: mine.reduce((n, r) => n + r.tries.filter((t) => t.code !== 250).length, 0),
      staysSent,
      imapActions: imapActions.filter((a) => a.action !== 'login' && a.ok).length,
    };
    // Written last; the process ends once stdout has drained.
    out({ type: 'summary', ...summary });
  });
});
