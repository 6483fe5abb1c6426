/** The controller: servers, sites, migrations and their event stream. */
export {
  Controller,
  type ControllerOptions,
  type ControllerEvent,
  type ServerEntry,
  type SiteEntry,
  type StartMigrationRequest,
  type EvacuateRequest,
  type EvacuationSite,
} from './controller.js';
