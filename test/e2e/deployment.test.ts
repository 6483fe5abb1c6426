/**
 * Ferry as docs/deployment.md deploys it, with the guide's own examples: two `ferry agent`
 * processes over HTTPS with bearer tokens (the guide's token and openssl commands, its systemd
 * ExecStart line, its curl call creating the sites), `ferry config check` and `ferry controller
 * --config` on the guide's ferry.yaml (its `api:` section included), the guide's Knot and BIND
 * secondaries transferring from the embedded name server with TSIG, and the operator commands of
 * its section 7: `ferry servers`, `ferry migrate --watch`, `ferry status`, and `ferry rollback` in
 * dns-temp, in the cut-over and in draining; a migration failed by its origin agent's death keeps
 * its temporary IP and site until `ferry rollback` resolves it. Then the dashboard and its data through the
 * controller's API with a token, and the dashboard in chromium when it is installed.
 *
 * Every host is a distinct loopback address (127.0.93.0/24: every 127/8 address is local) and the
 * guide's documentation addresses 192.0.2.N become 127.0.93.N; its paths become folders of a
 * temporary directory, one per host. The agents bind port 80 and the name server port 53, as the
 * guide says, so the test needs root (CI runs as root). Everything started is stopped, pass or fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDocument } from 'yaml';
import { digShort, findBinary } from './helpers.js';
import { killProcessesUnder } from '../processes.js';

const ROOT = process.cwd();
const NET = '127.0.93.';
const IP = { origin: `${NET}10`, target: `${NET}20`, dns: `${NET}53`, temp: [`${NET}100`, `${NET}101`] };
const FERRY = [process.execPath, '--import', 'tsx', join(ROOT, 'src/cli/main.ts')];
const DOC = readFileSync(join(ROOT, 'docs/deployment.md'), 'utf8');
const CHROMIUM = '/usr/bin/chromium';

const skip =
  process.getuid?.() !== 0
    ? 'not root: the guide binds ports 53, 80 and 873 (CI runs as root)'
    : (['openssl', 'curl', 'rsync'].find((b) => !findBinary(b)) ??
      (findBinary('kdig', 'dig') ? null : 'kdig'));
const skipReason = skip === null ? false : skip.startsWith('not root') ? skip : `${skip} is not installed`;
if (skipReason) console.log(`# deployment e2e skipped: ${skipReason}`);

// --- reading the guide --------------------------------------------------------------------------

/** The text of the section under `heading` (a whole heading line), up to the next heading of its level or above. */
function section(heading: string): string {
  const lines = DOC.split('\n');
  const start = lines.indexOf(heading);
  assert.ok(start >= 0, `docs/deployment.md has no heading "${heading}"`);
  const level = heading.indexOf(' ');
  let end = start + 1;
  let inFence = false;
  for (; end < lines.length; end++) {
    if (lines[end]!.startsWith('```')) inFence = !inFence;
    const m = /^(#+) /.exec(lines[end]!);
    if (!inFence && m && m[1]!.length <= level) break;
  }
  return lines.slice(start, end).join('\n');
}

/** The fenced blocks of `text` whose info string is `lang` ('' for none). */
function fences(text: string, lang: string): string[] {
  const out: string[] = [];
  let open: { lang: string; lines: string[] } | undefined;
  for (const line of text.split('\n')) {
    if (!open && line.startsWith('```')) open = { lang: line.slice(3).trim(), lines: [] };
    else if (open && line === '```') {
      if (open.lang === lang) out.push(open.lines.join('\n') + '\n');
      open = undefined;
    } else open?.lines.push(line);
  }
  assert.ok(out.length > 0, `no \`\`\`${lang} block in:\n${text.slice(0, 200)}`);
  return out;
}

/** A shell line without its comment and continuation backslashes, as words. */
function words(line: string): string[] {
  return line
    .replace(/\s#.*$/, '')
    .replace(/\\\n/g, ' ')
    .trim()
    .split(/\s+/);
}

/** The guide's text for one host: documentation addresses → loopback, its paths → `dir`'s. */
function onHost(text: string, dir: string): string {
  return text
    .replaceAll('192.0.2.', NET)
    .replaceAll('/etc/ferry', join(dir, 'etc'))
    .replaceAll('/var/lib/ferry', join(dir, 'var'))
    .replaceAll('/usr/local/bin/ferry', FERRY.join(' '));
}

function sh(script: string, env: NodeJS.ProcessEnv = {}): string {
  return execFileSync('sh', ['-ec', script], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 60_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

// --- processes ----------------------------------------------------------------------------------

interface Proc {
  child: ChildProcess;
  lines: string[];
  waitLine(match: (line: string) => boolean, timeoutMs: number): Promise<string>;
  exited: Promise<number | null>;
}

const started: ChildProcess[] = [];

function start(args: string[], env: NodeJS.ProcessEnv, logFile: string): Proc {
  const child = spawn(args[0]!, args.slice(1), {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(child);
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  let log = '';
  for (const stream of [child.stdout!, child.stderr!]) {
    let partial = '';
    stream.on('data', (c: Buffer) => {
      log += c.toString();
      partial += c.toString();
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        lines.push(partial.slice(0, nl));
        partial = partial.slice(nl + 1);
      }
      for (const w of [...waiters]) w();
    });
  }
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  void exited.then(() => writeFile(logFile, log).catch(() => undefined));
  return {
    child,
    lines,
    exited,
    waitLine: (match, timeoutMs) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find(match);
          if (found === undefined) return;
          done();
          resolve(found);
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(`no such line within ${timeoutMs} ms; last lines:\n${lines.slice(-15).join('\n')}`),
          );
        }, timeoutMs);
        const onExit = () => {
          done();
          reject(
            new Error(`${args.slice(3, 5).join(' ')} exited; last lines:\n${lines.slice(-15).join('\n')}`),
          );
        };
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
          child.off('exit', onExit);
        };
        waiters.add(check);
        child.once('exit', onExit);
        check();
      }),
  };
}

