// Tests of the per-position CNNs (lib/models/cnn.ts): shapes and parameter counts of the study's
// layouts, per-image independence (nothing mixes positions), a finite-difference gradient check,
// checkpointed chunks equal to the plain pass (outputs and gradients), and backends against cpu.
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { assertClose, randomArray, testBackends } from "../lib/tensor/testing.ts";
import {
  cnnCheckpointed,
  type CnnConfig,
  cnnFlopsPerImage,
  cnnForward,
  cnnOutWidth,
  cnnParamCount,
  cnnParamSpecs,
} from "../lib/models/cnn.ts";
import { imageNormRelu, imageNormReluByOps } from "../lib/tensor/ops/image_norm/mod.ts";
import { IMAGE_NORM_KERNEL, LAYER_NORM_KERNEL } from "../lib/tensor/kernel_names.ts";
import { setWasmImageNormEnabled } from "../lib/tensor/ops/image_norm/wasm.ts";
import { boundary } from "../lib/precision.ts";
import { refHalf } from "./helpers_round.ts";
import { conv64 } from "./helpers_conv.ts";

function makeParams(cfg: CnnConfig, seed: number): Map<string, tf.Variable> {
  const m = new Map<string, tf.Variable>();
  cnnParamSpecs(cfg).forEach((s, i) => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const r = randomArray(n, seed + i);
    const init = s.init;
    const vals = init.kind === "normal"
      ? r.map((v) => v * init.std * 1.7) // uniform with the init's standard deviation
      : r.map((v) => (s.init.kind === "ones" ? 1 : 0) + 0.1 * v); // non-trivial norm affine
    const init0 = tf.tensor(vals, s.shape);
    m.set(s.name, tf.variable(init0, true, `${s.name}_${seed}_${Math.random()}`));
    init0.dispose(); // the variable keeps its own reference to the values
  });
  return m;
}

const tinyVgg: CnnConfig = {
  kind: "vgg9",
  inChannels: 3,
  height: 5,
  width: 4,
  baseWidth: 4,
  depth: 3,
  norm: "image",
};
const tinyRes: CnnConfig = { ...tinyVgg, kind: "resnet", height: 6, width: 6, baseWidth: 2, depth: 1 };

Deno.test("cnn: the study's layouts have the documented widths and parameter counts", () => {
  const vgg9: CnnConfig = {
    kind: "vgg9",
    inChannels: 8,
    height: 20,
    width: 20,
    baseWidth: 64,
    depth: 9,
    norm: "image",
  };
  // 3x3x8x64 + 8 x 3x3x64x64 conv weights, plus a scale and shift per channel after each conv
  assert.equal(cnnParamCount(vgg9), 9 * 8 * 64 + 8 * 9 * 64 * 64 + 9 * 128);
  assert.equal(cnnOutWidth(vgg9), 64);
  assert.equal(cnnFlopsPerImage(vgg9), 2 * 400 * (9 * 8 * 64 + 8 * 9 * 64 * 64));
  const wide: CnnConfig = { ...vgg9, kind: "vgg-wide" };
  assert.equal(cnnOutWidth(wide), 256);
  const convs = cnnParamSpecs(wide).filter((s) => s.name.endsWith(".w")).map((s) => s.shape);
  assert.deepEqual(
    convs.map((s) => `${s[2]}->${s[3]}`),
    [
      "8->64",
      "64->64",
      "64->64",
      "64->64",
      "64->128",
      "128->128",
      "128->128",
      "128->128",
      "128->128",
      "128->128",
      "128->256",
    ],
  );
  const res: CnnConfig = { ...vgg9, kind: "resnet", depth: 0 };
  assert.equal(cnnOutWidth(res), 1024);
  const skips = cnnParamSpecs(res).filter((s) => s.name.endsWith(".skip")).map((s) =>
    `${s.shape[2]}->${s.shape[3]}`
  );
  assert.deepEqual(skips, ["64->128", "128->512", "512->1024"]);
  const none: CnnConfig = { ...vgg9, norm: "none" };
  assert.ok(cnnParamSpecs(none).every((s) => !s.name.includes("norm")));
  assert.equal(cnnParamCount(none), 9 * 8 * 64 + 8 * 9 * 64 * 64 + 9 * 64);
});

