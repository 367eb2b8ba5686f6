// The import rule of docs/architecture.md, checked on the source: the modules of cli.ts, pipelines/ and
// lib/ import each other without circles (a circle makes load order decide which module sees an
// undefined binding), and no pipeline imports another pipeline (what two pipelines share lives in lib/).
// The graph is read from the import and export specifiers with a regular expression: relative ones only
// (packages cannot import lmpipe), static, dynamic and type-only alike.
import assert from "node:assert/strict";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = normalize(join(dirname(fileURLToPath(import.meta.url)), ".."));

/** Every .ts file below `dir` (relative to ROOT), sorted. */
function sourcesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of Deno.readDirSync(join(ROOT, d))) {
      const p = join(d, e.name);
      if (e.isDirectory) walk(p);
      else if (e.name.endsWith(".ts")) out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

const SPECIFIER = /(?:^|[;\s])(?:import|export)\b[^;"'`]*?(?:from\s*)?["'](\.{1,2}\/[^"']+)["']/g;
const DYNAMIC = /\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g;

/** The relative imports of one file, as paths relative to ROOT. */
export function importsOf(file: string, text: string): string[] {
  const specs = new Set<string>();
  for (const re of [SPECIFIER, DYNAMIC]) {
    for (const m of text.matchAll(re)) specs.add(m[1]);
  }
  return [...specs].map((s) => normalize(join(dirname(file), s)));
}

/** The import graph of cli.ts, lib/ and pipelines/: file -> files it imports. */
export function importGraph(): Map<string, string[]> {
  const files = ["cli.ts", ...sourcesUnder("lib"), ...sourcesUnder("pipelines")];
  const graph = new Map<string, string[]>();
  for (const f of files) graph.set(f, importsOf(f, Deno.readTextFileSync(join(ROOT, f))));
  return graph;
}

/** Every circle of the graph, each once, as the list of files around it. */
export function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (f: string) => {
    state.set(f, "open");
    stack.push(f);
    for (const g of graph.get(f) ?? []) {
      if (!graph.has(g)) continue;
      if (state.get(g) === "open") found.push([...stack.slice(stack.indexOf(g)), g]);
      else if (!state.has(g)) visit(g);
    }
    stack.pop();
    state.set(f, "done");
  };
  for (const f of graph.keys()) if (!state.has(f)) visit(f);
  return found;
}

Deno.test("imports: every relative import names an existing file", () => {
  const missing: string[] = [];
  for (const [f, deps] of importGraph()) {
    for (const d of deps) {
      try {
        Deno.statSync(join(ROOT, d));
      } catch {
        missing.push(`${f} -> ${d}`);
      }
    }
  }
  assert.deepEqual(missing, []);
});

Deno.test("imports: no circles among cli.ts, pipelines/ and lib/", () => {
  const found = cycles(importGraph()).map((c) => c.join(" -> "));
  assert.deepEqual(found, [], `import circles:\n${found.join("\n")}`);
});

Deno.test("imports: no pipeline imports another pipeline, and lib/ imports no pipeline", () => {
  const bad: string[] = [];
  const pipelineOf = (f: string) => f.startsWith("pipelines/") ? f.split("/")[1] : null;
  for (const [f, deps] of importGraph()) {
    for (const d of deps) {
      const from = pipelineOf(f), to = pipelineOf(d);
      if (to !== null && from !== to && f !== "cli.ts") bad.push(`${f} -> ${d}`); // lib/ has from === null
    }
  }
  assert.deepEqual(
    bad,
    [],
    `pipelines are used as libraries; move what they share to lib/:\n${bad.join("\n")}`,
  );
});

Deno.test("imports: the circle finder finds a circle", () => {
  const g = new Map([["a.ts", ["b.ts"]], ["b.ts", ["c.ts"]], ["c.ts", ["a.ts"]], ["d.ts", ["a.ts"]]]);
  assert.deepEqual(cycles(g), [["a.ts", "b.ts", "c.ts", "a.ts"]]);
  assert.deepEqual(cycles(new Map([["a.ts", ["b.ts"]], ["b.ts", []]])), []);
  const multi = importsOf("lib/x.ts", 'import {\n  a,\n  b,\n} from "./y.ts";\nexport * from "../z.ts";\n');
  assert.deepEqual(multi, ["lib/y.ts", "z.ts"]);
  assert.ok(
    importsOf("cli.ts", 'const m = () => import("./pipelines/a/mod.ts");').includes("pipelines/a/mod.ts"),
  );
});
