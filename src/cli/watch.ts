/**
 * `ferry watch ID`: follow a migration live until it ends. On a terminal: the phase, a countdown on
 * each wait, the running sync pass's progress (bar, percent, bytes), held connections and traffic
 * at IP1/IPt/IP2 on one status line that redraws; a line per sync pass done. Elsewhere one line per
 * event, sync progress at most every 5 s; with --json, every event as it comes (then a summary). Exit code 0 when
 * the migration completed, 1 when it failed or was rolled back.
 */
import type { Command } from 'commander';
import { STEP } from '../migration/index.js';
import {
  ApiClient,
  CLI_EXIT,
  CliError,
  TERMINAL,
  action,
  bytes,
  clientOf,
  duration,
  exitOfPhase,
  withConnection,
  type ConnectionOptions,
  type MigrationView,
  type MigrationSummaryView,
  type StreamEvent,
} from './client.js';

export interface WatchOptions {
  json?: boolean;
  /** Where lines go (default stdout). */
  out?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
}

/** The final summary of a migration: what `--json` prints last. */
export function summaryOf(m: MigrationSummaryView) {
  return {
    id: m.id,
    domain: m.domain,
    from: m.from,
    to: m.to,
    phase: m.phase,
    ...(m.error ? { error: m.error } : {}),
    phases: m.phases.map((p) => ({
      name: p.name,
      startedAt: p.startedAt,
      endedAt: p.endedAt,
      ms: p.endedAt === null ? null : p.endedAt - p.startedAt,
    })),
    ...(m.redirectRemovedAt !== undefined ? { redirectRemovedAt: m.redirectRemovedAt } : {}),
    ...(m.tempIpRemovedAt !== undefined ? { tempIpRemovedAt: m.tempIpRemovedAt } : {}),
  };
}

/** When the redirect at IPt and IPt itself went, as lines (none before they went). */
export function removedLines(m: MigrationView): string[] {
  const at = (t: number) => new Date(t).toISOString();
  return [
    ...(m.redirectRemovedAt !== undefined ? [`  redirect at IPt stopped ${at(m.redirectRemovedAt)}`] : []),
    ...(m.tempIpRemovedAt !== undefined ? [`  IPt ${m.plan.tempIp} removed ${at(m.tempIpRemovedAt)}`] : []),
  ];
}

function describe(m: MigrationView): string {
  const lines = [`${m.id}: ${m.domain} ${m.from} → ${m.to}: ${m.phase}${m.error ? ` (${m.error})` : ''}`];
  for (const p of m.phases) {
    lines.push(
      `  ${p.name.padEnd(12)} ${p.endedAt === null ? (TERMINAL.has(p.name) ? '' : 'running') : duration(p.endedAt - p.startedAt)}`,
    );
  }
  lines.push(...removedLines(m));
  return lines.join('\n');
}

/**
 * A `sync` progress event as a bar: `████▒▒▒▒▒▒ 42% 1.20 GB` (no percent when the driver does not
 * know the total), with the attempt when a retried pass started again from 0.
 */
export function progressText(d: Record<string, unknown>): string {
  const percent =
    typeof d.percent === 'number' && Number.isFinite(d.percent)
      ? Math.max(0, Math.min(100, d.percent))
      : null;
  const filled = percent === null ? 0 : Math.round(percent / 10);
  const bar = '█'.repeat(filled) + '▒'.repeat(10 - filled);
  const files = typeof d.files === 'number' ? `, ${d.files} files` : '';
  const attempt = typeof d.attempt === 'number' && d.attempt > 1 ? ` (attempt ${d.attempt}, from 0)` : '';
  return `${bar}${percent === null ? '' : ` ${Math.floor(percent)}%`} ${bytes(Number(d.bytes ?? 0))}${files}${attempt}`;
}

