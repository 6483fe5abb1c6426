/**
 * Loads one zone file into a ZoneStore in a fresh process and prints the load time and the RSS
 * (bench/dns/run.ts runs it on a zone of 1,000,000 records). Usage: load.ts FILE
 */
import { loadZoneFile, ZoneStore } from '../../src/dns/index.js';

const file = process.argv[2];
if (!file) {
  console.error('usage: load.ts ZONE_FILE');
  process.exit(2);
}
const rss0 = process.memoryUsage().rss;
const t0 = performance.now();
const zone = await loadZoneFile(file);
const store = new ZoneStore([zone]);
const ms = performance.now() - t0;
const records = zone.rrsets().reduce((n, s) => n + s.rdata.length, 0);
const rss = process.memoryUsage().rss;
(globalThis as { gc?: () => void }).gc?.();
const mb = (n: number) => (n / 1048576).toFixed(0);
console.log(
  `1M-record zone: ${records} records, ${zone.size} names loaded in ${(ms / 1000).toFixed(1)} s; ` +
    `RSS ${mb(rss)} MB after load (${mb(process.memoryUsage().rss)} MB after GC, ${mb(rss0)} MB before), heap used ${mb(process.memoryUsage().heapUsed)} MB`,
);
void store;
