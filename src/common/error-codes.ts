/**
 * Every error code of Ferry, in one table: the HTTP status the control API and the agent answer
 * with, the exit code of a `ferry` command that ends with it, and what it means. `FerryError`
 * takes only a code of this table, so a misspelt code fails the typecheck.
 *
 * Exit codes (README): 0 success, 1 failed, 2 bad usage (the command line or the request is
 * wrong), 3 the controller cannot be reached, 4 authentication refused.
 */

/** Exit codes of the `ferry` command. */
export const EXIT = {
  /** Done; for a migration: completed. */
  ok: 0,
  /** The operation failed, or the server refused it (unknown name, conflict, a failure there). */
  failed: 1,
  /** Bad command line or request. */
  usage: 2,
  /** The controller cannot be reached. */
  unreachable: 3,
  /** No token, or the token or its scope was refused. */
  auth: 4,
} as const;

/** One row of the table. */
export interface ErrorCodeInfo {
  /** HTTP status of an API or agent answer carrying this code. */
  status: number;
  /** Exit code of a `ferry` command that fails with this code. */
  exit: (typeof EXIT)[keyof typeof EXIT];
  /** What it means, in one line. */
  meaning: string;
}

const bad = (meaning: string) => ({ status: 400, exit: EXIT.usage, meaning }) as const;
const notFound = (meaning: string) => ({ status: 404, exit: EXIT.failed, meaning }) as const;
const conflict = (meaning: string) => ({ status: 409, exit: EXIT.failed, meaning }) as const;
const failed = (meaning: string) => ({ status: 500, exit: EXIT.failed, meaning }) as const;
const upstream = (meaning: string) => ({ status: 502, exit: EXIT.failed, meaning }) as const;
const unavailable = (meaning: string) => ({ status: 503, exit: EXIT.failed, meaning }) as const;
const timeout = (meaning: string) => ({ status: 504, exit: EXIT.failed, meaning }) as const;
const auth = (status: 401 | 403, meaning: string) => ({ status, exit: EXIT.auth, meaning }) as const;

