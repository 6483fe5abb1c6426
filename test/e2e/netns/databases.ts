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
import { commentCounts } from './sites.js';
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

/** The site's database user, as wp-config.php names it; local, so on the socket. */
const BLOG_ACCOUNT = { user: 'blog', host: 'localhost' };
const WRITE_PRIVILEGE = /\b(ALL PRIVILEGES|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER)\b/;

/** What `assertDatabaseMoved` compares with: both MariaDBs before the move. */
export interface DatabasesBefore {
  accounts: string[];
  targetDatabases: string[];
  orders: Map<number, string>;
  sums: Record<string, Record<string, string>>;
}

/** Read what `assertDatabaseMoved` compares with. */
export async function snapshotDatabases(h: Hosting): Promise<DatabasesBefore> {
  const origin = h.maria;
  return {
    accounts: await accounts(origin),
    targetDatabases: await databases(h.targetMaria!),
    orders: await shopOrders(origin),
    sums: Object.fromEntries(
      await Promise.all(CUSTOMER_DBS.map(async (d) => [d.name, await tableChecksums(origin, d.name)])),
    ) as Record<string, Record<string, string>>,
  };
}

/**
 * Issue 14's database checks once the site moved (its requests' checks are `assertMoved`'s):
 * the shop's program wrote before, during and after the move and never was refused; every comment
 * of the origin's copy is on the target; the origin's binary log changes wp_blog before the
 * switch (GTID at most `atSwitch`, the origin's position read when the switch was seen, and a
 * timestamp at most the switch's second) and never after it, while it has later orders of the
 * shop; the other customers' databases unchanged but for the program's orders, not on the target,
 * never named by a statement of Ferry's connections (any account but the customers' and root),
 * never locked; no account left over on the origin, no replication connection or filter file on
 * the target; the blog's user without write privileges on the origin, with them on the target.
 */
