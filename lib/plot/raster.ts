// Drawing into an RGBA pixel buffer: rectangles, anti-aliased (optionally dashed) polylines, dots and
// text in lmpipe's own 5×7 font; and the line chart of chart.ts drawn with them. The buffer is what
// png.ts encodes, so PNG pictures need no canvas, browser or native library.
import {
  axisRanges,
  type ChartSpec,
  hexRgb,
  hmarkLabelSides,
  legendEntries,
  makeScales,
  plotBox,
  thinPoints,
  visibleMarks,
  xTicks,
  yTicks,
} from "./chart.ts";
import { CELL_H, CELL_W, glyph, GLYPH_H, GLYPH_W, glyphDrop } from "./font.ts";

export type RGB = [number, number, number];

export interface Clip {
  left: number;
  top: number;
  right: number;
  bottom: number;
}

/** An RGBA image, row-major, 8 bits per channel, opaque white when created. */
export class Raster {
  readonly data: Uint8Array;
  constructor(readonly width: number, readonly height: number, background: RGB = [255, 255, 255]) {
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
      throw new RangeError(`raster size must be positive integers, got ${width}×${height}`);
    }
    this.data = new Uint8Array(width * height * 4);
    this.data.set([background[0], background[1], background[2], 255]);
    for (let filled = 4; filled < this.data.length; filled *= 2) {
      this.data.copyWithin(filled, 0, Math.min(filled, this.data.length - filled));
    }
  }

  /** Blends `color` over pixel (x, y) with coverage `a` in [0, 1]; outside the image is ignored. */
  blend(x: number, y: number, color: RGB, a: number): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height || a <= 0) return;
    const i = (y * this.width + x) * 4, d = this.data;
    const k = Math.min(1, a);
    d[i] = Math.round(d[i] * (1 - k) + color[0] * k);
    d[i + 1] = Math.round(d[i + 1] * (1 - k) + color[1] * k);
    d[i + 2] = Math.round(d[i + 2] * (1 - k) + color[2] * k);
  }

  get(x: number, y: number): RGB {
    const i = (y * this.width + x) * 4;
    return [this.data[i], this.data[i + 1], this.data[i + 2]];
  }

  fillRect(x: number, y: number, w: number, h: number, color: RGB): void {
    const x0 = Math.max(0, Math.round(x)), y0 = Math.max(0, Math.round(y));
    const x1 = Math.min(this.width, Math.round(x + w)), y1 = Math.min(this.height, Math.round(y + h));
    for (let yy = y0; yy < y1; yy++) {
      for (let xx = x0; xx < x1; xx++) {
        const i = (yy * this.width + xx) * 4;
        this.data[i] = color[0],
          this.data[i + 1] = color[1],
          this.data[i + 2] = color[2],
          this.data[i + 3] = 255;
      }
    }
  }

  strokeRect(x: number, y: number, w: number, h: number, color: RGB): void {
    this.fillRect(x, y, w, 1, color);
    this.fillRect(x, y + h - 1, w, 1, color);
    this.fillRect(x, y, 1, h, color);
    this.fillRect(x + w - 1, y, 1, h, color);
  }

  /**
   * Draws a polyline `width` pixels wide with anti-aliased edges. Coverage is accumulated as the maximum
   * over segments before blending once, so joints are not drawn twice. `dash` = [on, off] in pixels.
   */
  polyline(
    points: Array<[number, number]>,
    color: RGB,
    width = 1.5,
    dash?: [number, number],
    clip?: Clip,
  ): void {
    if (points.length === 0) return;
    const c = clip ?? { left: 0, top: 0, right: this.width, bottom: this.height };
    const cx0 = Math.max(0, Math.floor(c.left)), cy0 = Math.max(0, Math.floor(c.top));
    const cx1 = Math.min(this.width, Math.ceil(c.right)), cy1 = Math.min(this.height, Math.ceil(c.bottom));
    if (cx1 <= cx0 || cy1 <= cy0) return;
    const cw = cx1 - cx0;
    const cover = new Float32Array(cw * (cy1 - cy0));
    const half = width / 2;
    const pts = points.length === 1 ? [points[0], points[0]] : points;
    let along = 0;
    for (let s = 0; s + 1 < pts.length; s++) {
      const [ax, ay] = pts[s], [bx, by] = pts[s + 1];
      const dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy, len = Math.sqrt(len2);
      const x0 = Math.max(cx0, Math.floor(Math.min(ax, bx) - half - 1));
      const x1 = Math.min(cx1 - 1, Math.ceil(Math.max(ax, bx) + half + 1));
      const y0 = Math.max(cy0, Math.floor(Math.min(ay, by) - half - 1));
      const y1 = Math.min(cy1 - 1, Math.ceil(Math.max(ay, by) + half + 1));
      for (let y = y0; y <= y1; y++) {
        for (let x = x0; x <= x1; x++) {
          const px = x + 0.5, py = y + 0.5;
          const t = len2 > 0 ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / len2)) : 0;
          if (dash) {
            const pos = (along + t * len) % (dash[0] + dash[1]);
            if (pos > dash[0]) continue;
          }
          const qx = ax + t * dx - px, qy = ay + t * dy - py;
          const a = Math.max(0, Math.min(1, half + 0.5 - Math.sqrt(qx * qx + qy * qy)));
          const k = (y - cy0) * cw + (x - cx0);
          if (a > cover[k]) cover[k] = a;
        }
      }
      along += len;
    }
    for (let y = cy0; y < cy1; y++) {
      for (let x = cx0; x < cx1; x++) {
        const a = cover[(y - cy0) * cw + (x - cx0)];
        if (a > 0) this.blend(x, y, color, a);
      }
    }
  }

  /** A filled, anti-aliased disc. */
  dot(cx: number, cy: number, r: number, color: RGB): void {
    for (let y = Math.floor(cy - r - 1); y <= Math.ceil(cy + r + 1); y++) {
      for (let x = Math.floor(cx - r - 1); x <= Math.ceil(cx + r + 1); x++) {
        const d = Math.hypot(x + 0.5 - cx, y + 0.5 - cy);
        this.blend(x, y, color, Math.max(0, Math.min(1, r + 0.5 - d)));
      }
    }
  }

  /**
   * Draws one line of text with its top-left corner at (x, y), each font pixel `scale`×`scale` image
   * pixels. `vertical` turns it 90° counter-clockwise (reading upwards from (x, y) as the bottom-left).
   */
  text(x: number, y: number, text: string, color: RGB, scale = 1, vertical = false): void {
    let i = 0;
    for (const ch of text) {
      const rows = glyph(ch), drop = glyphDrop(ch);
      for (let gy = 0; gy < GLYPH_H; gy++) {
        for (let gx = 0; gx < GLYPH_W; gx++) {
          if (!((rows[gy] >> (GLYPH_W - 1 - gx)) & 1)) continue;
          const fx = i * CELL_W + gx, fy = gy + drop;
          // upright: (fx, fy); vertical: x grows with fy, y shrinks with fx
          const px = vertical ? x + fy * scale : x + fx * scale;
          const py = vertical ? y - (fx + 1) * scale : y + fy * scale;
          this.fillRect(px, py, scale, scale, color);
        }
      }
      i++;
    }
  }
}

