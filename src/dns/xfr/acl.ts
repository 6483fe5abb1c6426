/**
 * Access lists for zone transfers and dynamic updates: an entry allows a request when its source
 * address is in the entry's prefix (if it names one) and the request is signed with the entry's
 * TSIG key (if it names one). An empty list allows nothing: transfers and updates are refused
 * unless the config allows them.
 */
import net from 'node:net';
import { FerryError } from '../../common/errors.js';
import { nameKey, parseName } from '../wire/name.js';

/** One ACL entry: an address or prefix (`192.0.2.1`, `198.51.100.0/24`, `2001:db8::/32`), a key name, or both. */
export interface AclEntry {
  address?: string;
  key?: string;
}

/** A compiled ACL. */
export class Acl {
  private readonly entries: Array<{ block?: net.BlockList; key?: string }>;

  constructor(entries: readonly AclEntry[] = []) {
    this.entries = entries.map((e) => {
      const out: { block?: net.BlockList; key?: string } = {};
      if (e.address !== undefined) {
        const [addr, len] = e.address.split('/');
        const family = net.isIP(addr ?? '');
        if (family === 0)
          throw new FerryError(
            'DNS_BAD_OPTIONS',
            `ACL address ${JSON.stringify(e.address)} must be an IP address or prefix`,
          );
        const max = family === 4 ? 32 : 128;
        const prefix = len === undefined ? max : Number(len);
        if (!Number.isInteger(prefix) || prefix < 0 || prefix > max)
          throw new FerryError(
            'DNS_BAD_OPTIONS',
            `ACL prefix length in ${JSON.stringify(e.address)} must be 0-${max}`,
          );
        out.block = new net.BlockList();
        out.block.addSubnet(addr!, prefix, family === 4 ? 'ipv4' : 'ipv6');
      }
      if (e.key !== undefined) out.key = nameKey(parseName(e.key));
      if (!out.block && !out.key)
        throw new FerryError('DNS_BAD_OPTIONS', 'an ACL entry needs an address, a key, or both');
      return out;
    });
  }

  get empty(): boolean {
    return this.entries.length === 0;
  }

  /** True when a request from `address`, signed with `keyName` (verified) or unsigned, is allowed. */
  allows(remote: string, keyName: string | undefined): boolean {
    // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
    const address = remote.startsWith('::ffff:') && net.isIPv4(remote.slice(7)) ? remote.slice(7) : remote;
    const family = net.isIP(address) === 6 ? 'ipv6' : 'ipv4';
    return this.entries.some(
      (e) =>
        (!e.block || e.block.check(address, family)) &&
        (!e.key || (keyName !== undefined && e.key === nameKey(keyName))),
    );
  }
}
