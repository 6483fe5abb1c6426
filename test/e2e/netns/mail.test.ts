/**
 * The mail harness on its own: Postfix and Dovecot in two hosting servers (mail.ts). On the
 * origin, a domain with three mailboxes and an alias plus a domain that stays; on the target, a
 * domain of its own. Asserted: a message sent with swaks from the client namespace through the
 * origin's address (port 25 and 587) lands once in the recipient's Maildir (the alias's in both of
 * its mailboxes), IMAP logs in and sees it (curl's IMAP), POP3 too; the other domain and the
 * target's own likewise; a wrong password is refused; nothing is left behind. Root only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { NET, netnsSkipReason, type Topology } from './topology.js';
import { withServers } from './server-ns.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  MAIL_TEST_BINARIES,
  deliveryProblems,
  imapProblems,
  mailLoadArgs,
  messageIdsUnder,
  movedMail,
  startMail,
  startMailLoad,
  staysMail,
  storedMessages,
  targetMail,
} from './mail.js';
import { unboundConf } from './services.js';

const ROOT = process.cwd();
const skip = netnsSkipReason({
  iproute2: ['ip'],
  'util-linux': ['nsenter'],
  curl: ['curl'],
  ...MAIL_TEST_BINARIES,
});
if (skip) console.log(`# skipping the mail harness test: ${skip}`);

function inClient(topo: Topology, argv: string[]): { code: number; out: string } {
  try {
    const out = execFileSync('ip', ['netns', 'exec', topo.ns.client, ...argv], {
      encoding: 'utf8',
      timeout: 30_000,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return { code: 0, out };
  } catch (err) {
    const e = err as { status?: number; stdout?: string; stderr?: string };
    return { code: e.status ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

function send(topo: Topology, address: string, port: number, to: string, id: string): string {
  const r = inClient(topo, [
    'swaks',
    '--server',
    address,
    '--port',
    String(port),
    '--from',
    'harness@client.test',
    '--to',
    to,
    '--header',
    `Message-Id: <${id}>`,
    '--timeout',
    '20',
  ]);
  assert.equal(r.code, 0, `swaks to ${to} via ${address}:${port}: ${r.out}`);
  assert.match(r.out, /^<-\s+250 .*queued/m, `${to} accepted with 250`);
  return r.out;
}

/** Message-IDs IMAP shows in `user`'s INBOX (curl: SEARCH, then each message's header). */
function imapIds(topo: Topology, address: string, user: string, password: string): string[] {
  const search = inClient(topo, [
    'curl',
    '-sS',
    '--user',
    `${user}:${password}`,
    `imap://${address}/INBOX`,
    '-X',
    'UID SEARCH ALL',
  ]);
  assert.equal(search.code, 0, `IMAP login and search as ${user}: ${search.out}`);
  const uids = (/\* SEARCH(.*)/.exec(search.out)?.[1] ?? '').trim().split(/\s+/).filter(Boolean);
  return uids.map((uid) => {
    const f = inClient(topo, [
      'curl',
      '-sS',
      '--user',
      `${user}:${password}`,
      `imap://${address}/INBOX;UID=${uid};SECTION=HEADER.FIELDS%20(MESSAGE-ID)`,
    ]);
    assert.equal(f.code, 0, `IMAP fetch: ${f.out}`);
    return /<([^>]+)>/.exec(f.out)?.[1] ?? '';
  });
}