/** The table: code → status, exit code and meaning. Keep it sorted by code. */
export const ERROR_CODES = {
  ADDRESS_DEVICE: bad('the network interface name is not valid'),
  ADDRESS_DUPLICATE: conflict(
    'another host on the link has the IPv6 address (duplicate address detection failed)',
  ),
  ADDRESS_INVALID: bad('not an IPv4 or IPv6 address literal'),
  ADDRESS_IN_USE: conflict('a redirect still listens on the address; stop it first'),
  ADDRESS_IP_FAILED: failed('the `ip` command failed to add or remove an address'),
  ADDRESS_NOT_LOOPBACK: bad('a loopback-only (sandbox) agent was given a non-loopback address'),
  ADDRESS_PROTECTED: conflict('the agent never removes a shared IP or an address it did not add'),
  AGENT_CLIENT_OPTIONS: bad('bad agent URL or token in the controller'),
  AGENT_DOWN: upstream('an agent refused or dropped the call'),
  AGENT_HTTP: upstream('an agent answered an error without a code this version knows'),
  AGENT_OPTIONS: bad('bad `ferry agent` options'),
  AGENT_TIMEOUT: timeout('an agent did not answer in time'),
  AGENT_UNAVAILABLE: unavailable('calls to an agent kept failing after every retry'),
  AGENT_UNREACHABLE: upstream('cannot connect to an agent'),
  APACHE_CONFIG_INVALID: failed(
    '`apache2ctl configtest` refused the configuration (its own message names the file and line)',
  ),
  APACHE_RELOAD_FAILED: failed('Apache failed to reload (`apache2ctl graceful`)'),
  API_BAD_ANSWER: upstream("the controller's answer is not the API's JSON (is --controller right?)"),
  API_OPTIONS: bad('bad control API options (tokens, scopes)'),
  AUTH_FORBIDDEN: auth(403, 'the token is valid but its scope does not allow this route'),
  AUTH_INVALID_TOKEN: auth(401, 'the token is not valid for this controller'),
  AUTH_MISSING_TOKEN: auth(401, 'no token was given'),
  BAD_JSON: bad('the request body is not valid JSON'),
  BAD_REQUEST: bad(
    'the request is malformed (an agent request that failed validation, or another bad request)',
  ),
  BODY_TOO_LARGE: {
    status: 413,
    exit: EXIT.usage,
    meaning: 'the request body is larger than the server accepts',
  },
  CALL_FAILED: unavailable('a retried call kept failing'),
  CALL_TIMEOUT: timeout('one attempt of a call to an agent or the DNS took too long'),
  CONFIG_INVALID: failed('the controller configuration is invalid'),
  CONTROLLER_STOPPING: unavailable('the controller is shutting down'),
  CURSOR_INVALID: bad("a list's `cursor` is not one this controller gave out for that list"),
  CUTOVER_DRAIN_TIMEOUT: failed('requests still in flight when the cut-over had to go on'),
  DASHBOARD_UNAVAILABLE: unavailable('the dashboard cannot be built here'),
  DB_AUTH: upstream('a MariaDB server refused the user or password (its own message says which)'),
  DB_BINLOG_FORMAT: conflict("the origin's binary log is not in ROW format; set binlog_format=ROW"),
  DB_BINLOG_OFF: conflict(
    "the origin's binary log is off; enable log_bin, or allow the copy-in-hold mode for small databases (docs/databases.md)",
  ),
  DB_CATCHUP_TIMEOUT: timeout(
    "the target did not reach the origin's GTID position (or finish a copy inside the hold) within the bound",
  ),
  DB_CONFIG: bad("a site's database settings cannot be read (application config or ferry.yaml)"),
  DB_COPY_FAILED: failed('the initial copy of a database failed; the partial copy on the target was removed'),
  DB_ENGINE_UNSUPPORTED: conflict(
    "the site's database runs on a server Ferry does not move yet (PostgreSQL): what is missing is named",
  ),
  DB_EXISTS: conflict('the target already has a database by that name; Ferry never overwrites one'),
  DB_GLOBAL_PRIVILEGES: conflict(
    "a site's database user can write everywhere (global privileges), so it cannot be made read-only per database",
  ),
  DB_GTID: conflict(
    'GTIDs are not usable for the migration (strict mode off, or both servers share a gtid_domain_id)',
  ),
  DB_MISSING: notFound('the database does not exist on the server'),
  DB_NOT_CONFIGURED: conflict(
    "a server's agent cannot move databases (no --mariadb-defaults-file, or an older agent)",
  ),
  DB_QUERY: upstream('a MariaDB statement failed (its own message follows)'),
  DB_REPLICATION: failed("the replication channel stopped with an error (the server's own message follows)"),
  DB_ROLLBACK_AFTER_SWITCH: conflict(
    "a site's databases cannot be replicated back (the migration completed, or its journal lacks what the reverse channel needs)",
  ),
  DB_UNREACHABLE: upstream('cannot connect to a MariaDB server'),
  DB_VERSION: conflict("the target's MariaDB is older than the origin's, or a server is not MariaDB"),
  DNS_ALREADY_STARTED: failed('the name server was started twice'),
  DNS_API_AUTH: upstream("PowerDNS's HTTP API refused the API key (its own message follows)"),
  DNS_API_REFUSED: upstream("PowerDNS's HTTP API refused the zone or the change (its own message follows)"),
  DNS_BAD_OPTIONS: bad('bad name server, zone, ACL or TSIG options'),
  DNS_BAD_RESPONSE: upstream('a name server answered something unusable'),
  DNS_BAD_TEXT: bad('a domain name, record type or record in text form is malformed'),
  DNS_BIND_FAILED: failed('the name server cannot bind its sockets or start its workers'),
  DNS_DB: failed('the zone database cannot be opened, read or written'),
  DNS_ENCODE: failed('a DNS message cannot be encoded'),
  DNS_INVALID_DATA: bad('record data is not valid for its type, or a change is empty'),
  DNS_MALFORMED: bad('a DNS message on the wire cannot be decoded'),
  DNS_NATIVE_UNAVAILABLE: unavailable('the native UDP addon is not available'),
  DNS_NETWORK: upstream('a name server cannot be reached or dropped the connection'),
  DNS_NOT_AUTHORITATIVE: notFound('no zone here (or at the provider) holds the name'),
  DNS_NOT_PROPAGATED: failed('some authoritative servers still do not show the change'),
  DNS_TIMEOUT: timeout('a name server did not answer in time'),
  DNS_TOO_LARGE: failed('a DNS message does not fit its buffer (answers are truncated instead)'),
  DNS_TSIG: upstream('a TSIG signature did not verify'),
  DNS_UNAVAILABLE: unavailable('calls to the DNS provider kept failing after every retry'),
  DNS_UPDATE_REFUSED: upstream('the primary refused a dynamic update'),
  DNS_WORKER: failed('a DNS worker failed or exited'),
  EVACUATE_OPTIONS: bad('bad evacuation options'),
  EVACUATE_STREAM: upstream("the controller's event stream ended at once"),
  FENCED: conflict(
    "the agent has seen a newer leader's fencing token: a controller that lost the lead may not act",
  ),
  HEADERS_TOO_LARGE: {
    status: 431,
    exit: EXIT.usage,
    meaning: 'the request line or headers are larger than the server accepts',
  },
  HOST_UNKNOWN: notFound('no host of that name in the orchestrator'),
  INTERNAL: failed('an unexpected error (a bug): the message says what'),
  JOURNAL_DUPLICATE: conflict('a migration with this id exists already'),
  JOURNAL_LOST: unavailable(
    'the journal lost its PostgreSQL connection or a commit failed: the step was not acknowledged and did not act',
  ),
  JOURNAL_OPEN: failed('the journal database cannot be opened'),
  JOURNAL_UNREACHABLE: unavailable(
    'PostgreSQL stayed unreachable for the configured bound (journal.giveUpAfterSeconds)',
  ),
  LEADER_OPTIONS: bad('bad leader options of the controller (id, ttl, advertise)'),
  LOADGEN_OPTIONS: bad('bad load generator options'),
  LOADGEN_RESOLVE: failed('the load generator cannot resolve a domain'),
  LOADGEN_TIMEOUT: failed('a load generator request got no complete answer in time'),
  MAIL_DOMAIN_EXISTS: conflict(
    "the target's Postfix or Dovecot already has mail for the domain; Ferry never merges a domain's mail",
  ),
  MAIL_NOT_CONFIGURED: conflict(
    "a server's agent cannot move mail (no --postfix-config/--dovecot-config, or Postfix or Dovecot refused)",
  ),
  MAIL_SYNC: conflict("copying the domain's mailboxes failed (rsync's or doveadm's words say why)"),
  MAIL_UNREADABLE: conflict(
    "the domain's mail cannot be read (a map that is not a file map, a mailbox that is not a Maildir, an unreadable file)",
  ),
  MIGRATION_DIRECT_NO_IP: conflict('a direct migration needs the domain to have exactly one A record'),
  MIGRATION_NOT_FOUND: notFound('no migration with this id'),
  MIGRATION_NO_IPV6: conflict('the domain has an AAAA record to move but the target has no IPv6 address'),
  MIGRATION_RUNNING: conflict('the site is being migrated already'),
  MIGRATION_SAME_SERVER: conflict('the site is on that server already'),
  NGINX_CONFIG_INVALID: failed('`nginx -t` refused the generated configuration'),
  NGINX_OPTIONS: bad('bad nginx options of the agent'),
  NGINX_RELOAD_FAILED: failed('nginx failed to reload'),
  NGINX_RELOAD_TIMEOUT: failed('nginx did not take a server block in time'),
  NO_LEADER: unavailable('no controller holds the lead now, so a write cannot be carried out; retry shortly'),
  PHP_FPM_CONFIG_INVALID: failed('`php-fpm -t` refused a pool file; its own message says why'),
  PHP_FPM_RELOAD_FAILED: failed(
    'PHP-FPM could not be reloaded (no master pid, or the pool did not open its socket)',
  ),
  PLAN_DNS_MISMATCH: conflict('the record does not point where the plan expects'),
  PLAN_INVALID: bad('the migration plan is inconsistent'),
  PLAN_MAIL_PORTS: conflict("the site's ports lack a mail port the origin listens on"),
  PLAN_NAME_REFUSED: conflict('a name the config adds to the site cannot move with it'),
  PLAN_NO_SITE: conflict('the origin does not host the site'),
  PLAN_TARGET_HAS_SITE: conflict('the target hosts the site already'),
  PREFLIGHT_MISMATCH: failed('the target does not answer like the origin'),
  PROBE_FAILED: upstream('a probe request to a site failed'),
  PROBE_TIMEOUT: timeout('a probe request to a site timed out'),
  PROXY_TIMEOUT: timeout('a proxied upstream was idle too long'),
  RATE_LIMITED: {
    status: 429,
    exit: EXIT.failed,
    meaning: 'too many requests from this address; retry later',
  },
  REDIRECT_CONFLICT: conflict('a redirect with this id runs with another spec'),
  REDIRECT_ID_INVALID: bad('a redirect id is not 1-120 letters, digits, ".", "_" or "-"'),
  REDIRECT_NOT_FOUND: notFound('no redirect with this id'),
  REDIRECT_PRECONDITION: conflict(
    'the server is not set up for this redirect (e.g. forwarding off for the kernel engine)',
  ),
  RELAY_BAD_OPTION: bad('bad relay options'),
  RELAY_LISTEN: failed('the relay cannot listen on an address'),
  RELAY_NFT: failed('an nft command of the kernel relay failed'),
  RELAY_PROCESS: failed("a userspace redirect's own process failed to start or answer"),
  RELAY_STATE: failed('a relay was used in the wrong state (e.g. started twice)'),
  RELAY_WORKER: failed('a relay worker failed, exited or did not answer'),
  REQUEST_TIMEOUT: { status: 408, exit: EXIT.failed, meaning: 'the request did not arrive in time' },
  RESOLVE_FAILED: failed('a name did not resolve'),
  ROLLBACK_REQUESTED: conflict('the migration stopped because a rollback was requested'),
  ROUTE_NOT_FOUND: notFound('no such route; see the OpenAPI document (or GET /v1/info on an agent)'),
  RSYNC_DAEMON_FAILED: failed('the receiver of site data (its TLS listener or certificate) failed to start'),
  RSYNC_FAILED: failed('rsync failed to copy a site'),
  RSYNC_OPTIONS: bad('bad rsync options'),
  RSYNC_SESSION_INVALID: bad('an rsync session name is not valid'),
  RSYNC_TLS_PIN: upstream(
    "the receiving agent's TLS certificate is not the one its receive session pins (or it pins none); nothing was sent",
  ),
  SANDBOX_OPTIONS: bad('bad sandbox options'),
  SANDBOX_STACK_MISSING: failed(
    'the real stack demo needs nginx and php-fpm8.2; the message names the Debian packages to install',
  ),
  SANDBOX_STACK_START: failed(
    "a private nginx or PHP-FPM of the real stack demo did not start; the message has the server's own words",
  ),
  SECRETS_NEED_TLS: conflict(
    "a route that carries a site's private keys was called over plain HTTP from another host; the agent must serve HTTPS",
  ),
  SERVER_NOT_FOUND: notFound('no server with this id'),
  SITE_ADDRESS_INVALID: bad('a site address is not an IP address literal'),
  SITE_DATA_READ: failed("a site's data cannot be read"),
  SITE_DOMAIN_INVALID: bad('not a valid domain name for a site'),
  SITE_LISTEN: failed('the site server cannot listen on an address'),
  SITE_MODE_INVALID: bad('not a valid site mode'),
  SITE_NAME_TAKEN: conflict('another site on this server already answers to that name'),
  SITE_NOT_FOUND: notFound('no such site (configured, or on that server)'),
  SITE_NOT_MOVABLE: conflict('the site cannot be moved; the message names each reason and its file and line'),
  SITE_PROCESS: failed("the site app's own process failed to start or answer"),
  SITE_SERVER_OPTIONS: bad('bad site server options'),
  SITE_UPSTREAM_INVALID: bad(
    "a gated site's upstream (its backend or the target's TLS settings) is not valid",
  ),
  SSE_FULL: unavailable('too many event subscribers; retry later'),
  SYNC_COPY: failed("a file of a site's data cannot be copied"),
  SYNC_JOB_NOT_FOUND: notFound('no sync job with this id'),
  SYNC_RUNNING: conflict('a sync job with this id is running'),
  SYNC_SESSION_CLOSED: conflict(
    'the receive session of an in-process sync is closed (the site takes writes there, or was removed)',
  ),
  SYNC_SOURCE: failed("a site's data cannot be read for a sync"),
  SYNC_TARGET_LIVE: conflict('the receiving copy takes writes; set it readonly first'),
  SYNC_UNSUPPORTED: failed('these two hosts cannot sync with each other'),
  TARGET_LACKS: conflict('the target lacks what the site needs (its web server kind, PHP version or module)'),
  TEMP_IP_EXHAUSTED: conflict('no free temporary IP in the pool'),
  TEMP_IP_NOT_SERVING: failed('the site does not answer on the temporary IP'),
  TRACKER_FAILED: failed("the watch of a site's changed files failed (the next pass copies everything)"),
  UNAUTHORIZED: auth(401, 'the agent refused the bearer token'),
  UNREACHABLE: { status: 503, exit: EXIT.unreachable, meaning: 'the controller cannot be reached (CLI)' },
  UNSUPPORTED_MEDIA_TYPE: {
    status: 415,
    exit: EXIT.usage,
    meaning: 'the request body has a content type the route does not take',
  },
  USAGE: bad('bad command line'),
  VALIDATION: bad("the request's body, parameters or query do not match the API schema"),
  WEBCONFIG_COMMAND: failed(
    "the web server's dump command (`nginx -T`, `apache2ctl -S`) failed; its own message names the file and line",
  ),
  WEBCONFIG_NONE: conflict('the agent was not told which web server to read (`ferry agent --web-config`)'),
  WEBCONFIG_READ: failed('a configuration file the web server names cannot be read'),
  WEBCONFIG_SYNTAX: failed(
    "the web server's configuration cannot be parsed (the message names the file and line)",
  ),
  WEBSTACK_BACKUP: failed("a retired site's files could not be moved into its backup folder"),
  WEBSTACK_CONFLICT: conflict('the site, or a file it needs, is already on this server in another form'),
  WEBSTACK_CRONTAB: failed("a site user's crontab could not be read or installed"),
  WEBSTACK_OPTIONS: bad(
    'bad web stack options of the agent (the site app must listen on loopback behind the web server)',
  ),
  WEBSTACK_RELOAD_TIMEOUT: failed("the web server did not take a site's new configuration in time"),
  WEBSTACK_USER: failed("a site's system user or group could not be read or created"),
  WEB_SITE_NOT_FOUND: notFound("the origin's web server has no site of that name"),
  ZONE_SYNTAX: failed('a zone file cannot be read or has a syntax error'),
} as const satisfies Record<string, ErrorCodeInfo>;

/** A code of the table. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** True when `code` is a code of the table. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

/** `code` when it is in the table, else `fallback` (for codes that come over a wire or from a worker). */
export function toErrorCode(code: unknown, fallback: ErrorCode): ErrorCode {
  return isErrorCode(code) ? code : fallback;
}

/** HTTP status of a code; 500 for one not in the table. */
export function statusOfCode(code: string): number {
  return isErrorCode(code) ? ERROR_CODES[code].status : 500;
}

/** Exit code of a code; 1 (failed) for one not in the table. */
export function exitOfCode(code: string): number {
  return isErrorCode(code) ? ERROR_CODES[code].exit : EXIT.failed;
}
