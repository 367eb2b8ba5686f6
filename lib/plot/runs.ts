// Reads training logs (the JSON lines `lmpipe train --log` writes) into loss curves. A RUN is a run
// folder (its log inside) or a .jsonl file. Resumed runs append to the same log from the last checkpoint,
// so a step that appears again replaces what was logged after the earlier checkpoint.
import { basename, dirname, join } from "node:path";
import { inputError } from "../errors.ts";
import { warn } from "../log.ts";
import { type ChartSpec, type Mark, PALETTE, type Series, type XAxis } from "./chart.ts";
import { STUDY_PUBLISHED } from "../study_published.ts";

/** File names, in order, that hold the step log inside a run folder. */
export const RUN_LOG_NAMES = ["log.jsonl", "train.jsonl", "train_log.jsonl", "metrics.jsonl"];

/** One logged step (the fields the plots use; the log may hold more). */
export interface StepRecord {
  step: number;
  loss?: number;
  val_loss?: number;
  tokens?: number;
  elapsed_s?: number;
  [key: string]: unknown;
}

export interface RunLog {
  /** Label for legends: the run folder's name, or the log file's name without extension. */
  name: string;
  /** The log file read. */
  path: string;
  records: StepRecord[];
}

/** Finds the step log of a run folder, or returns the path itself when it is a file. */
export async function resolveRunLog(path: string): Promise<string> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch {
    throw inputError(
      `${path}: no such run folder or log file. Give a run folder (from 'lmpipe train --out') or a .jsonl log.`,
    );
  }
  if (stat.isFile) return path;
  for (const name of RUN_LOG_NAMES) {
    const p = join(path, name);
    try {
      if ((await Deno.stat(p)).isFile) return p;
    } catch { /* try the next name */ }
  }
  throw inputError(
    `${path}: run folder holds no step log (looked for ${RUN_LOG_NAMES.join(", ")}). ` +
      `Train with '--log ${join(path, "log.jsonl")}' or pass the log file itself.`,
  );
}

/** Parses JSON-lines log text. A malformed last line (a run still writing) is skipped with a warning. */
export function parseLog(text: string, path: string): StepRecord[] {
  const lines = text.split("\n");
  while (lines.length && lines[lines.length - 1].trim() === "") lines.pop();
  const out: StepRecord[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "") continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      if (i === lines.length - 1) {
        warn(`${path}:${i + 1}: incomplete last line skipped (is the run still writing?)`);
        continue;
      }
      throw inputError(`${path}:${i + 1}: not a JSON object; a step log has one JSON object per line.`);
    }
    if (rec === null || typeof rec !== "object" || Array.isArray(rec)) {
      throw inputError(`${path}:${i + 1}: not a JSON object; a step log has one JSON object per line.`);
    }
    const r = rec as StepRecord;
    if (typeof r.step !== "number" || !Number.isFinite(r.step)) continue; // start/end events carry no step
    out.push(r);
  }
  return dedupeResumed(out);
}

/**
 * Keeps the latest record of every step: after a resume, steps logged past the checkpoint are dropped
 * and the re-run steps replace them; two records of one step (e.g. train and val lines) are merged.
 */
export function dedupeResumed(records: StepRecord[]): StepRecord[] {
  const out: StepRecord[] = [];
  for (const r of records) {
    while (out.length && out[out.length - 1].step > r.step) out.pop();
    const last = out[out.length - 1];
    if (last && last.step === r.step) Object.assign(last, r);
    else out.push({ ...r });
  }
  return out;
}

/** Reads a run: a run folder, a .jsonl log, or `-` for a log on stdin (e.g. from `lmpipe train --json`). */
export async function readRun(path: string): Promise<RunLog> {
  if (path === "-") {
    const records = parseLog(await new Response(Deno.stdin.readable).text(), "stdin");
    if (records.length === 0) throw inputError('stdin: no step records (JSON objects with a "step" field)');
    return { name: "stdin", path: "stdin", records };
  }
  const logPath = await resolveRunLog(path);
  let text: string;
  try {
    text = await Deno.readTextFile(logPath);
  } catch (err) {
    throw inputError(`${logPath}: cannot read (${err instanceof Error ? err.message : err})`);
  }
  const records = parseLog(text, logPath);
  if (records.length === 0) {
    throw inputError(
      `${logPath}: no step records (objects with a "step" field); has the run logged a step yet?`,
    );
  }
  const isFolder = logPath !== path;
  const name = isFolder ? basename(path.replace(/\/+$/, "")) : logName(logPath);
  return { name, path: logPath, records };
}

