/**
 * The Dovecot side of a domain's mail move: its users and Maildirs (doveadm), its passwd-file
 * lines (the bundle), and the per-domain login switches.
 *
 * The switches live in `<config dir>/ferry/`: `passdb.conf`, which Ferry writes from
 * `state.json` and which the Dovecot config includes on its first line (added once, so its
 * passdbs come before every other one), and `held-login`, a checkpassword program that only
 * answers "temporary failure" (exit 111). For a domain:
 * - `block`: a checkpassword passdb limited to the domain's users (`username_filter`), every
 *   result returning at once: logins fail with Dovecot's temporary failure (IMAP
 *   `NO [UNAVAILABLE]`, POP3 `-ERR [SYS/TEMP]`), so clients retry; open sessions are kicked.
 *   (A `nologin=y` reply is not temporary in Dovecot 2.3: it answers `[CONTACTADMIN]`.)
 * - `{proxy}`: a static passdb for the domain's users, `proxy=y host=<address> nopassword=y`:
 *   the login goes to the address at the protocol's own port (143, 110), which checks the password.
 * - `serve`: the domain's passdbs are gone.
 * Other domains' users are never matched by these passdbs. After a change, `doveadm reload`, and
 * the switch is waited for through `doveadm auth test` on one of the domain's users.
 */
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { FerryError } from '../../common/errors.js';
import type { ErrorCode } from '../../common/error-codes.js';
import { exec } from '../webstack/system.js';

/** One Dovecot user of a domain and its Maildir. */
export interface MailUser {
  user: string;
  home: string;
  maildir: string;
  uid: number;
  gid: number;
}

/** A domain's login state in Dovecot. */
export type DovecotDomainState = 'serve' | 'block' | { proxy: string };

const DOMAIN_RE =
  /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*$/;
const INCLUDE_MARK = '# ferry: login switches of domains being moved (written by the ferry agent)';
const SWITCH_WAIT_MS = 15_000;

/** A Dovecot instance, reached with `doveconf -c FILE` and `doveadm -c FILE`. */
export class Dovecot {
  private readonly configFile: string;
  private readonly dir: string;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(opts: { configFile: string }) {
    this.configFile = resolve(opts.configFile);
    this.dir = join(dirname(this.configFile), 'ferry');
  }

  /** Dovecot's config parses and doveadm reaches the running server; else MAIL_NOT_CONFIGURED. */
  async check(): Promise<void> {
    await this.doveconf(['-n'], 'MAIL_NOT_CONFIGURED');
    await this.doveadm(['who'], 'MAIL_NOT_CONFIGURED');
  }

