/**
 * The primary-server role's state beside the query engine: TSIG keys, per-zone transfer and
 * update policies, the IXFR journal, persistence, and NOTIFY to secondaries after each change.
 * The requests it serves (TSIG, AXFR/IXFR, UPDATE, NOTIFY) are handlers of the request chain
 * (dispatch/chain.ts) that read this state.
 */
import type { Logger } from 'pino';
import { FerryError } from '../../common/errors.js';
import { silentLogger } from '../../common/log.js';
import { ZoneDb } from '../persist/zone-db.js';
import { TsigKeyring, type TsigKeyConfig } from '../tsig/tsig.js';
import { Notifier, type NotifyTarget } from '../notify/notifier.js';
import { nameKey, parseName } from '../wire/name.js';
import { serialGreater, type ZoneDiff, type ZoneStore } from '../zone/store.js';
import type { Zone } from '../zone/zone.js';
import { Acl, type AclEntry } from './acl.js';

/** What a zone allows and whom it notifies. Defaults: no transfers, no updates, no NOTIFY. */
export interface ZonePolicy {
  allowTransfer?: AclEntry[];
  allowUpdate?: AclEntry[];
  notify?: NotifyTarget[];
  /**
   * Most records the zone may hold: a dynamic UPDATE that would make it larger is REFUSED (and
   * logged with the zone, the limit and the size). Default: no limit. Zone files are not limited.
   */
  maxRecords?: number;
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

/** A zone's policy, compiled. */
export interface CompiledPolicy {
  transfer: Acl;
  update: Acl;
  notify: NotifyTarget[];
  maxRecords: number | undefined;
}

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

/** The primary role of a `DnsServer`. */
export class Primary {
  readonly keys: TsigKeyring;
  readonly db: ZoneDb | undefined;
  private readonly memory: MemoryJournal;
  private readonly policies = new Map<string, CompiledPolicy>();
  private notifier: Notifier | undefined;
  /** Where refusals and NOTIFY outcomes are logged. */
  readonly log: Logger;
  private readonly unsubscribe: () => void;
  /** Transfers served (AXFR, IXFR as differences, IXFR answered with the whole zone) and updates applied. */
  readonly stats = { axfr: 0, ixfr: 0, ixfrAsAxfr: 0, updates: 0 };

  constructor(
    readonly store: ZoneStore,
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
    const stored = new Map(db.zones().map((z) => [nameKey(z.origin), z.serial]));
    const fromFiles = new Set<string>();
    db.batch(() => {
      for (const z of this.store.list()) {
        const serial = stored.get(z.originKey);
        if (serial !== undefined && !serialGreater(z.serial, serial)) continue;
        db.saveZone(z);
        fromFiles.add(z.originKey);
      }
    });
    for (const zone of db.loadZones(fromFiles)) this.store.add(zone);
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
    if (p.maxRecords !== undefined && !(Number.isInteger(p.maxRecords) && p.maxRecords >= 1))
      throw new FerryError(
        'DNS_BAD_OPTIONS',
        `maxRecords of zone ${origin} must be a positive integer, got ${String(p.maxRecords)}`,
      );
    this.policies.set(k, {
      maxRecords: p.maxRecords,
      transfer: new Acl(p.allowTransfer),
      update: new Acl(p.allowUpdate),
      notify: [...(p.notify ?? [])],
    });
  }

  /** The policy that applies to `zone` (its own, else `*`, else refuse everything). */
  policy(zone: Zone): CompiledPolicy {
    return (
      this.policies.get(zone.originKey) ??
      this.policies.get('*') ?? { transfer: new Acl(), update: new Acl(), notify: [], maxRecords: undefined }
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
    // Images the changes dropped, so the next start reads blobs rather than rows (zone-db.ts).
    try {
      this.db?.saveImages(this.store.list());
    } catch (err) {
      this.log.warn({ err }, 'dns: cannot write zone images; the next start reads rows');
    }
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
}
