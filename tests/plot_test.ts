// Tests for the loss-curve pictures: SVG structure (one path per run and kind, sizes, marks), PNG
// decoded back (size, non-blank, curve colours present), terminal width limits, log reading and resume
// de-duplication, tick maths, and the `lmpipe plot` command end to end through cli.ts.
import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../cli.ts";
import { type ChartSpec, hexRgb, linearTicks, logTicks, PALETTE, timeTicks } from "../lib/plot/chart.ts";
import { decodePng, encodePng } from "../lib/plot/png.ts";
import { Raster, rastersSideBySide, renderRaster } from "../lib/plot/raster.ts";
import { dedupeResumed, lossChart, parseLog, readRun, type RunLog, xValues } from "../lib/plot/runs.ts";
import { renderSvg, renderSvgPanels } from "../lib/plot/svg.ts";
import { renderTerm, visibleWidth } from "../lib/plot/term.ts";

function fakeRun(name: string, final: number, steps = 120, evalEvery = 20): RunLog {
  const records = [];
  for (let s = 0; s < steps; s++) {
    const loss = final + (10.8 - final) * Math.exp(-s / 30) + 0.05 * Math.sin(s);
    const rec: Record<string, number> = { step: s, loss, tokens: (s + 1) * 512, elapsed_s: s * 0.25 };
    if (s % evalEvery === 0 || s === steps - 1) rec.val_loss = loss + 0.1;
    records.push(rec);
  }
  return { name, path: `${name}.jsonl`, records: records as RunLog["records"] };
}

/** A minimal XML well-formedness check: every tag closes in order, attributes are quoted. */
function assertWellFormed(xml: string): void {
  const body = xml.replace(/^<\?xml[^>]*\?>\s*/, "");
  const stack: string[] = [];
  const tagRe = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|<|>/g;
  let m: RegExpExecArray | null;
  while ((m = tagRe.exec(body)) !== null) {
    if (m[0] === "<" || m[0] === ">") {
      throw new Error(`stray '${m[0]}' at ${m.index}: ${body.slice(m.index - 40, m.index + 40)}`);
    }
    const [, close, name, , self] = m;
    if (self) continue;
    if (close) assert.equal(stack.pop(), name, `closing </${name}> at ${m.index}`);
    else stack.push(name);
  }
  assert.deepEqual(stack, [], "unclosed tags");
  assert.match(body, /^<svg /);
}

Deno.test("ticks: nice linear, log and time ticks", () => {
  assert.deepEqual(linearTicks({ min: 0, max: 100 }, 5), [0, 20, 40, 60, 80, 100]);
  assert.deepEqual(linearTicks({ min: 3.1, max: 4.9 }, 4), [3.5, 4, 4.5]);
  assert.deepEqual(logTicks({ min: 0.5, max: 30 }, 5), [0.5, 1, 2, 5, 10, 20]);
  assert.deepEqual(logTicks({ min: 3, max: 11 }, 5), [4, 6, 8, 10]);
  assert.deepEqual(timeTicks({ min: 0, max: 3600 }, 4), [0, 900, 1800, 2700, 3600]);
});

Deno.test("log reading: resumed runs keep the latest record of each step; bad lines are named", () => {
  const text = [
    `{"event":"start"}`,
    `{"step":0,"loss":10}`,
    `{"step":1,"loss":9}`,
    `{"step":2,"loss":8.5}`,
    `{"step":1,"loss":9.1}`, // resumed from the checkpoint at step 1
    `{"step":2,"loss":8.4,"val_loss":8.6}`,
    `{"step":3,"lo`, // still being written
  ].join("\n");
  const recs = parseLog(text, "run/log.jsonl");
  assert.deepEqual(recs.map((r) => [r.step, r.loss]), [[0, 10], [1, 9.1], [2, 8.4]]);
  assert.equal(recs[2].val_loss, 8.6);
  assert.throws(
    () => parseLog(`{"step":0}\nnot json\n{"step":1}`, "x.jsonl"),
    /x\.jsonl:2: not a JSON object/,
  );
  assert.deepEqual(dedupeResumed([{ step: 5, loss: 1 }, { step: 5, val_loss: 2 }]), [{
    step: 5,
    loss: 1,
    val_loss: 2,
  }]);
  // per-step token counts become a running total; cumulative ones are kept
  assert.deepEqual(
    xValues([{ step: 0, tokens: 10 }, { step: 1, tokens: 10 }, { step: 2, tokens: 10 }], "tokens"),
    [10, 20, 30],
  );
  assert.deepEqual(xValues([{ step: 0, tokens: 10 }, { step: 1, tokens: 20 }], "tokens"), [10, 20]);
  assert.throws(() => xValues([{ step: 0 }], "time"), /elapsed_s/);
});

