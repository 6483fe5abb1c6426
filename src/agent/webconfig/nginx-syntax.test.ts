/** nginx's configuration syntax on tricky input: quotes, escapes, comments, braces in strings, includes in a -T dump. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../common/errors.js';
import { parseNginx, parseNginxDump, tokenizeNginx } from './nginx-syntax.js';
import { parseFpmPools } from './php-fpm.js';

const words = (text: string) => tokenizeNginx(text).map((t) => (t.kind === 'word' ? t.value : t.kind));

test('quotes keep whitespace, ;, {, } and # as text; a } inside a string closes nothing', () => {
  const cfg = parseNginx(`server {\n  return 200 "a } b; { # c";\n  add_header X-A 'say "hi" {}';\n}\n`);
  assert.equal(cfg.length, 1);
  const [ret, hdr] = cfg[0]!.block!;
  assert.deepEqual(ret!.args, ['200', 'a } b; { # c']);
  assert.equal(ret!.line, 2);
  assert.deepEqual([hdr!.name, hdr!.args, hdr!.line], ['add_header', ['X-A', 'say "hi" {}'], 3]);
});

test('escapes: \\" \\\' \\\\ \\t \\n are unescaped, any other pair (a regex) is kept', () => {
  assert.deepEqual(words(`a "q\\"x" 'y\\'z' "b\\\\s" "t\\tn\\n" ~^/a\\.php$;`), [
    'a',
    'q"x',
    "y'z",
    'b\\s',
    't\tn\n',
    '~^/a\\.php$',
    ';',
  ]);
  // A backslash outside quotes makes ; part of the word; like nginx, the backslash itself stays.
  assert.deepEqual(words('set $a x\\;y;'), ['set', '$a', 'x\\;y', ';']);
});

test('comments run to the end of the line, but # inside a word or string is text', () => {
  assert.deepEqual(words('# whole line\nroot /srv/a#b; # trailing } {\nindex "#x";'), [
    'root',
    '/srv/a#b',
    ';',
    'index',
    '#x',
    ';',
  ]);
});

test('${var} keeps its braces; a } inside a word is text; only a } starting a word closes a block', () => {
  const cfg = parseNginx('http {\n  server {\n    root /srv/${host}/www;\n  }\n}\n');
  const root = cfg[0]!.block![0]!.block![0]!;
  assert.deepEqual([root.name, root.args, root.line], ['root', ['/srv/${host}/www'], 3]);
  assert.deepEqual(words('a b}c;'), ['a', 'b}c', ';']);
});

test('line numbers count lines inside multi-line strings', () => {
  const cfg = parseNginx('a "x\ny\nz";\nb c;\n');
  assert.deepEqual(
    cfg.map((d) => [d.name, d.line]),
    [
      ['a', 1],
      ['b', 4],
    ],
  );
});

test('syntax errors name the file and line, and never throw anything but a FerryError', () => {
  const cases: Array<[string, RegExp]> = [
    [
      'server {\n  listen 80;\n',
      /site\.conf:2: unexpected end of file, expecting "}" \(block opened on line 1\)/,
    ],
    ['server {\n}\n}\n', /site\.conf:3: unexpected "}"/],
    ['server {\n  root /srv\n}\n', /site\.conf:3: unexpected "}" after "root"/],
    ['a "unterminated;\n\n', /site\.conf:1: unterminated double quote/],
    ['a "x"y;\n', /site\.conf:1: unexpected "y" after a quoted string/],
    ['; a;', /site\.conf:1: unexpected ";"/],
    ["a 'x''y';\n", /site\.conf:1: unexpected "'" after a quoted string/],
  ];
  for (const [text, want] of cases) {
    assert.throws(
      () => parseNginx(text, 'site.conf'),
      (err: unknown) => isFerryError(err, 'WEBCONFIG_SYNTAX') && want.test((err as Error).message),
      text,
    );
  }
});

test('an nginx -T dump: files split at their markers, includes expanded in glob order with their own file and line', () => {
  const dump = [
    '# configuration file /etc/nginx/nginx.conf:',
    'events {}',
    'http {',
    '  include sites/*.conf;',
    '}',
    '',
    '# configuration file /etc/nginx/sites/b.conf:',
    'server { server_name b.example; }',
    '',
    '# configuration file /etc/nginx/sites/a.conf:',
    '# a',
    'server {',
    '  server_name a.example;',
    '}',
    '',
  ].join('\n');
  const cfg = parseNginxDump(dump);
  const servers = cfg.find((d) => d.name === 'http')!.block!;
  assert.deepEqual(
    servers.map((s) => [s.file, s.line, s.block![0]!.args[0]]),
    [
      ['/etc/nginx/sites/a.conf', 2, 'a.example'],
      ['/etc/nginx/sites/b.conf', 1, 'b.example'],
    ],
  );
  assert.throws(() => parseNginxDump('nothing here'), /no "# configuration file PATH:" line/);
});

test('PHP-FPM pool files: sections, $pool, comments, the [global] section ignored', () => {
  const pools = parseFpmPools(
    '[global]\npid = /run/x.pid\n; comment\n[shop]\nuser = shop\ngroup = "shop"\nlisten = /run/php/$pool.sock\n',
    '/p/shop.conf',
  );
  assert.deepEqual(pools, [
    {
      name: 'shop',
      file: '/p/shop.conf',
      line: 4,
      listen: '/run/php/shop.sock',
      user: 'shop',
      group: 'shop',
    },
  ]);
});