// PyTorch's count of the study's Resnet3(8, 50304) (model_resnet.py, rebuilt layer by layer and checked
// against the study's own class): conv1 4,800 + block1 452,096 + block2 3,904,000 + block3 28,848,128
// (BatchNorm's 18,560 included), fc 51,561,600 (1024 x 50304 weights + 50304 biases); total 84,770,624.
// Printed by: /usr/bin/python3 bench/torch_resnet3_count.py --study-repo DIR (resnet3.cnn_without_fc, .by_child).
const TORCH_RESNET3_WITHOUT_FC = 33_209_024;
const TORCH_RESNET3_FC_WEIGHT = 1024 * 50304;

Deno.test("cnn: resnet is the study's Resnet3 (PyTorch's parameter count, 12 blocks, widths, strides)", () => {
  const res: CnnConfig = {
    kind: "resnet",
    inChannels: 8,
    height: 20,
    width: 20,
    baseWidth: 64,
    depth: 0, // the study's: 4 blocks per stage
    norm: "image",
  };
  // the image norm's scale and shift stand where BatchNorm's weight and bias were: the same count
  assert.equal(cnnParamCount(res), TORCH_RESNET3_WITHOUT_FC);
  const specs = cnnParamSpecs(res);
  const count = (prefix: string) =>
    specs.filter((s) => s.name.startsWith(prefix)).reduce(
      (n, s) => n + s.shape.reduce((a, b) => a * b, 1),
      0,
    );
  // PyTorch's per-child counts: conv1, block1, block2, block3
  assert.deepEqual(
    [count("cnn.stem."), count("cnn.s0."), count("cnn.s1."), count("cnn.s2.")],
    [4800, 452096, 3904000, 28848128],
  );
  const blocks = new Set(
    specs.map((s) => s.name.split(".").slice(0, 3).join(".")).filter((n) => /\.b\d+$/.test(n)),
  );
  assert.equal(blocks.size, 12);
  assert.equal(cnnOutWidth(res), 1024);
  assert.equal(cnnOutWidth(res) * 50304, TORCH_RESNET3_FC_WEIGHT);
  // widening blocks are the last of each stage; their first conv and skip have stride 2 (FLOPs show it):
  // stem 18x18, stage 0 at 18x18 then 9x9, stage 1 at 9x9 then 5x5, stage 2 at 5x5 then 3x3
  const c = (px: number, i: number, o: number, k: number) => 2 * px * k * k * i * o;
  const stage = (pIn: number, pOut: number, w: number, wNext: number) =>
    3 * (c(pIn, w, w, 3) + c(pIn, w, w, 3)) + c(pOut, w, wNext, 3) + c(pOut, wNext, wNext, 3) +
    c(pOut, w, wNext, 1);
  assert.equal(
    cnnFlopsPerImage(res),
    c(18 * 18, 8, 64, 3) + stage(18 * 18, 81, 64, 128) + stage(81, 25, 128, 512) + stage(25, 9, 512, 1024),
  );
  // an explicit depth still gives that many blocks per stage
  assert.equal(cnnParamSpecs({ ...res, depth: 1 }).filter((s) => s.name.endsWith(".conv1")).length, 3);
});

/** A float64 conv with PyTorch's semantics: NHWC input, HWIO weights, `pad` zeros on every side, a bias. */
function convRef(
  x: Float64Array,
  [n, h, w, ci]: number[],
  weights: Float32Array,
  k: number,
  co: number,
  stride: number,
  pad: number,
  bias: Float32Array,
): { y: Float64Array; shape: number[] } {
  const oh = Math.floor((h + 2 * pad - k) / stride) + 1, ow = Math.floor((w + 2 * pad - k) / stride) + 1;
  const layout = { n, h, w, ci, co, kh: k, kw: k, sh: stride, sw: stride, pt: pad, pl: pad, oh, ow };
  const { y } = conv64(layout, x, weights);
  for (let i = 0; i < y.length; i++) y[i] += bias[i % co];
  return { y, shape: [n, oh, ow, co] };
}

