/**
 * The metrics of a controller: Node's process metrics and the controller's own in one answer, and
 * nothing of a closed API keeps its controller in memory (an API built and closed many times in
 * one process, as tests and benchmarks do, must not grow the heap by a controller each time).
 */
import diagnostics from 'node:diagnostics_channel';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { buildApi } from '../api/index.js';
import { Controller } from '../controller/index.js';
import { Journal, type DnsProvider, type HostDriver } from '../migration/index.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const TOKEN = 'metrics-test-token-0123456789';

const refuse = (what: string) =>
  new Proxy({} as Record<string, unknown>, {
    get: (_t, prop) =>
      prop === 'id'
        ? what
        : prop === 'then'
          ? undefined
          : () => assert.fail(`${what}.${String(prop)} called`),
  });

/**
 * Build an API with metrics on a fresh controller, run `meanwhile`, read /metrics, close it; a
 * weak reference to the controller.
 */
async function buildReadClose(meanwhile = () => {}): Promise<{ text: string; ref: WeakRef<Controller> }> {
  const journal = new Journal(':memory:');
  const controller = new Controller({
    dns: refuse('dns') as unknown as DnsProvider,
    journal,
    servers: [
      { id: 'a', driver: refuse('a') as unknown as HostDriver, sharedIps: ['10.0.0.1'], tempIpPool: [] },
    ],
    sites: [{ domain: 'a.example', server: 'a', ports: [80] }],
  });
  const app = await buildApi(controller, {
    tokens: [{ token: TOKEN, scope: 'read', name: 't' }],
    rateLimitPerMinute: 0,
    sampleIntervalMs: 0,
    dashboard: false,
  });
  meanwhile();
  const res = await app.inject({
    method: 'GET',
    url: '/metrics',
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(res.statusCode, 200);
  await app.close();
  journal.close();
  return { text: res.body, ref: new WeakRef(controller) };
}

test('/metrics has the process metrics and the controller’s; a closed API lets its controller be collected', async () => {
  const first = await buildReadClose();
  const second = await buildReadClose();
  for (const { text } of [first, second]) {
    assert.match(text, /^ferry_process_cpu_user_seconds_total /m, 'process metrics');
    assert.match(text, /^ferry_nodejs_heap_size_used_bytes /m, 'process metrics');
    assert.match(text, /^# TYPE ferry_dns_queries_total counter/m, 'the controller’s own');
  }
  // Weak references are kept to the end of the job that made them: collect in a later one.
  for (let i = 0; i < 5 && (first.ref.deref() || second.ref.deref()); i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  assert.equal(first.ref.deref(), undefined, 'the first closed controller was collected');
  assert.equal(second.ref.deref(), undefined, 'the second closed controller was collected');
});

test('DNS query metrics: a series per named query type and code; numbered ones, however many, are one `other` series', async () => {
  const channel = diagnostics.channel('ferry.dns.query');
  const { text } = await buildReadClose(() => {
    for (let t = 1000; t < 3000; t++)
      channel.publish({
        qtype: `TYPE${t}`,
        rcode: t % 2 ? 'NOERROR' : `RCODE${t}`,
        transport: 'udp',
        durationMs: 0.1,
      });
    channel.publish({ qtype: 'AAAA', rcode: 'NXDOMAIN', transport: 'tcp', durationMs: 0.1 });
  });
  const series = text.split('\n').filter((l) => l.startsWith('ferry_dns_queries_total{'));
  assert.deepEqual(series.sort(), [
    'ferry_dns_queries_total{qtype="AAAA",rcode="NXDOMAIN",transport="tcp"} 1',
    'ferry_dns_queries_total{qtype="other",rcode="NOERROR",transport="udp"} 1000',
    'ferry_dns_queries_total{qtype="other",rcode="other",transport="udp"} 1000',
  ]);
});
