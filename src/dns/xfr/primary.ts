/**
 * The primary-server role beside the query engine: requests the engine does not answer alone
 * (zone transfers, dynamic UPDATE, NOTIFY, anything TSIG-signed) and what a change sets off
 * (persistence, the IXFR journal, NOTIFY to secondaries).
 *
 * Request path: TSIG first (RFC 8945 §5.2: BADKEY/BADSIG/BADTIME are NOTAUTH answers), then by
 * opcode and QTYPE. Unsigned requests that are refused are left to the engine, which answers them
 * exactly as before this role existed (REFUSED for transfers), so plain queries are untouched.
 * Everything is synchronous: one request in, its response messages out, in order.
 */
import type { Logger } from 'pino';
import { FerryError } from '../../common/errors.js';
import { silentLogger } from '../../common/log.js';
import { ZoneDb } from '../persist/zone-db.js';
import type { QueryEngine } from '../query/engine.js';
import {
  signError,
  signMessage,
  TsigKeyring,
  verifyMessage,
  type TsigKey,
  type TsigKeyConfig,
} from '../tsig/tsig.js';
import { Notifier, type NotifyTarget } from '../notify/notifier.js';
import { applyUpdate, updateZone } from '../update/update.js';
import { decodeUpdate } from '../update/wire.js';
import {
  decodeMessage,
  encodeMessage,
  HEADER_SIZE,
  NO_FLAGS,
  unpackHeader,
  unpackQuestion,
  type DnsMessage,
  type Question,
} from '../wire/message.js';
import { nameKey, parseName } from '../wire/name.js';
import { Opcode, RRClass, RRType, Rcode } from '../wire/types.js';
import { serialGreater, type ZoneDiff, type ZoneStore } from '../zone/store.js';
import type { Zone } from '../zone/zone.js';
import { Acl, type AclEntry } from './acl.js';
import { axfrRecords, ixfrRecords, packTransfer } from './transfer.js';
import { skipName } from '../wire/name.js';

/** What a zone allows and whom it notifies. Defaults: no transfers, no updates, no NOTIFY. */
export interface ZonePolicy {
  allowTransfer?: AclEntry[];
  allowUpdate?: AclEntry[];
  notify?: NotifyTarget[];
}

export interface PrimaryOptions {
  /** SQLite file for zones and the change journal; without it both live in memory only. */
  db?: string;
  /** Journal entries kept per zone for IXFR (default 1000). */
  journalLimit?: number;
  /** TSIG keys (base64 secrets). */
  tsigKeys?: TsigKeyConfig[];
  /** Per zone origin; the key `*` applies to zones without their own entry. */
  zonePolicies?: Record<string, ZonePolicy>;
  /** NOTIFY timing: coalescing window, first retry interval, retries. */
  notify?: { coalesceMs?: number; retryMs?: number; retries?: number };
  logger?: Logger;
}

interface CompiledPolicy {
  transfer: Acl;
  update: Acl;
  notify: NotifyTarget[];
}

/** The remote end of a request. */
export interface Remote {
  address: string;
  transport: 'udp' | 'tcp';
}

const TSIG_ROOM = 400;

/** In-memory journal when there is no database. */
class MemoryJournal {
  private readonly diffs = new Map<string, ZoneDiff[]>();
  constructor(private readonly limit: number) {}

  add(diff: ZoneDiff): void {
    const k = nameKey(diff.origin);
    const list = this.diffs.get(k) ?? [];
    list.push(diff);
    if (list.length > this.limit) list.splice(0, list.length - this.limit);
    this.diffs.set(k, list);
  }

  reset(origin: string): void {
    this.diffs.delete(nameKey(origin));
  }

  diffsSince(origin: string, from: number, current: number): ZoneDiff[] | undefined {
    if (from === current) return [];
    const list = this.diffs.get(nameKey(origin)) ?? [];
    const start = list.findIndex((d) => (d.fromSoa.data[2] as number) === from);
    if (start < 0) return undefined;
    const out = list.slice(start);
    return (out[out.length - 1]!.toSoa.data[2] as number) === current ? out : undefined;
  }
}


/**
 * Cheap first look: true for UPDATE and NOTIFY, zone transfer questions, and messages whose last
 * record is a TSIG. Plain queries (the hot path) are recognised from a few bytes.
 */
