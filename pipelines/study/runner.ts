// One run of `lmpipe study`: a model spec at a size, trained by a child `lmpipe train` into its own run
// folder and evaluated by a child `lmpipe eval`, then summed up as the report's row (steps, tokens, speed,
// losses, parameters, training FLOPs, peak memory). A finished run is reused, an interrupted one resumed.
//
// Each train and eval runs as a child process of this same lmpipe: the budget then measures one model's
// training alone, the peak memory is that process's own, and a model that crashes (e.g. out of memory)
// is reported as failed without taking the other models down.
import { join } from "node:path";
import { fmtCount, fmtDuration, info, warn } from "../../lib/log.ts";
import { getFamily } from "../../lib/models/registry.ts";
import { peakRssOf } from "../../lib/rss.ts";
import type { ModelConfig, Precision } from "../../lib/models/types.ts";
import { initBackend } from "../../lib/tensor/backend.ts";
import { readRun, type RunLog } from "../../lib/plot/runs.ts";
import { pathExists, writeAtomic } from "../../lib/fs.ts";
import type { ModelResult } from "./report.ts";
import { presetFor, runFolder, runSets, type Spec } from "./specs.ts";
import { trainingCompute } from "./scaling.ts";

/** Paths and settings of one study invocation. */
export interface StudyOptions {
  data: string;
  /** Wall-clock budget per run, seconds (null: none). */
  budget: number | null;
  /** Token budget per run (null: none). */
  budgetTokens: number | null;
  out: string;
  models: Spec[];
  /** The --sizes list, or null: every model at `preset` alone. */
  sizes: Spec[] | null;
  preset: string;
  backend: string;
  seed: number;
  evalTokens: number;
  force: boolean;
  /** --precision for every train and eval (absent: fp32). */
  precision?: Precision;
  trainExtra: string[];
}

/** A model spec at a size, and the run folder (relative to the study folder) it trains in. */
export interface Run {
  model: Spec;
  /** The size: one of --sizes, or the --preset as a size without changes. */
  size: Spec;
  /** Whether the study has several sizes (then folders and labels name the size). */
  sized: boolean;
  dir: string;
  /** The report's label: the spec, with ' @ size' under --sizes. */
  label: string;
}

/** Every run of a study: each size (in order), each model spec at it. */
export function studyRuns(o: Pick<StudyOptions, "models" | "sizes" | "preset">): Run[] {
  const sized = o.sizes !== null;
  const sizes = o.sizes ?? [{ text: o.preset, name: o.preset, sets: [] }];
  return sizes.flatMap((size) =>
    o.models.map((model) => ({
      model,
      size,
      sized,
      dir: runFolder(model, sized ? size : null),
      label: sized ? `${model.text} @ ${size.text}` : model.text,
    }))
  );
}

/** The budget in words, for log lines and chart titles. */
export function budgetWords(o: Pick<StudyOptions, "budget" | "budgetTokens">): string {
  const parts = [
    o.budget !== null ? fmtDuration(o.budget) : "",
    o.budgetTokens !== null ? `${fmtCount(o.budgetTokens)} tokens` : "",
  ];
  return parts.filter(Boolean).join(" or ");
}

/** The lmpipe entry point children run: cli.ts of this checkout, or the bundle this process runs from. */
const CLI = (() => {
  const local = new URL("../../cli.ts", import.meta.url);
  try {
    if (local.protocol === "file:" && Deno.statSync(local).isFile) return local.pathname;
  } catch { /* bundled: no cli.ts beside this module */ }
  return Deno.mainModule;
})();

/** Marker written into a run folder once its training finished, with the budget it ran under. */
const DONE_FILE = "study_done.json";

export async function readJson(path: string): Promise<Record<string, unknown> | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch {
    return null;
  }
}

/** Runs a child `lmpipe` command; returns its exit code, stdout, the tail of stderr, and its peak memory. */
async function lmpipe(
  args: string[],
  captureStdout: boolean,
): Promise<{ code: number; stdout: string; stderrTail: string; peak: number | null }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let peak: number | null = null;
  const poll = setInterval(() => {
    const v = peakRssOf(child.pid);
    if (v !== null) peak = Math.max(peak ?? 0, v);
  }, 250);
  const tail: string[] = [];
  const dec = new TextDecoder(), errDec = new TextDecoder();
  const pumpErr = (async () => {
    for await (const chunk of child.stderr) {
      await Deno.stderr.write(chunk); // the child's progress and messages, as they come
      tail.push(errDec.decode(chunk, { stream: true }));
      while (tail.length > 50) tail.shift();
    }
  })();
  const chunks: Uint8Array[] = [];
  const pumpOut = (async () => {
    for await (const chunk of child.stdout) {
      if (captureStdout) chunks.push(chunk);
      else await Deno.stderr.write(chunk);
    }
  })();
  const status = await child.status;
  clearInterval(poll);
  await Promise.all([pumpErr, pumpOut]);
  const stdout = dec.decode(concat(chunks));
  return { code: status.code, stdout, stderrTail: failureLine(tail.join("")), peak };
}

