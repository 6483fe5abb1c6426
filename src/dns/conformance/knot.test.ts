/**
 * Conformance by comparison (issue 3 item 7): the same zone in Ferry and in Knot DNS (Debian's
 * `knotd`, started here on loopback), the same generated queries to both, and the responses
 * compared: rcode, flags, EDNS, and each section as a set of RRsets (owner, type, TTL, rdata).
 * A difference fails the test unless `INTENDED` lists it with its reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dnsExchangeTcp, dnsExchangeUdp } from '../client.js';
import { DnsServer } from '../server.js';
import { EDGE_ZONE, RDATA_SAMPLES, SYNTAX_ZONE, TEST_ZONE, TYPES_ZONE } from '../test-fixtures.js';
import {
  decodeMessage,
  encodeMessage,
  makeQuery,
  type DnsMessage,
  type ResourceRecord,
} from '../wire/message.js';
import { nameKey } from '../wire/name.js';
import { formatRdata } from '../wire/rdata.js';
import { RRType, typeCode, typeName } from '../wire/types.js';
import { loadZoneFile } from '../zone/parser.js';
import { freePort } from '../../../test/ports.js';

/** A zone whose apex is a DNAME (RFC 6672 §2.3): everything below is rewritten, the apex is not. */
const DNAME_APEX_ZONE = [
  '$ORIGIN dnapex.test.',
  '$TTL 300',
  '@ SOA ns.other.test. hm.other.test. 1 2 3 4 5',
  '@ NS ns.other.test.',
  '@ DNAME example.',
  '@ A 198.51.100.9',
  '',
].join('\n');

/** A second zone, so zone selection is compared too. */
const OTHER_ZONE =
  '$ORIGIN other.test.\n$TTL 300\n@ SOA ns.other.test. hm.other.test. 1 2 3 4 5\n@ NS ns\nns A 198.51.100.53\nx A 198.51.100.1\n';

interface Case {
  name: string;
  type: string;
  edns: number | false;
  dnssecOk?: boolean;
  tcp?: boolean;
  /** Label and change for queries no generator makes (odd opcodes, counts, classes). */
  odd?: [string, (m: DnsMessage) => void];
}

/**
 * Differences written down as intended: `match` picks the cases, `field` the part that may differ.
 */
const INTENDED: Array<{ match: (c: Case) => boolean; field: string; reason: string }> = [
  ...['outcome', 'rcode', 'flags', 'edns', 'question', 'answer', 'authority', 'additional'].map((field) => ({
    match: (c: Case) => c.odd?.[0] === 'QDCOUNT 2',
    field,
    reason: 'RFC 9619 §4 makes QDCOUNT > 1 a FORMERR; Knot 3.2 (older than that RFC) drops the query',
  })),
  {
    match: (c) => c.odd?.[0] === 'CD set',
    field: 'flags',
    reason: 'Ferry copies CD into the response (RFC 4035 §3.1.6); Knot clears it for unsigned zones',
  },
  {
    match: (c) => c.name === 'ttlprev.sub.syntax.test.',
    field: 'answer',
    reason:
      'records of one RRset with different TTLs: Ferry keeps the first, as BIND does; Knot takes the last',
  },
  {
    match: (c) => c.type === 'AXFR' || c.type === 'IXFR',
    field: 'rcode',
    reason:
      'no transfer handler yet: Ferry REFUSES transfers; Knot says NOTAUTH (no ACL) or NOTIMP (AXFR over UDP)',
  },
];