/** A small resnet on 8x8 RGB images, norm "none" (every conv has a bias), `depth` blocks a stage. */
function resnet8x8(depth: number): CnnConfig {
  return { kind: "resnet", inChannels: 3, height: 8, width: 8, baseWidth: 2, depth, norm: "none" };
}

type Ref = { y: Float64Array; shape: number[] };

/**
 * The study's Resnet3 in float64 (norm "none": every conv has a bias), `depth` blocks a stage, the last one
 * stride 2 with a 1x1 shortcut. `round` is applied where autocast holds 16-bit values (each conv's input and
 * output), `roundOut` to the conv outputs only; both identity for fp32.
 */
function resnetRef(
  p: Map<string, tf.Variable>,
  input: Float64Array,
  shape: number[],
  depth: number,
  round = (t: Ref) => t,
  roundOut = round,
): Ref {
  const w = (n: string) => p.get(n)!.dataSync() as Float32Array;
  const conv = (x: Ref, name: string, stride: number, pad: number) => {
    const ws = p.get(name)!.shape as number[];
    return roundOut(convRef(x.y, x.shape, w(name), ws[0], ws[3], stride, pad, w(`${name}.bias`)));
  };
  const relu = (t: Ref) => ({ y: t.y.map((v) => Math.max(0, v)), shape: t.shape });
  let x = round(conv({ y: input, shape }, "cnn.stem.w", 1, 0));
  for (let s = 0; s < 3; s++) {
    for (let b = 0; b < depth; b++) {
      const pre = `cnn.s${s}.b${b}`, last = b === depth - 1, stride = last ? 2 : 1;
      const h = conv(round(relu(conv(x, `${pre}.conv1`, stride, 1))), `${pre}.conv2`, 1, 1);
      const skip = last ? conv(x, `${pre}.skip`, 2, 0) : x;
      x = round(relu({ y: h.y.map((v, i) => v + skip.y[i]), shape: h.shape }));
    }
  }
  return x;
}

Deno.test("cnn: resnet pads as the study's PyTorch code (unpadded stem, padding 1, 1x1 skips) against float64", async () => {
  await initBackend("cpu", { quiet: true });
  // 8x8 images: stem 6x6, the stride-2 convs at an even size (6 -> 3, where 'same' padding would sample
  // other rows), then 3 -> 2 -> 1; norm "none" so every conv has a bias and nothing else intervenes
  const cfg = resnet8x8(2);
  const p = makeParams(cfg, 31);
  const N = 2, shape = [N, 8, 8, 3];
  const input = randomArray(N * 8 * 8 * 3, 32);
  const got = await cnnForward(cfg, p, tf.tensor4d(input, shape as [number, number, number, number])).data();
  const x = resnetRef(p, Float64Array.from(input), shape, 2);
  assert.deepEqual(x.shape, [N, 1, 1, 32]);
  assertClose(got, Float32Array.from(x.y), 1e-5, "resnet forward");
  p.forEach((v) => v.dispose());
});

Deno.test("cnn: under mixed precision every conv's input and output are binary16, as autocast's (resnet, float64 reference)", async () => {
  await initBackend("cpu", { quiet: true });
  // The resnet of the test above, with the training loop's mixed-precision boundary. Autocast runs each
  // conv in 16 bits: its input and its output are binary16 (the norm or ReLU after it reads the binary16
  // output); additions stay float32 and are rounded where they enter the next conv. The reference rounds
  // by hand at those places; without the rounding of the conv outputs it moves by a rounding's size.
  const cfg = resnet8x8(1);
  const p = makeParams(cfg, 41);
  const N = 8, shape = [N, 8, 8, 3];
  const input = randomArray(N * 8 * 8 * 3, 42).map(refHalf);
  const got = tf.tidy(() =>
    cnnForward(
      cfg,
      p,
      tf.tensor4d(input, shape as [number, number, number, number]),
      (t) => boundary(t, "mixed"),
    )
      .dataSync()
  );
  const r = (t: Ref) => ({ y: t.y.map((v) => refHalf(Math.fround(v))), shape: t.shape });
  const reference = (roundConvOutputs: boolean) =>
    resnetRef(p, Float64Array.from(input), shape, 1, r, roundConvOutputs ? r : (t) => t).y;
  const want = reference(true), unrounded = reference(false);
  const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    let m = 0;
    for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / (Math.abs(b[i]) + 1e-3));
    return m;
  };
  const err = maxDiff(got, want), away = maxDiff(unrounded, want);
  // float32 sums inside the convs can tip a value over a binary16 rounding threshold, rarely
  assert.ok(
    away > 1e-4 && err < away / 10,
    `mixed resnet: ${err} from the rounded reference, unrounded ${away}`,
  );
  p.forEach((v) => v.dispose());
});

