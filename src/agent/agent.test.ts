/**
 * The agent core in-process, as the sandbox runs it (loopback 127.0.66.0/24): two agents of one
 * process sync a site through the same steps as over HTTP with the in-process transport (initial
 * then delta, progress, never into a live site, a closed session refused), and an agent restarted
 * on the same memory store comes back with its sites, addresses and redirects; one whose site app
 * runs in a process of its own leaves it serving when kept, and adopts it at its next start.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../common/time.js';
import { SiteProcess } from '../host/index.js';
import { HostAgent, type HostAgentOptions } from './agent.js';
import { LoopbackAddresses } from './addresses.js';
import { MemoryStateStore } from './state.js';
import { InProcessTransport } from './transport.js';

const isCode = (code: string) => (err: Error & { code?: string }) => err.code === code;

function optionsOf(id: string, ip: string, dir: string): HostAgentOptions {
  return {
    id,
    dataDir: join(dir, id),
    sharedIps: [ip],
    httpPort: 0,
    addresses: new LoopbackAddresses(),
    web: { kind: 'builtin' },
    transport: new InProcessTransport(ip),
  };
}

function inProcess(id: string, ip: string, dir: string, state = new MemoryStateStore()): HostAgent {
  return new HostAgent({ ...optionsOf(id, ip, dir), state });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function get(address: string, port: number, host: string): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: address, port, path: '/', agent: false, headers: { host } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('HostAgent in-process', () => {
  let dir: string;
  let a: HostAgent;
  let b: HostAgent;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-agent-core-'));
    a = inProcess('alpha', '127.0.66.1', dir);
    b = inProcess('beta', '127.0.66.2', dir);
    await a.start();
    await b.start();
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('syncs a site to another agent of the process: initial then delta, with progress, and the peer reloads', async () => {
    await a.addSite('copy.example', 'serve');
    await b.addSite('copy.example', 'readonly');
    await appendFile(
      join(a.siteDataDir('copy.example'), 'orders.jsonl'),
      JSON.stringify({ id: 1, key: 'k1', at: new Date().toISOString(), server: 'alpha' }) + '\n',
    );
    await appendFile(join(a.siteDataDir('copy.example'), 'big.bin'), Buffer.alloc(50_000, 7));
    const reports: Array<{ bytes: number; percent: number | null }> = [];
    const first = await a.syncSite('copy.example', b, { onProgress: (p) => reports.push(p) });
    assert.equal(first.files, 2, JSON.stringify(first));
    assert.ok(first.bytes >= 50_000);
    assert.deepEqual(reports.at(-1), { bytes: first.bytes, percent: 100, files: 2 });
    assert.deepEqual(
      (await b.sites.readOrders('copy.example')).map((o) => o.key),
      ['k1'],
      'the peer reloaded the data',
    );
    const delta = await a.syncSite('copy.example', b);
    assert.equal(delta.files, 0, 'nothing changed');
    assert.deepEqual(b.info().syncSessions, ['copy.example'], 'one session for every pass');
  });

  test('never pushes into a site that takes writes on the peer; a closed session is refused', async () => {
    await a.addSite('live.example', 'serve');
    await b.addSite('live.example', 'serve');
    await assert.rejects(a.syncSite('live.example', b), isCode('SYNC_TARGET_LIVE'));
    await b.setSiteMode('live.example', 'readonly');
    const endpoint = await b.openSyncReceiver('live.example');
    await b.setSiteMode('live.example', 'serve');
    await assert.rejects(a.pushSite('live.example', endpoint), isCode('SYNC_SESSION_CLOSED'));
    await assert.rejects(
      a.pushSite('live.example', { ...endpoint, secret: 'x'.repeat(32) }),
      isCode('SYNC_SESSION_CLOSED'),
    );
  });

  test('an in-process agent refuses an rsync session, and a driver that offers no session', async () => {
    await a.addSite('mixed.example', 'serve');
    await assert.rejects(
      a.pushSite('mixed.example', {
        address: '127.0.66.9',
        port: 873,
        module: 'ferry-x',
        user: 'ferry-x',
        secret: 'y'.repeat(32),
      }),
      isCode('SYNC_UNSUPPORTED'),
    );
    const notAPeer = { id: 'elsewhere' } as unknown as HostAgent;
    await assert.rejects(a.syncSite('mixed.example', notAPeer), isCode('SYNC_UNSUPPORTED'));
  });

  test('restarted on the same memory store: sites, added addresses and redirects come back', async () => {
    const state = new MemoryStateStore();
    const one = inProcess('gamma', '127.0.66.3', dir, state);
    const port = await freePort('127.0.66.103');
    await one.start();
    try {
      await one.addSite('kept.example', { proxy: { address: '127.0.66.2', port: 8080 } });
      await one.addAddress('127.0.66.103');
      await one.startRedirect('r', { address: '127.0.66.103', ports: [port], upstream: '127.0.66.3' });
      await one.holdRedirect('r');
      await assert.rejects(
        one.startRedirect('r', { address: '127.0.66.103', ports: [port + 1], upstream: '127.0.66.3' }),
        isCode('REDIRECT_CONFLICT'),
      );
    } finally {
      await one.stop();
    }
    const two = inProcess('gamma', '127.0.66.3', dir, state);
    await two.start();
    try {
      assert.deepEqual(two.listSites(), [
        { domain: 'kept.example', mode: { proxy: { address: '127.0.66.2', port: 8080 } } },
      ]);
      assert.deepEqual(
        two.listRedirects().map((r) => [r.id, r.address, r.holding]),
        [['r', '127.0.66.103', true]],
      );
      await two.stopRedirect('r');
      // The address came back as this agent's own: it may take it down.
      await two.removeAddress('127.0.66.103');
    } finally {
      await two.stop();
    }
    const three = inProcess('gamma', '127.0.66.3', dir, new MemoryStateStore());
    await three.start();
    try {
      assert.deepEqual(three.listSites(), [], 'a fresh store has nothing to restore');
    } finally {
      await three.stop();
    }
  });

  test('with its site app in a process of its own: kept at stop, the site serves on; the next start adopts it as it is; a stop for good ends it', async () => {
    const opts = { ...optionsOf('delta', '127.0.66.4', dir), siteApp: 'process' as const };
    const one = new HostAgent({ ...opts, state: new MemoryStateStore() });
    await one.start();
    let pid: number | undefined;
    try {
      assert.ok(one.sites instanceof SiteProcess);
      pid = one.sites.pid;
      assert.ok(pid !== undefined && pid !== process.pid);
      await one.addSite('app.example', 'readonly');
      assert.equal((await get('127.0.66.4', one.sites.port, 'app.example')).status, 200);
    } finally {
      await one.stop({ keepSiteApp: true });
    }
    assert.equal(
      (await get('127.0.66.4', one.sites.port, 'app.example')).status,
      200,
      'served with no agent running',
    );
    // A fresh store: what the adopted app serves now is what the agent restores.
    const two = new HostAgent({ ...opts, state: new MemoryStateStore() });
    await two.start();
    try {
      assert.ok(two.sites instanceof SiteProcess);
      assert.equal(two.sites.adopted, true);
      assert.equal(two.sites.pid, pid, 'the same process');
      assert.deepEqual(two.listSites(), [{ domain: 'app.example', mode: 'readonly' }]);
      assert.equal((await two.siteStats('app.example')).requests, 2);
    } finally {
      await two.stop();
    }
    assert.ok(await waitFor(() => !alive(pid!), 5000), 'stopped for good, the process exited');
  });
});

async function freePort(address: string): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, address, () => r()));
  const p = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}
