// Grids of heatmaps (attention matrices per layer and head, activation images per position and channel)
// laid out once and drawn as SVG or into a raster for PNG, so both formats show the same cells, labels
// and colours. Labels use the raster font's metrics; the SVG uses a monospace font of the same advance.
import { GLYPH_H } from "./font.ts";
import { label, Raster, type RGB, textPx } from "./raster.ts";
import { xmlEscape } from "./svg.ts";

/** One matrix: `rows`×`cols` values, row-major. */
export interface Panel {
  values: ArrayLike<number>;
  rows: number;
  cols: number;
}

export interface GridSpec {
  title?: string;
  /** panels[gridRow][gridCol]; null leaves a hole. */
  panels: Array<Array<Panel | null>>;
  /** A header left of each grid row (e.g. "layer 0" or a token). */
  rowHeaders?: string[];
  /** A header above each grid column (e.g. "head 1" or "c3"). */
  colHeaders?: string[];
  /** Headers over groups of grid columns, starting at grid column `col` (e.g. "before sharing"). */
  groupHeaders?: Array<{ col: number; text: string }>;
  /** Labels of the cells of every panel (e.g. the prompt's tokens): rows left of the first grid column, columns under the last grid row. */
  cellLabels?: { rows: string[]; cols: string[] };
  /** Pixel size of one matrix cell. */
  cellPx: number;
  /** "sequential" (white → blue, for probabilities) or "diverging" (blue ← white → red, for signed activations). */
  colormap: "sequential" | "diverging";
  /** Colour range per grid column: [min, max] for sequential, max |v| for diverging. Default: from the data of each grid column. */
  columnRange?: number[];
  /** Fixed range for every panel (overrides columnRange), e.g. [0, 1] for attention. */
  fixedRange?: [number, number];
  /** Extra horizontal space inserted before these grid columns (to separate groups). */
  gapBefore?: number[];
  /** A note printed under the grid (e.g. what the colours mean). */
  footer?: string;
  /** Font scale (1 = 5×7 pixels per glyph). */
  fontScale: number;
}

const SEQ: RGB[] = [[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
const DIV_NEG: RGB[] = [[255, 255, 255], [146, 197, 222], [33, 102, 172]];
const DIV_POS: RGB[] = [[255, 255, 255], [244, 165, 130], [178, 24, 43]];

function ramp(stops: RGB[], t: number): RGB {
  const x = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
  const a = stops[i], b = stops[i + 1];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f)) as RGB;
}

/** Colour of a value: sequential maps [lo, hi] → white..blue; diverging maps [-m, m] → blue..white..red. */
export function colorOf(colormap: GridSpec["colormap"], v: number, lo: number, hi: number): RGB {
  if (!Number.isFinite(v)) return [255, 0, 255];
  if (colormap === "sequential") return ramp(SEQ, hi > lo ? (v - lo) / (hi - lo) : 0);
  const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
  return v < 0 ? ramp(DIV_NEG, -v / m) : ramp(DIV_POS, v / m);
}

export interface GridLayout {
  width: number;
  height: number;
  /** Top-left pixel of each panel, [gridRow][gridCol]. */
  origin: Array<Array<[number, number]>>;
  /** Colour range used for each grid column. */
  ranges: Array<[number, number]>;
  titleY: number;
  footerY: number;
  labelW: number;
}