export function wantsPrimary(p: Uint8Array): boolean {
  if (p.length < HEADER_SIZE || (p[2]! & 0x80) !== 0) return false;
  const opcode = (p[2]! >> 3) & 0xf;
  if (opcode === Opcode.UPDATE || opcode === Opcode.NOTIFY) return true;
  const qd = (p[4]! << 8) | p[5]!;
  const rrs = ((p[6]! << 8) | p[7]!) + ((p[8]! << 8) | p[9]!) + ((p[10]! << 8) | p[11]!);
  let off = HEADER_SIZE;
  for (let i = 0; i < qd; i++) {
    off = skipName(p, off);
    if (off < 0 || off + 4 > p.length) return false;
    const t = (p[off]! << 8) | p[off + 1]!;
    if (t === RRType.AXFR || t === RRType.IXFR) return true;
    off += 4;
  }
  if (((p[10]! << 8) | p[11]!) === 0) return false;
  let type = -1;
  for (let i = 0; i < rrs; i++) {
    off = skipName(p, off);
    if (off < 0 || off + 10 > p.length) return false;
    type = (p[off]! << 8) | p[off + 1]!;
    off += 10 + ((p[off + 8]! << 8) | p[off + 9]!);
  }
  return type === RRType.TSIG;
}

/** Questions of a message, as far as they can be read. */
function questionsOf(p: Uint8Array): Question[] {
  const out: Question[] = [];
  try {
    const h = unpackHeader(p);
    let off = HEADER_SIZE;
    for (let i = 0; i < h.qdcount; i++) {
      const [q, o] = unpackQuestion(p, off);
      out.push(q);
      off = o;
    }
  } catch {
    // echo what could be read
  }
  return out;
}

/** A bare answer: header, question echoed, rcode. */
function bareResponse(p: Uint8Array, rcode: number, extra: Partial<DnsMessage> = {}): Buffer {
  const h = unpackHeader(p);
  return encodeMessage({
    id: h.id,
    opcode: h.opcode,
    rcode,
    flags: { ...NO_FLAGS, qr: true, rd: h.flags.rd, cd: h.flags.cd },
    questions: rcode === Rcode.FORMERR ? [] : questionsOf(p).slice(0, 1),
    answers: [],
    authority: [],
    additional: [],
    ...extra,
  });
}

/** The primary role of a `DnsServer`. */
export class Primary {
  readonly keys: TsigKeyring;
  readonly db: ZoneDb | undefined;
  private readonly memory: MemoryJournal;
  private readonly policies = new Map<string, CompiledPolicy>();
  private notifier: Notifier | undefined;
  private readonly log: Logger;
  private readonly unsubscribe: () => void;
  /** Transfers served (AXFR, IXFR as differences, IXFR answered with the whole zone) and updates applied. */
  readonly stats = { axfr: 0, ixfr: 0, ixfrAsAxfr: 0, updates: 0 };

  constructor(
    private readonly store: ZoneStore,
    private readonly engine: QueryEngine,
    private readonly opts: PrimaryOptions = {},
  ) {
    this.log = opts.logger ?? silentLogger;
    this.keys = new TsigKeyring(opts.tsigKeys ?? []);
    for (const [origin, p] of Object.entries(opts.zonePolicies ?? {})) this.setPolicy(origin, p);
    this.memory = new MemoryJournal(opts.journalLimit ?? 1000);
    if (opts.db) {
      this.db = new ZoneDb(
        opts.db,
        opts.journalLimit === undefined ? {} : { journalLimit: opts.journalLimit },
      );
      this.restore(this.db);
    }
    this.unsubscribe = store.onCommit((e) => {
      if (e.kind === 'change') {
        this.db?.commit(e.diff); // throws → the store undoes the change
        this.memory.add(e.diff);
        this.scheduleNotify(e.zone);
      } else if (e.kind === 'add') {
        this.db?.saveZone(e.zone);
        this.memory.reset(e.zone.origin);
        this.scheduleNotify(e.zone);
      } else {
        this.db?.removeZone(e.zone.origin);
        this.memory.reset(e.zone.origin);
      }
    });
  }

