/**
 * The Apache 2.4 flavor of the web stack: a front `<VirtualHost>` per site block that passes every
 * request to the gate (mod_proxy, mod_headers), the backend copy of the site's own blocks on
 * loopback, `apache2ctl configtest`, `apache2ctl graceful`, and which modules a target must have.
 *
 * Apache's syntax as the reader (src/agent/webconfig/apache.ts) takes it: one directive per
 * logical line (a trailing `\` continues it), `#` starts a comment only at the start of a line,
 * sections are `<Name args>` ... `</Name>`.
 */
import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import { FerryError } from '../../common/errors.js';
import { parseApacheSection } from '../webconfig/apache.js';
import type { SiteNeed, WebSite } from '../webconfig/index.js';
import type { GeneratedConfig, SiteConfigFile, WebFlavor, WebStackLayout } from './flavor.js';

/** One logical line of a block: its physical lines (0-based, in the block) and its words. */
interface LogicalLine {
  first: number;
  last: number;
  text: string;
  /** Section depth the line is at: 0 is the `<VirtualHost>` line itself, 1 its direct directives. */
  depth: number;
}

/** The logical lines of a block's text (its lines from `<VirtualHost ...>` to `</VirtualHost>`). */
function logicalLines(lines: string[]): LogicalLine[] {
  const out: LogicalLine[] = [];
  // Open sections; an <IfModule> adds no depth (its directives count as the block's own).
  const open: boolean[] = [];
  const depth = () => open.filter(Boolean).length;
  for (let i = 0; i < lines.length; i++) {
    const first = i;
    let text = lines[i]!;
    while (/\\\s*$/.test(text) && i + 1 < lines.length) text = text.replace(/\\\s*$/, ' ') + lines[++i]!;
    const s = text.trim();
    if (s === '' || s.startsWith('#')) continue;
    if (s.startsWith('</')) {
      open.pop();
      out.push({ first, last: i, text: s, depth: depth() });
      continue;
    }
    out.push({ first, last: i, text: s, depth: depth() });
    if (s.startsWith('<')) open.push(!/^<IfModule[\s>]/i.test(s));
  }
  return out;
}

/** One `<VirtualHost>` block of a site, as the flavor works on it. */
interface VhostBlock {
  lines: string[];
  open: LogicalLine;
  addresses: string[];
  tls: boolean;
  top: LogicalLine[];
  file: string;
  start: number;
}

function directiveName(l: LogicalLine): string {
  return (/^<?\/?([^\s>]+)/.exec(l.text)?.[1] ?? '').toLowerCase();
}

function vhostBlocks(files: SiteConfigFile[]): VhostBlock[] {
  return files.flatMap((f) => {
    const all = f.text.split('\n');
    return f.blocks.map((b) => {
      const lines = all.slice(b.start - 1, b.end);
      const logical = logicalLines(lines);
      const open = logical[0];
      const m = open && /^<VirtualHost\s+(.*?)\s*>$/i.exec(open.text);
      if (!open || !m)
        throw new FerryError('WEBCONFIG_SYNTAX', `${f.path}:${b.start}: expected <VirtualHost ...> here`);
      const top = logical.filter((l) => l.depth === 1);
      return {
        lines,
        open,
        addresses: m[1]!.split(/\s+/).filter(Boolean),
        tls: top.some((l) => directiveName(l) === 'sslengine' && /^sslengine\s+on$/i.test(l.text)),
        top,
        file: f.path,
        start: b.start,
      };
    });
  });
}

/** `host:port` as Apache writes it (IPv6 in brackets). */
function hostPort(address: string, port: number | string): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** A `<VirtualHost>` address with the layout's address in place of a named one (`*` and `_default_` stay). */
function movedAddress(spec: string, layout: WebStackLayout): string {
  if (!layout.listenAddress) return spec;
  const v6 = /^\[([^\]]+)\](?::(\d+|\*))?$/.exec(spec);
  const i = spec.lastIndexOf(':');
  const address = v6 ? v6[1]! : i < 0 ? spec : spec.slice(0, i);
  const port = v6 ? v6[2] : i < 0 ? undefined : spec.slice(i + 1);
  if (address === '*' || address === '_default_' || address === '0.0.0.0' || address === '::') return spec;
  return port === undefined
    ? isIP(layout.listenAddress) === 6
      ? `[${layout.listenAddress}]`
      : layout.listenAddress
    : hostPort(layout.listenAddress, port);
}

