/** A real site of the server's own web server, gated, exported, recreated elsewhere and retired. */
export { WebStack, type WebStackOptions, type WebSiteBundle, type GateUpstream } from './stack.js';
export { NginxFlavor, type NginxFlavorOptions } from './nginx.js';
export { ApacheFlavor, apacheModulesNeeded, type ApacheFlavorOptions, type ModuleNeed } from './apache.js';
export type { PhpFpmLayout, TargetLack } from './target-check.js';
export type { PhpFpmOptions, SystemGroup, SystemUser } from './system.js';
export type { GeneratedConfig, GeneratedFile, SiteConfigFile, WebFlavor, WebStackLayout } from './flavor.js';
