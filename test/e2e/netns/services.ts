/**
 * What the namespace end-to-end tests run beside Ferry: nginx's and unbound's config files, the
 * sites' order logs as the app writes them, and a poll for a server coming up.
 */
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
