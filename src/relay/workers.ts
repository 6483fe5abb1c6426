import type { RedirectEngine } from './engine.js';
import type { RelayOptions } from './options.js';
import { TcpRelay } from './tcp-relay.js';

export function createUserspaceRelay(opts: RelayOptions & { workers?: number }): RedirectEngine {
  return new TcpRelay(opts);
}
