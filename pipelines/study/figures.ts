// Writes what a study leaves for people and tools: report.json, report.md and the figures (loss against
// steps, against time, against tokens and time side by side, and under --sizes the compute-scaling chart),
// from the runs' results and step logs. Used after every run of a study and by `study --merge`.
import { join } from "node:path";
import { VERSION } from "../../lib/version.ts";
import { fmtDuration } from "../../lib/log.ts";
import { writeAtomic } from "../../lib/fs.ts";
import { encodePng } from "../../lib/plot/png.ts";
import { rastersSideBySide, renderRaster } from "../../lib/plot/raster.ts";
import { lossChart, readRun, type RunLog } from "../../lib/plot/runs.ts";
import { renderSvg, renderSvgPanels } from "../../lib/plot/svg.ts";
import { renderTerm } from "../../lib/plot/term.ts";
import { type ModelResult, renderMarkdown, STUDY_REPORTED, type StudyReport } from "./report.ts";
import { advantages, scalingChart, scalingEntries } from "./scaling.ts";
import { budgetWords, type StudyOptions } from "./runner.ts";

/** The settings a report states. */
export type ReportSettings =
  & Pick<
    StudyOptions,
    "data" | "out" | "budget" | "budgetTokens" | "preset" | "backend" | "seed" | "evalTokens"
  >
  & { sizes: string[] | null };

/** The step logs of the results' runs, each named by its result's label (runs that logged nothing: none). */
async function readRuns(out: string, results: ModelResult[]): Promise<RunLog[]> {
  const runs: RunLog[] = [];
  for (const r of results) {
    try {
      runs.push({ ...await readRun(join(out, r.run_dir)), name: r.model });
    } catch { /* a run that logged nothing has no curve */ }
  }
  return runs;
}

async function writeFigure(path: string, svg: string, png: Uint8Array): Promise<void> {
  await writeAtomic(`${path}.svg`, svg);
  await writeAtomic(`${path}.png`, png);
}

export async function writeReport(
  o: ReportSettings,
  results: ModelResult[],
  command: string,
): Promise<StudyReport> {
  const figures: StudyReport["figures"] = {
    step_svg: "loss_step.svg",
    step_png: "loss_step.png",
    time_svg: "loss_time.svg",
    time_png: "loss_time.png",
    curves_svg: "loss_curves.svg",
    curves_png: "loss_curves.png",
  };
  const runs = await readRuns(o.out, results);
  const budget = budgetWords(o);
  const where = o.sizes ? `${o.sizes.length} sizes` : `preset ${o.preset}`;
  if (runs.length) {
    const title = `lmpipe study: ${where}, budget ${budget} per model`;
    const vmarks = o.budget !== null ? [{ at: o.budget, label: `budget ${fmtDuration(o.budget)}` }] : [];
    const chart = (axis: "step" | "time" | "tokens", width: number, t = title) =>
      lossChart(runs, {
        axis,
        logY: false,
        width,
        height: 520,
        title: t,
        studyMarks: true,
        vmarks: axis === "time" ? vmarks : [],
      });
    for (const axis of ["step", "time"] as const) {
      const spec = chart(axis, 900);
      await writeFigure(join(o.out, `loss_${axis}`), renderSvg(spec), encodePng(renderRaster(spec)));
    }
    const byTokens = {
      ...chart("tokens", 760, `lmpipe study: loss against tokens seen (budget ${budget})`),
      legend: false,
    };
    const panels = [byTokens, chart("time", 760, "and against wall-clock time")];
    await writeFigure(
      join(o.out, "loss_curves"),
      renderSvgPanels(panels),
      encodePng(rastersSideBySide(panels.map(renderRaster))),
    );
  }
  const report: StudyReport = {
    lmpipe: VERSION,
    created: new Date().toISOString(),
    command,
    data: o.data,
    preset: o.preset,
    budget_s: o.budget,
    budget_tokens: o.budgetTokens,
    ...(o.sizes ? { sizes: o.sizes } : {}),
    backend: o.backend,
    seed: o.seed,
    eval_max_tokens: o.evalTokens,
    models: results,
    figures,
    study_reported: STUDY_REPORTED,
    notes: [],
  };
  if (o.sizes) {
    const entries = scalingEntries(results);
    report.scaling = entries;
    report.advantages = advantages(entries);
    if (entries.some((e) => e.points.length)) {
      const spec = scalingChart(
        entries,
        `lmpipe study: validation loss against training compute, budget ${budget}`,
      );
      await writeFigure(join(o.out, "scaling"), renderSvg(spec), encodePng(renderRaster(spec)));
      figures.scaling_svg = "scaling.svg";
      figures.scaling_png = "scaling.png";
    }
  }
  await writeAtomic(join(o.out, "report.json"), JSON.stringify(report, null, 2) + "\n");
  await writeAtomic(join(o.out, "report.md"), renderMarkdown(report));
  return report;
}

/** On a terminal, the loss curves against time, drawn with Unicode on stderr. */
export async function showCurves(out: string, results: ModelResult[]): Promise<void> {
  const runs = await readRuns(out, results);
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

/** The study's command line as a shell would take it back. */
export function commandLine(argv: string[]): string {
  return ["lmpipe", "study", ...argv].map(shellQuote).join(" ");
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
