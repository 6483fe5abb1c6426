/** The host agent: a hosting server's addresses, redirects and sites, driven by the orchestrator. */
export { LocalHost, httpProbe, type LocalHostOptions } from './local.js';
export { LoopbackAddresses, IprouteAddresses, type AddressManager } from './addresses.js';
export { HostAgent, type HostAgentOptions, type WebOptions, type RedirectSpec, type EngineKind } from './agent.js';
export { buildAgentServer, type AgentServerOptions } from './server.js';
export { HttpHostDriver, type HttpHostDriverOptions } from './client.js';
export { runAgent, type RunAgentOptions } from './daemon.js';
export { NginxFrontend, VHOST_PROBE_PATH, type NginxOptions, type VhostBackend } from './nginx.js';
export { RsyncReceiver, rsyncPush, type SyncEndpoint, type SyncProgress } from './rsync.js';
