/**
 * A hosting server's mail for end-to-end tests: Debian's Postfix 3.7 and Dovecot 2.3 in a
 * ServerNs, configured the way a provider runs virtual mail. Postfix (its system paths in the
 * server's overlays: /etc/postfix, /var/spool/postfix) accepts the virtual mailbox domains of
 * `hash:` maps on the server's address (ports 25 and 587; mynetworks is loopback only) and
 * delivers to Maildirs under /var/mail/vhosts/<domain>/<user>/ as the `vmail` user; Dovecot
 * (passwd-file users, IMAP 143 and POP3 110, no TLS inside the test network, plain logins) serves
 * the same Maildirs. `configPaths` are what `ferry agent --postfix-config / --dovecot-config` get.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ImapAction, MailLoadArgs, MailLoadSummary, MailResult } from './mail-load-child.js';
import { waitFor, type ServerNs } from './server-ns.js';
import type { NsChild, Topology } from './topology.js';

/** Postfix's config directory and Dovecot's config file, as the server sees them. */
export const POSTFIX_CONFIG = '/etc/postfix';
export const DOVECOT_CONFIG = '/etc/dovecot/dovecot.conf';
/** Where the Maildirs live: <root>/<domain>/<user>/. */
export const MAIL_ROOT = '/var/mail/vhosts';
const DOVECOT_USERS = '/etc/dovecot/users';

/** One mail domain: its users (local part → password) and aliases (local part → local parts). */
export interface MailDomain {
  domain: string;
  users: Record<string, string>;
  aliases?: Record<string, string[]>;
  /** How Dovecot stores the passwords (default SHA512-CRYPT). */
  scheme?: 'SHA512-CRYPT' | 'PLAIN';
}

export interface MailOptions {
  /** The server's address: Postfix's inet_interfaces and Dovecot's listen. */
  address: string;
  /** Postfix's myhostname (the MX target's name). */
  hostname: string;
  domains: MailDomain[];
  /** The vmail user's uid and gid (the servers may differ: the move maps owners). */
  vmailId: number;
}

/** Postfix and Dovecot running in a server. */
export interface MailServer {
  srv: ServerNs;
  address: string;
  postfix: NsChild;
  dovecot: NsChild;
  /** `ferry agent` flags for this server's mail. */
  agentArgs: string[];
  /** Stop both (SIGTERM, then the ServerNs close kills what is left); safe to call twice. */
  stop(): Promise<void>;
}

/** Every `<local>@<domain>` of a domain's mailboxes. */
export function mailboxes(d: MailDomain): string[] {
  return Object.keys(d.users).map((u) => `${u}@${d.domain}`);
}

/** The lines of Postfix's and Dovecot's own files for `domains` (maps' source text, passwd-file). */
async function mailFiles(
  srv: ServerNs,
  domains: MailDomain[],
): Promise<{ vdomains: string; vmailbox: string; virtual: string; users: string }> {
  const vdomains: string[] = [];
  const vmailbox: string[] = [];
  const virtual: string[] = [];
  const users: string[] = [];
  for (const d of domains) {
    vdomains.push(`${d.domain} OK`);
    for (const [user, password] of Object.entries(d.users)) {
      vmailbox.push(`${user}@${d.domain} ${d.domain}/${user}/`);
      const scheme = d.scheme ?? 'SHA512-CRYPT';
      const hash =
        scheme === 'PLAIN'
          ? `{PLAIN}${password}`
          : (await srv.exec('doveadm', ['pw', '-s', scheme, '-p', password])).stdout.trim();
      users.push(`${user}@${d.domain}:${hash}::::::`);
    }
    for (const [alias, to] of Object.entries(d.aliases ?? {}))
      virtual.push(`${alias}@${d.domain} ${to.map((u) => `${u}@${d.domain}`).join(', ')}`);
  }
  const text = (l: string[]) => (l.length ? l.join('\n') + '\n' : '');
  return { vdomains: text(vdomains), vmailbox: text(vmailbox), virtual: text(virtual), users: text(users) };
}

