/**
 * Entry point of a `SiteProcess` (see site-process.ts): the built-in site app (`SiteServer`) in a
 * process of its own session, driven over a Unix socket by whichever agent holds it. Argument:
 * the JSON of `SiteProcessConfig`. It prints one JSON line on stdout once it listens (or why it
 * could not start), then writes nothing more there. It stops when asked (`stop`), on SIGTERM or
 * SIGINT, or by itself once no agent has been connected for `orphanTimeoutMs`.
 */
import { FerryError } from '../common/errors.js';
import { runControlledChild, type ControlRequest } from '../common/control-socket.js';
import { SiteServer, type SiteMode, type SiteUpstream } from './site-server.js';
import type { SiteProcessConfig, SiteProcessInfo } from './site-process.js';

const config = JSON.parse(process.argv[2] ?? '{}') as SiteProcessConfig;

function str(req: ControlRequest, key: string): string {
  const v = req[key];
  if (typeof v !== 'string') throw new FerryError('SITE_PROCESS', `request ${req.op} needs a string ${key}`);
  return v;
}

void runControlledChild<SiteServer>({
  socketPath: config.socketPath,
  orphanTimeoutMs: config.orphanTimeoutMs,
  code: 'SITE_PROCESS',
  start: async () => {
    const server = new SiteServer(config.site);
    await server.start();
    return server;
  },
  close: (server) => server.stop(),
  info: (server): SiteProcessInfo => ({
    pid: process.pid,
    name: server.name,
    addresses: server.addresses(),
    port: server.port,
    dataDir: config.site.dataDir,
    sites: server.sites().map((domain) => {
      const upstream = server.upstream(domain);
      return { domain, mode: server.mode(domain), ...(upstream ? { upstream } : {}) };
    }),
  }),
  handle: async (server, req) => {
    switch (req.op) {
      case 'addSite': {
        const domain = str(req, 'domain');
        const upstream = req.upstream as SiteUpstream | undefined;
        await server.addSite(domain, req.mode as SiteMode, upstream !== undefined ? { upstream } : {});
        const kept = server.upstream(domain);
        return kept ? { upstream: kept } : {};
      }
      case 'removeSite':
        return server.removeSite(str(req, 'domain'), { deleteData: req.deleteData === true });
      case 'siteStats':
        return server.siteStats(str(req, 'domain'));
      case 'waitIdle':
        return server.waitIdle(str(req, 'domain'), Number(req.timeoutMs));
      case 'reloadSite':
        return server.reloadSite(str(req, 'domain'));
      default:
        throw new FerryError('SITE_PROCESS', `unknown request ${JSON.stringify(req.op)}`);
    }
  },
});
