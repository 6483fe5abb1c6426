/**
 * One Postfix instance as the agent drives it, through its own commands with `-c <configDir>`:
 * reading a virtual mailbox domain's mailboxes and aliases from the source text of its file maps,
 * carrying the domain's map lines to another server, and switching the domain alone between
 * delivering, deferring (4xx) and relaying to another server.
 *
 * The switches live in two maps Ferry owns, `<configDir>/ferry/hold` and
 * `<configDir>/ferry/transport` (texthash: plain text read at process start), which the first
 * switch puts in front of what main.cf has: `check_recipient_access texthash:.../hold` first in
 * smtpd_recipient_restrictions (and smtpd_relay_restrictions when set), and
 * `transport_maps = texthash:.../transport, <what was there>`. Each switch rewrites the domain's
 * line and reloads Postfix; the maps are files, so a switch survives an agent restart.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { FerryError } from '../../common/errors.js';
import { KeyedLock } from '../../common/keyed-lock.js';

/** What a domain's mail looks like in Postfix's virtual maps. */
export interface PostfixDomainMail {
  domain: string;
  /** The domain is one of virtual_mailbox_domains. */
  listed: boolean;
  /** Each virtual mailbox: its address, its Maildir relative to virtual_mailbox_base, and the full path. */
  mailboxes: Array<{ address: string; maildir: string; path: string }>;
  /** Each virtual alias of the domain (`@domain` for a catch-all) and where it goes. */
  aliases: Array<{ address: string; to: string[] }>;
}

/** The domain's lines of the virtual maps' source files, as they move to another server. */
export interface PostfixLines {
  /** The domain itself, when it is one of virtual_mailbox_domains. */
  domains: string[];
  /** `address maildir` lines of virtual_mailbox_maps. */
  mailboxes: string[];
  /** `address target, target` lines of virtual_alias_maps. */
  aliases: string[];
}

/** How Postfix treats one domain's recipients. `relay`: to `[relay]:port` (default 25), nothing delivered here. */
export type PostfixDomainState = 'deliver' | 'defer' | { relay: string; port?: number };

type MapParam = 'virtual_mailbox_domains' | 'virtual_mailbox_maps' | 'virtual_alias_maps';

/** A lookup table named in main.cf whose source text Ferry reads and writes. */
interface FileMap {
  /** As main.cf names it, e.g. `hash:/etc/postfix/vmailbox`. */
  spec: string;
  type: 'hash' | 'texthash' | 'lmdb' | 'list';
  /** The source text file. */
  source: string;
}

const FILE_MAP_TYPES = new Set(['hash', 'texthash', 'lmdb']);
const DOMAIN_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/;

/** Run one of Postfix's commands; MAIL_NOT_CONFIGURED with its own words when it fails. */
function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const words = (stderr || stdout || err.message).trim().split('\n').slice(-3).join('; ');
        reject(new FerryError('MAIL_NOT_CONFIGURED', `${cmd} ${args.join(' ')}: ${words}`, { cause: err }));
      } else resolve(stdout);
    });
  });
}

/** A map source file's logical lines (continuations joined, comments and blanks dropped). */
export function mapEntries(text: string): Array<{ key: string; value: string; line: string }> {
  const out: Array<{ key: string; value: string; line: string }> = [];
  let cur: string | undefined;
  const flush = () => {
    if (cur === undefined) return;
    const m = /^(\S+)\s*(.*)$/.exec(cur.trim());
    if (m) out.push({ key: m[1]!, value: m[2]!.trim(), line: cur.trim() });
    cur = undefined;
  };
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw) || raw.trim() === '') {
      flush();
      continue;
    }
    if (/^\s/.test(raw) && cur !== undefined) cur += ' ' + raw.trim();
    else {
      flush();
      cur = raw;
    }
  }
  flush();
  return out;
}

/** The domain of a map key (`user@d`, `@d`), or the key itself (a domain list). */
function keyDomain(key: string): string {
  const at = key.lastIndexOf('@');
  return (at >= 0 ? key.slice(at + 1) : key).toLowerCase();
}

function checkDomain(domain: string): string {
  const d = domain.toLowerCase().replace(/\.$/, '');
  if (!DOMAIN_RE.test(d)) throw new FerryError('MAIL_UNREADABLE', `"${domain}" is not a mail domain name`);
  return d;
}

