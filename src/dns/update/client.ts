/**
 * Client side of RFC 2136: build UPDATE records from presentation text, send a (TSIG-signed)
 * UPDATE over TCP and check the answer, including its TSIG (RFC 8945 §5.3).
 */
import { randomInt } from 'node:crypto';
import { FerryError } from '../../common/errors.js';
import { dnsExchangeTcp } from '../client.js';
import { findTsig, signMessage, TsigKeyring, verifyMessage, type TsigKey } from '../tsig/tsig.js';
import { unpackHeader } from '../wire/message.js';
import { parseName } from '../wire/name.js';
import { parseRdata } from '../wire/rdata.js';
import { tokenize } from '../wire/text.js';
import { RRClass, RRType, typeCode } from '../wire/types.js';
import { encodeUpdate, type UpdateRR } from './wire.js';

function typeOf(type: string): number {
  const t = typeCode(type);
  if (t === undefined) throw new FerryError('DNS_BAD_TEXT', `unknown RR type ${JSON.stringify(type)}`);
  return t;
}

/** Update-section and prerequisite records (RFC 2136 §2.4-2.5), from presentation text. */
export const upd = {
  /** Add one record. */
  add: (name: string, type: string, ttl: number, rdata: string): UpdateRR => {
    const t = typeOf(type);
    return {
      name: parseName(name),
      type: t,
      class: RRClass.IN,
      ttl,
      data: parseRdata(t, tokenize(rdata), '.'),
    };
  },
  /** Delete one record (class NONE). */
  deleteRR: (name: string, type: string, rdata: string): UpdateRR => {
    const t = typeOf(type);
    return {
      name: parseName(name),
      type: t,
      class: RRClass.NONE,
      ttl: 0,
      data: parseRdata(t, tokenize(rdata), '.'),
    };
  },
  /** Delete an RRset (class ANY). */
  deleteRRset: (name: string, type: string): UpdateRR => ({
    name: parseName(name),
    type: typeOf(type),
    class: RRClass.ANY,
    ttl: 0,
    data: undefined,
  }),
  /** Delete every RRset at a name. */
  deleteName: (name: string): UpdateRR => ({
    name: parseName(name),
    type: RRType.ANY,
    class: RRClass.ANY,
    ttl: 0,
    data: undefined,
  }),
  /** Prerequisite: RRset exists (value independent). */
  exists: (name: string, type: string): UpdateRR => ({
    name: parseName(name),
    type: typeOf(type),
    class: RRClass.ANY,
    ttl: 0,
    data: undefined,
  }),
  /** Prerequisite: RRset exists with exactly these records (one entry per record). */
  existsValue: (name: string, type: string, rdata: string): UpdateRR => {
    const t = typeOf(type);
    return {
      name: parseName(name),
      type: t,
      class: RRClass.IN,
      ttl: 0,
      data: parseRdata(t, tokenize(rdata), '.'),
    };
  },
  /** Prerequisite: RRset does not exist. */
  notExists: (name: string, type: string): UpdateRR => ({
    name: parseName(name),
    type: typeOf(type),
    class: RRClass.NONE,
    ttl: 0,
    data: undefined,
  }),
  /** Prerequisite: name is in use. */
  nameInUse: (name: string): UpdateRR => ({
    name: parseName(name),
    type: RRType.ANY,
    class: RRClass.ANY,
    ttl: 0,
    data: undefined,
  }),
  /** Prerequisite: name is not in use. */
  nameNotInUse: (name: string): UpdateRR => ({
    name: parseName(name),
    type: RRType.ANY,
    class: RRClass.NONE,
    ttl: 0,
    data: undefined,
  }),
};

export interface SendUpdateOptions {
  server: { address: string; port: number };
  zone: string;
  prerequisites?: UpdateRR[];
  updates: UpdateRR[];
  key?: TsigKey;
  timeoutMs?: number;
  /** Time signed, seconds (tests of BADTIME). */
  now?: number;
}

/** What the server answered. */
export interface UpdateAnswer {
  rcode: number;
  /** TSIG error in the answer (0 when none). */
  tsigError: number;
  /** True when the answer was signed and verified with the request's key. */
  verified: boolean;
}

/** Sends one UPDATE over TCP. Throws DNS_TIMEOUT/DNS_NETWORK; refusals come back as rcodes. */
export async function sendUpdate(opts: SendUpdateOptions): Promise<UpdateAnswer> {
  const id = randomInt(65536);
  let packet = encodeUpdate({
    id,
    zone: parseName(opts.zone),
    ...(opts.prerequisites ? { prerequisites: opts.prerequisites } : {}),
    updates: opts.updates,
  });
  let mac: Buffer | undefined;
  if (opts.key)
    ({ packet, mac } = signMessage(packet, opts.key, opts.now === undefined ? {} : { now: opts.now }));
  const raw = await dnsExchangeTcp(opts.server, packet, opts.timeoutMs ?? 5000);
  const h = unpackHeader(raw);
  if (h.id !== id || !h.flags.qr || h.opcode !== 5)
    throw new FerryError(
      'DNS_BAD_RESPONSE',
      `UPDATE answer from ${opts.server.address}:${opts.server.port} does not match the request`,
    );
  const found = findTsig(raw);
  let verified = false;
  if (opts.key && found && found.tsig.mac.length > 0) {
    const v = verifyMessage(raw, new TsigKeyring([opts.key]), {
      requestMac: mac!,
      ...(opts.now === undefined ? {} : { now: opts.now }),
    });
    verified = v.status === 'ok' || (v.status === 'error' && v.error === 18);
  }
  // The header carries the low 4 bits; a TSIG error is reported in the TSIG RR (RFC 8945 §5.3.2).
  return { rcode: h.rcode, tsigError: found?.tsig.error ?? 0, verified };
}
