/** Shared test data for the DNS tests (not part of the public surface). */

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

