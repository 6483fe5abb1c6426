/** PHP-FPM pool files (INI: `[pool]` sections, `key = value`, `;` comments) and the socket each listens on. */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FpmPool } from './model.js';

/** The pools of one pool file; `$pool` in a value is the pool's name, as php-fpm expands it. */
export function parseFpmPools(text: string, file: string): FpmPool[] {
  const pools: FpmPool[] = [];
  let cur: (FpmPool & { vars: Map<string, string> }) | null = null;
  const done = () => {
    if (cur && cur.name !== 'global') {
      const v = (k: string) => cur!.vars.get(k)?.replace(/\$pool/g, cur!.name) ?? null;
      pools.push({
        name: cur.name,
        file,
        line: cur.line,
        listen: v('listen') ?? '',
        user: v('user'),
        group: v('group'),
      });
    }
  };
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith(';') || line.startsWith('#')) return;
    const section = /^\[([^\]]+)\]$/.exec(line);
    if (section) {
      done();
      cur = {
        name: section[1]!.trim(),
        file,
        line: i + 1,
        listen: '',
        user: null,
        group: null,
        vars: new Map(),
      };
      return;
    }
    const eq = line.indexOf('=');
    if (!cur || eq < 0) return;
    let value = line.slice(eq + 1).trim();
    if (/^".*"$/.test(value)) value = value.slice(1, -1);
    (cur as { vars: Map<string, string> }).vars.set(line.slice(0, eq).trim(), value);
  });
  done();
  return pools;
}

/** Every pool of the `.conf` files in the given folders (missing folders are skipped). */
export async function readFpmPools(dirs: string[]): Promise<FpmPool[]> {
  const pools: FpmPool[] = [];
  for (const dir of dirs) {
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => n.endsWith('.conf')).sort();
    } catch {
      continue;
    }
    for (const n of names) {
      const file = join(dir, n);
      pools.push(...parseFpmPools(await readFile(file, 'utf8'), file));
    }
  }
  return pools;
}

/** The folders of Debian's pool files: /etc/php/<version>/fpm/pool.d for each installed version. */
export async function debianPoolDirs(etcPhp = '/etc/php'): Promise<string[]> {
  try {
    return (await readdir(etcPhp)).sort().map((v) => join(etcPhp, v, 'fpm', 'pool.d'));
  } catch {
    return [];
  }
}

/** `unix:/run/php/x.sock` → `/run/php/x.sock`; `127.0.0.1:9000` stays; a bare port means every address. */
function normalise(listen: string): string {
  const s = listen.trim().replace(/^unix:/, '');
  if (/^\d+$/.test(s)) return `*:${s}`;
  return s.replace(/^(0\.0\.0\.0|\[::\]|localhost):/, '*:');
}

/** The pool listening where a site sends its PHP requests. */
export function poolListeningOn(pools: FpmPool[], socket: string): FpmPool | null {
  const want = normalise(socket);
  const tcp = /^(.*):(\d+)$/.exec(want);
  return (
    pools.find((p) => {
      const have = normalise(p.listen);
      if (have === want) return true;
      const m = /^\*:(\d+)$/.exec(have);
      return m !== null && tcp !== null && m[1] === tcp[2];
    }) ?? null
  );
}
