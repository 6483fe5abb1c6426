/** Reading a hosting server's own web server configuration (nginx or Apache 2.4): its sites and what Ferry can move. */
export { readWebSites, DEFAULT_DECLARED_ROOTS, type WebConfigOptions } from './read.js';
export { assessSites, defaultCustomerOf, siteDataDirOf, type AssessOptions } from './assess.js';
export {
  parseNginx,
  parseNginxDump,
  tokenizeNginx,
  type NginxDirective,
  type NginxToken,
} from './nginx-syntax.js';
export { parseFpmPools } from './php-fpm.js';
export type {
  FpmPool,
  Refusal,
  RefusalCode,
  SiteApp,
  SiteListen,
  SiteNeed,
  SiteNeeds,
  SiteMail,
  SitePath,
  SourceRef,
  WebSite,
  WebSitesReport,
} from './model.js';
