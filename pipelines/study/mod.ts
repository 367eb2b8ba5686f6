// `lmpipe study`: the study's question in one command. Trains each model for the same wall-clock budget
// on the same data and backend, one after another, each as an ordinary `lmpipe train` run folder (so any
// run can be resumed or inspected on its own), evaluates each with `lmpipe eval` on the same validation
// tokens, and writes report.json, report.md and the loss-curve figures.
//
// Each train and eval runs as a child process of this same lmpipe: the budget then measures one model's
// training alone, the peak memory is that process's own, and a model that crashes (e.g. out of memory)
// is reported as failed without taking the other models down.
import { join } from "node:path";
import { EXIT, inputError, LmpipeError, usageError } from "../../lib/errors.ts";
import { bool, num, parseDuration, parseFlags, str } from "../../lib/flags.ts";
import { fmtDuration, info, stderrIsTTY, warn } from "../../lib/log.ts";
import { VERSION } from "../../lib/version.ts";
import { FAMILIES, familyNames, getFamily } from "../../lib/models/registry.ts";
import { peakRssOf } from "../../lib/rss.ts";
import type { ModelConfig } from "../../lib/models/types.ts";
import { initBackend } from "../../lib/tensor/backend.ts";
import { encodePng } from "../../lib/plot/png.ts";
import { renderRaster } from "../../lib/plot/raster.ts";
import { lossChart, readRun, type RunLog } from "../../lib/plot/runs.ts";
import { renderSvg } from "../../lib/plot/svg.ts";
import { renderTerm } from "../../lib/plot/term.ts";
import { pathExists, writeAtomic } from "../../lib/fs.ts";
import { type ModelResult, renderMarkdown, STUDY_REPORTED, type StudyReport } from "./report.ts";

/** Every model the study trains by default: the registry's families (not variants of another), in its order. */
export const ALL_MODELS: readonly string[] = FAMILIES.filter((f) => !f.variantOf).map((f) => f.name);

const HELP = `lmpipe study: train every model for the same wall-clock budget and compare them

Usage: lmpipe study --data DIR --budget DURATION --out DIR [options] [-- extra train flags]

Trains each model (one after another, same data, backend, seed and budget) into DIR/<model>/, an
ordinary 'lmpipe train' run folder with its step log DIR/<model>/log.jsonl; evaluates each with
'lmpipe eval' on the same validation tokens; writes DIR/report.json, DIR/report.md and the loss
figures DIR/loss_time.{svg,png}, DIR/loss_step.{svg,png}. Running the same command again resumes:
finished models are reused, interrupted ones resume from their last checkpoint.

Options:
  --data DIR        token shards from 'lmpipe tokenize' (with a val split)        (required)
  --budget DUR      wall-clock training budget per model: 90s, 10m, 2h, 1h30m     (required)
  --out DIR         study folder                                                   (required)
  --models LIST     comma-separated models                (default: ${ALL_MODELS.join(",")})
  --preset NAME     model preset for every model: tiny | small | study (the study's sizes:
                    gpt2 for gpt, study for the image models; gpt2 means the same)  (default: small)
  --backend NAME    auto | webgpu | tensorflow | wasm | cpu                          (default: auto)
  --seed N          seed for weights and data order                                (default: 1337)
  --eval-tokens N   validation tokens each model is evaluated on (0 = whole split) (default: 65536)
  --force           retrain models whose runs are already finished                 (default: off)
  --json            print report.json to stdout as well                            (default: off)
  -- FLAGS...       passed to every 'lmpipe train' (e.g. -- --batch-size 8 --precision mixed)

Example:
  lmpipe study --data fixtures/shards --preset tiny --budget 20s --out runs/study-demo
`;

/** Paths and settings of one study invocation. */
interface StudyOptions {
  data: string;
  budget: number;
  out: string;
  models: string[];
  preset: string;
  backend: string;
  seed: number;
  evalTokens: number;
  force: boolean;
  trainExtra: string[];
}

/** The lmpipe entry point children run: cli.ts of this checkout, or the bundle this process runs from. */
const CLI = (() => {
  const local = new URL("../../cli.ts", import.meta.url);
  try {
    if (local.protocol === "file:" && Deno.statSync(local).isFile) return local.pathname;
  } catch { /* bundled: no cli.ts beside this module */ }
  return Deno.mainModule;
})();

