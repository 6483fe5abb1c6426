/**
 * Fencing on a real agent (`startAgent`, its HTTP API on 127.0.68.1): a higher token is accepted
 * and kept in the data folder across a restart, a lower one is refused with FENCED naming both
 * tokens before the command acts, a command without a token is accepted, a malformed one is a 400.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LoopbackAddresses } from './addresses.js';
import { HttpHostDriver } from './client.js';
import { startAgent, type RunningAgent } from './daemon.js';
import { FENCE_HEADER, FenceKeeper } from './fence.js';
import { FerryError, isFerryError } from '../common/errors.js';
import { freePort } from '../../test/ports.js';

const TOKEN = 'fence-test-token-0123456789';
const IP = '127.0.68.1';
let dir: string;
let running: RunningAgent | undefined;

async function start(): Promise<RunningAgent> {
  running = await startAgent({
    id: 'fenced-host',
    dataDir: dir,
    sharedIps: [IP],
    httpPort: 0,
    addresses: new LoopbackAddresses(),
    web: { kind: 'builtin' },
    siteApp: 'in-process',
    rsync: { port: await freePort(IP) },
    listen: { address: IP, port: 0 },
    token: TOKEN,
  });
  return running;
}

function driver(url: string, token: bigint | undefined, fenced?: (e: FerryError) => void): HttpHostDriver {
  return new HttpHostDriver({
    id: 'fenced-host',
    url,
    token: TOKEN,
    timeoutMs: 5000,
    attempts: 1,
    fence: () => token,
    ...(fenced ? { onFenced: fenced } : {}),
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-fence-'));
});

after(async () => {
  await running?.close();
  await rm(dir, { recursive: true, force: true });
});

test('a higher token is saved before acting and survives a restart; a lower one is refused with FENCED, acting on nothing', async () => {
  let agent = await start();
  const none = driver(agent.url, undefined);
  await none.addSite('a.example', 'serve');
  assert.equal((await none.info()).fence, null, 'no token seen yet');

  const leader4 = driver(agent.url, 4n);
  await leader4.setSiteMode('a.example', 'readonly');
  assert.deepEqual(JSON.parse(await readFile(join(dir, 'fence.json'), 'utf8')), { token: '4' });

  const leader5 = driver(agent.url, 5n);
  await leader5.setSiteMode('a.example', 'serve');
  assert.equal((await none.info()).fence, '5');

  // The old leader wakes up: its command is refused and the site keeps the mode the new one set.
  const seen: FerryError[] = [];
  const old = driver(agent.url, 4n, (e) => seen.push(e));
  await assert.rejects(old.setSiteMode('a.example', 'hold'), (err: unknown) => {
    assert.ok(isFerryError(err, 'FENCED'), String(err));
    assert.match(err.message, /fencing token 4 < 5/);
    return true;
  });
  assert.equal(seen.length, 1, 'onFenced was told');
  assert.equal(await agent.agent.siteMode('a.example'), 'serve');
  // A controller without fencing is still heard.
  await none.setSiteMode('a.example', 'readonly');
  for (const d of [none, leader4, leader5, old]) d.close();

  // Restart: the agent remembers 5.
  await agent.close({ keepRedirects: false, keepSiteApp: false });
  running = undefined;
  agent = await start();
  const again = driver(agent.url, 4n);
  await assert.rejects(again.info(), (err: unknown) => isFerryError(err, 'FENCED'));
  const next = driver(agent.url, 6n);
  assert.equal((await next.info()).fence, '6');
  assert.deepEqual(JSON.parse(await readFile(join(dir, 'fence.json'), 'utf8')), { token: '6' });
  again.close();
  next.close();
});

test('a malformed token is a 400 naming the header; it changes nothing', async () => {
  const agent = running ?? (await start());
  for (const bad of ['-1', 'abc', '1.5', '99999999999999999999', '']) {
    const res = await fetch(`${agent.url}/v1/info`, {
      headers: { authorization: `Bearer ${TOKEN}`, [FENCE_HEADER]: bad },
    });
    assert.equal(res.status, 400, bad);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'BAD_REQUEST');
    assert.match(body.error.message, /x-ferry-fence/);
  }
  // Without the bearer token the fence is not even looked at (no unauthenticated write to the file).
  const res = await fetch(`${agent.url}/v1/info`, { headers: { [FENCE_HEADER]: '999' } });
  assert.equal(res.status, 401);
  assert.deepEqual(JSON.parse(await readFile(join(dir, 'fence.json'), 'utf8')), { token: '6' });
});

test('a damaged token file is an error, never a forgotten token; concurrent higher tokens settle on the highest', async () => {
  const d = await mkdtemp(join(tmpdir(), 'ferry-fence-bad-'));
  try {
    await writeFile(join(d, 'fence.json'), '{"token": 7}');
    await assert.rejects(new FenceKeeper('x', join(d, 'fence.json')).load(), /not a fencing token file/);
    // Concurrent higher tokens settle on the highest.
    const k = new FenceKeeper('x', join(d, 'fresh.json'));
    await Promise.all([3n, 9n, 5n, 8n].map((t) => k.admit(t).catch(() => undefined)));
    assert.equal(k.highest, 9n);
    assert.deepEqual(JSON.parse(await readFile(join(d, 'fresh.json'), 'utf8')), { token: '9' });
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});
