// Studies run as separate jobs (`study --only SPEC`, one per model or per model and size, on one machine
// or many) and merged later (`study --merge`): each run folder keeps its report row and the settings it
// ran under in study_result.json; the merge reads them from the study folder's run folders and from any
// folders named, checks that they ran under one setting, and writes one report.
import { basename, join, relative } from "node:path";
import { inputError, usageError } from "../../lib/errors.ts";
import { info } from "../../lib/log.ts";
import { pathExists, writeAtomic } from "../../lib/fs.ts";
import { familyNames } from "../../lib/models/registry.ts";
import type { ModelResult, StudyReport } from "./report.ts";
import { readJson, type StudyOptions } from "./runner.ts";
import { commandLine, type ReportSettings, writeReport } from "./figures.ts";

/** A run's report row and the study settings it ran under, for `--merge`. */
export const RESULT_FILE = "study_result.json";

/** The settings that must agree between the runs of one report (sizes: the list the job was given). */
type SharedSettings =
  & Pick<StudyOptions, "data" | "budget" | "budgetTokens" | "preset" | "backend" | "seed" | "evalTokens">
  & {
    sizes: string[] | null;
  };

interface StoredResult {
  study: SharedSettings & { command: string };
  result: ModelResult;
}

/** Writes a finished (or failed) run's row into its run folder. */
export async function writeResult(o: StudyOptions, r: ModelResult, argv: string[]): Promise<void> {
  const { data, budget, budgetTokens, preset, backend, seed, evalTokens } = o;
  const stored: StoredResult = {
    study: {
      data,
      budget,
      budgetTokens,
      preset,
      sizes: o.sizes?.map((s) => s.text) ?? null,
      backend,
      seed,
      evalTokens,
      command: commandLine(argv),
    },
    result: r,
  };
  await Deno.mkdir(join(o.out, r.run_dir), { recursive: true });
  await writeAtomic(join(o.out, r.run_dir, RESULT_FILE), JSON.stringify(stored, null, 2) + "\n");
}

/**
 * The sizes of merged runs, in the order their jobs listed them when all listed the same; else (e.g. one
 * job per size) smallest first, by the mean FLOPs per token of their runs.
 */
function sizeOrder(stored: StoredResult[]): string[] {
  const lists = new Set(stored.map((s) => JSON.stringify(s.study.sizes)));
  const present = new Set(stored.map((s) => s.result.size ?? ""));
  if (lists.size === 1) return stored[0].study.sizes!.filter((s) => present.has(s));
  const cost = (size: string) => {
    const f = stored.filter((s) => s.result.size === size && s.result.flops_per_token !== undefined);
    return f.length ? f.reduce((t, s) => t + s.result.flops_per_token!, 0) / f.length : Infinity;
  };
  return [...present].sort((a, b) => cost(a) - cost(b));
}

/** Settings as stored, with what older result files lack filled in (no token budget, no sizes). */
function normalise(s: Partial<SharedSettings>): SharedSettings {
  return {
    data: s.data!,
    budget: s.budget ?? null,
    budgetTokens: s.budgetTokens ?? null,
    preset: s.preset!,
    sizes: s.sizes ?? null,
    backend: s.backend!,
    seed: s.seed!,
    evalTokens: s.evalTokens!,
  };
}

/**
 * `lmpipe study --merge --out DIR [FOLDER...]`: the report of runs trained by separate jobs, from their
 * study_result.json files (DIR's run folders, and the FOLDERs: run folders or study folders).
 */
export async function mergeStudy(
  out: string | undefined,
  folders: string[],
  argv: string[],
): Promise<StudyReport> {
  if (!out) throw usageError("lmpipe study --merge: --out DIR is required (where report.json goes)");
  const found: { path: string; stored: StoredResult }[] = [];
  const read = async (dir: string) => {
    const path = join(dir, RESULT_FILE);
    const j = await readJson(path);
    if (j === null) return false;
    const stored = j as unknown as StoredResult;
    if (!stored.study || !stored.result || typeof stored.result.model !== "string") {
      throw inputError(
        `lmpipe study --merge: ${path} is not a study result (no "study" and "result" objects)`,
      );
    }
    found.push({ path: dir, stored: { ...stored, study: { ...normalise(stored.study), command: "" } } });
    return true;
  };
  const scanStudy = async (dir: string) => {
    let any = false;
    const names: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) if (e.isDirectory) names.push(e.name);
    } catch { /* not a folder (yet) */ }
    for (const name of names.sort()) any = await read(join(dir, name)) || any;
    return any;
  };
  await scanStudy(out);
  for (const f of folders) {
    if (!(await pathExists(f))) throw inputError(`lmpipe study --merge: ${f} does not exist`);
    if (!(await read(f)) && !(await scanStudy(f))) {
      throw inputError(`lmpipe study --merge: ${f} holds no ${RESULT_FILE}, nor run folders with one`);
    }
  }
  if (found.length === 0) {
    throw inputError(
      `lmpipe study --merge: no ${RESULT_FILE} in ${out}/<run>/ ` +
        `(train each model with 'lmpipe study ... --out ${out} --only SPEC' first)`,
    );
  }
  const first = found[0];
  const byLabel = new Map<string, string>();
  const keys = ["data", "budget", "budgetTokens", "backend", "seed", "evalTokens"] as const;
  for (const f of found) {
    const label = f.stored.result.model;
    if (byLabel.has(label) && byLabel.get(label) !== f.path) {
      throw usageError(
        `lmpipe study --merge: ${label} is in both ${byLabel.get(label)} and ${f.path}; keep one`,
      );
    }
    byLabel.set(label, f.path);
    const a = f.stored.study, b = first.stored.study;
    const differs = keys.find((k) => a[k] !== b[k]) ??
      ((a.sizes === null) !== (b.sizes === null)
        ? "sizes"
        : a.sizes === null && a.preset !== b.preset
        ? "preset"
        : undefined);
    if (differs) {
      const v = (s: SharedSettings) => JSON.stringify(differs === "sizes" ? s.sizes : s[differs]);
      throw inputError(
        `lmpipe study --merge: ${f.path} ran with ${differs} ${v(a)}, ${first.path} with ${v(b)}: ` +
          `one report compares runs of one setting; retrain or merge separately`,
      );
    }
  }
  const sizes = first.stored.study.sizes === null ? null : sizeOrder(found.map((f) => f.stored));
  // runs by size, then family (registry order), then spec
  const families = familyNames();
  const order = (r: ModelResult) => [
    sizes ? sizes.indexOf(r.size ?? "") : 0,
    families.indexOf((r.spec ?? r.model).split(":")[0]),
  ];
  const results = found.map((f) => ({
    ...f.stored.result,
    run_dir: relative(out, f.path) || basename(f.path),
  }))
    .sort((x, y) => {
      const [a, b] = [order(x), order(y)];
      return a[0] - b[0] || a[1] - b[1] || (x.spec ?? x.model).localeCompare(y.spec ?? y.model);
    });
  const settings: ReportSettings = { ...first.stored.study, out, sizes };
  await Deno.mkdir(out, { recursive: true });
  const report = await writeReport(settings, results, commandLine(argv));
  info(`study: merged ${results.length} run(s) into ${join(out, "report.md")} and report.json`);
  return report;
}