/** One Postfix instance, by its configuration directory. */
export class Postfix {
  readonly configDir: string;
  private readonly ferryDir: string;
  /** Changes of the files run one at a time (two sites' switches share Ferry's maps). */
  private readonly lock = new KeyedLock();

  constructor(opts: { configDir: string }) {
    this.configDir = opts.configDir;
    this.ferryDir = join(opts.configDir, 'ferry');
  }

  /** postconf answers for this directory; MAIL_NOT_CONFIGURED with Postfix's words otherwise. */
  async check(): Promise<void> {
    await run('postconf', ['-c', this.configDir, '-h', 'mail_version']);
  }

  /** One main.cf parameter (`expand`: with $names replaced). */
  async param(name: string, expand = true): Promise<string> {
    const out = await run('postconf', ['-c', this.configDir, '-h', ...(expand ? ['-x'] : []), name]);
    return out.trim();
  }

  private async setParam(name: string, value: string): Promise<void> {
    await run('postconf', ['-c', this.configDir, '-e', `${name}=${value}`]);
  }

  /** The parameter's entries (names, /files and type:name tables), in order. */
  private async entries(name: MapParam): Promise<string[]> {
    return (await this.param(name)).split(/[\s,]+/).filter((e) => e !== '');
  }

  /** The file maps of a parameter; MAIL_UNREADABLE naming a map whose source Ferry cannot read. */
  private async fileMaps(name: MapParam): Promise<{ maps: FileMap[]; names: string[] }> {
    const maps: FileMap[] = [];
    const names: string[] = [];
    for (const e of await this.entries(name)) {
      if (isAbsolute(e)) {
        maps.push({ spec: e, type: 'list', source: e });
        continue;
      }
      const colon = e.indexOf(':');
      if (colon < 0) {
        names.push(e.toLowerCase());
        continue;
      }
      const type = e.slice(0, colon);
      const path = e.slice(colon + 1);
      if (!FILE_MAP_TYPES.has(type) || !isAbsolute(path))
        throw new FerryError(
          'MAIL_UNREADABLE',
          `${name} names ${e}: Ferry reads only file maps (hash:, texthash:, lmdb: or a plain list) of Postfix`,
        );
      maps.push({ spec: e, type: type as FileMap['type'], source: path });
    }
    return { maps, names };
  }

  private async readSource(map: FileMap, name: MapParam): Promise<string> {
    try {
      return await readFile(map.source, 'utf8');
    } catch (err) {
      throw new FerryError(
        'MAIL_UNREADABLE',
        `${name} map ${map.spec}: its source ${map.source} cannot be read (${(err as Error).message})`,
        { cause: err },
      );
    }
  }

  /** The domain's source lines of one parameter's maps (keys of the domain; a list's own line). */
  private async domainLines(name: MapParam, d: string): Promise<{ lines: string[]; listedByName: boolean }> {
    const { maps, names } = await this.fileMaps(name);
    const lines: string[] = [];
    for (const m of maps) {
      const text = await this.readSource(m, name);
      for (const e of mapEntries(text)) {
        if (m.type === 'list') {
          for (const n of e.line.split(/[\s,]+/)) if (n.toLowerCase() === d) lines.push(d);
        } else if (keyDomain(e.key) === d) lines.push(e.line);
      }
    }
    return { lines, listedByName: names.includes(d) };
  }

  /** The domain's mailboxes (Maildirs under virtual_mailbox_base), aliases, and whether it is a virtual mailbox domain. */
  async domainMail(domain: string): Promise<PostfixDomainMail> {
    const d = checkDomain(domain);
    const lines = await this.exportLines(d);
    const base = await this.param('virtual_mailbox_base');
    const mailboxes: PostfixDomainMail['mailboxes'] = [];
    for (const l of lines.mailboxes) {
      const [address, maildir = ''] = l.split(/\s+/);
      if (!address || address.startsWith('@')) continue;
      if (!maildir.endsWith('/'))
        throw new FerryError(
          'MAIL_UNREADABLE',
          `${address} is delivered to "${maildir}", a mailbox file: Ferry moves Maildirs only (a path ending in /)`,
        );
      mailboxes.push({ address: address.toLowerCase(), maildir, path: join(base, maildir) });
    }
    const aliases = lines.aliases.map((l) => {
      const m = /^(\S+)\s+(.*)$/.exec(l);
      return {
        address: (m?.[1] ?? l).toLowerCase(),
        to: (m?.[2] ?? '').split(/[\s,]+/).filter((x) => x !== ''),
      };
    });
    return { domain: d, listed: lines.domains.length > 0, mailboxes, aliases };
  }

