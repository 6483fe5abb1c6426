/**
 * Private Postfix instances for the tests: each `startPostfix` runs `postfix -c <dir> start` with
 * its own main.cf, master.cf (smtpd on one loopback address and a free port), queue_directory,
 * data_directory and log file under a temporary folder, never the machine's own Postfix. Its
 * virtual mailbox domains deliver to Maildirs under `<dir>/vmail`. `stop()` stops it and removes
 * the folder.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../ports.js';

/** True when Postfix and swaks are installed and this process may start Postfix (root). */
export const postfixInstalled =
  existsSync('/usr/sbin/postfix') && existsSync('/usr/bin/swaks') && process.getuid?.() === 0;

/** The uid and gid mail is delivered as (nobody). */
export const MAIL_UID = 65534;
export const MAIL_GID = 65534;

export interface PostfixOptions {
  /** Loopback address smtpd listens on, e.g. `127.0.88.1`. */
  address: string;
  hostname: string;
  /** virtual_mailbox_domains, one per line of a list file. */
  domains: string[];
  /** virtual_mailbox_maps source lines (`user@domain domain/user/`), a hash: map. */
  mailboxes: string[];
  /** virtual_alias_maps source lines, a texthash: map. */
  aliases?: string[];
  /** Extra main.cf lines. */
  main?: string[];
}

export interface PostfixInstance {
  address: string;
  port: number;
  dir: string;
  configDir: string;
  /** virtual_mailbox_base. */
  vmail: string;
  mailboxFile: string;
  aliasFile: string;
  domainsFile: string;
  /** The log (maillog_file). */
  log(): string;
  /** swaks from `from` to `to` through this instance; its exit code and transcript. */
  send(to: string, opts?: { from?: string; header?: string }): { status: number; output: string };
  /** Messages delivered to a Maildir (relative to vmail) now: files of new/ and cur/. */
  delivered(maildir: string): string[];
  /** Wait until `maildir` has `n` messages (or throw after `ms`). */
  waitDelivered(maildir: string, n: number, ms?: number): Promise<string[]>;
  stop(): Promise<void>;
}

const MASTER = (address: string, port: number) =>
  `${address}:${port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`;

/** Start a private Postfix; it is stopped and removed again when the start fails. */
export async function startPostfix(o: PostfixOptions): Promise<PostfixInstance> {
  const port = await freePort(o.address);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-postfix-'));
  chmodSync(dir, 0o755);
  const configDir = join(dir, 'etc');
  const vmail = join(dir, 'vmail');
  for (const d of [configDir, join(dir, 'queue'), join(dir, 'data'), vmail])
    mkdirSync(d, { recursive: true });
  chownSync(vmail, MAIL_UID, MAIL_GID);
  const postfixUid = Number(execFileSync('id', ['-u', 'postfix']).toString().trim());
  chownSync(join(dir, 'data'), postfixUid, 0);
  const mailboxFile = join(configDir, 'vmailbox');
  const aliasFile = join(configDir, 'virtual');
  const domainsFile = join(configDir, 'vdomains');
  writeFileSync(domainsFile, o.domains.join('\n') + '\n');
  writeFileSync(mailboxFile, o.mailboxes.join('\n') + '\n');
  writeFileSync(aliasFile, (o.aliases ?? []).join('\n') + '\n');
  writeFileSync(
    join(configDir, 'main.cf'),
    [
      'compatibility_level = 3.6',
      `queue_directory = ${join(dir, 'queue')}`,
      `data_directory = ${join(dir, 'data')}`,
      `maillog_file = ${join(dir, 'maillog')}`,
      `maillog_file_prefixes = ${dir}`,
      `myhostname = ${o.hostname}`,
      'mydestination =',
      'inet_interfaces = loopback-only',
      'inet_protocols = ipv4',
      'mynetworks = 127.0.0.0/8',
      'smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination',
      'smtpd_recipient_restrictions = reject_unlisted_recipient',
      `virtual_mailbox_domains = ${domainsFile}`,
      `virtual_mailbox_maps = hash:${mailboxFile}`,
      `virtual_alias_maps = texthash:${aliasFile}`,
      `virtual_mailbox_base = ${vmail}`,
      `virtual_uid_maps = static:${MAIL_UID}`,
      `virtual_gid_maps = static:${MAIL_GID}`,
      'smtp_host_lookup = native',
      'disable_dns_lookups = yes',
      'smtp_dns_support_level = disabled',
      'queue_run_delay = 2s',
      'minimal_backoff_time = 2s',
      'maximum_backoff_time = 4s',
      'biff = no',
      ...(o.main ?? []),
      '',
    ].join('\n'),
  );
  writeFileSync(join(configDir, 'master.cf'), MASTER(o.address, port));
  const inst: PostfixInstance = {
    address: o.address,
    port,
    dir,
    configDir,
    vmail,
    mailboxFile,
    aliasFile,
    domainsFile,
    log: () => (existsSync(join(dir, 'maillog')) ? readFileSync(join(dir, 'maillog'), 'utf8') : ''),
    send(to, opts = {}) {
      const r = spawnSync(
        'swaks',
        [
          '--server',
          o.address,
          '--port',
          String(port),
          '--to',
          to,
          '--from',
          opts.from ?? 'sender@elsewhere.test',
          '--helo',
          'client.test',
          ...(opts.header ? ['--header', opts.header] : []),
          '--timeout',
          '20',
        ],
        { encoding: 'utf8', timeout: 30_000 },
      );
      return { status: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
    },
    delivered(maildir) {
      const out: string[] = [];
      for (const sub of ['new', 'cur']) {
        const p = join(vmail, maildir, sub);
        if (!existsSync(p)) continue;
        for (const f of spawnSync('ls', [p], { encoding: 'utf8' }).stdout.split('\n'))
          if (f) out.push(readFileSync(join(p, f), 'utf8'));
      }
      return out;
    },
    async waitDelivered(maildir, n, ms = 20_000) {
      const end = Date.now() + ms;
      for (;;) {
        const got = inst.delivered(maildir);
        if (got.length >= n) return got;
        if (Date.now() > end)
          throw new Error(`${maildir}: ${got.length} of ${n} messages after ${ms} ms; log:\n${inst.log()}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    async stop() {
      const pidFile = join(dir, 'queue', 'pid', 'master.pid');
      const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0;
      spawnSync('postfix', ['-c', configDir, 'stop'], { encoding: 'utf8', timeout: 30_000 });
      // A master that did not stop is killed, once it is known to be this instance's.
      const cmdline = `/proc/${pid}/cmdline`;
      for (let i = 0; pid > 0 && i < 50 && existsSync(cmdline); i++)
        await new Promise((r) => setTimeout(r, 100));
      if (pid > 0 && existsSync(cmdline) && readFileSync(cmdline, 'utf8').includes('master')) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    execFileSync('postmap', ['-c', configDir, `hash:${mailboxFile}`]);
    const r = spawnSync('postfix', ['-c', configDir, 'start'], { encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) throw new Error(`postfix start: ${r.stderr}${r.stdout}`);
    await waitListening(o.address, port);
  } catch (err) {
    await inst.stop();
    throw err;
  }
  return inst;
}

async function waitListening(address: string, port: number): Promise<void> {
  const { connect } = await import('node:net');
  const end = Date.now() + 20_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, address);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`postfix did not listen on ${address}:${port}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
