import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as netServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as httpServer } from 'node:http';
import { createServer as httpsServer } from 'node:https';
import { createServer as tlsServer } from 'node:tls';
import { after, describe, it } from 'node:test';
import { checkParity, firstDifference } from './parity.js';
import { webParity } from './web.js';
import { selfSignedCert } from '../../test/certs.js';

const ORIGIN = '127.0.43.1';
const TARGET = '127.0.43.2';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A self-signed certificate for `names` (openssl). */
function selfSigned(dir: string, names: string[]): { key: Buffer; cert: Buffer } {
  const base = join(dir, names[0]!);
  selfSignedCert({ keyFile: `${base}.key`, certFile: `${base}.crt`, cn: names[0]!, names });
  return { key: readFileSync(`${base}.key`), cert: readFileSync(`${base}.crt`) };
}

function listen(server: Server, address: string, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => resolve((server.address() as { port: number }).port));
  });
}

describe('parity checks', () => {
  const servers: Server[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'ferry-parity-'));
  after(() => {
    for (const s of servers) s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it(
    'compares certificate names with SNI and reports those on one side only',
    { skip: hasOpenssl() ? false : 'openssl not installed' },
    async () => {
      const o = tlsServer(selfSigned(dir, ['shop.example', 'www.shop.example']), (s) => s.end());
      const t = tlsServer(selfSigned(dir, ['shop.example']), (s) => s.end());
      servers.push(o, t);
      const port = await listen(o, ORIGIN);
      await listen(t, TARGET, port);
      const [res] = await checkParity('shop.example.', { address: ORIGIN }, { address: TARGET }, 80, {
        http: [],
        tlsPorts: [port],
      });
      assert.equal(res!.ok, false);
      assert.deepEqual(res!.origin.names, ['shop.example', 'www.shop.example']);
      assert.equal(res!.diff, 'certificate names: only on origin [www.shop.example], only on target []');
    },
  );

  it(
    'a web site with a TLS listen: each page again over HTTPS with SNI, and the very same certificate on both',
    { skip: hasOpenssl() ? false : 'openssl not installed' },
    async () => {
      const checks = webParity(undefined, { tlsPort: 1 });
      assert.deepEqual(checks.http, [{ path: '/' }, { path: '/', tls: true, port: 1 }]);
      assert.deepEqual(checks.tlsPorts, [1]);
      assert.deepEqual(webParity(undefined, {}), { http: [{ path: '/' }] }, 'no TLS listen: plain only');
      const page = (_req: unknown, res: import('node:http').ServerResponse) => res.end('the same page\n');
      const sni: string[] = [];
      const mine = selfSigned(dir, ['web.example']);
      const other = selfSigned(dir, ['web.example']); // a second key and certificate, the same names
      const plainO = httpServer(page);
      const plainT = httpServer(page);
      const tlsO = httpsServer({ ...mine, SNICallback: (n, cb) => (sni.push(n), cb(null, undefined)) }, page);
      const tlsT = httpsServer(mine, page);
      servers.push(plainO, plainT, tlsO, tlsT);
      const port = await listen(plainO, ORIGIN);
      await listen(plainT, TARGET, port);
      const tlsPort = await listen(tlsO, ORIGIN);
      await listen(tlsT, TARGET, tlsPort);
      const run = () =>
        checkParity(
          'web.example.',
          { address: ORIGIN },
          { address: TARGET },
          port,
          webParity(undefined, { tlsPort }),
        );
      const same = await run();
      assert.deepEqual(
        same.map((r) => [r.check, r.ok]),
        [
          [`http GET / :${port}`, true],
          [`https GET / :${tlsPort}`, true],
          [`tls names :${tlsPort}`, true],
        ],
      );
      assert.ok(sni.length > 0 && sni.every((n) => n === 'web.example'), sni.join(' '));
      // Another certificate for the same names on the target: the names agree, the certificate does not.
      tlsT.setSecureContext(other);
      const differs = (await run())[2]!;
      assert.equal(differs.ok, false);
      assert.match(differs.diff, /^certificate: origin [0-9A-F:]{95}, target [0-9A-F:]{95}$/);
      assert.notEqual(differs.origin.fingerprint, differs.target.fingerprint);
    },
  );

  it('compares service banners, ignoring what the operator says may differ', async () => {
    const banner = (text: string) => netServer((s) => s.end(text));
    const o = banner('220 mx1.example ESMTP ready\r\n');
    const t = banner('220 mx2.example ESMTP ready\r\n');
    servers.push(o, t);
    const port = await listen(o, ORIGIN);
    await listen(t, TARGET, port);
    const [strict] = await checkParity('shop.example.', { address: ORIGIN }, { address: TARGET }, 80, {
      http: [],
      bannerPorts: [port],
    });
    assert.equal(strict!.ok, false);
    assert.match(
      strict!.diff,
      /banner: origin "220 mx1.example ESMTP ready", target "220 mx2.example ESMTP ready"/,
    );
    const [lenient] = await checkParity('shop.example.', { address: ORIGIN }, { address: TARGET }, 80, {
      http: [],
      bannerPorts: [port],
      bannerIgnore: 'mx\\d\\.example',
    });
    assert.equal(lenient!.ok, true);
  });

  it('reports a probe that cannot connect as a mismatch, not a crash', async () => {
    const [res] = await checkParity('shop.example.', { address: ORIGIN }, { address: TARGET }, 9, {
      http: [{ path: '/healthz' }],
    });
    assert.equal(res!.ok, false);
    assert.match(res!.diff, /probe failed/);
  });

  it('shows where two bodies first differ', () => {
    assert.match(
      firstDifference('<p>Served by origin.</p>', '<p>Served by target.</p>'),
      /byte 13: origin …"<p>Served by origin/,
    );
  });
});
