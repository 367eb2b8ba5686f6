// The chart model shared by every renderer (SVG, raster/PNG, terminal): what a line chart holds
// (series, budget marks, reference lines) and the pure geometry behind it (axis ranges, "nice" ticks,
// linear and log scales), so the three renderers draw the same picture from the same numbers.

export interface Series {
  /** Legend label, e.g. the run name. */
  label: string;
  /** (x, y) points in data units, x increasing. */
  points: Array<[number, number]>;
  /** CSS-style "#rrggbb" colour. */
  color: string;
  /**
   * Train curves are solid; validation curves dashed with dots at the measured points. A scaling chart
   * draws measured points alone ("none": no line), the fitted law solid and its error band dotted.
   */
  style: "solid" | "dashed" | "dotted" | "none";
  /** Which run the series belongs to (train and val of one run share a colour and a legend entry). */
  run: string;
  kind: "train" | "val" | "points" | "fit" | "band";
  /** Dots at the points (default: for validation series). */
  dots?: boolean;
}

/** A vertical line at x (e.g. a compute budget) or a horizontal one at y (e.g. a loss the study reported). */
export interface Mark {
  at: number;
  label: string;
}

export type XAxis = "step" | "tokens" | "time";

export interface ChartSpec {
  width: number;
  height: number;
  title?: string;
  /** What x measures: a step log's axis, or training FLOPs (study's scaling chart). */
  xAxis: XAxis | "flops";
  xLabel: string;
  yLabel: string;
  logY: boolean;
  /** Draw the legend (default true; false for a panel whose neighbour carries it). */
  legend?: boolean;
  /** A logarithmic x axis (e.g. training FLOPs over several decades). */
  logX?: boolean;
  series: Series[];
  vmarks: Mark[];
  hmarks: Mark[];
}

export interface Tick {
  value: number;
  label: string;
}

export interface Range {
  min: number;
  max: number;
}

/** Colours for runs, in order: distinct on white and in 256-colour terminals. */
export const PALETTE = [
  "#1f5fbf",
  "#d9480f",
  "#2b8a3e",
  "#862e9c",
  "#c2255c",
  "#0b7285",
  "#a07a00",
  "#495057",
];

/** Data range of all series (x and y), limited to finite values, and positive ones on a log axis. */
export function dataRange(spec: ChartSpec): { x: Range; y: Range } {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of spec.series) {
    for (const [x, y] of s.points) {
      if (!Number.isFinite(x) || !Number.isFinite(y) || (spec.logY && y <= 0) || (spec.logX && x <= 0)) {
        continue;
      }
      x0 = Math.min(x0, x), x1 = Math.max(x1, x);
      y0 = Math.min(y0, y), y1 = Math.max(y1, y);
    }
  }
  if (x0 === Infinity) {
    x0 = spec.logX ? 1 : 0, x1 = spec.logX ? 10 : 1, y0 = spec.logY ? 1 : 0, y1 = spec.logY ? 10 : 1;
  }
  if (x1 === x0) x1 = spec.logX ? x0 * 10 : x0 + 1;
  if (y1 === y0) {
    const pad = Math.abs(y0) * 0.05 || 1;
    y0 = spec.logY ? y0 / 1.1 : y0 - pad, y1 = spec.logY ? y1 * 1.1 : y1 + pad;
  }
  return { x: { min: x0, max: x1 }, y: { min: y0, max: y1 } };
}

/**
 * The axis ranges actually drawn: x from 0 (or the data start) to the data end, y padded by 4%; a log x
 * axis spans the data padded by 4% of its decades.
 */
export function axisRanges(spec: ChartSpec): { x: Range; y: Range } {
  const d = dataRange(spec);
  let x = { min: Math.min(0, d.x.min), max: d.x.max };
  if (spec.logX) {
    const l0 = Math.log10(d.x.min), l1 = Math.log10(d.x.max), pad = (l1 - l0) * 0.04;
    x = { min: 10 ** (l0 - pad), max: 10 ** (l1 + pad) };
  }
  let y: Range;
  if (spec.logY) {
    const l0 = Math.log10(d.y.min), l1 = Math.log10(d.y.max), pad = (l1 - l0) * 0.04;
    y = { min: 10 ** (l0 - pad), max: 10 ** (l1 + pad) };
  } else {
    const pad = (d.y.max - d.y.min) * 0.04;
    y = { min: d.y.min - pad, max: d.y.max + pad };
  }
  return { x, y };
}