function postfixMain(o: MailOptions): string {
  return `# Postfix of a Ferry test server: virtual mailbox domains only.
compatibility_level = 3.6
myhostname = ${o.hostname}
myorigin = $myhostname
mydestination = localhost
inet_interfaces = ${o.address}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
smtpd_banner = $myhostname ESMTP
smtpd_peername_lookup = no
smtpd_error_sleep_time = 0
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = hash:${POSTFIX_CONFIG}/vdomains
virtual_mailbox_maps = hash:${POSTFIX_CONFIG}/vmailbox
virtual_alias_maps = hash:${POSTFIX_CONFIG}/virtual
virtual_mailbox_base = ${MAIL_ROOT}
virtual_uid_maps = static:${o.vmailId}
virtual_gid_maps = static:${o.vmailId}
virtual_minimum_uid = 100
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 20s
maillog_file = /var/log/postfix.log
`;
}

function dovecotConf(o: MailOptions): string {
  return `# Dovecot of a Ferry test server: passwd-file users, Maildir, no TLS inside the test network.
protocols = imap pop3
listen = ${o.address}
base_dir = /run/dovecot
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = /var/log/dovecot.log
auth_verbose = yes
first_valid_uid = 100
mail_location = maildir:~
mail_uid = vmail
mail_gid = vmail
namespace inbox {
  inbox = yes
  separator = .
  mailbox Archive {
    auto = subscribe
  }
}
passdb {
  driver = passwd-file
  args = username_format=%u ${DOVECOT_USERS}
}
userdb {
  driver = passwd-file
  args = username_format=%u ${DOVECOT_USERS}
  default_fields = uid=vmail gid=vmail home=${MAIL_ROOT}/%d/%n
}
service imap-login {
  inet_listener imap {
    port = 143
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 110
  }
}
protocol imap {
  mail_max_userip_connections = 100
}
`;
}

/** The first bytes a server's TCP port sends (a banner), or '' when it does not answer. */
async function banner(srv: ServerNs, address: string, port: number): Promise<string> {
  const r = await srv.exec('bash', ['-c', `exec 3<>/dev/tcp/${address}/${port} && timeout 2 head -c 4 <&3`], {
    allowFail: true,
    timeoutMs: 5000,
  });
  return r.stdout;
}

/**
 * Configure the vmail user, Postfix and Dovecot for `o.domains` in `srv` and start both in the
 * foreground; resolves once SMTP (25, 587), IMAP and POP3 answer on `o.address`.
 */
