/** The one free-port helper of the tests and benchmarks. */
import { createSocket } from 'node:dgram';
import { createServer, type AddressInfo } from 'node:net';

/**
 * A port free on `address` right now: the one the kernel picks for `listen(0)`, closed again so
 * that the caller (or a process it starts) can bind it. With `udp`, also free for UDP (a name
 * server listens on both). Another process may take it meanwhile; tests bind on addresses of their own.
 */
export async function freePort(address = '127.0.0.1', opts: { udp?: boolean } = {}): Promise<number> {
  for (let attempt = 0; attempt < 30; attempt++) {
    const tcp = createServer();
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(0, address, () => resolve());
    });
    const port = (tcp.address() as AddressInfo).port;
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
    if (!opts.udp) return port;
    const udp = createSocket(address.includes(':') ? 'udp6' : 'udp4');
    const ok = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, address, () => resolve(true));
    });
    await new Promise<void>((resolve) => (ok ? udp.close(() => resolve()) : resolve()));
    if (ok) return port;
  }
  throw new Error(`no port free for TCP and UDP on ${address}`);
}