  /** The domain's lines of virtual_mailbox_domains, virtual_mailbox_maps and virtual_alias_maps. */
  async exportLines(domain: string): Promise<PostfixLines> {
    const d = checkDomain(domain);
    const dom = await this.domainLines('virtual_mailbox_domains', d);
    const mailboxes = (await this.domainLines('virtual_mailbox_maps', d)).lines;
    const aliases = (await this.domainLines('virtual_alias_maps', d)).lines;
    const listed = dom.listedByName || dom.lines.length > 0;
    return { domains: listed ? [d] : [], mailboxes, aliases };
  }

  /** Whether this Postfix has mail of the domain that Ferry did not install for it. */
  async hasDomain(domain: string): Promise<boolean> {
    const d = checkDomain(domain);
    const own = await this.exportLinesExcludingMarked(d);
    return own.domains.length + own.mailboxes.length + own.aliases.length > 0;
  }

  private async exportLinesExcludingMarked(d: string): Promise<PostfixLines> {
    const out: PostfixLines = { domains: [], mailboxes: [], aliases: [] };
    const params: Array<[MapParam, keyof PostfixLines]> = [
      ['virtual_mailbox_domains', 'domains'],
      ['virtual_mailbox_maps', 'mailboxes'],
      ['virtual_alias_maps', 'aliases'],
    ];
    for (const [param, key] of params) {
      const { maps, names } = await this.fileMaps(param);
      if (names.includes(d)) out[key].push(d);
      for (const m of maps) {
        const text = stripMarked(await this.readSource(m, param), d);
        for (const e of mapEntries(text)) {
          if (m.type === 'list') {
            if (e.line.split(/[\s,]+/).some((n) => n.toLowerCase() === d)) out[key].push(d);
          } else if (keyDomain(e.key) === d) out[key].push(e.line);
        }
      }
    }
    return out;
  }

  /**
   * Append the domain's lines to this server's own map source files (the first file map of each
   * parameter), each marked `# ferry: <domain>`; postmap, reload. Idempotent. MAIL_DOMAIN_EXISTS
   * when this Postfix already has mail of the domain; MAIL_NOT_CONFIGURED when a parameter has no
   * file map to append to.
   */
  installLines(domain: string, lines: PostfixLines): Promise<void> {
    return this.lock.run('files', () => this.installLinesNow(domain, lines));
  }

  private async installLinesNow(domain: string, lines: PostfixLines): Promise<void> {
    const d = checkDomain(domain);
    for (const l of [...lines.domains, ...lines.mailboxes, ...lines.aliases]) {
      const first = l.split(/\s+/)[0] ?? '';
      if (keyDomain(first) !== d || /[\r\n]/.test(l))
        throw new FerryError('MAIL_UNREADABLE', `the bundle's line "${l}" is not one of ${d}`);
    }
    if (await this.hasDomain(d))
      throw new FerryError(
        'MAIL_DOMAIN_EXISTS',
        `Postfix (${this.configDir}) already has mail for ${d}; Ferry never merges a domain's mail into one that exists`,
      );
    const plan: Array<[MapParam, string[]]> = [
      ['virtual_mailbox_domains', lines.domains],
      ['virtual_mailbox_maps', lines.mailboxes],
      ['virtual_alias_maps', lines.aliases],
    ];
    const targets: Array<[FileMap, string[]]> = [];
    for (const [param, ls] of plan) {
      if (ls.length === 0) continue;
      const { maps } = await this.fileMaps(param);
      const map = maps[0];
      if (!map)
        throw new FerryError(
          'MAIL_NOT_CONFIGURED',
          `Postfix (${this.configDir}) has no file map in ${param} to add ${d}'s lines to (a hash:, texthash:, lmdb: map or a list file)`,
        );
      const entries =
        param === 'virtual_mailbox_domains' && map.type !== 'list' ? ls.map((x) => `${x} OK`) : ls;
      const at = targets.find(([m]) => m.source === map.source);
      if (at) at[1].push(...entries);
      else targets.push([map, [...entries]]);
    }
    for (const [map, ls] of targets) {
      const text = stripMarked(await readFile(map.source, 'utf8').catch(() => ''), d);
      const add = ls.map((l) => `# ferry: ${d}\n${l}\n`).join('');
      await writeAtomic(map.source, (text === '' || text.endsWith('\n') ? text : text + '\n') + add);
      await this.postmap(map);
    }
    await this.reload();
  }

