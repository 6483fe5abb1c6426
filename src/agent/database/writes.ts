/**
 * Who may write the site's databases on a server: at the switch the origin's copy becomes
 * read-only for the site's users, and a rollback gives their grants back.
 *
 * MariaDB has no read-only switch per database: `read_only` is server-wide and would stop every
 * other customer on a shared server. So the site's accounts lose their write privileges on the
 * site's databases (REVOKE ALL, then SELECT and SHOW VIEW again), and their open connections are
 * killed, because a session keeps the database privileges it had when it chose its database
 * (they are re-read at the next USE, not at the next statement). The cut-over holds the site's
 * requests while this happens, so no request is cut short.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError } from '../../common/errors.js';
import { account, type Db } from './client.js';
import type { SiteAccount } from './copy.js';

/** Table-level grants name the table; a database-level grant ends in `.*`. */
function targetOf(grant: string): string | undefined {
  return /\bON\s+((?:`(?:[^`]|``)*`|[^\s.]+)\.(?:\*|`(?:[^`]|``)*`|[^\s]+))\s+TO\b/i.exec(grant)?.[1];
}

/**
 * Kill every connection of these users (by user name), except the caller's own, and wait until
 * they are gone: KILL returns at once while the session may still commit the statement it was
 * running, and a write committed after the caller reads the position would be missed.
 * Returns how many were killed; DB_QUERY when one outlives `timeoutMs`.
 */
export async function killConnections(db: Db, users: readonly string[], timeoutMs = 10_000): Promise<number> {
  if (users.length === 0) return 0;
  const list = async () =>
    (
      await db.query<{ id: string | number }>(
        'SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER IN (?) AND ID <> CONNECTION_ID()',
        [users],
      )
    ).map((r) => Number(r.id));
  const ids = await list();
  for (const id of ids) {
    await db.query('KILL CONNECTION ?', [id]).catch(() => undefined); // it may have ended meanwhile
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = (await list()).filter((id) => ids.includes(id));
    if (left.length === 0) return ids.length;
    if (Date.now() > deadline) {
      throw new FerryError(
        'DB_QUERY',
        `connections ${left.join(', ')} of ${users.join(', ')} did not end after KILL`,
      );
    }
    await sleep(5);
  }
}

/**
 * Make the site's databases read-only for the site's accounts on this server and close their
 * sessions. DB_GLOBAL_PRIVILEGES when an account can write everywhere (a per-database revoke
 * would not stop it). Idempotent.
 */
export async function freezeSiteWrites(db: Db, accounts: readonly SiteAccount[]): Promise<number> {
  const global = accounts.filter((a) => a.globalPrivileges);
  if (global.length) {
    throw new FerryError(
      'DB_GLOBAL_PRIVILEGES',
      `${global.map((a) => account(a.user, a.host)).join(', ')} can write every database (privileges ON *.*): ` +
        'the site cannot be made read-only per database; give the site a user with grants on its own databases only',
    );
  }
  await eachGrant(db, accounts, async (who, on) => {
    if (on.endsWith('.*')) await db.query(`GRANT SELECT, SHOW VIEW ON ${on} TO ${who}`);
    else await db.query(`GRANT SELECT ON ${on} TO ${who}`);
  });
  return killConnections(db, [...new Set(accounts.map((a) => a.user))]);
}

/** Give the site's accounts their grants back (a rollback). Idempotent. */
export async function thawSiteWrites(db: Db, accounts: readonly SiteAccount[]): Promise<void> {
  await eachGrant(db, accounts, (_who, _on, grant) => db.query(grant).then(() => undefined));
}

/**
 * For each of the accounts' saved grants on a database or table: revoke what the account holds
 * there now (nothing to revoke, e.g. already frozen, is fine), then `then(who, on, grant)`.
 */
async function eachGrant(
  db: Db,
  accounts: readonly SiteAccount[],
  then: (who: string, on: string, grant: string) => Promise<void>,
): Promise<void> {
  for (const a of accounts) {
    const who = account(a.user, a.host);
    for (const g of a.grants) {
      const on = targetOf(g);
      if (!on) continue;
      await db.query(`REVOKE ALL PRIVILEGES ON ${on} FROM ${who}`).catch((e: FerryError) => {
        if (!/There is no such grant/i.test(e.message)) throw e;
      });
      await then(who, on, g);
    }
  }
}