Deno.test("cnn: every image is read on its own (changing one image changes only its own features)", async () => {
  await initBackend("cpu", { quiet: true });
  for (const cfg of [tinyVgg, tinyRes]) {
    const p = makeParams(cfg, 1);
    const N = 5, size = N * cfg.height * cfg.width * cfg.inChannels;
    const a = randomArray(size, 3), b = a.slice();
    const per = size / N;
    for (let i = 2 * per; i < 3 * per; i++) b[i] += 0.5 * Math.sin(i); // change image 2 only
    const shape = [N, cfg.height, cfg.width, cfg.inChannels];
    const ya = await cnnForward(cfg, p, tf.tensor4d(a, shape as [number, number, number, number])).array();
    const yb = await cnnForward(cfg, p, tf.tensor4d(b, shape as [number, number, number, number])).array();
    for (let n = 0; n < N; n++) {
      const same = ya[n].every((v, j) => v === yb[n][j]);
      assert.equal(same, n !== 2, `${cfg.kind}: image ${n} ${n === 2 ? "should" : "should not"} change`);
    }
    p.forEach((v) => v.dispose());
  }
});

/** loss(images, params) = sum(cnn(images) * R) for a fixed random R. */
function lossFn(cfg: CnnConfig, N: number, chunk: number) {
  const R = tf.tensor2d(randomArray(N * cnnOutWidth(cfg), 99), [N, cnnOutWidth(cfg)]);
  return (imgs: tf.Tensor, p: Map<string, tf.Tensor>) =>
    tf.sum(tf.mul(cnnCheckpointed(cfg, p, imgs as tf.Tensor4D, chunk), R)) as tf.Scalar;
}

Deno.test("cnn: gradients match finite differences (vgg and resnet, image norm)", async () => {
  await initBackend("cpu", { quiet: true });
  for (const cfg of [tinyVgg, tinyRes]) {
    const N = 3;
    const p = makeParams(cfg, 5);
    const shape = [N, cfg.height, cfg.width, cfg.inChannels] as [number, number, number, number];
    const imgs = tf.variable(tf.tensor4d(randomArray(N * cfg.height * cfg.width * cfg.inChannels, 7), shape));
    const f = lossFn(cfg, N, 0);
    const vars = [imgs, ...p.values()];
    const { grads } = tf.variableGrads(() => f(imgs, p), vars);
    // directional derivative along a random direction over all variables, in float64 arithmetic
    const dirs = vars.map((v, i) => randomArray(v.size, 1000 + i));
    let analytic = 0;
    vars.forEach((v, i) => {
      const g = grads[v.name].dataSync();
      for (let j = 0; j < g.length; j++) analytic += g[j] * dirs[i][j];
    });
    const orig = vars.map((v) => v.dataSync().slice());
    const at = (eps: number) => {
      vars.forEach((v, i) => v.assign(tf.tensor(orig[i].map((x, j) => x + eps * dirs[i][j]), v.shape)));
      return f(imgs, p).dataSync()[0];
    };
    const eps = 1e-3;
    const numeric = (at(eps) - at(-eps)) / (2 * eps);
    vars.forEach((v, i) => v.assign(tf.tensor(orig[i], v.shape)));
    const rel = Math.abs(numeric - analytic) / Math.max(1e-6, Math.abs(analytic));
    assert.ok(rel < 2e-2, `${cfg.kind}: finite difference ${numeric} vs gradient ${analytic} (rel ${rel})`);
    vars.forEach((v) => v.dispose());
  }
});

