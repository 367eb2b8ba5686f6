// Line charts for terminals, drawn with Unicode braille characters (2×4 dots per character cell), so a
// user on ssh sees a run's loss curve without copying files. Same chart model and ticks as the SVG/PNG.
import {
  axisRanges,
  type ChartSpec,
  legendEntries,
  type Range,
  visibleMarks,
  xTicks,
  yTicks,
} from "./chart.ts";

/** ANSI colours (30-37 family) for the palette order of chart.ts. */
const ANSI = [34, 31, 32, 35, 91, 36, 33, 90];

// braille dot bits by [row][column] inside a cell
const DOT = [[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]];

export interface TermOptions {
  /** Total width in columns (the chart never exceeds it). */
  width: number;
  /** Total height in lines, including axis labels and legend. */
  height: number;
  /** Colour the curves with ANSI escapes. */
  color: boolean;
}

/** Visible width of a string (ANSI escapes removed). */
export function visibleWidth(s: string): number {
  // deno-lint-ignore no-control-regex -- ANSI colour escapes start with ESC
  return [...s.replace(/\x1b\[[0-9;]*m/g, "")].length;
}

export function renderTerm(spec: ChartSpec, o: TermOptions): string {
  const r = axisRanges(spec);
  const legend = legendEntries(spec);
  const anyVal = legend.some((e) => e.hasVal);
  const rows = Math.max(3, o.height - 5 - (spec.title ? 1 : 0)); // y label, x axis, x ticks, legend, marks
  const yt = yTicks(spec, r.y, Math.max(2, Math.round(rows / 4)));
  const lw = Math.max(...yt.map((t) => t.label.length)) + 1;
  const cols = Math.max(4, o.width - lw - 2);
  const dotsW = cols * 2, dotsH = rows * 4;
  const fy = spec.logY ? Math.log10 : (v: number) => v;
  const fx = spec.logX ? Math.log10 : (v: number) => v;
  const dx = (v: number) => Math.round(((fx(v) - fx(r.x.min)) / (fx(r.x.max) - fx(r.x.min))) * (dotsW - 1));
  const dy = (v: number) =>
    Math.round((1 - (fy(v) - fy(r.y.min)) / (fy(r.y.max) - fy(r.y.min))) * (dotsH - 1));

  const bits = new Uint8Array(cols * rows);
  const owner = new Int16Array(cols * rows).fill(-1); // which run colours the cell
  const runIndex = new Map(legend.map((e, i) => [e.run, i]));
  const set = (x: number, y: number, run: number) => {
    if (x < 0 || y < 0 || x >= dotsW || y >= dotsH) return;
    const c = (y >> 2) * cols + (x >> 1);
    bits[c] |= DOT[y & 3][x & 1];
    owner[c] = run;
  };
  const line = (x0: number, y0: number, x1: number, y1: number, run: number, dotted: boolean) => {
    const n = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1);
    for (let i = 0; i <= n; i++) {
      if (dotted && i % 3 === 2) continue;
      set(Math.round(x0 + ((x1 - x0) * i) / n), Math.round(y0 + ((y1 - y0) * i) / n), run);
    }
  };
  // horizontal marks first, so curves draw over them
  const marks = visibleMarks(spec, r);
  for (const m of marks.h) for (let x = 0; x < dotsW; x += 4) set(x, dy(m.at), -2);
  for (const m of marks.v) for (let y = 0; y < dotsH; y += 3) set(dx(m.at), y, -2);
  for (const s of spec.series) {
    const run = runIndex.get(s.run) ?? 0;
    const pts = s.points.filter(([x, y]) =>
      Number.isFinite(x) && Number.isFinite(y) && (!spec.logY || y > 0)
    );
    for (let i = 0; i < pts.length; i++) {
      const [x, y] = [dx(pts[i][0]), dy(pts[i][1])];
      if (i === 0 || s.style === "none") set(x, y, run);
      else line(dx(pts[i - 1][0]), dy(pts[i - 1][1]), x, y, run, s.style !== "solid");
    }
  }

  const paint = (text: string, run: number) =>
    o.color && run >= 0
      ? `\x1b[${ANSI[run % ANSI.length]}m${text}\x1b[0m`
      : o.color && run === -2
      ? `\x1b[90m${text}\x1b[0m`
      : text;
  const tickRow = new Map<number, string>();
  for (const t of yt) tickRow.set(Math.min(rows - 1, dy(t.value) >> 2), t.label);

  const out: string[] = [];
  if (spec.title) out.push(spec.title.slice(0, o.width));
  out.push(`${spec.yLabel}${spec.logY ? " (log scale)" : ""}`.slice(0, o.width));
  for (let row = 0; row < rows; row++) {
    const lab = tickRow.get(row);
    let s = lab !== undefined ? `${lab.padStart(lw - 1)} ┤` : `${" ".repeat(lw - 1)} │`;
    for (let c = 0; c < cols; c++) {
      const k = row * cols + c;
      s += bits[k] ? paint(String.fromCharCode(0x2800 + bits[k]), owner[k]) : " ";
    }
    out.push(s);
  }
  out.push(`${" ".repeat(lw)}└${"─".repeat(cols)}`);
  out.push(xTickLine(spec, r.x, lw + 1, cols, o.width));
  const keys = legend.map((e, i) => paint("──", i) + " " + e.run);
  if (anyVal) keys.push("┄┄ validation");
  out.push(fitLegend(keys, o.width));
  const markNames = [...marks.v, ...marks.h].map((m) => m.label);
  if (markNames.length) out.push(fitLegend([paint("⠒⠒", -2) + " marks:", ...markNames], o.width));
  return out.join("\n") + "\n";
}

/** The x tick labels under the axis, placed at their columns, skipping any that would overlap. */
function xTickLine(spec: ChartSpec, rx: Range, offset: number, cols: number, width: number): string {
  const ticks = xTicks(spec, rx, Math.max(2, Math.floor(cols / 12)));
  const chars = Array<string>(width).fill(" ");
  let free = 0;
  for (const t of ticks) {
    const col = offset + Math.round(((t.value - rx.min) / (rx.max - rx.min)) * (cols - 1));
    const start = Math.max(free, Math.min(col - Math.floor(t.label.length / 2), width - t.label.length));
    if (start + t.label.length > width || start > col) continue;
    for (let i = 0; i < t.label.length; i++) chars[start + i] = t.label[i];
    free = start + t.label.length + 1;
  }
  const axisName = ` ${spec.xLabel}`;
  let s = chars.join("").trimEnd();
  if (s.length + axisName.length <= width) s += axisName;
  return s;
}

/** Joins legend keys with two spaces, dropping what does not fit in `width` visible columns. */
function fitLegend(keys: string[], width: number): string {
  let s = "";
  for (const k of keys) {
    const next = s ? `${s}  ${k}` : k;
    if (visibleWidth(next) > width) break;
    s = next;
  }
  return s;
}
