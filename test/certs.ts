/** Test certificates: the tests' one way to make a self-signed one. */
import { execFileSync } from 'node:child_process';
import { isIP } from 'node:net';

/**
 * A self-signed certificate and its unencrypted key, written by `openssl req -x509`: a P-256 key
 * (RSA 2048 with `rsa`), subject `CN=<cn>`, and `names` as subjectAltNames (IP literals as IP
 * entries, the rest as DNS). Throws with openssl's words when it fails.
 */
export function selfSignedCert(o: {
  keyFile: string;
  certFile: string;
  cn: string;
  names?: string[];
  days?: number;
  rsa?: boolean;
  openssl?: string;
}): void {
  const key = o.rsa ? ['rsa:2048'] : ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  const san = o.names?.length
    ? ['-addext', `subjectAltName=${o.names.map((n) => `${isIP(n) ? 'IP' : 'DNS'}:${n}`).join(',')}`]
    : [];
  execFileSync(
    o.openssl ?? 'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      ...key,
      '-nodes',
      '-days',
      String(o.days ?? 2),
      '-subj',
      `/CN=${o.cn}`,
      ...san,
      '-keyout',
      o.keyFile,
      '-out',
      o.certFile,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
}
