/**
 * Loads Ferry's native addons (binding.gyp, built into build/Release by `npm ci`). Each addon
 * serves a hot path where Node 20's own I/O is the measured bottleneck, and each caller keeps a
 * portable TypeScript path for when the addon is missing: not built (no compiler), another
 * platform, or switched off with FERRY_NATIVE=0 (the tests run both paths).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** The package root: the nearest folder above this module with binding.gyp (src/ or dist/ alike). */
function packageRoot(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

const cache = new Map<string, { binding: unknown } | { error: string }>();

/** True unless FERRY_NATIVE=0 (or "off"/"false") turns every addon off. */
export function nativeEnabled(): boolean {
  const v = (process.env.FERRY_NATIVE ?? '').toLowerCase();
  return !(v === '0' || v === 'off' || v === 'false');
}

/**
 * The addon `name` (a binding.gyp target), or why it is not available. Loaded once per process.
 * Linux only: the addons use recvmmsg/sendmmsg and epoll.
 */
export function loadNative<T>(name: string): { binding: T } | { error: string } {
  if (!nativeEnabled()) return { error: 'FERRY_NATIVE=0' };
  const hit = cache.get(name);
  if (hit) return hit as { binding: T } | { error: string };
  let result: { binding: unknown } | { error: string };
  const root = packageRoot();
  if (process.platform !== 'linux')
    result = { error: `native addons are Linux only (this is ${process.platform})` };
  else if (!root) result = { error: 'package root (binding.gyp) not found' };
  else {
    const file = join(root, 'build', 'Release', `${name}.node`);
    try {
      result = { binding: require(file) };
    } catch (err) {
      result = {
        error: `cannot load ${file} (run npm ci, or npx node-gyp rebuild): ${err instanceof Error ? err.message : String(err)}`,
      };
    }
  }
  cache.set(name, result);
  return result as { binding: T } | { error: string };
}
