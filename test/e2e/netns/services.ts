/**
 * What the namespace end-to-end tests run beside Ferry: nginx's and unbound's config files, the
 * sites' order logs as the app writes them, and a poll for a server coming up.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { NET } from './topology.js';

/** A private nginx (no daemon, its files under `dir`) including the agent's server blocks from `dir/ferry.d`. */
export function nginxConf(dir: string): string {
  return `user root;
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_timeout 65s;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  include ${dir}/ferry.d/*.conf;
}
`;
}

/**
 * The client's caching resolver on 127.0.0.1:53, honouring TTLs (no minimum, no serve-stale), with
 * `example.` stubbed to the dns host. It asks over IPv4; AAAA answers come the same way.
 */
export function unboundConf(dir: string): string {
  return `server:
  interface: 127.0.0.1
  port: 53
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "${dir}"
  pidfile: "${dir}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  num-threads: 1
  module-config: "iterator"
  qname-minimisation: no
  access-control: 127.0.0.0/8 allow
  cache-min-ttl: 0
  serve-expired: no
  prefetch: no
  domain-insecure: "example."
remote-control:
  control-enable: no
stub-zone:
  name: "example."
  stub-addr: ${NET.dns}
`;
}

/** One order as the site app logs it (orders.jsonl in the site's data folder). */
export interface Order {
  id: number;
  key: string;
  at: string;
  server: string;
}

export async function readOrders(file: string): Promise<Order[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Order);
}

/** Poll `check` until it holds (a server coming up), or throw after `timeoutMs`. */
export async function until(what: string, timeoutMs: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what} did not come up within ${timeoutMs} ms`);
}

/** A write the load generator saw acknowledged. */
export interface AckedWrite {
  domain: string;
  key: string;
}

/**
 * The write invariants of one migration, from the order logs the site app keeps under each
 * agent's data dir (`<dir>/<host>/data/sites/<site>/orders.jsonl`): every acknowledged write of
 * `migrated` once on the target, none on the origin after `cutoverAt`, the target holding the
 * origin's orders and its own; every acknowledged write of the `others` once on the origin and
 * nothing of theirs on the target. Returns how many writes `migrated` had acknowledged.
 */
export async function assertWriteInvariants(o: {
  dir: string;
  acked: AckedWrite[];
  migrated: string;
  others: string[];
  cutoverAt: number;
}): Promise<number> {
  const orders = (host: 'origin' | 'target', site: string) =>
    readOrders(`${o.dir}/${host}/data/sites/${site}/orders.jsonl`);
  assert.ok(Number.isFinite(o.cutoverAt), 'the cut-over step was seen');
  const onTarget = await orders('target', o.migrated);
  const count = new Map<string, number>();
  for (const w of onTarget) count.set(w.key, (count.get(w.key) ?? 0) + 1);
  const mine = o.acked.filter((w) => w.domain === o.migrated);
  assert.ok(mine.length > 20, `writes were made (${mine.length})`);
  const missing = mine.filter((w) => !count.has(w.key));
  assert.equal(
    missing.length,
    0,
    `acknowledged writes missing on the target: ${JSON.stringify(missing.slice(0, 5))}`,
  );
  const dup = [...count].filter(([, n]) => n > 1);
  assert.equal(dup.length, 0, `duplicated writes on the target: ${JSON.stringify(dup.slice(0, 5))}`);
  const ids = onTarget.map((w) => w.id);
  assert.equal(new Set(ids).size, ids.length, 'order ids are unique on the target');
  const late = (await orders('origin', o.migrated)).filter(
    (w) => w.server === 'origin' && Date.parse(w.at) >= o.cutoverAt,
  );
  assert.equal(
    late.length,
    0,
    `writes on the origin after the cut-over: ${JSON.stringify(late.slice(0, 5))}`,
  );
  assert.ok(
    onTarget.some((w) => w.server === 'target') && onTarget.some((w) => w.server === 'origin'),
    "the target has the origin's orders and its own",
  );
  for (const site of o.others) {
    const keys = new Map<string, number>();
    for (const w of await orders('origin', site)) keys.set(w.key, (keys.get(w.key) ?? 0) + 1);
    const siteAcked = o.acked.filter((w) => w.domain === site);
    assert.ok(
      siteAcked.length > 0 && siteAcked.every((w) => keys.get(w.key) === 1),
      `${site}: every acknowledged write once on the origin`,
    );
    assert.equal((await orders('target', site)).length, 0, `${site} untouched on the target`);
  }
  return mine.length;
}