/** Step between ticks: 1, 2 or 5 times a power of ten, giving about `target` ticks over the span. */
export function niceStep(span: number, target: number): number {
  const raw = span / Math.max(1, target);
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

/** Tick values at multiples of a nice step inside [min, max]. */
export function linearTicks(r: Range, target: number): number[] {
  const step = niceStep(r.max - r.min, target);
  const out: number[] = [];
  const first = Math.ceil(r.min / step - 1e-9);
  for (let i = first; i * step <= r.max + step * 1e-9; i++) out.push(Number((i * step).toPrecision(12)));
  return out;
}

/** Log-axis ticks: decades (and 2, 5 multiples) over wide ranges, linear nice values over narrow ones. */
export function logTicks(r: Range, target: number): number[] {
  const decades = Math.log10(r.max / r.min);
  if (decades < 1) return linearTicks(r, target).filter((v) => v > 0);
  const mults = decades < 3 ? [1, 2, 5] : [1];
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(r.min)); e <= Math.ceil(Math.log10(r.max)); e++) {
    for (const m of mults) {
      const v = Number((m * 10 ** e).toPrecision(12));
      if (v >= r.min * (1 - 1e-9) && v <= r.max * (1 + 1e-9)) out.push(v);
    }
  }
  return out;
}

/** Time ticks in seconds at human steps (10 s, 1 min, 15 min, 1 h, ...). */
export function timeTicks(r: Range, target: number): number[] {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const raw = (r.max - r.min) / Math.max(1, target);
  const step = steps.find((s) => s >= raw) ?? niceStep(r.max - r.min, target);
  const out: number[] = [];
  for (let i = Math.ceil(r.min / step - 1e-9); i * step <= r.max + 1e-9; i++) out.push(i * step + 0);
  return out;
}

/** Formats a number compactly for a tick label (1.5k, 2M, 0.25, 3.2). */
export function fmtNumber(v: number): string {
  const a = Math.abs(v);
  const trim = (s: string) => s.includes(".") ? s.replace(/\.?0+$/, "") : s;
  if (a >= 1e12) {
    const e = Math.floor(Math.log10(a));
    return `${trim((v / 10 ** e).toFixed(1))}e${e}`;
  }
  if (a >= 1e9) return trim((v / 1e9).toFixed(2)) + "B";
  if (a >= 1e6) return trim((v / 1e6).toFixed(2)) + "M";
  if (a >= 1e4) return trim((v / 1e3).toFixed(1)) + "k";
  if (a >= 100 || a === 0) return trim(v.toFixed(0));
  if (a >= 1) return trim(v.toFixed(2));
  return trim(v.toPrecision(2));
}

/** Formats seconds for a time tick: 45s, 5m, 1h30m. */
export function fmtSeconds(v: number): string {
  if (v === 0) return "0";
  if (v < 60) return `${fmtNumber(v)}s`;
  if (v < 3600) {
    const m = Math.floor(v / 60), s = Math.round(v % 60);
    return s ? `${m}m${s}s` : `${m}m`;
  }
  const h = Math.floor(v / 3600), m = Math.round((v % 3600) / 60);
  return m ? `${h}h${String(m).padStart(2, "0")}m` : `${h}h`;
}

export function xTicks(spec: ChartSpec, r: Range, target: number): Tick[] {
  const values = spec.xAxis === "time"
    ? timeTicks(r, target)
    : spec.logX
    ? logTicks(r, target)
    : linearTicks(r, target);
  const fmt = spec.xAxis === "time" ? fmtSeconds : fmtNumber;
  return values.map((value) => ({ value, label: fmt(value) }));
}

export function yTicks(spec: ChartSpec, r: Range, target: number): Tick[] {
  const values = spec.logY ? logTicks(r, target) : linearTicks(r, target);
  return values.map((value) => ({ value, label: fmtNumber(value) }));
}

/** Maps data values to pixel positions inside a plot rectangle (y grows downwards). */
export interface Scales {
  x(v: number): number;
  y(v: number): number;
}

