/**
 * Preflight parity: before the switch, the target must answer like the origin. The controller
 * probes both itself, as a client would: HTTP(S) status and body hash for given paths with the
 * site's Host, TLS certificate names (SNI = the domain), and the first line of other TCP ports.
 * A mismatch is reported as a readable diff, one line per check.
 */
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { errorMessage } from '../common/errors.js';
import { DEFAULT_PARITY, type HttpCheck, type ParityChecks } from './types.js';

/** One probe's answer; `error` when the probe itself failed. */
export interface ProbeAnswer {
  status?: number;
  sha256?: string;
  /** The first bytes of the body (for the diff). */
  excerpt?: string;
  names?: string[];
  /** The certificate's SHA-256 fingerprint (`AA:BB:…`). */
  fingerprint?: string;
  banner?: string;
  error?: string;
}

export interface ParityResult {
  check: string;
  ok: boolean;
  origin: ProbeAnswer;
  target: ProbeAnswer;
  /** What differs, in words (empty when ok). */
  diff: string;
}

const EXCERPT = 200;

/** GET `path` with Host `domain` at address:port. */
export function probeHttp(
  domain: string,
  address: string,
  port: number,
  path: string,
  tls = false,
  timeoutMs = 5000,
): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    const host = domain.replace(/\.$/, '');
    const opts = {
      host: address,
      port,
      path,
      method: 'GET',
      headers: { host },
      agent: false as const,
      timeout: timeoutMs,
      servername: host,
      rejectUnauthorized: false,
    };
    const onRes = (res: import('node:http').IncomingMessage) => {
      const hash = createHash('sha256');
      let excerpt = '';
      res.on('data', (c: Buffer) => {
        hash.update(c);
        if (excerpt.length < EXCERPT) excerpt += c.toString('utf8', 0, Math.min(c.length, EXCERPT));
      });
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          sha256: hash.digest('hex'),
          excerpt: excerpt.slice(0, EXCERPT),
        }),
      );
      res.on('error', (err) => resolve({ error: errorMessage(err) }));
    };
    const req = tls ? httpsRequest(opts, onRes) : httpRequest(opts, onRes);
    req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    req.on('error', (err) => resolve({ error: errorMessage(err) }));
    req.end();
  });
}

/** The certificate's names (CN and subjectAltName DNS entries, sorted) at address:port with SNI `domain`. */
export function probeTlsNames(
  domain: string,
  address: string,
  port: number,
  timeoutMs = 5000,
): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    const servername = domain.replace(/\.$/, '');
    const sock = tlsConnect({
      host: address,
      port,
      servername,
      rejectUnauthorized: false,
      timeout: timeoutMs,
    });
    sock.once('secureConnect', () => {
      const cert = sock.getPeerCertificate();
      const names = new Set<string>();
      const cn = cert.subject?.CN;
      if (typeof cn === 'string') names.add(cn);
      for (const part of (cert.subjectaltname ?? '').split(',')) {
        const m = /^\s*DNS:(.+)$/.exec(part);
        if (m) names.add(m[1]!.trim());
      }
      sock.destroy();
      resolve({ names: [...names].sort(), fingerprint: cert.fingerprint256 });
    });
    sock.once('timeout', () => sock.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    sock.once('error', (err) => resolve({ error: errorMessage(err) }));
  });
}

/** The first line a TCP service sends on connect (SMTP, FTP, SSH banners), or '' if it sends none within `waitMs`. */
export function probeBanner(address: string, port: number, waitMs = 2000): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    const sock = netConnect({ host: address, port });
    let buf = '';
    const done = (a: ProbeAnswer) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(a);
    };
    const timer = setTimeout(() => done({ banner: buf.split(/\r?\n/)[0] ?? '' }), waitMs);
    sock.on('data', (c: Buffer) => {
      buf += c.toString('utf8');
      if (buf.includes('\n') || buf.length > 1024) done({ banner: buf.split(/\r?\n/)[0]!.slice(0, 1024) });
    });
    sock.once('error', (err) => done({ error: errorMessage(err) }));
  });
}

