// `npm run bench`: every benchmark under bench/<name>/run.ts, one after the other, each printing
// its own figures and ratios against the peer it measures in the same run. `npm run bench -- dns`
// runs only the named ones.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const wanted = process.argv.slice(2);
const names = readdirSync('bench', { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join('bench', d.name, 'run.ts')))
  .map((d) => d.name)
  .filter((n) => wanted.length === 0 || wanted.includes(n))
  .sort();
let failed = 0;
for (const name of names) {
  console.log(`\n=== bench/${name} ===`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join('bench', name, 'run.ts')], {
    stdio: 'inherit',
  });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