async function gradsOf(cfg: CnnConfig, N: number, chunk: number, keep = false, keepNorms = false) {
  const p = makeParams(cfg, 11);
  const shape = [N, cfg.height, cfg.width, cfg.inChannels] as [number, number, number, number];
  const imgs = tf.tidy(() =>
    tf.variable(tf.tensor4d(randomArray(N * cfg.height * cfg.width * cfg.inChannels, 13), shape))
  );
  const R = tf.tensor2d(randomArray(N * cnnOutWidth(cfg), 99), [N, cnnOutWidth(cfg)]);
  const f = (x: tf.Tensor, q: Map<string, tf.Tensor>) =>
    tf.sum(
      tf.mul(cnnCheckpointed(cfg, q, x as tf.Tensor4D, chunk, undefined, keep, keepNorms), R),
    ) as tf.Scalar;
  const vars = [imgs, ...p.values()];
  const { value, grads } = tf.variableGrads(() => f(imgs, p), vars);
  const out = [await value.data(), ...(await Promise.all(vars.map((v) => grads[v.name].data())))];
  tf.dispose([value, R, ...Object.values(grads), ...vars]);
  return out as Float32Array[];
}

Deno.test("cnn: checkpointed chunks give the plain pass's outputs and gradients, without leaking tensors", async () => {
  await initBackend("cpu", { quiet: true });
  for (const cfg of [tinyVgg, tinyRes]) {
    const plain = await gradsOf(cfg, 7, 0);
    const before = tf.memory().numTensors;
    const chunked = await gradsOf(cfg, 7, 3); // chunks of 3, 3, 1 images
    assert.equal(tf.memory().numTensors, before, "tensors leaked by the checkpointed pass");
    plain.forEach((a, i) => assertClose(chunked[i], a, 1e-5, `${cfg.kind} tensor ${i}`));
  }
});

Deno.test("cnn: kept conv and norm outputs replace the backward pass's second forward: same outputs and gradients, convs and norms run once, no leaks", async () => {
  for (const be of ["cpu", "wasm"] as const) {
    await initBackend(be, { quiet: true });
    for (const cfg of [tinyVgg, tinyRes]) {
      const convs = cnnParamSpecs(cfg).filter((s) => s.shape.length === 4).length; // each has its norm
      const counted = async (keep: boolean, keepNorms = false) => {
        const before = tf.memory().numTensors;
        let out: Float32Array[] = [];
        const prof = await tf.profile(async () => {
          out = await gradsOf(cfg, 7, 3, keep, keepNorms); // chunks of 3, 3, 1 images
        });
        const what = `${be} ${cfg.kind} keep ${keep} ${keepNorms}`;
        assert.equal(tf.memory().numTensors, before, `${what}: tensors leaked`);
        const calls = (name: string) => prof.kernels.filter((k) => k.name === name).length;
        return { out, forwards: calls("Conv2D"), norms: calls(IMAGE_NORM_KERNEL) };
      };
      const recomputed = await counted(false), kept = await counted(true), both = await counted(true, true);
      assert.equal(recomputed.forwards, 2 * 3 * convs, `${be} ${cfg.kind}: convs run forward twice a chunk`);
      assert.equal(kept.forwards, 3 * convs, `${be} ${cfg.kind}: with kept outputs, once a chunk`);
      assert.equal(both.forwards, 3 * convs, `${be} ${cfg.kind}: with kept norms too, once a chunk`);
      // wasm runs lmpipe's fused norm, whose outputs can be kept; cpu the op chain, which keeps nothing
      const fused = be === "wasm" ? 1 : 0;
      assert.equal(kept.norms, fused * 2 * 3 * convs, `${be} ${cfg.kind}: norms run forward twice a chunk`);
      assert.equal(both.norms, fused * 3 * convs, `${be} ${cfg.kind}: with kept norm outputs, once a chunk`);
      // the same kernels on the same operands: the same numbers, bit for bit
      kept.out.forEach((a, i) => assert.deepEqual(a, recomputed.out[i], `${be} ${cfg.kind} tensor ${i}`));
      both.out.forEach((a, i) =>
        assert.deepEqual(a, recomputed.out[i], `${be} ${cfg.kind} tensor ${i} (norms)`)
      );
    }
    // without a gradient being recorded nothing is kept (evaluation)
    const p = makeParams(tinyVgg, 3);
    const before = tf.memory().numTensors;
    const x = tf.tensor4d(randomArray(7 * 5 * 4 * 3, 5), [7, 5, 4, 3]);
    cnnCheckpointed(tinyVgg, p, x, 3, undefined, true, true).dispose();
    x.dispose();
    assert.equal(tf.memory().numTensors, before, `${be}: a pass without gradients kept tensors`);
    p.forEach((v) => v.dispose());
  }
  await initBackend("cpu", { quiet: true });
});

