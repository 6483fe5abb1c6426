/**
 * Run inside a network namespace by a test: drive two agents over their HTTPS APIs as the
 * controller does for a migration's data: the site added on both (serving on the origin, readonly
 * on the target), one sync pass origin → target. Input: FERRY_SYNC_CHILD, JSON of
 * `{ origin, target, token, caFile, domain }` (agent URLs). Prints one JSON line: the receive
 * session's secret (the test looks for it in the capture) and the pass's files and bytes.
 */
import { readFileSync } from 'node:fs';
import { HttpHostDriver } from '../../../src/agent/index.js';

const input = JSON.parse(process.env.FERRY_SYNC_CHILD ?? '{}') as {
  origin: string;
  target: string;
  token: string;
  caFile: string;
  domain: string;
};
const ca = readFileSync(input.caFile);
const origin = new HttpHostDriver({ id: 'origin', url: input.origin, token: input.token, ca });
const target = new HttpHostDriver({ id: 'target', url: input.target, token: input.token, ca });
try {
  await origin.addSite(input.domain, 'serve');
  await target.addSite(input.domain, 'readonly');
  const session = await target.openSyncReceiver(input.domain);
  const pass = await origin.syncSite(input.domain, target);
  process.stdout.write(`${JSON.stringify({ secret: session.secret, ...pass })}\n`);
} finally {
  origin.close();
  target.close();
}