export async function assertDatabaseMoved(
  h: Hosting,
  before: DatabasesBefore,
  o: {
    written: { acked: Array<{ ref: string; at: number }>; failed: string[] };
    atSwitch: string;
    switchAt: number;
    startedAt: number;
  },
): Promise<void> {
  const origin = h.maria;
  const target = h.targetMaria!;
  const { written, atSwitch, switchAt, startedAt } = o;
  // The other customer kept writing through the whole migration, never refused.
  assert.deepEqual(written.failed, [], "the shop's program had no insert refused");
  const during = written.acked.filter((w) => w.at > startedAt && w.at < switchAt);
  assert.ok(during.length > 5, `the shop's program wrote during the migration (${during.length})`);
  assert.ok(
    written.acked.some((w) => w.at > switchAt),
    'and after the switch (its database stays on the origin)',
  );

  // Comments: every comment the origin's copy has is on the target too (none split off).
  const onOrigin = await commentCounts(origin.sql, h.wpDb.name);
  const onTarget = await commentCounts(target.sql, h.wpDb.name);
  const notCarried = [...onOrigin.keys()].filter((k) => !onTarget.has(k));
  assert.deepEqual(notCarried, [], "every comment of the origin's copy is on the target");

  // The origin's binary log: wp_blog changed before the switch, never after it.
  assert.match(atSwitch, /^\d+-\d+-\d+/, `the origin's position at the switch was read (${atSwitch})`);
  const switchSeq = seqOf(atSwitch, ORIGIN_DOMAIN);
  const writes = await binlogRowWrites(origin);
  const blogWrites = writes.filter((w) => w.db === h.wpDb.name);
  assert.ok(blogWrites.length > 5, "the origin's binary log has the site's writes made before the switch");
  const late = blogWrites.filter(
    (w) => seqOf(w.gtid, ORIGIN_DOMAIN) > switchSeq || w.timestamp > Math.floor(switchAt / 1000),
  );
  assert.deepEqual(late, [], `no change of ${h.wpDb.name} in the origin's binary log after the switch`);
  assert.ok(
    writes.some((w) => w.db === 'shop_a' && seqOf(w.gtid, ORIGIN_DOMAIN) > switchSeq),
    "while the shop's later orders are there (the log was read past the switch)",
  );

  // The other customers' databases: unchanged but for the shop program's own orders.
  assert.deepEqual(await tableChecksums(origin, 'forum_b'), before.sums.forum_b, 'forum_b unchanged');
  const shopNow = await tableChecksums(origin, 'shop_a');
  assert.equal(shopNow.products, before.sums.shop_a!.products, 'shop_a.products unchanged');
  const orders = await shopOrders(origin);
  for (const [id, ref] of before.orders) assert.equal(orders.get(id), ref, `order ${id} unchanged`);
  const added = [...orders].filter(([id]) => !before.orders.has(id)).map(([, ref]) => ref);
  assert.ok(
    added.every((r) => /^w-\d+$/.test(r)),
    `only the program's orders were added: ${added.filter((r) => !/^w-\d+$/.test(r)).join(' ')}`,
  );
  const acked = written.acked.map((w) => w.ref);
  assert.deepEqual(
    acked.filter((r) => added.filter((a) => a === r).length !== 1),
    [],
    'every acknowledged order once',
  );
  const targetDbs = await databases(target);
  for (const d of CUSTOMER_DBS)
    assert.ok(!targetDbs.includes(d.name), `${d.name} was not copied to the target`);
  assert.ok(targetDbs.includes(h.wpDb.name), 'the site database is on the target');

  // Never read, never locked: no statement of Ferry's connections (any account but the
  // customers' and the test's root) names another customer's database or takes a global lock.
  const customers = new Set(['root', BLOG_ACCOUNT.user, ...CUSTOMER_DBS.map((d) => d.user)]);
  const logged = await generalLog(origin);
  const ferrys = logged.filter((s) => s.account !== '' && !customers.has(s.account.split('@')[0]!));
  assert.ok(
    ferrys.some((s) => s.argument.includes(h.wpDb.name)),
    `Ferry's connections are in the origin's general log (${new Set(ferrys.map((s) => s.account)).size} accounts)`,
  );
  const touching = ferrys.filter((s) =>
    CUSTOMER_DBS.some((d) => new RegExp(`\\b${d.name}\\b`).test(s.argument)),
  );
  assert.deepEqual(touching, [], "no statement of Ferry's names another customer's database");
  const locks = ferrys.filter((s) =>
    /\b(FLUSH\s+TABLES\s+WITH\s+READ\s+LOCK|LOCK\s+TABLES?)\b/i.test(s.argument),
  );
  assert.deepEqual(locks, [], 'Ferry took no lock another customer would wait on');

  // Clean-up: the migration user gone, no replication connection left.
  assert.deepEqual(await accounts(origin), before.accounts, "the origin's accounts are as before the move");
  assert.deepEqual(await replicationConnections(target), [], 'no replication connection left on the target');
  const filters = (await h.target.exec('ls', ['-1', target.optionDir!])).stdout.trim();
  assert.equal(filters, '', "no channel filter file left in the target's MariaDB option folder");

  // The origin's copy is a frozen backup: its user may read it, not write it; the target's may.
  const grants = await grantsOf(origin, BLOG_ACCOUNT.user, BLOG_ACCOUNT.host);
  const writable = grants.filter((g) => g.includes(`\`${h.wpDb.name}\``) && WRITE_PRIVILEGE.test(g));
  assert.deepEqual(
    writable,
    [],
    `the blog's user keeps no write privilege on the origin: ${grants.join(' | ')}`,
  );
  const blogLogin = {
    user: h.wpDb.user,
    password: h.wpDb.password,
    database: h.wpDb.name,
    table: 'wp_options',
  };
  assert.match(
    (await tryNoopWrite(h.origin, origin, blogLogin)) ?? 'allowed',
    /command denied/i,
    "a write as the blog's user is refused on the origin",
  );
  assert.equal(await tryNoopWrite(h.target, target, blogLogin), null, 'and allowed on the target');
}
