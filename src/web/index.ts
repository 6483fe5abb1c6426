/**
 * The web dashboard, served by the control API: `/` (the page), `/assets/app.js` (bundled with
 * esbuild, with uPlot, on first request and kept in memory) and `/assets/uPlot.min.css`. These
 * files are public: they hold no data, and the page asks for a token before it calls the API.
 */
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { FerryError } from '../common/errors.js';

const here = dirname(fileURLToPath(import.meta.url));

/** The folder with the browser sources: beside this module (src/) or in src/ when run from dist/. */
export function clientDir(): string {
  for (const dir of [join(here, 'client'), join(here, '..', '..', 'src', 'web', 'client')]) {
    if (existsSync(join(dir, 'app.js'))) return dir;
  }
  throw new FerryError(
    'DASHBOARD_UNAVAILABLE',
    `the dashboard sources (src/web/client/app.js) are not found near ${here}`,
  );
}

let bundle: Promise<string> | undefined;

/** Bundle the dashboard script (minified, with uPlot) once; later calls share the result. */
export function buildDashboardBundle(): Promise<string> {
  bundle ??= (async () => {
    let esbuild: typeof import('esbuild');
    try {
      esbuild = await import('esbuild');
    } catch (err) {
      throw new FerryError(
        'DASHBOARD_UNAVAILABLE',
        'esbuild is not installed (npm ci installs it); the dashboard cannot be built',
        { cause: err },
      );
    }
    const res = await esbuild.build({
      entryPoints: [join(clientDir(), 'app.js')],
      bundle: true,
      minify: true,
      format: 'esm',
      target: ['chrome110', 'firefox110', 'safari16'],
      write: false,
      logLevel: 'silent',
      legalComments: 'none',
    });
    return res.outputFiles[0]!.text;
  })();
  bundle.catch(() => (bundle = undefined));
  return bundle;
}

function uplotCss(): Promise<string> {
  const require = createRequire(import.meta.url);
  return readFile(join(dirname(require.resolve('uplot')), 'uPlot.min.css'), 'utf8');
}

/** Add the dashboard's routes to an API instance. */
export function registerDashboard(app: FastifyInstance): void {
  const opts = { config: { scope: 'public' as const }, schema: { hide: true } };
  const headers = {
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
  };
  app.get('/', opts, async (_req, reply) => {
    const html = await readFile(join(clientDir(), 'index.html'), 'utf8');
    return reply
      .headers({
        ...headers,
        'content-type': 'text/html; charset=utf-8',
        'content-security-policy':
          "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        'referrer-policy': 'no-referrer',
      })
      .send(html);
  });
  app.get('/assets/app.js', opts, async (_req, reply) => {
    reply.headers({ ...headers, 'content-type': 'text/javascript; charset=utf-8' });
    return reply.send(await buildDashboardBundle());
  });
  app.get('/assets/uPlot.min.css', opts, async (_req, reply) => {
    reply.headers({ ...headers, 'content-type': 'text/css; charset=utf-8' });
    return reply.send(await uplotCss());
  });
}
