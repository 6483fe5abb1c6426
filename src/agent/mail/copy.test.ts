/**
 * The Maildir copy between two real private Dovecots over rsync-over-TLS (a real receiver on
 * 127.0.97.11): two users' Maildirs made by Dovecot itself (IMAP APPEND), a first pass, then a
 * message moved to another folder and one flagged on the origin, a second pass: the target's
 * files are the origin's (index files aside), and IMAP on the target shows the same UIDs,
 * UIDVALIDITY and flags in every folder.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chown, mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
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
import { RsyncReceiver, type SyncEndpoint } from '../rsync.js';
import { MAILDIR_EXCLUDES, ownMaildirs, pushMaildirs } from './copy.js';
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