export async function run(argv: string[]): Promise<void> {
  const dd = argv.indexOf("--");
  const own = dd >= 0 ? argv.slice(0, dd) : argv;
  const trainExtra = dd >= 0 ? argv.slice(dd + 1) : [];
  refuseOtherEvalSpellings(own);
  const p = parseFlags("study", own, {
    data: { type: "string" },
    budget: { type: "string" },
    out: { type: "string", short: "o" },
    models: { type: "string" },
    preset: { type: "string" },
    backend: { type: "string" },
    seed: { type: "string" },
    "eval-tokens": { type: "string" },
    force: { type: "boolean" },
    json: { type: "boolean" },
  });
  if (p.help) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length) {
    throw usageError(
      `lmpipe study: unexpected argument '${p.positionals[0]}' (extra train flags go after '--')`,
    );
  }
  const need = (name: string) => {
    const v = str(p, name);
    if (v === undefined) throw usageError(`lmpipe study: --${name} is required\nSee 'lmpipe study --help'.`);
    return v;
  };
  const o: StudyOptions = {
    data: need("data"),
    budget: parseDuration("study", "budget", need("budget")),
    out: need("out"),
    models: str(p, "models", ALL_MODELS.join(",")).split(",").map((s) => s.trim()).filter(Boolean),
    preset: str(p, "preset", "small"),
    backend: str(p, "backend", "auto"),
    seed: num(p, "study", "seed", 1337, { min: 0, integer: true }),
    evalTokens: num(p, "study", "eval-tokens", 65536, { min: 0, integer: true }),
    force: bool(p, "force"),
    trainExtra,
  };
  if (o.budget <= 0) throw usageError("lmpipe study: --budget must be longer than 0s");
  if (o.models.length === 0) throw usageError("lmpipe study: --models is empty");
  const unknown = o.models.filter((m) => !familyNames().includes(m));
  if (unknown.length) {
    throw usageError(
      `lmpipe study: unknown model '${unknown[0]}' in --models; choose from ${familyNames().join(", ")}`,
    );
  }
  if (new Set(o.models).size !== o.models.length) {
    throw usageError("lmpipe study: --models lists a model twice");
  }
  try {
    if (!(await Deno.stat(o.data)).isDirectory && !o.data.endsWith(".bin")) {
      throw inputError(
        `lmpipe study: --data ${o.data} is not a shard folder; make one with 'lmpipe tokenize ... --out ${o.data}'`,
      );
    }
  } catch (err) {
    if (err instanceof LmpipeError) throw err;
    throw inputError(
      `lmpipe study: --data ${o.data} does not exist; make it with 'lmpipe tokenize ... --out ${o.data}'`,
    );
  }
  await Deno.mkdir(o.out, { recursive: true }).catch((err) => {
    throw new LmpipeError(`lmpipe study: cannot create --out ${o.out} (${err.message})`, EXIT.output);
  });

  const results: ModelResult[] = [];
  for (const [i, model] of o.models.entries()) {
    info(`study: [${i + 1}/${o.models.length}] ${model}, budget ${fmtDuration(o.budget)}`);
    results.push(await runModel(model, o));
    await writeReport(o, results, argv); // a partial report after every model
  }
  const report = await writeReport(o, results, argv);
  info(`study: wrote ${join(o.out, "report.md")} and report.json`);
  if (stderrIsTTY) await showCurves(o, results);
  if (bool(p, "json")) console.log(JSON.stringify(report, null, 2));
  const failed = results.filter((r) => r.status === "failed");
  if (failed.length === results.length) {
    throw new LmpipeError(
      `lmpipe study: every model failed (first: ${failed[0].model}: ${failed[0].error})`,
      EXIT.training,
    );
  }
}

/**
 * Other spellings of --eval-tokens (eval's own --max-tokens, the report's eval_max_tokens, ...): a usage
 * error that names the study's one spelling, instead of a generic "unknown flag".
 */
const EVAL_TOKENS_ALIASES = [
  "--max-tokens",
  "--eval-max-tokens",
  "--eval_max_tokens",
  "--eval_tokens",
  "--evalTokens",
];

export function refuseOtherEvalSpellings(args: string[]): void {
  for (const a of args) {
    const flag = a.split("=")[0];
    if (EVAL_TOKENS_ALIASES.includes(flag)) {
      throw usageError(
        `lmpipe study: ${flag} is not a study option; the validation tokens each model is evaluated on ` +
          `are set with --eval-tokens N (0 = the whole val split)`,
      );
    }
  }
}

/** Marker written into a run folder once its training finished, with the budget it ran under. */
const DONE_FILE = "study_done.json";

