// Turns what a model computed into heatmap grids: attention matrices (one panel per layer and head,
// the prompt's tokens on both axes) and activation images (one row per token position, one panel per
// channel, before and after the causal sharing). Pure functions over plain arrays, so they test without a model.
import { type GridSpec, type Panel, tokenLabel } from "../../lib/plot/heatmap.ts";

/** Attention of one layer: probabilities [heads][T][T] flattened as heads×T×T, query rows, key columns. */
export interface LayerAttention {
  name: string;
  heads: number;
  T: number;
  probs: Float32Array;
}

/** Cell size that keeps a grid of `cellsAcross` cells near `targetPx` pixels wide, between 2 and 24 px. */
export function cellSize(cellsAcross: number, targetPx: number): number {
  return Math.max(2, Math.min(24, Math.floor(targetPx / Math.max(1, cellsAcross))));
}

export function attentionGrid(tokens: string[], layers: LayerAttention[], title: string): GridSpec {
  const T = tokens.length;
  const maxHeads = Math.max(...layers.map((l) => l.heads));
  const panels: Array<Array<Panel | null>> = layers.map((l) => {
    if (l.T !== T) throw new Error(`layer ${l.name}: attention over ${l.T} positions, prompt has ${T}`);
    return Array.from(
      { length: maxHeads },
      (_, h) =>
        h < l.heads ? { rows: T, cols: T, values: l.probs.subarray(h * T * T, (h + 1) * T * T) } : null,
    );
  });
  const labels = tokens.map((t) => tokenLabel(t));
  return {
    title,
    panels,
    rowHeaders: layers.map((l) => l.name),
    colHeaders: Array.from({ length: maxHeads }, (_, h) => `head ${h}`),
    cellLabels: { rows: labels, cols: labels },
    cellPx: cellSize(T * Math.min(maxHeads, 12), 1400),
    colormap: "sequential",
    fixedRange: [0, 1],
    footer: "rows: query token, columns: key token; colour: attention probability 0 (white) to 1 (dark blue)",
    fontScale: 1,
  };
}

/** Activation images of every position: values [T][C][H][W] flattened, before and after the sharing. */
export interface ActivationImages {
  T: number;
  C: number;
  H: number;
  W: number;
  before: Float32Array;
  after: Float32Array;
  /** What the sharing is, for the title (e.g. "running sum over positions"). */
  sharing: string;
}

export function imagesGrid(tokens: string[], a: ActivationImages, title: string): GridSpec {
  const { T, C, H, W } = a;
  if (tokens.length !== T) throw new Error(`images for ${T} positions, prompt has ${tokens.length}`);
  const size = C * H * W;
  const panel = (src: Float32Array, t: number, c: number): Panel => ({
    rows: H,
    cols: W,
    values: src.subarray(t * size + c * H * W, t * size + (c + 1) * H * W),
  });
  const panels = Array.from({ length: T }, (_, t) => [
    ...Array.from({ length: C }, (_, c) => panel(a.before, t, c)),
    ...Array.from({ length: C }, (_, c) => panel(a.after, t, c)),
  ]);
  return {
    title,
    panels,
    rowHeaders: tokens.map((tok, t) => `${t}: ${tokenLabel(tok)}`),
    colHeaders: [
      ...Array.from({ length: C }, (_, c) => `c${c}`),
      ...Array.from({ length: C }, (_, c) => `c${c}`),
    ],
    groupHeaders: [{ col: 0, text: "before sharing" }, { col: C, text: "after sharing" }],
    cellPx: Math.max(1, Math.min(6, Math.floor(60 / Math.max(H, W)))),
    colormap: "diverging",
    gapBefore: [C],
    footer:
      `left: each token's own image; right: after ${a.sharing}; colour per channel column: blue < 0 < red`,
    fontScale: 1,
  };
}