export function makeScales(
  spec: ChartSpec,
  r: { x: Range; y: Range },
  box: { left: number; top: number; right: number; bottom: number },
): Scales {
  const fy = spec.logY ? Math.log10 : (v: number) => v;
  const fx = spec.logX ? Math.log10 : (v: number) => v;
  const y0 = fy(r.y.min), y1 = fy(r.y.max), x0 = fx(r.x.min), x1 = fx(r.x.max);
  return {
    x: (v) => box.left + (fx(v) - x0) / (x1 - x0) * (box.right - box.left),
    y: (v) => box.bottom - (fy(v) - y0) / (y1 - y0) * (box.bottom - box.top),
  };
}

/** The marks that fall inside the drawn ranges (a 4 h budget mark is pointless on a 20 s run). */
export function visibleMarks(spec: ChartSpec, r: { x: Range; y: Range }): { v: Mark[]; h: Mark[] } {
  return {
    v: spec.vmarks.filter((m) => m.at >= r.x.min && m.at <= r.x.max),
    h: spec.hmarks.filter((m) => m.at >= r.y.min && m.at <= r.y.max),
  };
}

/** One legend entry per run, in first-seen order, with its colour and whether it has a val curve. */
export function legendEntries(spec: ChartSpec): Array<{ run: string; color: string; hasVal: boolean }> {
  const out = new Map<string, { run: string; color: string; hasVal: boolean }>();
  for (const s of spec.series) {
    const e = out.get(s.run) ?? { run: s.run, color: s.color, hasVal: false };
    if (s.kind === "val" && s.points.length) e.hasVal = true;
    out.set(s.run, e);
  }
  return [...out.values()];
}

/** Parses "#rrggbb" into [r, g, b]. */
export function hexRgb(hex: string): [number, number, number] {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/**
 * Thins a long series to at most about two points per pixel column (the first, the minimum and the
 * maximum of each column, in order), so a 100k-step log draws as fast as a short one and looks the same.
 */
export function thinPoints(
  points: Array<[number, number]>,
  px: (x: number) => number,
): Array<[number, number]> {
  if (points.length < 2000) return points;
  const out: Array<[number, number]> = [];
  let col = NaN, lo: [number, number] | null = null, hi: [number, number] | null = null;
  const flush = () => {
    if (!lo || !hi) return;
    if (lo === hi) out.push(lo);
    else if (lo[0] <= hi[0]) out.push(lo, hi);
    else out.push(hi, lo);
  };
  for (const p of points) {
    const c = Math.floor(px(p[0]));
    if (c !== col) {
      flush();
      col = c, lo = p, hi = p;
      continue;
    }
    if (p[1] < lo![1]) lo = p;
    if (p[1] > hi![1]) hi = p;
  }
  flush();
  return out;
}

/** The plot rectangle inside a chart of the given size, leaving room for labels of `charW`×`charH` text. */
export function plotBox(
  spec: ChartSpec,
  yTickLabels: string[],
  charW: number,
  charH: number,
): { left: number; top: number; right: number; bottom: number } {
  const yLabelW = Math.max(3, ...yTickLabels.map((l) => l.length)) * charW;
  return {
    left: Math.round(yLabelW + charW * 2),
    top: Math.round(charH * (spec.title ? 3.6 : 2.2)),
    right: Math.round(spec.width - charW * 3),
    bottom: Math.round(spec.height - charH * 3.4),
  };
}

/**
 * Where to put each horizontal mark's label so close marks do not print over each other: at the
 * left end of its line, or at the right end when the previous left label is closer than `gap` pixels.
 */
export function hmarkLabelSides(ys: number[], gap: number): Array<"start" | "end"> {
  const order = ys.map((y, i) => [y, i]).sort((a, b) => a[0] - b[0]);
  const sides: Array<"start" | "end"> = Array(ys.length).fill("start");
  let lastStart = -Infinity, lastEnd = -Infinity;
  for (const [y, i] of order) {
    if (y - lastStart >= gap || y - lastEnd < gap) {
      sides[i] = "start";
      lastStart = y;
    } else {
      sides[i] = "end";
      lastEnd = y;
    }
  }
  return sides;
}
