/**
 * The mail facade the agent's web-site calls use, with its Postfix side on real private Postfix
 * instances (origin and target): inspection with what the Maildirs hold, a mailbox that is no
 * Maildir refused, the bundle carried and installed in the site's mode, the states by site mode,
 * idle, and finish on both sides. Dovecot's side is tested with its own class.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isFerryError } from '../../common/errors.js';
import { postfixInstalled, startPostfix, type PostfixInstance } from '../../../test/mail/postfix.js';
import { MailSites, countMaildir, maildirLayout } from './mail.js';
import { Postfix } from './postfix.js';

test('ferry agent takes --postfix-config and --dovecot-config together or not at all', () => {
  for (const flag of [
    ['--postfix-config', '/etc/postfix'],
    ['--dovecot-config', '/etc/dovecot/dovecot.conf'],
  ]) {
    const r = spawnSync(
      process.execPath,
      [
        join(import.meta.dirname, '..', '..', '..', 'bin', 'ferry.js'),
        'agent',
        '--shared-ip',
        '127.0.0.1',
        '--loopback-addresses',
        ...flag,
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /pass both --postfix-config and --dovecot-config, or neither \[AGENT_OPTIONS\]/);
  }
});

const skip = postfixInstalled ? false : 'needs Postfix and swaks installed, run as root';

describe('MailSites (Postfix side)', { skip }, () => {
  let origin: PostfixInstance;
  let target: PostfixInstance;
  let om: MailSites;
  let tm: MailSites;
  let dataDir: string;

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'ferry-mail-'));
    origin = await startPostfix({
      address: '127.0.89.1',
      hostname: 'origin.test',
      domains: ['shop.test', 'keep.test'],
      mailboxes: [
        'ann@shop.test shop.test/ann/',
        'ben@shop.test shop.test/ben/',
        'cy@shop.test shop.test/cy/',
        'kim@keep.test keep.test/kim/',
      ],
      aliases: ['info@shop.test ann@shop.test'],
    });
    try {
      target = await startPostfix({
        address: '127.0.89.2',
        hostname: 'target.test',
        domains: ['else.test'],
        mailboxes: ['eve@else.test else.test/eve/'],
      });
    } catch (err) {
      await origin.stop();
      throw err;
    }
    const ports = () => Promise.resolve([25]);
    tm = new MailSites({
      postfix: new Postfix({ configDir: target.configDir }),
      dataDir,
      relayPort: target.port,
      listeningPorts: ports,
    });
    om = new MailSites({
      postfix: new Postfix({ configDir: origin.configDir }),
      dataDir,
      relayPort: target.port,
      listeningPorts: ports,
    });
  });

  after(async () => {
    await origin?.stop();
    await target?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("inspect: the domain's mailboxes with what they hold, its aliases; none for a domain without mail", async () => {
    for (const [to, n] of [
      ['ann@shop.test', 2],
      ['info@shop.test', 1],
      ['ben@shop.test', 1],
    ] as const)
      for (let i = 0; i < n; i++) assert.equal(origin.send(to).status, 0);
    await origin.waitDelivered('shop.test/ann/', 3);
    await origin.waitDelivered('shop.test/ben/', 1);
    const { mail, refusals } = await om.inspect('shop.test');
    assert.deepEqual(refusals, []);
    assert.ok(mail);
    assert.equal(mail.domain, 'shop.test');
    assert.deepEqual(
      mail.mailboxes.map((m) => [m.address, m.messages]),
      [
        ['ann@shop.test', 3],
        ['ben@shop.test', 1],
        ['cy@shop.test', 0],
      ],
    );
    const annBytes = (await countMaildir(join(origin.vmail, 'shop.test/ann/'))).bytes;
    assert.ok(annBytes > 0);
    assert.equal(mail.mailboxes[0]!.bytes, annBytes);
    assert.deepEqual(mail.aliases, [{ address: 'info@shop.test', to: ['ann@shop.test'] }]);
    assert.deepEqual(mail.ports, [25]);
    assert.deepEqual(await om.inspect('nomail.test'), { refusals: [] });
  });

  test('inspect refuses a mailbox that is a file, not a Maildir, before any change', async () => {
    const before = readFileSync(origin.mailboxFile, 'utf8');
    const p = new Postfix({ configDir: origin.configDir });
    try {
      await p.installLines('mbox.test', {
        domains: [],
        mailboxes: ['joe@mbox.test mbox.test/joe'],
        aliases: [],
      });
      const r = await om.inspect('mbox.test');
      assert.equal(r.mail, undefined);
      assert.deepEqual(
        r.refusals.map((x) => x.code),
        ['MAIL_UNREADABLE'],
      );
      assert.match(r.refusals[0]!.message, /joe@mbox\.test.*Maildirs only/);
      await assert.rejects(om.export('mbox.test'), (e: unknown) => isFerryError(e, 'MAIL_UNREADABLE'));
    } finally {
      await p.removeLines('mbox.test');
    }
    assert.equal(readFileSync(origin.mailboxFile, 'utf8'), before);
  });

  test('the target refuses a domain it has mail of, and takes one it has not', async () => {
    await assert.rejects(om.assertCanHost('shop.test'), (e: unknown) =>
      isFerryError(e, 'MAIL_DOMAIN_EXISTS'),
    );
    await tm.assertCanHost('shop.test');
    await assert.rejects(
      new MailSites({ postfix: new Postfix({ configDir: join(dataDir, 'none') }), dataDir }).assertCanHost(
        'shop.test',
      ),
      (e: unknown) => isFerryError(e, 'MAIL_NOT_CONFIGURED'),
    );
  });

  test('the states by site mode: a move from install to finish, the other domain delivered all along', async () => {
    const bundle = await om.export('shop.test');
    assert.ok(bundle);
    assert.deepEqual(bundle.maildirs, ['shop.test/ann/', 'shop.test/ben/', 'shop.test/cy/']);
    assert.equal(await om.export('nomail.test'), undefined);

    // Target: installed in readonly, the domain's mail is answered 4xx there.
    await tm.install(bundle, 'readonly');
    await tm.install(bundle, 'readonly');
    assert.match(target.send('ann@shop.test').output, /<\*\*\s+450 4\.2\.1/);
    assert.equal(target.send('eve@else.test').status, 0);

    // Origin in hold: 4xx for the domain, the other domain still delivered; idle once the queue is.
    await om.applyMode('shop.test', 'hold');
    assert.match(origin.send('ben@shop.test').output, /<\*\*\s+450 4\.2\.1/);
    const kept = origin.delivered('keep.test/kim/').length;
    assert.equal(origin.send('kim@keep.test').status, 0);
    await origin.waitDelivered('keep.test/kim/', kept + 1);
    assert.equal(await om.idle('shop.test'), true);

    // Switch: the target serves, the origin relays the domain's mail to it.
    await tm.applyMode('shop.test', 'serve');
    await om.applyMode('shop.test', { proxy: { address: target.address, port: 80 } });
    const annHere = origin.delivered('shop.test/ann/').length;
    assert.equal(origin.send('info@shop.test', { header: 'Subject: after-switch' }).status, 0);
    assert.match((await target.waitDelivered('shop.test/ann/', 1)).join(''), /after-switch/);
    assert.equal(origin.delivered('shop.test/ann/').length, annHere);
    assert.equal(origin.send('kim@keep.test').status, 0);
    await origin.waitDelivered('keep.test/kim/', kept + 2);

    // Finish: the target's lines are its own (no marks), the origin's Maildirs are in a backup.
    await tm.finish('shop.test', 'target', 60_000);
    assert.doesNotMatch(readFileSync(target.mailboxFile, 'utf8'), /# ferry:/);
    assert.match(readFileSync(target.mailboxFile, 'utf8'), /ann@shop\.test shop\.test\/ann\//);
    await om.finish('shop.test', 'origin', 60_000);
    assert.equal(existsSync(join(origin.vmail, 'shop.test/ann')), false);
    const backups = readdirSync(join(dataDir, 'backups'));
    assert.equal(backups.length, 1);
    const manifest = JSON.parse(
      readFileSync(join(dataDir, 'backups', backups[0]!, 'manifest.json'), 'utf8'),
    ) as {
      items: Array<{ from: string; backup: string }>;
    };
    assert.deepEqual(
      manifest.items.map((i) => i.from),
      // cy never got mail: no Maildir to keep.
      ['ann', 'ben'].map((u) => join(origin.vmail, `shop.test/${u}/`)),
    );
    assert.equal((await countMaildir(manifest.items[0]!.backup)).messages, annHere);
    // Stale senders still reach the new server through the origin.
    assert.equal(origin.send('ben@shop.test', { header: 'Subject: stale-sender' }).status, 0);
    assert.match((await target.waitDelivered('shop.test/ben/', 1)).join(''), /stale-sender/);
    assert.equal(origin.send('kim@keep.test').status, 0);
    await origin.waitDelivered('keep.test/kim/', kept + 3);
  });

  test("mail: false leaves the domain's mail behind: no bundle, no Maildir to copy, until a later gate takes it along", async () => {
    const hook = om.copyHook();
    assert.deepEqual(
      (await hook.mailDirs('shop.test')).map((d) => d.user),
      ['ann', 'ben', 'cy'],
    );
    await om.leaveBehind('shop.test', true);
    assert.equal(await om.leftBehind('shop.test'), true);
    assert.equal(await om.export('shop.test'), undefined);
    assert.deepEqual(await hook.mailDirs('shop.test'), []);
    assert.equal(await om.leftBehind('keep.test'), false, 'only that domain');
    await om.leaveBehind('shop.test', false);
    assert.equal(await om.leftBehind('shop.test'), false);
    assert.ok(await om.export('shop.test'));
  });

  test('Maildirs that are not side by side in one folder are refused: the copy could not place them', () => {
    assert.deepEqual(
      maildirLayout('a.test', [
        { address: 'x@a.test', path: '/m/a.test/x/' },
        { address: 'y@a.test', path: '/m/a.test/y/' },
      ]),
      {
        root: '/m/a.test',
        dirs: [
          { user: 'x', maildir: '/m/a.test/x' },
          { user: 'y', maildir: '/m/a.test/y' },
        ],
      },
    );
    assert.throws(
      () =>
        maildirLayout('a.test', [
          { address: 'x@a.test', path: '/m/a.test/x/' },
          { address: 'y@a.test', path: '/other/y/' },
        ]),
      (e: unknown) => isFerryError(e, 'MAIL_UNREADABLE') && /not in one folder/.test((e as Error).message),
    );
  });

  test('a target rollback removes exactly what the install added', async () => {
    const p = new Postfix({ configDir: target.configDir });
    const lines = { domains: ['roll.test'], mailboxes: ['amy@roll.test roll.test/amy/'], aliases: [] };
    const before = [target.mailboxFile, target.domainsFile].map((f) => readFileSync(f, 'utf8'));
    await tm.install(
      { domain: 'roll.test', postfix: lines, users: [], maildirs: ['roll.test/amy/'] },
      'readonly',
    );
    assert.equal((await p.exportLines('roll.test')).mailboxes.length, 1);
    await tm.uninstall('roll.test');
    await tm.uninstall('roll.test');
    assert.deepEqual(
      [target.mailboxFile, target.domainsFile].map((f) => readFileSync(f, 'utf8')),
      before,
    );
    assert.equal(await p.domainState('roll.test'), 'deliver');
  });
});
