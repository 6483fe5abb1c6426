/**
 * One host agent behind its HTTP API on a loopback address, with an HttpHostDriver to it: the
 * fixture of the agent's own tests (its API, its database routes), which look inside the agent
 * as well as calling it.
 */
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { LoopbackAddresses } from '../src/agent/addresses.js';
import { HostAgent, type HostAgentOptions } from '../src/agent/agent.js';
import { HttpHostDriver, type HttpHostDriverOptions } from '../src/agent/client.js';
import { buildAgentServer } from '../src/agent/server.js';
import { freePort } from './ports.js';

/** A running agent, its API and a driver to it. */
export interface AgentApi {
  agent: HostAgent;
  app: FastifyInstance;
  driver: HttpHostDriver;
  /** Stop the driver, the API and the agent; its data folder stays. */
  stop(): Promise<void>;
}

/** Start agent `id` serving `sharedIp` (built-in web server, its own rsync port), its API on `sharedIp`. */
export async function startAgentApi(o: {
  id: string;
  sharedIp: string;
  dataDir: string;
  token: string;
  /** The driver's timeouts and retries. */
  driver?: Pick<HttpHostDriverOptions, 'timeoutMs' | 'attempts'>;
  /** More of the agent's options (its MariaDB, ...). */
  agent?: Partial<HostAgentOptions>;
}): Promise<AgentApi> {
  const agent = new HostAgent({
    id: o.id,
    dataDir: o.dataDir,
    sharedIps: [o.sharedIp],
    httpPort: 0,
    addresses: new LoopbackAddresses(),
    web: { kind: 'builtin' },
    rsync: { port: await freePort(o.sharedIp) },
    ...o.agent,
  });
  await agent.start();
  const app = buildAgentServer(agent, { token: o.token });
  await app.listen({ host: o.sharedIp, port: 0 });
  const url = `http://${o.sharedIp}:${(app.server.address() as AddressInfo).port}`;
  const driver = new HttpHostDriver({ id: o.id, url, token: o.token, ...o.driver });
  return {
    agent,
    app,
    driver,
    stop: async () => {
      driver.close();
      await app.close();
      await agent.stop();
    },
  };
}