/** The block's text (its own lines) with its `<VirtualHost ...>` line replaced. */
function withOpening(b: VhostBlock, addresses: string[]): string[] {
  const indent = /^\s*/.exec(b.lines[b.open.first]!)![0];
  return [
    ...b.lines.slice(0, b.open.first),
    `${indent}<VirtualHost ${addresses.join(' ')}>`,
    ...b.lines.slice(b.open.last + 1),
  ];
}

/** The physical lines of a block's direct directives named in `names`, as written. */
function topLines(b: VhostBlock, pick: (name: string) => boolean): string[] {
  return b.top
    .filter((l) => pick(directiveName(l)) && !l.text.startsWith('<'))
    .flatMap((l) => b.lines.slice(l.first, l.last + 1).map((x) => `    ${x.trim()}`));
}

/**
 * Where a site's listening file sorts in the include folder. Apache answers a request that names
 * no site of an address with the first `<VirtualHost>` of that address in configuration order
 * (`IncludeOptional` reads a folder in byte order): the default site's file goes before the others
 * (`00-` sorts before Debian's `000-default.conf`), any other after them, so the server keeps the
 * default it had.
 */
function orderPrefix(site: WebSite): string {
  return site.defaultServer ? '00' : 'zz';
}

/** Directives a front copies from its block so it answers as the site did: names, TLS, body limit. */
const FRONT_KEEPS = (name: string) =>
  name === 'servername' ||
  name === 'serveralias' ||
  name === 'limitrequestbody' ||
  name === 'protocols' ||
  (name.startsWith('ssl') && !name.startsWith('sslproxy'));

/** Modules the front itself needs. */
const FRONT_MODULES = ['proxy_module', 'proxy_http_module', 'headers_module'];

/** The module a directive belongs to (Apache's own modules; core directives are not listed). */
function moduleOfDirective(name: string, args: string[]): string[] {
  const n = name.toLowerCase();
  const exact: Record<string, string> = {
    header: 'headers_module',
    requestheader: 'headers_module',
    alias: 'alias_module',
    aliasmatch: 'alias_module',
    scriptalias: 'alias_module',
    scriptaliasmatch: 'alias_module',
    redirect: 'alias_module',
    redirectmatch: 'alias_module',
    redirectpermanent: 'alias_module',
    redirecttemp: 'alias_module',
    directoryindex: 'dir_module',
    directoryslash: 'dir_module',
    fallbackresource: 'dir_module',
    addoutputfilterbytype: 'filter_module',
    setenvif: 'setenvif_module',
    setenvifnocase: 'setenvif_module',
    setenvifexpr: 'setenvif_module',
    browsermatch: 'setenvif_module',
    browsermatchnocase: 'setenvif_module',
    setenv: 'env_module',
    unsetenv: 'env_module',
    passenv: 'env_module',
    authbasicprovider: 'auth_basic_module',
    authuserfile: 'authn_file_module',
    authgroupfile: 'authz_groupfile_module',
    order: 'access_compat_module',
    allow: 'access_compat_module',
    deny: 'access_compat_module',
    satisfy: 'access_compat_module',
    addtype: 'mime_module',
    addhandler: 'mime_module',
    addcharset: 'mime_module',
    addencoding: 'mime_module',
    addlanguage: 'mime_module',
    forcetype: 'mime_module',
    removehandler: 'mime_module',
    removetype: 'mime_module',
    customlog: 'log_config_module',
    transferlog: 'log_config_module',
    logformat: 'log_config_module',
    php_value: 'php_module',
    php_flag: 'php_module',
    php_admin_value: 'php_module',
    php_admin_flag: 'php_module',
    suexecusergroup: 'suexec_module',
    assignuserid: 'mpm_itk_module',
    indexoptions: 'autoindex_module',
    indexignore: 'autoindex_module',
    headername: 'autoindex_module',
    readmename: 'autoindex_module',
    use: 'macro_module',
  };
  if (exact[n]) return [exact[n]];
  if (n.startsWith('sslproxy') || n.startsWith('ssl')) return ['ssl_module'];
  if (n.startsWith('rewrite')) return ['rewrite_module'];
  if (n.startsWith('proxy')) return ['proxy_module'];
  if (n.startsWith('expires')) return ['expires_module'];
  if (n.startsWith('deflate')) return ['deflate_module'];
  if (n.startsWith('remoteip')) return ['remoteip_module'];
  if (n.startsWith('brotli')) return ['brotli_module'];
  if (n.startsWith('wsgi')) return ['wsgi_module'];
  if (n === 'authtype' && args[0]) {
    const t = args[0].toLowerCase();
    if (t === 'basic') return ['auth_basic_module'];
    if (t === 'digest') return ['auth_digest_module'];
  }
  if (n === 'require') {
    const what = args.find((a) => a.toLowerCase() !== 'not')?.toLowerCase() ?? '';
    if (['ip', 'host', 'local', 'forward-dns'].includes(what))
      return ['authz_core_module', 'authz_host_module'];
    if (what === 'user' || what === 'valid-user') return ['authz_core_module', 'authz_user_module'];
    if (what === 'group') return ['authz_core_module', 'authz_groupfile_module'];
    return ['authz_core_module'];
  }
  if (n === 'protocols' && args.some((a) => /^h2c?$/i.test(a))) return ['http2_module'];
  return [];
}

