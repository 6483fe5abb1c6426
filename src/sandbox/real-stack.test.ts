import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isFerryError } from '../common/errors.js';
import { findStackBinaries, relocate } from './real-stack.js';

test('without nginx and php-fpm8.2 the real stack names the Debian packages to install', async (t) => {
  const empty = await mkdtemp(join(tmpdir(), 'ferry-nostack-'));
  t.after(() => rm(empty, { recursive: true, force: true }));
  assert.throws(
    () => findStackBinaries([empty]),
    (err: unknown) =>
      isFerryError(err, 'SANDBOX_STACK_MISSING') &&
      /nginx-light/.test(err.message) &&
      /php8\.2-fpm/.test(err.message) &&
      /--stack nginx-php/.test(err.message),
  );
});

test("relocate gives the origin folder's paths under the target's, and nothing else", () => {
  const bundle = {
    domain: 'shop.example',
    dataDir: { path: '/tmp/sb/origin/www/shop.example/htdocs', user: 'www-data' },
    pool: {
      path: '/tmp/sb/origin/etc/php/8.2/fpm/pool.d/shop.conf',
      text: 'listen = /tmp/sb/origin/run/x.sock\n',
    },
    files: [{ path: '/tmp/sb/origin-old/site.conf', text: 'root "/tmp/sb/origin/www";\n' }],
  };
  assert.deepEqual(relocate(bundle, '/tmp/sb/origin/', '/tmp/sb/target/'), {
    domain: 'shop.example',
    dataDir: { path: '/tmp/sb/target/www/shop.example/htdocs', user: 'www-data' },
    pool: {
      path: '/tmp/sb/target/etc/php/8.2/fpm/pool.d/shop.conf',
      text: 'listen = /tmp/sb/target/run/x.sock\n',
    },
    // Another folder that only starts with the same name is not the origin's.
    files: [{ path: '/tmp/sb/origin-old/site.conf', text: 'root "/tmp/sb/target/www";\n' }],
  });
});
