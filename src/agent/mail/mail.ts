/**
 * The mail of a web site's domain, as the agent moves it with the site: one facade over the
 * server's Postfix (postfix.ts) and Dovecot (dovecot.ts) that the agent's web-site calls use.
 *
 * States by site mode (the contract of every agent piece; other domains are never touched):
 *   serve            Postfix delivers here, Dovecot serves logins
 *   readonly, hold   Postfix answers the domain's recipients 450 4.2.1 (senders retry), Dovecot
 *                    refuses logins (and `block` kicks the domain's sessions)
 *   {proxy}          Postfix relays the domain's mail to `[address]:25`, Dovecot proxies logins
 *                    to `address` (the new server checks the password)
 */
import { execFile } from 'node:child_process';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FerryError, isFerryError } from '../../common/errors.js';
import type { SiteMode } from '../../host/index.js';
import type { Refusal, SiteMail } from '../webconfig/index.js';
import type { MailCopyHook } from './copy.js';
import type { Dovecot } from './dovecot.js';
import type { Postfix, PostfixLines } from './postfix.js';

/** The mail ports Ferry carries with a site. */
export const MAIL_PORTS = [25, 465, 587, 110, 143, 993, 995];

/** The domain's mail as it moves to another server (a secret: Dovecot's lines hold password hashes). */
export interface MailBundle {
  domain: string;
  postfix: PostfixLines;
  /** Dovecot's passwd-file lines of the domain's users (empty without Dovecot). */
  users: string[];
  /** The Maildirs, relative to Postfix's virtual_mailbox_base. */
  maildirs: string[];
}

export interface MailSitesOptions {
  postfix: Postfix;
  /** The server's Dovecot (the agent always has one with Postfix; tests of Postfix's side alone may leave it out). */
  dovecot?: Dovecot;
  /** The port relayed mail goes to on the new server. Default 25. */
  relayPort?: number;
  /** Where backups of retired Maildirs go: `<dataDir>/backups`. */
  dataDir: string;
  /** Which of MAIL_PORTS listen here (default: read from /proc/net/tcp and tcp6). */
  listeningPorts?: () => Promise<number[]>;
  log?: (message: string) => void;
}

/** A server's mail, per site domain. */
export class MailSites {
  private readonly opts: MailSitesOptions;

  constructor(opts: MailSitesOptions) {
    this.opts = opts;
  }

  /** Postfix and Dovecot answer (MAIL_NOT_CONFIGURED with their words otherwise). */
  async check(): Promise<void> {
    await this.opts.postfix.check();
    await this.opts.dovecot?.check();
  }

  /**
   * Origin: the domain's mail (undefined when it has none here) and why it cannot move
   * (MAIL_UNREADABLE refusals: a map or mailbox Ferry cannot read, users not in a passwd-file).
   */
  async inspect(domain: string): Promise<{ mail?: SiteMail; refusals: Refusal[] }> {
    const refusals: Refusal[] = [];
    const refuse = (err: unknown): undefined => {
      if (!isFerryError(err, 'MAIL_UNREADABLE')) throw err;
      refusals.push({ code: 'MAIL_UNREADABLE', message: err.message });
      return undefined;
    };
    const pf = await this.opts.postfix.domainMail(domain).catch(refuse);
    const users = this.opts.dovecot ? await this.opts.dovecot.users(domain).catch(refuse) : [];
    if (this.opts.dovecot) await this.opts.dovecot.exportUsers(domain).catch(refuse);
    if (!pf) return { refusals };
    if (!pf.listed && pf.mailboxes.length === 0 && pf.aliases.length === 0 && (users ?? []).length === 0)
      return { refusals };
    try {
      maildirLayout(domain, pf.mailboxes);
    } catch (e) {
      refuse(e);
    }
    const mailboxes: SiteMail['mailboxes'] = [];
    for (const m of pf.mailboxes) {
      const count = await countMaildir(m.path).catch(refuse);
      mailboxes.push({
        address: m.address,
        maildir: m.path,
        messages: count?.messages ?? 0,
        bytes: count?.bytes ?? 0,
      });
    }
    const listening = await (this.opts.listeningPorts ?? listeningMailPorts)();
    return {
      mail: {
        domain: pf.domain,
        mailboxes,
        aliases: pf.aliases,
        users: (users ?? []).map((u) => u.user),
        ports: listening,
      },
      refusals,
    };
  }