test(
  'Postfix and Dovecot in hosting servers: swaks delivers to the Maildirs, IMAP and POP3 see the mail, for each domain',
  { skip: skip ?? false, timeout: 180_000 },
  async () => {
    await withServers('mail-harness', {}, async ({ topo, open }) => {
      const origin = await open('origin');
      const target = await open('target');
      const moved = movedMail('notes.example');
      const stays = staysMail();
      const own = targetMail();
      const [om, tm] = await Promise.all([
        startMail(origin, {
          address: NET.origin,
          hostname: 'mail.notes.example',
          domains: [moved, stays],
          vmailId: 5000,
        }),
        startMail(target, {
          address: NET.target,
          hostname: 'mail.target.example',
          domains: [own],
          vmailId: 5001,
        }),
      ]);
      assert.deepEqual(om.agentArgs, [
        '--postfix-config',
        '/etc/postfix',
        '--dovecot-config',
        '/etc/dovecot/dovecot.conf',
      ]);

      const sentAt = Date.now();
      send(topo, NET.origin, 25, `a@${moved.domain}`, `h1.${sentAt}@harness.test`);
      send(topo, NET.origin, 587, `team@${moved.domain}`, `h2.${sentAt}@harness.test`);
      send(topo, NET.origin, 25, `x@${stays.domain}`, `h3.${sentAt}@harness.test`);
      send(topo, NET.target, 25, `t@${own.domain}`, `h4.${sentAt}@harness.test`);

      // Delivered: each in its Maildir, once; the alias's in both of its mailboxes.
      const expect = [
        [origin, moved.domain, `h1.${sentAt}@harness.test`, [`a@${moved.domain}`]],
        [origin, moved.domain, `h2.${sentAt}@harness.test`, [`a@${moved.domain}`, `b@${moved.domain}`]],
        [origin, stays.domain, `h3.${sentAt}@harness.test`, [`x@${stays.domain}`]],
        [target, own.domain, `h4.${sentAt}@harness.test`, [`t@${own.domain}`]],
      ] as const;
      for (const [srv, domain, id, boxes] of expect) {
        let found: string[] = [];
        const deadline = Date.now() + 20_000;
        while (Date.now() < deadline) {
          found = (await storedMessages(srv, domain)).filter((m) => m.messageId === id).map((m) => m.mailbox);
          if (found.length >= boxes.length) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        assert.deepEqual(found.sort(), [...boxes].sort(), `${id} in ${boxes.join(', ')} once each`);
      }
      // The Maildirs belong to each server's vmail (different ids: a move must map owners).
      const owner = (
        await origin.exec('stat', ['-c', '%u', `/var/mail/vhosts/${moved.domain}/a/new`])
      ).stdout.trim();
      assert.equal(owner, '5000');
      assert.ok(
        !(await target.exists(`/var/mail/vhosts/${moved.domain}`)),
        'the target has no mail of the moved domain',
      );

      // IMAP (and POP3) log in and see it.
      assert.ok(
        imapIds(topo, NET.origin, `a@${moved.domain}`, moved.users.a!).includes(`h1.${sentAt}@harness.test`),
      );
      assert.ok(
        imapIds(topo, NET.origin, `b@${moved.domain}`, moved.users.b!).includes(`h2.${sentAt}@harness.test`),
      );
      assert.ok(
        imapIds(topo, NET.origin, `x@${stays.domain}`, stays.users.x!).includes(`h3.${sentAt}@harness.test`),
      );
      assert.ok(
        imapIds(topo, NET.target, `t@${own.domain}`, own.users.t!).includes(`h4.${sentAt}@harness.test`),
      );
      const pop = inClient(topo, [
        'curl',
        '-sS',
        '--user',
        `a@${moved.domain}:${moved.users.a!}`,
        `pop3://${NET.origin}/`,
      ]);
      assert.equal(pop.code, 0, `POP3: ${pop.out}`);
      assert.match(pop.out, /^1 \d+/m, 'POP3 lists the message');
      const wrong = inClient(topo, [
        'curl',
        '-sS',
        '--user',
        `a@${moved.domain}:wrong`,
        `imap://${NET.origin}/INBOX`,
        '-X',
        'UID SEARCH ALL',
      ]);
      assert.notEqual(wrong.code, 0, 'a wrong password is refused');
      // Mail from outside for a domain the server does not host is not relayed.
      const relay = inClient(topo, [
        'swaks',
        '--server',
        NET.origin,
        '--from',
        'x@client.test',
        '--to',
        'someone@elsewhere.test',
        '--timeout',
        '20',
      ]);
      assert.match(relay.out, /^<\*\*\s+554 .*Relay access denied/m, 'no open relay');

      await om.stop();
      await tm.stop();
    });
  },
);

test(
  'the mail load against one server: every message accepted once in its mailboxes (the alias in both), the IMAP reads, flags and moves in the Maildir',
  { skip: skip ?? false, timeout: 240_000 },
  async () => {
    await withServers('mail-load', {}, async ({ topo, dir, open }) => {
      const origin = await open('origin');
      const moved = movedMail('notes.example');
      const stays = staysMail();
      await startMail(origin, {
        address: NET.origin,
        hostname: 'mail.notes.example',
        domains: [moved, stays],
        vmailId: 5000,
      });
      // The client's resolver answers the mail names itself here (no name server in this test).
      const local = [
        'local-zone: "example." static',
        `local-data: "notes.example. 2 IN MX 10 mail.notes.example."`,
        `local-data: "mail.notes.example. 2 IN A ${NET.origin}"`,
        `local-data: "stays.example. 2 IN MX 10 mail.stays.example."`,
        `local-data: "mail.stays.example. 2 IN A ${NET.origin}"`,
      ]
        .map((l) => `  ${l}\n`)
        .join('');
      await writeFile(
        join(dir, 'unbound.conf'),
        unboundConf(dir).replace('remote-control:', `${local}remote-control:`),
      );
      topo.spawn('client', 'unbound', ['unbound', '-d', '-c', join(dir, 'unbound.conf')], {
        logFile: join(dir, 'unbound.log'),
      });
      await new Promise((r) => setTimeout(r, 1000));

      const load = await startMailLoad(
        topo,
        ROOT,
        mailLoadArgs(moved, stays, { minMessages: 40 }),
        join(dir, 'mail-load.log'),
      );
      await new Promise((r) => setTimeout(r, 8000));
      const seen = await load.stop();
      const mine = seen.messages.filter((m) => m.domain === moved.domain);
      assert.ok(mine.length >= 40, `at least 40 messages sent (${mine.length})`);
      assert.deepEqual(
        mine.filter((m) => m.code !== 250).map((m) => m.tries),
        [],
        'every message accepted',
      );
      assert.ok(
        mine.every((m) => m.tries.length === 1),
        'each at the first try (nothing held here)',
      );
      assert.ok(mine.some((m) => m.stale) && mine.some((m) => !m.stale), 'stale and fresh senders');
      assert.ok(
        mine.some((m) => m.tries[0]!.port === 587) && mine.some((m) => m.tries[0]!.port === 25),
        'ports 25 and 587',
      );
      assert.ok(
        mine.some((m) => m.to === `team@${moved.domain}`),
        'the alias got mail',
      );
      const staysMsgs = seen.messages.filter((m) => m.domain === stays.domain);
      assert.ok(
        staysMsgs.length > 3 && staysMsgs.every((m) => m.code === 250),
        'the other domain took every message',
      );

      // Delivery is asynchronous: wait until the queue is empty before counting.
      let problems: string[] = [];
      for (let i = 0; i < 100; i++) {
        problems = deliveryProblems(moved, mine, await storedMessages(origin, moved.domain));
        if (problems.length === 0) break;
        await new Promise((r) => setTimeout(r, 300));
      }
      assert.deepEqual(problems, [], 'every accepted message once in each of its mailboxes');
      assert.deepEqual(deliveryProblems(stays, staysMsgs, await storedMessages(origin, stays.domain)), []);

      const done = seen.imap.filter((a) => a.ok && a.action !== 'login');
      for (const kind of ['read', 'flag', 'move'] as const)
        assert.ok(
          done.some((a) => a.action === kind),
          `the IMAP client did a ${kind}: ${JSON.stringify(seen.imap.slice(-3))}`,
        );
      const stored = await storedMessages(origin, moved.domain);
      assert.deepEqual(
        imapProblems(`c@${moved.domain}`, 'Archive', done, stored),
        [],
        'IMAP actions in the Maildir',
      );
      // The same messages, found by Message-ID wherever their Maildir is (the test's view of a backup).
      assert.deepEqual(
        [...(await messageIdsUnder(origin, '/var/mail/vhosts/notes.example'))].sort(),
        [...new Set(stored.map((m) => m.messageId))].sort(),
      );
      // A check that can fail: the same actions against a copy with the flags and the move undone.
      const undone = stored.map((m) => ({ ...m, flags: '', folder: 'INBOX' }));
      assert.ok(imapProblems(`c@${moved.domain}`, 'Archive', done, undone).length === done.length);
    });
  },
);
