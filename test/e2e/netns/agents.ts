/**
 * `ferry agent` the way docs/deployment.md starts it on a hosting server, for the namespace tests:
 * the command line every test shares, and the first sites created through the agent's API.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import type { Topology } from './topology.js';

/** The `ferry` command from source (no build needed). */
export const FERRY = [process.execPath, '--import', 'tsx', join(process.cwd(), 'src/cli/main.ts')];

/** Argv of `ferry agent` on `address` (API on :7070, sites on :80 of the same shared IP), then `extra`. */
export function agentArgv(o: {
  address: string;
  id: string;
  tokenFile: string;
  dataDir: string;
  iface?: string;
  extra?: string[];
}): string[] {
  return [
    ...FERRY,
    'agent',
    '--listen',
    o.address,
    '--port',
    '7070',
    '--token-file',
    o.tokenFile,
    '--id',
    o.id,
    '--shared-ip',
    o.address,
    '--http-port',
    '80',
    '--data-dir',
    o.dataDir,
    '--interface',
    o.iface ?? 'eth0',
    ...(o.extra ?? []),
  ];
}

const PUT_SITES = `
  const [url, token, ...domains] = process.argv.slice(1);
  for (const d of domains) {
    const r = await fetch(url + '/v1/sites/' + d, { method: 'PUT', headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json' }, body: JSON.stringify({ mode: 'serve' }) });
    if (r.status !== 200) { console.error(d, r.status, await r.text()); process.exit(1); }
  }`;

/**
 * Create `domains` on the agent at `url` (`PUT /v1/sites/{d}`, mode serve), from the dns namespace
 * as an operator's script would; throws when the agent answers anything but 200.
 */
export function putSites(
  topo: Topology,
  url: string,
  token: string,
  domains: string[],
  env: NodeJS.ProcessEnv = process.env,
): void {
  execFileSync(
    'ip',
    [
      'netns',
      'exec',
      topo.ns.dns,
      process.execPath,
      '--input-type=module',
      '-e',
      PUT_SITES,
      url,
      token,
      ...domains,
    ],
    { stdio: 'inherit', timeout: 30_000, env },
  );
}
