// The test files that may run beside the others (run-tests.mjs's parallel lane). Every file not
// listed here runs in the serial lane, one file at a time, as all of them once did: a new test
// file is serial until someone reads it and adds it here.
//
// A file belongs here only if it shares nothing with a file of the serial lane: its listeners take
// port 0, on 127.0.0.1 or on a 127.0.X.0/24 block no serial file uses (check with
// `grep -rln "127\.0\.X\." src test` before adding one); it touches no system service (systemd
// units, /etc or /var files, the machine's own nginx, MariaDB, PostgreSQL, Postfix or Dovecot), no
// network namespace, nftables table or interface, and starts no sandbox on its default addresses
// (127.0.10.x). Peer servers it starts privately (its own binary run with its own folder, port
// and pid file: test/mariadb.ts, test/postgres.ts, an nginx with `-p DIR`) and a sandbox on a
// block of its own are allowed. It must not be timing-sensitive (an upper bound on a duration, a
// tight window), since the other lane's load slows it, and heavy files (load generators, benchmarks,
// thousands of connections, dozens of migrations) stay serial, since their load slows the serial
// lane's timing-sensitive tests. A sandbox's simulated users (a few requests a second) may run
// here with `requestTimeoutMs: PARALLEL_LANE_REQUEST_TIMEOUT_MS` (test/load.ts, 20 s): beside
// the other lane a request can wait seconds for the CPU, and only a failed or hung one may count
// as failed. Files of this lane run one at a time among themselves, so they may share addresses
// with each other.

/** Paths from the repository's root, each with why it is safe beside the serial lane. */
export const PARALLEL_FILES = [
  // Pure functions, parsers and in-memory state: no socket, no child process.
  'src/agent/webconfig/apache.test.ts', // parses apache2ctl -S text
  'src/agent/webconfig/assess.test.ts',
  'src/agent/webconfig/nginx-syntax.test.ts', // parses nginx -T text
  'src/agent/webstack/backups.test.ts',
  'src/agent/webstack/nginx.test.ts', // config text only
  'src/common/error-codes.test.ts',
  'src/common/keyed-lock.test.ts',
  'src/dns/query/engine.test.ts',
  'src/dns/tsig/tsig.test.ts',
  'src/dns/update/wire.test.ts',
  'src/dns/wire/wire.test.ts',
  'src/dns/workers/arena.test.ts',
  'src/dns/xfr/policies.test.ts',
  'src/dns/zone/files.test.ts',
  'src/dns/zone/zone.test.ts', // also runs kzonecheck/named-checkzone on files
  'src/host/sync.test.ts',
  'src/migration/progress.test.ts',
  'src/migration/resilient.test.ts',
  'src/sandbox/real-stack.test.ts', // option checks only, no stack started
  // Servers on 127.0.0.1 port 0 only.
  'src/api/config.test.ts',
  'src/api/paging.test.ts',
  'src/cli/watch.test.ts', // addresses as data only
  'src/dns/server.test.ts',
  'src/metrics/metrics.test.ts',
  // Port 0 on blocks of their own (127.0.X.0/24 used by no serial file).
  'src/cli/dns.test.ts', // 127.0.121.x, `ferry dns serve` children
  'src/dns/catalog/catalog.test.ts', // 127.0.116.x
  'src/dns/fuzz.test.ts', // 127.0.120.3
  'src/dns/many-zones.test.ts', // 127.0.118.1
  'src/dns/udp-io.test.ts', // 127.0.121.x
  'src/dns/workers/start.test.ts', // 127.0.120.5
  'src/dns/workers/workers.test.ts', // 127.0.120.x
  'src/dns/xfr/primary.test.ts', // 127.0.101.x
  'src/host/site-process.test.ts', // 127.0.73.1
  'src/host/site-server.test.ts', // 127.0.20.x; 127.0.0.9/10 as client source only
  'src/migration/dns-provider.test.ts', // 127.0.102.x
  'src/migration/parity.test.ts', // 127.0.43.x
  // The relay's own tests: port 0 on 127.0.0.2-7 (the serial nginx-proxy-protocol test also
  // listens there on port 0 only, and its nginx on 127.0.0.5, which these do not use).
  'src/relay/cli.test.ts',
  'src/relay/contract.test.ts',
  'src/relay/proxy-protocol.test.ts',
  'src/relay/tcp-relay.test.ts',
  'src/relay/udp.test.ts',
  'src/relay/workers.test.ts',
  // Pure parsers and answer building, moved from the serial lane.
  'src/dns/query/fast.test.ts',
  'src/dns/zone/parser.test.ts', // also runs kzonecheck on files
  // Private peers: own binary, folder, port (freePort on 127.0.0.1 or its own block).
  'src/agent/database/mover.test.ts', // private mariadbd (test/mariadb.ts) and nginx -p, 127.0.78.x
  'src/migration/journal.test.ts', // SQLite in a temporary folder, private postgres
  'src/agent/tracker.test.ts', // inotifywait and rsync on temporary folders, 127.0.67.x
  // In-process agents or a sandbox on a block of their own, port 0; lower bounds on time only.
  'src/agent/agent.test.ts', // 127.0.66.x
  'src/migration/journal-compat.test.ts', // 127.0.71.x
  'src/migration/orchestrator.test.ts', // 127.0.47.x
  'src/migration/site-names.test.ts', // 127.0.51.x
  'src/migration/sync-progress.test.ts', // 127.0.57.x
  'src/migration/web-migration.test.ts', // 127.0.49.x, nginx -T -p on its own folder
  'test/e2e/api.test.ts', // 127.0.80.x
  'test/e2e/api-bad-input.test.ts', // 127.0.86.x
  'test/e2e/cli.test.ts', // 127.0.84.x, `ferry` children
  'test/e2e/parity.test.ts', // 127.0.42.x
];
