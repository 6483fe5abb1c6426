/**
 * One connection to a MariaDB server through mysql2, with every failure turned into a FerryError
 * that carries the server's own message (never the password).
 */
import mysql from 'mysql2/promise';
import { FerryError } from '../../common/errors.js';
import type { ErrorCode } from '../../common/error-codes.js';

/** How to reach a MariaDB server as one user. `password` is secret: never log it. */
export interface DbEndpoint {
  /** TCP host (address or name); unused when `socket` is given. */
  host?: string;
  port?: number;
  /** Unix socket path (local servers). */
  socket?: string;
  user: string;
  password: string;
  /** Require TLS, verifying the server against this CA (PEM text). */
  caPem?: string;
}

/** Where an endpoint points, for messages: `user@host:port` or `user@socket`, no password. */
export function describeEndpoint(ep: DbEndpoint): string {
  return `${ep.user}@${ep.socket ?? `${ep.host ?? 'localhost'}:${ep.port ?? 3306}`}`;
}

interface SqlError {
  code?: string;
  errno?: number;
  sqlMessage?: string;
  message?: string;
}

/** The FerryError for a failed connect or statement: the server's message, the code by its errno. */
export function dbError(err: unknown, what: string, fallback: ErrorCode = 'DB_QUERY'): FerryError {
  const e = (err ?? {}) as SqlError;
  const server = e.sqlMessage ?? e.message ?? String(err);
  let code: ErrorCode = fallback;
  if (e.code === 'ER_ACCESS_DENIED_ERROR' || e.code === 'ER_DBACCESS_DENIED_ERROR') code = 'DB_AUTH';
  else if (e.code === 'ER_BAD_DB_ERROR') code = 'DB_MISSING';
  else if (
    e.code === 'ECONNREFUSED' ||
    e.code === 'ENOENT' ||
    e.code === 'ETIMEDOUT' ||
    e.code === 'EHOSTUNREACH' ||
    e.code === 'ENOTFOUND' ||
    e.code === 'HANDSHAKE_SSL_ERROR' ||
    e.code === 'PROTOCOL_CONNECTION_LOST'
  ) {
    code = 'DB_UNREACHABLE';
  }
  // The driver's error carries the statement (`sql`), which may hold a password (CHANGE MASTER,
  // CREATE USER): the cause keeps only the server's message and error number.
  const cause = Object.assign(new Error(server), { code: e.code, errno: e.errno });
  return new FerryError(code, `${what}: ${server}`, { cause });
}

/** An open connection. Statements take `?` placeholders; identifiers go through `ident`. */
export class Db {
  private constructor(
    private readonly conn: mysql.Connection,
    /** `user@where`, for messages. */
    readonly label: string,
  ) {}

  /** Connect (10 s bound); DB_AUTH, DB_UNREACHABLE or DB_MISSING with the server's message. */
  static async open(ep: DbEndpoint, database?: string): Promise<Db> {
    const label = describeEndpoint(ep);
    try {
      const conn = await mysql.createConnection({
        ...(ep.socket ? { socketPath: ep.socket } : { host: ep.host ?? 'localhost', port: ep.port ?? 3306 }),
        user: ep.user,
        password: ep.password,
        ...(database ? { database } : {}),
        connectTimeout: 10_000,
        multipleStatements: false,
        supportBigNumbers: true,
        bigNumberStrings: true,
        dateStrings: true,
        ...(ep.caPem ? { ssl: { ca: ep.caPem, rejectUnauthorized: true } } : {}),
      });
      conn.on('error', () => {
        // a dropped connection surfaces on the next statement; without a listener it would crash the process
      });
      return new Db(conn, label);
    } catch (e) {
      throw dbError(e, `cannot connect to MariaDB as ${label}`, 'DB_UNREACHABLE');
    }
  }

  /** Rows of one statement. */
  async query<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
    try {
      const [rows] = await this.conn.query(sql, params);
      return (Array.isArray(rows) ? rows : []) as T[];
    } catch (e) {
      throw dbError(e, `${this.label}: ${sql.split(/\s+/).slice(0, 4).join(' ')}`);
    }
  }

  /** One value of the first row, or undefined. */
  async value(sql: string, params: unknown[] = []): Promise<unknown> {
    const rows = await this.query(sql, params);
    const row = rows[0];
    return row ? Object.values(row)[0] : undefined;
  }

  /** The connection id (for KILL and tests). */
  get threadId(): number {
    return this.conn.threadId;
  }

  async close(): Promise<void> {
    await this.conn.end().catch(() => this.conn.destroy());
  }
}

/** Open, run `fn`, always close. */
export async function withDb<T>(ep: DbEndpoint, fn: (db: Db) => Promise<T>): Promise<T> {
  const db = await Db.open(ep);
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

/** A backtick-quoted identifier (database, user or connection name). */
export function ident(name: string): string {
  return '`' + name.replace(/`/g, '``') + '`';
}

/** A single-quoted SQL string literal (for statements that take no placeholders, e.g. CHANGE MASTER). */
export function literal(value: string): string {
  return "'" + value.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\0/g, '\\0') + "'";
}

/** `'user'@'host'` for account statements. */
export function account(user: string, host: string): string {
  return `${literal(user)}@${literal(host)}`;
}