/** The line of a child's stderr that says why it failed: its last error line, else its last line. */
export function failureLine(stderr: string): string {
  const lines = stderr.trim().split("\n").map((l) => l.trim()).filter(Boolean);
  const err = lines.findLast((l) => /^error: |^[A-Za-z]*Error\b/.test(l));
  return err ?? lines[lines.length - 1] ?? "";
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) out.set(c, off), off += c.length;
  return out;
}

/**
 * The `lmpipe train` command of a run: its family, the size's preset, the --set pairs of the size and the
 * spec, and the budget. A resumed run keeps the config its checkpoint holds, so it gets no --set.
 */
export function trainArgs(run: Run, o: StudyOptions, runDir: string, resume: boolean): string[] {
  const family = run.model.name;
  return [
    "train",
    "--model",
    family,
    "--preset",
    presetFor(family, run.size.name),
    ...(resume ? [] : runSets(run.model, run.size).flatMap((s) => ["--set", s])),
    "--data",
    o.data,
    "--backend",
    o.backend,
    "--seed",
    String(o.seed),
    ...(o.budget !== null ? ["--max-time", `${o.budget}s`] : []),
    ...(o.budgetTokens !== null ? ["--max-tokens", String(o.budgetTokens)] : []),
    "--out",
    runDir,
    "--log",
    join(runDir, "log.jsonl"),
    ...(resume ? ["--resume"] : []),
    ...precisionArgs(o),
    ...o.trainExtra,
  ];
}

/** `--precision P` for train and eval when the study sets one other than fp32. */
function precisionArgs(o: StudyOptions): string[] {
  return o.precision && o.precision !== "fp32" ? ["--precision", o.precision] : [];
}

/** Trains (or reuses, or resumes) and evaluates one run; never throws for a failed child, it reports it. */
export async function runModel(run: Run, o: StudyOptions): Promise<ModelResult> {
  const runDir = join(o.out, run.dir);
  const result: ModelResult = {
    model: run.label,
    spec: run.model.text,
    ...(run.sized ? { size: run.size.text } : {}),
    sets: runSets(run.model, run.size),
    run_dir: run.dir,
    status: "failed",
  };
  const done = await readJson(join(runDir, DONE_FILE));
  const reuse = !o.force && done !== null && (done.budget_s ?? null) === o.budget &&
    (done.budget_tokens ?? null) === o.budgetTokens && done.preset === run.size.text;
  if (o.force && await pathExists(runDir)) await Deno.remove(runDir, { recursive: true });
  if (reuse) {
    info(
      `study: ${run.label} already trained for ${budgetWords(o)} in ${runDir}; reusing it (--force retrains)`,
    );
    result.resumed = true;
    result.peak_memory_bytes = (done.peak_memory_bytes as number | null) ?? null;
  } else {
    // A checkpoint (state.json, or weights of a save that train's loader rolls forward) is resumed; a larger
    // budget than last time extends the run. A folder without one starts afresh.
    const resume = await pathExists(join(runDir, "state.json")) ||
      await pathExists(join(runDir, "model.safetensors"));
    if (resume) info(`study: resuming ${run.label} from its checkpoint in ${runDir}`);
    result.resumed = resume;
    const t = await lmpipe(trainArgs(run, o, runDir, resume), false);
    result.peak_memory_bytes = t.peak;
    if (t.code !== 0) {
      result.error = `train exited with ${t.code}: ${t.stderrTail}`;
      warn(`study: ${run.label} failed: ${result.error}`);
      await fillFromLog(result, runDir);
      return result;
    }
    await writeAtomic(
      join(runDir, DONE_FILE),
      JSON.stringify(
        {
          budget_s: o.budget,
          budget_tokens: o.budgetTokens,
          preset: run.size.text,
          peak_memory_bytes: t.peak,
        },
        null,
        2,
      ) + "\n",
    );
  }
  await fillFromLog(result, runDir);
  await fillFromConfig(result, runDir);
  result.compute_flops = trainingCompute(result);

  const evalArgs = ["eval", "--ckpt", runDir, "--data", o.data, "--backend", o.backend];
  if (o.evalTokens > 0) evalArgs.push("--max-tokens", String(o.evalTokens));
  evalArgs.push(...precisionArgs(o));
  const e = await lmpipe(evalArgs, true);
  if (e.code !== 0) {
    result.error = `eval exited with ${e.code}: ${e.stderrTail}`;
    warn(`study: ${run.label} eval failed: ${result.error}`);
    return result;
  }
  const ev = parseEval(e.stdout);
  if (ev.loss === undefined) {
    result.error = `eval printed no loss: ${e.stdout.slice(0, 200)}`;
    return result;
  }
  result.val_loss = ev.loss;
  result.val_tokens = ev.tokens;
  result.status = "ok";
  return result;
}

