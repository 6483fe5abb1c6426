/**
 * The agent's MariaDB component: which databases a site uses, the prerequisites of moving them,
 * the consistent initial copy with users and grants, replication over a named channel, and the
 * cut-over primitives (position, bounded wait, freeze and thaw of the site's writes), the admin
 * account's option file, and `DatabaseMover`, which puts them together for the agent's API.
 */
export { Db, withDb, describeEndpoint, type DbEndpoint } from './client.js';
export {
  discoverDatabases,
  parseWpConfig,
  parseDbHost,
  locate,
  type DbLocation,
  type SiteDatabase,
  type SiteDatabases,
  type DatabaseLeftInPlace,
  type DeclaredDatabase,
  type DiscoverOptions,
  type WpConfigDb,
} from './discovery.js';
export {
  checkOrigin,
  checkTarget,
  checkReach,
  databaseSizes,
  readServerInfo,
  throwIfProblems,
  type DbProblem,
  type ServerInfo,
} from './checks.js';
export {
  copyDatabases,
  readSiteAccounts,
  createSiteAccounts,
  dropSiteAccounts,
  dropPartialCopy,
  type SiteAccount,
  type CopyOptions,
  type CopyResult,
} from './copy.js';
export {
  channelName,
  channelConfig,
  channelConfigPath,
  createMigrationUser,
  dropMigrationUser,
  startChannel,
  channelStatus,
  parseGtidPos,
  channelLag,
  readBinlogPos,
  waitForPosition,
  removeChannel,
  type ChannelLag,
  type ChannelOptions,
  type ChannelSource,
  type ChannelStatus,
  type MigrationUser,
} from './replication.js';
export { freezeSiteWrites, thawSiteWrites, killConnections } from './writes.js';
export { parseOptionFile, readOptionFile, DEFAULT_SOCKET } from './option-file.js';
export {
  DatabaseMover,
  findSiteDatabases,
  type DatabaseMoverOptions,
  type MariaDbAgentOptions,
} from './mover.js';
