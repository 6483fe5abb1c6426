/**
 * The names a migration journals: its steps (journaled before they run), its notes (what it
 * observed or finished) and its waits. Journals keep these strings for good, and a resumed run
 * looks its past up by them, so a value here never changes once released; code names a step
 * through this table only.
 */

/** Steps and notes, by what they do. The IPv6 family's steps get `-v6` appended (`familyStep`). */
export const STEP = {
  // Notes of every phase.
  originalRecord: 'original-record',
  observedState: 'observed-state',
  dnsChange: 'dns-change',
  dnsPropagated: 'dns-propagated',
  // temp-ip (in direct mode: syncing): a web site gets its gate on the origin first
  originGateSite: 'origin-gate-site',
  // temp-ip (per family)
  addAddress: 'add-address',
  startRedirect: 'start-redirect',
  probeTempIp: 'probe-temp-ip',
  // syncing
  targetAddSite: 'target-add-site',
  /** A web site: the origin's bundle installed on the target (only that it ran is journaled). */
  targetInstallSite: 'target-install-site',
  initialSync: 'initial-sync',
  /** A web site's databases (docs/databases.md): what planning found (a note, no secret). */
  dbPlan: 'db-plan',
  /** The origin's replication user for the target (the source it returns never goes into the journal). */
  dbOpenSource: 'db-open-source',
  /** The target copies the databases and starts its channel; `db-copied` notes it finished. */
  dbCopy: 'db-copy',
  dbCopied: 'db-copied',
  // preflight
  parity: 'parity',
  parityResults: 'parity-results',
  // cutover
  holdRedirect: 'hold-redirect',
  holdOriginSite: 'hold-origin-site',
  waitOriginIdle: 'wait-origin-idle',
  finalSync: 'final-sync',
  /** The origin's site users lose their writes; `db-frozen` notes the origin's position. */
  dbFreezeOrigin: 'db-freeze-origin',
  dbFrozen: 'db-frozen',
  /** The target applies that position and becomes the writer; `db-took-over` notes its own position. */
  dbTakeOver: 'db-take-over',
  dbTookOver: 'db-took-over',
  // The catch-up passed its bound: the origin writes and serves again, the redirects release to
  // it, and the cut-over is tried again after a delay (`db-catchup-timeout` notes when).
  dbThawOrigin: 'db-thaw-origin',
  dbRetryOriginServe: 'db-retry-origin-serve',
  dbRetryReleaseRedirect: 'db-retry-release-redirect',
  dbCatchupTimeout: 'db-catchup-timeout',
  targetServe: 'target-serve',
  originProxy: 'origin-proxy',
  redirectToTarget: 'redirect-to-target',
  releaseRedirect: 'release-redirect',
  // end of draining: the clean-up before completed
  stopRedirect: 'stop-redirect',
  removeAddress: 'remove-address',
  originRemoveSite: 'origin-remove-site',
  /** The origin's replication user goes; its frozen copy of the databases stays as their backup. */
  dbCloseSource: 'db-close-source',
  // a web site's end of draining, instead of origin-remove-site: the target's gate goes, then the
  // origin's vhost, pool, crontab and data go into a backup
  targetFinishSite: 'target-finish-site',
  originFinishSite: 'origin-finish-site',
  // Notes journaled once a redirect at IPt, and IPt itself, are gone (after the step acted).
  redirectRemoved: 'redirect-removed',
  tempIpRemoved: 'temp-ip-removed',
  // rollback before the switch
  undoReleaseRedirect: 'undo-release-redirect',
  undoOriginServe: 'undo-origin-serve',
  // A web site's databases, before anything else is undone: the target's copy goes (it is then
  // no writer), the origin writes again, its replication user goes.
  /** After a take-over (the switch itself failed): the target's site users lose their writes first. */
  undoDbFreezeTarget: 'undo-db-freeze-target',
  undoDbDropCopy: 'undo-db-drop-copy',
  undoDbThawOrigin: 'undo-db-thaw-origin',
  undoDbCloseSource: 'undo-db-close-source',
  undoTargetRemoveSite: 'undo-target-remove-site',
  undoTargetUninstallSite: 'undo-target-uninstall-site',
  undoOriginUngateSite: 'undo-origin-ungate-site',
  undoStopRedirect: 'undo-stop-redirect',
  undoRemoveAddress: 'undo-remove-address',
  // rollback after the switch: the reverse migration (every name starts with `reverse-`)
  reverseOriginAddSite: 'reverse-origin-add-site',
  reverseInitialSync: 'reverse-initial-sync',
  reverseHoldRedirect: 'reverse-hold-redirect',
  reverseHoldTarget: 'reverse-hold-target',
  reverseWaitTargetIdle: 'reverse-wait-target-idle',
  reverseFinalSync: 'reverse-final-sync',
  reverseOriginServe: 'reverse-origin-serve',
  reverseTargetProxy: 'reverse-target-proxy',
  reverseRedirectToOrigin: 'reverse-redirect-to-origin',
  reverseReleaseRedirect: 'reverse-release-redirect',
  reverseStopRedirect: 'reverse-stop-redirect',
  reverseRemoveAddress: 'reverse-remove-address',
  reverseTargetRemoveSite: 'reverse-target-remove-site',
  reverseTargetUninstallSite: 'reverse-target-uninstall-site',
  reverseOriginUngateSite: 'reverse-origin-ungate-site',
  // A web site's databases replicated back: a reverse channel (target → origin) before the reverse
  // sync, and inside the reverse hold the target frozen and the origin caught up before it serves.
  reverseDbOpenSource: 'reverse-db-open-source',
  reverseDbStartChannel: 'reverse-db-start-channel',
  reverseDbFreezeTarget: 'reverse-db-freeze-target',
  reverseDbTakeOver: 'reverse-db-take-over',
  // The reverse catch-up timed out: the target writes and serves again, the redirects release to it.
  reverseDbThawTarget: 'reverse-db-thaw-target',
  reverseDbTargetServe: 'reverse-db-target-serve',
  reverseDbReleaseRedirect: 'reverse-db-release-redirect',
  // The end: both migration users go (the reverse one on the target, the forward one on the origin).
  reverseDbCloseSource: 'reverse-db-close-source',
  reverseDbCloseForwardSource: 'reverse-db-close-forward-source',
} as const;

