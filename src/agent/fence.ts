/**
 * Fencing: every command a leading controller sends carries its fencing token (a decimal integer
 * that grows at every change of leader) in the `x-ferry-fence` header. The agent keeps the highest
 * token it has seen, on disk before it acts on a higher one, and refuses a lower one with `FENCED`,
 * so a controller that lost the lead (paused, cut off) cannot act on the server after its successor
 * did. A command without the header is accepted: a single controller needs no fencing.
 */
import { open, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { FerryError } from '../common/errors.js';

/** The HTTP header carrying the fencing token. */
export const FENCE_HEADER = 'x-ferry-fence';

/** The largest token accepted: a PostgreSQL bigint. */
const MAX_TOKEN = 2n ** 63n - 1n;

/** A fencing token from a header's text, or BAD_REQUEST. */
export function parseFenceToken(text: string): bigint {
  if (!/^[0-9]{1,19}$/.test(text) || BigInt(text) > MAX_TOKEN)
    throw new FerryError(
      'BAD_REQUEST',
      `${FENCE_HEADER} must be a fencing token, a decimal integer (0 to 2^63-1); got "${text.slice(0, 40)}"`,
    );
  return BigInt(text);
}

/** The highest fencing token an agent has seen, kept in a file (`<dataDir>/fence.json`) or, without one, in memory. */
export class FenceKeeper {
  private top: bigint | undefined;
  private chain: Promise<unknown> = Promise.resolve();

  /** `owner` names the agent in FENCED messages. */
  constructor(
    readonly owner: string,
    readonly path?: string,
  ) {}

  /** The highest token seen, undefined when none was ever seen. */
  get highest(): bigint | undefined {
    return this.top;
  }

  /** Read the saved token (none saved: none seen). An unreadable file is an error, never a silent reset. */
  async load(): Promise<void> {
    if (!this.path) return;
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    let token: unknown;
    try {
      token = (JSON.parse(text) as { token?: unknown }).token;
    } catch {
      token = undefined;
    }
    if (typeof token !== 'string')
      throw new FerryError(
        'AGENT_OPTIONS',
        `${this.path} is not a fencing token file ({"token": "<decimal>"}); restore it or remove it only if no other controller than the current leader ever drove this agent`,
      );
    this.top = parseFenceToken(token);
  }

  /**
   * Admit a command carrying `token`: refused with FENCED when lower than the highest seen; a
   * higher one is saved (written, synced, renamed over the old file) before this resolves.
   */
  async admit(token: bigint): Promise<void> {
    if (this.top !== undefined && token === this.top) return;
    this.refuse(token);
    const step = this.chain.then(async () => {
      this.refuse(token);
      if (this.top !== undefined && token <= this.top) return;
      if (this.path) await this.save(token);
      this.top = token;
    });
    this.chain = step.catch(() => undefined);
    await step;
  }

  private refuse(token: bigint): void {
    if (this.top !== undefined && token < this.top)
      throw new FerryError(
        'FENCED',
        `agent ${this.owner} refuses fencing token ${token} < ${this.top}, the newest it has seen: the controller that sent it is no longer the leader`,
      );
  }

  private async save(token: bigint): Promise<void> {
    const path = this.path!;
    const tmp = `${path}.tmp`;
    const f = await open(tmp, 'w', 0o600);
    try {
      await f.writeFile(JSON.stringify({ token: token.toString() }) + '\n');
      await f.sync();
    } finally {
      await f.close();
    }
    await rename(tmp, path);
    // The rename itself is durable once the folder is synced.
    const d = await open(dirname(path), 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
}