  /** Remove exactly the lines installLines added for the domain; postmap, reload. Idempotent. */
  removeLines(domain: string, opts: { reload?: boolean } = {}): Promise<void> {
    return this.lock.run('files', () => this.removeLinesNow(domain, opts));
  }

  private async removeLinesNow(domain: string, opts: { reload?: boolean }): Promise<void> {
    const d = checkDomain(domain);
    let changed = false;
    for (const param of ['virtual_mailbox_domains', 'virtual_mailbox_maps', 'virtual_alias_maps'] as const) {
      const { maps } = await this.fileMaps(param);
      for (const map of maps) {
        const text = await readFile(map.source, 'utf8').catch(() => undefined);
        if (text === undefined) continue;
        const left = stripMarked(text, d);
        if (left === text) continue;
        await writeAtomic(map.source, left);
        await this.postmap(map);
        changed = true;
      }
    }
    if (changed && opts.reload !== false) await this.reload();
  }

  /** The domain's installed lines become this server's own: their `# ferry:` marks go (no reload needed). */
  unmark(domain: string): Promise<void> {
    return this.lock.run('files', () => this.unmarkNow(domain));
  }

  private async unmarkNow(domain: string): Promise<void> {
    const d = checkDomain(domain);
    for (const param of ['virtual_mailbox_domains', 'virtual_mailbox_maps', 'virtual_alias_maps'] as const) {
      const { maps } = await this.fileMaps(param);
      for (const map of maps) {
        const text = await readFile(map.source, 'utf8').catch(() => undefined);
        if (text === undefined) continue;
        const left = text
          .split('\n')
          .filter((l) => l.trim() !== `# ferry: ${d}`)
          .join('\n');
        if (left !== text) await writeAtomic(map.source, left);
      }
    }
  }

  private async postmap(map: FileMap): Promise<void> {
    if (map.type === 'hash' || map.type === 'lmdb')
      await run('postmap', ['-c', this.configDir, `${map.type}:${map.source}`]);
  }

  /** Reload a running Postfix (a stopped one reads its files when it starts). */
  async reload(): Promise<void> {
    // Not `postfix status` first: it takes seconds (its script checks the installation), and
    // this runs inside the cut-over's hold. A stopped Postfix reads its files when it starts.
    await run('postfix', ['-c', this.configDir, 'reload']).catch((err: unknown) => {
      if (!/not running/.test((err as Error).message)) throw err;
    });
  }

  private holdMap(): string {
    return join(this.ferryDir, 'hold');
  }

  private transportMap(): string {
    return join(this.ferryDir, 'transport');
  }

  /** Ferry's maps in main.cf ahead of a move (at the gate), so that the hold's switch is a map change and a reload. Idempotent. */
  prepareSwitches(): Promise<void> {
    return this.lock.run('files', async () => {
      if (await this.installSwitches()) await this.reload();
    });
  }

  /** Put Ferry's two maps in front of main.cf's restrictions and transport_maps, once (what was there stays). */
  private async installSwitches(): Promise<boolean> {
    await mkdir(this.ferryDir, { recursive: true });
    for (const f of [this.holdMap(), this.transportMap()])
      await readFile(f).catch(() => writeFile(f, '# Ferry: per-domain switches (managed by ferry agent)\n'));
    const access = `check_recipient_access texthash:${this.holdMap()}`;
    let changed = false;
    for (const p of ['smtpd_recipient_restrictions', 'smtpd_relay_restrictions']) {
      const now = await this.param(p, false);
      if (now.includes(`texthash:${this.holdMap()}`)) continue;
      if (p === 'smtpd_relay_restrictions' && now === '') continue;
      await this.setParam(p, now === '' ? access : `${access}, ${now}`);
      changed = true;
    }
    const transport = `texthash:${this.transportMap()}`;
    const now = await this.param('transport_maps', false);
    if (!now.includes(transport)) {
      await this.setParam('transport_maps', now === '' ? transport : `${transport}, ${now}`);
      changed = true;
    }
    return changed;
  }

