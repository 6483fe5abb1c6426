/**
 * What the database scenario (test/e2e/real-site-database.test.ts) looks at on a hosting server's
 * own MariaDB (server-ns.ts `startMariaDb` with options): other customers' databases beside the
 * site's, a writer that keeps using one of them, and the server's own records read back: accounts,
 * databases, replication connections, grants, the binary log (`mariadb-binlog`) and the general
 * query log (which connection ran what).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import type { Hosting } from './real-site.js';
import { run, type MariaDb, type ServerNs } from './server-ns.js';
import { NET, type NsChild } from './topology.js';

/** The origin's gtid_domain_id (real-site.ts gives the origin's MariaDB server_id and domain 11). */
export const ORIGIN_DOMAIN = 11;

/** Another customer of the same MariaDB server: a database, its own user (on the socket), tables with rows. */
export interface CustomerDb {
  name: string;
  user: string;
  password: string;
  /** CREATE TABLE and INSERT statements run inside the database. */
  schema: string;
}

/** Two customers: a shop (the writer adds orders) and a forum (left alone). */
export const CUSTOMER_DBS: CustomerDb[] = [
  {
    name: 'shop_a',
    user: 'shop_a',
    password: 'shop-a-' + 's'.repeat(12),
    schema: `CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(64), price DECIMAL(8,2)) ENGINE=InnoDB;
INSERT INTO products VALUES (1,'kettle',24.90),(2,'teapot',18.00),(3,'cups',9.50),(4,'tray',12.00);
CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, ref VARCHAR(32) NOT NULL, product INT, at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3)) ENGINE=InnoDB;
INSERT INTO orders (ref, product) VALUES ('o-1',1),('o-2',3),('o-3',2);
`,
  },
  {
    name: 'forum_b',
    user: 'forum_b',
    password: 'forum-b-' + 'f'.repeat(12),
    schema: `CREATE TABLE topics (id INT PRIMARY KEY, title VARCHAR(128)) ENGINE=InnoDB;
INSERT INTO topics VALUES (1,'Welcome'),(2,'Rules'),(3,'Off topic');
CREATE TABLE posts (id INT PRIMARY KEY, topic INT, body TEXT) ENGINE=InnoDB;
INSERT INTO posts VALUES (1,1,'Hello all'),(2,1,'Hi!'),(3,2,'Be nice'),(4,3,'Anyone here?'),(5,3,'Yes');
`,
  },
];

/** Create the customers' databases, users ('user'@'localhost', all rights on their own database) and rows. */
export async function installCustomerDbs(m: MariaDb, dbs: CustomerDb[] = CUSTOMER_DBS): Promise<void> {
  for (const d of dbs) {
    await m.createDatabase(d.name, d.user, d.password, 'localhost');
    await m.sql(`USE \`${d.name}\`;\n${d.schema}`);
  }
}

/** `CHECKSUM TABLE` of every table of `db`, by table name. */
export async function tableChecksums(m: MariaDb, db: string): Promise<Record<string, string>> {
  const tables = (await m.sql(`SHOW TABLES FROM \`${db}\`;`)).split('\n').filter(Boolean);
  const out: Record<string, string> = {};
  for (const t of tables) {
    const line = (await m.sql(`CHECKSUM TABLE \`${db}\`.\`${t}\`;`)).trim();
    out[t] = line.split('\t')[1] ?? '';
  }
  return out;
}

/** The rows of shop_a.orders, id → ref. */
export async function shopOrders(m: MariaDb): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  for (const l of (await m.sql('SELECT id, ref FROM shop_a.orders ORDER BY id;'))
    .split('\n')
    .filter(Boolean)) {
    const [id, ref] = l.split('\t');
    out.set(Number(id), ref!);
  }
  return out;
}

/** A customer's program writing while the site moves: it stops at `stop()` and says what it wrote. */
export interface DbWriter {
  child: NsChild;
  /** Stop after the insert in progress; resolves with the acknowledged refs (and when) and the failures. */
  stop(): Promise<{ acked: Array<{ ref: string; at: number }>; failed: string[] }>;
}

/**
 * Insert an order into shop_a every `intervalMs` as shop_a's own user over the socket (the
 * `mariadb` client, as a customer's cron job would), printing `ok <ref> <ms>` once each insert
 * returned, `fail <ref>` otherwise.
 */