function knotd(): string | undefined {
  try {
    return execFileSync('which', ['knotd'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

function cases(): Case[] {
  const names = [
    'example.',
    'www.example.',
    'WwW.ExAmPlE.',
    'ns1.example.',
    'mail.example.',
    'alias.example.',
    'chain1.example.',
    'dangling.example.',
    'outside.example.',
    'loop1.example.',
    'x.wild.example.',
    'a.b.wild.example.',
    'wild.example.',
    'exists.wild.example.',
    'below.exists.wild.example.',
    'x.cwild.example.',
    'ent.example.',
    'b.ent.example.',
    'a.b.ent.example.',
    'c.a.b.ent.example.',
    'q.ent2.example.',
    'x.*.ent2.example.',
    '*.ent2.example.',
    'y.*.ent2.example.',
    'sip.example.',
    'sub.example.',
    'ns.sub.example.',
    'deep.in.sub.example.',
    'sub2.example.',
    'x.sub2.example.',
    'dn.example.',
    'a.dn.example.',
    'big.example.',
    'nope.example.',
    'nope.nope.example.',
    'x.other.test.',
    'other.test.',
    'missing.other.test.',
  ];
  const types = ['A', 'AAAA', 'NS', 'SOA', 'MX', 'TXT', 'CNAME', 'SRV', 'DS', 'DNAME', 'ANY', 'TYPE999'];
  const out: Case[] = [];
  for (const name of names) {
    for (const type of types) {
      out.push({ name, type, edns: 1232 });
      out.push({ name, type, edns: 1232, tcp: true });
    }
  }
  // EDNS sizes, DO, no EDNS and TCP on the answers that are large or carry additional data.
  for (const [name, type] of [
    ['big.example.', 'TXT'],
    ['example.', 'NS'],
    ['example.', 'MX'],
    ['sub.example.', 'A'],
    ['nope.example.', 'A'],
    ['www.example.', 'A'],
  ] as const) {
    for (const edns of [false, 512, 1232, 4096] as const) {
      out.push({ name, type, edns });
      out.push({ name, type, edns, tcp: true });
    }
    out.push({ name, type, edns: 1232, dnssecOk: true });
  }
  const odd: Array<[string, string, (m: DnsMessage) => void]> = [
    ['EDNS version 1', 'A', (m) => (m.edns!.version = 1)],
    ['opcode STATUS', 'A', (m) => (m.opcode = 2)],
    ['opcode 15', 'A', (m) => (m.opcode = 15)],
    ['QDCOUNT 0', 'A', (m) => (m.questions = [])],
    ['QDCOUNT 2', 'A', (m) => m.questions.push({ ...m.questions[0]! })],
    ['class CH', 'A', (m) => (m.questions[0]!.class = 3)],
    ['class ANY', 'A', (m) => (m.questions[0]!.class = 255)],
    ['RD set', 'A', (m) => (m.flags.rd = true)],
    ['CD set', 'A', (m) => (m.flags.cd = true)],
    ['AXFR', 'AXFR', () => undefined],
    ['IXFR', 'IXFR', () => undefined],
    ['MAILA', 'MAILA', () => undefined],
  ];
  const edge = [
    'edge.test.',
    'q.edge.test.',
    'a.b.edge.test.',
    'mx.edge.test.',
    'foo.wildsub.edge.test.',
    'wildsub.edge.test.',
    'cn-to-wild.edge.test.',
    'cn-to-deleg.edge.test.',
    'cn-cross.edge.test.',
    'deleg.edge.test.',
    'x.deleg.edge.test.',
    'ns.deleg.edge.test.',
    'deleg2.edge.test.',
    'mx-cname.edge.test.',
    'sp\\032ace.edge.test.',
    'dot\\.label.edge.test.',
    'ttl-a.edge.test.',
    'srv.edge.test.',
    'many.edge.test.',
    'bigref.edge.test.',
    'x.bigref.edge.test.',
  ];
  for (const name of edge)
    for (const type of ['A', 'AAAA', 'MX', 'NS', 'TXT', 'SRV', 'CNAME', 'ANY'])
      out.push({ name, type, edns: 1232 });
  for (const name of ['many.edge.test.', 'x.bigref.edge.test.', 'srv.edge.test.']) {
    for (const edns of [false, 512, 1232] as const)
      out.push({ name, type: name.startsWith('srv') ? 'SRV' : 'A', edns });
  }
  for (const name of ['dnapex.test.', 'www.dnapex.test.', 'a.b.dnapex.test.'])
    for (const type of ['A', 'DNAME', 'ANY', 'NS']) out.push({ name, type, edns: 1232 });
  // Knot and Ferry must read the same master-file syntax the same way.
  for (const name of [
    'syntax.test.',
    'ns1.syntax.test.',
    'www.syntax.test.',
    'txt.syntax.test.',
    'semi.syntax.test.',
    'caa.syntax.test.',
    'mixed.case.syntax.test.',
    'deep.sub.syntax.test.',
    'sub.syntax.test.',
    'ttl42.sub.syntax.test.',
    'ttlprev.sub.syntax.test.',
    'escaped\\.dot.syntax.test.',
    '\\@at.syntax.test.',
    'generic.syntax.test.',
    'hinfo.syntax.test.',
  ]) {
    for (const type of ['A', 'AAAA', 'NS', 'SOA', 'TXT', 'CAA', 'CNAME', 'HINFO'])
      out.push({ name, type, edns: 4096 });
  }
  // Every record type: Knot's reading of the same presentation text must give the same rdata.
  RDATA_SAMPLES.forEach(([type], i) => out.push({ name: `t${i}.types.test.`, type, edns: 4096 }));
  for (const [label, type, change] of odd) {
    out.push({ name: 'example.', type, edns: 1232, odd: [label, change] });
    out.push({ name: 'example.', type, edns: 1232, tcp: true, odd: [label, change] });
  }
  return out;
}

type Sets = Map<string, string>;

function rrsets(rrs: ResourceRecord[]): Sets {
  const m = new Map<string, { ttl: number[]; rdata: string[] }>();
  for (const r of rrs) {
    const k = `${nameKey(r.name)} ${typeName(r.type)}`;
    const e = m.get(k) ?? { ttl: [], rdata: [] };
    e.ttl.push(r.ttl);
    e.rdata.push(formatRdata(r.type, r.data).toLowerCase());
    m.set(k, e);
  }
  const out: Sets = new Map();
  for (const [k, v] of m) out.set(k, `ttl=${[...new Set(v.ttl)].join('/')} ${v.rdata.sort().join(' | ')}`);
  return out;
}

function describe(m: DnsMessage): Record<string, string> {
  const f = m.flags;
  const show = (s: Sets) =>
    [...s]
      .map(([k, v]) => `${k} ${v}`)
      .sort()
      .join('\n') || '-';
  return {
    rcode: String(m.rcode),
    flags: `aa=${f.aa} tc=${f.tc} rd=${f.rd} ra=${f.ra} ad=${f.ad} cd=${f.cd}`,
    edns: m.edns ? `v${m.edns.version} do=${m.edns.dnssecOk} size=${m.edns.udpSize}` : 'none',
    question: m.questions.map((q) => `${q.name} ${q.type}`).join(','),
    answer: show(rrsets(m.answers)),
    authority: show(rrsets(m.authority)),
    additional: show(rrsets(m.additional)),
  };
}

test('differential: Ferry answers like Knot DNS', async (t) => {
  const bin = knotd();
  if (!bin) {
    t.skip('knotd is not installed (apt install knot)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'ferry-knot-'));
  let knot: ChildProcess | undefined;
  let ferry: DnsServer | undefined;
  try {
    writeFileSync(join(dir, 'example.zone'), TEST_ZONE);
    writeFileSync(join(dir, 'other.zone'), OTHER_ZONE);
    writeFileSync(join(dir, 'types.zone'), TYPES_ZONE);
    writeFileSync(join(dir, 'edge.zone'), EDGE_ZONE);
    writeFileSync(join(dir, 'dnapex.zone'), DNAME_APEX_ZONE);
    writeFileSync(join(dir, 'syntax.zone'), SYNTAX_ZONE);
    const port = await freePort('127.0.0.1', { udp: true });
    writeFileSync(
      join(dir, 'knot.conf'),
      [
        'server:',
        `    rundir: "${dir}"`,
        `    listen: 127.0.0.1@${port}`,
        'log:',
        '  - target: stderr',
        '    any: error',
        'database:',
        `    storage: "${dir}"`,
        'template:',
        '  - id: default',
        `    storage: "${dir}"`,
        '    journal-content: none',
        '    zonefile-sync: -1',
        'zone:',
        '  - domain: example.',
        '    file: "example.zone"',
        '  - domain: other.test.',
        '    file: "other.zone"',
        '  - domain: types.test.',
        '    file: "types.zone"',
        '  - domain: edge.test.',
        '    file: "edge.zone"',
        '  - domain: dnapex.test.',
        '    file: "dnapex.zone"',
        '  - domain: syntax.test.',
        '    file: "syntax.zone"',
        '',
      ].join('\n'),
    );
    let stderr = '';
    knot = spawn(bin, ['-c', join(dir, 'knot.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
    knot.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const knotServer = { address: '127.0.0.1', port };
    const probe = encodeMessage(makeQuery(1, 'other.test.', RRType.SOA));
    let up = false;
    for (let i = 0; i < 50 && !up && knot.exitCode === null; i++) {
      up = await dnsExchangeUdp(knotServer, probe, 100).then(
        (b) => decodeMessage(b).answers.length > 0,
        () => false,
      );
    }
    assert.ok(up, `knotd did not come up: ${stderr}`);

    const zones = await Promise.all(
      ['example', 'other', 'types', 'edge', 'dnapex', 'syntax'].map((z) =>
        loadZoneFile(join(dir, `${z}.zone`)),
      ),
    );
    ferry = new DnsServer({ port: 0, zones });
    await ferry.start();
    const ferryServer = { address: ferry.address, port: ferry.port };

    const diffs: string[] = [];
    const all = cases();
    let id = 1000;
    for (const c of all) {
      const q = makeQuery(id++ & 0xffff, c.name, typeCode(c.type)!, {
        edns: c.edns === false ? false : { udpSize: c.edns, dnssecOk: c.dnssecOk ?? false },
      });
      c.odd?.[1](q);
      const packet = encodeMessage(q);
      // No answer (a dropped query or a closed connection) is an outcome to compare too.
      const ask = (s: { address: string; port: number }) =>
        (c.tcp
          ? dnsExchangeTcp(s, packet, c.odd ? 300 : 1000)
          : dnsExchangeUdp(s, packet, c.odd ? 300 : 1000)
        ).then(
          (b) => describe(decodeMessage(b)),
          () => ({ outcome: 'no answer' }) as Record<string, string>,
        );
      const [dk, df] = await Promise.all([ask(knotServer), ask(ferryServer)]);
      for (const field of new Set([...Object.keys(dk), ...Object.keys(df)])) {
        if (dk[field] === df[field]) continue;
        if (INTENDED.some((x) => x.field === field && x.match(c))) continue;
        const show = (v: string | undefined) => (v ?? '(absent)').replace(/\n/g, '\n         ');
        diffs.push(
          `${c.name} ${c.type} edns=${c.edns}${c.dnssecOk ? ' do' : ''}${c.tcp ? ' tcp' : ''}${c.odd ? ` (${c.odd[0]})` : ''} ${field}:\n  knot:  ${show(dk[field])}\n  ferry: ${show(df[field])}`,
        );
      }
    }
    assert.equal(
      diffs.length,
      0,
      `${diffs.length} differences in ${all.length} queries:\n${diffs.join('\n')}`,
    );
  } finally {
    await ferry?.stop();
    if (knot && knot.exitCode === null) {
      const exited = new Promise((r) => knot!.once('exit', r));
      knot.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 3000)))]);
      clearTimeout(timer);
      if (knot.exitCode === null) knot.kill('SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
