/**
 * `ferry demo` / `npm start`: run the sandbox, migrate one site under load, print a timeline
 * (phase, DNS answer, requests/s served by origin and target, failures) and a summary.
 */
import { Sandbox, type DemoSummary, type SandboxOptions } from './sandbox.js';
import { STEP, syncPassDone, type Phase } from '../migration/index.js';
import { abortable, sleep } from '../common/time.js';
import { generateToken, startApi, type StartedApi } from '../api/index.js';

export interface DemoOptions extends Partial<SandboxOptions> {
  /** Print the summary as one JSON line last instead of prose. */
  json?: boolean;
  /**
   * Keep the sandbox up after the migration until the signal aborts (npm start), with the control
   * API and dashboard listening from the start.
   */
  serve?: boolean;
  /** Migrate the first site at once (default true). With false (and serve), the load runs and the
   * platform waits for a migration started through the API, CLI or dashboard. */
  migrate?: boolean;
  /** Where the API and dashboard listen in serve mode. Default 127.0.0.1:7300 (port 0 picks one). */
  apiAddress?: string;
  apiPort?: number;
  /** The operator token of the API in serve mode; default a new random one, printed. */
  apiToken?: string;
  signal?: AbortSignal;
  /** Where the timeline goes (default stdout). */
  out?: (line: string) => void;
}

/**
 * Run the demo; resolves with the summary once the migration ended (and, with serve, the signal
 * fired), or with undefined when `migrate` is false.
 */
