/** A migration plan for tests of the journal stores: its addresses from the documentation range. */
import { DEFAULT_TIMINGS, type MigrationPlan } from '../src/migration/types.js';

export function samplePlan(id: string, domain = 'shop.example.'): MigrationPlan {
  return {
    id,
    domain,
    origin: 'origin',
    target: 'target',
    originIp: '192.0.2.1',
    targetIp: '192.0.2.2',
    tempIp: '192.0.2.100',
    ports: [80],
    timings: DEFAULT_TIMINGS,
  };
}
