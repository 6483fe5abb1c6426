/**
 * Entry point of a `SiteProcess` (see site-process.ts): the built-in site app (`SiteServer`) in a
 * process of its own session, driven over a Unix socket by whichever agent holds it. Argument:
 * the JSON of `SiteProcessConfig`. It prints one JSON line on stdout once it listens (or why it
 * could not start), then writes nothing more there. It stops when asked (`stop`), on SIGTERM or
 * SIGINT, or by itself once no agent has been connected for `orphanTimeoutMs`.
 */
import { FerryError, isFerryError } from '../common/errors.js';
import {
  serveControl,
  writeReady,
  type ControlRequest,
  type ControlServer,
} from '../common/control-socket.js';
import { SiteServer, type SiteMode } from './site-server.js';
import type { SiteProcessConfig, SiteProcessInfo } from './site-process.js';

const config = JSON.parse(process.argv[2] ?? '{}') as SiteProcessConfig;
let stopping: Promise<void> | null = null;

function str(req: ControlRequest, key: string): string {
  const v = req[key];
  if (typeof v !== 'string') throw new FerryError('SITE_PROCESS', `request ${req.op} needs a string ${key}`);
  return v;
}

async function main(): Promise<void> {
  let server: SiteServer;
  try {
    server = new SiteServer(config.site);
    await server.start();
  } catch (err) {
    writeReady({
      ok: false,
      code: isFerryError(err) ? err.code : 'SITE_PROCESS',
      message: (err as Error).message,
    });
    process.exitCode = 1;
    return;
  }
  let control: ControlServer | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      control?.close();
      await server.stop();
      // The reply to `stop` goes out, then the control connections end; the process then ends by
      // itself, or here if something still holds it.
      control?.endConnections();
      setTimeout(() => process.exit(0), 1000).unref();
    })());
  const info = (): SiteProcessInfo => ({
    pid: process.pid,
    name: server.name,
    addresses: server.addresses(),
    port: server.port,
    dataDir: config.site.dataDir,
    sites: server.sites().map((domain) => ({ domain, mode: server.mode(domain) })),
  });

  const handle = async (req: ControlRequest): Promise<unknown> => {
    switch (req.op) {
      case 'info':
        return info();
      case 'addSite':
        return server.addSite(str(req, 'domain'), req.mode as SiteMode);
      case 'removeSite':
        return server.removeSite(str(req, 'domain'), { deleteData: req.deleteData === true });
      case 'siteStats':
        return server.siteStats(str(req, 'domain'));
      case 'waitIdle':
        return server.waitIdle(str(req, 'domain'), Number(req.timeoutMs));
      case 'reloadSite':
        return server.reloadSite(str(req, 'domain'));
      case 'stop':
        await stop();
        return undefined;
      default:
        throw new FerryError('SITE_PROCESS', `unknown request ${JSON.stringify(req.op)}`);
    }
  };

  try {
    control = await serveControl({
      socketPath: config.socketPath,
      orphanTimeoutMs: config.orphanTimeoutMs,
      handle,
      onOrphaned: () => void stop(),
      code: 'SITE_PROCESS',
    });
  } catch (err) {
    await server.stop();
    writeReady({
      ok: false,
      code: 'SITE_PROCESS',
      message: `cannot listen on ${config.socketPath}: ${(err as Error).message}`,
    });
    process.exit(1);
  }
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  writeReady({ ok: true, info: info() });
}

void main();
