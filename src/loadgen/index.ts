/**
 * The load generator: simulated users reaching sites through DNS, with TTL-honouring and stale
 * stub caches, keep-alive and fresh connections, reads and uniquely keyed writes; every result
 * records the server that answered it.
 */
export {
  LoadGenerator,
  type LoadOptions,
  type LoadSummary,
  type RequestResult,
  type Resolver,
  type ClientProfile,
} from './load-generator.js';
