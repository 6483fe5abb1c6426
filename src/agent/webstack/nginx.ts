/** The nginx flavor of the web stack: front and backend server blocks, `nginx -t`, `nginx -s reload`. */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { runNginx } from '../nginx.js';
import type { WebSite } from '../webconfig/index.js';
import type { GeneratedConfig, SiteConfigFile, WebFlavor, WebStackLayout } from './flavor.js';

/** A `listen` directive as written: its line in the block, its spec and its other parameters. */
interface ListenLine {
  index: number;
  indent: string;
  spec: string;
  params: string[];
  tls: boolean;
}

const LISTEN_RE = /^(\s*)listen\s+([^;#]*);\s*(#.*)?$/;

function listenLines(lines: string[]): ListenLine[] {
  const out: ListenLine[] = [];
  lines.forEach((line, index) => {
    const m = LISTEN_RE.exec(line);
    if (!m) return;
    const words = m[2]!.trim().split(/\s+/);
    const params = words.slice(1);
    out.push({
      index,
      indent: m[1]!,
      spec: words[0]!,
      params,
      tls: params.includes('ssl'),
    });
  });
  return out;
}

/** The address part of a listen spec (`*`, `80` and `[::]:80` mean every address: null). */
function specAddress(spec: string): { address: string | null; port: string } {
  if (/^\d+$/.test(spec)) return { address: null, port: spec };
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(spec);
  if (v6) return { address: v6[1] === '::' ? null : v6[1]!, port: v6[2] ?? '80' };
  const i = spec.lastIndexOf(':');
  const address = i < 0 ? spec : spec.slice(0, i);
  const port = i < 0 ? '80' : spec.slice(i + 1);
  return { address: address === '*' || address === '0.0.0.0' ? null : address, port };
}

function hostPort(address: string, port: number | string): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** The lines of each block of `files`, in order. */
function blockTexts(files: SiteConfigFile[]): string[][] {
  return files.flatMap((f) => {
    const lines = f.text.split('\n');
    return f.blocks.map((b) => lines.slice(b.start - 1, b.end));
  });
}

/** Where a front or plain listen goes: the layout's address in place of a named one. */
function movedSpec(spec: string, layout: WebStackLayout): string {
  if (!layout.listenAddress) return spec;
  const { address, port } = specAddress(spec);
  if (address === null || address.startsWith('unix:')) return spec;
  return hostPort(layout.listenAddress, port);
}

/** Parameters a loopback backend listen keeps (the others bind sockets options or defaults). */
const BACKEND_PARAMS = new Set(['ssl', 'http2']);

/** One block with its listens moved to the backend's loopback ports (duplicates commented out). */
function backendBlock(lines: string[], layout: WebStackLayout): string[] {
  const out = [...lines];
  const used = new Set<string>();
  const listens = listenLines(lines);
  for (const l of listens) {
    const quic = l.params.includes('quic');
    const spec = hostPort(layout.backend.address, l.tls ? layout.backend.httpsPort : layout.backend.httpPort);
    if (quic || used.has(spec)) {
      out[l.index] = `${l.indent}# ferry backend: ${lines[l.index]!.trim()}`;
      continue;
    }
    used.add(spec);
    const params = l.params.filter((p) => BACKEND_PARAMS.has(p));
    out[l.index] = `${l.indent}listen ${[spec, ...params].join(' ')};`;
  }
  if (listens.length === 0) {
    // No listen: nginx's default (*:80). The copy listens on the plain backend port instead.
    const open = out.findIndex((l) => l.includes('{'));
    out.splice(open + 1, 0, `    listen ${hostPort(layout.backend.address, layout.backend.httpPort)};`);
  }
  return out;
}

/** The last `client_max_body_size` a block sets at its own level, else 0 (no limit: the backend judges). */
function bodyLimit(blocks: string[][]): string {
  let limit = '0';
  for (const b of blocks)
    for (const line of b) {
      const m = /^\s{0,8}client_max_body_size\s+([^;\s]+)\s*;/.exec(line);
      if (m) limit = m[1]!;
    }
  return limit;
}

/** A short stable name for a site's generated names (log format). */
function tag(domain: string): string {
  return createHash('sha256').update(domain).digest('hex').slice(0, 10);
}

export interface NginxFlavorOptions {
  /** The nginx command and its fixed arguments. Default `['nginx']`. */
  command?: string[];
}

/** nginx: the front passes to the gate, the backend is the site's own block on loopback. */
export class NginxFlavor implements WebFlavor {
  readonly kind = 'nginx' as const;
  private readonly command: string[];

  constructor(opts: NginxFlavorOptions = {}) {
    this.command = opts.command?.length ? opts.command : ['nginx'];
  }

  frontAndBackend(site: WebSite, files: SiteConfigFile[], layout: WebStackLayout): GeneratedConfig {
    const blocks = blockTexts(files);
    const listens = new Map<string, string>();
    for (const b of blocks) {
      const ls = listenLines(b);
      if (ls.length === 0) listens.set('80', 'listen 80;');
      for (const l of ls) {
        if (l.params.includes('quic')) continue;
        const spec = movedSpec(l.spec, layout);
        if (!listens.has(spec)) listens.set(spec, `listen ${[spec, ...l.params].join(' ')};`);
      }
    }
    const tls = site.listens.some((l) => l.tls);
    const format = `ferry_site_${tag(layout.domain)}`;
    const front = [
      `# Written by the ferry agent: the front of ${layout.domain}, which passes every request to the`,
      `# gate (the agent's site app). The site itself is served by ferry-web-${layout.domain}.backend.conf.`,
      ...(layout.statsPort
        ? [`log_format ${format} '${layout.domain} $remote_addr $request_method $status';`]
        : []),
      `server {`,
      ...[...listens.values()].map((l) => `    ${l}`),
      `    server_name ${site.names.join(' ')};`,
      ...(tls
        ? site.certificates.flatMap((c) => [
            `    ssl_certificate ${c.certificate};`,
            ...(c.key ? [`    ssl_certificate_key ${c.key};`] : []),
          ])
        : []),
      ...(layout.statsPort
        ? [`    access_log syslog:server=127.0.0.1:${layout.statsPort},tag=ferry,nohostname ${format};`]
        : []),
      `    client_max_body_size ${bodyLimit(blocks)};`,
      `    location / {`,
      `        proxy_pass http://${hostPort(layout.gate.address, layout.gate.port)};`,
      `        proxy_http_version 1.1;`,
      `        proxy_set_header Host $host;`,
      `        proxy_set_header Connection "";`,
      `        proxy_set_header X-Ferry-Client $remote_addr;`,
      `        proxy_set_header X-Ferry-Scheme $scheme;`,
      `        proxy_request_buffering off;`,
      `        proxy_buffering off;`,
      `        proxy_read_timeout 300s;`,
      `        proxy_send_timeout 300s;`,
      `    }`,
      `}`,
      ``,
    ].join('\n');
    const backend = [
      `# Written by the ferry agent: ${layout.domain}'s own server block(s), listening on loopback for the gate.`,
      ...blocks.flatMap((b) => [...backendBlock(b, layout), '']),
    ].join('\n');
    return {
      files: [
        { name: `ferry-web-${layout.domain}.front.conf`, text: front },
        { name: `ferry-web-${layout.domain}.backend.conf`, text: backend },
      ],
    };
  }

  plain(_site: WebSite, files: SiteConfigFile[], layout: WebStackLayout): GeneratedConfig {
    const text = [
      `# Written by the ferry agent: ${layout.domain}'s own server block(s), moved here by a migration.`,
      ...blockTexts(files).flatMap((b) => {
        const out = [...b];
        for (const l of listenLines(b))
          out[l.index] = `${l.indent}listen ${[movedSpec(l.spec, layout), ...l.params].join(' ')};`;
        return [...out, ''];
      }),
    ].join('\n');
    return { files: [{ name: `ferry-web-${layout.domain}.conf`, text }] };
  }

  async check(): Promise<void> {
    await this.nginx(['-t'], 'NGINX_CONFIG_INVALID');
  }

  async reload(): Promise<void> {
    await this.nginx(['-s', 'reload'], 'NGINX_RELOAD_FAILED');
  }

  private nginx(args: string[], code: 'NGINX_CONFIG_INVALID' | 'NGINX_RELOAD_FAILED'): Promise<void> {
    return runNginx(this.command, args, code);
  }
}
