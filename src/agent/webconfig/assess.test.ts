/** What Ferry refuses to move, site by site: each refusal with its code, reason and place. */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { assessSites, defaultCustomerOf, siteDataDirOf } from './assess.js';
import type { FpmPool, WebSite } from './model.js';
import { selfSignedCert } from '../../../test/certs.js';

let root = '';
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'ferry-assess-'));
  await mkdir(join(root, 'a'));
});
after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

const at = { file: '/etc/nginx/sites/x.conf', line: 3 };
const pool = (name: string, user: string | null): FpmPool => ({
  name,
  file: `/etc/php/8.2/fpm/pool.d/${name}.conf`,
  line: 1,
  listen: `/run/php/${name}.sock`,
  user,
  group: user,
});
function site(names: string[], more: Partial<WebSite> = {}): WebSite {
  return {
    server: 'nginx',
    at,
    names,
    defaultServer: false,
    listens: [{ address: null, port: 80, tls: false, at }],
    paths: [{ path: join(root, 'a'), directive: 'root', at }],
    application: 'static',
    apps: [],
    certificates: [],
    user: null,
    group: null,
    movable: false,
    refusals: [],
    ...more,
  };
}
const codes = (s: WebSite) => s.refusals.map((r) => r.code);

test("a name's customer: its last two labels, without a wildcard", () => {
  assert.equal(defaultCustomerOf('www.Shop.example.'), 'shop.example');
  assert.equal(defaultCustomerOf('*.shop.example'), 'shop.example');
  assert.equal(defaultCustomerOf('.shop.example'), 'shop.example');
});

test('each refusal: catch-all, regex names, variable and missing paths, pools missing, shared or root', async () => {
  const php = (p: FpmPool | null) => ({
    application: 'php-fpm' as const,
    apps: [{ kind: 'php-fpm' as const, socket: 'unix:/run/php/x.sock', at, pool: p }],
  });
  const shared = pool('shared', 'web');
  const sites = await assessSites(
    [
      site(['shop.example', 'www.shop.example']),
      site(['_']),
      site(['~^(www\\.)?blog\\.example$']),
      site(['v.example'], { paths: [{ path: `${root}/$host`, directive: 'root', at }] }),
      site(['m.example'], { paths: [{ path: join(root, 'a', 'gone'), directive: 'alias', at }] }),
      site(['c.example'], { certificates: [{ certificate: join(root, 'no.crt'), key: null, at }] }),
      site(['p.example'], php(null)),
      site(['one.example'], php(shared)),
      site(['two.example'], php(shared)),
      site(['r.example'], php(pool('r', 'root'))),
      site(['ok.example'], php(pool('ok', 'ok'))),
    ],
    { declaredRoots: [root] },
  );
  assert.deepEqual(
    sites.map((s) => [s.names[0], s.movable, codes(s)]),
    [
      ['shop.example', true, []],
      ['_', false, ['NO_NAME']],
      ['~^(www\\.)?blog\\.example$', false, ['NAME_PATTERN']],
      ['v.example', false, ['PATH_VARIABLE']],
      ['m.example', false, ['PATH_MISSING']],
      ['c.example', false, ['PATH_MISSING']],
      ['p.example', false, ['POOL_NOT_FOUND']],
      ['one.example', false, ['POOL_SHARED']],
      ['two.example', false, ['POOL_SHARED']],
      ['r.example', false, ['POOL_ROOT_USER']],
      ['ok.example', true, []],
    ],
  );
  assert.match(
    sites[6]!.refusals[0]!.message,
    /no PHP-FPM pool file listens on unix:\/run\/php\/x\.sock \(set at \/etc\/nginx\/sites\/x\.conf:3\)/,
  );
  assert.deepEqual(sites[4]!.refusals[0]!.at, at);
});

test('paths outside every declared root; a root itself and its subfolders are inside; a customer mapping is honoured', async () => {
  const [out, inside, prefix] = await assessSites(
    [
      site(['a.example'], { paths: [{ path: '/etc', directive: 'root', at }] }),
      site(['b.example'], { paths: [{ path: `${root}/a/../a`, directive: 'root', at }] }),
      site(['c.example'], { paths: [{ path: `${root}-other`, directive: 'root', at }] }),
    ],
    { declaredRoots: [root] },
  );
  assert.deepEqual(codes(out!), ['PATH_OUTSIDE_ROOTS']);
  assert.deepEqual(codes(inside!), []);
  assert.deepEqual(codes(prefix!), ['PATH_OUTSIDE_ROOTS'], 'a sibling sharing the prefix is not inside');
  // Under co.uk a customer is three labels: with that mapping, two shops in one block are refused.
  const [coUk] = await assessSites([site(['www.shop.co.uk', 'www.other.co.uk'])], {
    declaredRoots: [root],
    customerOf: (n) => n.split('.').slice(-3).join('.'),
  });
  assert.deepEqual(codes(coUk!), ['SHARED_NAMES']);
});

test("a site's data folder: the deepest common parent of its paths, strictly inside a declared root", async () => {
  assert.equal(
    siteDataDirOf(['/var/www/shop/public', '/var/www/shop/media/'], ['/var/www']),
    '/var/www/shop',
  );
  assert.equal(siteDataDirOf(['/var/www/shop/public'], ['/var/www']), '/var/www/shop/public');
  assert.equal(siteDataDirOf([], ['/var/www']), null);
  // Their only common parent is the root itself (or nothing inside one): no folder of their own.
  assert.equal(siteDataDirOf(['/var/www/a', '/var/www/b'], ['/var/www']), undefined);
  assert.equal(siteDataDirOf(['/var/www/a', '/srv/a'], ['/var/www', '/srv']), undefined);
  await mkdir(join(root, 'b'), { recursive: true });
  const [split] = await assessSites(
    [
      site(['split.example'], {
        paths: [
          { path: join(root, 'a'), directive: 'root', at },
          { path: join(root, 'b'), directive: 'alias', at: { ...at, line: 9 } },
        ],
      }),
    ],
    { declaredRoots: [root] },
  );
  assert.deepEqual(codes(split!), ['SPLIT_ROOTS']);
  assert.match(split!.refusals[0]!.message, /share no parent inside a declared root/);
});

test('a certificate that does not cover every name of the site is refused (CERT_NAMES), one that does is not', async () => {
  const crt = (name: string, names: string[]) => {
    const base = join(root, name);
    selfSignedCert({ keyFile: `${base}.key`, certFile: `${base}.crt`, cn: name, names });
    return { certificate: `${base}.crt`, key: `${base}.key`, at };
  };
  const tls = { listens: [{ address: null, port: 443, tls: true, at }] };
  const [covered, uncovered, wildcard] = await assessSites(
    [
      site(['shop.example', 'www.shop.example'], {
        ...tls,
        certificates: [crt('both', ['shop.example', 'www.shop.example'])],
      }),
      site(['blog.example', 'www.blog.example'], { ...tls, certificates: [crt('apex', ['blog.example'])] }),
      site(['a.news.example', '*.news.example'], {
        ...tls,
        certificates: [crt('wild', ['*.news.example'])],
      }),
    ],
    { declaredRoots: [root] },
  );
  assert.deepEqual(codes(covered!), []);
  assert.deepEqual(codes(uncovered!), ['CERT_NAMES']);
  assert.match(uncovered!.refusals[0]!.message, /does not cover www\.blog\.example/);
  assert.deepEqual(codes(wildcard!), []);
});
