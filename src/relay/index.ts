/**
 * Redirect engines: the userspace relay (TCP/UDP, hold/release, PROXY protocol) and the kernel
 * engine (nftables). Both implement `RedirectEngine`.
 */
export type { RedirectEngine, RelayStats, ListenerStats, Upstream } from './engine.js';
export type { RelayOptions, ListenSpec, DataPlane } from './options.js';
export { TcpRelay } from './tcp-relay.js';
export { NativeRelay, useNativeDataPlane } from './native-relay.js';
export { createUserspaceRelay, WorkerRelay } from './workers.js';
export {
  encodeProxyHeader,
  encodeProxyV1,
  encodeProxyV2,
  parseProxyHeader,
  ProxyHeaderError,
  type ProxyAddresses,
  type ParsedProxyHeader,
} from './proxy-protocol.js';
export { KernelRelay, type KernelRelayOptions } from './kernel.js';
export { RelayProcess, type RelayProcessOptions, type RelayProcessInfo } from './process.js';
export { runRelay, createEngine, parseListen, parseUpstream, type RunRelayOptions } from './cli.js';