  /** Switch the domain's recipients (and only them): deliver here, defer with 4xx, or relay elsewhere. Idempotent. */
  setDomainState(domain: string, state: PostfixDomainState): Promise<void> {
    return this.lock.run('files', () => this.setDomainStateNow(domain, state));
  }

  private async setDomainStateNow(domain: string, state: PostfixDomainState): Promise<void> {
    const d = checkDomain(domain);
    // Delivering is what a domain Ferry never switched does: main.cf stays as it is.
    if (state === 'deliver' && (await this.domainState(d)) === 'deliver') return;
    let changed = await this.installSwitches();
    const hold =
      state === 'defer' ? `${d} 450 4.2.1 mail for ${d} is being moved, try again later` : undefined;
    let transport: string | undefined;
    if (typeof state === 'object') {
      const addr = state.relay.includes(':') ? `[ipv6:${state.relay}]` : `[${state.relay}]`;
      if (!/^[0-9a-fA-F.:]+$/.test(state.relay))
        throw new FerryError('MAIL_NOT_CONFIGURED', `relay address "${state.relay}" is not an IP address`);
      transport = `${d} smtp:${addr}:${state.port ?? 25}`;
    }
    changed = (await this.setLine(this.holdMap(), d, hold)) || changed;
    changed = (await this.setLine(this.transportMap(), d, transport)) || changed;
    if (changed) await this.reload();
  }

  /** The domain's state as Ferry's maps say. */
  async domainState(domain: string): Promise<PostfixDomainState> {
    const d = checkDomain(domain);
    const t = await readFile(this.transportMap(), 'utf8').catch(() => '');
    const relay = mapEntries(t).find((e) => e.key === d);
    if (relay) {
      const m = /^smtp:\[(?:ipv6:)?([^\]]+)\]:(\d+)$/.exec(relay.value);
      if (m) return { relay: m[1]!, port: Number(m[2]) };
    }
    const h = await readFile(this.holdMap(), 'utf8').catch(() => '');
    return mapEntries(h).some((e) => e.key === d) ? 'defer' : 'deliver';
  }

  /** Replace the domain's line in one of Ferry's maps (none: removed); whether the file changed. */
  private async setLine(file: string, d: string, line: string | undefined): Promise<boolean> {
    const text = await readFile(file, 'utf8').catch(() => '');
    const kept = text.split('\n').filter((l) => l !== '' && (l.split(/\s+/)[0] ?? '').toLowerCase() !== d);
    if (line) kept.push(line);
    const next = kept.join('\n') + '\n';
    if (next === text) return false;
    await writeAtomic(file, next);
    return true;
  }

  /** Messages in Postfix's queue with a recipient of the domain (postqueue -j). */
  async queued(domain: string): Promise<number> {
    const d = checkDomain(domain);
    const out = await run('postqueue', ['-c', this.configDir, '-j']);
    let n = 0;
    for (const line of out.split('\n')) {
      if (line.trim() === '') continue;
      let msg: { recipients?: Array<{ address?: string }> };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        continue;
      }
      if ((msg.recipients ?? []).some((r) => keyDomain(r.address ?? '') === d)) n++;
    }
    return n;
  }
}

/** The text without the lines marked for `d` (each `# ferry: d` line and the line after it). */
function stripMarked(text: string, d: string): string {
  const lines = text.split('\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() === `# ferry: ${d}`) {
      i++;
      continue;
    }
    out.push(lines[i]!);
  }
  return out.join('\n');
}

/** Replace a file's text in one step, keeping its mode. */
async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.ferry-tmp`;
  const mode = await stat(file).then(
    (s) => s.mode & 0o7777,
    () => 0o644,
  );
  await writeFile(tmp, text, { mode });
  await rename(tmp, file);
}
