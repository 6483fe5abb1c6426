/** The nginx flavor's generated front, backend and plain blocks, from a site's own file text. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { WebSite } from '../webconfig/index.js';
import type { SiteConfigFile, WebStackLayout } from './flavor.js';
import { NginxFlavor } from './nginx.js';
import { blockEnd } from './stack.js';

const TEXT = `# a provider's file
server {
    listen 192.0.2.1:80 default_server;
    listen [::]:80;
    listen 192.0.2.1:443 ssl http2;
    listen 192.0.2.1:443 quic reuseport;
    server_name shop.example www.shop.example;
    root /var/www/shop/public; # the docroot
    ssl_certificate /etc/ssl/shop.crt;
    ssl_certificate_key /etc/ssl/private/shop.key;
    client_max_body_size 64m;
    location / { try_files $uri $uri/ =404; }
}
server {
    server_name other.example;
}
`;

const at = { file: '/etc/nginx/sites-enabled/shop', line: 2 };
const site: WebSite = {
  server: 'nginx',
  at,
  names: ['shop.example', 'www.shop.example'],
  defaultServer: true,
  listens: [
    { address: '192.0.2.1', port: 80, tls: false, at },
    { address: null, port: 80, tls: false, at },
    { address: '192.0.2.1', port: 443, tls: true, at },
  ],
  paths: [{ path: '/var/www/shop/public', directive: 'root', at }],
  application: 'static',
  apps: [],
  certificates: [{ certificate: '/etc/ssl/shop.crt', key: '/etc/ssl/private/shop.key', at }],
  user: null,
  group: null,
  movable: true,
  refusals: [],
};
const files: SiteConfigFile[] = [{ path: at.file, text: TEXT, blocks: [{ start: 2, end: 13 }] }];
const layout: WebStackLayout = {
  domain: 'shop.example',
  includeDir: '/etc/nginx/conf.d',
  gate: { address: '127.0.0.1', port: 8080 },
  backend: { address: '127.0.0.1', httpPort: 40001, httpsPort: 40002 },
  statsPort: 5514,
};

test('a block ends at its own closing brace, whatever braces its locations hold', () => {
  assert.equal(blockEnd(TEXT, 2, 'nginx', at.file), 13);
  assert.equal(blockEnd(TEXT, 14, 'nginx', at.file), 16);
  assert.equal(blockEnd('<VirtualHost *:80>\n  ServerName a\n</VirtualHost>\n', 1, 'apache', 'x'), 3);
});

test('the backend is the block byte for byte but for its listens, which move to the loopback ports', () => {
  const gen = new NginxFlavor().frontAndBackend(site, files, layout);
  const backend = gen.files.find((f) => f.name.endsWith('.backend.conf'))!.text;
  const block = TEXT.split('\n').slice(1, 13);
  const lines = backend.split('\n').slice(1, 13);
  assert.deepEqual(lines.slice(0, 5), [
    'server {',
    '    listen 127.0.0.1:40001;',
    '    # ferry backend: listen [::]:80;',
    '    listen 127.0.0.1:40002 ssl http2;',
    '    # ferry backend: listen 192.0.2.1:443 quic reuseport;',
  ]);
  assert.deepEqual(lines.slice(5), block.slice(5), 'everything after the listens is unchanged');
  assert.doesNotMatch(backend, /other\.example/);
});

test('the front keeps listens, names and certificate and passes everything to the gate with the client', () => {
  const gen = new NginxFlavor().frontAndBackend(site, files, { ...layout, listenAddress: '198.51.100.7' });
  const front = gen.files.find((f) => f.name.endsWith('.front.conf'))!.text;
  for (const line of [
    'listen 198.51.100.7:80 default_server;',
    'listen [::]:80;',
    'listen 198.51.100.7:443 ssl http2;',
    'server_name shop.example www.shop.example;',
    'ssl_certificate /etc/ssl/shop.crt;',
    'ssl_certificate_key /etc/ssl/private/shop.key;',
    'client_max_body_size 64m;',
    'proxy_pass http://127.0.0.1:8080;',
    'proxy_set_header Host $host;',
    'proxy_set_header X-Ferry-Client $remote_addr;',
    'proxy_set_header X-Ferry-Scheme $scheme;',
    'proxy_request_buffering off;',
    'proxy_set_header Connection "";',
  ])
    assert.ok(front.includes(`    ${line}`) || front.includes(`        ${line}`), line);
  assert.doesNotMatch(front, /quic/);
  // The agent's per-site counters: one syslog line per request, keyed by the site's name.
  assert.match(
    front,
    /log_format ferry_site_[0-9a-f]{10} 'shop\.example \$remote_addr \$request_method \$status';/,
  );
  assert.match(front, /access_log syslog:server=127\.0\.0\.1:5514,tag=ferry,nohostname ferry_site_/);
});

test("the plain block (the site's final home) is the site's own with the new address", () => {
  const gen = new NginxFlavor().plain(site, files, { ...layout, listenAddress: '198.51.100.7' });
  const text = gen.files[0]!.text;
  assert.match(text, /listen 198\.51\.100\.7:443 ssl http2;/);
  assert.match(text, /listen \[::\]:80;/);
  assert.match(text, /root \/var\/www\/shop\/public; # the docroot/);
});
