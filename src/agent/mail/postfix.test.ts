/**
 * Postfix's side of a domain's mail, on real private Postfix instances: reading the domain's
 * mailboxes and aliases, a map Ferry cannot read refused, defer and relay affecting the one
 * domain only (swaks to both domains), the target's map lines installed and removed exactly,
 * and the queue counted.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { isFerryError } from '../../common/errors.js';
import { postfixInstalled, startPostfix, type PostfixInstance } from '../../../test/mail/postfix.js';
import { Postfix } from './postfix.js';

const skip = postfixInstalled ? false : 'needs Postfix and swaks installed, run as root';

const ORIGIN_MAILBOXES = [
  'alice@moved.test moved.test/alice/',
  'bob@moved.test moved.test/bob/',
  'carol@other.test other.test/carol/',
];
const ORIGIN_ALIASES = [
  'info@moved.test alice@moved.test, bob@moved.test',
  'sales@other.test carol@other.test',
];

describe('Postfix', { skip }, () => {
  let origin: PostfixInstance;
  let target: PostfixInstance;
  let pf: Postfix;
  let tpf: Postfix;

  before(async () => {
    origin = await startPostfix({
      address: '127.0.88.1',
      hostname: 'origin.test',
      domains: ['moved.test', 'other.test'],
      mailboxes: ORIGIN_MAILBOXES,
      aliases: ORIGIN_ALIASES,
    });
    try {
      target = await startPostfix({
        address: '127.0.88.2',
        hostname: 'target.test',
        domains: ['third.test'],
        mailboxes: ['dave@third.test third.test/dave/'],
        aliases: ['postmaster@third.test dave@third.test'],
      });
    } catch (err) {
      await origin.stop();
      throw err;
    }
    pf = new Postfix({ configDir: origin.configDir });
    tpf = new Postfix({ configDir: target.configDir });
  });

  after(async () => {
    await origin?.stop();
    await target?.stop();
  });

  test('reads the domain: its mailboxes (Maildirs under the base) and aliases, nothing of other domains', async () => {
    await pf.check();
    const m = await pf.domainMail('moved.test');
    assert.equal(m.listed, true);
    assert.deepEqual(
      m.mailboxes.map((x) => [x.address, x.maildir, x.path]),
      [
        ['alice@moved.test', 'moved.test/alice/', `${origin.vmail}/moved.test/alice/`],
        ['bob@moved.test', 'moved.test/bob/', `${origin.vmail}/moved.test/bob/`],
      ],
    );
    assert.deepEqual(m.aliases, [{ address: 'info@moved.test', to: ['alice@moved.test', 'bob@moved.test'] }]);
    const none = await pf.domainMail('nomail.test');
    assert.deepEqual([none.listed, none.mailboxes, none.aliases], [false, [], []]);
  });

  test('a map Ferry cannot read is refused, naming it', async () => {
    const broken = new Postfix({ configDir: origin.configDir });
    const main = `${origin.configDir}/main.cf`;
    const before = readFileSync(main, 'utf8');
    try {
      writeFileSync(main, before + 'virtual_alias_maps = regexp:/etc/postfix/virtual_regexp\n');
      await assert.rejects(
        broken.domainMail('moved.test'),
        (e: unknown) =>
          isFerryError(e, 'MAIL_UNREADABLE') && /regexp:\/etc\/postfix\/virtual_regexp/.test(e.message),
      );
    } finally {
      writeFileSync(main, before);
    }
  });

  test('a configuration directory without Postfix is MAIL_NOT_CONFIGURED', async () => {
    await assert.rejects(new Postfix({ configDir: '/nonexistent/postfix' }).check(), (e: unknown) =>
      isFerryError(e, 'MAIL_NOT_CONFIGURED'),
    );
  });

  test('defer answers 4xx for the domain only; deliver again takes its mail', async () => {
    const before = readFileSync(`${origin.configDir}/main.cf`, 'utf8');
    await pf.setDomainState('moved.test', 'defer');
    await pf.setDomainState('moved.test', 'defer');
    assert.equal(await pf.domainState('moved.test'), 'defer');
    const main = readFileSync(`${origin.configDir}/main.cf`, 'utf8');
    // What was there stays, behind Ferry's map, and the references are there once.
    assert.match(
      main,
      /smtpd_relay_restrictions = check_recipient_access texthash:\S+\/ferry\/hold, permit_mynetworks, reject_unauth_destination/,
    );
    assert.match(
      main,
      /smtpd_recipient_restrictions = check_recipient_access texthash:\S+\/ferry\/hold, reject_unlisted_recipient/,
    );
    assert.equal(main.split('ferry/hold').length - 1, 2, before);

    const held = origin.send('alice@moved.test');
    assert.notEqual(held.status, 0);
    assert.match(held.output, /<\*\*\s+450 4\.2\.1 .*being moved/);
    const alias = origin.send('info@moved.test');
    assert.match(alias.output, /<\*\*\s+450 4\.2\.1/);
    const other = origin.send('carol@other.test', { header: 'Subject: during-defer' });
    assert.equal(other.status, 0, other.output);
    const got = await origin.waitDelivered('other.test/carol/', 1);
    assert.match(got.join(''), /during-defer/);
    assert.equal(origin.delivered('moved.test/alice/').length, 0);

    await pf.setDomainState('moved.test', 'deliver');
    assert.equal(await pf.domainState('moved.test'), 'deliver');
    const ok = origin.send('alice@moved.test', { header: 'Subject: after-defer' });
    assert.equal(ok.status, 0, ok.output);
    assert.match((await origin.waitDelivered('moved.test/alice/', 1)).join(''), /after-defer/);
  });

  test("install on the target appends the domain's lines marked, refuses a second owner, removes exactly them", async () => {
    const files = [target.mailboxFile, target.aliasFile, target.domainsFile];
    const before = files.map((f) => readFileSync(f, 'utf8'));
    const lines = await pf.exportLines('moved.test');
    assert.deepEqual(lines, {
      domains: ['moved.test'],
      mailboxes: ['alice@moved.test moved.test/alice/', 'bob@moved.test moved.test/bob/'],
      aliases: ['info@moved.test alice@moved.test, bob@moved.test'],
    });
    assert.equal(await tpf.hasDomain('moved.test'), false);
    await tpf.installLines('moved.test', lines);
    await tpf.installLines('moved.test', lines);
    assert.equal(
      readFileSync(target.mailboxFile, 'utf8'),
      before[0] +
        '# ferry: moved.test\nalice@moved.test moved.test/alice/\n# ferry: moved.test\nbob@moved.test moved.test/bob/\n',
    );
    assert.equal(readFileSync(target.domainsFile, 'utf8'), before[2] + '# ferry: moved.test\nmoved.test\n');
    assert.deepEqual(await tpf.exportLines('moved.test'), lines);
    // Installed lines are Ferry's own: not "mail that exists" for a repeat, but the origin's are.
    assert.equal(await tpf.hasDomain('moved.test'), false);
    assert.equal(await pf.hasDomain('moved.test'), true);
    await assert.rejects(pf.installLines('moved.test', lines), (e: unknown) =>
      isFerryError(e, 'MAIL_DOMAIN_EXISTS'),
    );
    // The target now takes the domain's mail (postmap and reload ran).
    const r = target.send('bob@moved.test', { header: 'Subject: on-target' });
    assert.equal(r.status, 0, r.output);
    assert.match((await target.waitDelivered('moved.test/bob/', 1)).join(''), /on-target/);

    await tpf.removeLines('moved.test');
    await tpf.removeLines('moved.test');
    assert.deepEqual(
      files.map((f) => readFileSync(f, 'utf8')),
      before,
    );
    assert.equal((await tpf.domainMail('moved.test')).listed, false);
  });

  test("relay sends the domain's mail to the target; the other domain still delivers here", async () => {
    const lines = await pf.exportLines('moved.test');
    await tpf.installLines('moved.test', lines);
    const aliceHere = origin.delivered('moved.test/alice/').length;
    const carolHere = origin.delivered('other.test/carol/').length;
    try {
      await pf.setDomainState('moved.test', { relay: target.address, port: target.port });
      assert.deepEqual(await pf.domainState('moved.test'), { relay: target.address, port: target.port });
      const r = origin.send('alice@moved.test', { header: 'Subject: relayed' });
      assert.equal(r.status, 0, r.output);
      const a = origin.send('info@moved.test', { header: 'Subject: relayed-alias' });
      assert.equal(a.status, 0, a.output);
      const o = origin.send('carol@other.test', { header: 'Subject: stays-here' });
      assert.equal(o.status, 0, o.output);
      const onTarget = await target.waitDelivered('moved.test/alice/', 2);
      assert.match(onTarget.join(''), /relayed/);
      assert.match(onTarget.join(''), /relayed-alias/);
      assert.match((await target.waitDelivered('moved.test/bob/', 1)).join(''), /relayed-alias/);
      assert.match((await origin.waitDelivered('other.test/carol/', carolHere + 1)).join(''), /stays-here/);
      // Nothing new for the domain was delivered on the origin.
      assert.equal(origin.delivered('moved.test/alice/').length, aliceHere);
      assert.equal(target.delivered('other.test/carol/').length, 0);
    } finally {
      await pf.setDomainState('moved.test', 'deliver');
      await tpf.removeLines('moved.test');
    }
  });

  test('two domains switched at once both keep their state (the switches share one file)', async () => {
    try {
      await Promise.all([
        pf.setDomainState('moved.test', 'defer'),
        pf.setDomainState('other.test', { relay: target.address, port: target.port }),
      ]);
      assert.equal(await pf.domainState('moved.test'), 'defer');
      assert.deepEqual(await pf.domainState('other.test'), { relay: target.address, port: target.port });
    } finally {
      await Promise.all([
        pf.setDomainState('moved.test', 'deliver'),
        pf.setDomainState('other.test', 'deliver'),
      ]);
    }
    assert.equal(await pf.domainState('moved.test'), 'deliver');
    assert.equal(await pf.domainState('other.test'), 'deliver');
  });

  test("queued counts the messages waiting for the domain's recipients", async () => {
    // Relayed to a port nobody listens on, the domain's mail waits in the queue.
    await pf.setDomainState('moved.test', { relay: '127.0.88.3', port: 9 });
    try {
      // What earlier tests relayed may still be on its way out of the queue.
      assert.equal(
        await waitQueued(pf, 'moved.test', 0),
        0,
        execFileSync('postqueue', ['-c', origin.configDir, '-j']).toString(),
      );
      assert.equal(origin.send('alice@moved.test').status, 0);
      assert.equal(origin.send('bob@moved.test').status, 0);
      assert.equal(origin.send('carol@other.test').status, 0);
      assert.equal(await waitQueued(pf, 'moved.test', 2), 2);
      // The other domain's message is not held: it leaves the queue (on a busy machine it may
      // still be on its way out when the two above are counted).
      assert.equal(await waitQueued(pf, 'other.test', 0), 0);
    } finally {
      await pf.setDomainState('moved.test', 'deliver');
    }
  });
});

/** The domain's queued count once it is `n` (or what it is after 10 s). */
async function waitQueued(pf: Postfix, domain: string, n: number): Promise<number> {
  const end = Date.now() + 10_000;
  for (;;) {
    const q = await pf.queued(domain);
    if (q === n || Date.now() > end) return q;
    await new Promise((r) => setTimeout(r, 200));
  }
}