export async function startMail(srv: ServerNs, o: MailOptions): Promise<MailServer> {
  const id = String(o.vmailId);
  await srv.exec('sh', [
    '-c',
    `set -e
getent group vmail >/dev/null || groupadd -g ${id} vmail
getent passwd vmail >/dev/null || useradd -u ${id} -g vmail -d ${MAIL_ROOT} -s /usr/sbin/nologin -M vmail
mkdir -p ${MAIL_ROOT} && chown vmail:vmail ${MAIL_ROOT} && chmod 0770 ${MAIL_ROOT}`,
  ]);
  const files = await mailFiles(srv, o.domains);
  for (const d of o.domains)
    for (const user of Object.keys(d.users)) {
      const box = join(MAIL_ROOT, d.domain, user);
      await srv.exec('sh', [
        '-c',
        `set -e; mkdir -p ${box}/cur ${box}/new ${box}/tmp; chown -R vmail:vmail ${join(MAIL_ROOT, d.domain)}; chmod -R u+rwX,go-rwx ${join(MAIL_ROOT, d.domain)}`,
      ]);
    }
  await srv.writeFile(join(POSTFIX_CONFIG, 'main.cf'), postfixMain(o));
  for (const name of ['vdomains', 'vmailbox', 'virtual'] as const) {
    await srv.writeFile(join(POSTFIX_CONFIG, name), files[name]);
    await srv.exec('postmap', ['-c', POSTFIX_CONFIG, `hash:${join(POSTFIX_CONFIG, name)}`]);
  }
  // No chroot (the server's overlay is its isolation), and submission (587) beside smtp (25).
  await srv.exec('postconf', ['-c', POSTFIX_CONFIG, '-F', '*/*/chroot = n']);
  await srv.exec('postconf', ['-c', POSTFIX_CONFIG, '-M', 'submission/inet=submission inet n - n - - smtpd']);
  await srv.exec('postfix', ['-c', POSTFIX_CONFIG, 'check']);
  await srv.writeFile(DOVECOT_USERS, files.users, { mode: 0o640, owner: 'root:dovecot' });
  await srv.writeFile(DOVECOT_CONFIG, dovecotConf(o));
  await srv.exec('doveconf', ['-c', DOVECOT_CONFIG, '-n'], { timeoutMs: 10_000 });

  const postfix = srv.spawn('postfix', ['postfix', '-c', POSTFIX_CONFIG, 'start-fg'], {
    logFile: join(srv.dir, 'postfix.out'),
  });
  const dovecot = srv.spawn('dovecot', ['dovecot', '-F', '-c', DOVECOT_CONFIG], {
    logFile: join(srv.dir, 'dovecot.out'),
  });
  let stopped = false;
  const m: MailServer = {
    srv,
    address: o.address,
    postfix,
    dovecot,
    agentArgs: ['--postfix-config', POSTFIX_CONFIG, '--dovecot-config', DOVECOT_CONFIG],
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await srv.exec('postfix', ['-c', POSTFIX_CONFIG, 'stop'], { allowFail: true, timeoutMs: 15_000 });
      await srv.exec('doveadm', ['-c', DOVECOT_CONFIG, 'stop'], { allowFail: true, timeoutMs: 15_000 });
      for (const c of [postfix, dovecot])
        if (c.child.exitCode === null && c.child.signalCode === null) {
          c.child.kill('SIGTERM');
          await Promise.race([c.exited, new Promise((r) => setTimeout(r, 5000))]);
        }
    },
  };
  try {
    for (const [port, greeting] of [
      [25, '220 '],
      [587, '220 '],
      [143, '* OK'],
      [110, '+OK '],
    ] as const)
      await waitFor(
        `${srv.name}: port ${port} of ${port === 25 || port === 587 ? 'Postfix' : 'Dovecot'}`,
        30_000,
        async () => (await banner(srv, o.address, port)) === greeting,
      );
  } catch (err) {
    await m.stop();
    throw err;
  }
  return m;
}

/** One message file of a Maildir, as a server holds it. */
export interface StoredMessage {
  /** `<local>@<domain>` of the mailbox. */
  mailbox: string;
  /** The folder ('INBOX' or a Maildir++ folder name such as 'Archive'). */
  folder: string;
  /** Its Message-ID header's value (without the angle brackets), or '' without one. */
  messageId: string;
  /** Its Maildir flags (the letters after `:2,`, e.g. 'FS'). */
  flags: string;
  file: string;
}

/**
 * Every message file of `domain`'s Maildirs on `srv` (new/ and cur/ of INBOX and every folder),
 * with its Message-ID and flags.
 */
export async function storedMessages(srv: ServerNs, domain: string): Promise<StoredMessage[]> {
  const base = join(MAIL_ROOT, domain);
  // One line per file: path, then the Message-ID header (first one; folded values are not used here).
  const script = `cd ${base} 2>/dev/null || exit 0
find . \\( -path '*/new/*' -o -path '*/cur/*' \\) -type f | while IFS= read -r f; do
  id=$(grep -m1 -i '^message-id:' "$f" | tr -d '\\r')
  printf '%s\\t%s\\n' "$f" "$id"
done`;
  const out = (await srv.exec('sh', ['-c', script], { timeoutMs: 60_000 })).stdout;
  const found: StoredMessage[] = [];
  for (const line of out.split('\n')) {
    if (!line) continue;
    const [path, header = ''] = line.split('\t');
    // ./<user>/(.<Folder>/)?(new|cur)/<name>
    const m = /^\.\/([^/]+)\/(?:\.([^/]+)\/)?(?:new|cur)\/(.+)$/.exec(path!);
    if (!m) continue;
    const name = m[3]!;
    const flags = /:2,([A-Za-z]*)$/.exec(name)?.[1] ?? '';
    found.push({
      mailbox: `${m[1]}@${domain}`,
      folder: m[2] ?? 'INBOX',
      messageId: /<([^>]+)>/.exec(header)?.[1] ?? '',
      flags,
      file: path!,
    });
  }
  return found;
}

