/** The agent's HTTP probe of a site (preflight parity). */
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { FerryError } from '../common/errors.js';

/** GET `path` with Host `domain` at address:port; the status and a SHA-256 of the body. */
export function httpProbe(
  domain: string,
  address: string,
  port: number,
  path: string,
  timeoutMs = 5000,
): Promise<{ status: number; bodySha256: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: address,
        port,
        path,
        method: 'GET',
        headers: { host: domain },
        agent: false,
        timeout: timeoutMs,
      },
      (res) => {
        const hash = createHash('sha256');
        res.on('data', (c: Buffer) => hash.update(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bodySha256: hash.digest('hex') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () =>
      req.destroy(
        new FerryError('PROBE_TIMEOUT', `GET http://${domain}${path} at ${address}:${port} timed out`),
      ),
    );
    req.on('error', (err) =>
      reject(
        err instanceof FerryError
          ? err
          : new FerryError(
              'PROBE_FAILED',
              `GET http://${domain}${path} at ${address}:${port}: ${err.message}`,
              { cause: err },
            ),
      ),
    );
    req.end();
  });
}