async function readJson(path: string): Promise<Record<string, unknown> | null> {
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

/** The study-size preset is called gpt2 for gpt and llama, study for the image models; either name picks both. */
export function presetFor(model: string, preset: string): string {
  const gptLike = model === "gpt" || model === "llama";
  if (preset === "study" && gptLike) return "gpt2";
  if (preset === "gpt2" && !gptLike) return "study";
  return preset;
}

function trainArgs(model: string, o: StudyOptions, runDir: string, resume: boolean): string[] {
  return [
    "train",
    "--model",
    model,
    "--preset",
    presetFor(model, o.preset),
    "--data",
    o.data,
    "--backend",
    o.backend,
    "--seed",
    String(o.seed),
    "--max-time",
    `${o.budget}s`,
    "--out",
    runDir,
    "--log",
    join(runDir, "log.jsonl"),
    ...(resume ? ["--resume"] : []),
    ...o.trainExtra,
  ];
}

async function runModel(model: string, o: StudyOptions): Promise<ModelResult> {
  const runDir = join(o.out, model);
  const result: ModelResult = { model, run_dir: model, status: "failed" };
  const done = await readJson(join(runDir, DONE_FILE));
  const reuse = !o.force && done !== null && done.budget_s === o.budget && done.preset === o.preset;
  if (o.force && await pathExists(runDir)) await Deno.remove(runDir, { recursive: true });
  if (reuse) {
    info(
      `study: ${model} already trained for ${
        fmtDuration(o.budget)
      } in ${runDir}; reusing it (--force retrains)`,
    );
    result.resumed = true;
    result.peak_memory_bytes = (done.peak_memory_bytes as number | null) ?? null;
  } else {
    // A checkpoint (state.json, or weights of a save that train's loader rolls forward) is resumed; a longer
    // --budget than last time extends the run. A folder without one starts afresh.
    const resume = await pathExists(join(runDir, "state.json")) ||
      await pathExists(join(runDir, "model.safetensors"));
    if (resume) info(`study: resuming ${model} from its checkpoint in ${runDir}`);
    result.resumed = resume;
    const t = await lmpipe(trainArgs(model, o, runDir, resume), false);
    result.peak_memory_bytes = t.peak;
    if (t.code !== 0) {
      result.error = `train exited with ${t.code}: ${t.stderrTail}`;
      warn(`study: ${model} failed: ${result.error}`);
      await fillFromLog(result, runDir);
      return result;
    }
    await writeAtomic(
      join(runDir, DONE_FILE),
      JSON.stringify({ budget_s: o.budget, preset: o.preset, peak_memory_bytes: t.peak }, null, 2) + "\n",
    );
  }
  await fillFromLog(result, runDir);
  await fillFromConfig(result, runDir);

  const evalArgs = ["eval", "--ckpt", runDir, "--data", o.data, "--backend", o.backend];
  if (o.evalTokens > 0) evalArgs.push("--max-tokens", String(o.evalTokens));
  const e = await lmpipe(evalArgs, true);
  if (e.code !== 0) {
    result.error = `eval exited with ${e.code}: ${e.stderrTail}`;
    warn(`study: ${model} eval failed: ${result.error}`);
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

async function writeReport(o: StudyOptions, results: ModelResult[], argv: string[]): Promise<StudyReport> {
  const figures = {
    step_svg: "loss_step.svg",
    step_png: "loss_step.png",
    time_svg: "loss_time.svg",
    time_png: "loss_time.png",
  };
  const runs: RunLog[] = [];
  for (const r of results) {
    try {
      runs.push(await readRun(join(o.out, r.run_dir)));
    } catch { /* a run that logged nothing has no curve */ }
  }
  if (runs.length) {
    const title = `lmpipe study: preset ${o.preset}, budget ${fmtDuration(o.budget)} per model`;
    for (const axis of ["step", "time"] as const) {
      const spec = lossChart(runs, {
        axis,
        logY: false,
        width: 900,
        height: 520,
        title,
        studyMarks: true,
        vmarks: axis === "time" ? [{ at: o.budget, label: `budget ${fmtDuration(o.budget)}` }] : [],
      });
      await writeAtomic(join(o.out, axis === "step" ? figures.step_svg : figures.time_svg), renderSvg(spec));
      await writeAtomic(
        join(o.out, axis === "step" ? figures.step_png : figures.time_png),
        encodePng(renderRaster(spec)),
      );
    }
  }
  const report: StudyReport = {
    lmpipe: VERSION,
    created: new Date().toISOString(),
    command: ["lmpipe", "study", ...argv].map(shellQuote).join(" "),
    data: o.data,
    preset: o.preset,
    budget_s: o.budget,
    backend: o.backend,
    seed: o.seed,
    eval_max_tokens: o.evalTokens,
    models: results,
    figures,
    study_reported: STUDY_REPORTED,
    notes: [],
  };
  await writeAtomic(join(o.out, "report.json"), JSON.stringify(report, null, 2) + "\n");
  await writeAtomic(join(o.out, "report.md"), renderMarkdown(report));
  return report;
}

/** On a terminal, the loss curves against time, drawn with Unicode on stderr. */
async function showCurves(o: StudyOptions, results: ModelResult[]): Promise<void> {
  const runs: RunLog[] = [];
  for (const r of results) await readRun(join(o.out, r.run_dir)).then((x) => runs.push(x), () => {});
  if (!runs.length) return;
  const spec = lossChart(runs, { axis: "time", logY: false, width: 0, height: 0, studyMarks: false });
  let cols = 80;
  try {
    cols = Math.min(120, Deno.consoleSize().columns);
  } catch { /* no console size: keep 80 */ }
  await Deno.stderr.write(
    new TextEncoder().encode(renderTerm(spec, { width: cols, height: 18, color: true })),
  );
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
