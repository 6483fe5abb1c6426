/**
 * A minimal agent channel for the crash test: the platform (DNS server, hosting servers and
 * their redirects) lives in the test process and answers host and DNS operations over local
 * HTTP; the controller runs in a child process and drives it through `RpcHost` / `RpcDns`, so a
 * SIGKILL of the controller leaves the platform (and the traffic it carries) running, as a real
 * controller crash would. JSON in, JSON out; errors keep their FerryError code.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FerryError, errorMessage, isFerryError } from '../../src/common/errors.js';
import { toErrorCode } from '../../src/common/error-codes.js';
import type { DnsServer } from '../../src/dns/index.js';
import type { SiteMode, SiteStats } from '../../src/host/index.js';
import { observeServer, type DnsProvider, type HostDriver, type RedirectStats } from '../../src/migration/index.js';

const HOST_METHODS = new Set([
  'addAddress',
  'removeAddress',
  'listAddresses',
  'startRedirect',
  'setRedirectUpstream',
  'holdRedirect',
  'releaseRedirect',
  'redirectStats',
  'stopRedirect',
  'addSite',
  'removeSite',
  'hasSite',
  'siteMode',
  'setSiteMode',
  'siteStats',
  'waitSiteIdle',
  'syncSite',
  'probe',
]);

/** Serve `hosts` and the DNS server's zones on address:0; resolves with the URL. */
export async function startRpcServer(
  address: string,
  hosts: Map<string, HostDriver>,
  dns: DnsServer,
): Promise<{ url: string; server: Server; close: () => Promise<void> }> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        try {
          const { target, method, args } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { target: string; method: string; args: unknown[] };
          let value: unknown;
          if (target === 'dns') {
            if (method === 'getRRset') value = dns.zones.getRRset(String(args[0]), String(args[1]));
            else if (method === 'replaceRRset') value = dns.zones.replaceRRset(String(args[0]), String(args[1]), Number(args[2]), args[3] as string[]);
            else throw new FerryError('RPC_METHOD', `no dns method ${method}`);
          } else {
            const host = hosts.get(target);
            if (!host) throw new FerryError('HOST_UNKNOWN', `no host ${target}`);
            if (!HOST_METHODS.has(method)) throw new FerryError('RPC_METHOD', `no host method ${method}`);
            if (method === 'syncSite') {
              const to = hosts.get(String(args[1]));
              if (!to) throw new FerryError('HOST_UNKNOWN', `no host ${String(args[1])}`);
              value = await host.syncSite(String(args[0]), to);
            } else {
              const fn = (host as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[method]!;
              value = await fn.apply(host, args);
            }
          }
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, value: value ?? null }));
        } catch (err) {
          const code = isFerryError(err) ? err.code : 'RPC_FAILED';
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: false, code, message: errorMessage(err) }));
        }
      })();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, address, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${address}:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function call(url: string, target: string, method: string, args: unknown[]): Promise<unknown> {
  const res = await fetch(`${url}/call`, { method: 'POST', body: JSON.stringify({ target, method, args }), headers: { 'content-type': 'application/json' } });
  const body = (await res.json()) as { ok: boolean; value?: unknown; code?: string; message?: string };
  if (!body.ok) throw new FerryError(toErrorCode(body.code, 'RPC_FAILED'), body.message ?? 'rpc failed');
  return body.value;
}

/** A HostDriver in the controller process, driving a host of the platform process. */
export class RpcHost implements HostDriver {
  constructor(
    readonly id: string,
    private readonly url: string,
  ) {}
  private c<T>(method: string, ...args: unknown[]): Promise<T> {
    return call(this.url, this.id, method, args) as Promise<T>;
  }
  addAddress(address: string): Promise<void> {
    return this.c('addAddress', address);
  }
  removeAddress(address: string): Promise<void> {
    return this.c('removeAddress', address);
  }
  listAddresses(): Promise<string[]> {
    return this.c('listAddresses');
  }
  startRedirect(id: string, spec: { address: string; ports: number[]; upstream: string; sourceAddress?: string }): Promise<void> {
    return this.c('startRedirect', id, spec);
  }
  setRedirectUpstream(id: string, upstream: string): Promise<void> {
    return this.c('setRedirectUpstream', id, upstream);
  }
  holdRedirect(id: string): Promise<void> {
    return this.c('holdRedirect', id);
  }
  releaseRedirect(id: string): Promise<void> {
    return this.c('releaseRedirect', id);
  }
  async redirectStats(id: string): Promise<RedirectStats | undefined> {
    return ((await this.c('redirectStats', id)) as RedirectStats | null) ?? undefined;
  }
  stopRedirect(id: string): Promise<void> {
    return this.c('stopRedirect', id);
  }
  addSite(domain: string, mode: SiteMode): Promise<void> {
    return this.c('addSite', domain, mode);
  }
  removeSite(domain: string): Promise<void> {
    return this.c('removeSite', domain);
  }
  hasSite(domain: string): Promise<boolean> {
    return this.c('hasSite', domain);
  }
  siteMode(domain: string): Promise<SiteMode | null> {
    return this.c('siteMode', domain);
  }
  setSiteMode(domain: string, mode: SiteMode): Promise<void> {
    return this.c('setSiteMode', domain, mode);
  }
  siteStats(domain: string): Promise<SiteStats> {
    return this.c('siteStats', domain);
  }
  waitSiteIdle(domain: string, timeoutMs: number): Promise<boolean> {
    return this.c('waitSiteIdle', domain, timeoutMs);
  }
  syncSite(domain: string, to: HostDriver): Promise<{ files: number; bytes: number }> {
    return this.c('syncSite', domain, to.id);
  }
  probe(domain: string, address: string, port: number, path: string): Promise<{ status: number; bodySha256: string }> {
    return this.c('probe', domain, address, port, path);
  }
}

/** The platform's DNS for the controller process: changes over RPC, propagation seen over the wire. */
export class RpcDns implements DnsProvider {
  constructor(
    private readonly url: string,
    private readonly server: { address: string; port: number },
    private readonly zone: string,
  ) {}
  async getRRset(name: string, type: string): Promise<{ ttl: number; rdata: string[] } | undefined> {
    return ((await call(this.url, 'dns', 'getRRset', [name, type])) as { ttl: number; rdata: string[] } | null) ?? undefined;
  }
  replaceRRset(name: string, type: string, ttl: number, rdata: string[]): Promise<{ serial: number }> {
    return call(this.url, 'dns', 'replaceRRset', [name, type, ttl, rdata]) as Promise<{ serial: number }>;
  }
  async observe(name: string, type: string): Promise<Array<{ server: string; serial: number | null; rdata: string[] }>> {
    return [await observeServer(this.server, this.zone, name, type, 2000)];
  }
}
