/** Run the web server's own dump command and describe its sites. */
import { execFile } from 'node:child_process';
import { FerryError } from '../../common/errors.js';
import { apacheSites } from './apache.js';
import { assessSites, type AssessOptions } from './assess.js';
import type { WebSitesReport } from './model.js';
import { parseNginxDump } from './nginx-syntax.js';
import { nginxSites } from './nginx.js';
import { debianPoolDirs, readFpmPools } from './php-fpm.js';

/** Which web server to read and how (`ferry agent --web-config`). */
export interface WebConfigOptions {
  kind: 'nginx' | 'apache';
  /** The dump command and its arguments. Default `nginx -T`, or `apache2ctl -S`. */
  command?: string[];
  /** Environment of the command and of `${VAR}` in Apache files. Default the agent's own. */
  env?: Record<string, string | undefined>;
  /** Folders of PHP-FPM pool files. Default /etc/php/<version>/fpm/pool.d of every version. */
  poolDirs?: string[];
  /** Folders sites' files may live under. Default /var/www and /srv. */
  declaredRoots?: string[];
  customerOf?: AssessOptions['customerOf'];
  /** Longest the dump command may run. Default 30 000 ms. */
  timeoutMs?: number;
}

export const DEFAULT_DECLARED_ROOTS = ['/var/www', '/srv'];

function run(cmd: string[], env: Record<string, string | undefined>, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd[0]!,
      cmd.slice(1),
      { env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        // The tool's own message names the file and line of a syntax error; pass it on as it is.
        const said = stderr
          .split('\n')
          .map((l) => l.trim())
          .filter((l) => l && !/syntax is ok|test is successful|AH00558/.test(l))
          .slice(0, 8)
          .join(' / ');
        const code = (err as NodeJS.ErrnoException).code;
        const why =
          code === 'ENOENT'
            ? 'not found'
            : err.killed
              ? `killed after ${timeoutMs} ms`
              : `failed: ${said || err.message}`;
        reject(new FerryError('WEBCONFIG_COMMAND', `${cmd.join(' ')} ${why}`, { cause: err }));
      },
    );
  });
}

/** The sites of the web server `opts` names, each with what Ferry can move and why not. */
export async function readWebSites(opts: WebConfigOptions): Promise<WebSitesReport> {
  const env = opts.env ?? process.env;
  const command = opts.command ?? (opts.kind === 'nginx' ? ['nginx', '-T'] : ['apache2ctl', '-S']);
  const dump = await run(command, env, opts.timeoutMs ?? 30_000);
  const pools = await readFpmPools(opts.poolDirs ?? (await debianPoolDirs()));
  const declaredRoots = opts.declaredRoots ?? DEFAULT_DECLARED_ROOTS;
  const sites =
    opts.kind === 'nginx' ? nginxSites(parseNginxDump(dump), pools) : await apacheSites(dump, pools, env);
  await assessSites(sites, { declaredRoots, ...(opts.customerOf ? { customerOf: opts.customerOf } : {}) });
  return { server: opts.kind, command: command.join(' '), sites, declaredRoots };
}