/** Messages of Postfix's queue on `srv` (postqueue -j), by queue id, with their recipients. */
export async function queuedMessages(
  srv: ServerNs,
): Promise<Array<{ queue_id: string; recipients: Array<{ address: string }> }>> {
  const out = (await srv.exec('postqueue', ['-c', POSTFIX_CONFIG, '-j'], { allowFail: true })).stdout;
  return out
    .split('\n')
    .filter((l) => l.trim().startsWith('{'))
    .map((l) => JSON.parse(l) as { queue_id: string; recipients: Array<{ address: string }> });
}

/** The packages the mail tests run (for netnsSkipReason). */
export const MAIL_TEST_BINARIES: Record<string, string[]> = {
  postfix: ['postfix'],
  'dovecot-imapd': ['dovecot'],
  swaks: ['swaks'],
};

/** The moved domain's mail: three mailboxes (SHA512-CRYPT) and an alias to two of them. */
export function movedMail(domain: string): MailDomain {
  return {
    domain,
    users: { a: 'mail-a-' + 'p'.repeat(10), b: 'mail-b-' + 'q'.repeat(10), c: 'mail-c-' + 'r'.repeat(10) },
    aliases: { team: ['a', 'b'] },
  };
}

/** The origin's other domain, which stays (PLAIN passwords). */
export function staysMail(): MailDomain {
  return { domain: 'stays.example', users: { x: 'mail-x-' + 's'.repeat(10) }, scheme: 'PLAIN' };
}

/** The target's own domain. */
export function targetMail(): MailDomain {
  return { domain: 'target.example', users: { t: 'mail-t-' + 't'.repeat(10) } };
}

/** A running mail load (mail-load-child.ts in the client namespace). */
export interface MailLoad {
  child: NsChild;
  /** Send "stop" and collect every message's and IMAP action's record. */
  stop(): Promise<{ messages: MailResult[]; imap: ImapAction[]; summary: MailLoadSummary }>;
}

/** Start the mail load in the client namespace; resolves once it runs. */
export async function startMailLoad(
  topo: Topology,
  root: string,
  a: MailLoadArgs,
  logFile?: string,
): Promise<MailLoad> {
  const child = topo.spawn(
    'client',
    'mail-load',
    [process.execPath, '--import', 'tsx', join(root, 'test/e2e/netns/mail-load-child.ts'), JSON.stringify(a)],
    { cwd: root, stdin: true, ...(logFile ? { logFile } : {}) },
  );
  await child.waitLine((l) => l.includes('"type":"ready"'), 30_000);
  return {
    child,
    stop: async () => {
      if (child.child.exitCode === null) child.child.stdin!.write('stop\n');
      // "stop" lets the senders reach minMessages first: allow for it.
      await child.waitLine((l) => l.includes('"type":"summary"'), 300_000);
      if (logFile) await writeFile(`${logFile}.results.jsonl`, child.lines.join('\n') + '\n');
      const events = child.lines.map((l) => JSON.parse(l) as { type: string });
      return {
        messages: events.filter((e) => e.type === 'message') as unknown as MailResult[],
        imap: events.filter((e) => e.type === 'imap') as unknown as ImapAction[],
        summary: events.find((e) => e.type === 'summary') as unknown as MailLoadSummary,
      };
    },
  };
}

/** The mailboxes (`local@domain`) a recipient of `d` delivers to: an alias's members, else itself. */
export function deliveredTo(d: MailDomain, recipient: string): string[] {
  const local = recipient.split('@')[0]!;
  const to = d.aliases?.[local];
  return to ? to.map((u) => `${u}@${d.domain}`) : [recipient];
}

