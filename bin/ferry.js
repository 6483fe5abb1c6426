#!/usr/bin/env node
// The `ferry` command: runs the compiled CLI (built by `npm run build`, which `npm ci` runs).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error('ferry: dist/ is missing; run `npm run build` (npm ci does it) first.');
  process.exit(70);
}
await import(main.href);
