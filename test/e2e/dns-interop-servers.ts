/**
 * Real Knot DNS, BIND and PowerDNS for interop and migration tests: each runs on a loopback address and a free port, in
 * its own temporary folder with its own config, pid file and storage, and is stopped (and the
 * folder removed) by `stop()`, also when a test fails.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dnsQuery } from '../../src/dns/index.js';
import { createPowerDnsProvider, type PowerDnsProvider } from '../../src/migration/index.js';
import { freePort } from '../ports.js';

/** True when the binary is on the PATH. */
export function have(bin: string): boolean {
  try {
    execFileSync('which', [bin], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export interface TsigSpec {
  name: string;
  algorithm: string;
  secret: string;
}

/** A running external name server. */
export interface ExternalDns {
  kind: 'knot' | 'bind' | 'powerdns';
  address: string;
  port: number;
  dir: string;
  /** Its log so far (stderr and stdout). */
  log(): string;
  stop(): Promise<void>;
}

/** Waits until the server answers a SOA query for `zone` (any rcode counts when `anyAnswer`). */
export async function waitServing(
  s: { address: string; port: number },
  zone: string,
  timeoutMs = 15_000,
  want: (serial: number | undefined) => boolean = (x) => x !== undefined,
  anyAnswer = false,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < end) {
    try {
      const r = await dnsQuery({ server: s, name: zone, type: 'SOA', timeoutMs: 500 });
      const soa = r.answers.find((a) => a.typeName === 'SOA');
      const serial = soa ? Number(soa.rdata.split(' ')[2]) : undefined;
      if ((anyAnswer || r.flags.aa) && want(serial)) return;
      last = `rcode ${r.rcodeName}, serial ${serial}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${s.address}:${s.port} does not serve ${zone} as wanted (${last})`);
}

function run(
  kind: ExternalDns['kind'],
  bin: string,
  args: string[],
  dir: string,
  address: string,
  port: number,
): ExternalDns {
  let out = '';
  const child: ChildProcess = spawn(bin, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    kind,
    address,
    port,
    dir,
    log: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface PrimaryZone {
  origin: string;
  /** Zone file text. */
  text: string;
}

export interface SecondaryZone {
  origin: string;
  primary: { address: string; port: number };
  /** Sign transfers (and SOA checks) with this key. */
  key?: TsigSpec;
}

/** A catalog zone (RFC 9432) to consume: its member zones are transferred from the same primary. */
export interface CatalogConsumer {
  origin: string;
  primary: { address: string; port: number };
}

export interface ExternalOptions {
  address: string;
  /** Consume this catalog zone: serve every zone it lists as a secondary. */
  catalog?: CatalogConsumer;
  /** Serve these zones as primary, updatable with `updateKey`. */
  primaryZones?: PrimaryZone[];
  updateKey?: TsigSpec;
  /** Be a secondary for these zones. */
  secondaryZones?: SecondaryZone[];
}

const knotAlg = (a: string) => a.replace(/\.$/, '');

/** Starts knotd with its own config in a temporary folder. */
export async function startKnot(opts: ExternalOptions): Promise<ExternalDns> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-knot-'));
  mkdirSync(join(dir, 'db'));
  const port = await freePort(opts.address, { udp: true });
  const keys = new Map<string, TsigSpec>();
  if (opts.updateKey) keys.set(opts.updateKey.name, opts.updateKey);
  for (const z of opts.secondaryZones ?? []) if (z.key) keys.set(z.key.name, z.key);
  const lines = [
    'server:',
    `  listen: ${opts.address}@${port}`,
    `  rundir: "${dir}"`,
    `  pidfile: "${join(dir, 'knot.pid')}"`,
    'database:',
    `  storage: "${join(dir, 'db')}"`,
    'control:',
    `  listen: "${join(dir, 'knot.sock')}"`,
    'log:',
    '  - target: stderr',
    '    any: info',
  ];
  if (keys.size) {
    lines.push('key:');
    for (const k of keys.values())
      lines.push(`  - id: ${k.name}`, `    algorithm: ${knotAlg(k.algorithm)}`, `    secret: ${k.secret}`);
  }
  const secondaries = opts.secondaryZones ?? [];
  const cat = opts.catalog;
  if (secondaries.length || cat) {
    lines.push('remote:');
    secondaries.forEach((z, i) =>
      lines.push(
        `  - id: primary${i}`,
        `    address: ${z.primary.address}@${z.primary.port}`,
        ...(z.key ? [`    key: ${z.key.name}`] : []),
      ),
    );
    if (cat) lines.push('  - id: catalog-primary', `    address: ${cat.primary.address}@${cat.primary.port}`);
  }
  lines.push('acl:');
  if (cat) lines.push('  - id: catalog-notify', `    address: ${cat.primary.address}`, '    action: notify');
  if (opts.updateKey) lines.push('  - id: update', `    key: ${opts.updateKey.name}`, '    action: update');
  secondaries.forEach((z, i) =>
    lines.push(
      `  - id: notify${i}`,
      `    address: ${z.primary.address}`,
      ...(z.key ? [`    key: ${z.key.name}`] : []),
      '    action: notify',
    ),
  );
  lines.push('  - id: xfr', '    address: 127.0.0.0/8', '    action: transfer');
  lines.push(
    'template:',
    '  - id: default',
    `    storage: "${dir}"`,
    '    file: "%s.zone"',
    '    zonefile-sync: -1',
    '    zonefile-load: whole',
    '    journal-content: changes',
    '    serial-policy: increment',
  );
  // Members of a consumed catalog: secondaries of the catalog's primary (catalog-template).
  if (cat)
    lines.push(
      '  - id: catalog-member',
      `    storage: "${dir}"`,
      '    file: "%s.zone"',
      '    zonefile-sync: -1',
      '    master: catalog-primary',
      '    acl: [catalog-notify, xfr]',
    );
  lines.push('zone:');
  for (const z of opts.primaryZones ?? []) {
    writeFileSync(join(dir, `${z.origin.replace(/\.$/, '')}.zone`), z.text);
    lines.push(`  - domain: ${z.origin}`, `    acl: [${opts.updateKey ? 'update, ' : ''}xfr]`);
  }
  secondaries.forEach((z, i) =>
    lines.push(`  - domain: ${z.origin}`, `    master: primary${i}`, `    acl: [notify${i}, xfr]`),
  );
  if (cat)
    lines.push(
      `  - domain: ${cat.origin}`,
      '    master: catalog-primary',
      '    acl: [catalog-notify, xfr]',
      '    catalog-role: interpret',
      '    catalog-template: catalog-member',
    );
  writeFileSync(join(dir, 'knot.conf'), lines.join('\n') + '\n');
  const srv = run('knot', 'knotd', ['-c', join(dir, 'knot.conf')], dir, opts.address, port);
  try {
    for (const z of [...(opts.primaryZones ?? []), ...secondaries]) await waitServing(srv, z.origin);
    // Knot consumes a catalog without answering for it (REFUSED): up is enough.
    if (cat) await waitServing(srv, cat.origin, 15_000, () => true, true);
  } catch (err) {
    const log = srv.log();
    await srv.stop();
    throw new Error(`knotd did not come up: ${(err as Error).message}\n${log}`);
  }
  return srv;
}

const bindAlg = (a: string) => a.replace(/\.$/, '');

/**
 * Starts named (BIND 9) in the foreground with its own config in a temporary folder. named binds
 * only addresses configured on an interface, so on loopback use 127.0.0.1 (with a free port).
 */
export async function startBind(opts: ExternalOptions): Promise<ExternalDns> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bind-'));
  const port = await freePort(opts.address, { udp: true });
  const keys = new Map<string, TsigSpec>();
  if (opts.updateKey) keys.set(opts.updateKey.name, opts.updateKey);
  for (const z of opts.secondaryZones ?? []) if (z.key) keys.set(z.key.name, z.key);
  const conf: string[] = [
    'options {',
    `  directory "${dir}";`,
    `  pid-file "${join(dir, 'named.pid')}";`,
    `  session-keyfile "${join(dir, 'session.key')}";`,
    `  managed-keys-directory "${dir}";`,
    `  listen-on port ${port} { ${opts.address}; };`,
    '  listen-on-v6 { none; };',
    '  recursion no;',
    '  notify no;',
    '  allow-transfer { 127.0.0.0/8; };',
    '  dnssec-validation no;',
    // Zones of a consumed catalog, transferred from its primary; BIND adds them as new zones.
    ...(opts.catalog
      ? [
          '  allow-new-zones yes;',
          `  catalog-zones { zone "${opts.catalog.origin}" default-primaries port ${opts.catalog.primary.port} { ${opts.catalog.primary.address}; } zone-directory "${dir}" min-update-interval 1; };`,
        ]
      : []),
    '};',
    'controls { };',
  ];
  for (const k of keys.values())
    conf.push(`key "${k.name}" { algorithm ${bindAlg(k.algorithm)}; secret "${k.secret}"; };`);
  for (const z of opts.primaryZones ?? []) {
    const file = `${z.origin.replace(/\.$/, '')}.db`;
    writeFileSync(join(dir, file), z.text);
    conf.push(
      `zone "${z.origin}" { type primary; file "${file}"; ${opts.updateKey ? `allow-update { key "${opts.updateKey.name}"; };` : ''} };`,
    );
  }
  for (const z of opts.secondaryZones ?? []) {
    const file = `${z.origin.replace(/\.$/, '')}.sec`;
    conf.push(
      `zone "${z.origin}" { type secondary; file "${file}"; primaries port ${z.primary.port} { ${z.primary.address}${z.key ? ` key "${z.key.name}"` : ''}; }; allow-notify { ${z.primary.address}; 127.0.0.0/8; }; };`,
    );
  }
  if (opts.catalog) {
    const c = opts.catalog;
    conf.push(
      `zone "${c.origin}" { type secondary; file "catalog.sec"; primaries port ${c.primary.port} { ${c.primary.address}; }; allow-notify { ${c.primary.address}; }; };`,
    );
  }
  writeFileSync(join(dir, 'named.conf'), conf.join('\n') + '\n');
  const srv = run('bind', 'named', ['-g', '-c', join(dir, 'named.conf'), '-n', '1'], dir, opts.address, port);
  try {
    for (const z of [
      ...(opts.primaryZones ?? []),
      ...(opts.secondaryZones ?? []),
      ...(opts.catalog ? [opts.catalog] : []),
    ])
      await waitServing(srv, z.origin);
  } catch (err) {
    const log = srv.log();
    await srv.stop();
    throw new Error(`named did not come up: ${(err as Error).message}\n${log}`);
  }
  return srv;
}

/** A running PowerDNS Authoritative server: its DNS side, and its HTTP API with the key it takes. */
export interface PowerDns extends ExternalDns {
  /** Base URL of the API. */
  api: string;
  apiKey: string;
  /** Runs pdnsutil against this server's config (e.g. to change a zone's metadata). */
  pdnsutil(args: string[]): string;
}

/**
 * A folder for pdns_server (Debian's pdns-server with pdns-backend-sqlite3): its config and a
 * SQLite database made from the schema Debian ships, listening on `address`:`port` (DNS) and
 * `apiPort` (API, with `apiKey`). Each primary zone is loaded with pdnsutil and gets SOA-EDIT-API
 * INCREASE (every API change raises its serial); with `updateKey`, RFC 2136 updates are on
 * (`dnsupdate=yes`, `allow-dnsupdate-from` loopback), the key is in the `tsigkeys` table and each
 * zone's TSIG-ALLOW-DNSUPDATE names it. Run it with `pdns_server --config-dir=DIR`.
 */
export function powerDnsFolder(
  dir: string,
  opts: ExternalOptions & { port: number; apiPort: number; apiKey: string },
): { pdnsutil(args: string[]): string } {
  const db = join(dir, 'pdns.sqlite');
  execFileSync('sqlite3', [db], {
    input: readFileSync('/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql'),
  });
  const conf = [
    'launch=gsqlite3',
    `gsqlite3-database=${db}`,
    `local-address=${opts.address}`,
    `local-port=${opts.port}`,
    `socket-dir=${dir}`,
    'guardian=no',
    'daemon=no',
    'disable-syslog=yes',
    'loglevel=4',
    'api=yes',
    `api-key=${opts.apiKey}`,
    'webserver=yes',
    `webserver-address=${opts.address}`,
    `webserver-port=${opts.apiPort}`,
    `webserver-allow-from=127.0.0.0/8,${opts.address}/32`,
    ...(opts.updateKey ? ['dnsupdate=yes', 'allow-dnsupdate-from=127.0.0.0/8'] : []),
  ];
  writeFileSync(join(dir, 'pdns.conf'), conf.join('\n') + '\n');
  const pdnsutil = (args: string[]) =>
    execFileSync('pdnsutil', [`--config-dir=${dir}`, ...args], { encoding: 'utf8', stdio: 'pipe' });
  if (opts.updateKey)
    pdnsutil([
      'import-tsig-key',
      opts.updateKey.name.replace(/\.$/, ''),
      opts.updateKey.algorithm,
      opts.updateKey.secret,
    ]);
  for (const z of opts.primaryZones ?? []) {
    const file = join(dir, `${z.origin.replace(/\.$/, '')}.zone`);
    writeFileSync(file, z.text);
    pdnsutil(['load-zone', z.origin, file]);
    pdnsutil(['set-meta', z.origin, 'SOA-EDIT-API', 'INCREASE']);
    if (opts.updateKey)
      pdnsutil(['set-meta', z.origin, 'TSIG-ALLOW-DNSUPDATE', opts.updateKey.name.replace(/\.$/, '')]);
  }
  return { pdnsutil };
}

/** Starts pdns_server on a loopback address and free ports, in its own folder (`powerDnsFolder`). */
export async function startPowerDns(opts: ExternalOptions & { apiKey?: string }): Promise<PowerDns> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-pdns-'));
  let srv: ExternalDns | undefined;
  try {
    const port = await freePort(opts.address, { udp: true });
    const apiPort = await freePort(opts.address);
    const apiKey = opts.apiKey ?? 'pdns-test-key-' + port;
    const { pdnsutil } = powerDnsFolder(dir, { ...opts, port, apiPort, apiKey });
    srv = run('powerdns', 'pdns_server', [`--config-dir=${dir}`], dir, opts.address, port);
    for (const z of opts.primaryZones ?? []) await waitServing(srv, z.origin);
    return { ...srv, api: `http://${opts.address}:${apiPort}`, apiKey, pdnsutil };
  } catch (err) {
    const log = srv?.log() ?? '';
    if (srv) await srv.stop();
    else rmSync(dir, { recursive: true, force: true });
    throw new Error(`pdns_server did not come up: ${(err as Error).message}\n${log}`);
  }
}

/** Why a PowerDNS test is skipped here, or false when pdns_server is installed. */
export const noPowerDns = (): string | false =>
  have('pdns_server')
    ? false
    : 'pdns_server is not installed (apt-get install pdns-server pdns-backend-sqlite3)';

/**
 * PowerDNS serving zone `example.` (`text`) at `address`, and the powerdns provider for it as
 * `dns: { provider: powerdns, api, apiKey, zone, servers }` in ferry.yaml builds it (the
 * propagation check asks that server): what a migration test with PowerDNS as its DNS needs.
 */
export async function startPowerDnsZone(
  text: string,
  address: string,
): Promise<{
  pdns: PowerDns;
  server: { address: string; port: number };
  provider: PowerDnsProvider;
  stop(): Promise<void>;
}> {
  const pdns = await startPowerDns({ address, primaryZones: [{ origin: 'example.', text }] });
  const server = { address, port: pdns.port };
  const provider = createPowerDnsProvider({
    api: pdns.api,
    apiKey: pdns.apiKey,
    zone: 'example.',
    nameServers: [server],
  });
  return { pdns, server, provider, stop: () => pdns.stop() };
}

/** Reads a file of the server's folder, or '' (debugging aid in assertion messages). */
export function readIn(dir: string, file: string): string {
  const p = join(dir, file);
  return existsSync(p) ? readFileSync(p, 'utf8') : '';
}
