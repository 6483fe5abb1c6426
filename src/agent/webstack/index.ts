/** A real site of the server's own web server, gated, exported, recreated elsewhere and retired. */
export { WebStack, type WebStackOptions, type WebSiteBundle, type GateUpstream } from './stack.js';
export { NginxFlavor, type NginxFlavorOptions } from './nginx.js';
export type { PhpFpmOptions, SystemGroup, SystemUser } from './system.js';
export type { GeneratedConfig, GeneratedFile, SiteConfigFile, WebFlavor, WebStackLayout } from './flavor.js';