/** Follow migration `id` to its end; resolves with its final record. */
export async function watchMigration(
  client: ApiClient,
  id: string,
  opts: WatchOptions = {},
): Promise<MigrationView> {
  const out = opts.out ?? process.stdout;
  const json = Boolean(opts.json);
  const tty = !json && Boolean(out.isTTY);
  const write = (s: string) => out.write(s);
  const path = `/v1/migrations/${encodeURIComponent(id)}`;
  let rec = await client.get<MigrationView>(path);
  if (TERMINAL.has(rec.phase)) {
    write(json ? JSON.stringify({ summary: summaryOf(rec) }) + '\n' : describe(rec) + '\n');
    return rec;
  }
  if (!json)
    write(
      `Watching ${rec.id}: ${rec.domain} ${rec.from} → ${rec.to} (IP1 ${rec.plan.originIp}, IPt ${rec.plan.tempIp}, IP2 ${rec.plan.targetIp})\n`,
    );

  // Live state for the status line.
  let phase = '';
  let phaseAt = rec.createdAt;
  let wait: { what: string; remainingMs: number; at: number } | undefined;
  let traffic = { ip1: 0, ipt: 0, ip2: 0 };
  let held = 0;
  /** The sync pass copying now, from its `progress` events (cleared when it is done). */
  let copying: string | undefined;
  /** A web site's databases: the last replication lag, from `database` events (until the take-over). */
  let dbLag: string | undefined;
  let lastPlainSync = 0;
  let statusShown = false;
  let lastPlainStatus = 0;
  const status = () => {
    const left = wait ? Math.max(0, wait.remainingMs - (Date.now() - wait.at)) : 0;
    const w = wait ? ` · ${wait.what} ≤${duration(left)}` : '';
    const c = copying ? ` · ${copying}` : '';
    const l = dbLag ? ` · ${dbLag}` : '';
    return `[${phase} ${duration(Date.now() - phaseAt)}${w}${c}${l}] IP1 ${traffic.ip1} r/s · IPt ${traffic.ipt} r/s · IP2 ${traffic.ip2} r/s · held ${held}`;
  };
  const clearStatus = () => {
    if (tty && statusShown) write('\r\x1b[K');
    statusShown = false;
  };
  const showStatus = () => {
    if (json) return;
    if (tty) {
      const cols = out.columns ?? 120;
      write(`\r\x1b[K${status().slice(0, cols - 1)}`);
      statusShown = true;
    } else if (Date.now() - lastPlainStatus >= 5000) {
      lastPlainStatus = Date.now();
      write(`  ${status()}\n`);
    }
  };
  const line = (s: string) => {
    clearStatus();
    write(`${new Date().toISOString().slice(11, 19)}  ${s}\n`);
    showStatus();
  };
  const ticker = tty ? setInterval(showStatus, 500) : undefined;
  /** A `database` event: the lag goes to the status line, the rest is a line each. */
  const databaseLine = (d: Record<string, unknown>) => {
    switch (d.state) {
      case 'lag': {
        const lag = (d.lag ?? {}) as {
          seconds?: number | null;
          transactions?: number | null;
          error?: string;
        };
        dbLag = `db lag ${lag.seconds ?? '?'} s, ${lag.transactions ?? '?'} tx${lag.error ? ` (${lag.error})` : ''}`;
        if (lag.error) line(`  database replication error: ${lag.error}`);
        else showStatus();
        return;
      }
      case 'copied':
        return line(
          `  databases copied: ${bytes(Number(d.bytes ?? 0))} in ${duration(Number(d.ms ?? 0))}, replicating`,
        );
      case 'frozen':
        return line(`  databases frozen on the origin at ${String(d.position)}`);
      case 'caught-up':
        dbLag = undefined;
        return line(`  databases caught up in ${Number(d.waitedMs ?? 0)} ms: the target is the writer`);
      case 'catchup-timeout':
        return line(
          `  databases: the catch-up timed out (attempt ${String(d.attempt)} of ${String(d.attempts)}); ${
            d.retryAt === undefined
              ? 'the migration rolls back'
              : `released back to the origin, next cut-over at ${new Date(Number(d.retryAt)).toISOString().slice(11, 19)}`
          }`,
        );
      default:
        return;
    }
  };

  const onEvent = (e: StreamEvent): boolean => {
    if (e.event === 'open') return false;
    const d = (e.data.data ?? {}) as Record<string, unknown>;
    if (json)
      write(
        JSON.stringify({ event: e.event, ...(e.id !== undefined ? { id: e.id } : {}), ...e.data }) + '\n',
      );
    switch (e.event) {
      case 'phase': {
        const p = String(d.phase);
        if (p !== phase) {
          if (!json)
            line(`phase ${p}${phase ? ` (${phase} took ${duration(Number(e.data.at) - phaseAt)})` : ''}`);
          phase = p;
          phaseAt = Number(e.data.at);
          wait = undefined;
          copying = undefined;
        }
        return TERMINAL.has(p);
      }
      case 'wait':
        wait = { what: String(d.what), remainingMs: Number(d.remainingMs), at: Number(e.data.at) };
        showStatus();
        return false;
      case 'sample': {
        const s = e.data as {
          rps?: typeof traffic;
          redirect?: { held?: number } | null;
          heldAtOrigin?: number;
        };
        if (s.rps) traffic = s.rps;
        held = (s.redirect?.held ?? 0) + (s.heldAtOrigin ?? 0);
        showStatus();
        return false;
      }
      case 'sync':
        if (json) return false;
        if (d.state === 'progress') {
          // On a terminal the status line carries it (redrawn in place); elsewhere a line every 5 s.
          copying = `sync ${String(d.pass)} ${progressText(d)}`;
          if (tty) showStatus();
          else if (Date.now() - lastPlainSync >= 5000) {
            lastPlainSync = Date.now();
            line(`  ${copying}`);
          }
          return false;
        }
        {
          const done = d.state === 'done';
          copying = undefined;
          lastPlainSync = 0;
          const bar = done ? '██████████' : '▒▒▒▒▒▒▒▒▒▒';
          line(
            `  sync ${String(d.pass)} ${bar} ${done ? `${String(d.files ?? '?')} files, ${bytes(Number(d.bytes ?? 0))}${d.ms !== undefined ? ` in ${duration(Number(d.ms))}` : ''}` : 'running'}`,
          );
        }
        return false;
      case 'database':
        if (!json) databaseLine(d);
        return false;
      case 'held':
        if (!json)
          line(
            `  ${d.state === 'holding' ? 'holding' : 'released'}: ${String(d.redirect ?? 0)} connections at IPt, ${String(d.site ?? 0)} requests at the origin`,
          );
        return false;
      case 'step':
        // The domain's record, and each other name's of the site (`dns-change@name`).
        if (!json && (d.step === STEP.dnsChange || String(d.step).startsWith(`${STEP.dnsChange}@`))) {
          const detail = d.detail as { address?: string; name?: string; type?: string } | undefined;
          line(`  ${detail?.name ?? rec.domain} ${detail?.type ?? 'A'} → ${String(detail?.address ?? '?')}`);
        }
        return false;
      case 'error':
        copying = undefined; // a pass that failed reports no more
        if (!json) line(`  error${d.phase ? ` in ${String(d.phase)}` : ''}: ${String(d.message)}`);
        return false;
      case 'retry':
        if (!json) line(`  retry ${String(d.attempt)} of ${String(d.what)}: ${String(d.message)}`);
        return false;
      default:
        return false;
    }
  };

  let lastId = 0;
  let failures = 0;
  try {
    for (;;) {
      let ended = false;
      try {
        for await (const e of client.stream(
          `/v1/events?migration=${encodeURIComponent(id)}&since=${lastId}`,
          lastId ? { lastEventId: lastId } : {},
        )) {
          if (e.id !== undefined) lastId = e.id;
          failures = 0;
          if (onEvent(e)) {
            ended = true;
            break;
          }
        }
      } catch (err) {
        if (err instanceof CliError && err.exitCode !== CLI_EXIT.unreachable) throw err;
        if (++failures > 5) throw err;
      }
      if (ended) break;
      // The stream dropped: is it over, or do we resume after the last event seen?
      rec = await client.get<MigrationView>(path).catch((err: unknown) => {
        if (++failures > 5) throw err;
        return rec;
      });
      if (TERMINAL.has(rec.phase)) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    if (ticker) clearInterval(ticker);
    clearStatus();
  }
  // The phase event arrives as the journal records it; the record is final by now or shortly after.
  for (let i = 0; i < 20; i++) {
    rec = await client.get<MigrationView>(path);
    if (TERMINAL.has(rec.phase)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  write(json ? JSON.stringify({ summary: summaryOf(rec) }) + '\n' : '\n' + describe(rec) + '\n');
  return rec;
}

export function registerWatch(program: Command): void {
  withConnection(
    program
      .command('watch')
      .description('Follow a migration live until it ends (exit 0 completed, 1 failed or rolled back)')
      .argument('<id>', 'migration id'),
  ).action(
    action(async (id: string, o: ConnectionOptions) => {
      const rec = await watchMigration(clientOf(o), id, { json: Boolean(o.json) });
      return exitOfPhase(rec.phase);
    }),
  );
}
