/**
 * Directory sync for site data, in the manner of `rsync -a [--delete]`: a file is copied when its
 * size or modification time differs (or, with `checksum`, its content), through a temporary file
 * in the destination folder that is fsync'd, given the source's mtime and renamed over the old
 * one, so a reader never sees a half-written file. Only regular files and folders are synced.
 * Modes are kept; owners too when the process runs as root (as `rsync -a` does), so an
 * application that writes into its folder as its own user still can on the copy.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  chmod,
  chown,
  copyFile,
  lstat,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  utimes,
  type FileHandle,
} from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { FerryError } from '../common/errors.js';

export interface SyncOptions {
  /** Remove files and folders of `dst` that `src` no longer has. Default false. */
  delete?: boolean;
  /** Compare contents (SHA-256) when size and mtime agree. Default false. */
  checksum?: boolean;
  /**
   * Hears how far the sync is, after each file (copied or found current) and once at the end.
   * With it, the source is walked first to total its size, one lstat per entry, so `percent`
   * (of the source's bytes examined so far) is known; it stays within 0..100 if the source changes
   * meanwhile. Progress is per file: a large file reports once it is copied.
   */
  onProgress?: (p: SyncDirectoryProgress) => void;
}

export interface SyncDirectoryProgress {
  /** Bytes copied so far; at the end, the result's `bytes`. */
  bytes: number;
  /** Files copied so far. */
  files: number;
  /** Share of the source's bytes examined (copied or found current), 0..100; 100 at the end. */
  percent: number;
}

export interface SyncResult {
  /** Files copied. */
  files: number;
  /** Bytes copied. */
  bytes: number;
  /** Files and folders removed from `dst` (with `delete`). */
  deleted: number;
}

const TEMP_PREFIX = '.ferry-sync-';
/** mtimes survive utimes() to about a microsecond; closer than this counts as equal. */
const MTIME_SLACK_MS = 0.01;

/** Make `dst` a copy of `src`, copying only what changed. `dst` is created when missing. */
export async function syncDirectory(src: string, dst: string, opts: SyncOptions = {}): Promise<SyncResult> {
  const result: SyncResult = { files: 0, bytes: 0, deleted: 0 };
  try {
    const st = await lstat(src);
    if (!st.isDirectory()) throw new Error('not a directory');
  } catch (err) {
    throw new FerryError('SYNC_SOURCE', `cannot sync from ${src}: ${(err as Error).message}`, { cause: err });
  }
  let tick: ((examined: number) => void) | undefined;
  const report = opts.onProgress;
  if (report) {
    const total = await sourceBytes(src);
    let examined = 0;
    tick = (n) => {
      examined += n;
      const percent = total > 0 ? Math.min(100, Math.floor((examined * 100) / total)) : 0;
      report({ bytes: result.bytes, files: result.files, percent });
    };
  }
  await syncDir(src, dst, opts, result, tick);
  report?.({ bytes: result.bytes, files: result.files, percent: 100 });
  return result;
}

/**
 * Make `paths` (relative to both folders) in `dst` what they are in `src`: a file is synced as
 * `syncDirectory` would, a folder synced whole (with deletions), a path `src` no longer has
 * removed from `dst`. The delta of a tracked pass (only what changed since the last one).
 */
export async function syncPaths(src: string, dst: string, paths: string[]): Promise<SyncResult> {
  const result: SyncResult = { files: 0, bytes: 0, deleted: 0 };
  const root = resolve(dst);
  for (const p of paths) {
    const to = resolve(root, p);
    if (!to.startsWith(root + sep)) throw new FerryError('SYNC_SOURCE', `path ${p} is outside ${src}`);
    const from = join(src, p);
    const s = await lstat(from).catch(() => undefined);
    if (!s || (!s.isFile() && !s.isDirectory())) {
      if (await lstat(to).catch(() => undefined)) {
        await rm(to, { recursive: true, force: true });
        result.deleted += 1;
      }
    } else if (s.isDirectory()) {
      const d = await lstat(to).catch(() => undefined);
      if (d && !d.isDirectory()) await rm(to, { force: true });
      await syncDir(from, to, { delete: true }, result);
      await keepOwnerAndMode(to, s);
    } else {
      await mkdir(dirname(to), { recursive: true });
      const { copied } = await syncFile(from, to, dirname(to), {});
      if (copied !== null) {
        result.files += 1;
        result.bytes += copied;
      }
    }
  }
  return result;
}