  /**
   * Zones and serials back from the database. A zone given at start whose serial is greater than
   * the stored one (its file was edited) replaces the stored copy; otherwise the stored copy,
   * with every change made since, is served.
   */
  private restore(db: ZoneDb): void {
    const given = new Map(this.store.list().map((z) => [z.originKey, z]));
    for (const z of given.values()) {
      const stored = db.serial(z.origin);
      if (stored === undefined || serialGreater(z.serial, stored)) db.saveZone(z);
      else this.store.add(db.loadZone(z.origin)!);
    }
    for (const { origin } of db.zones()) {
      if (!given.has(nameKey(origin))) this.store.add(db.loadZone(origin)!);
    }
  }

  /** Sets (or replaces) a zone's policy; origin `*` is the default. */
  setPolicy(origin: string, p: ZonePolicy): void {
    const k = origin === '*' ? '*' : nameKey(parseName(origin));
    for (const t of p.notify ?? [])
      if (t.key && !this.keys.get(t.key))
        throw new FerryError(
          'DNS_BAD_OPTIONS',
          `notify target ${t.address} names unknown TSIG key ${t.key}; add it to tsigKeys`,
        );
    this.policies.set(k, {
      transfer: new Acl(p.allowTransfer),
      update: new Acl(p.allowUpdate),
      notify: [...(p.notify ?? [])],
    });
  }

  private policy(zone: Zone): CompiledPolicy {
    return (
      this.policies.get(zone.originKey) ??
      this.policies.get('*') ?? { transfer: new Acl(), update: new Acl(), notify: [] }
    );
  }

  /** Starts NOTIFY from the server's address. */
  start(sourceAddress: string): void {
    const n = this.opts.notify ?? {};
    this.notifier = new Notifier({
      source: sourceAddress,
      keys: this.keys,
      ...n,
      onEvent: (e) => {
        if (e.outcome === 'answered') this.log.debug(e, 'notify answered');
        else this.log.warn(e, 'notify not answered');
      },
    });
  }

  stop(): void {
    this.notifier?.stop();
    this.notifier = undefined;
  }

  /** Closes the database (after `stop`). */
  close(): void {
    this.stop();
    this.unsubscribe();
    this.db?.close();
  }

  /** NOTIFY messages sent so far. */
  get notifiesSent(): number {
    return this.notifier?.sent ?? 0;
  }

  private scheduleNotify(zone: Zone): void {
    const targets = this.policy(zone).notify;
    if (targets.length) this.notifier?.changed(zone, targets);
  }

  /** Diffs from `from` to the zone's serial, or undefined when the journal does not reach it. */
  diffsSince(zone: Zone, from: number): ZoneDiff[] | undefined {
    if (this.db) {
      const d = this.db.diffsSince(zone.origin, from);
      if (d) return d;
    }
    return this.memory.diffsSince(zone.origin, from, zone.serial);
  }

  /**
   * The response messages for a request this role handles, or undefined to let the query engine
   * answer it. Never throws for bad input.
   */
  handle(packet: Uint8Array, remote: Remote): Buffer[] | undefined {
    if (!wantsPrimary(packet)) return undefined;
    let verified;
    try {
      verified = verifyMessage(packet, this.keys);
    } catch {
      return [bareResponse(packet, Rcode.FORMERR)];
    }
    if (verified.status === 'error') {
      this.log.info(
        { from: remote.address, key: verified.tsig.keyName, tsigError: verified.error },
        'tsig verification failed',
      );
      if (verified.error === 1) return [bareResponse(packet, Rcode.FORMERR)];
      return [signError(bareResponse(verified.message, Rcode.NOTAUTH), verified)];
    }
    const key = verified.status === 'ok' ? verified.key : undefined;
    const requestMac = verified.status === 'ok' ? verified.tsig.mac : undefined;
    const msg = verified.message;
    const opcode = unpackHeader(msg).opcode;
    let out: Buffer[] | undefined;
    if (opcode === Opcode.UPDATE) out = [this.update(msg, remote, key)];
    else if (opcode === Opcode.NOTIFY)
      out = [bareResponse(msg, Rcode.NOTIMP)]; // we are no secondary
    else if (opcode === Opcode.QUERY) out = this.query(msg, remote, key);
    else out = key ? [bareResponse(msg, Rcode.NOTIMP)] : undefined;
    if (!out || !key) return out;
    // Sign every message (RFC 8945 §5.3.1): the first over the request MAC, then each over the one before.
    let prior: Buffer | undefined;
    return out.map((m, i) => {
      const s = signMessage(m, key, i === 0 ? { requestMac: requestMac! } : { priorMac: prior! });
      prior = s.mac;
      return s.packet;
    });
  }

