/**
 * Client side of zone transfers: AXFR or IXFR over TCP, reading messages until the transfer is
 * complete (RFC 5936 §2.2, RFC 1995 §4), verifying the TSIG of every message when signed.
 */
import { randomInt } from 'node:crypto';
import net from 'node:net';
import { FerryError } from '../../common/errors.js';
import { findTsig, signMessage, TsigKeyring, verifyMessage, type TsigKey } from '../tsig/tsig.js';
import { decodeMessage, encodeMessage, makeQuery, type ResourceRecord } from '../wire/message.js';
import { parseName } from '../wire/name.js';
import { RRClass, RRType, Rcode, rcodeName } from '../wire/types.js';

export interface TransferOptions {
  server: { address: string; port: number };
  zone: string;
  /** IXFR from this serial; AXFR when absent. */
  serial?: number;
  key?: TsigKey;
  timeoutMs?: number;
}

/** Records of the transfer, and how many messages carried them. */
export interface TransferResult {
  rcode: number;
  records: ResourceRecord[];
  messages: number;
}

/** Runs one zone transfer. Throws DNS_TIMEOUT, DNS_NETWORK, DNS_TSIG (a message failed verification). */
export function dnsTransfer(opts: TransferOptions): Promise<TransferResult> {
  const id = randomInt(65536);
  const zone = parseName(opts.zone);
  const q = makeQuery(id, zone, opts.serial === undefined ? RRType.AXFR : RRType.IXFR);
  if (opts.serial !== undefined)
    q.authority = [
      {
        name: zone,
        type: RRType.SOA,
        class: RRClass.IN,
        ttl: 0,
        data: ['.', '.', opts.serial >>> 0, 0, 0, 0, 0],
      },
    ];
  let packet = encodeMessage(q);
  let prior: Buffer | undefined;
  if (opts.key) ({ packet, mac: prior } = signMessage(packet, opts.key));
  const ring = opts.key ? new TsigKeyring([opts.key]) : undefined;
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: opts.server.address, port: opts.server.port });
    const records: ResourceRecord[] = [];
    let messages = 0;
    let soas = 0;
    let pending = Buffer.alloc(0);
    let finished = false;
    const done = (err: Error | undefined, res?: TransferResult) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(res!);
    };
    const timer = setTimeout(
      () =>
        done(
          new FerryError(
            'DNS_TIMEOUT',
            `transfer of ${zone} from ${opts.server.address}:${opts.server.port} timed out`,
          ),
        ),
      timeoutMs,
    );
    sock.on('error', (err) =>
      done(new FerryError('DNS_NETWORK', `transfer: ${err.message}`, { cause: err })),
    );
    sock.on('close', () => done(new FerryError('DNS_NETWORK', 'transfer: connection closed before the end')));
    sock.on('connect', () => {
      const f = Buffer.alloc(2 + packet.length);
      f.writeUInt16BE(packet.length, 0);
      packet.copy(f, 2);
      sock.write(f);
    });
    sock.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const raw = pending.subarray(2, 2 + pending.readUInt16BE(0));
        pending = pending.subarray(2 + raw.length);
        messages++;
        let body: Uint8Array = raw;
        if (ring) {
          const v = verifyMessage(raw, ring, messages === 1 ? { requestMac: prior! } : { priorMac: prior! });
          if (v.status !== 'ok') {
            const err = v.status === 'error' ? v.error : 'unsigned';
            return done(
              new FerryError('DNS_TSIG', `transfer message ${messages} failed TSIG verification (${err})`),
            );
          }
          prior = findTsig(raw)!.tsig.mac;
          body = v.message;
        }
        const m = decodeMessage(body);
        if (m.rcode !== Rcode.NOERROR) return done(undefined, { rcode: m.rcode, records, messages });
        for (const rr of m.answers) {
          records.push(rr);
          if (rr.type === RRType.SOA) soas++;
        }
        const first = records[0];
        const last = records[records.length - 1];
        if (!first || first.type !== RRType.SOA)
          return done(
            new FerryError('DNS_BAD_RESPONSE', `transfer does not start with a SOA (${rcodeName(m.rcode)})`),
          );
        const up = records.length === 1 && messages === 1 && m.answers.length === 1;
        const end =
          records.length > 1 &&
          last!.type === RRType.SOA &&
          last!.data[2] === first.data[2] &&
          soas % 2 === 0;
        if (up || end) return done(undefined, { rcode: 0, records, messages });
      }
    });
  });
}
