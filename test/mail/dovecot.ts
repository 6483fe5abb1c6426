/**
 * Private Dovecot servers for the tests: each `startDovecot` runs its own `dovecot` master with
 * its own config file, base_dir, state_dir and log under a temporary folder, IMAP and POP3 on a
 * loopback address (no TLS), passwd-file users and Maildirs under that folder owned by the system
 * user `mail`. Never the machine's own Dovecot. `stop()` stops it and removes the folder. A small
 * line client speaks IMAP and POP3 to it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../ports.js';
import { isAlive } from '../processes.js';

/** True when Dovecot (master, doveadm, doveconf, IMAP and POP3) is installed. */
export const dovecotInstalled =
  existsSync('/usr/sbin/dovecot') &&
  existsSync('/usr/bin/doveadm') &&
  existsSync('/usr/bin/doveconf') &&
  existsSync('/usr/lib/dovecot/imap') &&
  existsSync('/usr/lib/dovecot/pop3');

/** A running private Dovecot. */
export interface DovecotServer {
  address: string;
  imapPort: number;
  pop3Port: number;
  dir: string;
  configFile: string;
  /** The passwd-file of its passdb and userdb. */
  usersFile: string;
  /** Where users' homes are: `<mailRoot>/<domain>/<local part>`, Maildir in `Maildir/`. */
  mailRoot: string;
  uid: number;
  gid: number;
  /** Add a user to the passwd-file (home and Maildir under mailRoot, unless `home`/`mail` say otherwise). */
  addUser(user: string, password: string, opts?: { home?: string; mail?: string }): Promise<void>;
  /** The Maildir of a user. */
  maildir(user: string): string;
  log(): string;
  stop(): Promise<void>;
}