/** The proxy module a backend URL needs: `fcgi://` → proxy_fcgi, `http://` → proxy_http, ... */
function moduleOfProxyUrl(url: string): string[] {
  const u = url.replace(/^proxy:/i, '').toLowerCase();
  if (/^unix:[^|]*\|fcgi:/.test(u) || u.startsWith('fcgi://')) return ['proxy_module', 'proxy_fcgi_module'];
  const scheme = /^(?:unix:[^|]*\|)?([a-z0-9+]+):\/\//.exec(u)?.[1];
  const bySchema: Record<string, string> = {
    http: 'proxy_http_module',
    https: 'proxy_http_module',
    ajp: 'proxy_ajp_module',
    balancer: 'proxy_balancer_module',
    uwsgi: 'proxy_uwsgi_module',
    scgi: 'proxy_scgi_module',
    h2: 'proxy_http2_module',
    h2c: 'proxy_http2_module',
  };
  if (!scheme) return [];
  const m = bySchema[scheme];
  return m ? ['proxy_module', m, ...(scheme === 'https' ? ['ssl_module'] : [])] : ['proxy_module'];
}

/** One module a site needs, and the directive that needs it. */
export interface ModuleNeed {
  module: string;
  neededBy: string;
}

/**
 * The Apache modules a site needs on the server that serves it through the gate: those its
 * blocks' directives and proxy URLs use (outside `<IfModule>`, which asks for nothing), and
 * those of the front (mod_proxy, mod_proxy_http, mod_headers, mod_ssl for a TLS listen).
 */
export function apacheModulesNeeded(files: SiteConfigFile[]): ModuleNeed[] {
  const needs = new Map<string, string>();
  const add = (mods: string[], why: string) => {
    for (const m of mods) if (!needs.has(m)) needs.set(m, why);
  };
  type Directive = ReturnType<typeof parseApacheSection>;
  for (const f of files) {
    for (const b of f.blocks) {
      const section = parseApacheSection(f.text, f.path, b.start);
      const visit = (list: Directive[]) => {
        for (const d of list) {
          const n = d.name.toLowerCase();
          if (n === 'ifmodule') continue;
          const why = `${d.name} at ${f.path}:${d.line}`;
          if (n === 'proxy' || n === 'proxymatch') add(['proxy_module'], why);
          if (n === 'macro') add(['macro_module'], why);
          add(moduleOfDirective(d.name, d.args), why);
          if ((n === 'proxypass' || n === 'proxypassmatch') && d.args[1])
            add(moduleOfProxyUrl(d.args[1]), why);
          if (n === 'sethandler' && d.args[0]?.toLowerCase().startsWith('proxy:'))
            add(moduleOfProxyUrl(d.args[0]), why);
          if (n === 'sethandler' && d.args[0]?.toLowerCase() === 'server-status') add(['status_module'], why);
          if (n === 'rewriterule' && d.args[1] && /\[[^\]]*\bP\b[^\]]*\]/i.test(d.args.slice(2).join(' ')))
            add(moduleOfProxyUrl(d.args[1]), why);
          if (d.block) visit(d.block);
        }
      };
      visit(section.block ?? []);
      const open = `the Ferry front of ${f.path}:${b.start}`;
      add(FRONT_MODULES, open);
      if (
        section.block?.some((d) => d.name.toLowerCase() === 'sslengine' && d.args[0]?.toLowerCase() === 'on')
      )
        add(['ssl_module'], open);
    }
  }
  return [...needs].map(([module, neededBy]) => ({ module, neededBy }));
}

