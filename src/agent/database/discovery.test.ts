/**
 * Which databases a site uses: wp-config.php in the forms WordPress accepts (quotes, spaces,
 * comments, host:port and socket forms), declared ones, and those on another host left in place.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isFerryError } from '../../common/errors.js';
import { discoverDatabases, findSiteDatabases, locate, parseDbHost, parseWpConfig } from './index.js';

const wpConfig = `<?php
/** The name of the database for WordPress */
define( 'DB_NAME', 'wp_site' );
// define('DB_NAME', 'commented_out');
# define('DB_USER', 'hash_comment');
/* define('DB_PASSWORD', 'block comment'); */
define("DB_USER", "wp_user");
define ( 'DB_PASSWORD' , 'it\\'s "secret" // not a comment' ) ;
define('DB_HOST', 'localhost:/run/mysqld/mysqld.sock');
define('DB_CHARSET', 'utf8mb4');
$table_prefix = 'wp_';
`;

test('wp-config.php: quotes, spaces, comments, escapes; the first define wins', () => {
  assert.deepEqual(parseWpConfig(wpConfig), {
    name: 'wp_site',
    user: 'wp_user',
    password: 'it\'s "secret" // not a comment',
    host: 'localhost:/run/mysqld/mysqld.sock',
  });
  const twice =
    "define('DB_NAME','a'); define('DB_NAME','b'); define('DB_USER','u'); define('DB_PASSWORD','');";
  assert.deepEqual(parseWpConfig(twice), { name: 'a', user: 'u', password: '', host: 'localhost' });
});

test('wp-config.php: a missing or computed setting is DB_CONFIG naming it, never showing the password', () => {
  assert.throws(
    () => parseWpConfig("define('DB_NAME','a'); define('DB_PASSWORD','pw-123');", '/srv/wp-config.php'),
    (e) =>
      isFerryError(e, 'DB_CONFIG') && /\/srv\/wp-config.php: no define\('DB_USER'/.test((e as Error).message),
  );
  assert.throws(
    () =>
      parseWpConfig(
        "define('DB_NAME', getenv('WP_DB')); define('DB_USER','u'); define('DB_PASSWORD','pw-123');",
      ),
    (e) => {
      assert.ok(isFerryError(e, 'DB_CONFIG'));
      assert.match((e as Error).message, /DB_NAME is not a plain string .*ferry.yaml/);
      assert.doesNotMatch((e as Error).message, /pw-123/);
      return true;
    },
  );
});

test('DB_HOST forms: host, host:port, host:socket, [v6]:port, bare IPv6', () => {
  assert.deepEqual(parseDbHost('localhost'), { host: 'localhost' });
  assert.deepEqual(parseDbHost('127.0.0.1:3307'), { host: '127.0.0.1', port: 3307 });
  assert.deepEqual(parseDbHost('localhost:/var/run/mysqld/mysqld.sock'), {
    host: 'localhost',
    socket: '/var/run/mysqld/mysqld.sock',
  });
  assert.deepEqual(parseDbHost('[::1]:3306'), { host: '::1', port: 3306 });
  assert.deepEqual(parseDbHost('::1'), { host: '::1' });
  assert.deepEqual(parseDbHost('db.example.net'), { host: 'db.example.net' });
  assert.throws(
    () => parseDbHost('db:port'),
    (e) => isFerryError(e, 'DB_CONFIG'),
  );

  assert.deepEqual(locate('localhost'), { kind: 'default-socket' });
  assert.deepEqual(locate('localhost:3307'), { kind: 'tcp', host: '127.0.0.1', port: 3307 });
  assert.deepEqual(locate('localhost:/tmp/m.sock'), { kind: 'socket', socket: '/tmp/m.sock' });
  assert.deepEqual(locate('127.0.0.1'), { kind: 'tcp', host: '127.0.0.1', port: 3306 });
  assert.deepEqual(locate('192.0.2.10:3310', ['192.0.2.10']), {
    kind: 'tcp',
    host: '192.0.2.10',
    port: 3310,
  });
  assert.equal(locate('192.0.2.10'), undefined, 'not one of ours');
  assert.equal(locate('db.example.net'), undefined);
});

test('discovery: the application config and ferry.yaml; a remote database is left in place and said so', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-wpconfig-'));
  try {
    const file = join(dir, 'wp-config.php');
    writeFileSync(file, wpConfig);
    const found = await discoverDatabases({
      wpConfig: file,
      declared: [
        { name: 'shop', user: 'shopper', password: 's', host: '127.0.0.1:3306' },
        { name: 'analytics', user: 'a', password: 'a-pw', host: 'db.example.net:3306' },
      ],
    });
    assert.deepEqual(
      found.move.map((d) => [d.name, d.user, d.location, d.source]),
      [
        ['shop', 'shopper', { kind: 'tcp', host: '127.0.0.1', port: 3306 }, 'ferry.yaml'],
        ['wp_site', 'wp_user', { kind: 'socket', socket: '/run/mysqld/mysqld.sock' }, file],
      ],
    );
    assert.deepEqual(
      found.leftInPlace.map((d) => [d.name, d.host]),
      [['analytics', 'db.example.net:3306']],
    );
    assert.match(found.leftInPlace[0]!.reason, /left in place/);
    assert.doesNotMatch(JSON.stringify(found.leftInPlace), /a-pw/);

    const remote = join(dir, 'remote.php');
    writeFileSync(remote, wpConfig.replace('localhost:/run/mysqld/mysqld.sock', 'db.internal'));
    const r = await discoverDatabases({ wpConfig: remote });
    assert.deepEqual(r.move, []);
    assert.deepEqual(
      r.leftInPlace.map((d) => d.name),
      ['wp_site'],
    );

    await assert.rejects(discoverDatabases({ wpConfig: join(dir, 'none.php') }), (e) =>
      isFerryError(e, 'DB_CONFIG'),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('PostgreSQL: a declared database on this server is refused with what is missing; on a shared host it stays in place', async () => {
  const none = { findWpConfig: async () => undefined, localAddresses: ['192.0.2.10'] };
  for (const host of [undefined, 'localhost', '192.0.2.10:5432']) {
    await assert.rejects(
      findSiteDatabases(
        'shop.example',
        [
          { name: 'wp_shop', users: ['wp_shop'] },
          { name: 'orders', engine: 'postgresql', ...(host ? { host } : {}) },
        ],
        none,
      ),
      (e) =>
        isFerryError(e, 'DB_ENGINE_UNSUPPORTED') &&
        /database orders is a PostgreSQL database on this server/.test(e.message) &&
        /logical replication/.test(e.message) &&
        !/wp_shop/.test(e.message),
      `host ${host ?? '(none)'}`,
    );
  }
  const r = await findSiteDatabases(
    'shop.example',
    [
      { name: 'wp_shop', users: ['wp_shop'] },
      { name: 'orders', engine: 'postgresql', host: 'pg.example.net:5432' },
    ],
    none,
  );
  assert.deepEqual(
    r.move.map((m) => m.name),
    ['wp_shop'],
  );
  assert.deepEqual(
    r.leftInPlace.map((l) => [l.name, l.host]),
    [['orders', 'pg.example.net:5432']],
  );
});
