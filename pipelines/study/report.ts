// The study's report: per-model results of equal-budget runs as report.json (for tools) and report.md
// (for people), next to the study's own reported numbers, with the loss-curve figures linked.
import { fmtBytes, fmtCount, fmtDuration } from "../../lib/log.ts";
import { STUDY_PUBLISHED } from "../../lib/study_published.ts";

/** What one model's run produced. */
export interface ModelResult {
  model: string;
  /** Run folder, relative to the study folder. */
  run_dir: string;
  status: "ok" | "failed" | "skipped";
  error?: string;
  params?: number;
  flops_per_token?: number;
  steps?: number;
  tokens?: number;
  /** Mean train loss over the last logged steps (see train_loss_window). */
  train_loss?: number;
  train_loss_window?: number;
  /** Mean cross-entropy over the shared validation tokens, from `lmpipe eval`. */
  val_loss?: number;
  val_tokens?: number;
  tokens_per_s?: number;
  /** Training wall-clock seconds, as logged. */
  elapsed_s?: number;
  /** Peak resident memory of the training process (bytes), where the OS reports it. */
  peak_memory_bytes?: number | null;
  /** Peak bytes the tensor backend held in a step (train's peak_bytes: GPU buffers on webgpu). */
  peak_tensor_bytes?: number;
  /** Whether the run was resumed or reused from an earlier invocation. */
  resumed?: boolean;
}

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
  budget_s: number;
  backend: string;
  seed: number;
  eval_max_tokens: number;
  models: ModelResult[];
  figures: { step_svg: string; step_png: string; time_svg: string; time_png: string };
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

export function renderMarkdown(r: StudyReport): string {
  const out: string[] = [];
  out.push(`# lmpipe study: ${r.models.map((m) => m.model).join(", ")}`);
  out.push("");
  out.push(
    `Each model trained for the same wall-clock budget of **${fmtDuration(r.budget_s)}** on \`${r.data}\` ` +
      `(preset \`${r.preset}\`, backend \`${r.backend}\`, seed ${r.seed}), one after another on the same machine, ` +
      `then evaluated by \`lmpipe eval\` on the same validation tokens` +
      (r.eval_max_tokens > 0
        ? ` (the first ${fmtCount(r.eval_max_tokens)} of the val split).`
        : " (the whole val split)."),
  );
  out.push("");
  out.push(
    "| model | params | FLOPs/token | steps | tokens seen | tokens/s | train loss | val loss | peak RSS | peak tensors | status |",
  );
  out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
  for (const m of r.models) {
    const status = m.status === "ok"
      ? (m.resumed ? "ok (resumed)" : "ok")
      : `${m.status}${m.error ? `: ${m.error.split("\n")[0].slice(0, 80)}` : ""}`;
    out.push(
      `| [${m.model}](${m.run_dir}/) | ${cnt(m.params)} | ${fmtFlops(m.flops_per_token)} | ${
        m.steps ?? "–"
      } | ${cnt(m.tokens)} | ` +
        `${m.tokens_per_s === undefined ? "–" : m.tokens_per_s.toFixed(0)} | ${num(m.train_loss)} | ${
          num(m.val_loss)
        } | ` +
        `${m.peak_memory_bytes ? fmtBytes(m.peak_memory_bytes) : "–"} | ` +
        `${m.peak_tensor_bytes ? fmtBytes(m.peak_tensor_bytes) : "–"} | ${status} |`,
    );
  }
  out.push("");
  out.push(
    "Train loss is the mean over the last logged steps of each run; val loss is mean cross-entropy in nats/token. " +
      "tokens/s is tokens seen over logged training time (first-step kernel set-up included). Peak RSS is the " +
      "training process's peak resident host memory (on webgpu the GPU's own memory is not counted); peak tensors " +
      "is the most the tensor backend held during a training step (on webgpu: the GPU buffers TF.js holds).",
  );
  out.push("");
  out.push("## Loss curves");
  out.push("");
  out.push(`![loss against wall-clock time](${r.figures.time_png})`);
  out.push("");
  out.push(
    `Against wall-clock time ([SVG](${r.figures.time_svg})) and against steps ([SVG](${r.figures.step_svg}), [PNG](${r.figures.step_png})). ` +
      `Solid: train loss; dashed with dots: validation loss; the dotted vertical line is the budget.`,
  );
  out.push("");
  out.push("## The study's reported numbers (OpenWebText, 4× RTX 4090)");
  out.push("");
  out.push("| model | compute | reported loss | this run's val loss |");
  out.push("|---|---|---|---:|");
  for (const [name, s] of Object.entries(STUDY_REPORTED)) {
    const mine = r.models.find((m) => m.model === name);
    out.push(`| ${name} | ${s.compute} | ${s.loss} | ${num(mine?.val_loss)} |`);
  }
  out.push("");
  out.push(
    "The study's numbers come from hours on four GPUs with the full GPT-2-size models; a run with a small preset " +
      "and a short budget is a smoke test of the comparison, not a reproduction: compare the ordering and the " +
      "curves' shapes, not the values.",
  );
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
