/**
 * Knot DNS as the benchmarks' peer: one knot.conf shape for every DNS bench, so that Ferry is
 * always compared with the same Knot set-up (as many UDP and TCP threads as Ferry has workers,
 * zones read from files, nothing written back to them, no journal).
 */

/** The config of a Knot listening on address@port serving `zones`, each read from `file` (`%s`: the zone's name). */
export function knotConf(o: {
  dir: string;
  address: string;
  port: number;
  workers: number;
  zones: string[];
  file: string;
}): string {
  const lines = [
    'server:',
    `    rundir: "${o.dir}"`,
    `    listen: ${o.address}@${o.port}`,
    `    udp-workers: ${o.workers}`,
    `    tcp-workers: ${o.workers}`,
    '    background-workers: 1',
    'log:',
    '  - target: stderr',
    '    any: error',
    'database:',
    `    storage: "${o.dir}"`,
    'template:',
    '  - id: default',
    `    storage: "${o.dir}"`,
    `    file: "${o.file}"`,
    '    journal-content: none',
    '    zonefile-sync: -1',
    'zone:',
  ];
  for (const z of o.zones) lines.push(`  - domain: ${z}`);
  return lines.join('\n') + '\n';
}