Deno.test("cnn: every backend matches cpu (forward and gradients, chunked)", async () => {
  const results: Record<string, Float32Array[]> = {};
  for (const be of await testBackends()) {
    await initBackend(be, { quiet: true });
    results[be] = [...(await gradsOf(tinyVgg, 4, 3)), ...(await gradsOf(tinyRes, 3, 0))];
  }
  for (const be of Object.keys(results)) {
    if (be === "cpu") continue;
    results[be].forEach((a, i) => assertClose(a, results.cpu[i], 2e-4, `${be} tensor ${i}`));
  }
  await initBackend("cpu", { quiet: true });
});

Deno.test("cnn: checkpointed chunks bound the peak memory of a training step", async () => {
  await initBackend("cpu", { quiet: true });
  const cfg: CnnConfig = { ...tinyVgg, height: 6, width: 6, baseWidth: 8, depth: 3 };
  const peak = async (chunk: number) => {
    const before = tf.memory().numTensors, held = tf.memory().numBytes;
    const prof = await tf.profile(async () => {
      await gradsOf(cfg, 32, chunk);
    });
    assert.equal(tf.memory().numTensors, before);
    return prof.peakBytes - held; // what the step added on top of the tensors alive before it
  };
  const plain = await peak(0), chunked = await peak(4);
  // the plain pass keeps every conv's activations of all 32 images; chunks of 4 keep an eighth
  assert.ok(chunked < 0.3 * plain, `peak bytes: chunked ${chunked} vs plain ${plain}`);
});

Deno.test("cnn: the image norm on wasm with its own kernel off runs as one LayerNorm kernel and equals the op chain (values, gradients)", async () => {
  await initBackend("wasm", { quiet: true });
  const fused = setWasmImageNormEnabled(false); // its own kernels: tests/image_norm_test.ts
  for (const [N, H, W, C] of [[3, 5, 4, 8], [2, 8, 8, 16], [1, 3, 3, 4]]) {
    const x = tf.tensor4d(randomArray(N * H * W * C, 21).map((v) => 3 * v + 1), [N, H, W, C]);
    const g = tf.tensor1d(randomArray(C, 22).map((v) => 1 + v)), b = tf.tensor1d(randomArray(C, 23));
    const dy = tf.tensor4d(randomArray(N * H * W * C, 24), [N, H, W, C]);
    const fused = (a: tf.Tensor4D, c: tf.Tensor, d: tf.Tensor) => imageNormRelu(a, c, d, false);
    const byOps = (a: tf.Tensor4D, c: tf.Tensor, d: tf.Tensor) => imageNormReluByOps(a, c, d, false);
    const run = (f: typeof fused) => {
      const y = f(x, g, b);
      const grads = tf.grads((a: tf.Tensor, c: tf.Tensor, d: tf.Tensor) =>
        tf.sum(tf.mul(f(a as tf.Tensor4D, c, d), dy))
      )([x, g, b]);
      return [y, ...grads];
    };
    let fastT: tf.Tensor[] = [];
    const prof = await tf.profile(() => (fastT = run(fused)));
    assert.ok(
      prof.kernelNames.includes(LAYER_NORM_KERNEL),
      `[${N},${H},${W},${C}]: the LayerNorm kernel did not run (${prof.kernelNames})`,
    );
    const fast = fastT.map((t) => t.dataSync());
    const ref = run(byOps).map((t) => t.dataSync());
    ["y", "dx", "dg", "db"].forEach((what, i) =>
      assertClose(fast[i], ref[i], 2e-5, `[${N},${H},${W},${C}] ${what}`)
    );
    tf.dispose([x, g, b, dy]);
  }
  setWasmImageNormEnabled(fused);
});
