// Fails when the TypeScript sources import each other in a cycle. Every static import and
// re-export counts, type-only ones included (`import type` ties modules together for readers and
// for the compiler as much as a value import); a dynamic import() does not. Run by `npm run lint`.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

const ROOTS = ['src', 'test', 'bench', 'scripts'];
const root = resolve(dirname(new URL(import.meta.url).pathname), '..');

function walk(dir, out) {
  let names;
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of names) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (/\.(ts|mts)$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const files = ROOTS.flatMap((r) => walk(join(root, r), []));
const known = new Set(files);

/** The files `file` imports statically (relative specifiers only; `.js` names its `.ts` source). */
function importsOf(file) {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, false);
  const out = [];
  for (const st of sf.statements) {
    const spec = (ts.isImportDeclaration(st) || ts.isExportDeclaration(st)) && st.moduleSpecifier;
    if (!spec || !ts.isStringLiteral(spec) || !spec.text.startsWith('.')) continue;
    const base = resolve(dirname(file), spec.text);
    const target = [
      base.replace(/\.js$/, '.ts'),
      base.replace(/\.mjs$/, '.mts'),
      base,
      `${base}.ts`,
      join(base, 'index.ts'),
    ].find((c) => known.has(c));
    if (target) out.push(target);
  }
  return out;
}

const edges = new Map(files.map((f) => [f, importsOf(f)]));

// Tarjan's strongly connected components; every component of more than one file (or a file that
// imports itself) is a cycle.
let index = 0;
const stack = [];
const info = new Map();
const cycles = [];
function connect(v) {
  info.set(v, { index, low: index, onStack: true });
  index++;
  stack.push(v);
  for (const w of edges.get(v)) {
    if (!info.has(w)) {
      connect(w);
      info.get(v).low = Math.min(info.get(v).low, info.get(w).low);
    } else if (info.get(w).onStack) {
      info.get(v).low = Math.min(info.get(v).low, info.get(w).index);
    }
  }
  if (info.get(v).low === info.get(v).index) {
    const scc = [];
    let w;
    do {
      w = stack.pop();
      info.get(w).onStack = false;
      scc.push(w);
    } while (w !== v);
    if (scc.length > 1 || edges.get(v).includes(v)) cycles.push(scc);
  }
}
for (const f of files) if (!info.has(f)) connect(f);

if (cycles.length) {
  console.error(
    `import cycles (${cycles.length}); break each so that no module imports, even only types, one that imports it back:`,
  );
  for (const scc of cycles) {
    const members = new Set(scc);
    console.error(
      `- ${scc
        .map((f) => relative(root, f))
        .sort()
        .join(', ')}`,
    );
    for (const f of [...scc].sort()) {
      const inside = edges.get(f).filter((t) => members.has(t));
      console.error(`    ${relative(root, f)} → ${inside.map((t) => relative(root, t)).join(', ')}`);
    }
  }
  process.exit(1);
}
console.log(`no import cycles among ${files.length} files`);
