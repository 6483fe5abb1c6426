/**
 * The copy of a domain's Maildirs, in the same pass and over the same TLS transport as its web
 * site's data: the target's receive session of the site carries a second one (`mail`) whose
 * folder is the target's mail root of the domain; each pass of the site then also pushes every
 * Maildir of the domain there, user `X`'s Maildir to `<root>/<X>/`. Dovecot's
 * `dovecot-uidlist` and `dovecot-keywords` go with the messages (UIDs and keywords survive);
 * its index files (`dovecot.index*`) stay behind, and the target rebuilds its own after the pass
 * (`afterPass`: doveadm force-resync) once the files are given to its mail user. A message moved
 * or re-flagged is a rename in Maildir: the pass deletes the old name on the target.
 */
import { lstat, mkdtemp, readdir, rm, symlink, chown } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FerryError } from '../../common/errors.js';
import { rsyncPush, type SyncEndpoint } from '../rsync.js';

/** What the agent asks of the mail part (set by the mail facade; absent: sites move without mail). */
export interface MailCopyHook {
  /** Origin: the domain's Maildirs to copy with its site (none: the pass is the site's only). */
  mailDirs(domain: string): Promise<Array<{ user: string; maildir: string }>>;
  /**
   * Target: the folder the domain's Maildirs land in (user X's Maildir is `<root>/<X>`) and the
   * owner they are given; null when this server takes no mail for the domain.
   */
  mailRoot(domain: string): Promise<{ root: string; uid: number; gid: number } | null>;
  /** Target, after each pass that brought mail: rebuild Dovecot's indexes (its resync). */
  afterPass(domain: string): Promise<void>;
}

/** Maildir files Dovecot rebuilds from the messages: never copied, never deleted on the target. */
export const MAILDIR_EXCLUDES = [
  'dovecot.index*',
  'dovecot.list.index*',
  'dovecot-uidlist.lock',
  'dovecot-keywords.lock',
];

const USER_RE = /^[^/\0\s.][^/\0\s]{0,253}$/;

/** Push the Maildirs into the mail session `to` (deleting what they no longer have there). */
export async function pushMaildirs(
  dirs: Array<{ user: string; maildir: string }>,
  to: SyncEndpoint,
  onProgress?: (p: { bytes: number; percent: number }) => void,
): Promise<{ files: number; bytes: number }> {
  const tmp = await mkdtemp(join(tmpdir(), 'ferry-maildirs-'));
  try {
    for (const { user, maildir } of dirs) {
      if (!USER_RE.test(user))
        throw new FerryError('MAIL_UNREADABLE', `mail user "${user}" cannot name a folder on the target`);
      const st = await lstat(maildir).catch(() => undefined);
      if (!st?.isDirectory())
        throw new FerryError('MAIL_UNREADABLE', `${user}'s Maildir ${maildir} is not a folder`);
      await symlink(maildir, join(tmp, user));
    }
    const res = await rsyncPush({
      source: tmp,
      to,
      copyDirLinks: true,
      exclude: MAILDIR_EXCLUDES,
      ...(onProgress ? { onProgress } : {}),
    });
    return { files: res.files, bytes: res.bytes };
  } catch (err) {
    if (err instanceof FerryError && err.code.startsWith('MAIL_')) throw err;
    throw new FerryError('MAIL_SYNC', `copying the Maildirs failed: ${(err as Error).message}`, {
      cause: err,
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Give everything under `root` to the target's mail user (what a pass copied as root). */
export async function ownMaildirs(root: string, uid: number, gid: number): Promise<void> {
  const walk = async (path: string): Promise<void> => {
    const st = await lstat(path);
    if (st.isSymbolicLink()) return;
    if (st.uid !== uid || st.gid !== gid) await chown(path, uid, gid);
    if (st.isDirectory()) for (const e of await readdir(path)) await walk(join(path, e));
  };
  await walk(root);
}