/** Reads eval's JSON (the last JSON object on stdout): mean cross-entropy and tokens evaluated. */
export function parseEval(stdout: string): { loss?: number; tokens?: number } {
  const lines = stdout.trim().split("\n").reverse();
  for (const line of lines) {
    try {
      const j = JSON.parse(line);
      const loss = [j.loss, j.ce, j.cross_entropy, j.nats_per_token, j.val_loss].find((v) =>
        typeof v === "number"
      );
      const tokens = [j.tokens, j.n_tokens, j.num_tokens].find((v) => typeof v === "number");
      if (loss !== undefined) return { loss, tokens };
    } catch { /* not a JSON line */ }
  }
  try {
    const j = JSON.parse(stdout);
    const loss = [j.loss, j.ce, j.cross_entropy, j.nats_per_token, j.val_loss].find((v) =>
      typeof v === "number"
    );
    return { loss, tokens: [j.tokens, j.n_tokens, j.num_tokens].find((v) => typeof v === "number") };
  } catch {
    return {};
  }
}

/** Steps, tokens, speed and final train loss from the run's step log. */
async function fillFromLog(r: ModelResult, runDir: string): Promise<void> {
  let log: RunLog;
  try {
    log = await readRun(runDir);
  } catch {
    return;
  }
  const recs = log.records;
  const last = recs[recs.length - 1];
  r.steps = last.step; // train logs the step count after each update (1, 2, ...)
  if (typeof last.tokens === "number") {
    const t = recs.map((x) => x.tokens as number);
    const cumulative = t.every((v, i) => i === 0 || v >= t[i - 1]) && t.length > 1 && t[t.length - 1] > t[0];
    r.tokens = cumulative ? last.tokens : t.reduce((a, b) => a + (b ?? 0), 0);
  }
  if (typeof last.elapsed_s === "number") r.elapsed_s = last.elapsed_s;
  if (r.tokens !== undefined && r.elapsed_s) r.tokens_per_s = r.tokens / r.elapsed_s;
  const losses = recs.map((x) => x.loss).filter((v): v is number =>
    typeof v === "number" && Number.isFinite(v)
  );
  const peaks = recs.map((x) => x.peak_bytes).filter((v): v is number => typeof v === "number");
  if (peaks.length) r.peak_tensor_bytes = Math.max(...peaks);
  const window = Math.min(10, losses.length);
  if (window) {
    r.train_loss = losses.slice(-window).reduce((a, b) => a + b, 0) / window;
    r.train_loss_window = window;
  }
}

/**
 * Parameter count and FLOPs per token: from config.json when train recorded them, else from the model
 * its config describes, built once on the cpu backend (weights are random; only the counts are read).
 */
async function fillFromConfig(r: ModelResult, runDir: string): Promise<void> {
  const cfg = await readJson(join(runDir, "config.json"));
  const mc = cfg?.model as ModelConfig | undefined;
  if (!mc || typeof mc !== "object") return;
  const stats = cfg!.stats as { params?: unknown; flops_per_token?: unknown } | undefined;
  if (typeof stats?.params === "number" && typeof stats.flops_per_token === "number") {
    r.params = stats.params;
    r.flops_per_token = stats.flops_per_token;
    return;
  }
  try {
    await initBackend("cpu", { quiet: true });
    const model = getFamily(mc.model).create(mc, 0);
    r.params = model.paramCount();
    r.flops_per_token = model.flopsPerToken();
    model.dispose();
  } catch (err) {
    warn(`study: cannot count ${r.model}'s parameters (${err instanceof Error ? err.message : err})`);
  }
}
