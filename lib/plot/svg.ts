// Line charts as SVG text, written directly (no library): axes with nice ticks, optional log y,
// one <path> per series (train solid, validation dashed with dots), budget and reference marks, a legend.
// SVG is what goes into reports: it scales, diffs as text and opens in every browser.
import {
  axisRanges,
  type ChartSpec,
  hmarkLabelSides,
  legendEntries,
  makeScales,
  plotBox,
  thinPoints,
  visibleMarks,
  xTicks,
  yTicks,
} from "./chart.ts";

const FONT = 12; // px
const CHAR_W = 7; // average glyph advance at 12 px sans-serif, for layout

/** Escapes text for SVG content and attribute values. */
export function xmlEscape(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!,
  );
}

const f1 = (v: number) => (Math.round(v * 10) / 10).toString();

/**
 * Charts side by side in one SVG picture (e.g. loss against tokens and against time), each at its own
 * spec's size, left to right.
 */
export function renderSvgPanels(specs: ChartSpec[]): string {
  const W = specs.reduce((w, s) => w + s.width, 0), H = Math.max(...specs.map((s) => s.height));
  const o = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`,
  ];
  let x = 0;
  specs.forEach((spec, i) => {
    const inner = renderSvg(spec, `p${i}-`).replace(/^<\?xml[^>]*>\n/, "");
    o.push(inner.replace(/^<svg /, `<svg x="${x}" y="0" `).trimEnd());
    x += spec.width;
  });
  o.push(`</svg>`);
  return o.join("\n") + "\n";
}

/** The chart as an SVG document; `idPrefix` keeps its element ids unique when panels share a picture. */
export function renderSvg(spec: ChartSpec, idPrefix = ""): string {
  const r = axisRanges(spec);
  const yt = yTicks(spec, r.y, Math.max(3, Math.round(spec.height / 70)));
  const xt = xTicks(spec, r.x, Math.max(3, Math.round(spec.width / 110)));
  const box = plotBox(spec, yt.map((t) => t.label), CHAR_W, FONT + 2);
  const sc = makeScales(spec, r, box);
  const marks = visibleMarks(spec, r);
  const W = spec.width, H = spec.height;
  const o: string[] = [];
  o.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="${FONT}">`,
  );
  o.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  o.push(
    `<defs><clipPath id="${idPrefix}plot-area"><rect x="${box.left}" y="${box.top}" width="${
      box.right - box.left
    }" ` +
      `height="${box.bottom - box.top}"/></clipPath></defs>`,
  );
  if (spec.title) {
    o.push(
      `<text x="${W / 2}" y="${FONT + 6}" text-anchor="middle" font-size="${FONT + 2}" font-weight="bold">` +
        `${xmlEscape(spec.title)}</text>`,
    );
  }
  o.push(
    `<text x="${box.left}" y="${box.top - 8}" fill="#333333">${xmlEscape(spec.yLabel)}${
      spec.logY ? " (log scale)" : ""
    }</text>`,
  );
  o.push(
    `<text x="${(box.left + box.right) / 2}" y="${H - 6}" text-anchor="middle" fill="#333333">${
      xmlEscape(spec.xLabel)
    }</text>`,
  );

  // grid and ticks
  o.push(`<g class="grid" stroke="#e6e6e6" stroke-width="1">`);
  for (const t of yt) {
    o.push(`<line x1="${box.left}" x2="${box.right}" y1="${f1(sc.y(t.value))}" y2="${f1(sc.y(t.value))}"/>`);
  }
  for (const t of xt) {
    o.push(`<line x1="${f1(sc.x(t.value))}" x2="${f1(sc.x(t.value))}" y1="${box.top}" y2="${box.bottom}"/>`);
  }
  o.push(`</g>`);
  o.push(`<g class="axes" fill="#333333">`);
  o.push(
    `<rect x="${box.left}" y="${box.top}" width="${box.right - box.left}" height="${
      box.bottom - box.top
    }" fill="none" stroke="#555555"/>`,
  );
  for (const t of yt) {
    o.push(
      `<text x="${box.left - 6}" y="${f1(sc.y(t.value) + 4)}" text-anchor="end">${xmlEscape(t.label)}</text>`,
    );
  }
  for (const t of xt) {
    o.push(
      `<text x="${f1(sc.x(t.value))}" y="${box.bottom + FONT + 6}" text-anchor="middle">${
        xmlEscape(t.label)
      }</text>`,
    );
  }
  o.push(`</g>`);

  // marks: study budgets (vertical) and reported losses (horizontal)
  o.push(`<g class="marks" font-size="${FONT - 2}" fill="#777777">`);
  for (const m of marks.v) {
    const x = f1(sc.x(m.at));
    o.push(
      `<line class="vmark" x1="${x}" x2="${x}" y1="${box.top}" y2="${box.bottom}" stroke="#999999" stroke-dasharray="2 3"/>`,
    );
    o.push(
      `<text x="${f1(sc.x(m.at) - 3)}" y="${box.top + 4}" text-anchor="end" transform="rotate(-90 ${
        f1(sc.x(m.at) - 3)
      } ${box.top + 4})">${xmlEscape(m.label)}</text>`,
    );
  }
  const sides = hmarkLabelSides(marks.h.map((m) => sc.y(m.at)), FONT);
  marks.h.forEach((m, i) => {
    const y = f1(sc.y(m.at));
    o.push(
      `<line class="hmark" x1="${box.left}" x2="${box.right}" y1="${y}" y2="${y}" stroke="#999999" stroke-dasharray="6 3"/>`,
    );
    const [x, anchor] = sides[i] === "start" ? [box.left + 4, "start"] : [box.right - 4, "end"];
    o.push(`<text x="${x}" y="${f1(sc.y(m.at) - 3)}" text-anchor="${anchor}">${xmlEscape(m.label)}</text>`);
  });
  o.push(`</g>`);

  // curves
  o.push(
    `<g class="series" clip-path="url(#${idPrefix}plot-area)" fill="none" stroke-width="1.6" stroke-linejoin="round">`,
  );
  for (const s of spec.series) {
    if (s.points.length === 0) continue;
    const pts = thinPoints(s.points, sc.x).filter(([x, y]) =>
      Number.isFinite(x) && Number.isFinite(y) && (!spec.logY || y > 0) && (!spec.logX || x > 0)
    );
    const d = pts.map(([x, y], i) => `${i ? "L" : "M"}${f1(sc.x(x))} ${f1(sc.y(y))}`).join("");
    const dash = s.style === "dashed"
      ? ` stroke-dasharray="6 4"`
      : s.style === "dotted"
      ? ` stroke-dasharray="2 3" stroke-width="1.2"`
      : "";
    if (s.style !== "none") {
      o.push(`<path class="${s.kind}" data-run="${xmlEscape(s.run)}" stroke="${s.color}"${dash} d="${d}"/>`);
    }
    if ((s.dots ?? s.kind === "val") && pts.length <= 200) {
      for (const [x, y] of pts) {
        o.push(`<circle cx="${f1(sc.x(x))}" cy="${f1(sc.y(y))}" r="2.5" fill="${s.color}" stroke="none"/>`);
      }
    }
  }
  o.push(`</g>`);

  if (spec.legend !== false) {
    // legend, top right inside the plot
    const entries = legendEntries(spec);
    const anyVal = entries.some((e) => e.hasVal);
    const rows = entries.length + (anyVal ? 1 : 0);
    const lw = Math.max(...entries.map((e) => e.run.length), anyVal ? 19 : 0) * CHAR_W + 40;
    const lx = box.right - lw - 8, ly = box.top + 8, rh = FONT + 6;
    o.push(`<g class="legend">`);
    o.push(
      `<rect x="${lx}" y="${ly}" width="${lw}" height="${
        rows * rh + 8
      }" fill="#ffffff" fill-opacity="0.85" stroke="#cccccc"/>`,
    );
    entries.forEach((e, i) => {
      const y = ly + 4 + rh * i + rh / 2;
      o.push(
        `<line x1="${lx + 6}" x2="${lx + 28}" y1="${y}" y2="${y}" stroke="${e.color}" stroke-width="2"/>`,
      );
      o.push(`<text x="${lx + 34}" y="${y + 4}">${xmlEscape(e.run)}</text>`);
    });
    if (anyVal) {
      const y = ly + 4 + rh * entries.length + rh / 2;
      o.push(
        `<line x1="${lx + 6}" x2="${
          lx + 28
        }" y1="${y}" y2="${y}" stroke="#555555" stroke-width="1.6" stroke-dasharray="6 4"/>`,
      );
      o.push(`<text x="${lx + 34}" y="${y + 4}" fill="#555555">validation (dashed)</text>`);
    }
    o.push(`</g>`);
  }
  o.push(`</svg>`);
  return o.join("\n") + "\n";
}
