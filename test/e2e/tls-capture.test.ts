/**
 * The bytes of a site's private key never cross the wire in clear. Two network namespaces joined
 * by a veth pair, a `ferry agent` in each (HTTPS API, site data received over TLS), a site folder
 * on the origin holding a private key (PEM, made with openssl); a controller-like driver in the
 * origin's namespace syncs the site to the target while tcpdump captures the origin's end of the
 * link. Asserted: the key arrived intact, the capture holds the transfer's packets (to the target's
 * rsync port, at least the key's size), and neither the key's base64 body (any of its lines) nor
 * any 32-byte slice of its DER, nor the receive session's secret, appears in the captured bytes or
 * in any reassembled TCP stream. Root only (CI runs as root); the namespaces (with their veths)
 * and every process in them are removed, pass or fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { netnsSkipReason } from './netns/topology.js';
import { selfSignedCert } from '../certs.js';

const ROOT = process.cwd();
const DOMAIN = 'keys.example';
const A = '10.78.0.1';
const B = '10.78.0.2';
const RSYNC_PORT = 873;
const TOKEN = 'capture-test-token-' + 'c'.repeat(24);

const skip = netnsSkipReason({
  rsync: ['rsync'],
  openssl: ['openssl'],
  tcpdump: ['tcpdump'],
  iproute2: ['ip'],
  bash: ['bash'],
});
if (skip) console.log(`# skipping the TLS capture test: ${skip}`);

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Two namespaces joined by one veth pair; `destroy` kills what runs in them and deletes them. */
class VethPair {
  readonly id = randomBytes(3).toString('hex');
  readonly ns = { a: `ferry-cap-a-${this.id}`, b: `ferry-cap-b-${this.id}` };
  readonly dev = { a: `fcapa${this.id}`, b: `fcapb${this.id}` };
  private created: string[] = [];