/**
 * What breaks "every message accepted with 250 is in the mailbox exactly once": for each accepted
 * message of `d` and each mailbox its recipient delivers to, how often its Message-ID is stored
 * there (every folder counted) when that is not once. Empty when all hold.
 */
export function deliveryProblems(d: MailDomain, messages: MailResult[], stored: StoredMessage[]): string[] {
  const count = new Map<string, number>();
  for (const m of stored) {
    const k = `${m.mailbox} ${m.messageId}`;
    count.set(k, (count.get(k) ?? 0) + 1);
  }
  const problems: string[] = [];
  for (const r of messages)
    if (r.domain === d.domain && r.code === 250)
      for (const box of deliveredTo(d, r.to)) {
        const n = count.get(`${box} ${r.messageId}`) ?? 0;
        if (n !== 1) problems.push(`${r.messageId} to ${r.to}: ${n} times in ${box}`);
      }
  return problems;
}

/**
 * What breaks "the IMAP client's confirmed actions are in the Maildir": a read message carries \Seen
 * (S), a flagged one \Flagged (F), a moved one is in `folder` only. `mailbox` is the client's login.
 */
export function imapProblems(
  mailbox: string,
  folder: string,
  actions: ImapAction[],
  stored: StoredMessage[],
): string[] {
  const problems: string[] = [];
  for (const a of actions) {
    if (!a.ok || a.action === 'login') continue;
    const copies = stored.filter((m) => m.mailbox === mailbox && m.messageId === a.messageId);
    const where = copies.map((m) => `${m.folder}:${m.flags || '-'}`).join(' ') || 'nowhere';
    if (copies.length !== 1) problems.push(`${a.action} ${a.messageId}: ${copies.length} copies (${where})`);
    else if (a.action === 'read' && !copies[0]!.flags.includes('S'))
      problems.push(`read ${a.messageId}: ${where}`);
    else if (a.action === 'flag' && !copies[0]!.flags.includes('F'))
      problems.push(`flag ${a.messageId}: ${where}`);
    else if (a.action === 'move' && copies[0]!.folder !== folder)
      problems.push(`move ${a.messageId}: ${where}`);
  }
  return problems;
}

/** The mail load the tests run: the moved domain's three mailboxes and alias, the other domain's mailbox, IMAP as `c`. */
export function mailLoadArgs(
  moved: MailDomain,
  stays: MailDomain,
  o: Partial<MailLoadArgs> = {},
): MailLoadArgs {
  return {
    resolver: { address: '127.0.0.1', port: 53 },
    domain: moved.domain,
    recipients: [...mailboxes(moved), ...Object.keys(moved.aliases ?? {}).map((a) => `${a}@${moved.domain}`)],
    stays: { domain: stays.domain, recipients: mailboxes(stays) },
    senders: 4,
    staleShare: 0.25,
    intervalMs: 100,
    minMessages: 300,
    retryPauseMs: 1000,
    maxTries: 30,
    submissionShare: 0.25,
    imap: { user: `c@${moved.domain}`, password: moved.users.c!, intervalMs: 500, folder: 'Archive' },
    ...o,
  };
}

/**
 * The Message-IDs of every Maildir message file (in a `new` or `cur` folder) under `dir` on
 * `srv`, wherever the folder is (a mail root, a backup of one).
 */
export async function messageIdsUnder(srv: ServerNs, dir: string): Promise<Set<string>> {
  const script = `[ -d "$1" ] || exit 0
find "$1" -type f \\( -path '*/new/*' -o -path '*/cur/*' \\) -exec grep -h -m1 -i '^message-id:' {} +; true`;
  const out = (await srv.exec('sh', ['-c', script, 'sh', dir], { timeoutMs: 60_000 })).stdout;
  return new Set([...out.matchAll(/<([^>]+)>/g)].map((m) => m[1]!));
}
