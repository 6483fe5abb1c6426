/** The embedded default: the whole platform on loopback, and the demo that migrates a site in it. */
export {
  Sandbox,
  DEFAULT_SANDBOX,
  inProcessAgent,
  type SandboxOptions,
  type DemoSummary,
} from './sandbox.js';
export { runDemo, type DemoOptions } from './demo.js';
