/**
 * The migration's vocabulary: phases, the plan an operator asks for, and the state the journal
 * keeps. docs/how-a-migration-works.md tells the migration phase by phase.
 */
import type { SiteMail } from '../agent/webconfig/model.js';
import type { DatabaseDeclaration, SiteDatabasesPlan } from './ports.js';
import type { JournalStep } from './steps.js';

/**
 * Phases in the order a successful migration passes them (issue 2's order: sync after dns-temp).
 * `ttl-lowered` is entered only when the record's TTL is above the plan's; `temp-ip` and
 * `dns-temp` are skipped in `direct` mode.
 */
export const PHASES = [
  'planned',
  'ttl-lowered',
  'temp-ip',
  'dns-temp',
  'syncing',
  'preflight',
  'cutover',
  'draining',
  'completed',
] as const;

export type ForwardPhase = (typeof PHASES)[number];

/**
 * `rolling-back` is the undo in progress (resumable); `rolled-back` and `failed` are terminal
 * (a `failed` migration can still be rolled back or resumed on request).
 */
export type Phase = ForwardPhase | 'failed' | 'rolling-back' | 'rolled-back';

/** Phases a migration stays in for good unless an operator acts. */
export const TERMINAL_PHASES: ReadonlySet<Phase> = new Set<Phase>(['completed', 'failed', 'rolled-back']);

/** Timing knobs of one migration; all in milliseconds except TTLs (seconds, as DNS has them). */
export interface MigrationTimings {
  /** TTL of the A record while it points at the temporary IP and then at the target. Default 5 s. */
  ttl: number;
  /** Traffic must have been absent this long before a wait ends. Default 2000 ms. */
  quietWindowMs: number;
  /** Upper bound on the wait at IP1 before cut-over (after the TTL has passed). Default 30 s. */
  dnsTempCapMs: number;
  /** Upper bound on the drain of IPt after cut-over (after the TTL has passed). Default 30 s. */
  drainCapMs: number;
  /** How long in-flight requests may take to finish at cut-over before it is abandoned. Default 10 s. */
  cutoverDrainTimeoutMs: number;
  /** How often waits look at DNS and traffic. Default 200 ms. */
  pollMs: number;
}

export const DEFAULT_TIMINGS: MigrationTimings = {
  ttl: 5,
  quietWindowMs: 2000,
  dnsTempCapMs: 30_000,
  drainCapMs: 30_000,
  cutoverDrainTimeoutMs: 10_000,
  pollMs: 200,
};

/**
 * How the domain's traffic is carried during the migration:
 * - `temp-ip`: the patent's procedure, through a temporary IP on the origin;
 * - `relay-host`: the same, but the temporary IP and its redirect live on `plan.relayHost`;
 * - `direct`: the domain has a dedicated IP already (`originIp`), which is redirected itself.
 */
export type MigrationMode = 'temp-ip' | 'relay-host' | 'direct';

/** One HTTP parity check: GET `path` with the site's Host on origin and target. */
export interface HttpCheck {
  path: string;
  /** Compare the body's SHA-256 as well as the status. Default true. */
  body?: boolean;
  /** Port (default the site's first port) and scheme (default http). */
  port?: number;
  tls?: boolean;
}

/** What "the target answers like the origin" means for a site (preflight parity). */
export interface ParityChecks {
  /** Default: GET /healthz (status and body) and GET /orders (status). */
  http?: HttpCheck[];
  /** Ports whose TLS certificate names (CN and subjectAltName, with SNI = the domain) must match. */
  tlsPorts?: number[];
  /** On `tlsPorts`, compare the certificates' SHA-256 fingerprints too (the same certificate on both). */
  tlsFingerprint?: boolean;
  /** Ports whose first line (the service banner) must match, after removing `bannerIgnore`. */
  bannerPorts?: number[];
  /** A regular expression removed from banners before comparing (e.g. a host name or a date). */
  bannerIgnore?: string;
}

export const DEFAULT_PARITY: Required<Pick<ParityChecks, 'http'>> = {
  http: [{ path: '/healthz' }, { path: '/orders', body: false }],
};

/** What an operator asks for: move `domain` from `origin` to `target` through `tempIp`. */
export interface MigrationPlan {
  id: string;
  domain: string;
  /** Host ids known to the orchestrator's host registry. */
  origin: string;
  target: string;
  /** The origin's shared address the domain points at today (IP1). */
  originIp: string;
  /** The target's address the domain will point at (IP2). */
  targetIp: string;
  /** The temporary address used by this domain alone (IPt); in `direct` mode, `originIp` itself. */
  tempIp: string;
  /**
   * Every name of the site that moves (absolute, the domain first): each one's A (and AAAA)
   * record goes origin → temporary → target together, and back on rollback. Journals of older
   * versions have none: `[domain]`.
   */
  names?: string[];
  /** Names of the site planning found but leaves alone, each with why (shown by the plan). */
  namesLeftAlone?: NameLeftAlone[];
  /** Service ports carried through the temporary IP (the site's HTTP port at least). */
  ports: number[];
  timings: MigrationTimings;
  /** Default `temp-ip`. */
  mode?: MigrationMode;
  /** Host id carrying IPt and its redirect in `relay-host` mode. */
  relayHost?: string;
  /** Preflight parity checks; default `DEFAULT_PARITY`. */
  parity?: ParityChecks;
  /**
   * IPv6, migrated together with IPv4: the AAAA record moves origin → temporary → target beside
   * the A record, with a redirect of its own on the IPv6 temporary address (in direct mode,
   * `tempIp` is `originIp`).
   */
  v6?: { originIp: string; targetIp: string; tempIp: string };
  /**
   * `web`: a site of the origin's own web server (an nginx or Apache virtual host), moved through
   * its gate (agent methods `gateWebSite`, `installWebSite`, `finishWebSite`…). Default `builtin`:
   * a site of the agent's built-in app. Journals of older versions have neither.
   */
  kind?: SiteKind;
  /** A web site's particulars, read from the origin at planning and from the config. */
  web?: WebPlan;
}

