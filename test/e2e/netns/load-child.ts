/**
 * Runs inside the `client` namespace (spawned through `ip netns exec`): the load generator,
 * resolving through the local caching resolver (unbound on 127.0.0.1:53), plus a watcher of the
 * migrated domain's answer as that resolver gives it. Writes JSON lines on stdout:
 *   {"type":"ready"}, {"type":"dns","at","address"} on each change,
 *   and after "stop" on stdin: {"type":"result",...} per request, then {"type":"summary",...}.
 * Options come as one JSON argument: { sites, port, rate, clients, staleShare, staleOverstayMs, watch, requestTimeoutMs, resolver }.
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
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args;
const out = (v: unknown) => process.stdout.write(JSON.stringify(v) + '\n');

async function resolve(name: string): Promise<{ address: string; ttl: number }> {
  const res = await dnsQuery({ server: args.resolver, name, type: 'A', rd: true, timeoutMs: 1500 });
  const a = res.answers.find((r) => r.typeName === 'A');
  if (!a) throw new Error(`${name}: no A record from the resolver (${res.rcodeName})`);
  return { address: a.rdata, ttl: a.ttl };
}

const load = new LoadGenerator({
  sites: args.sites,
  port: args.port,
  resolve,
  rate: args.rate,
  clients: args.clients,
  staleShare: args.staleShare,
  staleOverstayMs: args.staleOverstayMs,
  keepAliveShare: 0.5,
  writeShare: 0.3,
  requestTimeoutMs: args.requestTimeoutMs,
});

let last = '';
const watch = setInterval(() => {
  resolve(args.watch).then(
    ({ address }) => {
      if (address !== last) {
        last = address;
        out({ type: 'dns', at: Date.now(), address });
      }
    },
    () => undefined,
  );
}, 200);

load.start();
out({ type: 'ready' });

const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  if (line.trim() !== 'stop') return;
  clearInterval(watch);
  input.close();
  void load.stop().then(() => {
    for (const r of load.results()) out({ type: 'result', ...r });
    // Written last; the process ends once stdout has drained (no exit() that could cut it).
    out({ type: 'summary', ...load.summary() });
  });
});
