/**
 * A site's order log: `orders.jsonl` in the site's data folder, one JSON object a line, appended
 * and fsync'd before the write is acknowledged. The file is the only truth: the next id is read
 * back from it whenever it changed behind our back (a sync copied a newer file in), so nothing
 * that matters lives only in memory.
 */
import { open, readFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../common/errors.js';

/** One stored order. `data` holds the request's fields other than `key`, when there were any. */
export interface Order {
  id: number;
  key: string;
  at: string;
  server: string;
  data?: Record<string, unknown>;
}

/** File name of the order log inside a site's data folder. */
export const ORDERS_FILE = 'orders.jsonl';

/** The append-only order log of one site. Appends are serialized; reads see every acknowledged append. */
export class OrderLog {
  readonly file: string;
  private nextId = 1;
  /** Size of the file as we last read or wrote it; a different size on disk means it changed under us. */
  private knownSize = -1;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(dir: string) {
    this.file = join(dir, ORDERS_FILE);
  }

  /** Re-read the file (after a sync replaced it); cuts a torn last line left by a crash mid-append. */
  reload(): Promise<void> {
    return this.serialize(() => this.load());
  }

  /** Append an order and fsync it; resolves with the stored order once it is durable. */
  append(key: string, server: string, data?: Record<string, unknown>): Promise<Order> {
    return this.serialize(async () => {
      const size = await fileSize(this.file);
      if (size !== this.knownSize) await this.load();
      const order: Order = { id: this.nextId, key, at: new Date().toISOString(), server };
      if (data && Object.keys(data).length > 0) order.data = data;
      const line = Buffer.from(JSON.stringify(order) + '\n');
      const fh = await open(this.file, 'a');
      try {
        await fh.write(line);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      this.nextId += 1;
      this.knownSize += line.length;
      return order;
    });
  }

  /** Every order on disk, in file order. */
  async read(): Promise<Order[]> {
    await this.chain.catch(() => undefined);
    return parseOrders(await readText(this.file)).orders;
  }

  /** Resolves once every append started so far has finished. */
  async settled(): Promise<void> {
    await this.chain.catch(() => undefined);
  }

  private async load(): Promise<void> {
    const text = await readText(this.file);
    const { orders, validBytes } = parseOrders(text);
    const total = Buffer.byteLength(text);
    if (validBytes < total) await truncate(this.file, validBytes);
    this.nextId = orders.reduce((max, o) => Math.max(max, o.id), 0) + 1;
    this.knownSize = validBytes;
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw new FerryError('SITE_DATA_READ', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
}

/** Parse complete lines; a last line without its newline is torn and not counted. */
function parseOrders(text: string): { orders: Order[]; validBytes: number } {
  const orders: Order[] = [];
  let validBytes = 0;
  let start = 0;
  for (;;) {
    const nl = text.indexOf('\n', start);
    if (nl < 0) break;
    const line = text.slice(start, nl);
    start = nl + 1;
    validBytes += Buffer.byteLength(line) + 1;
    if (!line.trim()) continue;
    try {
      const o = JSON.parse(line) as Order;
      if (typeof o.id === 'number' && typeof o.key === 'string') orders.push(o);
    } catch {
      // a corrupt complete line is kept on disk but not served
    }
  }
  return { orders, validBytes };
}