function chart(runs: RunLog[], extra: Partial<Parameters<typeof lossChart>[1]> = {}): ChartSpec {
  return lossChart(runs, { axis: "step", logY: false, width: 640, height: 400, studyMarks: true, ...extra });
}

Deno.test("svg: well-formed, sized, one train path and one val path per run, legend and marks", () => {
  const runs = [fakeRun("gpt", 4), fakeRun("pixel-attn", 6), fakeRun("a<b&c", 7)];
  const svg = renderSvg(chart(runs, { title: `runs "x" & <y>` }));
  assertWellFormed(svg);
  assert.match(svg, /<svg [^>]*width="640" height="400"/);
  assert.equal(svg.match(/<path class="train"/g)?.length, 3);
  assert.equal(svg.match(/<path class="val"/g)?.length, 3);
  for (const r of ["gpt", "pixel-attn", "a&lt;b&amp;c"]) assert.ok(svg.includes(`data-run="${r}"`), r);
  // each train path has one point per step
  const d = /<path class="train" data-run="gpt"[^>]* d="([^"]+)"/.exec(svg)![1];
  assert.equal(d.split(/[ML]/).filter(Boolean).length, 120);
  // study losses inside the y range (4.50, 4.73, 6.46) are drawn; 3.198 is below the data and is not
  assert.equal(svg.match(/class="hmark"/g)?.length, 3);
  assert.ok(svg.includes("study cumsum 6.46") && !svg.includes("study gpt 3.198"));
  // vertical marks only on a time axis and only when in range
  const timed = renderSvg(chart(runs, { axis: "time", vmarks: [{ at: 10, label: "budget 10s" }] }));
  assert.equal(timed.match(/class="vmark"/g)?.length, 1);
  assert.ok(timed.includes("budget 10s") && !timed.includes("study: gpt 4h"));
  const noMarks = renderSvg(chart(runs, { studyMarks: false }));
  assert.equal(noMarks.match(/class="hmark"/g), null);
});

Deno.test("svg: log scale maps the data monotonically and keeps every point inside the plot", () => {
  const svg = renderSvg(chart([fakeRun("gpt", 4)], { logY: true }));
  assertWellFormed(svg);
  const d = /<path class="train"[^>]* d="([^"]+)"/.exec(svg)![1];
  const pts = d.split(/[ML]/).filter(Boolean).map((p) => p.split(" ").map(Number));
  const box = /<clipPath id="plot-area"><rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"/
    .exec(svg)!
    .slice(1).map(Number);
  for (const [x, y] of pts) {
    assert.ok(
      x >= box[0] - 0.1 && x <= box[0] + box[2] + 0.1 && y >= box[1] - 0.1 && y <= box[1] + box[3] + 0.1,
    );
  }
  assert.ok(pts[0][1] < pts[pts.length - 1][1], "higher loss is drawn higher up");
});

