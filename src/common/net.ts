/** Small TCP helpers shared by components. */
import { createConnection } from 'node:net';

/** Whether something accepts a TCP connection on `address:port` right now (the connection is closed at once). */
export function canConnect(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: address, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