/** Pixel width of `text` drawn at `scale`. */
export function textPx(text: string, scale: number): number {
  return [...text].length * CELL_W * scale;
}

/** Draws `text` with an anchor: "start" (left), "middle" or "end" (right) of x; y is the text's vertical centre. */
export function label(
  img: Raster,
  x: number,
  y: number,
  text: string,
  color: RGB,
  scale: number,
  anchor: "start" | "middle" | "end" = "start",
): void {
  const w = textPx(text, scale) - scale;
  const left = anchor === "start" ? x : anchor === "middle" ? x - w / 2 : x - w;
  img.text(Math.round(left), Math.round(y - (GLYPH_H * scale) / 2), text, color, scale);
}

const INK: RGB = [51, 51, 51];
const GRID: RGB = [230, 230, 230];
const FRAME: RGB = [85, 85, 85];
const MARK: RGB = [150, 150, 150];

/** Images side by side, left to right, on white (each at its own size, aligned at the top). */
export function rastersSideBySide(images: Raster[]): Raster {
  const out = new Raster(images.reduce((w, r) => w + r.width, 0), Math.max(...images.map((r) => r.height)));
  let x0 = 0;
  for (const img of images) {
    for (let y = 0; y < img.height; y++) {
      out.data.set(img.data.subarray(y * img.width * 4, (y + 1) * img.width * 4), (y * out.width + x0) * 4);
    }
    x0 += img.width;
  }
  return out;
}

