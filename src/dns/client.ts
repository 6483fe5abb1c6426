/**
 * A small stub client: one question over UDP (retried over TCP when truncated, RFC 7766 §5) or
 * TCP, with a timeout and an id/question check (RFC 5452 §9.1 for UDP: mismatches are ignored).
 */
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { FerryError } from '../common/errors.js';
import {
  decodeMessage,
  encodeMessage,
  makeQuery,
  type DnsMessage,
  type ResourceRecord,
} from './wire/message.js';
import { nameKey, parseName } from './wire/name.js';
import { formatRdata } from './wire/rdata.js';
import { rcodeName, typeCode, typeName } from './wire/types.js';

export interface DnsAnswerRecord {
  name: string;
  type: number;
  typeName: string;
  class: number;
  ttl: number;
  /** Presentation-format rdata. */
  rdata: string;
}

export interface DnsResponse {
  id: number;
  rcode: number;
  rcodeName: string;
  flags: { qr: boolean; aa: boolean; tc: boolean; rd: boolean; ra: boolean };
  answers: DnsAnswerRecord[];
  authority: DnsAnswerRecord[];
  /** Additional records without the OPT record (see `edns`). */
  additional: DnsAnswerRecord[];
  /** The response's OPT record, when it had one. */
  edns?: { udpSize: number; version: number; dnssecOk: boolean };
  /** Whether the final answer came over TCP. */
  tcp: boolean;
  /** Size of the response message in octets. */
  size: number;
}

export interface DnsQueryOptions {
  server: { address: string; port: number };
  name: string;
  /** Type mnemonic or `TYPEnnn`. */
  type: string;
  /** Ask over TCP only. */
  tcp?: boolean;
  /** Per exchange (default 2000). */
  timeoutMs?: number;
  /** EDNS in the query (default `{ udpSize: 1232 }`); false sends none. */
  edns?: { udpSize: number; dnssecOk?: boolean } | false;
  /** Recursion desired (default false: we ask authoritative servers). */
  rd?: boolean;
}

function toAnswer(rr: ResourceRecord): DnsAnswerRecord {
  return {
    name: rr.name,
    type: rr.type,
    typeName: typeName(rr.type),
    class: rr.class,
    ttl: rr.ttl,
    rdata: formatRdata(rr.type, rr.data),
  };
}

/** Asks one question and returns the decoded response. Throws DNS_TIMEOUT, DNS_BAD_RESPONSE. */
export async function dnsQuery(opts: DnsQueryOptions): Promise<DnsResponse> {
  const type = typeCode(opts.type);
  if (type === undefined)
    throw new FerryError('DNS_BAD_TEXT', `unknown RR type ${JSON.stringify(opts.type)}`);
  const name = parseName(opts.name);
  const id = randomInt(65536);
  const edns = opts.edns === undefined ? { udpSize: 1232 } : opts.edns;
  const packet = encodeMessage(makeQuery(id, name, type, { edns, rd: opts.rd ?? false }));
  const timeoutMs = opts.timeoutMs ?? 2000;
  const accept = (m: DnsMessage) =>
    m.id === id &&
    m.flags.qr &&
    (m.questions.length === 0 ||
      (m.questions.length === 1 &&
        nameKey(m.questions[0]!.name) === nameKey(name) &&
        m.questions[0]!.type === type));
  let tcp = opts.tcp ?? false;
  let raw = tcp
    ? await dnsExchangeTcp(opts.server, packet, timeoutMs)
    : await dnsExchangeUdp(opts.server, packet, timeoutMs, (b) => accept(decodeMessage(b)));
  let msg = decodeMessage(raw);
  if (!tcp && msg.flags.tc) {
    tcp = true;
    raw = await dnsExchangeTcp(opts.server, packet, timeoutMs);
    msg = decodeMessage(raw);
  }
  if (!accept(msg))
    throw new FerryError(
      'DNS_BAD_RESPONSE',
      `response from ${opts.server.address}:${opts.server.port} does not match the query`,
    );
  const res: DnsResponse = {
    id: msg.id,
    rcode: msg.rcode,
    rcodeName: rcodeName(msg.rcode),
    flags: { qr: msg.flags.qr, aa: msg.flags.aa, tc: msg.flags.tc, rd: msg.flags.rd, ra: msg.flags.ra },
    answers: msg.answers.map(toAnswer),
    authority: msg.authority.map(toAnswer),
    additional: msg.additional.map(toAnswer),
    tcp,
    size: raw.length,
  };
  if (msg.edns)
    res.edns = { udpSize: msg.edns.udpSize, version: msg.edns.version, dnssecOk: msg.edns.dnssecOk };
  return res;
}

function timeout(server: { address: string; port: number }, ms: number): FerryError {
  return new FerryError('DNS_TIMEOUT', `no answer from ${server.address}:${server.port} within ${ms} ms`);
}

/**
 * Sends a raw packet over UDP and resolves with the first datagram from the server that
 * `accept` takes (default: any); others are ignored. Throws DNS_TIMEOUT.
 */
export function dnsExchangeUdp(
  server: { address: string; port: number },
  packet: Uint8Array,
  timeoutMs = 2000,
  accept: (b: Buffer) => boolean = () => true,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(net.isIPv6(server.address) ? 'udp6' : 'udp4');
    const done = (err: Error | undefined, buf?: Buffer) => {
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(buf!);
    };
    const timer = setTimeout(() => done(timeout(server, timeoutMs)), timeoutMs);
    sock.on('error', (err) =>
      done(
        new FerryError('DNS_NETWORK', `UDP to ${server.address}:${server.port}: ${err.message}`, {
          cause: err,
        }),
      ),
    );
    sock.on('message', (buf, rinfo) => {
      if (rinfo.port !== server.port || rinfo.address !== server.address) return;
      let ok = false;
      try {
        ok = accept(buf);
      } catch {
        ok = false; // undecodable: not our answer
      }
      if (ok) done(undefined, buf);
    });
    sock.send(packet, server.port, server.address);
  });
}

/**
 * Sends a raw packet over TCP (RFC 7766 §8 framing) and resolves with the first response
 * message. Throws DNS_TIMEOUT, DNS_NETWORK.
 */
export function dnsExchangeTcp(
  server: { address: string; port: number },
  packet: Uint8Array,
  timeoutMs = 2000,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: server.address, port: server.port });
    let pending = Buffer.alloc(0);
    let finished = false;
    const done = (err: Error | undefined, buf?: Buffer) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(buf!);
    };
    const timer = setTimeout(() => done(timeout(server, timeoutMs)), timeoutMs);
    sock.on('error', (err) =>
      done(
        new FerryError('DNS_NETWORK', `TCP to ${server.address}:${server.port}: ${err.message}`, {
          cause: err,
        }),
      ),
    );
    sock.on('close', () =>
      done(new FerryError('DNS_NETWORK', `TCP to ${server.address}:${server.port} closed before an answer`)),
    );
    sock.on('connect', () => {
      const framed = Buffer.alloc(2 + packet.length);
      framed.writeUInt16BE(packet.length, 0);
      framed.set(packet, 2);
      sock.write(framed);
    });
    sock.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (pending.length < 2) return;
      const len = pending.readUInt16BE(0);
      if (pending.length >= 2 + len) done(undefined, Buffer.from(pending.subarray(2, 2 + len)));
    });
  });
}
