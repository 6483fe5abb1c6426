/**
 * The Dovecot side of a mail move against real private Dovecot servers on loopback 127.0.97.0/24:
 * users and passwd-file lines read exactly, installed and removed exactly; a blocked domain's
 * logins fail temporarily and its sessions are kicked while another domain logs in; a proxied
 * domain's logins reach a second server, which checks the password; sessions are counted; a
 * resync shows Maildir files copied in, with their UIDs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  dovecotInstalled,
  imapLogin,
  pop3Login,
  startDovecot,
  type DovecotServer,
} from '../../../test/mail/dovecot.js';
import { Dovecot } from './dovecot.js';

const skip = dovecotInstalled ? false : 'Dovecot (dovecot-imapd, dovecot-pop3d) is not installed';

describe('Dovecot', { skip }, () => {
  let a: DovecotServer;
  let b: DovecotServer;
  let dc: Dovecot;

  before(async () => {
    a = await startDovecot({
      address: '127.0.97.1',
      users: [
        { user: 'alice@moving.test', password: 'alice-pw' },
        { user: 'bob@moving.test', password: 'bob-pw' },
        { user: 'carol@staying.test', password: 'carol-pw' },
      ],
    });
    // The proxy's target: IMAP and POP3 on their standard ports, as a proxy reaches them.
    b = await startDovecot({
      address: '127.0.97.2',
      imapPort: 143,
      pop3Port: 110,
      users: [{ user: 'alice@moving.test', password: 'alice-pw' }],
    });
    dc = new Dovecot({ configFile: a.configFile });
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  test('check passes on a running server and names the problem on a broken config', async () => {
    await dc.check();
    const broken = join(a.dir, 'broken.conf');
    await writeFile(broken, 'passdb {\n');
    await assert.rejects(new Dovecot({ configFile: broken }).check(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'MAIL_NOT_CONFIGURED');
      assert.match(err.message, /broken\.conf/);
      return true;
    });
  });

  test('users lists exactly the domain with Maildirs, uid and gid', async () => {
    const users = await dc.users('moving.test');
    assert.deepEqual(
      users.map((u) => u.user),
      ['alice@moving.test', 'bob@moving.test'],
    );
    assert.equal(users[0]!.maildir, a.maildir('alice@moving.test'));
    assert.equal(users[0]!.home, join(a.mailRoot, 'moving.test', 'alice'));
    assert.equal(users[0]!.uid, a.uid);
    assert.equal(users[0]!.gid, a.gid);
    assert.deepEqual(await dc.users('nobody.test'), []);
    assert.equal(await dc.hasDomain('moving.test'), true);
    assert.equal(await dc.hasDomain('nobody.test'), false);
  });

  test('exportUsers gives the domain lines; installUsers/removeUsers add and remove exactly them', async () => {
    const lines = await dc.exportUsers('moving.test');
    const file = (await readFile(a.usersFile, 'utf8')).split('\n');
    assert.deepEqual(
      lines,
      file.filter((l) => l.includes('@moving.test:')),
    );
    assert.equal(lines.length, 2);

    const target = new Dovecot({ configFile: b.configFile });
    const before = await readFile(b.usersFile, 'utf8');
    const dave = lines[1]!.replace('bob@moving.test', 'dave@other.test');
    await assert.rejects(target.installUsers('other.test', [lines[0]!]), /only the domain's users/);
    await target.installUsers('other.test', [dave]);
    await target.installUsers('other.test', [dave]); // idempotent
    const installed = await readFile(b.usersFile, 'utf8');
    assert.equal(installed, `${before}# ferry: other.test\n${dave}\n# ferry: end other.test\n`);
    assert.deepEqual(
      (await target.users('other.test')).map((u) => u.user),
      ['dave@other.test'],
    );
    await target.removeUsers('other.test');
    assert.equal(await readFile(b.usersFile, 'utf8'), before);
  });

  test('exportUsers refuses a passdb that is not a passwd-file', async () => {
    const conf = join(a.dir, 'etc', 'static.conf');
    await writeFile(
      conf,
      (await readFile(a.configFile, 'utf8')).replace(
        /passdb \{\n {2}driver = passwd-file\n {2}args = [^\n]*\n\}/,
        'passdb {\n  driver = static\n  args = nopassword=y\n}',
      ),
    );
    await assert.rejects(
      new Dovecot({ configFile: conf }).exportUsers('moving.test'),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'MAIL_UNREADABLE');
        assert.match(err.message, /static, not a passwd-file/);
        return true;
      },
    );
  });

  test('users refuses mailboxes that are not Maildirs', async () => {
    const conf = join(a.dir, 'etc', 'mbox.conf');
    await writeFile(
      conf,
      (await readFile(a.configFile, 'utf8')).replace(
        'mail_location = maildir:~/Maildir',
        'mail_location = mbox:~/mail:INBOX=~/inbox',
      ),
    );
    await assert.rejects(
      new Dovecot({ configFile: conf }).users('moving.test'),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'MAIL_UNREADABLE');
        assert.match(err.message, /not a Maildir/);
        return true;
      },
    );
  });

  test('block: the domain gets a temporary failure and its sessions are kicked; others log in', async () => {
    const open = await imapLogin(a, 'alice@moving.test', 'alice-pw');
    assert.match(open.answer, /^t OK/);
    const other = await imapLogin(a, 'carol@staying.test', 'carol-pw');
    assert.equal(await dc.sessions('moving.test'), 1);
    assert.equal(await dc.sessions('staying.test'), 1);

    await dc.setDomainState('moving.test', 'block');
    await dc.setDomainState('moving.test', 'block'); // idempotent
    await open.client.closed; // kicked
    assert.equal(await dc.sessions('moving.test'), 0);
    assert.match((await other.client.imap('NOOP')).trim(), /^t OK/m, 'the other domain keeps its session');

    const refused = await imapLogin(a, 'bob@moving.test', 'bob-pw');
    assert.match(refused.answer, /^t NO \[UNAVAILABLE\]/);
    refused.client.end();
    assert.match(await pop3Login(a, 'alice@moving.test', 'alice-pw'), /^-ERR \[SYS\/TEMP\]/);
    const carol = await imapLogin(a, 'carol@staying.test', 'carol-pw');
    assert.match(carol.answer, /^t OK/);
    carol.client.end();
    other.client.end();
    assert.equal((await readFile(a.configFile, 'utf8')).match(/!include_try/g)?.length, 1);

    await dc.setDomainState('moving.test', 'serve');
    const back = await imapLogin(a, 'alice@moving.test', 'alice-pw');
    assert.match(back.answer, /^t OK/);
    back.client.end();
  });

  test('proxy: logins go to the second server, which checks the password', async () => {
    const inbox = join(b.maildir('alice@moving.test'), 'cur');
    await mkdir(inbox, { recursive: true });
    await writeFile(join(inbox, '1700000000.M1P1.b:2,S'), 'Subject: on the target\r\n\r\nhello\r\n');
    await chownTree(b, join(b.mailRoot, 'moving.test'));

    await dc.setDomainState('moving.test', { proxy: b.address });
    assert.equal(
      (await dc.exportUsers('moving.test')).length,
      2,
      "Ferry's own passdbs are not read as users",
    );
    const proxied = await imapLogin(a, 'alice@moving.test', 'alice-pw');
    assert.match(proxied.answer, /^t OK/);
    const sel = await proxied.client.imap('SELECT INBOX');
    assert.match(sel, /\* 1 EXISTS/);
    const fetched = await proxied.client.imap('FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])');
    assert.match(fetched, /on the target/);
    proxied.client.end();
    assert.match(await pop3Login(a, 'alice@moving.test', 'alice-pw'), /^\+OK/);

    const wrong = await imapLogin(a, 'alice@moving.test', 'not-her-password');
    assert.match(wrong.answer, /^t NO/);
    assert.doesNotMatch(wrong.answer, /UNAVAILABLE/);
    wrong.client.end();
    const carol = await imapLogin(a, 'carol@staying.test', 'carol-pw');
    assert.match(carol.answer, /^t OK/);
    const own = await carol.client.imap('SELECT INBOX');
    assert.match(own, /\* 0 EXISTS/, 'the other domain is served by the first server');
    carol.client.end();
    await dc.setDomainState('moving.test', 'serve');
  });

  test('resync: files copied into a Maildir show over IMAP with the UIDs of their uidlist', async () => {
    const md = a.maildir('bob@moving.test');
    const first = await imapLogin(a, 'bob@moving.test', 'bob-pw');
    assert.match(await first.client.imap('SELECT INBOX'), /\* 0 EXISTS/);
    first.client.end();
    await first.client.closed;
    const names = ['1700000001.M1P1.x', '1700000002.M2P1.x'];
    await writeFile(join(md, 'cur', `${names[0]}:2,S`), 'Subject: one\r\n\r\n1\r\n');
    await writeFile(join(md, 'cur', `${names[1]}:2,F`), 'Subject: two\r\n\r\n2\r\n');
    await writeFile(
      join(md, 'dovecot-uidlist'),
      `3 V1700000000 N43 G0123456789abcdef0123456789abcdef\n41 :${names[0]}\n42 :${names[1]}\n`,
    );
    await chownTree(a, join(a.mailRoot, 'moving.test'));
    await dc.resync('moving.test');
    const c = await imapLogin(a, 'bob@moving.test', 'bob-pw');
    assert.match(await c.client.imap('SELECT INBOX'), /\* 2 EXISTS/);
    const f = await c.client.imap('UID FETCH 1:* (FLAGS)');
    assert.match(f, /UID 41 FLAGS \(\\Seen\)/);
    assert.match(f, /UID 42 FLAGS \(\\Flagged\)/);
    c.client.end();
  });
});

/** Give a folder tree to the server's mail user (the test writes files as root). */
async function chownTree(s: DovecotServer, dir: string): Promise<void> {
  const { readdir, stat } = await import('node:fs/promises');
  await chown(dir, s.uid, s.gid);
  if (!(await stat(dir)).isDirectory()) return;
  for (const e of await readdir(dir)) await chownTree(s, join(dir, e));
}