/** Draws the line chart of `spec` (same layout rules as the SVG) into a new raster of spec.width×spec.height. */
export function renderRaster(spec: ChartSpec): Raster {
  const s = spec.width >= 560 ? 2 : 1; // font scale
  const charW = CELL_W * s, charH = CELL_H * s;
  const img = new Raster(spec.width, spec.height);
  const r = axisRanges(spec);
  const yt = yTicks(spec, r.y, Math.max(3, Math.round(spec.height / 70)));
  const xt = xTicks(spec, r.x, Math.max(3, Math.round(spec.width / 110)));
  const box = plotBox(spec, yt.map((t) => t.label), charW, charH);
  const sc = makeScales(spec, r, box);
  const W = box.right - box.left, H = box.bottom - box.top;

  if (spec.title) label(img, spec.width / 2, charH * 0.9, spec.title, [0, 0, 0], s, "middle");
  label(img, box.left, box.top - charH * 0.7, spec.yLabel + (spec.logY ? " (log scale)" : ""), INK, s);
  label(img, (box.left + box.right) / 2, spec.height - charH * 0.8, spec.xLabel, INK, s, "middle");
  for (const t of yt) {
    const y = Math.round(sc.y(t.value));
    img.fillRect(box.left, y, W, 1, GRID);
    label(img, box.left - charW * 0.6, y, t.label, INK, s, "end");
  }
  for (const t of xt) {
    const x = Math.round(sc.x(t.value));
    img.fillRect(x, box.top, 1, H, GRID);
    label(img, x, box.bottom + charH * 0.9, t.label, INK, s, "middle");
  }
  img.strokeRect(box.left, box.top, W + 1, H + 1, FRAME);

  const marks = visibleMarks(spec, r);
  for (const m of marks.v) {
    const x = Math.round(sc.x(m.at));
    img.polyline([[x + 0.5, box.top], [x + 0.5, box.bottom]], MARK, 1, [2, 3]);
    img.text(x - 2 - GLYPH_H * s, box.top + 4 + textPx(m.label, s), m.label, MARK, s, true);
  }
  const sides = hmarkLabelSides(marks.h.map((m) => sc.y(m.at)), charH);
  marks.h.forEach((m, i) => {
    const y = Math.round(sc.y(m.at));
    img.polyline([[box.left, y + 0.5], [box.right, y + 0.5]], MARK, 1, [6, 3]);
    const x = sides[i] === "start" ? box.left + 4 : box.right - 4 - textPx(m.label, s);
    img.text(x, y - 2 - GLYPH_H * s, m.label, MARK, s);
  });

  const clip = { left: box.left + 1, top: box.top + 1, right: box.right, bottom: box.bottom };
  const lw = 1.2 * s;
  for (const ser of spec.series) {
    const pts = thinPoints(ser.points, sc.x)
      .filter(([x, y]) =>
        Number.isFinite(x) && Number.isFinite(y) && (!spec.logY || y > 0) && (!spec.logX || x > 0)
      )
      .map(([x, y]) => [sc.x(x), sc.y(y)] as [number, number]);
    const color = hexRgb(ser.color);
    const dash: [number, number] | undefined = ser.style === "dashed"
      ? [6 * s, 4 * s]
      : ser.style === "dotted"
      ? [2 * s, 3 * s]
      : undefined;
    if (ser.style !== "none") img.polyline(pts, color, lw, dash, clip);
    if ((ser.dots ?? ser.kind === "val") && pts.length <= 200) {
      for (const [x, y] of pts) img.dot(x, y, (ser.kind === "points" ? 2.5 : 1.5) * s, color);
    }
  }

  if (spec.legend !== false) {
    const entries = legendEntries(spec);
    const anyVal = entries.some((e) => e.hasVal);
    const rows = entries.length + (anyVal ? 1 : 0);
    const valText = "validation (dashed)";
    const lwid = Math.max(...entries.map((e) => textPx(e.run, s)), anyVal ? textPx(valText, s) : 0) +
      40 * s / 2 + 16;
    const rh = charH + 4, lx = box.right - lwid - 8, ly = box.top + 8;
    img.fillRect(lx, ly, lwid, rows * rh + 8, [255, 255, 255]);
    img.strokeRect(lx, ly, lwid, rows * rh + 8, [204, 204, 204]);
    entries.forEach((e, i) => {
      const y = ly + 4 + rh * i + rh / 2;
      img.polyline([[lx + 6, y], [lx + 6 + 14 * s, y]], hexRgb(e.color), 2 * s);
      label(img, lx + 10 + 16 * s, y, e.run, INK, s);
    });
    if (anyVal) {
      const y = ly + 4 + rh * entries.length + rh / 2;
      img.polyline([[lx + 6, y], [lx + 6 + 14 * s, y]], FRAME, lw, [4 * s, 3 * s]);
      label(img, lx + 10 + 16 * s, y, valText, FRAME, s);
    }
  }
  return img;
}