  create(): void {
    try {
      for (const n of [this.ns.a, this.ns.b]) {
        ip('netns', 'add', n);
        this.created.push(n);
        ip('-n', n, 'link', 'set', 'lo', 'up');
      }
      ip(
        'link',
        'add',
        this.dev.a,
        'netns',
        this.ns.a,
        'type',
        'veth',
        'peer',
        'name',
        this.dev.b,
        'netns',
        this.ns.b,
      );
      ip('-n', this.ns.a, 'addr', 'add', `${A}/24`, 'dev', this.dev.a);
      ip('-n', this.ns.b, 'addr', 'add', `${B}/24`, 'dev', this.dev.b);
      ip('-n', this.ns.a, 'link', 'set', this.dev.a, 'up');
      ip('-n', this.ns.b, 'link', 'set', this.dev.b, 'up');
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  destroy(): void {
    for (let round = 0; round < 20; round++) {
      const pids = this.created.flatMap((n) => {
        try {
          return ip('netns', 'pids', n).split('\n').filter(Boolean).map(Number);
        } catch {
          return [];
        }
      });
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      execFileSync('sleep', ['0.1']);
    }
    for (const n of this.created.splice(0).reverse()) {
      try {
        ip('netns', 'del', n);
      } catch {
        // gone already
      }
    }
  }
}

/** A process in a namespace, its output kept. */
function nsSpawn(
  ns: string,
  argv: string[],
  env?: NodeJS.ProcessEnv,
): { child: ChildProcess; out: () => string } {
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], {
    cwd: ROOT,
    env: env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (out += c));
  return { child, out: () => out };
}

async function waitFor(what: string, p: { child: ChildProcess; out: () => string }, re: RegExp, ms: number) {
  const deadline = Date.now() + ms;
  while (!re.test(p.out())) {
    if (p.child.exitCode !== null || p.child.signalCode !== null)
      throw new Error(`${what} exited before ${re}: ${p.out().slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`${what}: no ${re} within ${ms} ms: ${p.out().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** TCP segments of an Ethernet pcap file (IPv4), and each direction's stream reassembled by sequence number. */
function tcpStreams(pcap: Buffer): {
  packets: { sport: number; dport: number; len: number }[];
  streams: Map<string, Buffer>;
} {
  const magic = pcap.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  const u32 = (o: number) => (le ? pcap.readUInt32LE(o) : pcap.readUInt32BE(o));
  assert.equal(u32(20), 1, 'an Ethernet capture');
  const packets: { sport: number; dport: number; len: number }[] = [];
  const flows = new Map<string, { isn: number; segs: Map<number, Buffer> }>();
  for (let off = 24; off + 16 <= pcap.length;) {
    const incl = u32(off + 8);
    const frame = pcap.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    if (frame.length < 34 || frame.readUInt16BE(12) !== 0x0800) continue;
    const ipPkt = frame.subarray(14);
    if (ipPkt[9] !== 6) continue;
    const ihl = (ipPkt[0]! & 15) * 4;
    const total = ipPkt.readUInt16BE(2);
    const tcp = ipPkt.subarray(ihl, total);
    const sport = tcp.readUInt16BE(0);
    const dport = tcp.readUInt16BE(2);
    const seq = tcp.readUInt32BE(4);
    const payload = tcp.subarray((tcp[12]! >> 4) * 4);
    packets.push({ sport, dport, len: payload.length });
    const key = `${ipPkt.subarray(12, 16).join('.')}:${sport}>${ipPkt.subarray(16, 20).join('.')}:${dport}`;
    const flow = flows.get(key) ?? { isn: seq, segs: new Map() };
    flows.set(key, flow);
    if (payload.length > 0) flow.segs.set((seq - flow.isn + 2 ** 32) % 2 ** 32, Buffer.from(payload));
  }
  const streams = new Map<string, Buffer>();
  for (const [key, flow] of flows) {
    const parts = [...flow.segs].sort((x, y) => x[0] - y[0]).map(([, b]) => b);
    streams.set(key, Buffer.concat(parts));
  }
  return { packets, streams };
}

/** What of `needles` appears in `hay`: the names of those found. */
function leaks(hay: Buffer, needles: { name: string; bytes: Buffer }[]): string[] {
  return needles.filter((n) => hay.includes(n.bytes)).map((n) => n.name);
}

test(
  "a site's private key crosses the link between two agents only encrypted",
  { skip: skip ?? false, timeout: 180_000 },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-capture-'));
    const pair = new VethPair();
    const onExit = () => pair.destroy();
    process.once('exit', onExit);
    try {
      // The agents' API certificate (the HTTPS API; the rsync receiver reuses it) and the token.
      selfSignedCert({
        keyFile: join(dir, 'api.key'),
        certFile: join(dir, 'api.crt'),
        cn: 'ferry-capture-test',
        names: [A, B],
      });
      await writeFile(join(dir, 'token'), TOKEN + '\n', { mode: 0o600 });

      // The site on the origin: a page and its TLS private key.
      const site = join(dir, 'origin', 'sites', DOMAIN);
      await mkdir(join(site, 'private'), { recursive: true });
      await writeFile(join(site, 'index.html'), '<h1>keys</h1>\n');
      const keyFile = join(site, 'private', 'site.key');
      execFileSync(
        'openssl',
        ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', keyFile],
        {
          stdio: 'ignore',
        },
      );
      const pem = await readFile(keyFile, 'utf8');
      const der = execFileSync('openssl', ['pkey', '-in', keyFile, '-outform', 'DER']);
      const body = pem.split('\n').filter((l) => l && !l.startsWith('-----'));
      assert.ok(der.length > 1000 && body.length > 20, 'a real 2048-bit key');
      const needles = [
        { name: 'the base64 body', bytes: Buffer.from(body.join('')) },
        ...body
          .filter((l) => l.length >= 32)
          .map((l, i) => ({ name: `base64 line ${i + 1}`, bytes: Buffer.from(l) })),
        ...Array.from({ length: der.length - 31 }, (_, i) => ({
          name: `DER bytes ${i}..${i + 31}`,
          bytes: der.subarray(i, i + 32),
        })),
      ];
      // The search finds the key where it is in clear (so that its silence below means something).
      assert.ok(
        leaks(Buffer.concat([randomBytes(100), Buffer.from(pem), randomBytes(100)]), needles).length > 0,
      );
      assert.ok(leaks(Buffer.concat([randomBytes(77), der.subarray(500, 540)]), needles).length > 0);

      pair.create();
      const ferry = [process.execPath, '--import', 'tsx', join(ROOT, 'src/cli/main.ts')];
      const agents = (['a', 'b'] as const).map((h) => {
        const addr = h === 'a' ? A : B;
        return nsSpawn(pair.ns[h], [
          ...ferry,
          'agent',
          '--id',
          h === 'a' ? 'origin' : 'target',
          '--listen',
          addr,
          '--port',
          '7070',
          '--token-file',
          join(dir, 'token'),
          '--tls-cert',
          join(dir, 'api.crt'),
          '--tls-key',
          join(dir, 'api.key'),
          '--shared-ip',
          addr,
          '--interface',
          pair.dev[h],
          '--http-port',
          '80',
          '--site-app',
          'in-process',
          '--rsync-port',
          String(RSYNC_PORT),
          '--data-dir',
          join(dir, h === 'a' ? 'origin' : 'target'),
        ]);
      });
      await Promise.all(agents.map((p, i) => waitFor(`agent ${i}`, p, /listening on https:/, 60_000)));

      const pcapFile = join(dir, 'link.pcap');
      const dump = nsSpawn(pair.ns.a, [
        'tcpdump',
        '-i',
        pair.dev.a,
        '-w',
        pcapFile,
        '-U',
        '--immediate-mode',
        '-s',
        '0',
        '-n',
        '-Z',
        'root',
      ]);
      await waitFor('tcpdump', dump, /listening on/, 20_000);
      // The capture is live once a connection made now (to the target's API) is in the file.
      const marker = async () => {
        const before = (await stat(pcapFile).catch(() => ({ size: 0 }))).size;
        for (let i = 0; ; i++) {
          execFileSync('ip', ['netns', 'exec', pair.ns.a, 'bash', '-c', `exec 3<>/dev/tcp/${B}/7070`]);
          await new Promise((r) => setTimeout(r, 200));
          if ((await stat(pcapFile).catch(() => ({ size: 0 }))).size > Math.max(before, 24)) return;
          if (i === 50) throw new Error(`tcpdump captured nothing: ${dump.out()}`);
        }
      };
      await marker();

      const driver = nsSpawn(
        pair.ns.a,
        [process.execPath, '--import', 'tsx', join(ROOT, 'test/e2e/netns/sync-child.ts')],
        {
          ...process.env,
          FERRY_SYNC_CHILD: JSON.stringify({
            origin: `https://${A}:7070`,
            target: `https://${B}:7070`,
            token: TOKEN,
            caFile: join(dir, 'api.crt'),
            domain: DOMAIN,
          }),
        },
      );
      const code = await exited(driver.child);
      assert.equal(code, 0, `the sync driver failed: ${driver.out().slice(-2000)}`);
      const result = JSON.parse(driver.out().trim().split('\n').pop()!) as { secret: string; files: number };
      assert.ok(result.files >= 2, JSON.stringify(result));
      assert.equal(
        await readFile(join(dir, 'target', 'sites', DOMAIN, 'private', 'site.key'), 'utf8'),
        pem,
        'the key arrived intact',
      );

      // Everything the sync sent is in the file once a packet sent after it is.
      await marker();
      dump.child.kill('SIGINT');
      await exited(dump.child);
      const capture = await readFile(pcapFile);
      const { packets, streams } = tcpStreams(capture);
      const toRsync = packets.filter((p) => p.dport === RSYNC_PORT || p.sport === RSYNC_PORT);
      const rsyncBytes = toRsync.reduce((n, p) => n + p.len, 0);
      assert.ok(toRsync.length > 5, `the capture holds the transfer's packets (${toRsync.length})`);
      assert.ok(rsyncBytes >= pem.length, `the key's size crossed to the rsync port (${rsyncBytes} bytes)`);

      // Every connection to the receiver speaks TLS from its first byte: a handshake record.
      const toReceiver = [...streams].filter(([flow]) => flow.endsWith(`>${B}:${RSYNC_PORT}`));
      assert.ok(toReceiver.length >= 1);
      for (const [flow, stream] of toReceiver)
        assert.ok(stream[0] === 0x16 && stream[1] === 0x03, `${flow} starts with a TLS handshake record`);
      console.log(
        `# capture: ${packets.length} TCP packets, ${toRsync.length} of the rsync port carrying ${rsyncBytes} bytes, ${toReceiver.length} connection(s) to it`,
      );

      const all = [...needles, { name: 'the receive session secret', bytes: Buffer.from(result.secret) }];
      assert.deepEqual(leaks(capture, all), [], 'nothing of the key or the secret in the captured bytes');
      for (const [flow, stream] of streams)
        assert.deepEqual(
          leaks(stream, all),
          [],
          `nothing of the key or the secret in the TCP stream ${flow}`,
        );
    } finally {
      pair.destroy();
      process.off('exit', onExit);
      await rm(dir, { recursive: true, force: true });
    }
  },
);