  /** Target, before any change: MAIL_NOT_CONFIGURED or MAIL_DOMAIN_EXISTS when it cannot take the domain's mail. */
  async assertCanHost(domain: string): Promise<void> {
    await this.check();
    const here = (await this.opts.postfix.hasDomain(domain)) || (await this.opts.dovecot?.hasDomain(domain));
    if (here)
      throw new FerryError(
        'MAIL_DOMAIN_EXISTS',
        `this server's Postfix or Dovecot already has mail for ${domain}; Ferry never merges a domain's mail into one that exists`,
      );
  }

  /** Origin: what recreates the domain's mail elsewhere (undefined when it has none here). A secret. */
  async export(domain: string): Promise<MailBundle | undefined> {
    if (await this.leftBehind(domain)) return undefined;
    const postfix = await this.opts.postfix.exportLines(domain);
    const users = (await this.opts.dovecot?.exportUsers(domain)) ?? [];
    const mail = await this.opts.postfix.domainMail(domain);
    if (postfix.domains.length + postfix.mailboxes.length + postfix.aliases.length + users.length === 0)
      return undefined;
    return { domain: mail.domain, postfix, users, maildirs: mail.mailboxes.map((m) => m.maildir) };
  }

  /**
   * Target: the bundle's lines added to this server's own files, the domain put in the state of
   * `mode` first (no instant where it delivers here before the switch). Idempotent.
   */
  async install(bundle: MailBundle, mode: SiteMode): Promise<void> {
    await this.applyMode(bundle.domain, mode);
    await this.opts.postfix.installLines(bundle.domain, bundle.postfix);
    if (this.opts.dovecot) await this.opts.dovecot.installUsers(bundle.domain, bundle.users);
  }

  /** Target rollback: exactly what install added goes, and the domain's switches. Idempotent; no-op for a domain Ferry never touched here. */
  async uninstall(domain: string): Promise<void> {
    if (!(await this.has(domain)) && (await this.opts.postfix.domainState(domain)) === 'deliver') return;
    await this.opts.postfix.removeLines(domain);
    await this.opts.dovecot?.removeUsers(domain);
    await this.applyMode(domain, 'serve');
  }

  /** Origin, at the gate: what the cut-over's switches need set up beforehand (Ferry's Postfix maps in main.cf). */
  async prepare(): Promise<void> {
    await this.opts.postfix.prepareSwitches();
  }

  /** Put the domain's mail in the state of the site's mode (the table above). Idempotent. */
  async applyMode(domain: string, mode: SiteMode): Promise<void> {
    if (mode === 'serve') {
      await this.opts.postfix.setDomainState(domain, 'deliver');
      await this.opts.dovecot?.setDomainState(domain, 'serve');
    } else if (mode === 'readonly' || mode === 'hold') {
      await this.opts.postfix.setDomainState(domain, 'defer');
      await this.opts.dovecot?.setDomainState(domain, 'block');
    } else {
      await this.opts.postfix.setDomainState(domain, {
        relay: mode.proxy.address,
        port: this.opts.relayPort ?? 25,
      });
      await this.opts.dovecot?.setDomainState(domain, { proxy: mode.proxy.address });
    }
  }

  /** No message for the domain in Postfix's queue and no Dovecot session of its users. */
  async idle(domain: string): Promise<boolean> {
    if ((await this.opts.postfix.queued(domain)) > 0) return false;
    return ((await this.opts.dovecot?.sessions(domain)) ?? 0) === 0;
  }

