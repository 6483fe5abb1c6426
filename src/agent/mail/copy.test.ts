/**
 * The Maildir copy between two real private Dovecots over rsync-over-TLS (a real receiver on
 * 127.0.97.11): two users' Maildirs made by Dovecot itself (IMAP APPEND), a first pass, then a
 * message moved to another folder and one flagged on the origin, a second pass: the target's
 * files are the origin's (index files aside), and IMAP on the target shows the same UIDs,
 * UIDVALIDITY and flags in every folder.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chown, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { findBinary } from '../../../test/e2e/helpers.js';
import {
  dovecotInstalled,
  imapLogin,
  startDovecot,
  type DovecotServer,
  type LineClient,
} from '../../../test/mail/dovecot.js';
import { freePort } from '../../../test/ports.js';
import { LoopbackAddresses } from '../addresses.js';
import { HostAgent } from '../agent.js';
import { RsyncReceiver, type SyncEndpoint } from '../rsync.js';
import { MAILDIR_EXCLUDES, ownMaildirs, pushMaildirs, type MailCopyHook } from './copy.js';
import { Dovecot } from './dovecot.js';

const skip = !dovecotInstalled
  ? 'Dovecot (dovecot-imapd, dovecot-pop3d) is not installed'
  : !findBinary('rsync') || !findBinary('openssl')
    ? 'rsync or openssl is not installed'
    : false;
const USERS = [
  { user: 'alice@moving.test', password: 'alice-pw' },
  { user: 'bob@moving.test', password: 'bob-pw' },
];

describe('Maildir copy', { skip }, () => {
  let a: DovecotServer;
  let b: DovecotServer;
  let receiver: RsyncReceiver;
  let state: string;
  let root: string;
  let ep: SyncEndpoint;

  before(async () => {
    a = await startDovecot({ address: '127.0.97.11', users: USERS });
    b = await startDovecot({ address: '127.0.97.12', users: [] });
    root = join(b.dir, 'vmail', 'moving.test');
    await mkdir(root, { recursive: true, mode: 0o755 });
    await chown(join(b.dir, 'vmail'), b.uid, b.gid);
    for (const u of USERS)
      await b.addUser(u.user, u.password, { home: join(root, u.user), mail: 'maildir:~' });
    state = await mkdtemp(join(tmpdir(), 'ferry-maildir-rsync-'));
    receiver = new RsyncReceiver({
      address: '127.0.97.11',
      port: await freePort('127.0.97.11'),
      stateDir: state,
    });
    ep = await receiver.open('moving.test_mail', root);
  });

  after(async () => {
    await receiver?.stop();
    await a?.stop();
    await b?.stop();
    if (state) await rm(state, { recursive: true, force: true });
  });

  const pass = async () => {
    const dirs = USERS.map((u) => ({ user: u.user, maildir: a.maildir(u.user) }));
    const res = await pushMaildirs(dirs, ep);
    await ownMaildirs(root, b.uid, b.gid);
    await new Dovecot({ configFile: b.configFile }).resync('moving.test');
    return res;
  };

  test('a moved and a flagged message arrive as on the origin, UIDs kept', async () => {
    const alice = await imapLogin(a, 'alice@moving.test', 'alice-pw');
    for (let i = 1; i <= 3; i++) await append(alice.client, 'INBOX', i === 3 ? '\\Seen' : '', i);
    assert.match(await alice.client.imap('CREATE Archive'), /^t OK/m);
    const bob = await imapLogin(a, 'bob@moving.test', 'bob-pw');
    await append(bob.client, 'INBOX', '', 9);
    bob.client.end();

    const first = await pass();
    assert.ok(first.files >= 4, `the first pass copied the messages (${first.files} files)`);
    assert.deepEqual(await imapView(b, 'alice@moving.test'), await imapView(a, 'alice@moving.test'));

    assert.match(await alice.client.imap('SELECT INBOX'), /^t OK/m);
    assert.match(await alice.client.imap('UID MOVE 1 Archive'), /^t OK/m);
    assert.match(await alice.client.imap('UID STORE 2 +FLAGS (\\Flagged)'), /^t OK/m);
    alice.client.end();
    await alice.client.closed;

    const second = await pass();
    assert.ok(second.files >= 1, 'the second pass copied the moved message');
    for (const u of USERS) {
      assert.deepEqual(await files(join(root, u.user)), await files(a.maildir(u.user)), `${u.user}'s files`);
      const view = await imapView(a, u.user);
      assert.deepEqual(await imapView(b, u.user), view, `${u.user} over IMAP`);
    }
    const view = await imapView(b, 'alice@moving.test');
    assert.match(view.INBOX!, /UID 2 FLAGS \(\\Flagged\)/);
    assert.match(view.Archive!, /UID 1 FLAGS \(\)/);
    assert.equal((await stat(join(root, 'alice@moving.test', 'cur'))).uid, b.uid);
  });
});

describe("Maildir copy in the agents' sync pass", { skip }, () => {
  const site = 'moving.test';
  let a: DovecotServer;
  let b: DovecotServer;
  let dir: string;
  let root: string;
  const agents: HostAgent[] = [];

  const agent = async (id: string, ip: string, mailCopy?: MailCopyHook) => {
    const h = new HostAgent({
      id,
      dataDir: join(dir, id),
      sharedIps: [ip],
      httpPort: 0,
      addresses: new LoopbackAddresses(),
      web: { kind: 'builtin' },
      rsync: { port: await freePort(ip) },
      ...(mailCopy ? { mailCopy } : {}),
    });
    agents.push(h);
    await h.start();
    return h;
  };

  before(async () => {
    a = await startDovecot({ address: '127.0.97.21', users: USERS });
    b = await startDovecot({ address: '127.0.97.22', users: [] });
    dir = await mkdtemp(join(tmpdir(), 'ferry-mail-agents-'));
    root = join(b.dir, 'vmail', site);
    for (const u of USERS)
      await b.addUser(u.user, u.password, { home: join(root, u.user), mail: 'maildir:~' });
  });

  after(async () => {
    for (const h of agents) await h.stop();
    await a?.stop();
    await b?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('a pass copies the site and its Maildirs, counts both, and the target shows the mail', async () => {
    const alice = await imapLogin(a, 'alice@moving.test', 'alice-pw');
    for (let i = 1; i <= 2; i++) await append(alice.client, 'INBOX', '', i);
    alice.client.end();
    await mkdir(a.maildir('bob@moving.test'), { recursive: true });
    const origin = await agent('origin', '127.0.97.21', {
      mailDirs: async (d) =>
        d === site ? USERS.map((u) => ({ user: u.user, maildir: a.maildir(u.user) })) : [],
      mailRoot: () => Promise.resolve(null),
      afterPass: () => Promise.resolve(),
    });
    const target = await agent('target', '127.0.97.22', {
      mailDirs: () => Promise.resolve([]),
      mailRoot: async (d) => (d === site ? { root, uid: b.uid, gid: b.gid } : null),
      afterPass: (d) => new Dovecot({ configFile: b.configFile }).resync(d),
    });
    const plain = await agent('plain', '127.0.97.23');
    await origin.addSite(site, 'serve');
    await target.addSite(site, 'readonly');
    await plain.addSite(site, 'readonly');
    await writeFile(join(origin.siteDataDir(site), 'index.html'), 'site');

    const res = await origin.syncSite(site, target);
    assert.ok(res.files >= 3, `the site's file and the two messages (${res.files})`);
    assert.equal(await readFile(join(target.siteDataDir(site), 'index.html'), 'utf8'), 'site');
    assert.deepEqual(
      await files(join(root, 'alice@moving.test')),
      await files(a.maildir('alice@moving.test')),
    );
    assert.deepEqual(await imapView(b, 'alice@moving.test'), await imapView(a, 'alice@moving.test'));

    // A receiver that takes no mail: the pass fails rather than leave the mail behind.
    await assert.rejects(origin.syncSite(site, plain), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'MAIL_SYNC');
      return true;
    });
    // No mail here: the plain agent's pass is the site's only.
    assert.equal((await plain.openSyncReceiver(site)).mail, undefined);
  });
});

/** Append message number `n` to `box` over IMAP. */
async function append(c: LineClient, box: string, flags: string, n: number): Promise<void> {
  const msg = `Message-ID: <m${n}@moving.test>\r\nSubject: message ${n}\r\n\r\nbody ${n}\r\n`;
  await c.send(`t APPEND ${box} (${flags}) {${Buffer.byteLength(msg)}}`, (x) => x.startsWith('+'));
  assert.match(await c.send(msg, (x) => /^t (OK|NO|BAD)/m.test(x)), /^t OK/m);
}

