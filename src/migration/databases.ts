/**
 * Planning the move of a web site's databases (docs/databases.md): the origin says which databases
 * the site uses and which of them move, the target whether it can take them. Reads only; a
 * refusal changes nothing on either server.
 */
import { FerryError, isFerryError } from '../common/errors.js';
import {
  COPY_IN_HOLD_BYTES_PER_S,
  COPY_IN_HOLD_FIXED_MS,
  type DatabaseDeclaration,
  type DatabasePlanOptions,
  type HostDriver,
} from './ports.js';
import type { DatabasesPlanned } from './types.js';

/** The methods each side must have once a database moves. */
const ORIGIN_METHODS = [
  'openDatabaseSource',
  'freezeDatabases',
  'thawDatabases',
  'closeDatabaseSource',
] as const;
const TARGET_METHODS = [
  'checkDatabases',
  'copyDatabases',
  'databaseLag',
  'takeOverDatabases',
  'dropDatabaseCopy',
] as const;

/**
 * Ask the origin for the site's databases and, when some move, the target whether it takes them.
 * Undefined when the origin's agent has no database support and nothing is declared (the site
 * moves as before). Throws the agents' `DB_*` refusals, and `DB_NOT_CONFIGURED` when a side
 * cannot do its part.
 */
export async function planDatabases(
  origin: HostDriver,
  target: HostDriver,
  domain: string,
  declared: DatabaseDeclaration[] = [],
  opts: DatabasePlanOptions = {},
): Promise<DatabasesPlanned | undefined> {
  const refuse = (host: HostDriver, what: string) =>
    new FerryError(
      'DB_NOT_CONFIGURED',
      `${domain} has databases to move (${what}), but the agent of ${host.id} cannot move databases: start it with --mariadb-defaults-file (docs/databases.md); nothing was changed`,
    );
  if (!origin.planDatabases) {
    if (declared.length) throw refuse(origin, `declared: ${declared.map((d) => d.name).join(', ')}`);
    return undefined;
  }
  let plan;
  try {
    const o = opts.copyInHoldMaxBytes ? [opts] : [];
    plan = await (declared.length || o.length
      ? origin.planDatabases(domain, declared.length ? declared : undefined, ...o)
      : origin.planDatabases(domain));
  } catch (err) {
    // An older agent has no such route: it never reads a site's databases.
    if (isFerryError(err, 'ROUTE_NOT_FOUND') && !declared.length) return undefined;
    throw err;
  }
  if (!plan.move.length) return { ...plan };
  const names = plan.move.map((m) => m.name).join(', ');
  if (ORIGIN_METHODS.some((m) => !origin[m])) throw refuse(origin, names);
  if (TARGET_METHODS.some((m) => !target[m])) throw refuse(target, names);
  const { replicaAddress } = await target.checkDatabases!(domain, plan);
  return { ...plan, replicaAddress };
}

/** One line per database: what moves (size, users) and what stays, with why; the copy-in-hold pause. */
export function describeDatabases(plan: DatabasesPlanned): string[] {
  const total = plan.move.reduce((n, m) => n + m.bytes, 0);
  return [
    ...(plan.mode === 'copy-in-hold'
      ? [
          `copy inside the hold (${plan.binlogProblem ?? 'no usable binary log'}): the site pauses about ${((plan.estimatedPauseMs ?? 0) / 1000).toFixed(1)} s while ${formatBytes(total)} are copied (estimated at ${formatBytes(COPY_IN_HOLD_BYTES_PER_S)}/s plus ${COPY_IN_HOLD_FIXED_MS / 1000} s; bounded by catchUpTimeoutMs)`,
        ]
      : []),
    ...plan.move.map(
      (m) =>
        `moves: ${m.name} (${formatBytes(m.bytes)}, users ${m.users.join(', ') || 'none'}; from ${m.source})`,
    ),
    ...plan.leftInPlace.map((l) => `left in place: ${l.name} on ${l.host} (${l.reason}; from ${l.source})`),
  ];
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}
