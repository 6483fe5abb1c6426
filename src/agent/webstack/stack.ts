/**
 * The web stack: a real site of the server's own web server (nginx or Apache), gated, exported,
 * recreated on a target and retired, driven by `HostAgent`.
 *
 * Gating (origin) writes the flavor's front and backend into Ferry's include folder and moves the
 * site's original file(s) to `<dataDir>/webstack/<domain>/original/`; a file that holds other
 * blocks too is replaced by a copy with the site's lines commented out, so the other sites stay.
 * Ungating moves the originals back byte for byte. Installing (target) recreates users, data
 * folder, certificate and key, pool and configuration, each checked by its own tool before any
 * reload, and takes every step back when one is refused. What each site has here is saved in
 * `<dataDir>/webstack/<domain>/state.json`, so an agent restarted keeps serving it the same way.
 */
import type { MailBundle } from '../mail/mail.js';
import { createHash } from 'node:crypto';
import { constants, readFileSync } from 'node:fs';
import {
  chmod,
  chown,
  copyFile,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  symlink,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { createServer } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { FerryError } from '../../common/errors.js';
import { canConnect } from '../../common/net.js';
import { sleep } from '../../common/time.js';
import {
  readWebSites,
  siteDataDirOf,
  tokenizeNginx,
  type SiteNeed,
  type SiteNeeds,
  type WebConfigOptions,
  type WebSite,
} from '../webconfig/index.js';
import type { SiteConfigFile, WebFlavor, WebStackLayout } from './flavor.js';
import {
  checkPhpFpm,
  ensureGroup,
  ensureUser,
  exec,
  getGroup,
  getUser,
  readCrontab,
  reloadPhpFpm,
  writeCrontab,
  type PhpFpmOptions,
  type SystemGroup,
  type SystemUser,
} from './system.js';
import { assertNothingLacking, lacksOf, phpFpmNeeds, type PhpFpmLayout } from './target-check.js';

/**
 * Everything that recreates a site on another server besides its data. Holds the private keys'
 * contents: never logged, never in events or the controller's API.
 */
export interface WebSiteBundle {
  domain: string;
  server: 'nginx' | 'apache';
  /** The site's blocks merged: every listen, name, path and certificate. */
  site: WebSite;
  files: SiteConfigFile[];
  /** The PHP-FPM pool file, when a pool runs the site. */
  pool: { path: string; text: string } | null;
  /** Certificate and key files with their contents (`key`: written root-owned, mode 0600). */
  certificates: Array<{ path: string; content: string; key: boolean }>;
  user: SystemUser | null;
  group: SystemGroup | null;
  /** The user's crontab, empty when none. */
  crontab: string;
  /** The folder holding every path of the site, with its owner (names) and mode. */
  dataDir: { path: string; user: string; group: string; mode: number } | null;
  /** The domain's mail, added by the agent when it has a mail configuration and the domain has mail. */
  mail?: MailBundle;
}

/** What the agent keeps of one site of the web stack (no secrets). */
interface StackState {
  domain: string;
  role: 'origin' | 'target';
  site: WebSite;
  files: SiteConfigFile[];
  ports: { http: number; https: number };
  /** Files the stack wrote into the include folder. */
  written: string[];
  /** Origin: original files moved aside (`remainder`: a copy without the site stands in). */
  moved: Array<{ from: string; to: string; remainder: boolean }>;
  /** Target: what the install created, to take back. */
  created: {
    users: string[];
    groups: string[];
    files: string[];
    dataDir: string | null;
    crontab: string | null;
  };
  dataDir: string | null;
  pool: string | null;
  bundleHash?: string;
}

/** How a gated site reaches its backend (the site app's `upstream` option). */
export interface GateUpstream {
  http: { address: string; port: number };
  https: { address: string; port: number };
  tlsPort?: number;
  /** The site's other names, which the gate routes to the same site. */
  aliases?: string[];
  /**
   * The site's own certificates (PEM, certificate blocks only), trusted beside the system's CAs
   * when the gate proxies HTTPS to the target, which serves the same ones: a self-signed site
   * certificate verifies too (a privately issued one when its file holds the chain up to the root).
   */
  ca?: string;
}

export interface WebStackOptions {
  flavor: WebFlavor;
  /** How the server's own sites are read (`--web-config`). */
  webConfig: WebConfigOptions;
  /** The agent's data folder: state under `webstack/`, backups under `backups/`. */
  dataDir: string;
  /** Folder the web server includes where the stack writes its configuration. */
  includeDir: string;
  /** Where the gate (the agent's site app) listens. */
  gate: { address: string; port: number };
  /** The server's shared IP: the target's front listens there in place of the origin's address. */
  sharedIp: string;
  /** The agent's per-request counters (nginx syslog port), when it has them. */
  statsPort?: () => number | undefined;
  phpFpm?: PhpFpmOptions;
  /** Where this server's PHP-FPM versions are (what a site's pool needs here). Default Debian's. */
  phpLayout?: PhpFpmLayout;
  /** The crontab command. Default `['crontab']` (without it, Debian's spool file). */
  crontabCommand?: string[];
  /** Longest a reload may take to show (the backend listening). Default 10 000 ms. */
  reloadTimeoutMs?: number;
  /**
   * Waits until the gate has no request of `domain` in flight and none arriving (the agent asks its
   * site app). A target's finish calls it between its two reloads: the web server's old workers
   * finish the requests they had through the gate and the backend before the backend goes.
   */
  settle?: (domain: string) => Promise<void>;
  log?: (message: string) => void;
}

const BACKEND_ADDRESS = '127.0.0.1';

/** The real sites of one server that Ferry gates, moves and retires. */
export class WebStack {
  private readonly states = new Map<string, StackState>();

  constructor(private readonly opts: WebStackOptions) {}

  /** Load what the last run kept; returns each site's upstream for the site app. */
  async load(): Promise<Array<{ domain: string; upstream: GateUpstream }>> {
    const root = join(this.opts.dataDir, 'webstack');
    const names = await readdir(root).catch(() => [] as string[]);
    for (const n of names) {
      const text = await readFile(join(root, n, 'state.json'), 'utf8').catch(() => undefined);
      if (!text) continue;
      const s = JSON.parse(text) as StackState;
      this.states.set(s.domain, s);
    }
    return [...this.states.values()].map((s) => ({ domain: s.domain, upstream: this.upstreamOf(s) }));
  }

  /**
   * Write again what the sites' generated files should hold now (the agent's counters port may
   * have changed with a restart); one check and one reload when anything changed, none otherwise.
   */
  async refresh(): Promise<void> {
    const old = new Map<string, string | undefined>();
    for (const s of this.states.values()) {
      const gen = this.opts.flavor.frontAndBackend(
        s.site,
        s.files,
        this.layout(s, s.role === 'target' ? this.opts.sharedIp : undefined),
      );
      for (const g of gen.files) {
        const path = join(this.opts.includeDir, g.name);
        const have = await readFile(path, 'utf8').catch(() => undefined);
        if (have === g.text) continue;
        old.set(path, have);
        await writeFile(path, g.text, { mode: 0o644 });
      }
    }
    if (old.size === 0) return;
    try {
      await this.opts.flavor.check();
    } catch (err) {
      for (const [p, t] of old) await (t === undefined ? rm(p, { force: true }) : writeFile(p, t));
      throw err;
    }
    await this.opts.flavor.reload();
  }

  has(domain: string): boolean {
    return this.states.has(domain);
  }

  upstream(domain: string): GateUpstream | undefined {
    const s = this.states.get(domain);
    return s && this.upstreamOf(s);
  }

  /** The site's data folder when the stack has it. */
  dataDir(domain: string): string | null | undefined {
    return this.states.get(domain)?.dataDir;
  }

  /**
   * The site's blocks merged (null when the server has no site of that name), with what a server
   * must have to host it (`requires`) when it is movable.
   */
  async inspect(domain: string): Promise<WebSite | null> {
    const s = this.states.get(domain);
    if (s) return { ...s.site, requires: this.needsOf(s.site, s.files).requires };
    const blocks = await this.blocksOf(domain);
    if (!blocks.length) return null;
    const site = merge(blocks);
    if (!site.movable) return site;
    return { ...site, requires: this.needsOf(site, await this.readFiles(blocks)).requires };
  }

  /** What a server must have to host the site of these blocks (the flavor's needs and its PHP-FPM versions). */
  needsOf(site: WebSite, files: SiteConfigFile[]): SiteNeeds {
    const requires: SiteNeed[] = [...phpFpmNeeds(site), ...(this.opts.flavor.needs?.(files) ?? [])];
    return { server: site.server, requires };
  }

  /**
   * Whether this server can host a site with `needs`: throws `TARGET_LACKS` naming every need it
   * does not meet. Changes nothing; asked at plan time and again before an install.
   */
  async assertCanHost(domain: string, needs: SiteNeeds): Promise<void> {
    const flavor = this.opts.flavor;
    const lacks = await lacksOf(domain, needs, {
      server: flavor.kind,
      ...(flavor.loadedModules ? { loadedModules: () => flavor.loadedModules!() } : {}),
      ...(this.opts.phpLayout ? { php: this.opts.phpLayout } : {}),
    });
    assertNothingLacking(domain, lacks);
  }

  /**
   * Put the gate in front of `domain` (origin): front + backend, originals aside, one reload.
   * `register` puts the site into the gate before that reload.
   */
  async gate(domain: string, register?: () => Promise<void>): Promise<GateUpstream> {
    const existing = this.states.get(domain);
    if (existing) return this.upstreamOf(existing);
    const site = await this.movable(domain);
    const files = await this.readFiles(site.blocks);
    const state: StackState = {
      domain,
      role: 'origin',
      site: site.merged,
      files,
      ports: await freePorts(),
      written: [],
      moved: [],
      created: { users: [], groups: [], files: [], dataDir: null, crontab: null },
      dataDir: this.dataDirOf(site.merged),
      pool: poolOf(site.merged),
    };
    const gen = this.opts.flavor.frontAndBackend(site.merged, files, this.layout(state, undefined));
    const originals = join(this.stateDir(domain), 'original');
    await mkdir(originals, { recursive: true, mode: 0o700 });
    try {
      for (const [i, f] of files.entries()) {
        const to = join(originals, `${i}-${basename(f.path)}`);
        const rest = withoutBlocks(f);
        await moveAcross(f.path, to);
        state.moved.push({ from: f.path, to, remainder: rest !== null });
        if (rest !== null) await writeFile(f.path, rest, { mode: 0o644 });
      }
      await mkdir(this.opts.includeDir, { recursive: true });
      for (const g of gen.files) {
        const path = join(this.opts.includeDir, g.name);
        await writeFile(path, g.text, { mode: 0o644 });
        state.written.push(path);
      }
      await this.opts.flavor.check();
    } catch (err) {
      await this.takeBackConfig(state);
      throw err;
    }
    await this.save(state);
    await register?.();
    await this.opts.flavor.reload();
    await this.waitListening(state.ports.http);
    return this.upstreamOf(state);
  }

  /** Take the gate away on the origin: the original files back, byte for byte, one reload. No-op when not gated. */
  async ungate(domain: string): Promise<void> {
    const s = this.states.get(domain);
    if (!s || s.role !== 'origin') return;
    await this.takeBackConfig(s);
    await this.opts.flavor.check();
    await this.opts.flavor.reload();
    await this.waitListening(s.ports.http, false);
    await this.forget(domain);
  }

  /** Everything that recreates `domain` elsewhere (read from the gated state when gated). */
  async export(domain: string): Promise<WebSiteBundle> {
    const s = this.states.get(domain);
    let site: WebSite;
    let files: SiteConfigFile[];
    if (s) {
      site = s.site;
      files = s.files;
    } else {
      const m = await this.movable(domain);
      site = m.merged;
      files = await this.readFiles(m.blocks);
    }
    const pool = poolOf(site);
    const certificates: WebSiteBundle['certificates'] = [];
    for (const c of site.certificates) {
      for (const [path, key] of [
        [c.certificate, false],
        [c.key, true],
      ] as const) {
        if (!path || certificates.some((x) => x.path === path)) continue;
        certificates.push({ path, key, content: await readPart(path, 'certificate file') });
      }
    }
    const user = site.user ? await getUser(site.user) : null;
    if (site.user && !user)
      throw new FerryError('WEBSTACK_USER', `the site's user ${site.user} does not exist here`);
    const group = site.group ? await getGroup(site.group) : user ? await getGroup(user.gid) : null;
    const dir = this.dataDirOf(site);
    let dataDir: WebSiteBundle['dataDir'] = null;
    if (dir) {
      const st = await stat(dir);
      dataDir = {
        path: dir,
        user: (await getUser(st.uid))?.name ?? String(st.uid),
        group: (await getGroup(st.gid))?.name ?? String(st.gid),
        mode: st.mode & 0o7777,
      };
    }
    return {
      domain,
      server: site.server,
      site,
      files,
      pool: pool ? { path: pool, text: await readPart(pool, 'PHP-FPM pool file') } : null,
      certificates,
      user,
      group,
      crontab: user ? await readCrontab(user.name, this.opts.crontabCommand) : '',
      dataDir,
    };
  }

  /**
   * Recreate the site on this server (target), gated, listening on its shared IP. Every step is
   * taken back when a check refuses. Idempotent: the same bundle again changes nothing.
   */
  async install(bundle: WebSiteBundle, register?: () => Promise<void>): Promise<GateUpstream> {
    const domain = bundle.domain;
    const hash = bundleHash(bundle);
    const existing = this.states.get(domain);
    if (existing) {
      if (existing.role === 'target' && existing.bundleHash === hash) return this.upstreamOf(existing);
      throw new FerryError(
        'WEBSTACK_CONFLICT',
        `${domain} is already ${existing.role === 'origin' ? 'gated here as an origin' : 'installed here from another bundle'}; uninstall it first`,
      );
    }
    // A server of another kind, or without a module or the PHP-FPM version the site needs, is
    // refused before anything changes (the check the controller asked at plan time).
    await this.assertCanHost(domain, {
      ...this.needsOf(bundle.site, bundle.files),
      server: bundle.server,
    });
    // Nothing is changed when a file of the same path holds something else here.
    for (const f of [
      ...bundle.certificates,
      ...(bundle.pool ? [{ path: bundle.pool.path, content: bundle.pool.text }] : []),
    ]) {
      const have = await readFile(f.path, 'utf8').catch(() => undefined);
      if (have !== undefined && have !== f.content)
        throw new FerryError(
          'WEBSTACK_CONFLICT',
          `${f.path} exists on this server with other contents; it is not overwritten`,
        );
    }
    // Nor is a crontab the user has here already (another site's jobs).
    if (bundle.user && bundle.crontab && (await getUser(bundle.user.name))) {
      const tab = await readCrontab(bundle.user.name, this.opts.crontabCommand);
      if (tab !== '' && tab !== bundle.crontab)
        throw new FerryError(
          'WEBSTACK_CONFLICT',
          `${bundle.user.name} has another crontab on this server; it is not overwritten`,
        );
    }
    const state: StackState = {
      domain,
      role: 'target',
      site: bundle.site,
      files: bundle.files,
      ports: await freePorts(),
      written: [],
      moved: [],
      created: { users: [], groups: [], files: [], dataDir: null, crontab: null },
      dataDir: bundle.dataDir?.path ?? null,
      pool: bundle.pool?.path ?? null,
      bundleHash: hash,
    };
    let poolWritten = false;
    try {
      if (bundle.group && (await ensureGroup(bundle.group))) state.created.groups.push(bundle.group.name);
      if (bundle.user && (await ensureUser(bundle.user, bundle.group?.name ?? String(bundle.user.gid))))
        state.created.users.push(bundle.user.name);
      if (bundle.dataDir) {
        const d = bundle.dataDir;
        if (!(await exists(d.path))) {
          await mkdir(d.path, { recursive: true });
          state.created.dataDir = d.path;
        }
        const u = await getUser(d.user);
        const g = await getGroup(d.group);
        await chown(d.path, u?.uid ?? Number(d.user), g?.gid ?? Number(d.group));
        await chmod(d.path, d.mode);
      }
      for (const c of bundle.certificates) {
        if (await exists(c.path)) continue;
        const made = await mkdir(dirname(c.path), { recursive: true, mode: 0o755 });
        if (made) state.created.files.push(made);
        await writeFile(c.path, c.content, { mode: c.key ? 0o600 : 0o644 });
        await chmod(c.path, c.key ? 0o600 : 0o644);
        await chown(c.path, 0, 0);
        state.created.files.push(c.path);
      }
      if (bundle.pool && !(await exists(bundle.pool.path))) {
        await mkdir(dirname(bundle.pool.path), { recursive: true });
        await writeFile(bundle.pool.path, bundle.pool.text, { mode: 0o644 });
        state.created.files.push(bundle.pool.path);
        poolWritten = true;
        await checkPhpFpm(this.phpFpmFor(bundle.pool.path));
      }
      const gen = this.opts.flavor.frontAndBackend(
        bundle.site,
        bundle.files,
        this.layout(state, this.opts.sharedIp),
      );
      await mkdir(this.opts.includeDir, { recursive: true });
      for (const g of gen.files) {
        const path = join(this.opts.includeDir, g.name);
        await writeFile(path, g.text, { mode: 0o644 });
        state.written.push(path);
      }
      await this.opts.flavor.check();
      if (poolWritten) {
        await reloadPhpFpm(this.phpFpmFor(bundle.pool!.path));
        await this.waitPool(bundle.pool!.text);
      }
      this.states.set(domain, state);
      await register?.();
      await this.opts.flavor.reload();
      await this.waitListening(state.ports.http);
      if (bundle.user && bundle.crontab) {
        const before = await readCrontab(bundle.user.name, this.opts.crontabCommand);
        if (before !== bundle.crontab) {
          await writeCrontab(bundle.user.name, bundle.crontab, this.opts.crontabCommand);
          state.created.crontab = bundle.user.name;
        }
      }
    } catch (err) {
      this.states.delete(domain);
      await this.takeBackInstall(state, poolWritten).catch((e: Error) =>
        this.opts.log?.(`taking back ${domain} failed: ${e.message}`),
      );
      throw err;
    }
    await this.save(state);
    return this.upstreamOf(state);
  }

  /** Take back an install (target): everything it created goes. No-op when not installed. */
  async uninstall(domain: string): Promise<void> {
    const s = this.states.get(domain);
    if (!s || s.role !== 'target') return;
    await this.takeBackInstall(s, s.pool !== null && s.created.files.includes(s.pool));
    await this.forget(domain);
  }

  /**
   * After completion. Target: the site's own blocks on the shared IP, gate gone (one reload).
   * Origin: configuration, pool, crontab and data folder moved into
   * `<dataDir>/backups/<domain>-<stamp>/` with a manifest, kept `backupKeepMs`.
   */
  async finish(domain: string, role: 'origin' | 'target', backupKeepMs: number): Promise<void> {
    const s = this.states.get(domain);
    if (!s) return;
    if (s.role !== role)
      throw new FerryError(
        'WEBSTACK_CONFLICT',
        `${domain} is ${s.role === 'origin' ? 'an origin' : 'a target'} site here, not ${role === 'origin' ? 'an origin' : 'a target'}`,
      );
    if (role === 'target') {
      // Two reloads. The first puts the site's own blocks in place of the front and keeps the
      // backend: a request an old worker of the web server still has goes on through the gate to
      // a backend that listens. Once the gate is quiet, the second removes the backend.
      const isBackend = (p: string) => p.endsWith('.backend.conf');
      const gen = this.opts.flavor.plain(s.site, s.files, this.layout(s, this.opts.sharedIp));
      const fronts = s.written.filter((p) => !isBackend(p));
      const old = new Map<string, string>();
      for (const p of fronts) old.set(p, await readFile(p, 'utf8'));
      const written: string[] = [];
      for (const p of fronts) await rm(p, { force: true });
      for (const g of gen.files) {
        const path = join(this.opts.includeDir, g.name);
        await writeFile(path, g.text, { mode: 0o644 });
        written.push(path);
      }
      try {
        await this.opts.flavor.check();
      } catch (err) {
        for (const p of written) await rm(p, { force: true });
        for (const [p, t] of old) await writeFile(p, t, { mode: 0o644 });
        throw err;
      }
      await this.opts.flavor.reload();
      s.written = [...s.written.filter(isBackend), ...written];
      await this.save(s);
      await this.opts.settle?.(domain);
      for (const p of s.written.filter(isBackend)) await rm(p, { force: true });
      await this.opts.flavor.check();
      await this.opts.flavor.reload();
      await this.waitListening(s.ports.http, false);
      await this.forget(domain);
      return;
    }
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const backup = join(this.opts.dataDir, 'backups', `${domain}-${stamp}`);
    await mkdir(join(backup, 'config'), { recursive: true, mode: 0o700 });
    await chmod(backup, 0o700);
    const manifest: BackupManifest = {
      domain,
      createdAt: Date.now(),
      keepUntil: Date.now() + backupKeepMs,
      items: [],
    };
    // The site stops being served first: the front and backend go, the remainders stay.
    for (const p of s.written) await rm(p, { force: true });
    for (const m of s.moved) {
      const to = join(backup, 'config', basename(m.to));
      await moveAcross(m.to, to);
      manifest.items.push({ kind: 'config', from: m.from, backup: to });
    }
    await this.opts.flavor.check();
    await this.opts.flavor.reload();
    await this.waitListening(s.ports.http, false);
    if (s.pool && (await exists(s.pool))) {
      const to = join(backup, 'pool', basename(s.pool));
      await mkdir(dirname(to), { recursive: true });
      await moveAcross(s.pool, to);
      manifest.items.push({ kind: 'pool', from: s.pool, backup: to });
      // No PHP-FPM reload here: a reload restarts every pool, and connections the old workers of
      // the OTHER sites had just accepted are reset (their visitors get a 502/503). The retired
      // pool's workers idle, serving nothing, until the server's next PHP-FPM reload or restart.
      this.opts.log?.(
        `retired ${domain}: its pool file is in the backup; its idle workers go at PHP-FPM's next reload`,
      );
    }
    // What the server's other sites still use stays: a user's crontab, a folder holding their paths.
    const others = await readWebSites(this.opts.webConfig).then(
      (r) => r.sites,
      (err: Error) => {
        this.opts.log?.(
          `retiring ${domain}: the other sites cannot be read (${err.message}); crontab and data stay`,
        );
        return null;
      },
    );
    const userShared = others === null || others.some((o) => s.site.user !== null && o.user === s.site.user);
    const dataShared =
      others === null ||
      others.some((o) =>
        o.paths.some((p) => s.dataDir !== null && (p.path + '/').startsWith(`${s.dataDir}/`)),
      );
    if (s.site.user) {
      const tab = await readCrontab(s.site.user, this.opts.crontabCommand).catch(() => '');
      if (tab) {
        const to = join(backup, 'crontab');
        await writeFile(to, tab, { mode: 0o600 });
        if (userShared)
          this.opts.log?.(
            `retiring ${domain}: ${s.site.user}'s crontab stays (another site runs as ${s.site.user}); a copy is in the backup`,
          );
        else await writeCrontab(s.site.user, '', this.opts.crontabCommand);
        manifest.items.push({ kind: 'crontab', from: s.site.user, backup: to });
      }
    }
    if (s.dataDir && dataShared)
      this.opts.log?.(`retiring ${domain}: ${s.dataDir} stays (another site serves from it)`);
    else if (s.dataDir && (await exists(s.dataDir))) {
      const to = join(backup, 'data');
      await moveAcross(s.dataDir, to);
      manifest.items.push({ kind: 'data', from: s.dataDir, backup: to });
    }
    await writeFile(join(backup, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
    await this.forget(domain);
  }

  /** Remove backups whose keep time is over; returns the folders removed. */
  async pruneBackups(now = Date.now()): Promise<string[]> {
    const root = join(this.opts.dataDir, 'backups');
    const removed: string[] = [];
    for (const n of await readdir(root).catch(() => [] as string[])) {
      const dir = join(root, n);
      const text = await readFile(join(dir, 'manifest.json'), 'utf8').catch(() => undefined);
      if (!text) continue;
      const m = JSON.parse(text) as BackupManifest;
      if (typeof m.keepUntil === 'number' && m.keepUntil <= now) {
        await rm(dir, { recursive: true, force: true });
        removed.push(dir);
      }
    }
    return removed;
  }

  // --- internals -------------------------------------------------------------------------

  /**
   * The PHP-FPM that reads a pool file: the configured one, else the version its folder names
   * (`/etc/php/8.1/fpm/pool.d/x.conf` → `php-fpm8.1`, `/run/php/php8.1-fpm.pid`), else 8.2.
   */
  private phpFpmFor(poolPath: string): PhpFpmOptions {
    const v = /^\/etc\/php\/(\d+\.\d+)\/fpm\//.exec(poolPath)?.[1] ?? '8.2';
    return {
      command: this.opts.phpFpm?.command ?? [`php-fpm${v}`],
      pidFile: this.opts.phpFpm?.pidFile ?? `/run/php/php${v}-fpm.pid`,
    };
  }

  private layout(s: StackState, listenAddress: string | undefined): WebStackLayout {
    const statsPort = this.opts.statsPort?.();
    return {
      domain: s.domain,
      includeDir: this.opts.includeDir,
      gate: this.opts.gate,
      backend: { address: BACKEND_ADDRESS, httpPort: s.ports.http, httpsPort: s.ports.https },
      ...(listenAddress ? { listenAddress } : {}),
      ...(statsPort ? { statsPort } : {}),
    };
  }

  private upstreamOf(s: StackState): GateUpstream {
    const tlsPort = s.site.listens.find((l) => l.tls)?.port;
    const aliases = [...new Set(s.site.names.map((n) => n.toLowerCase()))].filter(
      (n) => n !== s.domain && n !== '' && n !== '_' && !n.startsWith('~'),
    );
    const ca = siteCertificatesPem(s.site);
    return {
      http: { address: BACKEND_ADDRESS, port: s.ports.http },
      https: { address: BACKEND_ADDRESS, port: s.ports.https },
      ...(tlsPort ? { tlsPort } : {}),
      ...(aliases.length ? { aliases } : {}),
      ...(ca ? { ca } : {}),
    };
  }

  private dataDirOf(site: WebSite): string | null {
    const roots = this.opts.webConfig.declaredRoots ?? ['/var/www', '/srv'];
    return (
      siteDataDirOf(
        site.paths.map((p) => p.path),
        roots,
      ) ?? null
    );
  }

  /** The blocks naming `domain`, all movable, and merged; SITE_NOT_MOVABLE or SITE_NOT_FOUND otherwise. */
  private async movable(domain: string): Promise<{ blocks: WebSite[]; merged: WebSite }> {
    const blocks = await this.blocksOf(domain);
    if (blocks.length === 0)
      throw new FerryError(
        'SITE_NOT_FOUND',
        `the server's ${this.opts.flavor.kind} has no site named ${domain}`,
      );
    const merged = merge(blocks);
    if (!merged.movable) {
      throw new FerryError(
        'SITE_NOT_MOVABLE',
        `${domain} cannot be moved: ${merged.refusals
          .map((r) => `${r.code}: ${r.message}${r.at ? ` (${r.at.file}:${r.at.line})` : ''}`)
          .join('; ')}`,
      );
    }
    return { blocks, merged };
  }

  private async blocksOf(domain: string): Promise<WebSite[]> {
    const report = await readWebSites(this.opts.webConfig);
    const d = domain.toLowerCase();
    return report.sites.filter((s) => s.names.some((n) => n.toLowerCase() === d));
  }

  private async readFiles(blocks: WebSite[]): Promise<SiteConfigFile[]> {
    const files: SiteConfigFile[] = [];
    for (const b of blocks) {
      let f = files.find((x) => x.path === b.at.file);
      if (!f) {
        f = { path: b.at.file, text: await readPart(b.at.file, 'configuration file'), blocks: [] };
        files.push(f);
      }
      f.blocks.push({ start: b.at.line, end: blockEnd(f.text, b.at.line, b.server, b.at.file) });
    }
    return files;
  }

  private async takeBackConfig(s: StackState): Promise<void> {
    for (const p of s.written) await rm(p, { force: true });
    s.written = [];
    for (const m of [...s.moved].reverse()) {
      if (await exists(m.to)) await moveAcross(m.to, m.from);
    }
    s.moved = [];
  }

  private async takeBackInstall(s: StackState, poolWritten: boolean): Promise<void> {
    const user = s.created.crontab;
    if (user) await writeCrontab(user, '', this.opts.crontabCommand).catch(() => undefined);
    const hadConfig = s.written.length > 0;
    for (const p of s.written) await rm(p, { force: true });
    s.written = [];
    // Files, then the folders made for them (recorded before them), newest first.
    for (const p of [...s.created.files].reverse()) await rm(p, { recursive: true, force: true });
    if (hadConfig) {
      await this.opts.flavor.check().then(
        () => this.opts.flavor.reload(),
        (err: Error) => this.opts.log?.(`after taking back ${s.domain}: ${err.message}`),
      );
    }
    if (poolWritten && s.pool) await reloadPhpFpm(this.phpFpmFor(s.pool)).catch(() => undefined);
    if (s.created.dataDir) await rm(s.created.dataDir, { recursive: true, force: true });
    const log = (err: Error) => this.opts.log?.(`taking back ${s.domain}: ${err.message}`);
    for (const u of s.created.users) {
      // The reloaded PHP-FPM lets the removed pool's processes finish first: wait for them.
      const uid = (await getUser(u))?.uid;
      if (uid !== undefined) await this.waitNoProcessOf(uid);
      await exec(['userdel', u], 'WEBSTACK_USER').catch(log);
    }
    for (const g of s.created.groups)
      if (await getGroup(g)) await exec(['groupdel', g], 'WEBSTACK_USER').catch(log);
  }

  private stateDir(domain: string): string {
    return join(this.opts.dataDir, 'webstack', domain);
  }

  private async save(s: StackState): Promise<void> {
    this.states.set(s.domain, s);
    await mkdir(this.stateDir(s.domain), { recursive: true, mode: 0o700 });
    const file = join(this.stateDir(s.domain), 'state.json');
    await writeFile(`${file}.tmp`, `${JSON.stringify(s, null, 2)}\n`, { mode: 0o600 });
    await rename(`${file}.tmp`, file);
  }

  private async forget(domain: string): Promise<void> {
    this.states.delete(domain);
    await rm(this.stateDir(domain), { recursive: true, force: true });
  }

  /**
   * Wait until the reloaded web server listens on the backend port (`listening`), or no longer
   * does: that is when the new configuration serves (a reload signal returns before it does).
   */
  private async waitListening(port: number, listening = true): Promise<void> {
    const deadline = Date.now() + (this.opts.reloadTimeoutMs ?? 10_000);
    while ((await canConnect(BACKEND_ADDRESS, port)) !== listening) {
      if (Date.now() > deadline)
        throw new FerryError(
          'WEBSTACK_RELOAD_TIMEOUT',
          `the web server did ${listening ? 'not listen' : 'not stop listening'} on ${BACKEND_ADDRESS}:${port} after its reload`,
        );
      await sleep(50);
    }
  }

  /** Wait (up to the reload timeout) until no process runs as `uid`. */
  private async waitNoProcessOf(uid: number): Promise<void> {
    const deadline = Date.now() + (this.opts.reloadTimeoutMs ?? 10_000);
    const running = async () => {
      for (const p of await readdir('/proc').catch(() => [] as string[])) {
        if (!/^\d+$/.test(p)) continue;
        const status = await readFile(`/proc/${p}/status`, 'utf8').catch(() => '');
        if (new RegExp(`^Uid:\\s+${uid}\\s`, 'm').test(status)) return true;
      }
      return false;
    };
    while ((await running()) && Date.now() < deadline) await sleep(100);
  }

  /** Wait until a reloaded PHP-FPM listens on the pool's unix socket (a TCP pool is not waited for). */
  private async waitPool(poolText: string): Promise<void> {
    const listen = /^\s*listen\s*=\s*(\S+)\s*$/m.exec(poolText)?.[1];
    if (!listen?.startsWith('/')) return;
    const deadline = Date.now() + (this.opts.reloadTimeoutMs ?? 10_000);
    while (!(await exists(listen))) {
      if (Date.now() > deadline)
        throw new FerryError('PHP_FPM_RELOAD_FAILED', `PHP-FPM did not open ${listen} after its reload`);
      await sleep(50);
    }
  }
}

interface BackupManifest {
  domain: string;
  createdAt: number;
  keepUntil: number;
  items: Array<{ kind: 'config' | 'pool' | 'crontab' | 'data'; from: string; backup: string }>;
}

/** Several blocks of one site as one description (every listen, path, certificate, refusal). */
function merge(blocks: WebSite[]): WebSite {
  const first = blocks[0]!;
  const refusals = blocks.flatMap((b) => b.refusals);
  const names = [...new Set(blocks.flatMap((b) => b.names))];
  return {
    ...first,
    names,
    defaultServer: blocks.some((b) => b.defaultServer),
    listens: blocks.flatMap((b) => b.listens),
    paths: blocks.flatMap((b) => b.paths),
    apps: blocks.flatMap((b) => b.apps),
    certificates: blocks.flatMap((b) => b.certificates),
    user: blocks.find((b) => b.user)?.user ?? null,
    group: blocks.find((b) => b.group)?.group ?? null,
    refusals,
    movable: refusals.length === 0,
  };
}

/** The pool file of the site's (first) PHP-FPM app. */
function poolOf(site: WebSite): string | null {
  for (const a of site.apps) if (a.kind === 'php-fpm' && a.pool) return a.pool.file;
  return null;
}

/** The last line of the block that starts on `line` (nginx `server {`, Apache `<VirtualHost>`). */
export function blockEnd(text: string, line: number, server: 'nginx' | 'apache', file: string): number {
  if (server === 'apache') {
    const lines = text.split('\n');
    for (let i = line; i < lines.length; i++) if (/^\s*<\/VirtualHost\s*>/i.test(lines[i]!)) return i + 1;
  } else {
    const tokens = tokenizeNginx(text, file);
    let i = tokens.findIndex((t) => t.line === line && t.kind === 'word' && t.value === 'server');
    while (i >= 0 && i < tokens.length && tokens[i]!.kind !== '{') i++;
    let depth = 0;
    for (; i >= 0 && i < tokens.length; i++) {
      const t = tokens[i]!;
      if (t.kind === '{') depth++;
      else if (t.kind === '}' && --depth === 0) return t.line;
    }
  }
  throw new FerryError('WEBCONFIG_SYNTAX', `${file}:${line}: cannot find where the site's block ends`);
}

/** The file without the site's blocks (their lines commented out), or null when nothing else is left. */
function withoutBlocks(f: SiteConfigFile): string | null {
  const lines = f.text.split('\n');
  for (const b of f.blocks)
    for (let i = b.start - 1; i < b.end && i < lines.length; i++) lines[i] = `# ferry (moved): ${lines[i]}`;
  const rest = lines.filter(
    (l) => !l.startsWith('# ferry (moved): ') && l.trim() && !l.trim().startsWith('#'),
  );
  return rest.length ? lines.join('\n') : null;
}

async function readPart(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new FerryError('WEBCONFIG_READ', `the ${what} ${path} cannot be read: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

/**
 * Rename, or across file systems copy and remove: a symbolic link stays a link, a file keeps its
 * bytes, mode and owner, a folder goes with `mv`. `to` is replaced when it exists.
 */
async function moveAcross(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    const st = await lstat(from);
    if (st.isDirectory()) await exec(['mv', '-T', from, to], 'WEBSTACK_BACKUP');
    else if (st.isSymbolicLink()) {
      await rm(to, { force: true });
      await symlink(await readlink(from), to);
      await rm(from);
    } else {
      await rm(to, { force: true });
      await copyFile(from, to, constants.COPYFILE_EXCL);
      await chmod(to, st.mode & 0o7777);
      await chown(to, st.uid, st.gid);
      await rm(from);
    }
  }
}

/** Two free loopback TCP ports (the backend's plain and TLS listens). */
async function freePorts(): Promise<{ http: number; https: number }> {
  const one = () =>
    new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, BACKEND_ADDRESS, () => {
        const port = (srv.address() as { port: number }).port;
        srv.close(() => resolve(port));
      });
    });
  const http = await one();
  let https = await one();
  while (https === http) https = await one();
  return { http, https };
}

/** Names a bundle's contents (an install repeated with the same bundle is a no-op). */
function bundleHash(b: WebSiteBundle): string {
  return createHash('sha256').update(JSON.stringify(b)).digest('hex');
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificate blocks of the site's certificate files (never a key), or undefined when none reads. */
function siteCertificatesPem(site: WebSite): string | undefined {
  const blocks = new Set<string>();
  for (const c of site.certificates) {
    let text = '';
    try {
      text = readFileSync(c.certificate, 'utf8');
    } catch {
      continue;
    }
    for (const m of text.match(PEM_CERTIFICATE) ?? []) blocks.add(m);
  }
  return blocks.size ? [...blocks].join('\n') + '\n' : undefined;
}
