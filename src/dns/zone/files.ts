/**
 * Zone files as an operator keeps them: files named one by one, and directories of `*.zone`
 * files (one zone per file, the origin being its SOA owner). Files are read synchronously, one
 * at a time (a round trip through libuv's thread pool per open, stat, read and close made small
 * files 6× slower), in batches between which the event loop turns. A reload re-reads them all: a file that fails to
 * parse is refused with its file and line while the copy already served stays; a file whose SOA
 * serial went up replaces its zone; a new file adds a zone; a zone whose file is gone is removed.
 */
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { FerryError, errorMessage } from '../../common/errors.js';
import { parseZone } from './parser.js';
import { serialGreater, type ZoneStore } from './store.js';
import type { Zone } from './zone.js';

/** Files read and parsed between two turns of the event loop. */
const FILES_PER_TURN = 256;

/** Where zone files are: files, and directories whose `*.zone` files are each one zone. */
export interface ZoneFileSources {
  files?: string[];
  dirs?: string[];
}

/** One file that could not be loaded, and why (the message names the file and, for syntax, the line). */
export interface RefusedZoneFile {
  file: string;
  error: FerryError;
}

/** What a reload did. */
export interface ZoneReloadResult {
  added: string[];
  replaced: string[];
  removed: string[];
  /** Files read again whose serial did not go up: the served copy stays. */
  unchanged: number;
  refused: RefusedZoneFile[];
}

function asFerryError(err: unknown, file: string): FerryError {
  if (err instanceof FerryError) return err;
  return new FerryError('ZONE_SYNTAX', `${file}: ${errorMessage(err)}`, { cause: err });
}

/** The zone files of `sources`, absolute, in a stable order (a directory's sorted by name). */
export async function zoneFilePaths(sources: ZoneFileSources): Promise<string[]> {
  const out = (sources.files ?? []).map((f) => resolve(f));
  for (const d of sources.dirs ?? []) {
    const dir = resolve(d);
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      throw new FerryError('ZONE_SYNTAX', `${dir}: cannot read the zone directory: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    const names = entries
      .filter(
        (e) => (e.isFile() || e.isSymbolicLink()) && e.name.endsWith('.zone') && !e.name.startsWith('.'),
      )
      .map((e) => e.name)
      .sort();
    for (const n of names) out.push(join(dir, n));
  }
  return out;
}

/**
 * Loads every file in order, handing each file's zone or error to `each` as it is read (nothing
 * is collected here: a server with 100,000 files keeps no list of results while it loads).
 */
async function eachZoneFile(
  paths: readonly string[],
  each: (file: string, result: Zone | FerryError) => void,
): Promise<void> {
  for (let i = 0; i < paths.length; i++) {
    if (i % FILES_PER_TURN === FILES_PER_TURN - 1) await new Promise((r) => setImmediate(r));
    const file = paths[i]!;
    let text: Buffer;
    try {
      text = readFileSync(file); // bytes: the reader tokenizes them without a string
    } catch (err) {
      each(file, new FerryError('ZONE_SYNTAX', `${file}: cannot read: ${errorMessage(err)}`, { cause: err }));
      continue;
    }
    let result: Zone | FerryError;
    try {
      result = parseZone(text, { fileName: file });
    } catch (err) {
      result = asFerryError(err, file);
    }
    each(file, result);
  }
}

/** The zone files a server loads at start and on every reload. */
export class ZoneFiles {
  /**
   * Origin key → the file it was loaded from: the index of its directory in `dirs` when it is
   * named after its zone (`<origin>zone`, as most are), so 100,000 of them keep no path each.
   */
  private readonly loaded = new Map<string, string | number>();
  /** The directories of `sources`, absolute. */
  private readonly dirs: string[];

  constructor(private readonly sources: ZoneFileSources) {
    this.dirs = (sources.dirs ?? []).map((d) => resolve(d));
  }

  /** How `loaded` keeps `file`, the file of the zone at `key`. */
  private fileRef(key: string, file: string): string | number {
    for (let i = 0; i < this.dirs.length; i++) if (file === join(this.dirs[i]!, `${key}zone`)) return i;
    return file;
  }

  /** The file of the zone at `key` (see `loaded`). */
  private filePath(key: string, ref: string | number): string {
    return typeof ref === 'number' ? join(this.dirs[ref]!, `${key}zone`) : ref;
  }

  /** How many zones came from files. */
  get size(): number {
    return this.loaded.size;
  }

  /**
   * Every zone, for the start: the first bad file, or two files with the same origin, is an
   * error (ZONE_SYNTAX, naming the file and line) and nothing is loaded.
   */
  async loadAll(): Promise<Zone[]> {
    const zones: Zone[] = [];
    const from = new Map<string, string | number>();
    let failed: FerryError | undefined;
    await eachZoneFile(await zoneFilePaths(this.sources), (file, r) => {
      if (failed) return;
      if (r instanceof FerryError) failed = r;
      else if (from.has(r.originKey))
        failed = new FerryError(
          'ZONE_SYNTAX',
          `${file}: zone ${r.origin} is also in ${this.filePath(r.originKey, from.get(r.originKey)!)}`,
        );
      else {
        from.set(r.originKey, this.fileRef(r.originKey, file));
        zones.push(r);
      }
    });
    if (failed) throw failed;
    this.loaded.clear();
    for (const [k, f] of from) this.loaded.set(k, f);
    return zones;
  }

  /**
   * Reads every file again and brings `store` in line (see the file comment). A refused file
   * changes nothing for its zone; a second file with an origin already read is refused.
   */
  async reload(store: ZoneStore): Promise<ZoneReloadResult> {
    const res: ZoneReloadResult = { added: [], replaced: [], removed: [], unchanged: 0, refused: [] };
    // Every file is read before the store changes, so the reload is applied in one turn.
    const results: Array<{ file: string; zone: Zone } | { file: string; error: FerryError }> = [];
    await eachZoneFile(await zoneFilePaths(this.sources), (file, r) =>
      results.push(r instanceof FerryError ? { file, error: r } : { file, zone: r }),
    );
    const seen = new Map<string, string>();
    const refusedFiles = new Set<string>();
    for (const r of results) {
      if ('error' in r) {
        res.refused.push(r);
        refusedFiles.add(r.file);
        continue;
      }
      const key = r.zone.originKey;
      const other = seen.get(key);
      if (other !== undefined) {
        res.refused.push({
          file: r.file,
          error: new FerryError('ZONE_SYNTAX', `${r.file}: zone ${r.zone.origin} is also in ${other}`),
        });
        continue;
      }
      seen.set(key, r.file);
      const current = store.findZoneByKey(key);
      const served = current?.originKey === key ? current : undefined;
      try {
        if (!served) {
          store.add(r.zone);
          res.added.push(r.zone.origin);
        } else if (serialGreater(r.zone.serial, served.serial)) {
          store.add(r.zone);
          res.replaced.push(r.zone.origin);
        } else res.unchanged++;
        this.loaded.set(key, this.fileRef(key, r.file));
      } catch (err) {
        res.refused.push({ file: r.file, error: asFerryError(err, r.file) });
      }
    }
    // A zone whose file is gone goes too; one whose file is still there but refused stays.
    for (const [key, ref] of [...this.loaded]) {
      if (seen.has(key) || refusedFiles.has(this.filePath(key, ref))) continue;
      const z = store.findZoneByKey(key);
      if (z?.originKey === key) {
        store.remove(z.origin);
        res.removed.push(z.origin);
      }
      this.loaded.delete(key);
    }
    return res;
  }
}