  /**
   * The Maildir copy's side of this server, for the agent's syncSite: the origin's Maildirs of the
   * domain, the folder they land in on the target (the same place under its own
   * virtual_mailbox_base) with the target's mail user as owner, and Dovecot's resync after a pass.
   */
  copyHook(): MailCopyHook {
    return {
      mailDirs: async (domain) => {
        if (await this.leftBehind(domain)) return [];
        const { mailboxes } = await this.opts.postfix.domainMail(domain);
        return maildirLayout(domain, mailboxes)?.dirs ?? [];
      },
      mailRoot: async (domain) => {
        if (!(await this.has(domain))) return null;
        const { mailboxes } = await this.opts.postfix.domainMail(domain);
        const layout = maildirLayout(domain, mailboxes);
        if (!layout) return null;
        return { root: layout.root, ...(await this.mailOwner(domain)) };
      },
      afterPass: async (domain) => {
        await this.opts.dovecot?.resync(domain);
      },
    };
  }

  /** Who owns the domain's Maildirs here: Dovecot's user (it reads them), else Postfix's static virtual uid/gid. */
  private async mailOwner(domain: string): Promise<{ uid: number; gid: number }> {
    const user = (await this.opts.dovecot?.users(domain))?.[0];
    if (user) return { uid: user.uid, gid: user.gid };
    const uid = /^static:(\d+)$/.exec(await this.opts.postfix.param('virtual_uid_maps'))?.[1];
    const gid = /^static:(\d+)$/.exec(await this.opts.postfix.param('virtual_gid_maps'))?.[1];
    if (uid === undefined || gid === undefined)
      throw new FerryError(
        'MAIL_NOT_CONFIGURED',
        `cannot tell who owns ${domain}'s Maildirs here: no Dovecot user of the domain and no static virtual_uid_maps/virtual_gid_maps in Postfix`,
      );
    return { uid: Number(uid), gid: Number(gid) };
  }

  /**
   * Origin, at the gate of a site whose `ferry.yaml` entry says `mail: false`: its mail stays here
   * (no state change, no copy, not in the bundle) until a later gate takes it along. Kept in a
   * file beside Ferry's Postfix maps, so an agent restart remembers it.
   */
  async leaveBehind(domain: string, stays: boolean): Promise<void> {
    const marker = this.stayMarker(domain);
    if (stays) {
      await mkdir(dirname(marker), { recursive: true });
      await writeFile(marker, `${domain}\n`);
    } else await rm(marker, { force: true });
  }

  /** Whether the domain's mail stays here (`leaveBehind`). */
  async leftBehind(domain: string): Promise<boolean> {
    return stat(this.stayMarker(domain)).then(
      () => true,
      () => false,
    );
  }

  private stayMarker(domain: string): string {
    const d = domain.toLowerCase().replace(/\.$/, '');
    if (!/^[a-z0-9.-]+$/.test(d)) throw new FerryError('VALIDATION', `"${domain}" is not a domain name`);
    return join(this.opts.postfix.configDir, 'ferry', 'stays', d);
  }

  /** Whether this server has mail of the domain (what Ferry installed counts). */
  async has(domain: string): Promise<boolean> {
    const l = await this.opts.postfix.exportLines(domain);
    return l.domains.length + l.mailboxes.length + l.aliases.length > 0;
  }