  /** The domain's users (userdb iteration) with their Maildir; MAIL_UNREADABLE for a non-Maildir one. */
  async users(domain: string): Promise<MailUser[]> {
    const d = checkDomain(domain);
    const { stdout } = await this.doveadm(['user', `*@${d}`], 'MAIL_UNREADABLE');
    const names = stdout
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && domainOf(l) === d)
      .sort();
    const out: MailUser[] = [];
    for (const user of names) {
      const fields = new Map<string, string>();
      const info = await this.doveadm(['user', user], 'MAIL_UNREADABLE');
      for (const line of info.stdout.split('\n')) {
        const tab = line.indexOf('\t');
        if (tab > 0) fields.set(line.slice(0, tab), line.slice(tab + 1));
      }
      const mail = fields.get('mail') ?? '';
      if (!/^maildir:/i.test(mail))
        throw new FerryError(
          'MAIL_UNREADABLE',
          `${user}'s mail is "${mail || 'not set'}" in Dovecot, not a Maildir; Ferry moves Maildir mailboxes only`,
        );
      const path = await this.doveadm(['mailbox', 'path', '-u', user, 'INBOX'], 'MAIL_UNREADABLE');
      const uid = Number(fields.get('uid'));
      const gid = Number(fields.get('gid'));
      const home = fields.get('home') ?? '';
      const maildir = path.stdout.trim();
      if (!Number.isInteger(uid) || !Number.isInteger(gid) || !maildir.startsWith('/'))
        throw new FerryError('MAIL_UNREADABLE', `Dovecot gives ${user} no uid, gid or Maildir path`);
      out.push({ user, home, maildir, uid, gid });
    }
    return out;
  }

  /** The domain's lines of the passwd-file passdb(s) (password hashes: a secret, never log them). */
  async exportUsers(domain: string): Promise<string[]> {
    const d = checkDomain(domain);
    const files = await this.passwdFiles(d);
    const seen = new Set<string>();
    const lines: string[] = [];
    for (const file of files) {
      const text = await readFile(file, 'utf8').catch((err: Error) => {
        throw new FerryError('MAIL_UNREADABLE', `cannot read Dovecot's passwd-file ${file}: ${err.message}`);
      });
      for (const line of text.split('\n')) {
        const user = userOf(line);
        if (user === undefined || domainOf(user) !== d || seen.has(user)) continue;
        seen.add(user);
        lines.push(line);
      }
    }
    return lines;
  }

  /**
   * Target: append `lines` (the domain's users only) to the passwd-file of its passdb, between
   * `# ferry: <domain>` marks; a second call replaces what the first added.
   */
  async installUsers(domain: string, lines: string[]): Promise<void> {
    const d = checkDomain(domain);
    for (const line of lines) {
      const user = userOf(line);
      if (user === undefined || domainOf(user) !== d || line.includes('\n'))
        throw new FerryError(
          'MAIL_UNREADABLE',
          `a passwd-file line for ${d} names ${user === undefined ? 'no user' : `user ${user}`}; only the domain's users are installed`,
        );
    }
    return this.serialize(async () => {
      const file = (await this.passwdFiles(d))[0]!;
      const text = await readFile(file, 'utf8').catch(() => '');
      const kept = withoutBlock(text, d);
      const block = [`# ferry: ${d}`, ...lines, `# ferry: end ${d}`];
      const body = kept === '' || kept.endsWith('\n') ? kept : `${kept}\n`;
      await writeAtomic(file, `${body}${block.join('\n')}\n`);
    });
  }

  /** Target: remove exactly what `installUsers` added for the domain (no-op when none). */
  async removeUsers(domain: string): Promise<void> {
    const d = checkDomain(domain);
    return this.serialize(async () => {
      for (const file of await this.passwdFiles(d)) {
        const text = await readFile(file, 'utf8').catch(() => undefined);
        if (text === undefined) continue;
        const kept = withoutBlock(text, d);
        if (kept !== text) await writeAtomic(file, kept);
      }
    });
  }

  /** Whether Dovecot has a user of the domain. */
  async hasDomain(domain: string): Promise<boolean> {
    const d = checkDomain(domain);
    const { stdout } = await this.doveadm(['user', `*@${d}`], 'MAIL_UNREADABLE');
    return stdout.split('\n').some((l) => domainOf(l.trim()) === d);
  }

  /** Switch the domain's logins (serve | block | proxy to an address); see the file's comment. */
  async setDomainState(domain: string, state: DovecotDomainState): Promise<void> {
    const d = checkDomain(domain);
    if (typeof state === 'object' && !isIP(state.proxy))
      throw new FerryError('MAIL_NOT_CONFIGURED', `proxy address "${state.proxy}" is not an IP address`);
    if (state !== 'serve' && state !== 'block' && typeof state !== 'object')
      throw new FerryError('MAIL_NOT_CONFIGURED', `unknown mail login state ${JSON.stringify(state)}`);
    return this.serialize(async () => {
      const states = await this.readStates();
      const before = JSON.stringify(states[d] ?? 'serve');
      if (state === 'serve') delete states[d];
      else states[d] = state;
      await this.ensureInclude();
      if (before !== JSON.stringify(state)) {
        // The user to probe with is found before the reload: while Dovecot restarts its auth
        // process, a userdb listing can fail with "Disconnected unexpectedly".
        const probe = await this.probeUser(d);
        await this.writeStates(states);
        await this.doveadm(['reload'], 'MAIL_NOT_CONFIGURED');
        await this.waitSwitch(d, state, probe);
      }
      if (state === 'block') await this.kick(d);
    });
  }

  /** Open IMAP/POP3 sessions (connections) of the domain's users. */
  async sessions(domain: string): Promise<number> {
    const d = checkDomain(domain);
    const { stdout } = await this.doveadm(['who', '-1', `*@${d}`], 'MAIL_NOT_CONFIGURED');
    return stdout.split('\n').filter((l) => domainOf(l.split(/\s+/)[0] ?? '') === d).length;
  }

  /** Rebuild the indexes of every mailbox of the domain's users from their files. */
  async resync(domain: string): Promise<void> {
    for (const u of await this.users(domain))
      await this.doveadm(['force-resync', '-u', u.user, '*'], 'MAIL_SYNC');
  }

  // --- internals ----------------------------------------------------------------------------

  private async kick(d: string): Promise<void> {
    // doveadm kick exits non-zero when nobody was connected.
    await this.doveadm(['kick', `*@${d}`], 'MAIL_NOT_CONFIGURED').catch(() => undefined);
    const deadline = Date.now() + SWITCH_WAIT_MS;
    while ((await this.sessions(d)) > 0) {
      if (Date.now() > deadline)
        throw new FerryError('MAIL_NOT_CONFIGURED', `Dovecot sessions of ${d} are still open after a kick`);
      await sleep(100);
      await this.doveadm(['kick', `*@${d}`], 'MAIL_NOT_CONFIGURED').catch(() => undefined);
    }
  }

  /** One of the domain's users (or a made-up one when it has none), for `waitSwitch`'s lookups. */
  private async probeUser(d: string): Promise<string> {
    const { stdout } = await this.doveadm(['user', `*@${d}`], 'MAIL_NOT_CONFIGURED');
    return (
      stdout
        .split('\n')
        .find((l) => domainOf(l.trim()) === d)
        ?.trim() ?? `ferry-probe@${d}`
    );
  }

  /**
   * Until a passdb lookup (`doveadm auth lookup`, no password: no failure delay) of one of the
   * domain's users answers as `state` says: the held passdb cannot look up (a temporary
   * failure), the proxy passdb answers its host, and otherwise neither.
   */
  private async waitSwitch(d: string, state: DovecotDomainState, probe: string): Promise<void> {
    const deadline = Date.now() + SWITCH_WAIT_MS;
    for (;;) {
      const out = await this.doveadmRaw(['auth', 'lookup', probe]);
      const held = /PASS lookup failed/i.test(out.stdout);
      const proxied = /^\s*proxy\s*:\s*y/m.test(out.stdout) && /^\s*host\s*:\s*(\S+)/m.exec(out.stdout)?.[1];
      const ok =
        state === 'block' ? held : typeof state === 'object' ? proxied === state.proxy : !held && !proxied;
      if (ok) return;
      if (Date.now() > deadline)
        throw new FerryError(
          'MAIL_NOT_CONFIGURED',
          `Dovecot did not take the login switch of ${d} within ${SWITCH_WAIT_MS / 1000} s after doveadm reload`,
        );
      await sleep(50);
    }
  }

  private async readStates(): Promise<Record<string, DovecotDomainState>> {
    const text = await readFile(join(this.dir, 'state.json'), 'utf8').catch(() => '{}');
    try {
      return JSON.parse(text) as Record<string, DovecotDomainState>;
    } catch {
      throw new FerryError(
        'MAIL_NOT_CONFIGURED',
        `${join(this.dir, 'state.json')} is not JSON; fix or remove it`,
      );
    }
  }

  /** state.json, and passdb.conf rendered from it. */
  private async writeStates(states: Record<string, DovecotDomainState>): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o755 });
    const held = Object.keys(states)
      .filter((d) => states[d] === 'block')
      .sort();
    const lines = [
      '# Written by the ferry agent from state.json: logins of domains being moved. Do not edit.',
    ];
    if (held.length > 0)
      lines.push(
        'passdb {',
        '  driver = checkpassword',
        `  args = ${join(this.dir, 'held-login')}`,
        `  username_filter = ${held.map((d) => `*@${d}`).join(' ')}`,
        '  result_success = return-fail',
        '  result_failure = return-fail',
        '  result_internalfail = return-fail',
        '}',
      );
    for (const d of Object.keys(states).sort()) {
      const s = states[d];
      if (typeof s !== 'object') continue;
      lines.push(
        'passdb {',
        '  driver = static',
        `  args = nopassword=y proxy=y host=${s.proxy}`,
        `  username_filter = *@${d}`,
        '}',
      );
    }
    await writeAtomic(join(this.dir, 'passdb.conf'), lines.join('\n') + '\n');
    await writeAtomic(join(this.dir, 'state.json'), JSON.stringify(states, null, 2) + '\n');
  }

  /** The include on the config's first line, the held-login program and an empty passdb.conf, once. */
  private async ensureInclude(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o755 });
    const prog = join(this.dir, 'held-login');
    if (!existsSync(prog)) {
      await writeAtomic(prog, '#!/bin/sh\n# Dovecot checkpassword: 111 is a temporary failure.\nexit 111\n');
      await chmod(prog, 0o755);
    }
    const conf = join(this.dir, 'passdb.conf');
    if (!existsSync(conf)) await this.writeStates(await this.readStates());
    const text = await readFile(this.configFile, 'utf8').catch((err: Error) => {
      throw new FerryError('MAIL_NOT_CONFIGURED', `cannot read ${this.configFile}: ${err.message}`);
    });
    const include = `!include_try ${conf}`;
    if (text.split('\n').includes(include)) return;
    await writeAtomic(this.configFile, `${INCLUDE_MARK}\n${include}\n${text}`);
    await this.doveconf(['-n'], 'MAIL_NOT_CONFIGURED');
  }

  /** The passwd-file(s) of the passdbs that are not Ferry's, for users of `d`; MAIL_UNREADABLE if none. */
  private async passwdFiles(d: string): Promise<string[]> {
    const { stdout } = await this.doveconf(['-n', 'passdb'], 'MAIL_NOT_CONFIGURED');
    // Ferry's own switches (passdb.conf) are not the server's users.
    const ours = await readFile(join(this.dir, 'passdb.conf'), 'utf8').catch(() => '');
    const files: string[] = [];
    const drivers: string[] = [];
    for (const block of stdout.split(/^passdb\b/m).slice(1)) {
      const driver = /^\s*driver = (\S+)/m.exec(block)?.[1] ?? '';
      const args = /^\s*args = (.*)$/m.exec(block)?.[1]?.trim() ?? '';
      if (/^\s*master = yes/m.test(block)) continue;
      if (args.includes(`${this.dir}/`) || (args !== '' && ours.includes(`  args = ${args}\n`))) continue;
      drivers.push(driver);
      if (driver !== 'passwd-file') continue;
      const path = args
        .split(/\s+/)
        .filter((a) => !/^[a-z_]+=/.test(a))
        .pop();
      if (!path) continue;
      const expanded = path.replace(/%\{domain\}|%d/g, d);
      if (expanded.includes('%'))
        throw new FerryError(
          'MAIL_UNREADABLE',
          `Dovecot's passwd-file ${path} depends on more than the domain; Ferry reads one file per domain`,
        );
      files.push(expanded);
    }
    if (files.length === 0)
      throw new FerryError(
        'MAIL_UNREADABLE',
        `Dovecot's passdb is ${drivers.join(', ') || 'not set'}, not a passwd-file: Ferry cannot carry its users' passwords`,
      );
    return files;
  }

  private doveconf(args: string[], code: ErrorCode): Promise<{ stdout: string; stderr: string }> {
    return exec(['doveconf', '-c', this.configFile, ...args], code);
  }

  private doveadm(args: string[], code: ErrorCode): Promise<{ stdout: string; stderr: string }> {
    return exec(['doveadm', '-c', this.configFile, ...args], code, { timeoutMs: 120_000 });
  }

  /** doveadm, its output whatever its exit code (auth test exits non-zero for a refused login). */
  private doveadmRaw(args: string[]): Promise<{ stdout: string }> {
    return this.doveadm(args, 'MAIL_NOT_CONFIGURED').then(
      (r) => r,
      (err: FerryError) => ({ stdout: err.message }),
    );
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }
}

