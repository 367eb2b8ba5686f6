// Tests for `lmpipe viz`: the attention pictures of a tiny GPT (PNG and SVG of the right size, numbers
// behind them: rows sum to 1, zero above the diagonal, layer 0 recomputed independently in plain
// JavaScript from the weights), the activation images of the image models (before/after consistent with
// the sharing: running sum, or attention-weighted sum), and the heatmap grid layout on synthetic data.
import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../cli.ts";
import { saveUntrainedRun } from "./helpers_run.ts";
import { gptFamily } from "../lib/models/gpt.ts";
import { pixelAttnFamily, pixelCumsumFamily } from "../lib/models/pixel.ts";
import type { LanguageModel } from "../lib/models/types.ts";
import { layoutGrid, renderGridRaster, renderGridSvg } from "../lib/plot/heatmap.ts";
import { decodePng } from "../lib/plot/png.ts";
import { initBackend, readData } from "../lib/tensor/backend.ts";
import { attentionGrid, imagesGrid } from "../pipelines/viz/grids.ts";
import { attentionData, imageData, promptTokens } from "../pipelines/viz/mod.ts";

await initBackend("cpu", { quiet: true });

const PROMPT = "The cat sat on the mat.";

async function host(model: LanguageModel, name: string): Promise<Float32Array> {
  return Float32Array.from(await readData(model.params.get(name)!));
}

/** Layer-0 attention of a GPT recomputed from its weights with plain loops (no TF.js). */
async function layer0Attention(model: LanguageModel, ids: number[]): Promise<Float32Array> {
  const c = model.config as unknown as { nEmbd: number; nHead: number };
  const C = c.nEmbd, H = c.nHead, D = C / H, T = ids.length;
  const wte = await host(model, "transformer.wte.weight"), wpe = await host(model, "transformer.wpe.weight");
  const lnW = await host(model, "transformer.h.0.ln_1.weight"),
    lnB = await host(model, "transformer.h.0.ln_1.bias");
  const W = await host(model, "transformer.h.0.attn.c_attn.weight"),
    b = await host(model, "transformer.h.0.attn.c_attn.bias");
  const q = new Float64Array(T * C), k = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    const x = Array.from({ length: C }, (_, i) => wte[ids[t] * C + i] + wpe[t * C + i]);
    const mean = x.reduce((a, v) => a + v, 0) / C;
    const vari = x.reduce((a, v) => a + (v - mean) ** 2, 0) / C;
    const a = x.map((v, i) => ((v - mean) / Math.sqrt(vari + 1e-5)) * lnW[i] + lnB[i]);
    for (let o = 0; o < C; o++) {
      let sq = b[o], sk = b[C + o];
      for (let i = 0; i < C; i++) sq += a[i] * W[i * 3 * C + o], sk += a[i] * W[i * 3 * C + C + o];
      q[t * C + o] = sq, k[t * C + o] = sk;
    }
  }
  const out = new Float32Array(H * T * T);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < T; i++) {
      const s: number[] = [];
      for (let j = 0; j <= i; j++) {
        let d = 0;
        for (let e = 0; e < D; e++) d += q[i * C + h * D + e] * k[j * C + h * D + e];
        s.push(d / Math.sqrt(D));
      }
      const m = Math.max(...s), z = s.reduce((a, v) => a + Math.exp(v - m), 0);
      s.forEach((v, j) => (out[h * T * T + i * T + j] = Math.exp(v - m) / z));
    }
  }
  return out;
}

