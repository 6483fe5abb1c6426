/**
 * The agent daemon: a `HostAgent` behind its HTTP API. `startAgent` is what `ferry agent` and the
 * sandbox's agents over HTTP both run; `runAgent` serves until aborted, then shuts down cleanly
 * (the receiver of site data stopped, the saved state kept for the next start); its redirects stay up and
 * forwarding, and its site app's own process serving, for the next start to adopt.
 */
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { join } from 'node:path';
import { HostAgent, type HostAgentOptions } from './agent.js';
import { FenceKeeper } from './fence.js';
import { buildAgentServer, type AgentServerOptions } from './server.js';

export interface StartAgentOptions extends HostAgentOptions, Omit<AgentServerOptions, 'logger'> {
  /** Address and port of the API (port 0: any free port). */
  listen: { address: string; port: number };
  logger?: Logger;
}

export interface RunAgentOptions extends StartAgentOptions {
  /** Called once the API listens, with its URL. */
  onReady?: (url: string, agent: HostAgent) => void;
}

/** A started agent: its core, its API and the API's URL. */
export interface RunningAgent {
  agent: HostAgent;
  app: FastifyInstance;
  url: string;
  /** Stop the API, then the agent (what `opts` keeps stays up for the next start to adopt: see `HostAgent.stop`). */
  close(opts?: { keepRedirects?: boolean; keepSiteApp?: boolean }): Promise<void>;
}

/** Start an agent (restoring its saved state) and its API; resolves once the API listens. */
export async function startAgent(opts: StartAgentOptions): Promise<RunningAgent> {
  const logger = opts.logger;
  // The HTTPS certificate, when the API has one, is also the one site data is received with.
  const core: HostAgentOptions =
    opts.tls && !opts.rsync?.tls ? { ...opts, rsync: { ...opts.rsync, tls: opts.tls } } : opts;
  const agent = new HostAgent(logger && !core.log ? { ...core, log: (m) => logger.info(m) } : core);
  await agent.start();
  let app: FastifyInstance | undefined;
  try {
    // The newest fencing token seen survives restarts: a paused ex-leader stays refused.
    const fence = new FenceKeeper(opts.id, join(opts.dataDir, 'fence.json'));
    await fence.load();
    app = buildAgentServer(agent, {
      token: opts.token,
      fence,
      ...(opts.tls ? { tls: opts.tls } : {}),
      ...(opts.logger ? { logger: opts.logger } : {}),
    });
    await app.listen({ host: opts.listen.address, port: opts.listen.port });
  } catch (err) {
    await app?.close().catch(() => undefined);
    // What serves traffic (redirects, the site app's own process) stays for the next start to adopt.
    await agent.stop({ keepRedirects: true, keepSiteApp: true });
    throw err;
  }
  const addr = app.server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const api = app;
  return {
    agent,
    app: api,
    url: `${opts.tls ? 'https' : 'http'}://${host}:${addr.port}`,
    close: async (closeOpts = {}) => {
      try {
        await api.close();
      } finally {
        await agent.stop(closeOpts);
      }
    },
  };
}

/** Start an agent and serve its API until `signal` aborts. */
export async function runAgent(opts: RunAgentOptions, signal: AbortSignal): Promise<void> {
  const running = await startAgent(opts);
  try {
    opts.onReady?.(running.url, running.agent);
    if (!signal.aborted)
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  } finally {
    // Redirects keep forwarding and the site app's process serving while the daemon is down (a
    // restart, an upgrade); the next start adopts them.
    await running.close({ keepRedirects: true, keepSiteApp: true });
  }
}