  /**
   * After completion. Target: the installed lines become the server's own (marks dropped).
   * Origin: the domain's Maildirs move into a backup under `<dataDir>/backups` kept
   * `backupKeepMs`; the relay and proxy stay, so stale senders and clients still reach the new
   * server (docs/mail.md says how to remove the domain from the maps later).
   */
  async finish(domain: string, role: 'origin' | 'target', backupKeepMs: number): Promise<void> {
    if (role === 'target') {
      await this.opts.postfix.unmark(domain);
      return;
    }
    const mail = await this.opts.postfix.domainMail(domain);
    const dirs: Array<{ from: string; to: string }> = [];
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const backup = join(this.opts.dataDir, 'backups', `${mail.domain}-mail-${stamp}`);
    for (const m of mail.mailboxes) {
      if (
        !(await stat(m.path).then(
          () => true,
          () => false,
        ))
      )
        continue;
      dirs.push({ from: m.path, to: join(backup, 'maildirs', m.maildir) });
    }
    if (dirs.length === 0) return;
    await mkdir(backup, { recursive: true, mode: 0o700 });
    const items: Array<{ kind: 'data'; from: string; backup: string }> = [];
    for (const d of dirs) {
      await mkdir(dirname(d.to), { recursive: true });
      await move(d.from, d.to);
      items.push({ kind: 'data', from: d.from, backup: d.to });
    }
    const manifest = {
      domain: mail.domain,
      createdAt: Date.now(),
      keepUntil: Date.now() + backupKeepMs,
      items,
    };
    await writeFile(join(backup, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
    this.opts.log?.(
      `${mail.domain}: its Maildirs are in ${backup}; mail for it is relayed to its new server`,
    );
  }
}

/** Messages (files of new/ and cur/) and their bytes; MAIL_UNREADABLE when not a readable Maildir. */
export async function countMaildir(path: string): Promise<{ messages: number; bytes: number }> {
  let messages = 0;
  let bytes = 0;
  const folders = [path];
  try {
    // Maildir++ subfolders are `.Name` folders beside new/ cur/ tmp/.
    for (const e of await readdir(path, { withFileTypes: true }))
      if (e.isDirectory() && e.name.startsWith('.') && e.name !== '.' && e.name !== '..')
        folders.push(join(path, e.name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { messages: 0, bytes: 0 };
    throw new FerryError('MAIL_UNREADABLE', `mailbox ${path} cannot be read: ${(err as Error).message}`);
  }
  if (
    !(await stat(join(path, 'cur')).then(
      () => true,
      () => false,
    )) &&
    !(await stat(join(path, 'new')).then(
      () => true,
      () => false,
    ))
  )
    throw new FerryError('MAIL_UNREADABLE', `mailbox ${path} is not a Maildir (no cur/ or new/ in it)`);
  for (const f of folders) {
    for (const sub of ['new', 'cur']) {
      const dir = join(f, sub);
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new FerryError(
          'MAIL_UNREADABLE',
          `mailbox folder ${dir} cannot be read: ${(err as Error).message}`,
        );
      }
      for (const n of names) {
        const st = await stat(join(dir, n)).catch(() => undefined);
        if (!st?.isFile()) continue;
        messages++;
        bytes += st.size;
      }
    }
  }
  return { messages, bytes };
}

/** Which of MAIL_PORTS have a listening TCP socket here (/proc/net/tcp, tcp6). */
export async function listeningMailPorts(): Promise<number[]> {
  const found = new Set<number>();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(f, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] !== '0A') continue; // LISTEN
      const port = parseInt(cols[1]?.split(':')[1] ?? '', 16);
      if (MAIL_PORTS.includes(port)) found.add(port);
    }
  }
  return MAIL_PORTS.filter((p) => found.has(p));
}

async function move(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await new Promise<void>((resolve, reject) =>
      execFile('mv', ['-T', from, to], (e, _o, stderr) =>
        e
          ? reject(new FerryError('MAIL_SYNC', `moving ${from} into the backup: ${stderr.trim()}`))
          : resolve(),
      ),
    );
  }
}

/**
 * The domain's Maildirs as the copy sees them: one folder (`root`) holding one Maildir per user
 * (`<root>/<user>/`). Undefined when the domain has no mailbox; MAIL_UNREADABLE when its
 * mailboxes are not side by side in one folder (the copy could not place them on the target).
 */
export function maildirLayout(
  domain: string,
  mailboxes: Array<{ address: string; path: string }>,
): { root: string; dirs: Array<{ user: string; maildir: string }> } | undefined {
  if (mailboxes.length === 0) return undefined;
  const dirs = mailboxes.map((m) => {
    const path = m.path.replace(/\/+$/, '');
    return { user: path.slice(path.lastIndexOf('/') + 1), maildir: path, parent: dirname(path) };
  });
  const root = dirs[0]!.parent;
  const apart = dirs.find((d) => d.parent !== root);
  if (apart)
    throw new FerryError(
      'MAIL_UNREADABLE',
      `${domain}'s Maildirs are not in one folder (${root} and ${apart.parent}): Ferry moves a domain whose mailboxes sit side by side`,
    );
  return { root, dirs: dirs.map(({ user, maildir }) => ({ user, maildir })) };
}
