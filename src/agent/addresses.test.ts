/**
 * `IprouteAddresses` with IPv6 on a real link: two network namespaces joined by a veth pair. An
 * added address can be bound as soon as `add` returns (duplicate address detection has passed),
 * and an address another host on the link already has is refused with ADDRESS_DUPLICATE and not
 * left behind. Needs root and iproute2; skipped, with the reason, without them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { IprouteAddresses } from './addresses.js';

function skipReason(): string | false {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
    return false;
  } catch {
    return 'iproute2 (ip netns) is not available';
  }
}

const id = randomBytes(3).toString('hex');
const ns = { a: `ferry-ada-${id}`, b: `ferry-adb-${id}` };

describe('IprouteAddresses and IPv6 duplicate address detection', { skip: skipReason() }, () => {
  before(() => {
    const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      for (const n of Object.values(ns)) ip('netns', 'add', n);
      ip('link', 'add', `fa${id}`, 'netns', ns.a, 'type', 'veth', 'peer', 'name', `fb${id}`, 'netns', ns.b);
      ip('-n', ns.a, 'link', 'set', `fa${id}`, 'name', 'eth0');
      ip('-n', ns.b, 'link', 'set', `fb${id}`, 'name', 'eth0');
      for (const n of Object.values(ns)) ip('-n', n, 'link', 'set', 'eth0', 'up');
      // The other host's address, up at once.
      ip('-n', ns.a, 'addr', 'add', '2001:db8:77::1/64', 'dev', 'eth0', 'nodad');
    } catch (err) {
      for (const n of Object.values(ns)) spawnSync('ip', ['netns', 'del', n]);
      throw err;
    }
  });

  after(() => {
    for (const n of Object.values(ns)) spawnSync('ip', ['netns', 'del', n]);
  });

  test('an added IPv6 address is usable as soon as add returns', async () => {
    const addresses = new IprouteAddresses('eth0', { netns: ns.b });
    await addresses.add('2001:db8:77::2');
    // Bound right away, in the namespace: a tentative address would fail with EADDRNOTAVAIL.
    const bind = spawnSync(
      'ip',
      [
        'netns',
        'exec',
        ns.b,
        process.execPath,
        '-e',
        "const s = require('node:net').createServer(); s.on('error', (e) => { console.error(e.code); process.exit(1); }); s.listen(8080, '2001:db8:77::2', () => s.close());",
      ],
      { encoding: 'utf8' },
    );
    assert.equal(bind.status, 0, `bind right after add: ${bind.stderr}`);
    assert.ok((await addresses.list()).includes('2001:db8:77::2'));
    await addresses.remove('2001:db8:77::2');
    assert.ok(!(await addresses.list()).includes('2001:db8:77::2'));
  });

  test('an address another host on the link has is refused, and not left on the interface', async () => {
    const addresses = new IprouteAddresses('eth0', { netns: ns.b });
    await assert.rejects(
      addresses.add('2001:db8:77::1'),
      (err: Error & { code?: string }) =>
        err.code === 'ADDRESS_DUPLICATE' && /2001:db8:77::1/.test(err.message),
    );
    assert.ok(!(await addresses.list()).includes('2001:db8:77::1'));
  });
});