/** A name of the site whose records the migration does not touch, and why. */
export interface NameLeftAlone {
  name: string;
  reason: string;
}

/** What serves a site: the agent's built-in app, or the server's own web server. */
export type SiteKind = 'builtin' | 'web';

/** A web site's part of a plan. */
export interface WebPlan {
  /** The site's first TLS listen port, when it has one: preflight parity checks HTTPS there too. */
  tlsPort?: number;
  /** Operator overrides passed to the agent (`ferry.yaml` `sites[].web`). */
  declaredRoots?: string[];
  dataDir?: string;
  /** How long the origin keeps its backup of the site after completion. Default 7 days. */
  backupKeepMs?: number;
  /** Databases the config declares (`ferry.yaml` `sites[].databases`), for the origin's agent. */
  databases?: DatabaseDeclaration[];
  /** The bounds of the databases' catch-up (`sites[].database`); defaults in `DEFAULT_DATABASE_OPTIONS`. */
  database?: Partial<DatabaseOptions>;
  /** What planning found of the site's databases (shown by the API and `ferry migrate`). */
  databasePlan?: DatabasesPlanned;
  /** The domain's mail as the origin's inspection found it: it moves with the site. */
  mail?: SiteMail;
  /**
   * `sites[].mail: false`: the domain's mail stays on the origin; the agents get `mail: false` in
   * the site's overrides and leave it alone.
   */
  mailStays?: boolean;
}

/** How the cut-over waits for a web site's databases and tries again. */
export interface DatabaseOptions {
  /** The bound of the wait inside the hold for the target to apply the origin's last write. */
  catchUpTimeoutMs: number;
  /** Cut-overs tried before the migration fails (each one that times out releases back to the origin). */
  catchUpAttempts: number;
  /** The pause between a timed-out cut-over and the next. */
  retryDelayMs: number;
  /**
   * Before each hold, the longest wait for the target's replication to be caught up (0 seconds
   * behind): the catch-up inside the hold is then a few transactions, and the pause stays short.
   * The hold begins anyway when it passes (the catch-up's own bound still applies).
   */
  lagWaitMs: number;
  /**
   * Where the origin's binary log cannot be replicated: databases up to this total size are
   * copied inside the cut-over hold (bounded by `catchUpTimeoutMs`); 0 = refused (the default).
   */
  copyInHoldMaxBytes: number;
}

export const DEFAULT_DATABASE_OPTIONS: DatabaseOptions = {
  catchUpTimeoutMs: 10_000,
  catchUpAttempts: 3,
  retryDelayMs: 30_000,
  lagWaitMs: 600_000,
  copyInHoldMaxBytes: 0,
};

/** A site's databases as planning found them: the origin's report, and where the target replicates from. */
export interface DatabasesPlanned extends SiteDatabasesPlan {
  /** The target's address as the origin's MariaDB sees it; absent when nothing moves. */
  replicaAddress?: string;
}

/** The origin's backup of a completed web site is kept this long unless configured. */
export const DEFAULT_BACKUP_KEEP_MS = 7 * 24 * 3600 * 1000;

/** One journal entry: written before the side effects it announces run. */
export interface JournalEntry {
  seq: number;
  migrationId: string;
  at: number;
  phase: Phase;
  /** `enter` a phase, a `step` inside it, or `leave` it. */
  kind: 'enter' | 'step' | 'leave' | 'note' | 'error';
  /** The step or note (steps.ts). */
  step?: JournalStep;
  detail?: Record<string, unknown>;
}

/** The state of one migration as the journal rebuilds it. */
export interface MigrationRecord {
  plan: MigrationPlan;
  phase: Phase;
  createdAt: number;
  updatedAt: number;
  error?: string;
  /** When each phase started and ended (epoch ms). */
  phases: Array<{ name: Phase; startedAt: number; endedAt: number | null }>;
  /**
   * True once nothing is left to do: a terminal phase whose work is over. `completed` is entered
   * after the clean-up (redirect, IPt, the origin's copy) and settles with a `leave` entry; a
   * journal of an older version may have entered it before its clean-up.
   */
  settled?: boolean;
  /** When the (last) redirect at the temporary IP was stopped; absent until then, or without one. */
  redirectRemovedAt?: number;
  /** When the (last) temporary IP was taken down; absent until then, or without one. */
  tempIpRemovedAt?: number;
}
