/** The host agent: a hosting server's addresses, redirects and sites, driven by the orchestrator. */
export { LoopbackAddresses, IprouteAddresses, type AddressManager } from './addresses.js';
export {
  HostAgent,
  type HostAgentOptions,
  type WebOptions,
  type RedirectSpec,
  type EngineKind,
} from './agent.js';
export { FileStateStore, MemoryStateStore, type AgentState, type AgentStateStore } from './state.js';
export {
  RsyncTransport,
  InProcessTransport,
  isSyncPeer,
  type SyncTransport,
  type SyncPeer,
  type PushProgress,
} from './transport.js';
export { httpProbe } from './probe.js';
export { buildAgentServer, type AgentServerOptions } from './server.js';
export { HttpHostDriver, type HttpHostDriverOptions } from './client.js';
export { FENCE_HEADER, FenceKeeper, parseFenceToken } from './fence.js';
export {
  runAgent,
  startAgent,
  type RunAgentOptions,
  type StartAgentOptions,
  type RunningAgent,
} from './daemon.js';
export { NginxFrontend, VHOST_PROBE_PATH, type NginxOptions, type VhostBackend } from './nginx.js';
export { RsyncReceiver, rsyncPush, type SyncEndpoint, type SyncProgress } from './rsync.js';
export {
  readWebSites,
  DEFAULT_DECLARED_ROOTS,
  type WebConfigOptions,
  type WebSite,
  type WebSitesReport,
  type Refusal,
  type RefusalCode,
  type SiteNeed,
  type SiteNeeds,
} from './webconfig/index.js';
export { ChangeTracker, type ChangeSet, type ChangeTrackerOptions } from './tracker.js';
export {
  WebStack,
  NginxFlavor,
  type WebSiteBundle,
  type GateUpstream,
  type WebFlavor,
  type WebStackLayout,
  type GeneratedConfig,
  type GeneratedFile,
  type SiteConfigFile,
  type PhpFpmOptions,
} from './webstack/index.js';
