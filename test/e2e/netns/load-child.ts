/**
 * Runs inside the `client` namespace (spawned through `ip netns exec`): the load generator,
 * resolving through the local caching resolver (unbound on 127.0.0.1:53), plus a watcher of the
 * migrated domain's answer as that resolver gives it. Writes JSON lines on stdout:
 *   {"type":"ready"}, {"type":"dns","at","address","family"} on each change,
 *   and after "stop" on stdin: {"type":"result",...,"family"} per request, then {"type":"summary",...}.
 * Options come as one JSON argument: { sites, port, rate, clients, staleShare, staleOverstayMs, watch, requestTimeoutMs, resolver, ipv6? }.
 * With `ipv6: { rate, clients }`, a second set of users resolves AAAA and connects over IPv6, and
 * the AAAA answer of `watch` is watched too; the summary's acknowledgedWrites covers both.
 */
import { createInterface } from 'node:readline';
import { dnsQuery } from '../../../src/dns/index.js';
import { LoadGenerator } from '../../../src/loadgen/index.js';

interface Args {
  sites: string[];
  port: number;
  rate: number;
  clients: number;
  staleShare: number;
  staleOverstayMs: number;
  watch: string;
  requestTimeoutMs: number;
  resolver: { address: string; port: number };
  ipv6?: { rate: number; clients: number };
}

type Family = 4 | 6;
const args = JSON.parse(process.argv[2] ?? '{}') as Args;
const out = (v: unknown) => process.stdout.write(JSON.stringify(v) + '\n');
const families: Family[] = args.ipv6 ? [4, 6] : [4];

async function resolve(name: string, family: Family): Promise<{ address: string; ttl: number }> {
  const type = family === 4 ? 'A' : 'AAAA';
  const res = await dnsQuery({ server: args.resolver, name, type, rd: true, timeoutMs: 1500 });
  const a = res.answers.find((r) => r.typeName === type);
  if (!a) throw new Error(`${name}: no ${type} record from the resolver (${res.rcodeName})`);
  return { address: a.rdata, ttl: a.ttl };
}

const loads = families.map((family) => {
  const load = new LoadGenerator({
    sites: args.sites,
    port: args.port,
    resolve: (name) => resolve(name, family),
    rate: family === 4 ? args.rate : args.ipv6!.rate,
    clients: family === 4 ? args.clients : args.ipv6!.clients,
    staleShare: args.staleShare,
    staleOverstayMs: args.staleOverstayMs,
    keepAliveShare: 0.5,
    writeShare: 0.3,
    requestTimeoutMs: args.requestTimeoutMs,
  });
  return { family, load };
});

const last: Record<Family, string> = { 4: '', 6: '' };
const watch = setInterval(() => {
  for (const family of families) {
    resolve(args.watch, family).then(
      ({ address }) => {
        if (address !== last[family]) {
          last[family] = address;
          out({ type: 'dns', at: Date.now(), address, family });
        }
      },
      () => undefined,
    );
  }
}, 200);

for (const { load } of loads) load.start();
out({ type: 'ready' });

const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  if (line.trim() !== 'stop') return;
  clearInterval(watch);
  input.close();
  void Promise.all(loads.map(({ load }) => load.stop())).then(() => {
    for (const { family, load } of loads)
      for (const r of load.results()) out({ type: 'result', ...r, family });
    const summaries = loads.map(({ load }) => load.summary());
    // Written last; the process ends once stdout has drained (no exit() that could cut it).
    out({
      type: 'summary',
      ...summaries[0],
      acknowledgedWrites: summaries.flatMap((s) => s.acknowledgedWrites),
      byFamily: Object.fromEntries(
        loads.map(({ family }, i) => [family, { total: summaries[i]!.total, failed: summaries[i]!.failed }]),
      ),
    });
  });
});
