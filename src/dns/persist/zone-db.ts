/**
 * Zones and their change journal in SQLite (issue 3 item 4). Every committed change is one
 * transaction: the records it removes and adds, the new SOA, and a journal entry (the RFC 1995
 * §4 difference: old SOA, removed records, new SOA, added records) that IXFR serves. The journal
 * keeps the last `journalLimit` entries per zone; older ones are dropped.
 *
 * Beside the rows, a zone may have an image: its compact node records (zone/compact.ts) for every
 * name but the apex, exactly as the rows hold them, so a restart reads one blob instead of a row
 * per record. It is written with the zone, dropped in the transaction of any change to the rows,
 * and written again when the zone is next read from its rows or the database is closed.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { FerryError } from '../../common/errors.js';
import { packRR, unpackRR, type ResourceRecord } from '../wire/message.js';
import { nameKey, parseName } from '../wire/name.js';
import { rdataKey, rdataToWire, unpackRdata } from '../wire/rdata.js';
import { RRType } from '../wire/types.js';
import type { ZoneDiff } from '../zone/store.js';
import { CompactBuilder } from '../zone/compact.js';
import { Zone } from '../zone/zone.js';

export interface ZoneDbOptions {
  /** Journal entries kept per zone (default 1000). */
  journalLimit?: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS zones (okey TEXT PRIMARY KEY, origin TEXT NOT NULL, serial INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
  zone TEXT NOT NULL, okey TEXT NOT NULL, owner TEXT NOT NULL, type INTEGER NOT NULL,
  ttl INTEGER NOT NULL, rkey TEXT NOT NULL, rdata BLOB NOT NULL,
  PRIMARY KEY (zone, okey, type, rkey)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, zone TEXT NOT NULL, from_serial INTEGER NOT NULL,
  to_serial INTEGER NOT NULL, diff BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS journal_zone ON journal (zone, seq);
CREATE TABLE IF NOT EXISTS images (zone TEXT PRIMARY KEY, nodes BLOB NOT NULL);
`;

function soaSerial(rr: ResourceRecord): number {
  return rr.data[2] as number;
}

/** Packs records without compression: u16 count, then the RRs (RFC 1035 §4.1.3 form). */
export function packRecords(rrs: readonly ResourceRecord[]): Buffer {
  let size = 2;
  for (const rr of rrs) size += 2 + 255 + 10 + rdataToWire(rr.type, rr.data).length;
  const buf = new Uint8Array(size);
  buf[0] = rrs.length >> 8;
  buf[1] = rrs.length & 0xff;
  let off = 2;
  for (const rr of rrs) off = packRR(buf, off, rr);
  return Buffer.from(buf.subarray(0, off));
}

/** Reads what `packRecords` wrote at `off`; returns the records and the new offset. */
export function unpackRecords(buf: Uint8Array, off = 0): [ResourceRecord[], number] {
  const n = (buf[off]! << 8) | buf[off + 1]!;
  off += 2;
  const out: ResourceRecord[] = [];
  for (let i = 0; i < n; i++) {
    const [rr, o] = unpackRR(buf, off);
    out.push(rr);
    off = o;
  }
  return [out, off];
}

interface RecordRow {
  zone: string;
  owner: string;
  type: number;
  ttl: number;
  rdata: Buffer;
}

/** Zones from record rows sorted by zone, owner key and type; rows of other zones are skipped. */
function buildZones(origins: ReadonlyMap<string, string>, rows: Iterable<RecordRow>): Zone[] {
  const out: Zone[] = [];
  let zone: Zone | undefined;
  let zoneKey = '';
  let cur:
    | { owner: string; ownerKey: string; type: number; ttl: number; data: ResourceRecord['data'][] }
    | undefined;
  const flush = () => {
    if (cur && zone) zone.replaceRRset(cur.owner, cur.type, cur.ttl, cur.data);
    cur = undefined;
  };
  for (const r of rows) {
    if (r.zone !== zoneKey) {
      flush();
      zoneKey = r.zone;
      const origin = origins.get(r.zone);
      zone = origin === undefined ? undefined : new Zone(origin);
      if (zone) out.push(zone);
    }
    if (!zone) continue;
    const data = unpackRdata(r.rdata, 0, r.rdata.length, r.type);
    const ownerKey = nameKey(r.owner);
    if (cur && cur.ownerKey === ownerKey && cur.type === r.type) cur.data.push(data);
    else {
      flush();
      cur = { owner: r.owner, ownerKey, type: r.type, ttl: r.ttl, data: [data] };
    }
  }
  flush();
  return out;
}

/** The SQLite store of zones, records and the change journal. */
export class ZoneDb {
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();
  readonly journalLimit: number;

  constructor(
    readonly path: string,
    opts: ZoneDbOptions = {},
  ) {
    this.journalLimit = opts.journalLimit ?? 1000;
    if (!Number.isInteger(this.journalLimit) || this.journalLimit < 1)
      throw new FerryError(
        'DNS_BAD_OPTIONS',
        `journalLimit must be a positive integer, got ${opts.journalLimit}`,
      );
    try {
      // Its folder may not exist yet (the journal's, created when the journal opens, later).
      if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
      this.db = new Database(path);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.db.exec(SCHEMA);
    } catch (err) {
      throw new FerryError('DNS_DB', `cannot open the zone database ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  /** The statement for `text`, prepared once (a start may save 100,000 zones). */
  private sql(text: string): Database.Statement {
    let st = this.statements.get(text);
    if (!st) {
      st = this.db.prepare(text);
      this.statements.set(text, st);
    }
    return st;
  }

  /** Origins stored, with their serials. */
  zones(): Array<{ origin: string; serial: number }> {
    return this.sql('SELECT origin, serial FROM zones ORDER BY okey').all() as Array<{
      origin: string;
      serial: number;
    }>;
  }

  /** Serial stored for `origin`, or undefined when the zone is not stored. */
  serial(origin: string): number | undefined {
    const row = this.sql('SELECT serial FROM zones WHERE okey = ?').get(nameKey(parseName(origin))) as
      { serial: number } | undefined;
    return row?.serial;
  }

  /**
   * The stored zone, rebuilt in memory: the rows are read in bulk straight into the zone's compact
   * form, their wire rdata as stored (zone/compact.ts). Rows that break a zone rule (not written
   * by Ferry) are read again record by record, so the error says which.
   */
  loadZone(origin: string): Zone | undefined {
    const okey = nameKey(parseName(origin));
    const row = this.sql('SELECT origin FROM zones WHERE okey = ?').get(okey) as
      { origin: string } | undefined;
    if (!row) return undefined;
    const imaged = this.fromImage(okey, row.origin);
    if (imaged) return imaged;
    const rows = () =>
      this.sql('SELECT owner, type, ttl, rdata FROM records WHERE zone = ? ORDER BY okey, type').iterate(
        okey,
      ) as Iterable<{ owner: string; type: number; ttl: number; rdata: Buffer }>;
    const builder = new CompactBuilder();
    for (const r of rows()) builder.add(r.owner, r.type, r.ttl, r.rdata);
    const fast = Zone.fromBuilder(row.origin, builder);
    if (fast) {
      this.saveImage(fast);
      return fast;
    }
    const zone = buildZones(new Map([[okey, row.origin]]), this.rowsOf(okey))[0] ?? new Zone(row.origin);
    zone.compact(); // one buffer instead of an object per record (zone/compact.ts)
    this.saveImage(zone);
    return zone;
  }

  /** The records of zone `okey` in key order, for `buildZones`. */
  private rowsOf(okey: string): Iterable<RecordRow> {
    return this.sql(
      'SELECT zone, owner, type, ttl, rdata FROM records WHERE zone = ? ORDER BY okey, type',
    ).iterate(okey) as Iterable<RecordRow>;
  }

  /** Zone `okey` from its stored image and its apex rows, or undefined when it has no image. */
  private fromImage(okey: string, origin: string): Zone | undefined {
    const image = this.sql('SELECT nodes FROM images WHERE zone = ?').get(okey) as
      { nodes: Buffer } | undefined;
    if (!image) return undefined;
    const apex = this.sql(
      'SELECT owner, type, ttl, rdata FROM records WHERE zone = ? AND okey = ? ORDER BY type',
    ).all(okey, okey) as Array<{ owner: string; type: number; ttl: number; rdata: Buffer }>;
    const sets = new Map<
      number,
      { name: string; type: number; ttl: number; rdata: ResourceRecord['data'][] }
    >();
    for (const r of apex) {
      const set = sets.get(r.type) ?? { name: r.owner, type: r.type, ttl: r.ttl, rdata: [] };
      set.rdata.push(unpackRdata(r.rdata, 0, r.rdata.length, r.type));
      sets.set(r.type, set);
    }
    return Zone.fromImage(origin, [image.nodes], sets.values());
  }

  /**
   * Every stored zone but those whose origin key is in `skip`: from its image when it has one,
   * the others rebuilt by one pass over their records in key order (a server with 100,000 zones
   * restarts without 100,000 queries), compacted, and their images written.
   */
  loadZones(skip: ReadonlySet<string> = new Set()): Zone[] {
    const imaged = new Set(
      (this.sql('SELECT zone FROM images').all() as Array<{ zone: string }>).map((r) => r.zone),
    );
    const out: Zone[] = [];
    const origins = new Map<string, string>();
    for (const r of this.sql('SELECT okey, origin FROM zones ORDER BY okey').iterate() as Iterable<{
      okey: string;
      origin: string;
    }>) {
      if (skip.has(r.okey)) continue;
      const zone = imaged.has(r.okey) ? this.fromImage(r.okey, r.origin) : undefined;
      if (zone) out.push(zone);
      else origins.set(r.okey, r.origin);
    }
    if (origins.size === 0) return out;
    const rows = this.sql(
      'SELECT zone, owner, type, ttl, rdata FROM records WHERE zone NOT IN (SELECT zone FROM images) ORDER BY zone, okey, type',
    ).iterate() as Iterable<RecordRow>;
    const built = buildZones(origins, rows);
    this.batch(() => {
      for (const zone of built) {
        zone.compact();
        this.saveImage(zone);
      }
    });
    return out.concat(built);
  }

  /** Runs `fn` in one transaction (nested calls join it): many zones saved at once. */
  batch<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  /** Writes the zone's image (see the file comment); the zone must be as its rows are. */
  private saveImage(zone: Zone): void {
    const img = zone.compactImage();
    // Only the apex may stay outside the image (it is read from its rows).
    if (img.overlay.some((n) => nameKey(n.name) !== zone.originKey)) return;
    this.sql('INSERT OR REPLACE INTO images (zone, nodes) VALUES (?, ?)').run(
      zone.originKey,
      Buffer.from(img.base.buffer, img.base.byteOffset, img.base.byteLength),
    );
  }

  /** Writes the images that changes dropped, for zones stored as they are in `zones`. */
  saveImages(zones: Iterable<Zone>): void {
    if (!this.db.open) return;
    const has = this.sql('SELECT 1 FROM images WHERE zone = ?');
    const stored = this.sql('SELECT serial FROM zones WHERE okey = ?');
    for (const z of zones) {
      const row = stored.get(z.originKey) as { serial: number } | undefined;
      if (row?.serial === z.serial && !has.get(z.originKey)) this.saveImage(z);
    }
  }

  /** Stores a whole zone, replacing what was stored for its origin; its journal starts over. */
  saveZone(zone: Zone): void {
    const okey = zone.originKey;
    const insert = this.sql(
      'INSERT OR REPLACE INTO records (zone, okey, owner, type, ttl, rkey, rdata) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );
    this.db.transaction(() => {
      this.sql('DELETE FROM records WHERE zone = ?').run(okey);
      this.sql('DELETE FROM journal WHERE zone = ?').run(okey);
      this.sql('INSERT OR REPLACE INTO zones (okey, origin, serial) VALUES (?, ?, ?)').run(
        okey,
        zone.origin,
        zone.serial,
      );
      for (const set of zone.rrsets())
        for (const d of set.rdata)
          insert.run(
            okey,
            nameKey(set.name),
            set.name,
            set.type,
            set.ttl,
            rdataKey(set.type, d),
            rdataToWire(set.type, d),
          );
      this.sql('DELETE FROM images WHERE zone = ?').run(okey);
      this.saveImage(zone);
    })();
  }

  removeZone(origin: string): void {
    const okey = nameKey(parseName(origin));
    this.db.transaction(() => {
      for (const t of ['records', 'journal', 'images']) this.sql(`DELETE FROM ${t} WHERE zone = ?`).run(okey);
      this.sql('DELETE FROM zones WHERE okey = ?').run(okey);
    })();
  }

  /** Stores one committed change atomically and journals it. Throws DNS_DB on failure. */
  commit(diff: ZoneDiff): void {
    const okey = nameKey(diff.origin);
    const del = this.sql('DELETE FROM records WHERE zone = ? AND okey = ? AND type = ? AND rkey = ?');
    const ins = this.sql(
      'INSERT OR REPLACE INTO records (zone, okey, owner, type, ttl, rkey, rdata) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );
    const to = soaSerial(diff.toSoa);
    try {
      this.db.transaction(() => {
        for (const rr of [diff.fromSoa, ...diff.removed])
          del.run(okey, nameKey(rr.name), rr.type, rdataKey(rr.type, rr.data));
        for (const rr of [diff.toSoa, ...diff.added])
          ins.run(
            okey,
            nameKey(rr.name),
            rr.name,
            rr.type,
            rr.ttl,
            rdataKey(rr.type, rr.data),
            rdataToWire(rr.type, rr.data),
          );
        this.sql('DELETE FROM images WHERE zone = ?').run(okey); // no longer the rows' image
        const changed = this.sql('UPDATE zones SET serial = ? WHERE okey = ?').run(to, okey);
        if (changed.changes !== 1) throw new FerryError('DNS_DB', `zone ${diff.origin} is not stored`);
        const blob = Buffer.concat([
          packRecords([diff.fromSoa, ...diff.removed]),
          packRecords([diff.toSoa, ...diff.added]),
        ]);
        this.sql('INSERT INTO journal (zone, from_serial, to_serial, diff) VALUES (?, ?, ?, ?)').run(
          okey,
          soaSerial(diff.fromSoa),
          to,
          blob,
        );
        this.sql(
          'DELETE FROM journal WHERE zone = ? AND seq <= (SELECT seq FROM journal WHERE zone = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)',
        ).run(okey, okey, this.journalLimit);
      })();
    } catch (err) {
      if (err instanceof FerryError) throw err;
      throw new FerryError('DNS_DB', `cannot store the change of ${diff.origin}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** Journal entries kept for a zone (oldest first). */
  journalLength(origin: string): number {
    const row = this.sql('SELECT COUNT(*) AS n FROM journal WHERE zone = ?').get(
      nameKey(parseName(origin)),
    ) as { n: number };
    return row.n;
  }

  /**
   * The differences from serial `from` to the zone's current serial, oldest first (RFC 1995 §4),
   * or undefined when the journal does not reach back to `from` without a gap.
   */
  diffsSince(origin: string, from: number): ZoneDiff[] | undefined {
    const okey = nameKey(parseName(origin));
    const current = this.serial(origin);
    if (current === undefined) return undefined;
    if (current === from >>> 0) return [];
    const rows = this.sql('SELECT from_serial, to_serial, diff FROM journal WHERE zone = ? ORDER BY seq').all(
      okey,
    ) as Array<{ from_serial: number; to_serial: number; diff: Buffer }>;
    const start = rows.findIndex((r) => r.from_serial === from >>> 0);
    if (start < 0) return undefined;
    const out: ZoneDiff[] = [];
    let expect = from >>> 0;
    for (const r of rows.slice(start)) {
      if (r.from_serial !== expect) return undefined;
      const [[fromSoa, ...removed], o] = unpackRecords(r.diff, 0);
      const [[toSoa, ...added]] = unpackRecords(r.diff, o);
      if (!fromSoa || !toSoa || fromSoa.type !== RRType.SOA || toSoa.type !== RRType.SOA)
        throw new FerryError('DNS_DB', `journal entry of ${origin} is corrupt`);
      out.push({ origin, fromSoa, toSoa, removed, added });
      expect = r.to_serial;
    }
    return expect === current ? out : undefined;
  }
}
