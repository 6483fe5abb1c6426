/** Test helpers for the relay: small servers and clients on real sockets. Not part of the public API. */
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/** A TCP server answering each connection with `name:` then echoing; records peers it saw. */
export interface TestServer {
  server: Server;
  port: number;
  peers: string[];
  close(): Promise<void>;
}

/** Starts a server on `address` (port 0 unless given) that greets with `name\n` and echoes. */
export function startEcho(address: string, name: string, port = 0, greet = true): Promise<TestServer> {
  const sockets = new Set<Socket>();
  const peers: string[] = [];
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    peers.push(s.remoteAddress ?? '');
    if (greet) s.write(`${name}\n`);
    s.pipe(s);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => {
      resolve({
        server,
        port: (server.address() as AddressInfo).port,
        peers,
        close: () =>
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}

/** A connected client that collects what it receives. */
export interface TestClient {
  socket: Socket;
  received(): string;
  /** Resolves once the received text contains `text` (rejects after `timeoutMs`). */
  waitFor(text: string, timeoutMs?: number): Promise<string>;
  /** Resolves when the server's side ends (FIN or close). */
  ended: Promise<void>;
}

/** Connects to address:port and buffers incoming text. */
export function client(
  address: string,
  port: number,
  opts: { allowHalfOpen?: boolean } = {},
): Promise<TestClient> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: address, port, allowHalfOpen: opts.allowHalfOpen ?? false });
    let data = '';
    const waiters = new Set<() => void>();
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      data += d;
      for (const w of [...waiters]) w();
    });
    const ended = new Promise<void>((r) => {
      socket.once('end', () => r());
      socket.once('close', () => r());
    });
    socket.on('error', () => undefined);
    socket.once('connect', () =>
      resolve({
        socket,
        received: () => data,
        ended,
        waitFor: (text, timeoutMs = 3000) =>
          new Promise((res, rej) => {
            const check = () => {
              if (!data.includes(text)) return;
              waiters.delete(check);
              clearTimeout(t);
              res(data);
            };
            const t = setTimeout(() => {
              waiters.delete(check);
              rej(new Error(`timed out waiting for ${JSON.stringify(text)}; got ${JSON.stringify(data)}`));
            }, timeoutMs);
            waiters.add(check);
            check();
          }),
      }),
    );
    socket.once('error', reject);
  });
}
