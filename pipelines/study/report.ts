// The study's report: per-model results of equal-budget runs as report.json (for tools) and report.md
// (for people), next to the study's own reported numbers, with the loss-curve figures linked.
import { fmtBytes, fmtCount, fmtDuration } from "../../lib/log.ts";
import { STUDY_PUBLISHED } from "../../lib/study_published.ts";
import type { Advantage, ScalingEntry } from "./scaling.ts";
import type { ModelResult } from "./results.ts";

export type { ModelResult };

/** The study's reported final losses (lib/study_published.ts), as report.json quotes them. */
export const STUDY_REPORTED: Record<string, { compute: string; loss: string; value: number }> = Object
  .fromEntries(
    Object.entries(STUDY_PUBLISHED).map((
      [m, r],
    ) => [m, { compute: r.compute, loss: r.loss, value: r.value }]),
  );

export interface StudyReport {
  lmpipe: string;
  created: string;
  command: string;
  data: string;
  preset: string;
  /** Wall-clock budget per model, seconds (null: a token budget alone). */
  budget_s: number | null;
  /** Token budget per model (null: a wall-clock budget alone). */
  budget_tokens?: number | null;
  /** The --sizes list (absent: one size, `preset`). */
  sizes?: string[];
  backend: string;
  seed: number;
  eval_max_tokens: number;
  models: ModelResult[];
  figures: {
    step_svg: string;
    step_png: string;
    time_svg: string;
    time_png: string;
    /** Loss against tokens seen and against time, side by side in one picture. */
    curves_svg?: string;
    curves_png?: string;
    /** Under --sizes: validation loss against training FLOPs with each spec's fitted law. */
    scaling_svg?: string;
    scaling_png?: string;
  };
  /** Under --sizes: each spec's points and fitted law L(C) = a C^-b + c. */
  scaling?: ScalingEntry[];
  /** Under --sizes: each variant's fitted loss against the first spec's at both ends of the compute. */
  advantages?: Advantage[];
  study_reported: typeof STUDY_REPORTED;
  notes: string[];
}

const num = (
  v: number | undefined | null,
  digits = 3,
) => (v === undefined || v === null || !Number.isFinite(v) ? "–" : v.toFixed(digits));
const cnt = (v: number | undefined) => (v === undefined ? "–" : fmtCount(v));

/** Formats FLOPs compactly (e.g. 1.2 MFLOP). */
export function fmtFlops(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return "–";
  const units = ["", "k", "M", "G", "T"];
  let i = 0;
  while (v >= 1000 && i < units.length - 1) v /= 1000, i++;
  return `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[i]}FLOP`;
}

/** The budget each model trained under, in words. */
function budgetText(r: StudyReport): string {
  const time = r.budget_s ? `**${fmtDuration(r.budget_s)}** of wall-clock time` : "";
  const tokens = r.budget_tokens ? `**${fmtCount(r.budget_tokens)}** training tokens` : "";
  if (time && tokens) return `the same budget, ${time} or ${tokens}, whichever came first`;
  if (tokens) return `the same number of tokens, ${tokens} (the last step may pass it)`;
  return `the same budget, ${time}`;
}

/** Results best first: finished runs by validation loss, then the rest in their order. */
export function ranked(models: ModelResult[]): ModelResult[] {
  const ok = models.filter((m) => m.status === "ok" && m.val_loss !== undefined);
  return [...ok.sort((a, b) => a.val_loss! - b.val_loss!), ...models.filter((m) => !ok.includes(m))];
}