export type Step = (typeof STEP)[keyof typeof STEP];

/** The data copies, each a step of its own. */
export const SYNC_PASSES = [
  STEP.initialSync,
  STEP.finalSync,
  STEP.reverseInitialSync,
  STEP.reverseFinalSync,
] as const;
export type SyncPass = (typeof SYNC_PASSES)[number];

/** What a migration waits for (the `what` of `wait` events; their end is journaled as a note). */
export const WAIT = {
  oldTtl: 'old-ttl',
  ip1Quiet: 'ip1-quiet',
  iptQuiet: 'ipt-quiet',
  ip1ProxyQuiet: 'ip1-proxy-quiet',
  rollbackIptQuiet: 'rollback-ipt-quiet',
  reverseIp2Quiet: 'reverse-ip2-quiet',
  dnsPropagation: 'dns-propagation',
  /** The pause after a cut-over whose database catch-up timed out, before the next one. */
  dbRetry: 'db-retry',
} as const;

export type Wait = (typeof WAIT)[keyof typeof WAIT];

/** Appended to step names of the IPv6 family ('' for IPv4, so journals stay as they were). */
export type FamilySuffix = '' | '-v6';

/** How a quiet wait ended: traffic was quiet, or its cap was reached. */
export type WaitEnd = 'quiet' | 'cap';

/** The steps and notes of the site's domain (journals of older versions hold only these). */
type DomainStep =
  | `${Step}${FamilySuffix}`
  | `${typeof STEP.originalRecord}-AAAA`
  | `${SyncPass}-done`
  | `${Wait}-passed`
  | `${Wait}-${WaitEnd}`;

/** Every name the journal's `step` column holds: a DNS step of another of the site's names gets `@name`. */
export type JournalStep = DomainStep | `${DomainStep}@${string}`;

/** `step` for one address family. */
export function familyStep<S extends Step>(step: S, suffix: FamilySuffix): `${S}${FamilySuffix}` {
  return `${step}${suffix}`;
}

/**
 * `step` for one of the site's names: the domain's keeps its plain name (journals of older
 * versions stay resumable), another name's gets `@` and the name (`dns-change@www.example.`).
 */
export function nameStep(step: DomainStep, name: string, domain: string): JournalStep {
  return name === domain ? step : `${step}@${name}`;
}

/**
 * The note holding a record as it was before the migration (the domain's A record's keeps its
 * old name; another name's gets `@name`, see `nameStep`).
 */
export function originalRecordNote(type: 'A' | 'AAAA', name?: string, domain?: string): JournalStep {
  const step: DomainStep = type === 'A' ? STEP.originalRecord : `${STEP.originalRecord}-${type}`;
  return name === undefined || domain === undefined ? step : nameStep(step, name, domain);
}

/** The note journaled when a sync pass is done. */
export function syncDoneNote(pass: SyncPass): `${SyncPass}-done` {
  return `${pass}-done`;
}

/** The sync pass a `-done` note ends, or undefined. */
export function syncPassDone(step: string): SyncPass | undefined {
  return SYNC_PASSES.find((p) => step === syncDoneNote(p));
}

/** The note journaled when a fixed wait (a TTL) has passed. */
export function waitPassedNote(wait: Wait): `${Wait}-passed` {
  return `${wait}-passed`;
}

/** The note journaled when a quiet wait ends. */
export function waitEndNote(wait: Wait, end: WaitEnd): `${Wait}-${WaitEnd}` {
  return `${wait}-${end}`;
}

/** True for the steps of a reverse migration (a rollback after the switch). */
export function isReverseStep(step: string | undefined): boolean {
  return step !== undefined && step.startsWith('reverse-');
}
