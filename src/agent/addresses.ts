/**
 * Bringing IP addresses up and down on a hosting server. Two implementations:
 * - `LoopbackAddresses`: the sandbox. Every 127.0.0.0/8 address is already local on Linux, so
 *   "adding" one only records it; nothing needs privileges.
 * - `IprouteAddresses`: real servers and network namespaces, through iproute2 (`ip -j addr`).
 */
import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import { FerryError } from '../common/errors.js';

const run = promisify(execFile);

export interface AddressManager {
  add(address: string): Promise<void>;
  remove(address: string): Promise<void>;
  list(): Promise<string[]>;
}

function checkAddress(address: string): 4 | 6 {
  const family = isIP(address);
  if (family === 0) throw new FerryError('ADDRESS_INVALID', `"${address}" is not an IPv4 or IPv6 address`);
  return family as 4 | 6;
}

/** Sandbox addresses on loopback: only 127.0.0.0/8 and ::1 are accepted. */
export class LoopbackAddresses implements AddressManager {
  private readonly up = new Set<string>();

  async add(address: string): Promise<void> {
    const family = checkAddress(address);
    if (!(family === 4 ? address.startsWith('127.') : address === '::1')) {
      throw new FerryError(
        'ADDRESS_NOT_LOOPBACK',
        `the sandbox only uses loopback addresses; ${address} is not one`,
      );
    }
    this.up.add(address);
  }

  async remove(address: string): Promise<void> {
    this.up.delete(address);
  }

  async list(): Promise<string[]> {
    return [...this.up];
  }
}

/**
 * Addresses on a real interface through iproute2. Idempotent: adding a present one is a no-op.
 * An IPv6 address is usable only once duplicate address detection has passed (until then the
 * kernel keeps it tentative and refuses to bind it), so `add` returns only then; when another
 * host on the link has it, `add` removes it again and fails with ADDRESS_DUPLICATE.
 */
export class IprouteAddresses implements AddressManager {
  constructor(
    private readonly device: string,
    private readonly opts: {
      netns?: string;
      ip?: string;
      /** Longest wait for DAD (default 10 s). */ dadTimeoutMs?: number;
    } = {},
  ) {
    if (!/^[A-Za-z0-9_.@-]{1,15}$/.test(device))
      throw new FerryError('ADDRESS_DEVICE', `"${device}" is not an interface name`);
  }

  private async ip(args: string[]): Promise<string> {
    const bin = this.opts.ip ?? 'ip';
    const full = this.opts.netns ? ['-n', this.opts.netns, ...args] : args;
    try {
      const { stdout } = await run(bin, full, { timeout: 10_000 });
      return stdout;
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr?.trim();
      throw new FerryError('ADDRESS_IP_FAILED', `ip ${full.join(' ')} failed: ${stderr || String(err)}`, {
        cause: err,
      });
    }
  }

  private async show(): Promise<Array<{ local: string; tentative?: boolean; dadfailed?: boolean }>> {
    const out = await this.ip(['-j', 'addr', 'show', 'dev', this.device]);
    const parsed = JSON.parse(out || '[]') as Array<{
      addr_info?: Array<{ local: string; tentative?: boolean; dadfailed?: boolean }>;
    }>;
    return parsed.flatMap((l) => l.addr_info ?? []);
  }

  async list(): Promise<string[]> {
    return (await this.show()).map((a) => a.local);
  }

  async add(address: string): Promise<void> {
    const family = checkAddress(address);
    if (!(await this.list()).includes(address))
      await this.ip(['addr', 'add', `${address}/${family === 4 ? 32 : 128}`, 'dev', this.device]);
    if (family === 6) await this.untilDadDone(address);
  }

  /** Wait while `address` is tentative; a failed DAD removes it and throws ADDRESS_DUPLICATE. */
  private async untilDadDone(address: string): Promise<void> {
    const timeoutMs = this.opts.dadTimeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const a = (await this.show()).find((x) => x.local === address);
      if (!a)
        throw new FerryError(
          'ADDRESS_IP_FAILED',
          `${address} went away from ${this.device} while duplicate address detection ran`,
        );
      if (a.dadfailed) {
        await this.ip(['addr', 'del', `${address}/128`, 'dev', this.device]).catch(() => undefined);
        throw new FerryError(
          'ADDRESS_DUPLICATE',
          `another host on the link of ${this.device} has ${address} (duplicate address detection failed); it was not added`,
        );
      }
      if (!a.tentative) return;
      if (Date.now() >= deadline)
        throw new FerryError(
          'ADDRESS_IP_FAILED',
          `${address} on ${this.device} is still tentative (duplicate address detection) after ${timeoutMs} ms`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async remove(address: string): Promise<void> {
    const family = checkAddress(address);
    if (!(await this.list()).includes(address)) return;
    await this.ip(['addr', 'del', `${address}/${family === 4 ? 32 : 128}`, 'dev', this.device]);
  }
}