export async function runDemo(opts: DemoOptions): Promise<DemoSummary | undefined>;
export async function runDemo(opts?: DemoOptions & { migrate?: true }): Promise<DemoSummary>;
export async function runDemo(opts: DemoOptions = {}): Promise<DemoSummary | undefined> {
  const {
    json = false,
    serve = false,
    migrate = true,
    apiAddress = '127.0.0.1',
    apiPort = 7300,
    apiToken,
    signal,
    out = (l: string) => process.stdout.write(l + '\n'),
    ...scenario
  } = opts;
  const sb = new Sandbox(scenario);
  let api: StartedApi | undefined;
  const started = Date.now();
  const t = () => `t+${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s`;
  let phase: Phase | 'warm-up' = 'warm-up';
  await sb.start();
  try {
    const o = sb.opts;
    out(
      `Ferry sandbox on loopback: DNS ${sb.dns.address}:${sb.dns.port}, origin ${o.originIp}, target ${o.targetIp}, temporary IP ${o.tempIp}, sites on port ${sb.httpPort}`,
    );
    if (sb.realStack)
      out(
        `Real stack: a private nginx and php-fpm8.2 per server under ${sb.dataDir}; ${sb.migratedDomain} is a PHP site on its own pool, ${o.sites.slice(1).join(', ')} static`,
      );
    if (sb.databases.origin)
      out(
        `Databases: a private MariaDB per server (origin ${sb.databases.origin.address}:${sb.databases.origin.port}, target ${sb.databases.target!.address}:${sb.databases.target!.port}); the PHP site's orders are rows of the origin's database shop, which moves with it`,
      );
    if (serve) {
      const token = apiToken ?? generateToken();
      api = await startApi(sb.controller, {
        tokens: [{ token, scope: 'operator', name: 'sandbox' }],
        host: apiAddress,
        port: apiPort,
      });
      out(`Dashboard: ${api.url}/#token=${token}`);
      out(`Control API: ${api.url}  operator token: ${token}`);
      out(
        `  export FERRY_CONTROLLER=${api.url} FERRY_TOKEN=${token}   # then: npx ferry servers, ferry migrate …`,
      );
    }
    if (migrate) {
      out(
        `Migrating ${sb.migratedDomain} from origin to target under load (${o.rate} req/s, ${o.clients} users, ${Math.round(o.staleShare * 100)}% with stale caches)`,
      );
    } else {
      out(
        `Load on every site (${o.rate} req/s, ${o.clients} users); start a migration from the dashboard or with ferry migrate`,
      );
    }
    sb.orchestrator.on('phase', (e) => {
      phase = e.phase;
      out(`${t()}  phase ${e.phase}`);
    });
    sb.orchestrator.on('step', (e) => {
      if (e.step === STEP.dnsChange) out(`${t()}    ${sb.migratedDomain} A → ${String(e.detail?.address)}`);
      const pass = syncPassDone(e.step);
      if (pass) out(`${t()}    ${pass}: ${String(e.detail?.files)} files, ${String(e.detail?.bytes)} bytes`);
    });
    sb.orchestrator.on('database', (e) => {
      if (e.state === 'copied')
        out(`${t()}    databases copied: ${String(e.bytes)} bytes in ${String(e.ms)} ms, replicating`);
      else if (e.state === 'frozen') out(`${t()}    databases frozen on the origin at ${String(e.position)}`);
      else if (e.state === 'caught-up')
        out(`${t()}    databases caught up in ${String(e.waitedMs)} ms: the target is the writer`);
      else if (e.state === 'catchup-timeout')
        out(
          `${t()}    databases: the catch-up timed out (attempt ${String(e.attempt)}), released back to the origin`,
        );
    });
    sb.orchestrator.on('error', (e) => out(`${t()}  error in ${e.phase}: ${e.message}`));
    sb.watchDns();
    sb.startLoad();
    let seen = 0;
    const ticker = setInterval(() => {
      const results = sb.load.results();
      const fresh = results.slice(seen);
      seen = results.length;
      const mine = fresh.filter((r) => r.domain === sb.migratedDomain);
      const by = (who: string) => mine.filter((r) => r.servedBy === who).length;
      const failed = fresh.filter((r) => !r.ok).length;
      const answer = sb.dnsAnswers[sb.dnsAnswers.length - 1]?.address ?? '?';
      out(
        `${t()}  ${String(phase).padEnd(10)} dns=${answer.padEnd(13)} origin ${String(by('origin')).padStart(3)} r/s  target ${String(by('target')).padStart(3)} r/s  failed ${failed}`,
      );
    }, 1000);
    if (!migrate) {
      try {
        await untilAborted(signal);
      } finally {
        clearInterval(ticker);
      }
      return undefined;
    }
    let summary: DemoSummary;
    try {
      await sleep(o.warmupMs, signal);
      const rec = await abortable(sb.migrate(), signal);
      await sleep(o.cooldownMs, signal);
      await sb.load.stop();
      summary = await sb.summarize(rec);
    } finally {
      clearInterval(ticker);
    }
    out(json ? JSON.stringify(summary) : describe(summary));
    if (serve && !signal?.aborted) {
      out('');
      out(`The sandbox stays up until Ctrl-C. Try:`);
      out(`  dig @${sb.dns.address} -p ${sb.dns.port} ${sb.migratedDomain} A`);
      for (const site of o.sites)
        out(
          `  curl -si --resolve ${site.replace(/\.$/, '')}:${sb.httpPort}:${site === sb.migratedDomain ? o.targetIp : o.originIp} http://${site.replace(/\.$/, '')}:${sb.httpPort}/`,
        );
      await untilAborted(signal);
    }
    return summary;
  } finally {
    await api?.close();
    await sb.stop();
  }
}

/** Resolves when `signal` aborts (never without one). */
function untilAborted(signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    if (!signal) return;
    if (signal.aborted) return resolve();
    signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

function describe(s: DemoSummary): string {
  const lines = [
    '',
    `Migration ${s.migrationId}: ${s.finalPhase}`,
    ...s.phases.map((p) => `  ${p.name.padEnd(12)} ${((p.endedAt - p.startedAt) / 1000).toFixed(1)} s`),
    `DNS answers for ${s.domain}: ${s.dnsAnswers.map((a) => a.address).join(' → ')}`,
    `Requests to ${s.domain}: ${s.requests.total}, failed ${s.requests.failed} (origin served ${s.servedBy.origin}, target ${s.servedBy.target})${s.requests.resent ? `; ${s.requests.resent} sent again after a reload closed their kept-alive connection` : ''}`,
    `Writes acknowledged ${s.writes.acknowledged}: on target ${s.writes.onTarget}, missing ${s.writes.missing}, duplicated ${s.writes.duplicated}, written on origin after cut-over ${s.writes.onOriginAfterCutover}`,
    `Other sites on the shared IP: ${s.otherSites.requests} requests, ${s.otherSites.failed} failed`,
  ];
  for (const f of s.failures) lines.push(`  failure: ${f.domain} at ${f.address}: ${f.status ?? f.error}`);
  return lines.join('\n');
}