/** Computes sizes and positions: panels in a grid with room for headers and cell labels. */
export function layoutGrid(g: GridSpec): GridLayout {
  const s = g.fontScale, charH = 9 * s, pad = 6 * s;
  const nRows = g.panels.length, nCols = Math.max(...g.panels.map((r) => r.length));
  const colW = Array(nCols).fill(0), rowH = Array(nRows).fill(0);
  g.panels.forEach((row, i) =>
    row.forEach((p, j) => {
      if (!p) return;
      colW[j] = Math.max(colW[j], p.cols * g.cellPx);
      rowH[i] = Math.max(rowH[i], p.rows * g.cellPx);
    })
  );
  const longest = (xs?: string[]) => Math.max(0, ...(xs ?? []).map((x) => textPx(x, s)));
  const labelW = Math.max(longest(g.rowHeaders) + (g.cellLabels ? pad : 0), 0) + longest(g.cellLabels?.rows) +
    pad;
  const colLabelH = g.cellLabels ? longest(g.cellLabels.cols) + pad : 0;
  const top = (g.title ? charH * 2 : pad) + (g.colHeaders ? charH + pad / 2 : 0) +
    (g.groupHeaders ? charH : 0);
  const gaps = new Set(g.gapBefore ?? []);
  const origin: Array<Array<[number, number]>> = [];
  let y = top;
  for (let i = 0; i < nRows; i++) {
    const row: Array<[number, number]> = [];
    let x = labelW + pad;
    for (let j = 0; j < nCols; j++) {
      if (gaps.has(j)) x += pad * 3;
      row.push([x, y]);
      x += colW[j] + pad;
    }
    origin.push(row);
    y += rowH[i] + pad;
  }
  const lastRow = origin[nRows - 1] ?? [];
  const width = Math.max(
    (lastRow[nCols - 1]?.[0] ?? 0) + colW[nCols - 1] + pad,
    g.title ? textPx(g.title, s) + 2 * pad : 0,
    g.footer ? textPx(g.footer, s) + 2 * pad : 0,
  );
  const footerY = y + colLabelH;
  const height = footerY + (g.footer ? charH * 1.5 : 0) + pad;

  const ranges: Array<[number, number]> = [];
  for (let j = 0; j < nCols; j++) {
    if (g.fixedRange) ranges.push(g.fixedRange);
    else if (g.columnRange && g.columnRange[j] !== undefined) {
      const m = g.columnRange[j];
      ranges.push(g.colormap === "diverging" ? [-m, m] : [0, m]);
    } else {
      let lo = Infinity, hi = -Infinity;
      for (const row of g.panels) {
        const p = row[j];
        if (!p) continue;
        for (let k = 0; k < p.values.length; k++) {
          const v = p.values[k];
          if (Number.isFinite(v)) lo = Math.min(lo, v), hi = Math.max(hi, v);
        }
      }
      if (lo === Infinity) lo = 0, hi = 1;
      if (g.colormap === "diverging") {
        const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
        ranges.push([-m, m]);
      } else ranges.push([Math.min(0, lo), hi > lo ? hi : lo + 1]);
    }
  }
  return {
    width: Math.ceil(width),
    height: Math.ceil(height),
    origin,
    ranges,
    titleY: charH,
    footerY,
    labelW,
  };
}

const INK: RGB = [40, 40, 40];
const hex = (c: RGB) => "#" + c.map((v) => v.toString(16).padStart(2, "0")).join("");

/** Draws the grid into a new raster. */
export function renderGridRaster(g: GridSpec): Raster {
  const L = layoutGrid(g), s = g.fontScale, c = g.cellPx, pad = 6 * s;
  const img = new Raster(L.width, L.height);
  if (g.title) label(img, pad, L.titleY, g.title, [0, 0, 0], s);
  const last = g.panels.length - 1;
  g.panels.forEach((row, i) =>
    row.forEach((p, j) => {
      const [x0, y0] = L.origin[i][j];
      if (i === 0 && g.colHeaders?.[j]) {
        label(img, x0, y0 - pad / 2 - (GLYPH_H * s) / 2 - 2 * s, g.colHeaders[j], INK, s);
      }
      if (!p) {
        return;
      }
      const [lo, hi] = L.ranges[j];
      for (let r = 0; r < p.rows; r++) {
        for (let k = 0; k < p.cols; k++) {
          img.fillRect(x0 + k * c, y0 + r * c, c, c, colorOf(g.colormap, p.values[r * p.cols + k], lo, hi));
        }
      }
      img.strokeRect(x0 - 1, y0 - 1, p.cols * c + 2, p.rows * c + 2, [200, 200, 200]);
      if (j === 0 && g.cellLabels) {
        for (let r = 0; r < p.rows; r++) {
          label(img, x0 - pad / 2, y0 + r * c + c / 2, g.cellLabels.rows[r] ?? "", INK, s, "end");
        }
      }
      if (i === last && g.cellLabels) {
        for (let k = 0; k < p.cols; k++) {
          const t = g.cellLabels.cols[k] ?? "";
          img.text(
            Math.round(x0 + k * c + c / 2 - (GLYPH_H * s) / 2),
            y0 + p.rows * c + pad / 2 + textPx(t, s),
            t,
            INK,
            s,
            true,
          );
        }
      }
    })
  );
  g.rowHeaders?.forEach((h, i) => {
    const p = g.panels[i]?.find((x) => x);
    const [, y0] = L.origin[i][0];
    label(img, pad, y0 + ((p?.rows ?? 1) * c) / 2, h, INK, s);
  });
  for (const h of g.groupHeaders ?? []) {
    const [x0, y0] = L.origin[0][h.col];
    label(img, x0, y0 - pad / 2 - (GLYPH_H * s) / 2 - 2 * s - 9 * s, h.text, [0, 0, 0], s);
  }
  if (g.footer) label(img, pad, L.footerY + 9 * s * 0.75, g.footer, [90, 90, 90], s);
  return img;
}

