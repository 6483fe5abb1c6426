/**
 * Pages of the controller's lists. A cursor is opaque to clients: base64url of the list's name and
 * the key of the last item given, so the next page starts right after that item whatever was
 * added or moved since (no item given twice, none skipped among those present from the start).
 */
import { FerryError } from '../common/errors.js';

/** Items per page when the request names none. */
export const DEFAULT_PAGE_LIMIT = 100;
/** Most items per page. */
export const MAX_PAGE_LIMIT = 1000;

/** Which page of a list: at most `limit` items after `cursor` (the first page without one). */
export interface PageRequest {
  limit?: number;
  cursor?: string;
}

/** One page: its items and, when more follow, the cursor of the next page. */
export interface Page<T> {
  items: T[];
  next?: string;
}

/** The page size of `req`, checked (1 to MAX_PAGE_LIMIT). */
export function pageLimit(req: PageRequest): number {
  const limit = req.limit ?? DEFAULT_PAGE_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_LIMIT)
    throw new FerryError('VALIDATION', `limit must be an integer from 1 to ${MAX_PAGE_LIMIT} (got ${limit})`);
  return limit;
}

/** The cursor after the item with key `key` of list `list`. */
export function encodeCursor(list: string, key: Array<string | number>): string {
  return Buffer.from(JSON.stringify([list, ...key])).toString('base64url');
}

/**
 * The key in `cursor`, checked to be one of list `list` with the given types; CURSOR_INVALID
 * otherwise (garbage, a cursor of another list, a hand-made one).
 */
export function decodeCursor(
  list: string,
  cursor: string,
  types: ReadonlyArray<'string' | 'number'>,
): Array<string | number> {
  const bad = () =>
    new FerryError(
      'CURSOR_INVALID',
      `cursor "${cursor.length > 40 ? `${cursor.slice(0, 40)}…` : cursor}" is not a cursor of the ${list} list; start again without one`,
    );
  let parsed: unknown;
  try {
    if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad();
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (!Array.isArray(parsed) || parsed[0] !== list || parsed.length !== types.length + 1) throw bad();
  const key: unknown[] = parsed.slice(1);
  if (!key.every((v, i) => typeof v === types[i] && (typeof v !== 'number' || Number.isFinite(v))))
    throw bad();
  return key as Array<string | number>;
}
