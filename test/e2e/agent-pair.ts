/**
 * Two real host agents behind their HTTP API on loopback, as `ferry agent` runs them (origin
 * serving the given sites, target empty), the zone such tests give the controller, and the
 * `ferry` CLI run from source: the set-up shared by the tests of the controller as deployed.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LoopbackAddresses, startAgent } from '../../src/agent/index.js';
import { freePort } from '../ports.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

/**
 * Start origin and target agents on `ips` (one web port for both), their data under `dir`; each is
 * pushed onto `agents` as soon as it runs, so that the caller closes what started even on a failure.
 */
export async function startAgentPair(opts: {
  dir: string;
  ips: { origin: string; target: string };
  httpPort: number;
  token: string;
  sites: string[];
  agents: Array<{ close(): Promise<void> }>;
}): Promise<Record<'origin' | 'target', string>> {
  const urls = { origin: '', target: '' };
  for (const id of ['origin', 'target'] as const) {
    const running = await startAgent({
      id,
      dataDir: join(opts.dir, id),
      sharedIps: [opts.ips[id]],
      httpPort: opts.httpPort,
      addresses: new LoopbackAddresses(),
      web: { kind: 'builtin' },
      rsync: { port: await freePort(opts.ips[id]) },
      listen: { address: opts.ips[id], port: 0 },
      token: opts.token,
    });
    opts.agents.push(running);
    urls[id] = running.url;
    if (id === 'origin') for (const d of opts.sites) await running.agent.addSite(d, 'serve');
  }
  return urls;
}

/** Zone `example.` with its name server `ns1` at `nsAddress` and each site's A record (TTL 1) at `origin`. */
export function exampleZone(nsAddress: string, sites: string[], origin: string): string {
  const records = sites.map((s) => `${s.replace(/\.example\.?$/, '')} 1 IN A ${origin}\n`).join('');
  return `$ORIGIN example.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A ${nsAddress}\n${records}`;
}

/** Run the `ferry` CLI from source, asynchronously: agents in this process keep answering meanwhile. */
export function ferryCli(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = execFile(
      process.execPath,
      ['--import', 'tsx', MAIN, ...args],
      { timeout: 150_000, env },
      (err, stdout, stderr) =>
        resolve({ status: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
    p.once('error', reject);
  });
}
