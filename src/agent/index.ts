/** The host agent: a hosting server's addresses, redirects and sites, driven by the orchestrator. */
export { LocalHost, httpProbe, type LocalHostOptions } from './local.js';
export { LoopbackAddresses, IprouteAddresses, type AddressManager } from './addresses.js';