/** Run a `ferry` command to its end: exit code and output. */
function ferry(
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 120_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(FERRY[0]!, [...FERRY.slice(1), ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    started.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function stop(p: Proc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 15_000);
  await p.exited;
  clearTimeout(timer);
}

// --- HTTP ----------------------------------------------------------------------------------------

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request; `ca` for an agent's HTTPS API. */
function call(
  url: string,
  opts: { method?: string; token?: string; body?: unknown; ca?: Buffer; host?: string } = {},
): Promise<Answer> {
  const u = new URL(url);
  const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  const headers: Record<string, string> = {
    ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
    ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    ...(opts.host ? { host: opts.host } : {}),
  };
  const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, {
    method: opts.method ?? 'GET',
    headers,
    ...(opts.ca ? { ca: opts.ca } : {}),
    timeout: 20_000,
  });
  return new Promise((resolve, reject) => {
    req.on('response', (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('timeout', () => req.destroy(new Error(`${url} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Whether a TCP connection to `address:port` is accepted. */
function accepts(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: address, port });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

interface MigrationJson {
  id: string;
  phase: string;
  error?: string;
  plan: { tempIp: string };
  phases: Array<{ name: string; startedAt: number; endedAt: number | null }>;
  redirectRemovedAt?: number;
  tempIpRemovedAt?: number;
  journal?: Array<{ kind: string; phase: string; step?: string; detail?: Record<string, unknown> }>;
}

test(
  'deployed as docs/deployment.md says: agents over HTTPS, the controller with its API, the CLI, rollback in dns-temp, cut-over and draining, the dashboard',
  { skip: skipReason, timeout: 600_000 },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-deploy-'));
    const hosts = {
      origin: join(dir, 'origin'),
      target: join(dir, 'target'),
      controller: join(dir, 'controller'),
    };
    const procs: Proc[] = [];
    let ok = false;
    const onExit = () => {
      for (const c of started) if (c.exitCode === null) c.kill('SIGKILL');
      killProcessesUnder(dir);
    };
    process.once('exit', onExit);
    try {
      // §2: on each hosting server, a token and a self-signed certificate, with the guide's commands.
      const token = fences(section('### Token'), 'sh')[0]!;
      const tls = fences(section('### TLS (recommended)'), 'sh')[0]!;
      const tokens: Record<'origin' | 'target', string> = { origin: '', target: '' };
      for (const h of ['origin', 'target'] as const) {
        const forHost = (t: string) =>
          onHost(
            h === 'target'
              ? t.replaceAll('origin.example', 'target.example').replaceAll('192.0.2.10', '192.0.2.20')
              : t,
            hosts[h],
          );
        await mkdir(hosts[h], { recursive: true });
        sh(forHost(token));
        sh(forHost(tls));
        tokens[h] = (await readFile(join(hosts[h], 'etc/agent.token'), 'utf8')).trim();
        assert.match(tokens[h], /^[0-9a-f]{64}$/);
      }

      // The agents, as the systemd unit's ExecStart starts them; on loopback the temporary IPs need
      // no interface, and the sites are served by the built-in app (nginx is the guide's option).
      const unit = fences(section('## 2. The agent on each hosting server'), 'ini')[0]!;
      const execStart = /^ExecStart=([\s\S]*?[^\\])$/m.exec(unit.replace(/\\\n\s*/g, '\\\n'))![1]!;
      const agentArgs = (h: 'origin' | 'target') => {
        let text = execStart;
        if (h === 'target')
          text = text.replace('--id origin', '--id target').replaceAll('192.0.2.10', '192.0.2.20');
        const args = words(onHost(text, hosts[h]));
        const replace = (name: string, count: number, by: string[]) => {
          const i = args.indexOf(name);
          assert.ok(i >= 0, `the guide's agent ExecStart has no ${name}`);
          args.splice(i, 1 + count, ...by);
        };
        replace('--interface', 1, ['--loopback-addresses']);
        replace('--web', 1, ['--web', 'builtin']);
        replace('--nginx-conf-dir', 1, []);
        replace('--app-port', 1, []);
        return args;
      };
      const agents: Partial<Record<'origin' | 'target', Proc>> = {};
      const startAgent = async (h: 'origin' | 'target') => {
        const p = start(agentArgs(h), {}, join(dir, `agent-${h}-${procs.length}.log`));
        procs.push(p);
        agents[h] = p;
        await p.waitLine((l) => l.includes('listening on'), 60_000);
      };
      for (const h of ['origin', 'target'] as const) await startAgent(h);

      // §2: the origin's sites are created on its agent with the guide's curl call.
      const curl = fences(section('### Creating the sites on the agent'), 'sh')[0]!;
      for (const site of ['shop.example', 'blog.example'])
        sh(onHost(curl.replace('shop.example', site), hosts.origin).trimEnd() + ' --fail-with-body -sS');
      const originCa = await readFile(join(hosts.origin, 'etc/agent-cert.pem'));
      const targetCa = await readFile(join(hosts.target, 'etc/agent-cert.pem'));
      const info = JSON.parse(
        (await call(`https://${IP.origin}:7070/v1/info`, { token: tokens.origin, ca: originCa })).body,
      ) as { sites: string[] };
      assert.deepEqual([...info.sites].sort(), ['blog.example', 'shop.example']);
      // Without the token, or with the other server's, the agent refuses.
      assert.equal((await call(`https://${IP.origin}:7070/v1/info`, { ca: originCa })).status, 401);
      assert.equal(
        (await call(`https://${IP.origin}:7070/v1/info`, { token: tokens.target, ca: originCa })).status,
        401,
      );

      // §4: the controller's files, the guide's ferry.yaml on it.
      const c = hosts.controller;
      await mkdir(join(c, 'etc/zones'), { recursive: true });
      await writeFile(join(c, 'etc/origin.token'), tokens.origin + '\n', { mode: 0o600 });
      await copyFile(join(hosts.origin, 'etc/agent-cert.pem'), join(c, 'etc/origin-cert.pem'));
      await copyFile(join(hosts.target, 'etc/agent-cert.pem'), join(c, 'etc/target-cert.pem'));
      const tsig = (s: string) => Buffer.from(s.padEnd(32, '.')).toString('base64');
      await writeFile(join(c, 'etc/update.tsig'), tsig('update') + '\n', { mode: 0o600 });
      const operator = 'operator-' + 'a'.repeat(40);
      const reader = 'reader-' + 'b'.repeat(40);
      await writeFile(join(c, 'etc/api-operator.token'), operator + '\n', { mode: 0o600 });
      const soa = (origin: string) =>
        `$ORIGIN ${origin}\n$TTL 300\n@ IN SOA ns1.example. hostmaster.example. 1 3600 600 86400 60\n@ IN NS ns1.example.\n`;
      await writeFile(
        join(c, 'etc/zones/example.zone'),
        `${soa('example.')}ns1 IN A ${IP.dns}\nblog 1 IN A ${IP.origin}\n`,
      );
      await writeFile(join(c, 'etc/zones/shop.zone'), `${soa('shop.example.')}@ 1 IN A ${IP.origin}\n`);
      const env = {
        FERRY_TARGET_TOKEN: tokens.target,
        FERRY_XFR_TSIG: tsig('xfr'),
        FERRY_READ_TOKEN: reader,
      };
      const yaml = onHost(fences(section('## 4. Config reference (`ferry.yaml`)'), 'yaml')[0]!, c);
      await writeFile(join(c, 'etc/ferry.yaml'), yaml);

      // §3: `ferry config check`, both forms of the guide, on the guide's file as it is.
      for (const line of fences(section('### Checking a config'), 'sh')[0]!
        .split('\n')
        .filter((l) => l.startsWith('ferry config check'))) {
        const args = words(line.replace(/ ferry\.yaml\b/, ' /etc/ferry/ferry.yaml'))
          .slice(1)
          .map((w) => onHost(w, c));
        const r = await ferry(args, env);
        assert.equal(r.code, 0, `${line}: ${r.stderr}`);
        assert.match(r.stdout, /: ok\n/);
        assert.match(
          r.stdout,
          /engine userspace: .*\n {2}engine kernel: /,
          'both engines described: the servers leave it to their agents',
        );
        assert.doesNotMatch(
          r.stdout,
          new RegExp(`${tokens.origin}|${tokens.target}|${operator}|${reader}`),
          'no secret printed',
        );
      }

      // The same file with timings fit for a test (the guide's are for real caches: minutes).
      const running = parseDocument(yaml);
      running.setIn(['defaults'], {
        ttl: 1,
        quietWindow: '500ms',
        dnsTempCap: '6s',
        drainCap: '6s',
        cutoverDrainTimeout: '60s',
        poll: '100ms',
      });
      // The agents here serve with the built-in app (above), so the servers say so.
      for (const s of ['origin', 'target']) running.setIn(['servers', s, 'web'], 'builtin');
      await writeFile(join(c, 'etc/ferry.yaml'), running.toString());

      // §3: the controller's unit: config check first, then the controller.
      const cUnit = fences(section('## 3. The controller'), 'ini')[0]!;
      const pre = words(onHost(/^ExecStartPre=(.*)$/m.exec(cUnit)![1]!, c));
      const check = await ferry(pre.slice(FERRY.length), env);
      assert.equal(check.code, 0, check.stderr);
      const controller = start(
        words(onHost(/^ExecStart=(.*)$/m.exec(cUnit)![1]!, c)),
        env,
        join(dir, 'controller.log'),
      );
      procs.push(controller);
      await controller.waitLine((l) => l.includes('controller running'), 60_000);
      const running1 = JSON.parse(controller.lines.find((l) => l.includes('controller running'))!) as {
        api: string | null;
      };
      assert.equal(running1.api, `http://${IP.dns}:7300`, 'the control API listens where api.listen says');
      for (const s of ['origin', 'target']) {
        const line = await controller.waitLine((l) => l.includes(`"server":"${s}"`), 30_000);
        assert.doesNotMatch(line, /agent check failed/, `agent ${s} as the config says: ${line}`);
      }

      // §4: the guide's Knot and BIND secondaries of example. (Knot at .54, which the guide's
      // `notify` names), each with the run-time folders a test needs added. BIND listens only on
      // addresses of an interface (127.0.0.1 here, shared with other tests), so it answers no
      // query: its log tells what it transferred.
      const dnsSection = section('### `dns` (provider `embedded`)');
      const secondaryText = (t: string) =>
        t.replaceAll('<the same base64 secret>', env.FERRY_XFR_TSIG).replaceAll('192.0.2.', NET);
      const soaSerial = async (address: string) => {
        const soa = await digShort({ address, port: 53 }, 'example.', 'SOA').catch(() => []);
        return soa.length === 1 ? Number(soa[0]!.split(/\s+/)[2]) : null;
      };
      const until = async (what: string, check: () => Promise<boolean>) => {
        const deadline = Date.now() + 30_000;
        while (!(await check())) {
          assert.ok(Date.now() < deadline, `${what} within 30 s`);
          await new Promise((r) => setTimeout(r, 250));
        }
      };
      const secondaries: string[] = [];
      let bind: Proc | undefined;
      if (findBinary('knotd')) {
        const kd = join(dir, 'knot');
        await mkdir(join(kd, 'db'), { recursive: true });
        const conf = secondaryText(fences(dnsSection, 'yaml').find((b) => b.includes('master: ferry'))!)
          .replace('/var/lib/knot', kd)
          .replace('server:\n', `server:\n  rundir: "${kd}"\n  pidfile: "${kd}/knot.pid"\n`);
        await writeFile(
          join(kd, 'knot.conf'),
          `${conf}database:\n  storage: "${kd}/db"\ncontrol:\n  listen: "${kd}/knot.sock"\n`,
        );
        procs.push(start([findBinary('knotd')!, '-c', join(kd, 'knot.conf')], {}, join(dir, 'knot.log')));
        secondaries.push(`${NET}54`);
      } else console.log("# deployment e2e: knotd is not installed; the guide's Knot secondary was not run");
      if (findBinary('named')) {
        const bd = join(dir, 'bind');
        await mkdir(bd, { recursive: true });
        const options = `options {\n  directory "${bd}";\n  pid-file "${bd}/named.pid";\n  session-keyfile "${bd}/session.key";\n  managed-keys-directory "${bd}";\n  listen-on { none; };\n  listen-on-v6 { none; };\n  recursion no;\n  dnssec-validation no;\n};\ncontrols { };\n`;
        await writeFile(
          join(bd, 'named.conf'),
          options + secondaryText(fences(dnsSection, '')[0]!).replace('/var/cache/bind', bd),
        );
        bind = start(
          [findBinary('named')!, '-g', '-c', join(bd, 'named.conf'), '-n', '1'],
          {},
          join(dir, 'named.log'),
        );
        procs.push(bind);
      } else console.log("# deployment e2e: named is not installed; the guide's BIND secondary was not run");
      const primarySerial = await soaSerial(IP.dns);
      assert.ok(primarySerial !== null, 'the embedded name server answers');
      for (const a of secondaries)
        await until(
          `the secondary at ${a} transferred example.`,
          async () => (await soaSerial(a)) === primarySerial,
        );
      if (bind) {
        const line = await bind.waitLine(
          (l) => /zone example\/IN: transferred serial \d+: TSIG 'xfr-key'/.test(l),
          30_000,
        );
        assert.equal(
          Number(/serial (\d+)/.exec(line)![1]),
          primarySerial,
          'BIND transferred the zone, signed with xfr-key.',
        );
      }

      // §7: the operator's environment and commands, as the guide writes them.
      const ops = fences(section('## 7. The first migration'), 'sh')[0]!.split('\n');
      const [FERRY_CONTROLLER, FERRY_TOKEN] = sh(
        `${onHost(
          ops.find((l) => l.startsWith('export '))!,
          c,
        )}; printf '%s\\n%s' "$FERRY_CONTROLLER" "$FERRY_TOKEN"`,
      ).split('\n');
      assert.equal(FERRY_TOKEN, operator);
      const cli = { FERRY_CONTROLLER, FERRY_TOKEN };
      const docCommand = (prefix: string, id?: string) => {
        const line = ops.find((l) => l.startsWith(`ferry ${prefix}`));
        assert.ok(line, `section 7 has no "ferry ${prefix}" line`);
        return words(line)
          .slice(1)
          .map((w) => (id && /-mx3k2$/.test(w) ? id : w));
      };
      const api = `http://${IP.dns}:7300`;
      const get = async (id: string) =>
        JSON.parse((await call(`${api}/v1/migrations/${id}`, { token: reader })).body) as MigrationJson;
      const untilPhase = async (id: string, phase: string) => {
        const deadline = Date.now() + 60_000;
        for (;;) {
          const m = await get(id);
          if (m.phase === phase) return m;
          assert.ok(
            !['completed', 'failed', 'rolled-back'].includes(m.phase) && Date.now() < deadline,
            `${id} never reached ${phase}: ${m.phase} ${m.error ?? ''}`,
          );
          await new Promise((r) => setTimeout(r, 250));
        }
      };
      type Servers = { servers: Array<{ id: string; freeTempIps: string[]; siteCount: number }> };
      const servers = async () => {
        const r = await ferry([...docCommand('servers'), '--json'], cli);
        assert.equal(r.code, 0, r.stderr);
        return (JSON.parse(r.stdout) as Servers).servers;
      };
      const list = await servers();
      assert.deepEqual(
        list.find((s) => s.id === 'origin'),
        { ...list.find((s) => s.id === 'origin')!, freeTempIps: IP.temp },
      );
      // The guide's config also lists wp.example, a vhost of the origin's own web server (kind web).
      assert.equal(list.find((s) => s.id === 'origin')!.siteCount, 3);
      const one = await ferry([...docCommand('servers origin'), '--json'], cli);
      assert.equal(one.code, 0, one.stderr);
      const onOrigin = (JSON.parse(one.stdout.trim().split('\n')[0]!) as { sites: Array<{ domain: string }> })
        .sites;
      assert.deepEqual(onOrigin.map((s) => s.domain).sort(), [
        'blog.example.',
        'shop.example.',
        'wp.example.',
      ]);

      // `ferry migrate shop.example --to target --watch`: it returns once completed, and completed
      // means the redirect and the temporary IP are gone.
      const migrated = await ferry([...docCommand('migrate shop.example'), '--json'], cli);
      assert.equal(migrated.code, 0, migrated.stdout.split('\n').slice(-5).join('\n') + migrated.stderr);
      const returnedAt = Date.now();
      const summary = (JSON.parse(migrated.stdout.trim().split('\n').pop()!) as { summary: MigrationJson })
        .summary;
      assert.equal(summary.phase, 'completed');
      const shopId = summary.id;
      const shop = await get(shopId);
      const tempIp = shop.plan.tempIp;
      assert.equal(
        await accepts(tempIp, 80),
        false,
        'nothing answers at the temporary IP once migrate --watch returned',
      );
      const redirects = JSON.parse(
        (await call(`https://${IP.origin}:7070/v1/redirects`, { token: tokens.origin, ca: originCa })).body,
      ) as unknown;
      assert.deepEqual(redirects, { redirects: [] }, 'the origin agent has no redirect left');
      const completedAt = shop.phases.find((p) => p.name === 'completed')!.startedAt;
      assert.ok(
        shop.tempIpRemovedAt! <= completedAt &&
          shop.redirectRemovedAt! <= completedAt &&
          completedAt <= returnedAt,
        JSON.stringify(shop),
      );
      assert.deepEqual(await digShort({ address: IP.dns, port: 53 }, 'shop.example', 'A'), [IP.target]);
      const onTarget = await call(`http://${IP.target}/healthz`, { host: 'shop.example' });
      assert.equal(onTarget.headers['x-served-by'], 'target');
      const status = await ferry(docCommand('status shop.example-mx3k2', shopId), cli);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, new RegExp(`IPt ${tempIp.replaceAll('.', '\\.')} removed \\d{4}-`));

      // `ferry rollback` from three phases of blog.example's migrations.
      const migrate = async (id: string, extra: string[]) => {
        const r = await ferry(
          [
            ...docCommand('migrate shop.example')
              .filter((w) => w !== '--watch')
              .map((w) => (w === 'shop.example' ? 'blog.example' : w)),
            '--id',
            id,
            ...extra,
          ],
          cli,
        );
        assert.equal(r.code, 0, r.stderr);
      };
      const rollback = async (id: string) => {
        const r = await ferry(docCommand('rollback shop.example-mx3k2', id), cli);
        assert.equal(
          r.code,
          0,
          `rollback of ${id}: ${r.stdout.split('\n').slice(-12).join('\n')}${r.stderr}`,
        );
        const m = await get(id);
        assert.equal(m.phase, 'rolled-back', m.error);
        assert.deepEqual(
          await digShort({ address: IP.dns, port: 53 }, 'blog.example', 'A'),
          [IP.origin],
          `${id}: DNS back on the origin`,
        );
        const served = await call(`http://${IP.origin}/healthz`, { host: 'blog.example' });
        assert.equal(served.status, 200);
        assert.equal(served.headers['x-served-by'], 'origin');
        assert.equal(
          (
            await call(`https://${IP.target}:7070/v1/sites/blog.example`, {
              token: tokens.target,
              ca: targetCa,
            })
          ).status,
          404,
          `${id}: the target's copy is gone`,
        );
        assert.equal(await accepts(m.plan.tempIp, 80), false, `${id}: nothing at IPt`);
        assert.deepEqual(
          (await servers()).find((s) => s.id === 'origin')!.freeTempIps,
          IP.temp,
          `${id}: every temporary IP free again`,
        );
        return m;
      };
      const requestedFrom = (m: MigrationJson) =>
        m.journal!.find((e) => e.kind === 'enter' && e.phase === 'rolling-back')!.detail;
      // Each phase is held open by what it waits on (traffic, an in-flight request) until the
      // controller logs the rollback request, so the CLI's start-up time cannot let it move on.
      const rollbackWhile = async (id: string, release: () => void) => {
        const done = rollback(id);
        await controller
          .waitLine((l) => l.includes('"rollback requested"') && l.includes(`"migration":"${id}"`), 60_000)
          .finally(release);
        return done;
      };
      const keepBusy = (address: string) => {
        let on = true;
        void (async () => {
          while (on) {
            await call(`http://${address}/healthz`, { host: 'blog.example' }).catch(() => undefined);
            await new Promise((r) => setTimeout(r, 100));
          }
        })();
        return () => (on = false);
      };

      // In dns-temp (clients still reaching IP1 directly keep its wait open): every step undone.
      const direct = keepBusy(IP.origin);
      await migrate('blog-dns-temp', ['--dns-temp-cap', '60000']);
      await untilPhase('blog-dns-temp', 'dns-temp');
      const r1 = await rollbackWhile('blog-dns-temp', direct);
      assert.deepEqual(requestedFrom(r1), { from: 'dns-temp', reason: 'requested' });

      // In the cut-over: a request kept in flight on the origin holds the cut-over at its drain
      // (wait-origin-idle) while the rollback is asked for.
      const pending = connect({ host: IP.origin, port: 80 });
      await new Promise<void>((r) => pending.once('connect', () => r()));
      pending.on('error', () => undefined);
      pending.write(
        'POST /orders HTTP/1.1\r\nHost: blog.example\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{"key":',
      );
      await migrate('blog-cutover', []);
      await untilPhase('blog-cutover', 'cutover');
      const r2 = await rollbackWhile('blog-cutover', () => pending.destroy());
      assert.deepEqual(requestedFrom(r2), { from: 'cutover', reason: 'requested' });
      assert.ok(!r2.phases.some((p) => p.name === 'draining'));

      // In draining (clients with stale caches still at IPt keep its wait open): the target is the
      // writer; a reverse migration brings its writes back.
      await migrate('blog-draining', ['--drain-cap', '60000']);
      const draining = await untilPhase('blog-draining', 'draining');
      const stale = keepBusy(draining.plan.tempIp);
      const order = await call(`http://${IP.target}/orders`, {
        method: 'POST',
        host: 'blog.example',
        body: { key: 'written-on-target-while-draining' },
      });
      assert.equal(order.status, 201, order.body);
      const r3 = await rollbackWhile('blog-draining', stale);
      assert.deepEqual(requestedFrom(r3), { from: 'draining', reason: 'requested' });
      assert.ok(
        r3.journal!.some((e) => e.step === 'reverse-final-sync'),
        'a reverse migration ran',
      );
      const orders = JSON.parse(
        (await call(`http://${IP.origin}/orders`, { host: 'blog.example' })).body,
      ) as Array<{ key: string }>;
      assert.ok(
        orders.some((o) => o.key === 'written-on-target-while-draining'),
        'the write taken by the target is on the origin after the rollback',
      );

      // A migration that fails after the switch (the origin's agent dies in draining) keeps its
      // temporary IP leased and its site where DNS points until the operator rolls it back.
      await migrate('blog-failed', ['--drain-cap', '60000']);
      const failing = await untilPhase('blog-failed', 'draining');
      agents.origin!.child.kill('SIGKILL');
      await agents.origin!.exited;
      const failed = await untilPhase('blog-failed', 'failed');
      assert.match(failed.error ?? '', /origin/);
      const whileFailed = (await servers()).find((s) => s.id === 'origin')!;
      assert.ok(
        !whileFailed.freeTempIps.includes(failing.plan.tempIp),
        `the failed migration's temporary IP is not free: ${JSON.stringify(whileFailed)}`,
      );
      const sitesNow = JSON.parse((await call(`${api}/v1/sites`, { token: reader })).body) as {
        sites: Array<{ domain: string; server: string; migration: string | null }>;
      };
      assert.deepEqual(
        sitesNow.sites.find((x) => x.domain === 'blog.example.'),
        { domain: 'blog.example.', server: 'target', ports: [80], kind: 'builtin', migration: 'blog-failed' },
        'placed where its A record points',
      );
      const refusedStart = await ferry(['migrate', 'blog.example', '--to', 'target'], cli);
      assert.equal(refusedStart.code, 1);
      assert.match(
        refusedStart.stderr,
        /failed migration \(blog-failed\); resolve it first with: ferry rollback blog-failed/,
      );
      await startAgent('origin'); // restarted, it restores its sites and the redirect
      const r4 = await rollback('blog-failed');
      assert.deepEqual(requestedFrom(r4), { from: 'draining', reason: 'requested' });

      // The Knot secondary followed every change, told by NOTIFY and transferring with TSIG.
      if (secondaries.includes(`${NET}54`)) {
        const serial = await soaSerial(IP.dns);
        assert.ok(serial! > primarySerial!, 'the zone changed');
        await until('Knot caught up by NOTIFY', async () => (await soaSerial(`${NET}54`)) === serial);
        assert.deepEqual(await digShort({ address: `${NET}54`, port: 53 }, 'blog.example', 'A'), [IP.origin]);
      }

      // `ferry status`: every migration.
      const all = await ferry([...docCommand('status'), '--json'], cli);
      assert.equal(all.code, 0, all.stderr);
      const phases = Object.fromEntries(
        (JSON.parse(all.stdout) as { migrations: MigrationJson[] }).migrations.map((m) => [m.id, m.phase]),
      );
      assert.deepEqual(phases, {
        [shopId]: 'completed',
        'blog-dns-temp': 'rolled-back',
        'blog-cutover': 'rolled-back',
        'blog-draining': 'rolled-back',
        'blog-failed': 'rolled-back',
      });

      // The dashboard at the API's address: its page and assets are public, its data needs a token.
      const page = await call(`${api}/`);
      assert.equal(page.status, 200);
      assert.match(String(page.headers['content-type']), /text\/html/);
      for (const asset of [...page.body.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!)) {
        assert.equal((await call(`${api}${asset}`)).status, 200, asset);
      }
      assert.equal((await call(`${api}/v1/servers`)).status, 401, 'data needs a token');
      for (const path of [
        '/v1/servers',
        '/v1/sites',
        '/v1/migrations?limit=50',
        `/v1/migrations/${shopId}`,
        `/v1/migrations/${shopId}/traffic`,
      ]) {
        const r = await call(`${api}${path}`, { token: reader });
        assert.equal(r.status, 200, `${path}: ${r.body}`);
      }
      const sites = JSON.parse((await call(`${api}/v1/sites`, { token: reader })).body) as {
        sites: Array<{ domain: string; server: string }>;
      };
      assert.deepEqual(Object.fromEntries(sites.sites.map((s) => [s.domain, s.server])), {
        'shop.example.': 'target',
        'blog.example.': 'origin',
        'wp.example.': 'origin',
      });
      const samples = JSON.parse(
        (await call(`${api}/v1/migrations/${shopId}/traffic`, { token: reader })).body,
      ) as { samples: unknown[] };
      assert.ok(Array.isArray(samples.samples));
      const refused = await call(`${api}/v1/migrations`, {
        method: 'POST',
        token: reader,
        body: { domain: 'blog.example', to: 'target' },
      });
      assert.equal(refused.status, 403, 'a read token cannot start a migration');

      // The dashboard in chromium (when installed), with the read token, shows what the API says.
      if (existsSync(CHROMIUM)) {
        const { chromium } = await import('playwright-core');
        const profile = join(dir, 'chromium');
        const context = await chromium.launchPersistentContext(profile, {
          executablePath: CHROMIUM,
          headless: true,
          args: [
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--no-first-run',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
          ],
        });
        try {
          const tab = context.pages()[0] ?? (await context.newPage());
          const pageErrors: string[] = [];
          tab.on('pageerror', (e) => pageErrors.push(e.message));
          await tab.goto(`${api}/#token=${reader}`);
          await tab.waitForSelector('#migrations tbody tr', { timeout: 30_000 });
          assert.match(await tab.locator('#sites tbody').innerText(), /shop\.example\.\s+target/);
          const rows = await tab.locator('#migrations tbody').innerText();
          for (const id of ['blog-dns-temp', 'blog-cutover', 'blog-draining'])
            assert.match(rows, new RegExp(`${id}\\s+blog\\.example\\.\\s+rolled-back`));
          assert.match(rows, new RegExp(`${shopId}\\s+shop\\.example\\.\\s+completed`));
          assert.deepEqual(pageErrors, []);
        } finally {
          await context.close();
        }
      } else
        console.log(
          `# deployment e2e: ${CHROMIUM} is not installed; the dashboard was checked through its API only`,
        );

      // SIGTERM stops the controller cleanly.
      controller.child.kill('SIGTERM');
      assert.equal(await controller.exited, 0);
      ok = true;
    } finally {
      for (const p of procs.reverse()) await stop(p);
      for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      // A deployed agent leaves its site app and redirects running when it stops; the test ends them.
      killProcessesUnder(dir);
      process.off('exit', onExit);
      if (ok) await rm(dir, { recursive: true, force: true });
      else console.log(`# deployment e2e failed; logs and files kept in ${dir}`);
    }
  },
);
