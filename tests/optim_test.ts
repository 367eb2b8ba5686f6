// AdamW against a hand-computed reference, the learning-rate schedules, global-norm clipping, and the
// pairwise sum of squares (which must stay right with many tensors: webgpu's addN was not).
import assert from "node:assert/strict";
import { initBackend, readData, readScalar, tf } from "../lib/tensor/backend.ts";
import { AdamW, clipCoefficient, learningRate, sumOfSquares } from "../lib/optim.ts";

await initBackend("cpu", { quiet: true });

/** Plain-number AdamW (PyTorch's formulation) for one parameter vector. */
function referenceAdamW(p: number[], grads: number[][], lrs: number[], wd: number, decay: boolean): number[] {
  const b1 = 0.9, b2 = 0.95, eps = 1e-8;
  const m = p.map(() => 0), v = p.map(() => 0);
  p = [...p];
  grads.forEach((g, k) => {
    const t = k + 1, lr = lrs[k];
    for (let i = 0; i < p.length; i++) {
      if (decay) p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const mhat = m[i] / (1 - b1 ** t), vhat = v[i] / (1 - b2 ** t);
      p[i] -= (lr * mhat) / (Math.sqrt(vhat) + eps);
    }
  });
  return p;
}

Deno.test("AdamW matches a hand-computed reference over 4 steps, decay only where the model says", async () => {
  const w0 = [0.5, -1.25, 2.0], b0 = [0.1, -0.2];
  const params = new Map([
    ["w", tf.variable(tf.tensor1d(w0))],
    ["b", tf.variable(tf.tensor1d(b0))],
  ]);
  const opt = new AdamW(params, {
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weightDecay: 0.1,
    decays: (n) => n === "w",
  });
  const gw = [[0.3, -0.1, 0.05], [0.2, 0.4, -0.3], [-0.5, 0.1, 0.0], [0.01, -0.02, 0.03]];
  const gb = [[1, -1], [0.5, 0.25], [-0.1, 0.2], [2, -3]];
  const lrs = [1e-2, 5e-3, 2e-2, 1e-3];
  for (let k = 0; k < 4; k++) {
    opt.step(new Map([["w", tf.tensor1d(gw[k])], ["b", tf.tensor1d(gb[k])]]), lrs[k]);
  }
  const w = Array.from(await readData(params.get("w")!)), b = Array.from(await readData(params.get("b")!));
  const wr = referenceAdamW(w0, gw, lrs, 0.1, true), br = referenceAdamW(b0, gb, lrs, 0.1, false);
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(w[i] - wr[i]) < 1e-6, `w[${i}] ${w[i]} vs ${wr[i]}`);
  for (let i = 0; i < 2; i++) assert.ok(Math.abs(b[i] - br[i]) < 1e-6, `b[${i}] ${b[i]} vs ${br[i]}`);
  // the decoupled decay really applied to w only: without it w would differ
  const wNoDecay = referenceAdamW(w0, gw, lrs, 0, false);
  assert.ok(Math.abs(wNoDecay[0] - wr[0]) > 1e-5);
  assert.equal(opt.t, 4);
  // gradScale multiplies the gradient (unscaling/clipping fold into it)
  const p2 = new Map([["x", tf.variable(tf.tensor1d([1]))]]);
  const o2 = new AdamW(p2, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, decays: () => false });
  o2.step(new Map([["x", tf.tensor1d([1024])]]), 0.1, 1 / 1024);
  const x = await readScalar(p2.get("x")!);
  assert.ok(Math.abs(x - referenceAdamW([1], [[1]], [0.1], 0, false)[0]) < 1e-6);
});

Deno.test("cosine schedule: nanoGPT warm-up, cosine decay to min_lr, flat after", () => {
  const o = { schedule: "cosine" as const, lr: 6e-4, minLr: 6e-5, warmup: 10, decaySteps: 110 };
  assert.ok(Math.abs(learningRate(0, o) - 6e-4 / 11) < 1e-15);
  assert.ok(Math.abs(learningRate(9, o) - 6e-4 * 10 / 11) < 1e-15);
  assert.ok(Math.abs(learningRate(10, o) - 6e-4) < 1e-15);
  assert.ok(Math.abs(learningRate(60, o) - (6e-5 + 0.5 * (6e-4 - 6e-5))) < 1e-15); // half way: midpoint
  assert.ok(Math.abs(learningRate(110, o) - 6e-5) < 1e-15);
  assert.equal(learningRate(500, o), 6e-5);
  for (let i = 11; i < 110; i++) assert.ok(learningRate(i, o) < learningRate(i - 1, o));
});

Deno.test("one-cycle schedule: rises from lr/25 to lr, then falls to min_lr", () => {
  const o = { schedule: "onecycle" as const, lr: 1e-3, minLr: 1e-5, warmup: 30, decaySteps: 100 };
  assert.ok(Math.abs(learningRate(0, o) - 1e-3 / 25) < 1e-15);
  assert.ok(Math.abs(learningRate(30, o) - 1e-3) < 1e-15);
  for (let i = 1; i <= 30; i++) assert.ok(learningRate(i, o) > learningRate(i - 1, o));
  for (let i = 31; i <= 100; i++) assert.ok(learningRate(i, o) < learningRate(i - 1, o));
  assert.ok(Math.abs(learningRate(100, o) - 1e-5) < 1e-15);
});

Deno.test("sumOfSquares over 13 tensors (pairwise, no addN) and clipping by global norm", async () => {
  const ts = Array.from({ length: 13 }, (_, i) => tf.tensor1d([i + 1, -(i + 1)]));
  let expect = 0;
  for (let i = 1; i <= 13; i++) expect += 2 * i * i;
  assert.equal(await readScalar(sumOfSquares(ts)), expect);
  assert.equal(await readScalar(sumOfSquares(ts, 0.5)), expect / 4);
  // any inf/NaN element makes the single reduction non-finite: the overflow check
  const bad = [...ts, tf.tensor1d([0, Infinity])];
  assert.ok(!Number.isFinite(await readScalar(sumOfSquares(bad))));
  const nan = [...ts, tf.tensor1d([NaN])];
  assert.ok(Number.isNaN(await readScalar(sumOfSquares(nan))));
  // clipping: norm 10 clipped to 1 scales by ~0.1; norms below the limit untouched; 0 disables
  assert.ok(Math.abs(clipCoefficient(10, 1) - 0.1) < 1e-6);
  assert.equal(clipCoefficient(0.5, 1), 1);
  assert.equal(clipCoefficient(1e9, 0), 1);
});

Deno.test("AdamW holds exactly its two moments per parameter: no leaked zeros, no leak on loadState", () => {
  const params = new Map([["w", tf.variable(tf.ones([4, 3]))], ["b", tf.variable(tf.zeros([3]))]]);
  const before = tf.memory().numTensors;
  const opt = new AdamW(params, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, decays: () => true });
  assert.equal(tf.memory().numTensors, before + 4); // m and v for each of the two parameters
  const saved = new Map(
    [...opt.stateTensors()].map((
      [n, t],
    ) => [n, { shape: t.shape, data: new Float32Array(t.size).fill(0.5) }]),
  );
  opt.loadState(3, saved);
  assert.equal(tf.memory().numTensors, before + 4);
  assert.equal(opt.t, 3);
  opt.dispose();
  assert.equal(tf.memory().numTensors, before);
  for (const p of params.values()) p.dispose();
});