  private query(msg: Buffer, remote: Remote, key: TsigKey | undefined): Buffer[] | undefined {
    let query: DnsMessage;
    try {
      query = decodeMessage(msg);
    } catch {
      return [bareResponse(msg, Rcode.FORMERR)];
    }
    const q = query.questions[0];
    if (query.questions.length === 1 && q && (q.type === RRType.AXFR || q.type === RRType.IXFR)) {
      const res = this.transfer(query, q, remote, key);
      if (res) return res;
      if (!key) return undefined; // refused: the engine answers it as it always has
      return [bareResponse(msg, Rcode.REFUSED)];
    }
    if (!key) return undefined;
    // A signed ordinary query: the engine's answer, signed, leaving room for the TSIG RR.
    const ctx = this.engine.resolve(query, remote.transport);
    return [
      encodeMessage(ctx.response, {
        maxSize: remote.transport === 'udp' ? ctx.udpLimit - TSIG_ROOM : 65535 - TSIG_ROOM,
        requiredAdditional: ctx.requiredAdditional,
      }),
    ];
  }

  /** AXFR/IXFR (RFC 5936, RFC 1995); undefined when refused. */
  private transfer(
    query: DnsMessage,
    q: Question,
    remote: Remote,
    key: TsigKey | undefined,
  ): Buffer[] | undefined {
    if (q.class !== RRClass.IN) return undefined;
    const zone = this.store.findZone(q.name);
    if (!zone || zone.originKey !== nameKey(q.name)) return undefined;
    if (!this.policy(zone).transfer.allows(remote.address, key?.name)) {
      this.log.info({ from: remote.address, zone: zone.origin, key: key?.name }, 'zone transfer refused');
      return undefined;
    }
    const head = { id: query.id, question: q };
    if (q.type === RRType.AXFR) {
      // RFC 5936 §4.2: AXFR is a TCP affair.
      if (remote.transport === 'udp') return [bareResponse(encodeMessage(query), Rcode.FORMERR)];
      this.stats.axfr++;
      return packTransfer(head, axfrRecords(zone));
    }
    // IXFR: the client's serial is the SOA in the authority section (RFC 1995 §3).
    const soa = query.authority.find((r) => r.type === RRType.SOA);
    if (!soa) return [bareResponse(encodeMessage(query), Rcode.FORMERR)];
    const have = soa.data[2] as number;
    if (!serialGreater(zone.serial, have) || remote.transport === 'udp') {
      // Up to date (or over UDP: the current SOA alone tells the client to come back over TCP).
      return packTransfer(head, ixfrRecords(zone, []));
    }
    const diffs = this.diffsSince(zone, have);
    if (diffs) this.stats.ixfr++;
    else this.stats.ixfrAsAxfr++;
    return packTransfer(head, diffs ? ixfrRecords(zone, diffs) : axfrRecords(zone));
  }

  /** RFC 2136 UPDATE. */
  private update(msg: Buffer, remote: Remote, key: TsigKey | undefined): Buffer {
    let upd;
    try {
      upd = decodeUpdate(msg);
    } catch {
      return bareResponse(msg, Rcode.FORMERR);
    }
    const zone = updateZone(this.store, upd.zone);
    const reply = (rcode: number) =>
      bareResponse(msg, rcode, { questions: upd.zone.slice(0, 1), flags: { ...NO_FLAGS, qr: true } });
    if (!('originKey' in zone)) return reply(zone.rcode);
    if (!this.policy(zone).update.allows(remote.address, key?.name)) {
      this.log.info({ from: remote.address, zone: zone.origin, key: key?.name }, 'update refused');
      return reply(Rcode.REFUSED);
    }
    const res = applyUpdate(this.store, zone, upd.prerequisites, upd.updates);
    if (res.rcode === Rcode.NOERROR) this.stats.updates++;
    if (res.rcode !== Rcode.NOERROR)
      this.log.info(
        { from: remote.address, zone: zone.origin, rcode: res.rcode, reason: res.reason },
        'update not applied',
      );
    return reply(res.rcode);
  }
}