/** Run every configured check against origin and target; one result per check. */
export async function checkParity(
  domain: string,
  origin: { address: string },
  target: { address: string },
  defaultPort: number,
  checks: ParityChecks | undefined,
): Promise<ParityResult[]> {
  const http: HttpCheck[] = checks?.http ?? DEFAULT_PARITY.http;
  const results: ParityResult[] = [];
  for (const c of http) {
    const port = c.port ?? defaultPort;
    const body = c.body ?? true;
    const [o, t] = await Promise.all([
      probeHttp(domain, origin.address, port, c.path, c.tls ?? false),
      probeHttp(domain, target.address, port, c.path, c.tls ?? false),
    ]);
    const diffs: string[] = [];
    if (o.error || t.error) diffs.push(`probe failed: origin ${o.error ?? 'ok'}, target ${t.error ?? 'ok'}`);
    else {
      if (o.status !== t.status) diffs.push(`status: origin ${o.status}, target ${t.status}`);
      if (body && o.sha256 !== t.sha256) {
        diffs.push(
          `body sha256: origin ${o.sha256!.slice(0, 12)}…, target ${t.sha256!.slice(0, 12)}…; ${firstDifference(o.excerpt ?? '', t.excerpt ?? '')}`,
        );
      }
    }
    results.push({
      check: `${c.tls ? 'https' : 'http'} GET ${c.path} :${port}`,
      ok: diffs.length === 0,
      origin: o,
      target: t,
      diff: diffs.join('; '),
    });
  }
  for (const port of checks?.tlsPorts ?? []) {
    const [o, t] = await Promise.all([
      probeTlsNames(domain, origin.address, port),
      probeTlsNames(domain, target.address, port),
    ]);
    let diff = '';
    if (o.error || t.error) diff = `probe failed: origin ${o.error ?? 'ok'}, target ${t.error ?? 'ok'}`;
    else if (o.names!.join(',') !== t.names!.join(',')) {
      const only = (a: string[], b: string[]) => a.filter((x) => !b.includes(x));
      diff = `certificate names: only on origin [${only(o.names!, t.names!).join(', ')}], only on target [${only(t.names!, o.names!).join(', ')}]`;
    } else if (checks?.tlsFingerprint && o.fingerprint !== t.fingerprint) {
      diff = `certificate: origin ${o.fingerprint ?? '?'}, target ${t.fingerprint ?? '?'}`;
    }
    results.push({ check: `tls names :${port}`, ok: !diff, origin: o, target: t, diff });
  }
  const ignore = checks?.bannerIgnore ? new RegExp(checks.bannerIgnore, 'g') : undefined;
  for (const port of checks?.bannerPorts ?? []) {
    const [o, t] = await Promise.all([probeBanner(origin.address, port), probeBanner(target.address, port)]);
    const norm = (s: string | undefined) => (ignore ? (s ?? '').replace(ignore, '') : (s ?? '')).trim();
    let diff = '';
    if (o.error || t.error) diff = `probe failed: origin ${o.error ?? 'ok'}, target ${t.error ?? 'ok'}`;
    else if (norm(o.banner) !== norm(t.banner))
      diff = `banner: origin ${JSON.stringify(o.banner)}, target ${JSON.stringify(t.banner)}`;
    results.push({ check: `banner :${port}`, ok: !diff, origin: o, target: t, diff });
  }
  return results;
}

/** Where two texts first differ, shown as a short excerpt of each. */
export function firstDifference(a: string, b: string): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  if (i === a.length && i === b.length) return 'excerpts equal (difference further on)';
  const from = Math.max(0, i - 20);
  const cut = (s: string) => JSON.stringify(s.slice(from, i + 40));
  return `first difference at byte ${i}: origin …${cut(a)}, target …${cut(b)}`;
}

/** The readable report of failed checks, one per line. */
export function describeParity(results: ParityResult[]): string {
  return results
    .filter((r) => !r.ok)
    .map((r) => `  ✗ ${r.check}: ${r.diff}`)
    .join('\n');
}
