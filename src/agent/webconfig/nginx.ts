/** The sites of an nginx server: its `server {}` blocks in the `nginx -T` dump. */
import type { NginxDirective } from './nginx-syntax.js';
import { poolListeningOn } from './php-fpm.js';
import type { FpmPool, SiteApp, SiteListen, SitePath, SourceRef, WebSite } from './model.js';

const ref = (d: NginxDirective): SourceRef => ({ file: d.file, line: d.line });

/** `listen`'s first parameter: `80`, `127.0.0.1:8080`, `[::1]:443`, `*:80`, `unix:/path`. */
function parseListen(d: NginxDirective): (SiteListen & { isDefault: boolean }) | null {
  const spec = d.args[0];
  if (!spec) return null;
  const params = d.args.slice(1);
  const tls = params.includes('ssl') || params.includes('quic');
  const isDefault = params.includes('default_server') || params.includes('default');
  let address: string | null;
  let port = 80;
  if (spec.startsWith('unix:')) return { address: spec, port: 0, tls, at: ref(d), isDefault };
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(spec);
  if (v6) {
    address = v6[1]!;
    if (v6[2]) port = Number(v6[2]);
  } else if (/^\d+$/.test(spec)) {
    address = null;
    port = Number(spec);
  } else {
    const i = spec.lastIndexOf(':');
    address = i < 0 ? spec : spec.slice(0, i);
    if (i >= 0) port = Number(spec.slice(i + 1));
  }
  if (address === '*' || address === '0.0.0.0') address = null;
  return { address, port, tls, at: ref(d), isDefault };
}

function all(list: NginxDirective[] | null, name: string): NginxDirective[] {
  return (list ?? []).filter((d) => d.name === name);
}

/** Directives named `names` in a server block and its (nested) locations and `if` blocks. */
function deep(list: NginxDirective[], names: string[]): NginxDirective[] {
  const out: NginxDirective[] = [];
  for (const d of list) {
    if (names.includes(d.name)) out.push(d);
    if (d.block && (d.name === 'location' || d.name === 'if' || d.name === 'limit_except'))
      out.push(...deep(d.block, names));
  }
  return out;
}

/** Every `server {}` of every `http {}`, described; `movable` and `refusals` are filled in later. */
export function nginxSites(config: NginxDirective[], pools: FpmPool[]): WebSite[] {
  const sites: Array<WebSite & { defaults: Set<string> }> = [];
  for (const http of all(config, 'http')) {
    const body = http.block ?? [];
    const upstreams = new Map<string, string[]>();
    for (const u of all(body, 'upstream')) {
      upstreams.set(
        u.args[0] ?? '',
        all(u.block, 'server').map((s) => s.args[0] ?? ''),
      );
    }
    const httpRoot = all(body, 'root').at(-1);
    const httpCert = all(body, 'ssl_certificate');
    const httpKey = all(body, 'ssl_certificate_key');
    for (const server of all(body, 'server')) {
      const sb = server.block ?? [];
      const names = all(sb, 'server_name').flatMap((d) => d.args);
      const parsed = all(sb, 'listen')
        .map(parseListen)
        .filter((l) => l !== null);
      const listens: Array<SiteListen & { isDefault: boolean }> = parsed.length
        ? parsed
        : [{ address: null, port: 80, tls: false, at: ref(server), isDefault: false }];
      const paths: SitePath[] = [];
      const serverRoot = all(sb, 'root').at(-1) ?? httpRoot;
      if (serverRoot?.args[0])
        paths.push({ path: serverRoot.args[0], directive: 'root', at: ref(serverRoot) });
      for (const d of deep(
        sb.filter((x) => x.name === 'location' || x.name === 'if'),
        ['root', 'alias'],
      )) {
        if (d.args[0] && !paths.some((p) => p.path === d.args[0])) {
          paths.push({ path: d.args[0], directive: d.name, at: ref(d) });
        }
      }
      const apps: SiteApp[] = [];
      for (const d of deep(sb, ['fastcgi_pass', 'proxy_pass', 'grpc_pass', 'uwsgi_pass', 'scgi_pass'])) {
        const target = d.args[0] ?? '';
        if (d.name === 'fastcgi_pass') {
          const socket = upstreams.get(target)?.[0] ?? target;
          if (!apps.some((a) => a.kind === 'php-fpm' && a.socket === socket)) {
            apps.push({ kind: 'php-fpm', socket, at: ref(d), pool: poolListeningOn(pools, socket) });
          }
        } else {
          const host = /^[a-z]+:\/\/([^/]+)/i.exec(target)?.[1];
          const members = host ? upstreams.get(host) : undefined;
          const upstream = members ? `${target} (upstream ${host}: ${members.join(', ')})` : target;
          if (!apps.some((a) => a.kind === 'proxy' && a.upstream === upstream))
            apps.push({ kind: 'proxy', upstream, at: ref(d) });
        }
      }
      const tls = listens.some((l) => l.tls);
      const certs = all(sb, 'ssl_certificate');
      const keys = all(sb, 'ssl_certificate_key');
      const useCerts = certs.length ? certs : tls ? httpCert : [];
      const useKeys = certs.length ? keys : tls ? httpKey : [];
      const certificates = useCerts.map((c, i) => ({
        certificate: c.args[0] ?? '',
        key: useKeys[i]?.args[0] ?? null,
        at: ref(c),
      }));
      const pool = apps.flatMap((a) => (a.kind === 'php-fpm' && a.pool ? [a.pool] : []))[0] ?? null;
      const kinds = new Set(apps.map((a) => a.kind));
      sites.push({
        server: 'nginx',
        at: ref(server),
        names,
        defaultServer: false,
        listens: listens.map(({ isDefault: _d, ...l }) => l),
        paths,
        application: kinds.size === 0 ? 'static' : kinds.size > 1 ? 'mixed' : [...kinds][0]!,
        apps,
        certificates,
        user: pool?.user ?? null,
        group: pool?.group ?? null,
        movable: false,
        refusals: [],
        defaults: new Set(listens.filter((l) => l.isDefault).map((l) => `${l.address ?? '*'}:${l.port}`)),
      });
    }
  }
  // The default server of an address:port is the one marked default_server there, else the first.
  const seen = new Map<string, (typeof sites)[number]>();
  for (const s of sites) {
    for (const l of s.listens) {
      const key = `${l.address ?? '*'}:${l.port}`;
      const cur = seen.get(key);
      if (!cur || (!cur.defaults.has(key) && s.defaults.has(key))) seen.set(key, s);
    }
  }
  for (const s of seen.values()) s.defaultServer = true;
  return sites.map(({ defaults: _d, ...s }) => s);
}
