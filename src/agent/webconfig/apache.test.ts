/** Apache's `-S` listing and its configuration syntax on tricky input: continuation lines, quotes, variables, sections. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../common/errors.js';
import { parseApacheDump, parseApacheSection } from './apache.js';

test('-S: name-based and single vhosts, default servers, aliases, file and line of each', () => {
  const dump = [
    'VirtualHost configuration:',
    '192.0.2.10:443         shop.example (/etc/apache2/sites-enabled/shop-ssl.conf:2)',
    '*:80                   is a NameVirtualHost',
    '         default server shop.example (/etc/apache2/sites-enabled/shop.conf:1)',
    '         port 80 namevhost shop.example (/etc/apache2/sites-enabled/shop.conf:1)',
    '                 alias www.shop.example',
    '                 wild alias *.shop.example',
    '         port 80 namevhost blog.example (/etc/apache2/sites-enabled/blog.conf:3)',
    '[2001:db8::1]:80       v6.example (/etc/apache2/sites-enabled/v6.conf:1)',
    'ServerRoot: "/etc/apache2"',
    'Main DocumentRoot: "/var/www/html"',
    '',
  ].join('\n');
  const { vhosts, serverRoot } = parseApacheDump(dump);
  assert.equal(serverRoot, '/etc/apache2');
  assert.deepEqual(
    vhosts.map((v) => [v.name, v.file.split('/').pop(), v.line, v.listens, v.aliases, v.defaultServer]),
    [
      ['shop.example', 'shop-ssl.conf', 2, [{ address: '192.0.2.10', port: 443 }], [], false],
      [
        'shop.example',
        'shop.conf',
        1,
        [{ address: null, port: 80 }],
        ['www.shop.example', '*.shop.example'],
        true,
      ],
      ['blog.example', 'blog.conf', 3, [{ address: null, port: 80 }], [], false],
      ['v6.example', 'v6.conf', 1, [{ address: '2001:db8::1', port: 80 }], [], false],
    ],
  );
});

test('a section: continuation lines, quotes with escapes, ${VAR}, comments, nested sections', () => {
  const text = [
    '# header',
    '<VirtualHost *:80>',
    '  ServerName a.example',
    '  ServerAlias b.example \\',
    '      c.example',
    '  DocumentRoot "${ROOT}/a dir"',
    '  Header set X-Q "say \\"hi\\""',
    '  <Directory "/srv/a">',
    '    # Require all denied',
    '    Require all granted',
    '  </Directory>',
    '</VirtualHost>',
    '<VirtualHost *:81>',
    '</VirtualHost>',
  ].join('\n');
  const s = parseApacheSection(text, 'a.conf', 2, { ROOT: '/srv' });
  assert.equal(s.name, 'VirtualHost');
  assert.deepEqual(
    s.block!.map((d) => [d.name, d.args, d.line]),
    [
      ['ServerName', ['a.example'], 3],
      ['ServerAlias', ['b.example', 'c.example'], 4],
      ['DocumentRoot', ['/srv/a dir'], 6],
      ['Header', ['set', 'X-Q', 'say "hi"'], 7],
      ['Directory', ['/srv/a'], 8],
    ],
  );
  assert.deepEqual(
    s.block![4]!.block!.map((d) => [d.name, d.line]),
    [['Require', 10]],
  );
});

test('a broken section: the file and line, as WEBCONFIG_SYNTAX', () => {
  const cases: Array<[string, RegExp]> = [
    [
      '<VirtualHost *:80>\n  <Directory /x>\n</VirtualHost>\n',
      /b\.conf:3: <\/VirtualHost> closes <Directory> of line 2/,
    ],
    ['<VirtualHost *:80>\n  ServerName a\n', /b\.conf:1: <VirtualHost> is never closed/],
    ['<VirtualHost *:80>\n  DocumentRoot "/x\n</VirtualHost>\n', /b\.conf:2: unterminated quote/],
    ['ServerName a\n', /b\.conf:1: expected a <VirtualHost> section here/],
  ];
  for (const [text, want] of cases) {
    assert.throws(
      () => parseApacheSection(text, 'b.conf', 1),
      (err: unknown) => isFerryError(err, 'WEBCONFIG_SYNTAX') && want.test((err as Error).message),
      text,
    );
  }
});
