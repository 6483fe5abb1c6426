/**
 * `ferry dns serve|check|export`: the authoritative server from a terminal.
 *
 * - `serve [--zone FILE...] [--zone-dir DIR...] --listen ADDR:PORT [--workers N] [--db PATH]
 *   [--catalog [ZONE]] [--allow-transfer ADDR...] [--allow-update ADDR...] [--max-records N]
 *   [--notify ADDR:PORT...]` runs in the foreground until SIGINT or SIGTERM, then closes the
 *   sockets, the workers and the database; SIGHUP reloads the zone files (zone/files.ts).
 *   Transfers, updates, the size limit and NOTIFY apply to every zone, the catalog zone
 *   (RFC 9432) among them.
 * - `check FILE` validates a zone file; an error names the file and line, and the exit code is 1.
 * - `export ZONE --db PATH` writes a stored zone as a master file on stdout.
 */
import net from 'node:net';
import type { Command } from 'commander';
import { FerryError } from '../common/errors.js';
import { createLogger } from '../common/log.js';
import {
  DEFAULT_CATALOG_ZONE,
  DnsServer,
  exportZone,
  loadZoneFile,
  startQueryThreadsEarly,
  ZoneFiles,
  type ZonePolicy,
} from '../dns/index.js';
import { ZoneDb } from '../dns/persist/index.js';

function usage(message: string): FerryError {
  return new FerryError('USAGE', message);
}

/** `ADDR:PORT`, `[v6]:PORT`, or a bare port (on 127.0.0.1). */
export function parseListen(text: string): { address: string; port: number } {
  const m =
    /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text) ??
    (/^\d+$/.test(text) ? [text, undefined, '127.0.0.1', text] : null);
  const address = m ? (m[1] ?? m[2]!) : '';
  const port = m ? Number(m[3]) : NaN;
  if (!m || net.isIP(address) === 0 || !(port >= 0 && port <= 65535)) {
    throw usage(
      `--listen must be ADDR:PORT with an IP address, e.g. 192.0.2.53:53 or [2001:db8::53]:53; got ${JSON.stringify(text)}`,
    );
  }
  return { address, port };
}

function positiveInt(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1)
    throw usage(`${name} must be a positive integer, got ${JSON.stringify(text)}`);
  return n;
}

interface ServeOptions {
  zone: string[];
  zoneDir: string[];
  allowUpdate: string[];
  maxRecords?: string;
  listen: string;
  workers: string;
  db?: string;
  catalog?: string | true;
  allowTransfer: string[];
  notify: string[];
}

/** The `*` zone policy `--allow-transfer` and `--notify` give (none: transfers refused, no NOTIFY). */
function servePolicy(o: ServeOptions): ZonePolicy | undefined {
  for (const [flag, list] of [
    ['--allow-transfer', o.allowTransfer],
    ['--allow-update', o.allowUpdate],
  ] as const)
    for (const a of list) {
      const [addr, len, ...rest] = a.split('/');
      const max = net.isIP(addr ?? '') === 6 ? 128 : 32;
      if (
        net.isIP(addr ?? '') === 0 ||
        rest.length ||
        (len !== undefined && !(/^\d+$/.test(len) && Number(len) <= max))
      )
        throw usage(
          `${flag} takes addresses or prefixes such as 192.0.2.54 or 198.51.100.0/24; got ${JSON.stringify(a)}`,
        );
    }
  const notify = o.notify.map((n) => {
    try {
      return parseListen(n);
    } catch {
      throw usage(`--notify takes ADDR:PORT, e.g. 192.0.2.54:53; got ${JSON.stringify(n)}`);
    }
  });
  const maxRecords = o.maxRecords === undefined ? undefined : positiveInt('--max-records', o.maxRecords);
  if (!o.allowTransfer.length && !o.allowUpdate.length && !notify.length && maxRecords === undefined)
    return undefined;
  return {
    ...(o.allowTransfer.length ? { allowTransfer: o.allowTransfer.map((address) => ({ address })) } : {}),
    ...(o.allowUpdate.length ? { allowUpdate: o.allowUpdate.map((address) => ({ address })) } : {}),
    ...(notify.length ? { notify } : {}),
    ...(maxRecords !== undefined ? { maxRecords } : {}),
  };
}