Deno.test("viz attention: probabilities are causal, sum to 1 per row, and match a plain recomputation", async () => {
  const model = gptFamily.create({ ...gptFamily.presets.tiny }, 7);
  try {
    const { ids } = promptTokens(PROMPT, 24);
    const maps = await attentionData(model, ids);
    const c = model.config as unknown as { nLayer: number; nHead: number };
    assert.equal(maps.length, c.nLayer);
    const T = ids.length;
    for (const m of maps) {
      assert.equal(m.heads, c.nHead);
      for (let h = 0; h < m.heads; h++) {
        for (let i = 0; i < T; i++) {
          let sum = 0;
          for (let j = 0; j < T; j++) {
            const v = m.probs[h * T * T + i * T + j];
            if (j > i) {
              assert.ok(
                Math.abs(v) < 1e-12,
                `${m.name} head ${h}: row ${i} attends to later token ${j} (${v})`,
              );
            }
            sum += v;
          }
          assert.ok(Math.abs(sum - 1) < 1e-5, `${m.name} head ${h} row ${i} sums to ${sum}`);
        }
      }
    }
    const ref = await layer0Attention(model, ids);
    let maxErr = 0;
    for (let i = 0; i < ref.length; i++) maxErr = Math.max(maxErr, Math.abs(ref[i] - maps[0].probs[i]));
    assert.ok(maxErr < 1e-4, `layer 0 differs from the recomputation by ${maxErr}`);
  } finally {
    model.dispose();
  }
});

