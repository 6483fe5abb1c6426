/** The hosting server's own tools the web stack drives: getent, useradd/groupadd, crontab, php-fpm. */
import { execFile, spawn } from 'node:child_process';
import { chmod, chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ErrorCode } from '../../common/error-codes.js';
import { FerryError } from '../../common/errors.js';

/** A system user as `getent passwd` tells it. */
export interface SystemUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/** A system group as `getent group` tells it. */
export interface SystemGroup {
  name: string;
  gid: number;
}

/** Run a command; resolve with its output, or reject with `code` and the tool's own words. */
export function exec(
  cmd: string[],
  code: ErrorCode,
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new FerryError(code, `${cmd[0]}: ${err.message}`, { cause: err }));
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      if (status === 0) return resolve({ stdout, stderr });
      const said = `${stderr}\n${stdout}`
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean)
        .slice(0, 8)
        .join(' / ');
      reject(new FerryError(code, `${cmd.join(' ')} failed (${signal ?? `exit ${status}`}): ${said}`));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

function quiet(cmd: string[]): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(cmd[0]!, cmd.slice(1), (err, stdout) => resolve(err ? null : stdout));
  });
}

/** `getent passwd KEY` (a name or a uid), or null. */
export async function getUser(key: string | number): Promise<SystemUser | null> {
  const out = await quiet(['getent', 'passwd', String(key)]);
  const f = out?.trim().split('\n')[0]?.split(':');
  if (!f || f.length < 7) return null;
  return { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]!, shell: f[6]! };
}

/** `getent group KEY` (a name or a gid), or null. */
export async function getGroup(key: string | number): Promise<SystemGroup | null> {
  const out = await quiet(['getent', 'group', String(key)]);
  const f = out?.trim().split('\n')[0]?.split(':');
  if (!f || f.length < 3) return null;
  return { name: f[0]!, gid: Number(f[2]) };
}

/** Create `group`, with its gid when that is free here. Returns whether it was created. */
export async function ensureGroup(group: SystemGroup): Promise<boolean> {
  if (await getGroup(group.name)) return false;
  const free = (await getGroup(group.gid)) === null;
  await exec(['groupadd', ...(free ? ['-g', String(group.gid)] : []), group.name], 'WEBSTACK_USER');
  return true;
}

/** Create `user` in `group`, with its uid when that is free here. Returns whether it was created. */
export async function ensureUser(user: SystemUser, group: string): Promise<boolean> {
  if (await getUser(user.name)) return false;
  const free = (await getUser(user.uid)) === null;
  await exec(
    [
      'useradd',
      ...(free ? ['-u', String(user.uid)] : []),
      '-g',
      group,
      '-d',
      user.home,
      '-M',
      '-s',
      user.shell,
      user.name,
    ],
    'WEBSTACK_USER',
  );
  return true;
}

/** The spool file crontab keeps a user's table in (Debian's cron). */
export const CRONTAB_SPOOL = '/var/spool/cron/crontabs';

/**
 * A user's crontab text, empty when there is none. `crontab -u USER -l` when the command exists,
 * else the spool file it keeps.
 */
export async function readCrontab(user: string, command = ['crontab']): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command[0]!, [...command.slice(1), '-u', user, '-l'], (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        readFile(join(CRONTAB_SPOOL, user), 'utf8').then(resolve, () => resolve(''));
        return;
      }
      if (/no crontab for/i.test(stderr)) return resolve('');
      reject(
        new FerryError('WEBSTACK_CRONTAB', `crontab -u ${user} -l failed: ${stderr.trim() || err.message}`),
      );
    });
  });
}

/** Install (or with empty text, remove) a user's crontab: `crontab -u USER -`, else the spool file. */
export async function writeCrontab(user: string, text: string, command = ['crontab']): Promise<void> {
  const present = await new Promise<boolean>((resolve) =>
    execFile(command[0]!, ['-V'], (err) => resolve((err as NodeJS.ErrnoException | null)?.code !== 'ENOENT')),
  );
  if (present) {
    if (text === '') {
      await exec([...command, '-u', user, '-r'], 'WEBSTACK_CRONTAB').catch((err: FerryError) => {
        if (!/no crontab/i.test(err.message)) throw err;
      });
    } else await exec([...command, '-u', user, '-'], 'WEBSTACK_CRONTAB', { input: text });
    return;
  }
  const file = join(CRONTAB_SPOOL, user);
  if (text === '') return rm(file, { force: true });
  const u = await getUser(user);
  const g = await getGroup('crontab');
  await mkdir(CRONTAB_SPOOL, { recursive: true, mode: 0o1730 });
  await writeFile(file, text, { mode: 0o600 });
  await chmod(file, 0o600);
  if (u) await chown(file, u.uid, g?.gid ?? u.gid);
}

/** How the agent checks and reloads PHP-FPM. */
export interface PhpFpmOptions {
  /** The PHP-FPM binary and fixed arguments; `-t` is added to check. Default `php-fpm<version of the pool's folder>`. */
  command?: string[];
  /** The master's pid file, signalled SIGUSR2 to reload. Default `/run/php/php<version>-fpm.pid`. */
  pidFile?: string;
}

/** `php-fpm -t`: throws PHP_FPM_CONFIG_INVALID with php-fpm's own message. */
export async function checkPhpFpm(opts: PhpFpmOptions): Promise<void> {
  await exec([...(opts.command?.length ? opts.command : ['php-fpm8.2']), '-t'], 'PHP_FPM_CONFIG_INVALID');
}

/** Graceful reload of every pool: SIGUSR2 to the master. */
export async function reloadPhpFpm(opts: PhpFpmOptions): Promise<void> {
  const file = opts.pidFile ?? '/run/php/php8.2-fpm.pid';
  const text = await readFile(file, 'utf8').catch(() => '');
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 1)
    throw new FerryError('PHP_FPM_RELOAD_FAILED', `no PHP-FPM master pid in ${file}: is php-fpm running?`);
  try {
    process.kill(pid, 'SIGUSR2');
  } catch (err) {
    throw new FerryError(
      'PHP_FPM_RELOAD_FAILED',
      `cannot signal the PHP-FPM master (pid ${pid}): ${(err as Error).message}`,
    );
  }
}