function resultsTable(models: ModelResult[], out: string[]): void {
  out.push(
    "| rank | model | params | FLOPs/token | steps | tokens seen | tokens/s | train loss | val loss | peak RSS | peak tensors | status |",
  );
  out.push("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
  ranked(models).forEach((m, i) => {
    const status = m.status === "ok"
      ? (m.resumed ? "ok (resumed)" : "ok")
      : `${m.status}${m.error ? `: ${m.error.split("\n")[0].slice(0, 80)}` : ""}`;
    const rank = m.status === "ok" && m.val_loss !== undefined ? String(i + 1) : "–";
    out.push(
      `| ${rank} | [${m.spec ?? m.model}](${m.run_dir}/) | ${cnt(m.params)} | ${
        fmtFlops(m.flops_per_token)
      } | ${m.steps ?? "–"} | ${cnt(m.tokens)} | ` +
        `${m.tokens_per_s === undefined ? "–" : m.tokens_per_s.toFixed(0)} | ${num(m.train_loss)} | ${
          num(m.val_loss)
        } | ` +
        `${m.peak_memory_bytes ? fmtBytes(m.peak_memory_bytes) : "–"} | ` +
        `${m.peak_tensor_bytes ? fmtBytes(m.peak_tensor_bytes) : "–"} | ${status} |`,
    );
  });
}

/** A fitted value with its standard error, to 3 significant digits. */
function withError(v: number, se: number | undefined): string {
  const f = (x: number) => Number(x.toPrecision(3)).toString();
  return se === undefined ? f(v) : `${f(v)} ± ${f(se)}`;
}

/** How a variant's fitted loss gap to the baseline changes from low to high compute, in words. */
export function trend(a: Advantage): string {
  const [lo, hi] = [a.atLow, a.atHigh];
  if (lo < 0 !== hi < 0) {
    return lo < 0 ? "better at low compute, worse at high" : "worse at low compute, better at high";
  }
  const which = lo < 0 ? "advantage" : "deficit";
  return Math.abs(hi) > Math.abs(lo) ? `${which} grows with compute` : `${which} shrinks with compute`;
}

function scalingSection(r: StudyReport, out: string[]): void {
  out.push("## Compute scaling");
  out.push("");
  if (r.figures.scaling_png) {
    out.push(`![validation loss against training FLOPs](${r.figures.scaling_png})`);
    out.push("");
  }
  out.push(
    "Each model spec's runs at the sizes above as points (training compute C = FLOPs/token × tokens seen, " +
      "validation loss L), and the law L(C) = a·C^-b + c fitted through them by least squares in log space " +
      "(lib/scaling_fit.ts). Solid: the fit; dotted: ± one standard error of the fitted loss (delta method over " +
      "the fit's covariance; a fit through exactly 3 sizes has no residual, hence no error band)" +
      (r.figures.scaling_svg ? ` ([SVG](${r.figures.scaling_svg}))` : "") + ".",
  );
  out.push("");
  out.push("| model | sizes | a | b | c | rms log residual | fit |");
  out.push("|---|---:|---:|---:|---:|---:|---|");
  for (const e of r.scaling ?? []) {
    const f = e.fit;
    out.push(
      f
        ? `| ${e.model} | ${e.points.length} | ${withError(f.a, f.stderr?.a)} | ${
          withError(f.b, f.stderr?.b)
        } | ` +
          `${withError(f.c, f.stderr?.c)} | ${f.rmsLogResidual.toExponential(2)} | ok |`
        : `| ${e.model} | ${e.points.length} | – | – | – | – | none: ${e.error} |`,
    );
  }
  out.push("");
  out.push("| model | size | training FLOPs | val loss |");
  out.push("|---|---|---:|---:|");
  for (const e of r.scaling ?? []) {
    for (const p of e.points) {
      out.push(`| ${e.model} | ${p.size} | ${fmtFlops(p.compute)} | ${num(p.loss)} |`);
    }
  }
  const adv = r.advantages ?? [];
  if (adv.length) {
    out.push("");
    out.push(
      `Each variant's fitted loss minus ${
        adv[0].baseline
      }'s, at the smallest and the largest compute both were ` +
        "measured at (negative: the variant is better). Gaps smaller than the fits' standard errors are not resolved.",
    );
    out.push("");
    out.push("| variant | vs | at C | loss gap | at C | loss gap | trend |");
    out.push("|---|---|---:|---:|---:|---:|---|");
    for (const a of adv) {
      out.push(
        `| ${a.model} | ${a.baseline} | ${fmtFlops(a.lowCompute)} | ${a.atLow >= 0 ? "+" : ""}${
          a.atLow.toFixed(4)
        } | ${fmtFlops(a.highCompute)} | ${a.atHigh >= 0 ? "+" : ""}${a.atHigh.toFixed(4)} | ${trend(a)} |`,
      );
    }
  }
  out.push("");
}

export function renderMarkdown(r: StudyReport): string {
  const out: string[] = [];
  const specs = [...new Set(r.models.map((m) => m.spec ?? m.model))];
  out.push(`# lmpipe study: ${specs.join(", ")}`);
  out.push("");
  out.push(
    `Each model trained for ${budgetText(r)}, on \`${r.data}\` ` +
      (r.sizes ? `at each size of ${r.sizes.map((s) => `\`${s}\``).join(", ")}` : `(preset \`${r.preset}\``) +
      `${r.sizes ? " (" : ", "}backend \`${r.backend}\`, seed ${r.seed}), ` +
      `then evaluated by \`lmpipe eval\` on the same validation tokens` +
      (r.eval_max_tokens > 0
        ? ` (the first ${fmtCount(r.eval_max_tokens)} of the val split).`
        : " (the whole val split).") +
      " Ranked by validation loss, best first.",
  );
  out.push("");
  if (r.sizes) {
    for (const size of r.sizes) {
      out.push(`### Size ${size}`);
      out.push("");
      resultsTable(r.models.filter((m) => m.size === size), out);
      out.push("");
    }
  } else {
    resultsTable(r.models, out);
    out.push("");
  }
  out.push(
    "Train loss is the mean over the last logged steps of each run; val loss is mean cross-entropy in nats/token. " +
      "tokens/s is tokens seen over logged training time (first-step kernel set-up included). Peak RSS is the " +
      "training process's peak resident host memory (on webgpu the GPU's own memory is not counted); peak tensors " +
      "is the most the tensor backend held during a training step (on webgpu: the GPU buffers TF.js holds).",
  );
  out.push("");
  out.push("## Loss curves");
  out.push("");
  if (r.figures.curves_png) {
    out.push(`![loss against tokens seen and against wall-clock time](${r.figures.curves_png})`);
    out.push("");
    out.push(
      `Left: against tokens seen; right: against wall-clock time ([SVG](${r.figures.curves_svg})). ` +
        `Against time alone: [SVG](${r.figures.time_svg}), [PNG](${r.figures.time_png}); against steps: ` +
        `[SVG](${r.figures.step_svg}), [PNG](${r.figures.step_png}). ` +
        `Solid: train loss; dashed with dots: validation loss; a dotted vertical line marks a wall-clock budget.`,
    );
  } else {
    out.push(`![loss against wall-clock time](${r.figures.time_png})`);
    out.push("");
    out.push(
      `Against wall-clock time ([SVG](${r.figures.time_svg})) and against steps ([SVG](${r.figures.step_svg}), [PNG](${r.figures.step_png})). ` +
        `Solid: train loss; dashed with dots: validation loss; the dotted vertical line is the budget.`,
    );
  }
  out.push("");
  if (r.scaling) scalingSection(r, out);
  const plain = r.models.filter((m) => (m.spec ?? m.model) in STUDY_REPORTED);
  if (plain.length) {
    out.push("## The study's reported numbers (OpenWebText, 4× RTX 4090)");
    out.push("");
    out.push("| model | compute | reported loss | this run's val loss |");
    out.push("|---|---|---|---:|");
    for (const [name, s] of Object.entries(STUDY_REPORTED)) {
      const mine = plain.filter((m) => (m.spec ?? m.model) === name).map((m) =>
        r.sizes ? `${num(m.val_loss)} (${m.size})` : num(m.val_loss)
      );
      out.push(`| ${name} | ${s.compute} | ${s.loss} | ${mine.length ? mine.join(", ") : "–"} |`);
    }
    out.push("");
    out.push(
      "The study's numbers come from hours on four GPUs with the full GPT-2-size models; a run with a small preset " +
        "and a short budget is a smoke test of the comparison, not a reproduction: compare the ordering and the " +
        "curves' shapes, not the values.",
    );
  }
  for (const n of r.notes) out.push("", n);
  out.push("");
  out.push("## Command");
  out.push("");
  out.push("```sh");
  out.push(r.command);
  out.push("```");
  out.push("");
  out.push(`Written by lmpipe ${r.lmpipe} on ${r.created}.`);
  return out.join("\n") + "\n";
}
