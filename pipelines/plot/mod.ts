// `lmpipe plot`: loss curves of one or more runs, overlaid, as SVG, PNG or a Unicode chart on the
// terminal. Reads the JSON-lines step logs that `lmpipe train --log` writes (or finds them in run folders).
import { extname } from "node:path";
import { usageError } from "../../lib/errors.ts";
import { bool, num, parseFlags, str } from "../../lib/flags.ts";
import { info } from "../../lib/log.ts";
import type { ChartSpec, XAxis } from "../../lib/plot/chart.ts";
import { encodePng } from "../../lib/plot/png.ts";
import { renderRaster } from "../../lib/plot/raster.ts";
import { lossChart, readRun } from "../../lib/plot/runs.ts";
import { renderSvg } from "../../lib/plot/svg.ts";
import { renderTerm } from "../../lib/plot/term.ts";
import { writeAtomic } from "../../lib/fs.ts";

const HELP = `lmpipe plot: training and validation loss of runs, overlaid, as SVG, PNG or a terminal chart

Usage: lmpipe plot RUN... [--out loss.svg|loss.png|-] [options]
  RUN is a run folder from 'lmpipe train --out' (its log.jsonl is read), a .jsonl step log, or '-'
  for a step log on stdin (e.g. 'lmpipe train ... --json | lmpipe plot - --term').
  Train loss is drawn solid, validation loss dashed with a dot per evaluation; one colour per run.

Options:
  --out FILE        picture to write; the extension picks the format (.svg or .png); '-' writes SVG
                    to stdout. Without --out the chart is drawn on the terminal (as with --term).
  --x AXIS          step | tokens | time (wall-clock seconds from the log)  (default: step)
  --log-scale       logarithmic loss axis                                    (default: off)
  --term            draw the chart with Unicode braille characters on stdout (also with --out)
  --width N         picture width in pixels, or columns with --term  (default: 800; terminal width)
  --height N        picture height in pixels, or lines with --term   (default: 480; 20)
  --title TEXT      title above the chart                                    (default: none)
  --no-marks        leave out the study's marks: its budgets (2h, 3h, 3h27m, 4h) on a time axis and
                    its reported losses (3.198, 4.50, 4.73, 6.46), drawn where they fall in range
  --color / --no-color   colour terminal curves            (default: when stdout is a terminal)

Example:
  lmpipe plot runs/study/gpt runs/study/pixel-attn --x time --out loss.svg
  lmpipe plot runs/study/gpt/log.jsonl --term
`;

export async function run(argv: string[]): Promise<void> {
  const p = parseFlags("plot", argv, {
    out: { type: "string", short: "o" },
    x: { type: "string" },
    "log-scale": { type: "boolean" },
    term: { type: "boolean" },
    width: { type: "string" },
    height: { type: "string" },
    title: { type: "string" },
    "no-marks": { type: "boolean" },
    color: { type: "boolean" },
    "no-color": { type: "boolean" },
  });
  if (p.help) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length === 0) {
    throw usageError(
      "lmpipe plot: give at least one RUN (a run folder or a .jsonl log)\nSee 'lmpipe plot --help'.",
    );
  }
  const axis = str(p, "x", "step");
  if (!["step", "tokens", "time"].includes(axis)) {
    throw usageError(`lmpipe plot: --x must be step, tokens or time, got '${axis}'`);
  }
  const out = str(p, "out");
  const term = bool(p, "term") || out === undefined;
  if (out === "-" && bool(p, "term")) {
    throw usageError("lmpipe plot: --term and --out - both write to stdout; pick one");
  }
  let format: "svg" | "png" | undefined;
  if (out !== undefined) {
    const ext = out === "-" ? ".svg" : extname(out).toLowerCase();
    if (ext !== ".svg" && ext !== ".png") {
      throw usageError(`lmpipe plot: --out '${out}' must end in .svg or .png (or be '-' for SVG on stdout)`);
    }
    format = ext === ".svg" ? "svg" : "png";
  }

  const runs = [];
  for (const path of p.positionals) runs.push(await readRun(path));
  const base = {
    axis: axis as XAxis,
    logY: bool(p, "log-scale"),
    title: str(p, "title"),
    studyMarks: !bool(p, "no-marks"),
  };

  if (format) {
    const spec = lossChart(runs, {
      ...base,
      width: num(p, "plot", "width", 800, { min: 200, max: 8000, integer: true }),
      height: num(p, "plot", "height", 480, { min: 150, max: 8000, integer: true }),
    });
    await writeAtomic(out!, format === "svg" ? renderSvg(spec) : encodePng(renderRaster(spec)));
    if (out !== "-") {
      info(`plot: wrote ${out} (${runs.length} run${runs.length > 1 ? "s" : ""}, x = ${axis})`);
    }
  }
  if (term) {
    const cols = (() => {
      try {
        return Deno.consoleSize().columns;
      } catch {
        return 80;
      }
    })();
    const toTerminal = Deno.stdout.isTerminal();
    const color = bool(p, "no-color") ? false : bool(p, "color") || (toTerminal && !Deno.env.get("NO_COLOR"));
    const spec: ChartSpec = lossChart(runs, { ...base, width: 0, height: 0 });
    const text = renderTerm(spec, {
      width: format ? cols : num(p, "plot", "width", cols, { min: 20, max: 1000, integer: true }),
      height: format ? 20 : num(p, "plot", "height", 20, { min: 8, max: 500, integer: true }),
      color,
    });
    await Deno.stdout.write(new TextEncoder().encode(text));
  }
}