function logName(p: string): string {
  const base = basename(p).replace(/\.jsonl?$/, "");
  // a log named like a run folder's own log takes the folder's name
  return RUN_LOG_NAMES.includes(basename(p)) ? basename(dirname(p)) || base : base;
}

/** The x value of a record for the chosen axis; tokens fall back to a running count when only per-step counts exist. */
export function xValues(records: StepRecord[], axis: XAxis): number[] {
  if (axis === "step") return records.map((r) => r.step);
  if (axis === "time") {
    if (records.some((r) => typeof r.elapsed_s !== "number")) {
      throw inputError(`log has steps without "elapsed_s"; plot against --x step or --x tokens instead`);
    }
    return records.map((r) => r.elapsed_s as number);
  }
  if (records.some((r) => typeof r.tokens !== "number")) {
    throw inputError(`log has steps without "tokens"; plot against --x step or --x time instead`);
  }
  const t = records.map((r) => r.tokens as number);
  const cumulative = t.every((v, i) => i === 0 || v >= t[i - 1]) && t[t.length - 1] > t[0];
  if (cumulative) return t;
  let sum = 0;
  return t.map((v) => (sum += v));
}

/** Makes the train (solid) and validation (dashed) series of each run, one colour per run. */
export function runSeries(runs: RunLog[], axis: XAxis): Series[] {
  const names = uniqueNames(runs.map((r) => r.name));
  const out: Series[] = [];
  runs.forEach((run, i) => {
    let xs: number[];
    try {
      xs = xValues(run.records, axis);
    } catch (err) {
      throw inputError(`${run.path}: ${(err as Error).message}`);
    }
    const color = PALETTE[i % PALETTE.length];
    const train: Array<[number, number]> = [], val: Array<[number, number]> = [];
    run.records.forEach((r, j) => {
      if (typeof r.loss === "number" && Number.isFinite(r.loss)) train.push([xs[j], r.loss]);
      if (typeof r.val_loss === "number" && Number.isFinite(r.val_loss)) val.push([xs[j], r.val_loss]);
    });
    out.push({ label: names[i], run: names[i], color, style: "solid", kind: "train", points: train });
    if (val.length) {
      out.push({ label: `${names[i]} val`, run: names[i], color, style: "dashed", kind: "val", points: val });
    }
  });
  return out;
}

function uniqueNames(names: string[]): string[] {
  const seen = new Map<string, number>();
  return names.map((n) => {
    const k = (seen.get(n) ?? 0) + 1;
    seen.set(n, k);
    return k === 1 ? n : `${n} (${k})`;
  });
}

/** The study's compute budgets (wall-clock, on its 4-GPU node) as vertical marks on a time axis. */
export const STUDY_BUDGETS: Mark[] = Object.values(STUDY_PUBLISHED)
  .sort((a, b) => a.budgetSeconds - b.budgetSeconds)
  .map((r) => ({ at: r.budgetSeconds, label: `study: ${r.mark.budget}` }));

/** The final losses the study reported, as horizontal reference lines. */
export const STUDY_LOSSES: Mark[] = Object.values(STUDY_PUBLISHED)
  .sort((a, b) => a.value - b.value)
  .map((r) => ({ at: Number(r.mark.loss.split(" ").pop()), label: `study ${r.mark.loss}` }));

export interface LossChartOptions {
  axis: XAxis;
  logY: boolean;
  width: number;
  height: number;
  title?: string;
  /** Draw the study's budgets (time axis) and reported losses where they fall inside the plot. */
  studyMarks: boolean;
  /** Extra vertical marks (e.g. this study run's own budget). */
  vmarks?: Mark[];
}

export function lossChart(runs: RunLog[], o: LossChartOptions): ChartSpec {
  const xLabel = { step: "step", tokens: "tokens seen", time: "wall-clock time" }[o.axis];
  return {
    width: o.width,
    height: o.height,
    title: o.title,
    xAxis: o.axis,
    xLabel,
    yLabel: "loss (nats/token)",
    logY: o.logY,
    series: runSeries(runs, o.axis),
    vmarks: [...(o.vmarks ?? []), ...(o.studyMarks && o.axis === "time" ? STUDY_BUDGETS : [])],
    hmarks: o.studyMarks ? STUDY_LOSSES : [],
  };
}