/** Each folder's UIDVALIDITY, UIDs and flags (\Recent aside), as IMAP shows them. */
async function imapView(s: DovecotServer, user: string): Promise<Record<string, string>> {
  const { client } = await imapLogin(s, user, USERS.find((u) => u.user === user)!.password);
  const out: Record<string, string> = {};
  for (const box of ['INBOX', 'Archive']) {
    const sel = await client.imap(`SELECT ${box}`);
    if (!/^t OK/m.test(sel)) continue;
    const validity = /UIDVALIDITY (\d+)/.exec(sel)?.[1];
    const fetched = (await client.imap('UID FETCH 1:* (UID FLAGS)'))
      .split('\r\n')
      .filter((l) => l.startsWith('* '))
      .map((l) => l.replace(/ ?\\Recent/, '').replace(/^\* \d+ FETCH /, ''))
      .sort()
      .join('\n');
    out[box] = `UIDVALIDITY ${validity}\n${fetched}`;
  }
  client.end();
  return out;
}

/** Files under a Maildir (relative), Dovecot's index and lock files aside. */
async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  const skipped = MAILDIR_EXCLUDES.map(
    (g) => new RegExp(`^${g.replace(/\./g, '\\.').replace(/\*/g, '.*')}$`),
  );
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (skipped.some((r) => r.test(e.name))) continue;
      if (e.isDirectory()) await walk(join(d, e.name));
      else out.push(relative(dir, join(d, e.name)));
    }
  };
  await walk(dir);
  return out.sort();
}