export function registerDns(program: Command): void {
  const dns = program.command('dns').description("Ferry's authoritative DNS server");

  dns
    .command('serve')
    .description('Serve zone files over UDP and TCP until SIGINT or SIGTERM')
    .option('--zone <file...>', 'zone files in master format (the origin is the SOA owner)', [])
    .option(
      '--zone-dir <dir...>',
      'directories whose *.zone files are each one zone (SIGHUP re-reads them)',
      [],
    )
    .option('--listen <addr:port>', 'address and port for UDP and TCP', '127.0.0.1:53')
    .option(
      '--workers <n>',
      'threads answering UDP queries (default 1; one per core is fastest; needs the native UDP addon)',
      '1',
    )
    .option('--db <path>', 'SQLite file keeping zones and every change across restarts')
    .option(
      '--catalog [zone]',
      `also serve a catalog zone (RFC 9432) listing every zone (default name ${DEFAULT_CATALOG_ZONE})`,
    )
    .option('--allow-transfer <addr...>', 'addresses or prefixes allowed AXFR/IXFR of every zone', [])
    .option('--allow-update <addr...>', 'addresses or prefixes allowed dynamic UPDATE of every zone', [])
    .option(
      '--max-records <n>',
      'refuse (REFUSED, logged) an UPDATE that would grow a zone beyond N records (default: no limit)',
    )
    .option('--notify <addr:port...>', 'secondaries told of every change by NOTIFY', [])
    .action(async (o: ServeOptions) => {
      const { address, port } = parseListen(o.listen);
      const workers = positiveInt('--workers', o.workers);
      if (o.zone.length === 0 && o.zoneDir.length === 0 && !o.db)
        throw usage('give at least one --zone FILE or --zone-dir DIR (or a --db with stored zones)');
      const policy = servePolicy(o);
      // The query threads load their code while this thread reads the zones.
      const dropEarly = workers > 1 ? startQueryThreadsEarly(workers) : () => {};
      const files = new ZoneFiles({ files: o.zone, dirs: o.zoneDir });
      const log = createLogger('ferry-dns');
      let server: DnsServer;
      try {
        const zones = await files.loadAll();
        server = new DnsServer({
          address,
          port,
          zones,
          workers,
          logger: log,
          ...(o.db ? { db: o.db } : {}),
          ...(policy ? { zonePolicies: { '*': policy } } : {}),
          ...(o.catalog ? { catalog: o.catalog === true ? {} : { zone: o.catalog } } : {}),
        });
        await server.start();
      } finally {
        // None left when the threads started; all when one thread answers, or nothing started.
        dropEarly();
      }
      const served = server.zones.list();
      const what = served.length <= 20 ? served.map((z) => z.origin).join(' ') : `${served.length} zones`;
      // With query threads the server has no UDP socket of its own (udpKind); without the native
      // addon it answers UDP in this thread alone, whatever --workers asked (server.ts warns).
      const threads = server.udpKind === undefined ? workers : 1;
      const how =
        threads > 1
          ? `UDP in ${threads} query threads, TCP in the main thread`
          : workers > 1
            ? `UDP and TCP in the main thread alone, not the ${workers} workers asked for`
            : 'UDP and TCP, 1 worker';
      process.stdout.write(`ferry dns: serving ${what} on ${server.address}:${server.port} (${how})\n`);
      // SIGHUP: one reload at a time; another SIGHUP meanwhile runs one more after it.
      let reloading: Promise<void> | undefined;
      let again = false;
      const reload = async (): Promise<void> => {
        const r = await files.reload(server.zones);
        for (const f of r.refused)
          log.error(
            { file: f.file, code: f.error.code },
            `zone file refused, the served copy stays: ${f.error.message}`,
          );
        await server.sync();
        process.stdout.write(
          `ferry dns: reloaded: ${r.added.length} added, ${r.replaced.length} replaced, ${r.removed.length} removed, ` +
            `${r.unchanged} unchanged, ${r.refused.length} refused\n`,
        );
      };
      const onHup = () => {
        if (reloading) {
          again = true;
          return;
        }
        reloading = (async () => {
          do {
            again = false;
            await reload().catch((err: unknown) => log.error({ err }, 'zone reload failed'));
          } while (again);
          reloading = undefined;
        })();
      };
      process.on('SIGHUP', onHup);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      process.off('SIGHUP', onHup);
      await reloading;
      await server.stop();
      process.stdout.write('ferry dns: stopped\n');
    });

  dns
    .command('check')
    .description('Validate a zone file: exit 0 when good, 1 with file:line: problem when not')
    .argument('<file>', 'zone file in master format')
    .option('--origin <name>', 'zone apex, when the file does not start at its SOA owner')
    .action(async (file: string, o: { origin?: string }) => {
      const zone = await loadZoneFile(file, o.origin ? { origin: o.origin } : {});
      const records = zone.rrsets().reduce((n, s) => n + s.rdata.length, 0);
      process.stdout.write(
        `${file}: OK: zone ${zone.origin} serial ${zone.serial}, ${zone.size} names, ${records} records\n`,
      );
    });

  dns
    .command('export')
    .description('Write a stored zone as a master file on stdout')
    .argument('<zone>', 'the zone origin, e.g. example.com.')
    .option('--db <path>', 'the SQLite file `ferry dns serve --db` keeps')
    .action((origin: string, o: { db?: string }) => {
      if (!o.db)
        throw usage('give --db PATH: zones are exported from the database `ferry dns serve --db PATH` keeps');
      const db = new ZoneDb(o.db);
      try {
        const zone = db.loadZone(origin);
        if (!zone) {
          const known = db.zones().map((z) => z.origin);
          throw new FerryError(
            'DNS_NOT_AUTHORITATIVE',
            `zone ${origin} is not in ${o.db} (it holds: ${known.length ? known.join(', ') : 'no zones'})`,
          );
        }
        process.stdout.write(exportZone(zone));
      } finally {
        db.close();
      }
    });
}