Deno.test("png: decodes to the requested size, is not blank, and shows each run's colour", () => {
  const runs = [fakeRun("gpt", 4), fakeRun("pixel-attn", 6)];
  const bytes = encodePng(renderRaster(chart(runs, { width: 500, height: 300 })));
  const img = decodePng(bytes);
  assert.equal(img.width, 500);
  assert.equal(img.height, 300);
  assert.equal(img.channels, 4);
  const counts = new Map<string, number>();
  let nonWhite = 0;
  for (let i = 0; i < img.data.length; i += 4) {
    const key = `${img.data[i]},${img.data[i + 1]},${img.data[i + 2]}`;
    if (key !== "255,255,255") nonWhite++;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  assert.ok(nonWhite > 2000, `only ${nonWhite} non-white pixels`);
  for (const c of PALETTE.slice(0, 2)) {
    assert.ok((counts.get(hexRgb(c).join(",")) ?? 0) > 100, `colour ${c} barely present`);
  }
  assert.equal(counts.get(hexRgb(PALETTE[2]).join(",")) ?? 0, 0, "a third run's colour with two runs");
});

Deno.test("raster: lines, text and clipping land where asked", () => {
  const img = new Raster(40, 20);
  img.polyline([[0, 10.5], [40, 10.5]], [0, 0, 0], 1, undefined, { left: 10, top: 0, right: 30, bottom: 20 });
  assert.deepEqual(img.get(5, 10), [255, 255, 255], "clipped away");
  assert.deepEqual(img.get(20, 10), [0, 0, 0]);
  img.text(1, 1, "1", [255, 0, 0]);
  // the digit 1's stem is the middle column of its 5×7 cell
  assert.deepEqual(img.get(3, 3), [255, 0, 0]);
  assert.deepEqual(img.get(1, 3), [255, 255, 255]);
});

Deno.test("term: fits the width, draws braille curves, a legend and axis labels", () => {
  const spec = chart([fakeRun("gpt", 4), fakeRun("pixel-cumsum", 6.6)]);
  for (const width of [40, 80, 133]) {
    for (const color of [false, true]) {
      const text = renderTerm(spec, { width, height: 16, color });
      const lines = text.trimEnd().split("\n");
      assert.equal(lines.length, 16);
      for (const l of lines) assert.ok(visibleWidth(l) <= width, `line wider than ${width}: '${l}'`);
      assert.match(text, /[\u2801-\u28ff]/);
      assert.ok(text.includes("gpt"));
      assert.ok(text.includes("step"));
      if (color) assert.ok(text.includes("\x1b[34m"));
      else assert.ok(!text.includes("\x1b["));
    }
  }
});

Deno.test("lmpipe plot: writes SVG and PNG from run folders and logs; errors name the fix", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const runDir = join(dir, "gpt-run");
    await Deno.mkdir(runDir);
    const lines = (r: RunLog) => r.records.map((x) => JSON.stringify(x)).join("\n") + "\n";
    await Deno.writeTextFile(join(runDir, "log.jsonl"), lines(fakeRun("x", 4)));
    await Deno.writeTextFile(join(dir, "other.jsonl"), lines(fakeRun("y", 6)));
    const svgPath = join(dir, "loss.svg"), pngPath = join(dir, "loss.png");
    assert.equal(
      await main(["plot", runDir, join(dir, "other.jsonl"), "--x", "tokens", "--out", svgPath]),
      0,
    );
    const svg = await Deno.readTextFile(svgPath);
    assertWellFormed(svg);
    assert.ok(svg.includes(`data-run="gpt-run"`) && svg.includes(`data-run="other"`));
    assert.ok(svg.includes("tokens seen"));
    assert.equal(
      await main([
        "plot",
        runDir,
        "--x",
        "time",
        "--log-scale",
        "--out",
        pngPath,
        "--width",
        "320",
        "--height",
        "200",
      ]),
      0,
    );
    const png = decodePng(await Deno.readFile(pngPath));
    assert.deepEqual([png.width, png.height], [320, 200]);
    assert.equal((await readRun(runDir)).name, "gpt-run");
    // bad inputs: usage and input errors with exit codes 2 and 3
    assert.equal(await main(["plot", runDir, "--out", join(dir, "loss.jpg")]), 2);
    assert.equal(await main(["plot", runDir, "--x", "epochs", "--out", svgPath]), 2);
    assert.equal(await main(["plot", join(dir, "missing"), "--out", svgPath]), 3);
    await Deno.mkdir(join(dir, "empty-run"));
    assert.equal(await main(["plot", join(dir, "empty-run"), "--out", svgPath]), 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lmpipe plot -: reads a step log from stdin and draws it on the terminal", async () => {
  const log = fakeRun("x", 5).records.map((r) => JSON.stringify(r)).join("\n") + "\n";
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../cli.ts", import.meta.url).pathname,
      "plot",
      "-",
      "--width",
      "50",
      "--height",
      "12",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(log));
  await w.close();
  const out = await child.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(text.trimEnd().split("\n").length, 12);
  assert.match(text, /[\u2801-\u28ff]/);
  assert.ok(text.includes("stdin"));
});

