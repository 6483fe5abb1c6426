/** Measurement: traffic sampling of running migrations and the Prometheus metrics of a controller. */
export { TrafficSampler, redirectIdOf, type TrafficSample, type TrafficSamplerOptions } from './traffic.js';
export {
  createMetrics,
  DNS_CHANNELS,
  type DnsQueryMessage,
  type FerryMetrics,
  type MetricsOptions,
} from './metrics.js';