/** Total size of the regular files under `dir` (what a sync of it examines). */
async function sourceBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith(TEMP_PREFIX)) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) total += await sourceBytes(p);
    else if (e.isFile()) total += (await lstat(p).catch(() => undefined))?.size ?? 0;
  }
  return total;
}

async function syncDir(
  src: string,
  dst: string,
  opts: SyncOptions,
  result: SyncResult,
  tick?: (examined: number) => void,
): Promise<void> {
  await mkdir(dst, { recursive: true });
  const entries = await readdir(src, { withFileTypes: true });
  const wanted = new Set<string>();
  let changed = false;
  for (const e of entries) {
    if (e.name.startsWith(TEMP_PREFIX)) continue;
    const from = join(src, e.name);
    const to = join(dst, e.name);
    if (e.isDirectory()) {
      wanted.add(e.name);
      const d = await lstat(to).catch(() => undefined);
      if (d && !d.isDirectory()) await rm(to, { force: true });
      await syncDir(from, to, opts, result, tick);
      await keepOwnerAndMode(to, await lstat(from));
    } else if (e.isFile()) {
      wanted.add(e.name);
      const { size, copied } = await syncFile(from, to, dst, opts);
      if (copied !== null) {
        result.files += 1;
        result.bytes += copied;
        changed = true;
      }
      tick?.(size);
    }
  }
  if (opts.delete) {
    for (const e of await readdir(dst, { withFileTypes: true })) {
      if (wanted.has(e.name)) continue;
      await rm(join(dst, e.name), { recursive: true, force: true });
      result.deleted += 1;
      changed = true;
    }
  }
  if (changed) await fsyncDir(dst);
}

/**
 * Copy one file when it differs: `copied` is the bytes copied, or null when it was already current;
 * `size` the source's size as examined.
 */
async function syncFile(
  from: string,
  to: string,
  dstDir: string,
  opts: SyncOptions,
): Promise<{ size: number; copied: number | null }> {
  // The source's stat is taken before the copy: if the file grows meanwhile, the copy is stamped
  // with the older mtime and the next pass sees the difference.
  const s = await lstat(from);
  const d = await lstat(to).catch(() => undefined);
  if (d?.isFile() && d.size === s.size && Math.abs(d.mtimeMs - s.mtimeMs) < MTIME_SLACK_MS) {
    if (!opts.checksum || (await sha256(from)) === (await sha256(to))) return { size: s.size, copied: null };
  }
  if (d && !d.isFile()) await rm(to, { recursive: true, force: true });
  const tmp = join(dstDir, `${TEMP_PREFIX}${randomBytes(6).toString('hex')}`);
  try {
    await copyFile(from, tmp);
    let fh: FileHandle | undefined;
    try {
      fh = await open(tmp, 'r+');
      await fh.sync();
    } finally {
      await fh?.close();
    }
    await utimes(tmp, s.atime, s.mtimeMs / 1000);
    await keepOwnerAndMode(tmp, s);
    await rename(tmp, to);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new FerryError('SYNC_COPY', `cannot copy ${from} to ${to}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const copied = await lstat(to);
  return { size: s.size, copied: copied.size };
}

const AS_ROOT = process.getuid?.() === 0;

/** Give `path` the mode of `like`, and its owner when running as root. */
async function keepOwnerAndMode(path: string, like: Stats): Promise<void> {
  if (AS_ROOT) await chown(path, like.uid, like.gid);
  await chmod(path, like.mode & 0o7777);
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function sha256(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(file)
      .on('data', (c) => hash.update(c))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject);
  });
}