Deno.test("lmpipe viz attention: PNG and SVG from a checkpoint, grid of layers × heads with token labels", async () => {
  const dir = await Deno.makeTempDir();
  const model = gptFamily.create({ ...gptFamily.presets.tiny }, 3);
  try {
    const run = join(dir, "run");
    await saveUntrainedRun(run, model);
    const png = join(dir, "attn.png"), svg = join(dir, "attn.svg");
    assert.equal(await main(["viz", "attention", "--ckpt", run, "--prompt", PROMPT, "--out", png]), 0);
    const img = decodePng(await Deno.readFile(png));
    const { ids, texts } = promptTokens(PROMPT, 24);
    const maps = await attentionData(model, ids);
    const grid = attentionGrid(texts, maps, `attention of gpt (tiny) in ${run}`);
    const L = layoutGrid(grid);
    assert.deepEqual([img.width, img.height], [L.width, L.height]);
    // the top-left cell of layer 0 head 0 is query 0 attending to key 0: probability 1, the darkest blue
    const [x0, y0] = L.origin[0][0];
    const i = ((y0 + 1) * img.width + x0 + 1) * img.channels;
    assert.deepEqual([img.data[i], img.data[i + 1], img.data[i + 2]], [8, 48, 107]);
    // above the diagonal: probability 0, white
    const j = ((y0 + 1) * img.width + x0 + grid.cellPx * (ids.length - 1) + 1) * img.channels;
    assert.deepEqual([img.data[j], img.data[j + 1], img.data[j + 2]], [255, 255, 255]);

    assert.equal(
      await main(["viz", "attention", "--ckpt", run, "--prompt", PROMPT, "--out", svg, "--layers", "1"]),
      0,
    );
    const text = await Deno.readTextFile(svg);
    const c = model.config as unknown as { nHead: number };
    assert.equal(
      text.match(/<g class="panel"/g)?.length,
      c.nHead,
      "one panel per head of the one layer asked for",
    );
    assert.equal(text.match(/<rect [^>]*><title>/g)?.length, c.nHead * ids.length ** 2);
    assert.ok(text.includes(">·cat<") && text.includes(">block 1<"));
    // errors: gpt has no activation images; unknown picture; bad --out
    assert.equal(await main(["viz", "images", "--ckpt", run, "--prompt", PROMPT, "--out", png]), 2);
    assert.equal(await main(["viz", "saliency", "--ckpt", run]), 2);
    assert.equal(
      await main(["viz", "attention", "--ckpt", run, "--prompt", "x", "--out", join(dir, "a.gif")]),
      2,
    );
    assert.equal(
      await main(["viz", "attention", "--ckpt", join(dir, "none"), "--prompt", "x", "--out", png]),
      3,
    );
  } finally {
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("viz images: pixel-cumsum's images after sharing are the running sum of the tokens' own images", async () => {
  const model = pixelCumsumFamily.create({ ...pixelCumsumFamily.presets.tiny }, 5);
  try {
    const { ids } = promptTokens(PROMPT, 24);
    const a = await imageData(model, ids);
    const cfg = model.config as unknown as { channels: number; imageSize: number; runningSum: string };
    assert.deepEqual([a.T, a.C, a.H, a.W], [ids.length, cfg.channels, cfg.imageSize, cfg.imageSize]);
    const n = a.C * a.H * a.W;
    const run = new Float64Array(n);
    let maxErr = 0, maxAbs = 0;
    for (let t = 0; t < a.T; t++) {
      for (let i = 0; i < n; i++) {
        run[i] += a.before[t * n + i];
        const want = cfg.runningSum === "mean" ? run[i] / (t + 1) : run[i];
        maxErr = Math.max(maxErr, Math.abs(want - a.after[t * n + i]));
        maxAbs = Math.max(maxAbs, Math.abs(want));
      }
    }
    assert.ok(maxAbs > 0, "images are all zero");
    assert.ok(
      maxErr <= 1e-4 * Math.max(1, maxAbs),
      `after differs from the running ${cfg.runningSum} by ${maxErr}`,
    );
  } finally {
    model.dispose();
  }
});

Deno.test("viz images: pixel-attn's images after sharing are the image attention's weighted sums; PNG written", async () => {
  const model = pixelAttnFamily.create({ ...pixelAttnFamily.presets.tiny }, 6);
  const dir = await Deno.makeTempDir();
  try {
    const { ids } = promptTokens(PROMPT, 24);
    const a = await imageData(model, ids);
    const maps = await attentionData(model, ids);
    const img = maps.find((m) => m.name === "image attn");
    assert.ok(img, `no image attention among ${maps.map((m) => m.name)}`);
    assert.equal(img.heads, a.C, "one image-attention head per channel");
    const T = a.T, P = a.H * a.W;
    let maxErr = 0, maxAbs = 0;
    for (let t = 0; t < T; t++) {
      for (let c = 0; c < a.C; c++) {
        for (let p = 0; p < P; p++) {
          let want = 0;
          for (let s = 0; s <= t; s++) {
            want += img.probs[c * T * T + t * T + s] * a.before[(s * a.C + c) * P + p];
          }
          maxErr = Math.max(maxErr, Math.abs(want - a.after[(t * a.C + c) * P + p]));
          maxAbs = Math.max(maxAbs, Math.abs(want));
        }
      }
    }
    assert.ok(maxAbs > 0);
    assert.ok(
      maxErr <= 1e-4 * Math.max(1, maxAbs),
      `after differs from the attention-weighted sum by ${maxErr}`,
    );

    const run = join(dir, "run"), png = join(dir, "images.png");
    await saveUntrainedRun(run, model);
    assert.equal(await main(["viz", "images", "--ckpt", run, "--prompt", PROMPT, "--out", png]), 0);
    const pic = decodePng(await Deno.readFile(png));
    const { texts } = promptTokens(PROMPT, 24);
    const L = layoutGrid(imagesGrid(texts, a, `activation images of pixel-attn (tiny) in ${run}`));
    assert.deepEqual([pic.width, pic.height], [L.width, L.height]);
    let colored = 0;
    for (let i = 0; i < pic.data.length; i += 4) if (pic.data[i] !== pic.data[i + 2]) colored++;
    assert.ok(colored > 1000, "the images are drawn in colour");
  } finally {
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("heatmap grids: image panels per position and channel, before and after, sized as laid out", () => {
  const T = 3, C = 2, H = 4, W = 5;
  const before = Float32Array.from({ length: T * C * H * W }, (_, i) => Math.sin(i));
  const after = before.map((v) => -v);
  const g = imagesGrid(["a", " b", "\n"], { T, C, H, W, before, after, sharing: "running sum" }, "t");
  assert.equal(g.panels.length, T);
  assert.equal(g.panels[0].length, 2 * C);
  // panel (t=1, c=1) of `before` is the slice [1][1] of the [T][C][H][W] array
  assert.deepEqual(
    Array.from(g.panels[1][1]!.values),
    Array.from(before.subarray((1 * C + 1) * H * W, (1 * C + 2) * H * W)),
  );
  assert.deepEqual(
    Array.from(g.panels[2][C]!.values),
    Array.from(after.subarray(2 * C * H * W, (2 * C + 1) * H * W)),
  );
  const L = layoutGrid(g);
  const img = renderGridRaster(g);
  assert.deepEqual([img.width, img.height], [L.width, L.height]);
  const svg = renderGridSvg(g);
  assert.equal(svg.match(/<g class="panel"/g)?.length, T * 2 * C);
  assert.ok(svg.includes("2: \\n"));
});