Deno.test("svg panels and side-by-side rasters: one picture, each chart at its place, unique clip ids", () => {
  const runs = [fakeRun("gpt", 4), fakeRun("pixel-attn", 6)];
  const left = chart(runs, { axis: "tokens", width: 400, height: 300 });
  const right = chart(runs, { axis: "time", width: 500, height: 300 });
  const svg = renderSvgPanels([left, right]);
  assertWellFormed(svg);
  assert.match(svg, /^<\?xml[^>]*>\n<svg [^>]*width="900" height="300"/);
  assert.match(svg, /<svg x="0" y="0" [^>]*width="400"/);
  assert.match(svg, /<svg x="400" y="0" [^>]*width="500"/);
  assert.ok(svg.includes(`id="p0-plot-area"`) && svg.includes(`url(#p1-plot-area)`));
  assert.equal(svg.match(/<path class="train"/g)?.length, 4);
  const a = renderRaster(left), b = renderRaster(right), both = rastersSideBySide([a, b]);
  assert.equal(both.width, 900);
  assert.equal(both.height, 300);
  for (const [x, y] of [[10, 10], [200, 150], [399, 299]]) assert.deepEqual(both.get(x, y), a.get(x, y));
  for (const [x, y] of [[0, 10], [250, 150], [499, 299]]) assert.deepEqual(both.get(400 + x, y), b.get(x, y));
});

Deno.test("svg: a log x axis over decades, points without a line, dotted bands", () => {
  const spec: ChartSpec = {
    width: 600,
    height: 400,
    xAxis: "flops",
    xLabel: "training FLOPs",
    yLabel: "val loss",
    logY: false,
    logX: true,
    series: [
      {
        label: "m",
        run: "m",
        color: PALETTE[0],
        style: "none",
        kind: "points",
        dots: true,
        points: [[1e12, 5], [1e13, 4], [1e14, 3.5]],
      },
      {
        label: "m fit",
        run: "m",
        color: PALETTE[0],
        style: "solid",
        kind: "fit",
        points: [[1e12, 5], [1e14, 3.5]],
      },
      {
        label: "m band",
        run: "m",
        color: PALETTE[0],
        style: "dotted",
        kind: "band",
        points: [[1e12, 5.1], [1e14, 3.6]],
      },
    ],
    vmarks: [],
    hmarks: [],
  };
  const svg = renderSvg(spec);
  assertWellFormed(svg);
  assert.equal(svg.match(/<path class="points"/g), null, "no line through measured points");
  assert.equal(svg.match(/<path class="fit"/g)?.length, 1);
  assert.match(svg, /<path class="band"[^>]*stroke-dasharray="2 3"/);
  const dots = [...svg.matchAll(/<circle cx="([\d.]+)"/g)].map((m) => Number(m[1]));
  assert.equal(dots.length, 3);
  // equal decades are equal distances on a log axis
  assert.ok(Math.abs((dots[1] - dots[0]) - (dots[2] - dots[1])) < 0.2, `${dots}`);
  for (const t of ["1e12", "1e13", "1e14"]) assert.ok(svg.includes(`>${t}</text>`), t);
});