export function startShopWriter(srv: ServerNs, m: MariaDb, intervalMs = 200): DbWriter {
  const shop = CUSTOMER_DBS[0]!;
  const stopFile = join(srv.dir, 'shop-writer.stop');
  const script = `i=0
while [ ! -e "$1" ]; do
  i=$((i+1))
  if mariadb --no-defaults --socket="$2" -u "$3" "$4" -e "INSERT INTO orders (ref, product) VALUES ('w-$i', 1)" 2>>"$5"; then
    echo "ok w-$i $(date +%s%3N)"
  else
    echo "fail w-$i"
  fi
  sleep ${(intervalMs / 1000).toFixed(3)}
done`;
  const child = srv.spawn(
    'shop-writer',
    ['sh', '-c', script, 'sh', stopFile, m.socket, shop.user, shop.name, join(srv.dir, 'shop-writer.err')],
    { env: { ...process.env, MYSQL_PWD: shop.password } },
  );
  return {
    child,
    stop: async () => {
      await run(['touch', stopFile]);
      await child.exited;
      const acked: Array<{ ref: string; at: number }> = [];
      const failed: string[] = [];
      for (const l of child.lines) {
        const [what, ref, at] = l.split(' ');
        if (what === 'ok') acked.push({ ref: ref!, at: Number(at) });
        else if (what === 'fail') failed.push(ref!);
      }
      return { acked, failed };
    },
  };
}

/** The server's accounts, `user@host`, sorted. */
export async function accounts(m: MariaDb): Promise<string[]> {
  return (await m.sql("SELECT CONCAT(User, '@', Host) FROM mysql.global_priv ORDER BY 1;"))
    .split('\n')
    .filter(Boolean);
}

/** The server's databases, sorted. */
export async function databases(m: MariaDb): Promise<string[]> {
  return (await m.sql('SHOW DATABASES;')).split('\n').filter(Boolean).sort();
}

/** `SHOW ALL SLAVES STATUS`: the replication connections' names (empty: none). */
export async function replicationConnections(m: MariaDb): Promise<string[]> {
  const out = await m.sql('SHOW ALL SLAVES STATUS;');
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\t')[0]!);
}

/** The grant lines of an account. */
export async function grantsOf(m: MariaDb, user: string, host: string): Promise<string[]> {
  return (await m.sql(`SHOW GRANTS FOR '${user}'@'${host}';`)).split('\n').filter(Boolean);
}

/**
 * Try a write that changes nothing (an UPDATE matching no row) as `user` over the socket: MariaDB
 * checks the privilege before it looks for rows. Returns the client's error, or null when allowed.
 */
export async function tryNoopWrite(
  srv: ServerNs,
  m: MariaDb,
  a: { user: string; password: string; database: string; table: string },
): Promise<string | null> {
  const r = await srv.exec(
    'mariadb',
    [
      '--no-defaults',
      `--socket=${m.socket}`,
      '-u',
      a.user,
      a.database,
      '-e',
      `UPDATE \`${a.table}\` SET ${a.table === 'wp_options' ? 'option_value = option_value' : 'id = id'} WHERE 1 = 0`,
    ],
    { env: { ...process.env, MYSQL_PWD: a.password }, allowFail: true },
  );
  return r.code === 0 ? null : r.stderr.trim() || `exit ${r.code}`;
}

/** One transaction of the binary log that changed rows of a table: its GTID, its timestamp (unix s), the table. */
export interface BinlogRowWrite {
  gtid: string;
  timestamp: number;
  db: string;
  table: string;
}

/**
 * The row changes in a server's binary log (`mariadb-binlog` over every file of its index): each
 * table a transaction changed (its Table_map events), with the transaction's GTID and timestamp.
 */
