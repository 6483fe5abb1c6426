/**
 * rsync over TLS between a real receiver (TLS listener, `rsync --server --daemon` per connection)
 * and real pushes (rsync with the s_client connector) on loopback 127.0.74.0/24: a push lands only
 * on the certificate its session pins, a plain rsync client gets nothing from the port, and a
 * session's secret and a push's temporary files are gone when they end. A prepared pass waits
 * connected for its paths, copies them when given, and ends unused with its session.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from '../../test/e2e/helpers.js';
import { freePort } from '../../test/ports.js';
import { PreparedPush, RsyncReceiver, rsyncPush, type SyncEndpoint } from './rsync.js';
import { certificateFingerprint } from './rsync-tls.js';
import { selfSignedCert } from '../../test/certs.js';

const IP = '127.0.74.1';
const missing = !findBinary('rsync')
  ? 'rsync is not installed'
  : !findBinary('openssl')
    ? 'openssl is not installed'
    : false;

const isPinError = (err: Error & { code?: string }) =>
  err.code === 'RSYNC_TLS_PIN' && /pins/.test(err.message);

describe('rsync over TLS', { skip: missing }, () => {
  let dir: string;
  let src: string;
  let dst: string;
  let port: number;
  let receiver: RsyncReceiver;
  let session: SyncEndpoint;
  const pushTmp = () => join(dir, 'push-tmp');

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-rsync-tls-'));
    src = join(dir, 'src');
    dst = join(dir, 'dst');
    await mkdir(join(src, 'sub'), { recursive: true });
    await mkdir(dst);
    await mkdir(pushTmp());
    await writeFile(join(src, 'index.html'), '<h1>hello</h1>\n');
    await writeFile(join(src, 'sub', 'data.bin'), Buffer.alloc(200_000, 7));
    port = await freePort(IP);
    receiver = new RsyncReceiver({ address: IP, port, stateDir: join(dir, 'state') });
    session = await receiver.open('site.example', dst);
    // A push's temporary pin file goes under TMPDIR: a folder of this test, checked empty after.
    process.env.TMPDIR = pushTmp();
  });

  after(async () => {
    delete process.env.TMPDIR;
    await receiver.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('a push with the right pin lands; its session pins the receiver certificate and key 0600', async () => {
    const certPem = await readFile(join(dir, 'state', 'tls', 'receiver.crt'));
    assert.equal(session.fingerprint, certificateFingerprint(new X509Certificate(certPem).raw));
    assert.equal((await stat(join(dir, 'state', 'tls', 'receiver.key'))).mode & 0o777, 0o600);
    const res = await rsyncPush({ source: src, to: session });
    assert.equal(res.files, 2);
    assert.equal(await readFile(join(dst, 'index.html'), 'utf8'), '<h1>hello</h1>\n');
    assert.equal((await readFile(join(dst, 'sub', 'data.bin'))).length, 200_000);
    // A tracked pass (--files-from) over the same channel.
    await writeFile(join(src, 'index.html'), '<h1>changed</h1>\n');
    await rm(join(src, 'sub', 'data.bin'));
    const tracked = await rsyncPush({ source: src, to: session, paths: ['index.html', 'sub/data.bin'] });
    assert.equal(tracked.files, 1);
    assert.equal(await readFile(join(dst, 'index.html'), 'utf8'), '<h1>changed</h1>\n');
    await assert.rejects(stat(join(dst, 'sub', 'data.bin')), { code: 'ENOENT' });
    assert.deepEqual(await readdir(pushTmp()), [], "a push's temporary files are removed");
  });

  test('a wrong pin, or none, fails with RSYNC_TLS_PIN and writes nothing', async () => {
    await writeFile(join(src, 'new.txt'), 'must not arrive\n');
    await assert.rejects(
      rsyncPush({ source: src, to: { ...session, fingerprint: 'a'.repeat(64) } }),
      isPinError,
    );
    const { fingerprint: _none, ...unpinned } = session;
    await assert.rejects(rsyncPush({ source: src, to: unpinned }), isPinError);

    // A receiver with another certificate than the pinned one, which this process fetched and
    // checked already: the connector itself refuses it (the pinned certificate is its only anchor).
    const other = new RsyncReceiver({ address: IP, port: await freePort(IP), stateDir: join(dir, 'other') });
    try {
      const otherSession = await other.open('site.example', dst);
      assert.notEqual(otherSession.fingerprint, session.fingerprint);
      await assert.rejects(
        rsyncPush({ source: src, to: { ...otherSession, fingerprint: session.fingerprint! } }),
        (err: Error & { code?: string }) => err.code === 'RSYNC_TLS_PIN' && /other than/.test(err.message),
      );
    } finally {
      await other.stop();
    }
    await assert.rejects(stat(join(dst, 'new.txt')), { code: 'ENOENT' });
    await rm(join(src, 'new.txt'));
    assert.deepEqual(await readdir(pushTmp()), []);
  });

  test('a plain rsync client to the port gets nothing: no greeting, no module, no file', async () => {
    await writeFile(join(src, 'plain.txt'), 'must not arrive\n');
    // Not spawnSync: the receiver runs in this process's event loop.
    const r = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const child = spawn(
        'rsync',
        ['-a', `${src}/`, `rsync://${session.user}@${IP}:${port}/${session.module}/`],
        {
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', RSYNC_PASSWORD: session.secret },
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.once('close', (status) => {
        clearTimeout(timer);
        resolve({ status, stderr });
      });
    });
    assert.notEqual(r.status, 0, 'plain rsync must fail');
    assert.doesNotMatch(r.stderr, /auth failed|@ERROR/, 'the rsync daemon never answered');
    await assert.rejects(stat(join(dst, 'plain.txt')), { code: 'ENOENT' });
    // What a raw TCP client that speaks rsync's daemon protocol receives: no rsync byte.
    const got = await new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = [];
      const s = connect({ host: IP, port }, () => s.write('@RSYNCD: 31.0\n'));
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('error', () => undefined);
      s.on('close', () => resolve(Buffer.concat(chunks)));
      setTimeout(() => s.destroy(), 5000).unref();
    });
    assert.ok(!got.toString('latin1').includes('@RSYNCD'), `no rsync greeting: got ${got.toString('hex')}`);
    await rm(join(src, 'plain.txt'));
  });

  test('a prepared pass copies the paths it is given; one whose session closes ends and sends nothing', async () => {
    const prepDst = join(dir, 'prep-dst');
    await mkdir(prepDst);
    const prep = await receiver.open('prep.example', prepDst);
    const ready = await PreparedPush.start({ source: src, to: prep });
    await new Promise((r) => setTimeout(r, 1000)); // connected and waiting meanwhile
    assert.ok(ready.ready);
    await writeFile(join(src, 'prepared.txt'), 'given later\n');
    const res = await ready.run(['prepared.txt']);
    assert.equal(res.files, 1);
    assert.equal(await readFile(join(prepDst, 'prepared.txt'), 'utf8'), 'given later\n');
    assert.equal(ready.ready, false, 'a prepared pass is used once');
    assert.throws(() => ready.run(['prepared.txt']), { code: 'RSYNC_FAILED' });

    // Its session closes (the site takes writes there) while another stays open: it is ended.
    const unused = await PreparedPush.start({ source: src, to: prep });
    await new Promise((r) => setTimeout(r, 1000));
    await receiver.close('prep.example');
    const deadline = Date.now() + 20_000;
    while (unused.ready && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(unused.ready, false, 'the receiver ended the prepared connection');
    await writeFile(join(src, 'late.txt'), 'must not arrive\n');
    assert.throws(() => unused.run(['late.txt']), { code: 'RSYNC_FAILED' });
    await assert.rejects(stat(join(prepDst, 'late.txt')), { code: 'ENOENT' });
    await rm(join(src, 'late.txt'));
    await rm(join(src, 'prepared.txt'));
    // The other session still takes pushes.
    await rsyncPush({ source: src, to: session });
    assert.deepEqual(await readdir(pushTmp()), [], "a prepared pass's temporary files are removed");
  });

  test('closing the session removes its secret and stops the listener; a push then fails', async () => {
    const secretFile = join(dir, 'state', 'ferry-site.example.secret');
    assert.equal((await stat(secretFile)).mode & 0o777, 0o600);
    // A connection held open across the close is ended with it.
    const held = spawn('openssl', ['s_client', '-quiet', '-connect', `${IP}:${port}`], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    held.stdin.write('@RSYNCD: 31.0\n');
    const heldExit = new Promise((r) => held.once('exit', r));
    await new Promise((r) => setTimeout(r, 500));
    await receiver.close('site.example');
    await assert.rejects(stat(secretFile), { code: 'ENOENT' });
    assert.doesNotMatch(await readFile(join(dir, 'state', 'rsyncd.conf'), 'utf8'), /ferry-site\.example/);
    await heldExit;
    await assert.rejects(rsyncPush({ source: src, to: session }), (err: Error & { code?: string }) =>
      ['RSYNC_FAILED'].includes(err.code ?? ''),
    );
  });

  test("the agent's own HTTPS certificate, when given, is the one a session pins", async () => {
    const tls = join(dir, 'given');
    await mkdir(tls);
    selfSignedCert({ keyFile: join(tls, 'k.pem'), certFile: join(tls, 'c.pem'), cn: 'agent.example' });
    const given = new RsyncReceiver({
      address: IP,
      port: await freePort(IP),
      stateDir: join(dir, 'given-state'),
      tls: { certFile: join(tls, 'c.pem'), keyFile: join(tls, 'k.pem') },
    });
    try {
      const s = await given.open('given.example', dst);
      const pem = await readFile(join(tls, 'c.pem'));
      assert.equal(s.fingerprint, certificateFingerprint(new X509Certificate(pem).raw));
      await rsyncPush({ source: src, to: s });
      assert.equal(await readFile(join(dst, 'index.html'), 'utf8'), '<h1>changed</h1>\n');
    } finally {
      await given.stop();
    }
    // A key that is not the certificate's is refused with the file named.
    const wrong = new RsyncReceiver({
      address: IP,
      port: await freePort(IP),
      stateDir: join(dir, 'wrong-state'),
      tls: { certFile: join(tls, 'c.pem'), keyFile: join(dir, 'state', 'tls', 'receiver.key') },
    });
    await assert.rejects(
      wrong.open('wrong.example', dst),
      (err: Error & { code?: string }) => err.code === 'RSYNC_DAEMON_FAILED' && err.message.includes('c.pem'),
    );
    await wrong.stop();
  });
});
