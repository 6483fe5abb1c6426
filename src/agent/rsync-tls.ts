/**
 * TLS for site data between agents: the receiver's certificate, the sender's pin of it, and the
 * connector `rsync -e` runs.
 *
 * Trust is a pin, not a CA: a receive session names the SHA-256 fingerprint of the receiver's
 * certificate (its DER, lower-case hex), and a sender talks only to the holder of that
 * certificate. The session secret (rsync's module auth, challenge-response) then authenticates the
 * sender inside the encrypted channel.
 *
 * The connector is `openssl s_client` with the pinned certificate as its only trust anchor,
 * started through `sh -c` so that the arguments rsync appends (`host rsync --server --daemon .`)
 * are ignored. It is chosen for its start-up: each pass starts one connector (the final pass
 * of a migration finds its own started before the cut-over: transport.ts). Measured on the 2-core CI machine, median of 10
 * small rsync passes on loopback: 124 ms with s_client, 274 ms with a Node connector script (Node
 * alone starts in ~120 ms), 62 ms for the same pass over a local pipe with no TLS at all.
 */
import { spawn } from 'node:child_process';
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import { chmod, mkdir, readFile, rename } from 'node:fs/promises';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { FerryError } from '../common/errors.js';

/** The receiver's key and certificate (PEM), and the certificate's fingerprint. */
export interface ReceiverCertificate {
  cert: Buffer;
  key: Buffer;
  fingerprint: string;
}

/** SHA-256 of a certificate's DER, lower-case hex: what a receive session pins. */
export function certificateFingerprint(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

/**
 * The receiver's certificate: `given` (the agent's HTTPS certificate and key files), else a
 * self-signed one made once in `dir` (`receiver.key`, mode 0600, and `receiver.crt`) and kept
 * across restarts, so a pin stays valid while the agent restarts mid-migration.
 */
export async function receiverCertificate(
  dir: string,
  given?: { certFile: string; keyFile: string },
  opensslPath = 'openssl',
): Promise<ReceiverCertificate> {
  let certFile = given?.certFile ?? join(dir, 'receiver.crt');
  let keyFile = given?.keyFile ?? join(dir, 'receiver.key');
  if (!given) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const exists = await readFile(certFile).then(
      () => true,
      () => false,
    );
    if (!exists) {
      const tmpKey = `${keyFile}.new`;
      const tmpCert = `${certFile}.new`;
      await makeSelfSigned(opensslPath, tmpKey, tmpCert);
      await chmod(tmpKey, 0o600);
      await rename(tmpKey, keyFile);
      await rename(tmpCert, certFile);
    }
  } else {
    certFile = given.certFile;
    keyFile = given.keyFile;
  }
  try {
    const cert = await readFile(certFile);
    const key = await readFile(keyFile);
    const x509 = new X509Certificate(cert);
    if (!x509.checkPrivateKey(createPrivateKey(key)))
      throw new Error(`the key in ${keyFile} is not the key of ${certFile}`);
    return { cert, key, fingerprint: certificateFingerprint(x509.raw) };
  } catch (err) {
    throw new FerryError(
      'RSYNC_DAEMON_FAILED',
      `cannot use the receiver's TLS certificate ${certFile}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

function makeSelfSigned(opensslPath: string, keyFile: string, certFile: string): Promise<void> {
  const args = [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '3650',
    '-subj',
    '/CN=ferry-rsync-receiver',
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(opensslPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err = (err + c).slice(-2000)));
    const fail = (why: string) =>
      reject(new FerryError('RSYNC_DAEMON_FAILED', `cannot make the receiver's TLS certificate: ${why}`));
    child.once('error', (e) => fail(`cannot run ${opensslPath}: ${e.message}`));
    child.once('close', (code) => {
      if (code === 0) resolve();
      else fail(`openssl req exited ${code}: ${err.trim().split('\n').slice(-2).join(' | ')}`);
    });
  });
}

/** Certificates already fetched and checked against their pin (public data, keyed by its own hash). */
const pinned = new Map<string, string>();

/**
 * The receiver's certificate (PEM) whose fingerprint is `fingerprint`, fetched once per process
 * with a TLS handshake (no data: the receiver starts nothing for it). A different certificate
 * fails with RSYNC_TLS_PIN.
 */
export async function pinnedCertificate(
  address: string,
  port: number,
  fingerprint: string,
  timeoutMs = 10_000,
): Promise<string> {
  const known = pinned.get(fingerprint);
  if (known) return known;
  const der = await new Promise<Buffer>((resolve, reject) => {
    const socket = connect({ host: address, port, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no TLS handshake within ${timeoutMs} ms`)));
    socket.once('secureConnect', () => {
      const raw = socket.getPeerCertificate().raw;
      socket.destroy();
      resolve(raw);
    });
    socket.once('error', (e) =>
      reject(
        new FerryError(
          'RSYNC_FAILED',
          `cannot reach the receiver of site data at ${address}:${port} over TLS: ${e.message}`,
          { cause: e },
        ),
      ),
    );
  });
  const got = certificateFingerprint(der);
  if (got !== fingerprint) {
    throw new FerryError(
      'RSYNC_TLS_PIN',
      `the receiver at ${address}:${port} presented a TLS certificate with SHA-256 fingerprint ${got}, not the ${fingerprint} its receive session pins; nothing was sent`,
    );
  }
  const pem = new X509Certificate(der).toString();
  pinned.set(fingerprint, pem);
  return pem;
}

/**
 * `rsync -e` value and environment of the connector: s_client trusting only the certificate in
 * `pinFile` (no system CAs: `-no-CApath -no-CAstore`; `-partial_chain` lets a CA-issued leaf be
 * its own anchor), failing the handshake on any mismatch, sending no server name (the session's
 * name never crosses the wire in clear). Paths go through the environment: no quoting.
 */
export function connector(
  address: string,
  port: number,
  pinFile: string,
  opensslPath = 'openssl',
): { rsh: string; env: Record<string, string> } {
  const peer = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
  const sClient = [
    'exec "$FERRY_OPENSSL" s_client -quiet -verify_quiet -verify_return_error -noservername',
    '-min_protocol TLSv1.3 -partial_chain -no-CApath -no-CAstore',
    '-CAfile "$FERRY_TLS_PIN" -connect "$FERRY_TLS_PEER"',
  ].join(' ');
  return {
    rsh: `/bin/sh -c '${sClient}' ferry-tls-connector`,
    env: { FERRY_OPENSSL: opensslPath, FERRY_TLS_PIN: pinFile, FERRY_TLS_PEER: peer },
  };
}

/** Whether rsync's stderr says the connector refused the receiver's certificate. */
export function pinRefused(stderr: string): boolean {
  return /verify error|certificate verify failed/i.test(stderr);
}
