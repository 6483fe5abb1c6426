/** Zones and the change journal in SQLite. */
export { ZoneDb, packRecords, unpackRecords, type ZoneDbOptions } from './zone-db.js';
