// The compute scaling of `lmpipe study --sizes`: for each model spec, its runs at the different sizes as
// (training compute, validation loss) points, the law L(C) = a C^-b + c fitted through them
// (lib/scaling_fit.ts), the chart of points, fits and their uncertainty, and how far apart each variant's
// law is from the first spec's at the smallest and largest compute measured: whether its advantage grows
// or shrinks with compute.
//
// Compute C is the run's training FLOPs: the model's own FLOPs per token (forward + backward, as `train`
// prints it; for the image models this counts the CNN, which 6 x params would miss) times the tokens
// it trained on.
import { fitScalingLaw, predictLoss, predictLossStderr, type ScalingFit } from "../../lib/scaling_fit.ts";
import { type ChartSpec, PALETTE, type Series } from "../../lib/plot/chart.ts";
import type { ModelResult } from "./results.ts";

/** One spec's points and its fitted law (or why there is none). */
export interface ScalingEntry {
  /** The model spec, as written in --models. */
  model: string;
  points: { size: string; compute: number; loss: number }[];
  fit?: ScalingFit;
  error?: string;
}

/** Training FLOPs of a run: FLOPs per token times tokens seen (6 x params x tokens when the first is unknown). */
export function trainingCompute(r: ModelResult): number | undefined {
  if (r.tokens === undefined) return undefined;
  if (r.flops_per_token !== undefined) return r.flops_per_token * r.tokens;
  return r.params !== undefined ? 6 * r.params * r.tokens : undefined;
}

/** Groups finished runs by spec (in first-seen order) and fits each spec's law across its sizes. */
export function scalingEntries(results: ModelResult[]): ScalingEntry[] {
  const bySpec = new Map<string, ScalingEntry>();
  for (const r of results) {
    const spec = r.spec ?? r.model;
    const e = bySpec.get(spec) ?? { model: spec, points: [] };
    bySpec.set(spec, e);
    const compute = trainingCompute(r);
    if (r.status === "ok" && r.val_loss !== undefined && compute !== undefined) {
      e.points.push({ size: r.size ?? "", compute, loss: r.val_loss });
    }
  }
  for (const e of bySpec.values()) {
    e.points.sort((a, b) => a.compute - b.compute);
    try {
      e.fit = fitScalingLaw(e.points);
    } catch (err) {
      e.error = (err as Error).message.replace(/^scaling fit: /, "");
    }
  }
  return [...bySpec.values()];
}

/** Compute values spread evenly in log space over [lo, hi]. */
function logSpace(lo: number, hi: number, n: number): number[] {
  const l0 = Math.log(lo), l1 = Math.log(hi);
  return Array.from({ length: n }, (_, i) => Math.exp(l0 + ((l1 - l0) * i) / (n - 1)));
}

/**
 * The scaling chart: per spec its measured points (dots), the fitted law (solid) over the measured
 * compute range widened by half a decade each side, and the law +- one standard error (dotted).
 */
export function scalingChart(entries: ScalingEntry[], title: string): ChartSpec {
  const all = entries.flatMap((e) => e.points.map((p) => p.compute));
  const lo = Math.min(...all) / Math.sqrt(10), hi = Math.max(...all) * Math.sqrt(10);
  const series: Series[] = [];
  entries.forEach((e, i) => {
    const color = PALETTE[i % PALETTE.length], run = e.model;
    const pts = e.points.map((p) => [p.compute, p.loss] as [number, number]);
    series.push({ label: run, run, color, style: "none", kind: "points", dots: true, points: pts });
    if (!e.fit) return;
    const cs = logSpace(lo, hi, 60);
    series.push({
      label: `${run} fit`,
      run,
      color,
      style: "solid",
      kind: "fit",
      points: cs.map((c) => [c, predictLoss(e.fit!, c)]),
    });
    if (!e.fit.covariance) return;
    for (const sign of [1, -1]) {
      series.push({
        label: `${run} ${sign > 0 ? "+" : "-"}1 s.e.`,
        run,
        color,
        style: "dotted",
        kind: "band",
        points: cs.map((c) => [c, predictLoss(e.fit!, c) + sign * predictLossStderr(e.fit!, c)!]),
      });
    }
  });
  return {
    width: 900,
    height: 560,
    title,
    xAxis: "flops",
    xLabel: "training FLOPs (FLOPs/token x tokens seen), log scale",
    yLabel: "validation loss (nats/token)",
    logY: false,
    logX: true,
    series,
    vmarks: [],
    hmarks: [],
  };
}

/** A variant's fitted loss minus the first spec's, at the smallest and the largest compute measured. */
export interface Advantage {
  model: string;
  baseline: string;
  lowCompute: number;
  highCompute: number;
  /** Variant minus baseline loss (negative: the variant is better) at each end. */
  atLow: number;
  atHigh: number;
}

/** Each fitted variant against the first fitted spec, over the compute range both were measured in. */
export function advantages(entries: ScalingEntry[]): Advantage[] {
  const fitted = entries.filter((e) => e.fit);
  if (fitted.length < 2) return [];
  const base = fitted[0];
  return fitted.slice(1).map((e) => {
    const lo = Math.max(base.points[0].compute, e.points[0].compute);
    const hi = Math.min(base.points[base.points.length - 1].compute, e.points[e.points.length - 1].compute);
    const [a, b] = lo <= hi ? [lo, hi] : [hi, lo]; // ranges that do not overlap: between the nearest ends
    return {
      model: e.model,
      baseline: base.model,
      lowCompute: a,
      highCompute: b,
      atLow: predictLoss(e.fit!, a) - predictLoss(base.fit!, a),
      atHigh: predictLoss(e.fit!, b) - predictLoss(base.fit!, b),
    };
  });
}