export async function binlogRowWrites(m: MariaDb): Promise<BinlogRowWrite[]> {
  if (!m.binlogBase) throw new Error('this MariaDB has no binary log');
  await m.sql('FLUSH BINARY LOGS;');
  const dir = join(m.binlogBase, '..');
  const files = (await readFile(`${m.binlogBase}.index`, 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((f) => (f.startsWith('/') ? f : join(dir, f)));
  const out = await run(['mariadb-binlog', '--no-defaults', ...files], { timeoutMs: 120_000 });
  const writes: BinlogRowWrite[] = [];
  let gtid = '';
  let timestamp = 0;
  for (const line of out.stdout.split('\n')) {
    const g = /\bGTID (\d+-\d+-\d+)\b/.exec(line);
    if (g && line.startsWith('#')) {
      gtid = g[1]!;
      continue;
    }
    const t = /^SET TIMESTAMP=(\d+)/.exec(line);
    if (t) {
      timestamp = Number(t[1]);
      continue;
    }
    const map = /Table_map: `([^`]+)`\.`([^`]+)`/.exec(line);
    if (map && line.startsWith('#')) writes.push({ gtid, timestamp, db: map[1]!, table: map[2]! });
  }
  return writes;
}

/** The server's current `@@gtid_binlog_pos`. */
export async function binlogPos(m: MariaDb): Promise<string> {
  return (await m.sql('SELECT @@gtid_binlog_pos;')).trim();
}

/** The sequence number of `domain` in a GTID position (`d-s-n,…`), or -1. */
export function seqOf(position: string, domain: number): number {
  for (const part of position.split(',')) {
    const [d, , n] = part.trim().split('-');
    if (Number(d) === domain && n !== undefined) return Number(n);
  }
  return -1;
}

/** One statement of the general query log, with the account its connection logged in as. */
export interface LoggedStatement {
  thread: number;
  /** `user@host` of the connection ('' when its Connect line was not seen). */
  account: string;
  command: string;
  argument: string;
}

/**
 * Parse a server's general query log (`log_output=FILE`): `[time] thread command argument`, a
 * statement's further lines following it. Connections are named by their Connect line.
 */
export async function generalLog(m: MariaDb): Promise<LoggedStatement[]> {
  if (!m.generalLogFile) throw new Error('this MariaDB logs no statement');
  const text = await readFile(m.generalLogFile, 'utf8');
  const who = new Map<number, string>();
  const out: LoggedStatement[] = [];
  for (const line of text.split('\n')) {
    const e = /^(?:\d{6}\s+\d{1,2}:\d{2}:\d{2})?\s+(\d+) ([A-Z][A-Za-z ]*?)\t(.*)$/.exec(line);
    if (!e) {
      const last = out[out.length - 1];
      if (last) last.argument += `\n${line}`;
      continue;
    }
    const thread = Number(e[1]);
    const command = e[2]!;
    const argument = e[3]!;
    if (command === 'Connect') {
      const a = /^(\S+@\S+)/.exec(argument);
      if (a) who.set(thread, a[1]!);
    }
    out.push({ thread, account: who.get(thread) ?? '', command, argument });
  }
  return out;
}

/**
 * The hosting as the scenario needs it, checked before Ferry runs (a wrong harness would otherwise
 * read as a migration's failure): both MariaDBs with the binary log on, ROW, GTID strict mode and
 * their own server_id/gtid_domain_id and a certificate; the target reaches the origin's MariaDB
 * over TLS, verifying its certificate against the scenario's CA, as a user that requires TLS
 * (made for the check and dropped); WordPress's comments land in the origin's wp_blog.
 */
export async function assertDatabasesReady(h: Hosting): Promise<void> {
  const vars = async (m: typeof h.maria) =>
    Object.fromEntries(
      (
        await m.sql(
          "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin','binlog_format','gtid_strict_mode','server_id','gtid_domain_id','have_ssl','bind_address');",
        )
      )
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('\t') as [string, string]),
    );
  const o = await vars(h.maria);
  const t = await vars(h.targetMaria!);
  for (const [name, v] of [
    ['origin', o],
    ['target', t],
  ] as const) {
    assert.equal(v.log_bin, 'ON', `${name}: binary log on`);
    assert.equal(v.binlog_format, 'ROW', `${name}: ROW`);
    assert.equal(v.gtid_strict_mode, 'ON', `${name}: GTID strict mode`);
    assert.equal(v.have_ssl, 'YES', `${name}: a certificate`);
  }
  assert.equal(o.bind_address, NET.origin);
  assert.equal(t.bind_address, NET.target);
  assert.notEqual(o.server_id, t.server_id);
  assert.notEqual(o.gtid_domain_id, t.gtid_domain_id);
  assert.equal(Number(o.gtid_domain_id), ORIGIN_DOMAIN);

  const probe = 'probe-' + 'q'.repeat(10);
  await h.maria.sql(
    `CREATE USER 'tls_probe'@'${NET.target}' IDENTIFIED BY '${probe}' REQUIRE SSL;\n` +
      `GRANT SELECT ON wp_blog.* TO 'tls_probe'@'${NET.target}';\n`,
  );
  try {
    const r = await h.target.exec(
      'mariadb',
      [
        '--no-defaults',
        '-h',
        NET.origin,
        '-u',
        'tls_probe',
        '--ssl',
        '--ssl-ca=/etc/mysql/ssl/ca.pem',
        '--ssl-verify-server-cert',
        '-N',
        '-B',
        '-e',
        "SHOW SESSION STATUS LIKE 'Ssl_version'; SELECT COUNT(*) FROM wp_blog.wp_posts",
      ],
      { env: { ...process.env, MYSQL_PWD: probe } },
    );
    assert.match(r.stdout, /Ssl_version\tTLSv1\.[23]/, `the target reaches the origin over TLS: ${r.stdout}`);
  } finally {
    await h.maria.sql(`DROP USER IF EXISTS 'tls_probe'@'${NET.target}';`);
  }
}
