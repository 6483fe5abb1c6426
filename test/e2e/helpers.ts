/** Helpers shared by the end-to-end tests: real DNS clients and binaries on the machine. */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Path of the first of `names` found in the usual binary folders, or undefined. */
export function findBinary(...names: string[]): string | undefined {
  for (const name of names) {
    for (const dir of ['/usr/bin', '/usr/sbin', '/usr/local/bin', '/usr/local/sbin', '/bin', '/sbin']) {
      const p = `${dir}/${name}`;
      if (existsSync(p)) return p;
    }
  }
  return undefined;
}

/** Ask with Debian's kdig or dig (whichever is installed) for `name`'s records of `type`. */
export async function digShort(
  server: { address: string; port: number },
  name: string,
  type: string,
): Promise<string[]> {
  const kdig = findBinary('kdig');
  const dig = findBinary('dig');
  const bin = kdig ?? dig;
  if (!bin) throw new Error('neither kdig nor dig is installed (apt-get install knot-dnsutils)');
  const { stdout } = await run(
    bin,
    [
      `@${server.address}`,
      '-p',
      String(server.port),
      name,
      type,
      '+short',
      '+norecurse',
      '+timeout=2',
      kdig ? '+retry=0' : '+tries=1',
    ],
    {
      timeout: 10_000,
    },
  );
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

/** The real DNS client available here, for skip messages. */
export function realDnsClient(): string | undefined {
  return findBinary('kdig', 'dig');
}
