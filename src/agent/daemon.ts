/**
 * The agent daemon: a `HostAgent` behind its HTTP API, running until aborted, then shut down
 * cleanly (the rsync daemon stopped, the state file kept for the next start). Redirects stay up
 * and forwarding, for the next start to adopt.
 */
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { HostAgent, type HostAgentOptions } from './agent.js';
import { buildAgentServer, type AgentServerOptions } from './server.js';

export interface RunAgentOptions extends HostAgentOptions, Omit<AgentServerOptions, 'logger'> {
  /** Address and port of the API. */
  listen: { address: string; port: number };
  logger?: Logger;
  /** Called once the API listens, with its URL. */
  onReady?: (url: string, agent: HostAgent) => void;
}

/** Start an agent and serve its API until `signal` aborts. */
export async function runAgent(opts: RunAgentOptions, signal: AbortSignal): Promise<void> {
  const agent = new HostAgent(opts);
  await agent.start();
  const app = buildAgentServer(agent, { token: opts.token, ...(opts.tls ? { tls: opts.tls } : {}), ...(opts.logger ? { logger: opts.logger } : {}) });
  try {
    await app.listen({ host: opts.listen.address, port: opts.listen.port });
    const addr = app.server.address() as AddressInfo;
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    opts.onReady?.(`${opts.tls ? 'https' : 'http'}://${host}:${addr.port}`, agent);
    if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  } finally {
    await app.close();
    // Redirects keep forwarding while the daemon is down (a restart, an upgrade); the next start adopts them.
    await agent.stop({ keepRedirects: true });
  }
}