/** Draws the grid as SVG: one <rect> per cell, grouped per panel (<g class="panel" data-row data-col>). */
export function renderGridSvg(g: GridSpec): string {
  const L = layoutGrid(g), s = g.fontScale, c = g.cellPx, pad = 6 * s, fs = 10 * s;
  const o: string[] = [];
  o.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${L.width}" height="${L.height}" viewBox="0 0 ${L.width} ${L.height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="${fs}">`,
  );
  o.push(`<rect x="0" y="0" width="${L.width}" height="${L.height}" fill="#ffffff"/>`);
  if (g.title) {
    o.push(`<text x="${pad}" y="${L.titleY + fs / 3}" font-weight="bold">${xmlEscape(g.title)}</text>`);
  }
  const last = g.panels.length - 1;
  g.panels.forEach((row, i) =>
    row.forEach((p, j) => {
      const [x0, y0] = L.origin[i][j];
      if (i === 0 && g.colHeaders?.[j]) {
        o.push(`<text x="${x0}" y="${y0 - pad / 2 - 2 * s}">${xmlEscape(g.colHeaders[j])}</text>`);
      }
      if (!p) return;
      const [lo, hi] = L.ranges[j];
      o.push(`<g class="panel" data-row="${i}" data-col="${j}" shape-rendering="crispEdges">`);
      for (let r = 0; r < p.rows; r++) {
        for (let k = 0; k < p.cols; k++) {
          const v = p.values[r * p.cols + k];
          o.push(
            `<rect x="${x0 + k * c}" y="${y0 + r * c}" width="${c}" height="${c}" fill="${
              hex(colorOf(g.colormap, v, lo, hi))
            }"><title>${Number(v).toPrecision(3)}</title></rect>`,
          );
        }
      }
      o.push(
        `<rect x="${x0 - 0.5}" y="${y0 - 0.5}" width="${p.cols * c + 1}" height="${
          p.rows * c + 1
        }" fill="none" stroke="#c8c8c8"/>`,
      );
      o.push(`</g>`);
      if (j === 0 && g.cellLabels) {
        for (let r = 0; r < p.rows; r++) {
          o.push(
            `<text x="${x0 - pad / 2}" y="${y0 + r * c + c / 2 + fs / 3}" text-anchor="end">${
              xmlEscape(g.cellLabels.rows[r] ?? "")
            }</text>`,
          );
        }
      }
      if (i === last && g.cellLabels) {
        for (let k = 0; k < p.cols; k++) {
          const x = x0 + k * c + c / 2 + fs / 3, y = y0 + p.rows * c + pad / 2;
          o.push(
            `<text x="${x}" y="${y}" text-anchor="end" transform="rotate(-90 ${x} ${y})">${
              xmlEscape(g.cellLabels.cols[k] ?? "")
            }</text>`,
          );
        }
      }
    })
  );
  g.rowHeaders?.forEach((h, i) => {
    const p = g.panels[i]?.find((x) => x);
    const [, y0] = L.origin[i][0];
    o.push(`<text x="${pad}" y="${y0 + ((p?.rows ?? 1) * c) / 2 + fs / 3}">${xmlEscape(h)}</text>`);
  });
  for (const h of g.groupHeaders ?? []) {
    const [x0, y0] = L.origin[0][h.col];
    o.push(
      `<text x="${x0}" y="${y0 - pad / 2 - 2 * s - 9 * s}" font-weight="bold">${xmlEscape(h.text)}</text>`,
    );
  }
  if (g.footer) o.push(`<text x="${pad}" y="${L.footerY + fs}" fill="#5a5a5a">${xmlEscape(g.footer)}</text>`);
  o.push(`</svg>`);
  return o.join("\n") + "\n";
}

/** A token as a one-line label: spaces shown as a middle dot, newlines and tabs escaped, long ones cut. */
export function tokenLabel(text: string, max = 12): string {
  const t = text.replace(/\n/g, "\\n").replace(/\t/g, "\\t").replace(/ /g, "\u00b7").replace(
    // deno-lint-ignore no-control-regex -- other control characters have no glyph
    /[\x00-\x1f]/g,
    "?",
  );
  return [...t].length > max ? [...t].slice(0, max - 1).join("") + "~" : t;
}