/** Start a private Dovecot on `address` (IMAP and POP3 on the given ports, else free ones). */
export async function startDovecot(opts: {
  address: string;
  users: Array<{ user: string; password: string }>;
  imapPort?: number;
  pop3Port?: number;
}): Promise<DovecotServer> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-dovecot-'));
  await chmod(dir, 0o755);
  const uid = Number(execFileSync('id', ['-u', 'mail'], { encoding: 'utf8' }));
  const gid = Number(execFileSync('id', ['-g', 'mail'], { encoding: 'utf8' }));
  const mailRoot = join(dir, 'mail');
  const etc = join(dir, 'etc');
  for (const d of [join(dir, 'run'), join(dir, 'state'), etc]) await mkdir(d, { recursive: true });
  await mkdir(mailRoot, { mode: 0o755 });
  await chown(mailRoot, uid, gid);
  const imapPort = opts.imapPort ?? (await freePort(opts.address));
  const pop3Port = opts.pop3Port ?? (await freePort(opts.address));
  const usersFile = join(etc, 'users');
  const configFile = join(etc, 'dovecot.conf');
  const logFile = join(dir, 'dovecot.log');
  await writeFile(usersFile, '', { mode: 0o644 });
  const conf = [
    `base_dir = ${join(dir, 'run')}`,
    `state_dir = ${join(dir, 'state')}`,
    `log_path = ${logFile}`,
    'protocols = imap pop3',
    `listen = ${opts.address}`,
    'ssl = no',
    'disable_plaintext_auth = no',
    'mail_location = maildir:~/Maildir',
    `first_valid_uid = ${uid}`,
    'default_login_user = dovenull',
    'default_internal_user = dovenull',
    'service imap-login {',
    '  inet_listener imap {',
    `    port = ${imapPort}`,
    '  }',
    '  inet_listener imaps {',
    '    port = 0',
    '  }',
    '}',
    'service pop3-login {',
    '  inet_listener pop3 {',
    `    port = ${pop3Port}`,
    '  }',
    '  inet_listener pop3s {',
    '    port = 0',
    '  }',
    '}',
    'passdb {',
    '  driver = passwd-file',
    `  args = scheme=SHA512-CRYPT ${usersFile}`,
    '}',
    'userdb {',
    '  driver = passwd-file',
    `  args = ${usersFile}`,
    '}',
    '',
  ].join('\n');
  await writeFile(configFile, conf);
  const server: DovecotServer = {
    address: opts.address,
    imapPort,
    pop3Port,
    dir,
    configFile,
    usersFile,
    mailRoot,
    uid,
    gid,
    async addUser(user, password, extra = {}) {
      const [local, domain] = user.split('@') as [string, string];
      const hash = execFileSync('doveadm', ['pw', '-s', 'SHA512-CRYPT', '-p', password], {
        encoding: 'utf8',
      }).trim();
      const home = extra.home ?? join(mailRoot, domain, local);
      const fields = extra.mail ? `userdb_mail=${extra.mail}` : '';
      await writeFile(usersFile, `${user}:${hash}:${uid}:${gid}::${home}::${fields}\n`, { flag: 'a' });
    },
    maildir(user) {
      const [local, domain] = user.split('@') as [string, string];
      return join(mailRoot, domain, local, 'Maildir');
    },
    log: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
    async stop() {
      const pidFile = join(dir, 'run', 'master.pid');
      if (existsSync(pidFile)) {
        const pid = Number(readFileSync(pidFile, 'utf8').trim());
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          // gone already
        }
        for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
        if (isAlive(pid)) process.kill(pid, 'SIGKILL');
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    for (const u of opts.users) await server.addUser(u.user, u.password);
    execFileSync('dovecot', ['-c', configFile], { stdio: 'ignore' });
    for (let i = 0; i < 100 && !existsSync(join(dir, 'run', 'master.pid')); i++)
      await new Promise((r) => setTimeout(r, 50));
    await waitPort(opts.address, imapPort);
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

async function waitPort(address: string, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, address, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`dovecot does not listen on ${address}:${port}`);
}

/** A line-based client of IMAP or POP3 (plain TCP). */
export class LineClient {
  private buf = '';
  private waiters: Array<() => void> = [];
  /** Resolves when the server closes the connection. */
  readonly closed: Promise<void>;
  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => {
      this.buf += c;
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        for (const w of this.waiters.splice(0)) w();
        resolve();
      }),
    );
    socket.on('error', () => undefined);
  }

  /** Connect, and read the greeting line. */
  static async connect(address: string, port: number): Promise<{ client: LineClient; greeting: string }> {
    const socket = connect(port, address);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    const client = new LineClient(socket);
    const greeting = await client.until((t) => t.includes('\r\n'));
    return { client, greeting };
  }

  /** Send a line; read until `done` says the text read is complete (10 s at most). */
  async send(line: string, done: (text: string) => boolean): Promise<string> {
    this.socket.write(`${line}\r\n`);
    return this.until(done);
  }

  /** IMAP command with tag `t`: the whole answer up to the tagged line. */
  imap(command: string): Promise<string> {
    return this.send(`t ${command}`, (x) => /^t (OK|NO|BAD)[^\r\n]*\r\n/m.test(x));
  }

  /** POP3 command: its single-line answer. */
  pop3(command: string): Promise<string> {
    return this.send(command, (x) => x.includes('\r\n'));
  }

  private async until(done: (text: string) => boolean): Promise<string> {
    const deadline = Date.now() + 10_000;
    while (!done(this.buf)) {
      if (this.socket.destroyed || Date.now() > deadline)
        throw new Error(`no complete answer (got ${JSON.stringify(this.buf)})`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
    const out = this.buf;
    this.buf = '';
    return out;
  }

  end(): void {
    this.socket.destroy();
  }
}

/** Log in over IMAP; returns the tagged answer line and the open client. */
export async function imapLogin(
  server: { address: string; imapPort: number },
  user: string,
  password: string,
): Promise<{ client: LineClient; answer: string }> {
  const { client } = await LineClient.connect(server.address, server.imapPort);
  const answer = await client.imap(`LOGIN "${user}" "${password}"`);
  return { client, answer: /^t .*$/m.exec(answer)?.[0] ?? answer };
}

/** Log in over POP3; returns the answer to PASS. */
export async function pop3Login(
  server: { address: string; pop3Port: number },
  user: string,
  password: string,
): Promise<string> {
  const { client } = await LineClient.connect(server.address, server.pop3Port);
  try {
    await client.pop3(`USER ${user}`);
    return (await client.pop3(`PASS ${password}`)).trim();
  } finally {
    client.end();
  }
}