/** The modules `apache2ctl -M` lists (`rewrite_module`, ...). */
export function parseApacheModules(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^\s+([A-Za-z0-9_]+_module)\s+\((?:shared|static)\)\s*$/.exec(line);
    if (m) out.add(m[1]!);
  }
  return out;
}

/**
 * The front's per-request line to the agent's counters: the line nginx fronts send
 * (`ferry: <domain> <client> <method> <status>` over syslog on loopback UDP), through a piped
 * `logger` that Apache starts and keeps (mod_log_config is built into Debian's apache2).
 */
function statsLog(domain: string, port: number, logger = '/usr/bin/logger'): string {
  return `    CustomLog "||${logger} --udp --server 127.0.0.1 --port ${port} --rfc3164 --tag ferry" "${domain} %a %m %>s"`;
}

export interface ApacheFlavorOptions {
  /** The apachectl command and its fixed arguments. Default `['apache2ctl']`. */
  command?: string[];
  /**
   * The reload command, in full. Default `<command> graceful`. On a host where systemd runs
   * Apache, `['systemctl', 'reload', 'apache2']` keeps systemd's view (apachectl would start an
   * Apache of its own when none runs).
   */
  reloadCommand?: string[];
  /** Environment of the commands (e.g. `APACHE_CONFDIR`). Default the agent's own. */
  env?: Record<string, string | undefined>;
  /** util-linux's `logger`, which carries the front's per-request lines to the agent. Default `/usr/bin/logger`. */
  logger?: string;
  /** Longest a command may run. Default 30 000 ms. */
  timeoutMs?: number;
}

/** Apache 2.4: the front passes to the gate, the backend is the site's own `<VirtualHost>` on loopback. */
export class ApacheFlavor implements WebFlavor {
  readonly kind = 'apache' as const;
  private readonly command: string[];

  constructor(private readonly opts: ApacheFlavorOptions = {}) {
    this.command = opts.command?.length ? opts.command : ['apache2ctl'];
  }

  frontAndBackend(site: WebSite, files: SiteConfigFile[], layout: WebStackLayout): GeneratedConfig {
    const blocks = vhostBlocks(files);
    const gate = `http://${hostPort(layout.gate.address, layout.gate.port)}/`;
    const fronts = blocks.map((b) => {
      const kept = topLines(b, FRONT_KEEPS);
      const named = b.top.some((l) => directiveName(l) === 'servername');
      return [
        `# the front of ${b.file}:${b.start}`,
        `<VirtualHost ${b.addresses.map((a) => movedAddress(a, layout)).join(' ')}>`,
        ...(named
          ? []
          : [
              `    ServerName ${site.names[0] ?? layout.domain}`,
              ...(site.names.length > 1 ? [`    ServerAlias ${site.names.slice(1).join(' ')}`] : []),
            ]),
        ...kept,
        `    ProxyRequests Off`,
        `    ProxyPreserveHost On`,
        // retry=0: a gate that restarted is used again at once, not after mod_proxy's 60 s penalty;
        // ttl=30: a pooled connection is dropped by Apache well before the gate closes it (65 s
        // idle), so no request is sent on a connection the gate is closing.
        `    ProxyPass "/" "${gate}" retry=0 ttl=30 timeout=300`,
        `    ProxyPassReverse "/" "${gate}"`,
        `    RequestHeader set X-Ferry-Client "expr=%{REMOTE_ADDR}"`,
        `    RequestHeader set X-Ferry-Scheme "${b.tls ? 'https' : 'http'}"`,
        ...(layout.statsPort ? [statsLog(layout.domain, layout.statsPort, this.opts.logger)] : []),
        `</VirtualHost>`,
        '',
      ];
    });
    const backendAddress = (tls: boolean) =>
      hostPort(layout.backend.address, tls ? layout.backend.httpsPort : layout.backend.httpPort);
    const listens = [
      ...(blocks.some((b) => !b.tls) ? [`Listen ${backendAddress(false)}`] : []),
      ...(blocks.some((b) => b.tls) ? [`Listen ${backendAddress(true)} https`] : []),
    ];
    const front = [
      `# Written by the ferry agent: the front of ${layout.domain}, which passes every request to the`,
      `# gate (the agent's site app). The site itself is served by ferry-web-${layout.domain}.backend.conf.`,
      ...fronts.flat(),
    ].join('\n');
    const backend = [
      `# Written by the ferry agent: ${layout.domain}'s own <VirtualHost> block(s), listening on loopback for the gate.`,
      ...listens,
      '',
      ...blocks.flatMap((b) => [`# ${b.file}:${b.start}`, ...withOpening(b, [backendAddress(b.tls)]), '']),
    ].join('\n');
    return {
      files: [
        { name: `${orderPrefix(site)}-ferry-web-${layout.domain}.front.conf`, text: front },
        { name: `ferry-web-${layout.domain}.backend.conf`, text: backend },
      ],
    };
  }

