/** Shared test data for the DNS tests (not part of the public surface). */
import { DnsServer, type DnsServerOptions } from './server.js';
import { parseZone } from './zone/parser.js';

/** A zone with one of every answer case: CNAME chains, wildcards, ENTs, cuts, DNAME, big RRsets. */
export const TEST_ZONE = `$ORIGIN example.
$TTL 3600
@        SOA   ns1 hostmaster 100 3600 600 1209600 300
@        NS    ns1
@        NS    ns2.example.net.
@        MX    10 mail
@        A     192.0.2.10
ns1      A     192.0.2.53
ns1      AAAA  2001:db8::53
mail     A     192.0.2.25
www      A     192.0.2.1
alias    CNAME www
chain1   CNAME chain2
chain2   CNAME www
dangling CNAME missing
outside  CNAME www.example.net.
loop1    CNAME loop2
loop2    CNAME loop1
*.wild   TXT   "wildcard"
*.wild   MX    10 mail
*.cwild  CNAME www
exists.wild A  192.0.2.77
a.b.ent  A     192.0.2.88
*.ent2   A     192.0.2.89
x.*.ent2 A     192.0.2.90
sip      SRV   1 1 5060 mail
sub      NS    ns.sub
sub      NS    ns.elsewhere.example.net.
ns.sub   A     192.0.2.99
sub2     NS    ns1
dn       DNAME target.example.net.
big      TXT   "${'x'.repeat(200)}"
big      TXT   "${'y'.repeat(200)}"
big      TXT   "${'z'.repeat(200)}"
`;

/** One presentation sample per data type of the table, plus an unknown type. */
export const RDATA_SAMPLES: Array<[string, string]> = [
  ['A', '192.0.2.1'],
  ['NS', 'ns1.example.'],
  ['CNAME', 'www.example.'],
  ['SOA', 'ns1.example. hostmaster.example. 2024010101 3600 600 1209600 300'],
  ['PTR', 'host.example.'],
  ['HINFO', '"PC" "Linux"'],
  ['MX', '10 mail.example.'],
  ['TXT', '"v=spf1 -all" "second \\"quoted\\" \\\\ \\007"'],
  ['RP', 'admin.example. txt.example.'],
  ['AAAA', '2001:db8::1'],
  ['SRV', '10 60 5060 sip.example.'],
  ['NAPTR', '100 10 "u" "E2U+sip" "!^.*$!sip:info@example!" .'],
  ['DNAME', 'other.example.'],
  ['DS', '12345 13 2 49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE'],
  ['SSHFP', '4 2 123456789ABCDEF67890123456789ABCDEF67890123456789ABCDEF123456789'],
  [
    'DNSKEY',
    '257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==',
  ],
  ['TLSA', '3 1 1 0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B56664C5D3D6'],
  ['SVCB', '1 svc.example. alpn=h2,h3 port=8443 ipv4hint=192.0.2.1,192.0.2.2'],
  [
    'HTTPS',
    '1 . alpn=h3 no-default-alpn ech=AEX+DQBBpQAgACBmKCq/1u8cXq8K+0Fq1+dZ0mvU/ea3gDsn5LSsbb7dJQAEAAEAAQASY2xvdWRmbGFyZS1lY2guY29tAAA= ipv6hint=2001:db8::1 key65000="x y"',
  ],
  ['HTTPS', '0 alias.example.'],
  ['SPF', '"v=spf1 -all"'],
  ['CAA', '0 issue "ca.example.net; account=1"'],
  ['TYPE65280', '\\# 4 0A000001'],
  ['TYPE65281', '\\# 0'],
];

/** A zone holding every sample of `RDATA_SAMPLES` but the SOA, one per owner `t<i>.types.test.`. */
export const TYPES_ZONE = [
  '$ORIGIN types.test.',
  '$TTL 300',
  '@ SOA ns.types.test. hm.types.test. 1 3600 600 86400 60',
  '@ NS ns',
  'ns A 192.0.2.53',
  ...RDATA_SAMPLES.flatMap(([type, rdata], i) => (type === 'SOA' ? [] : [`t${i} ${type} ${rdata}`])),
  '',
].join('\n');

/** Corner cases: apex wildcard, CNAME into a wildcard or a cut, glue below another cut, escapes, big referral. */
export const EDGE_ZONE = [
  '$ORIGIN edge.test.',
  '$TTL 600',
  '@ SOA ns1 hm 5 3600 600 86400 120',
  '@ NS ns1',
  'ns1 A 192.0.2.1',
  '* A 192.0.2.100',
  '* MX 10 mx',
  'mx A 192.0.2.25',
  'mx AAAA 2001:db8::25',
  '*.wildsub TXT "w"',
  'cn-to-wild CNAME foo.wildsub',
  'cn-to-deleg CNAME host.deleg',
  'cn-cross CNAME www.example.',
  'deleg NS ns.deleg',
  'deleg NS ns.other.deleg2',
  'ns.deleg A 192.0.2.50',
  'ns.deleg AAAA 2001:db8::50',
  'deleg2 NS ns.other.deleg2',
  'ns.other.deleg2 A 192.0.2.51',
  'mx-cname MX 10 alias-mx',
  'alias-mx CNAME mx',
  'sp\\032ace A 192.0.2.7',
  'dot\\.label A 192.0.2.8',
  'ttl-a 30 A 192.0.2.9',
  'srv SRV 0 0 443 mx',
  'srv SRV 0 0 443 ns.deleg',
  ...Array.from({ length: 24 }, (_, i) => `bigref NS ns${i}.bigref`),
  ...Array.from({ length: 24 }, (_, i) => `ns${i}.bigref A 192.0.2.${i + 10}`),
  ...Array.from({ length: 60 }, (_, i) => `many A 198.51.100.${i}`),
  '',
].join('\n');

/** Master-file syntax a parser can get wrong: directives, omitted fields, parentheses, escapes. */
export const SYNTAX_ZONE = `; comment line
$ORIGIN syntax.test.
$TTL 1h
@   IN  SOA ns1 hostmaster (
            2024010101 ; serial
            3600       ; refresh
            600 1209600
            300 )      ; minimum
    IN  NS  ns1
ns1 300 IN A 192.0.2.53
ns1 IN 300 AAAA 2001:db8::53
www     A   192.0.2.1
        A   192.0.2.2
txt     TXT "a \\"quoted\\" string; not a comment" plain \\065BC "\\228\\189\\160" ( "multi"
            "line" )
semi    TXT "(not a paren)" ";"
caa     CAA 0 issue "ca.example.net; account=1"
        CAA 128 tbs "Unknown"
mixed.CASE  A 192.0.2.3
$ORIGIN sub.syntax.test.
deep    CNAME www.syntax.test.
@       TXT "apex of sub"
$TTL 42
ttl42   A 192.0.2.42
ttlprev 7 A 192.0.2.7
        A 192.0.2.8
$ORIGIN syntax.test.
escaped\\.dot A 192.0.2.9
\\@at A 192.0.2.10
generic TYPE1 \\# 4 C000020B
hinfo HINFO "INTEL" "Linux 6"
`;

/** Runs `fn` against a started server on 127.0.0.1 (any port) serving TEST_ZONE, and stops it. */
export async function withTestServer(
  opts: DnsServerOptions,
  fn: (s: DnsServer) => Promise<void>,
): Promise<void> {
  const s = new DnsServer({ address: '127.0.0.1', port: 0, zones: [parseZone(TEST_ZONE)], ...opts });
  await s.start();
  try {
    await fn(s);
  } finally {
    await s.stop();
  }
}
