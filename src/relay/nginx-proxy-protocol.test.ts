/** Issue 5: Debian's nginx behind the relay logs the real client address from the PROXY header. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../common/time.js';
import { NativeRelay, TcpRelay, type RedirectEngine } from './index.js';
import { nativeUnsupported } from './native-relay.js';
import { resolveRelayOptions } from './options.js';
import { freePort } from '../../test/ports.js';

const nativeMissing = nativeUnsupported(
  resolveRelayOptions({ listen: { address: '127.0.0.1', ports: [0] }, upstream: { address: '127.0.0.1' } }),
);

const nginxBin = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p));
const skip = nginxBin ? false : 'nginx is not installed (apt-get install nginx-light)';
if (skip) console.log(`# skipping nginx PROXY protocol test: ${skip}`);

function get(
  address: string,
  port: number,
  localAddress?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: address, port, path: '/', agent: false, ...(localAddress ? { localAddress } : {}) },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('nginx behind the relay with PROXY protocol', { skip }, () => {
  let dir = '';
  let nginx: ChildProcess | null = null;
  let port = 0;
  const relays: RedirectEngine[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-nginx-'));
    port = await freePort('127.0.0.5');
    const conf = `
daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  log_format pp 'pp=$proxy_protocol_addr:$proxy_protocol_port peer=$remote_addr';
  access_log ${dir}/access.log pp;
  server {
    listen 127.0.0.5:${port} proxy_protocol;
    location / { return 200 "hello from nginx\\n"; }
  }
}
`;
    writeFileSync(join(dir, 'nginx.conf'), conf);
    const check = spawnSync(
      nginxBin!,
      ['-t', '-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')],
      { encoding: 'utf8' },
    );
    assert.equal(check.status, 0, check.stderr);
    nginx = spawn(nginxBin!, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], {
      stdio: 'ignore',
    });
    const up = await waitFor(
      () =>
        new Promise<boolean>((r) => {
          const s = createServer();
          s.once('error', () => r(true)); // the port is taken: nginx listens
          s.listen(port, '127.0.0.5', () => s.close(() => r(false)));
        }),
      5000,
      50,
    );
    assert.ok(up, `nginx did not start; see ${dir}/error.log`);
  });

  after(async () => {
    for (const r of relays) await r.close();
    if (nginx && nginx.exitCode === null) {
      const exited = new Promise((r) => nginx!.once('exit', r));
      nginx.kill('SIGQUIT');
      await Promise.race([exited, waitFor(() => false, 3000)]);
      if (nginx.exitCode === null) nginx.kill('SIGKILL');
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // Each case connects from its own client address, so its access log line is told apart.
  const cases = [
    { plane: 'TypeScript', version: 'v1', from: '127.0.0.9' },
    { plane: 'TypeScript', version: 'v2', from: '127.0.0.10' },
    { plane: 'native', version: 'v1', from: '127.0.0.11' },
    { plane: 'native', version: 'v2', from: '127.0.0.12' },
  ] as const;
  for (const { plane, version, from } of cases) {
    it(
      `nginx logs the real client address (${version}, ${plane} data plane)`,
      { skip: plane === 'native' ? (nativeMissing ?? false) : false },
      async () => {
        const opts = {
          listen: { address: '127.0.0.3', ports: [0] },
          upstream: { address: '127.0.0.5', port },
          sourceAddress: '127.0.0.7',
          proxyProtocol: version,
        };
        const relay = plane === 'native' ? new NativeRelay(opts) : new TcpRelay(opts);
        relays.push(relay);
        await relay.start();
        const res = await get('127.0.0.3', relay.ports[0]!, from);
        assert.equal(res.status, 200);
        assert.equal(res.body, 'hello from nginx\n');
        const want = `pp=${from}:`;
        const log = join(dir, 'access.log');
        assert.ok(
          await waitFor(() => existsSync(log) && readFileSync(log, 'utf8').includes(want), 3000),
          `access.log: ${existsSync(log) ? readFileSync(log, 'utf8') : '(none)'}`,
        );
        const line = readFileSync(log, 'utf8')
          .split('\n')
          .find((l) => l.includes(want))!;
        assert.match(
          line,
          /peer=127\.0\.0\.7$/,
          'the TCP peer is the relay; the PROXY header names the client',
        );
      },
    );
  }
});