  plain(site: WebSite, files: SiteConfigFile[], layout: WebStackLayout): GeneratedConfig {
    const text = [
      `# Written by the ferry agent: ${layout.domain}'s own <VirtualHost> block(s), moved here by a migration.`,
      ...vhostBlocks(files).flatMap((b) => [
        `# ${b.file}:${b.start}`,
        ...withOpening(
          b,
          b.addresses.map((a) => movedAddress(a, layout)),
        ),
        '',
      ]),
    ].join('\n');
    return { files: [{ name: `${orderPrefix(site)}-ferry-web-${layout.domain}.conf`, text }] };
  }

  async check(): Promise<void> {
    await this.apachectl(['configtest'], 'APACHE_CONFIG_INVALID');
  }

  async reload(): Promise<void> {
    if (this.opts.reloadCommand?.length) await this.run(this.opts.reloadCommand, 'APACHE_RELOAD_FAILED');
    else await this.apachectl(['graceful'], 'APACHE_RELOAD_FAILED');
  }

  /** The modules this server's Apache has loaded (`apache2ctl -M`). */
  async loadedModules(): Promise<Set<string>> {
    return parseApacheModules(await this.apachectl(['-M'], 'APACHE_CONFIG_INVALID'));
  }

  /** The modules the site of `files` needs (`apacheModulesNeeded`), as the target check takes them. */
  needs(files: SiteConfigFile[]): SiteNeed[] {
    return apacheModulesNeeded(files).map((n) => ({ kind: 'module', name: n.module, neededBy: n.neededBy }));
  }

  private apachectl(args: string[], code: 'APACHE_CONFIG_INVALID' | 'APACHE_RELOAD_FAILED'): Promise<string> {
    return this.run([...this.command, ...args], code);
  }

  private run(cmd: string[], code: 'APACHE_CONFIG_INVALID' | 'APACHE_RELOAD_FAILED'): Promise<string> {
    const [bin, ...args] = cmd;
    return new Promise((resolve, reject) => {
      execFile(
        bin!,
        args,
        {
          env: this.opts.env ?? process.env,
          timeout: this.opts.timeoutMs ?? 30_000,
          maxBuffer: 8 * 1024 * 1024,
        },
        (err, stdout, stderr) => {
          if (!err) return resolve(stdout);
          // Apache's own message names the file and line (`AH00526: Syntax error on line 3 of ...`).
          const said = `${stderr}\n${stdout}`
            .split('\n')
            .map((l) => l.trim())
            .filter(
              (l) =>
                l &&
                !/^Syntax OK$|^Action '.*' failed\.$|^The Apache error log may have more information\.$|AH00558/.test(
                  l,
                ),
            )
            .slice(0, 8)
            .join(' / ');
          const why =
            (err as NodeJS.ErrnoException).code === 'ENOENT'
              ? 'not found'
              : err.killed
                ? `killed after ${this.opts.timeoutMs ?? 30_000} ms`
                : said || err.message;
          reject(new FerryError(code, `${cmd.join(' ')}: ${why}`, { cause: err }));
        },
      );
    });
  }
}