function checkDomain(domain: string): string {
  const d = domain.trim().toLowerCase().replace(/\.$/, '');
  if (!DOMAIN_RE.test(d)) throw new FerryError('MAIL_UNREADABLE', `"${domain}" is not a domain name`);
  return d;
}

function domainOf(user: string): string | undefined {
  const at = user.lastIndexOf('@');
  return at > 0 ? user.slice(at + 1).toLowerCase() : undefined;
}

/** The user of a passwd-file line (undefined for comments and blank lines). */
function userOf(line: string): string | undefined {
  if (line.trim() === '' || line.trimStart().startsWith('#')) return undefined;
  const colon = line.indexOf(':');
  return colon > 0 ? line.slice(0, colon) : undefined;
}

/** `text` without the `# ferry: <d>` … `# ferry: end <d>` block. */
function withoutBlock(text: string, d: string): string {
  const out: string[] = [];
  let inBlock = false;
  const lines = text.split('\n');
  for (const line of lines) {
    if (line === `# ferry: ${d}`) inBlock = true;
    else if (inBlock && line === `# ferry: end ${d}`) inBlock = false;
    else if (!inBlock) out.push(line);
  }
  return out.join('\n');
}

/** Replace `file` with `text` at once, keeping its mode and owners (0644 root for a new one). */
async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.ferry-new`;
  const st = await stat(file).catch(() => undefined);
  const mode = st ? st.mode & 0o7777 : 0o644;
  await writeFile(tmp, text, { mode });
  await chmod(tmp, mode);
  if (st) await chown(tmp, st.uid, st.gid);
  await rename(tmp, file);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
