/**
 * Reverse proxy for one request: a site's `proxy` mode, and a gated site's way to its backend.
 * The Host header is kept, the client's address is appended to `X-Forwarded-For`, the front's
 * `X-Ferry-*` headers are dropped, bodies stream both ways, and the upstream's headers (its
 * `X-Served-By` among them) pass through. Over TLS (`tls`), SNI is the given server name. A
 * request is retried once when the upstream fails before the first response byte and replaying
 * it is safe: the method is idempotent, or the connection was never established (nothing reached
 * the upstream).
 */
import {
  Agent,
  request,
  type IncomingMessage,
  type ServerResponse,
  type ClientRequest,
  type OutgoingHttpHeaders,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { SecureContext } from 'node:tls';
import { isIP } from 'node:net';
import { FerryError } from '../common/errors.js';

/** Where a proxied site's requests go. `localAddress` binds the proxy's outgoing connections. */
export interface ProxyTarget {
  address: string;
  port: number;
  localAddress?: string;
}

/** TLS to the upstream: SNI, and whether (and against what) its certificate is verified. */
export interface ProxyTls {
  servername: string;
  /** False: any certificate is accepted (a loopback backend of our own). */
  verify: boolean;
  /** Trust anchors when verifying; Node's default CA list when absent. */
  secureContext?: SecureContext;
}

export interface ProxyOptions {
  /** From `createProxyAgent`, made with `tls` when `tls` is given here. */
  agent: Agent;
  /** Speak TLS to the upstream. */
  tls?: ProxyTls;
  /** The client's address for `X-Forwarded-For` (default: the TCP peer's). */
  client?: string;
  /** Idle time on the upstream socket before the attempt fails. */
  timeoutMs: number;
  /** Request bodies up to this size are kept for a retry; larger ones are streamed without one. */
  maxReplayBytes: number;
  /** Answer locally (the upstream failed before any response byte). */
  fail(status: number, message: string): void;
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Headers only a trusted front sets for the gate; never forwarded. */
export const FRONT_HEADERS = ['x-ferry-client', 'x-ferry-scheme'] as const;

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Errors raised before a TCP connection exists: the upstream saw nothing, any method may be replayed. */
const CONNECT_ERRORS = new Set([
  'ECONNREFUSED',
  'EADDRNOTAVAIL',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRINUSE',
]);

/** A keep-alive agent for upstream connections (TLS ones with `tls`); idle sockets close after `idleMs`, well before a server would. */
export function createProxyAgent(idleMs = 2000, tls = false): Agent {
  const o = { keepAlive: true, timeout: idleMs, maxSockets: 256, maxFreeSockets: 32 };
  return tls ? new HttpsAgent(o) : new Agent(o);
}

/** Forward `req` to `target` and stream the answer into `res`. */
export function proxyRequest(
  req: IncomingMessage,
  res: ServerResponse,
  target: ProxyTarget,
  opts: ProxyOptions,
): void {
  const method = req.method ?? 'GET';
  const headers = forwardHeaders(req, opts.client);
  const tls = opts.tls;
  const send = tls ? httpsRequest : request;
  let replay: Buffer[] | null = [];
  let replayBytes = 0;
  let ended = false;
  let attempts = 0;
  let current: ClientRequest | undefined;
  let responded = false;
  let finished = false;

  const attempt = () => {
    attempts += 1;
    const up = send({
      host: target.address,
      port: target.port,
      ...(target.localAddress ? { localAddress: target.localAddress } : {}),
      ...(tls
        ? {
            servername: tls.servername,
            rejectUnauthorized: tls.verify,
            ...(tls.secureContext ? { secureContext: tls.secureContext } : {}),
          }
        : {}),
      method,
      path: req.url ?? '/',
      headers,
      // A write never rides a kept-alive connection: the upstream may close an idle one (its
      // timeout, a reload) just as the request goes out, and a write that then fails cannot be
      // sent again (the upstream may have taken it). On a connection of its own it cannot meet that.
      agent: IDEMPOTENT.has(method) ? opts.agent : false,
    });
    current = up;
    up.setTimeout(opts.timeoutMs, () =>
      up.destroy(
        new FerryError(
          'PROXY_TIMEOUT',
          `upstream ${target.address}:${target.port} idle for ${opts.timeoutMs} ms`,
        ),
      ),
    );
    up.on('response', (upRes) => onResponse(up, upRes));
    up.on('error', (err) => onError(up, err as NodeJS.ErrnoException));
    if (replay) for (const chunk of replay) up.write(chunk);
    if (ended) up.end();
  };

  const onResponse = (up: ClientRequest, upRes: IncomingMessage) => {
    if (up !== current || finished) {
      upRes.resume();
      return;
    }
    responded = true;
    const out: OutgoingHttpHeaders = {};
    const drop = connectionTokens(upRes.headers.connection);
    for (const [name, value] of Object.entries(upRes.headers)) {
      if (value === undefined || HOP_BY_HOP.has(name) || drop.has(name)) continue;
      out[name] = value;
    }
    res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, out);
    upRes.pipe(res);
    upRes.on('error', (err) => res.destroy(err));
    upRes.on('aborted', () => res.destroy());
  };

  const onError = (up: ClientRequest, err: NodeJS.ErrnoException) => {
    if (up !== current || finished) return;
    if (responded) {
      res.destroy(err);
      return;
    }
    const fresh = !up.reusedSocket && CONNECT_ERRORS.has(err.code ?? '');
    const replayable = replay !== null && (IDEMPOTENT.has(method) || fresh);
    if (attempts < 2 && replayable && !res.destroyed) {
      req.resume();
      attempt();
      return;
    }
    finished = true;
    const timedOut = err instanceof FerryError && err.code === 'PROXY_TIMEOUT';
    opts.fail(timedOut ? 504 : 502, `upstream ${target.address}:${target.port} failed: ${err.message}`);
    req.resume();
  };

  req.on('data', (chunk: Buffer) => {
    if (replay) {
      replayBytes += chunk.length;
      if (replayBytes > opts.maxReplayBytes) replay = null;
      else replay.push(chunk);
    }
    const up = current;
    if (!up || finished) return;
    if (!up.write(chunk)) {
      req.pause();
      up.once('drain', () => req.resume());
    }
  });
  req.on('end', () => {
    ended = true;
    if (!finished) current?.end();
  });
  res.on('close', () => {
    finished = true;
    if (!res.writableFinished) current?.destroy();
  });

  attempt();
}

/** The request headers to send upstream: Host kept, hop-by-hop and front headers dropped, X-Forwarded-For appended. */
function forwardHeaders(req: IncomingMessage, trustedClient?: string): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const drop = connectionTokens(req.headers.connection);
  for (const h of FRONT_HEADERS) drop.add(h);
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || drop.has(name)) continue;
    out[name] = value;
  }
  const client = trustedClient ?? normalizeAddress(req.socket.remoteAddress ?? '');
  const prior = req.headers['x-forwarded-for'];
  out['x-forwarded-for'] = prior ? `${Array.isArray(prior) ? prior.join(', ') : prior}, ${client}` : client;
  return out;
}

function connectionTokens(value: string | undefined): Set<string> {
  return new Set(
    (value ?? '')
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter(Boolean),
  );
}

/** Whether an address (as `normalizeAddress` gives it) is a loopback one: 127.0.0.0/8 or ::1. */
export function isLoopback(address: string): boolean {
  return address === '::1' || (isIP(address) === 4 && address.startsWith('127.'));
}

/** `::ffff:127.0.0.9` → `127.0.0.9`; other addresses unchanged. */
export function normalizeAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
