/** What the agent reads of a hosting server's own web server configuration: its sites. */

/** A place in a configuration file (line counted from 1). */
export interface SourceRef {
  file: string;
  line: number;
}

/** One address a site listens on. `address` null means every address (`*`, or a bare port). */
export interface SiteListen {
  address: string | null;
  port: number;
  tls: boolean;
  at: SourceRef;
}

/** A directory a site serves files from: a document root, an alias, a `<Directory>` block. */
export interface SitePath {
  path: string;
  /** The directive that names it: `root`, `alias`, `DocumentRoot`, `Alias`, `Directory`. */
  directive: string;
  at: SourceRef;
}

/** A PHP-FPM pool, read from its pool file. */
export interface FpmPool {
  name: string;
  file: string;
  line: number;
  listen: string;
  user: string | null;
  group: string | null;
}

/** What runs a site's requests besides its files. */
export type SiteApp =
  | { kind: 'php-fpm'; socket: string; at: SourceRef; pool: FpmPool | null }
  | { kind: 'proxy'; upstream: string; at: SourceRef };

/** Why Ferry cannot move a site (stable codes, like error codes). */
export type RefusalCode =
  | 'NO_NAME'
  | 'NAME_PATTERN'
  | 'SHARED_NAMES'
  | 'PATH_OUTSIDE_ROOTS'
  | 'PATH_VARIABLE'
  | 'PATH_MISSING'
  | 'CERT_NAMES'
  | 'FILE_UNREADABLE'
  | 'POOL_NOT_FOUND'
  | 'POOL_SHARED'
  | 'POOL_ROOT_USER'
  | 'SPLIT_ROOTS'
  /** The domain's mail cannot be read (a map that is not a file map, a mailbox not a Maildir). */
  | 'MAIL_UNREADABLE';

export interface Refusal {
  code: RefusalCode;
  message: string;
  at?: SourceRef;
}

/** One site (an nginx `server {}` block or an Apache `<VirtualHost>`) and whether Ferry can move it. */
export interface WebSite {
  server: 'nginx' | 'apache';
  /** The block's first line. */
  at: SourceRef;
  /** server_name, or ServerName then ServerAlias, in the order written. */
  names: string[];
  /** The server that answers requests naming no site on one of its listens. */
  defaultServer: boolean;
  listens: SiteListen[];
  paths: SitePath[];
  /** `static` when nothing but files serves it. */
  application: 'static' | 'php-fpm' | 'proxy' | 'mixed';
  apps: SiteApp[];
  certificates: Array<{ certificate: string; key: string | null; at: SourceRef }>;
  /** The system user and group its PHP-FPM pool runs as (null for a static or proxied site). */
  user: string | null;
  group: string | null;
  movable: boolean;
  refusals: Refusal[];
  /**
   * What the server that hosts it must have besides its web server kind. Given by the agent's
   * inspection of one site (`GET /v1/web-sites/{domain}`), not in the listing.
   */
  requires?: SiteNeed[];
  /**
   * The domain's mail on this server's Postfix and Dovecot, which moves with the site (given by
   * the inspection of one site, on an agent started with a mail configuration; absent when the
   * domain has no mail here).
   */
  mail?: SiteMail;
}

/**
 * A domain's mail as the origin's agent reads it from Postfix (virtual mailbox domains) and
 * Dovecot (Maildir): what moves with the site, shown by the plan. No secret: password hashes stay
 * in the agent's bundle.
 */
export interface SiteMail {
  domain: string;
  /** Postfix's virtual mailboxes of the domain and their Maildir, with what they hold now. */
  mailboxes: Array<{ address: string; maildir: string; messages: number; bytes: number }>;
  /** Postfix's virtual aliases of the domain (`@domain` for a catch-all). */
  aliases: Array<{ address: string; to: string[] }>;
  /** Dovecot's login names of the domain. */
  users: string[];
  /** The mail ports this server listens on (of 25, 465, 587, 110, 143, 993, 995). */
  ports: number[];
}

/** One thing a site needs of the server that hosts it: a PHP-FPM version or an Apache module. */
export interface SiteNeed {
  kind: 'php-fpm' | 'module';
  /** The version (`8.2`) or the module (`rewrite_module`). */
  name: string;
  /** What in the site needs it, e.g. `RewriteEngine at /etc/apache2/sites-enabled/shop.conf:7`. */
  neededBy: string;
}

/** What a server must have to host a site: its web server kind and each need (`POST /v1/web-sites/{domain}/check`). */
export interface SiteNeeds {
  server: 'nginx' | 'apache';
  requires: SiteNeed[];
  /** The site's mail domain, when it has mail: the target needs Postfix and Dovecot, and no mail of that domain. */
  mailDomain?: string;
}

/** The sites of one web server, as the agent read them. */
export interface WebSitesReport {
  server: 'nginx' | 'apache';
  /** The command whose output was read, e.g. `nginx -T`. */
  command: string;
  sites: WebSite[];
  /** Roots sites' files may live under (paths elsewhere are refused). */
  declaredRoots: string[];
}
