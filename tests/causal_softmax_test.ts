// lib/tensor/ops/causal_softmax/mod.ts: attention's causal softmax and its gradient on every backend against a
// float64 reference (masked keys exactly 0, NaN rows propagated; on wasm through lmpipe's kernels of
// lib/tensor/ops/causal_softmax/wasm.ts, elsewhere TF.js's op chain bit for bit); on webgpu the fused kernels of
// lib/tensor/ops/causal_softmax/webgpu.ts against the op chain they replace (one dispatch each way), and the gpt
// and pixel-attn models using them agreeing with cpu, in training and in KV-cached decoding.
import assert from "node:assert/strict";
import { initBackend, readData, readScalar, tf } from "../lib/tensor/backend.ts";
import {
  assertClose,
  dispatchedByAsync,
  maxRelErr,
  randomArray,
  testBackends,
  webgpuStatus,
} from "../lib/tensor/testing.ts";
import { causalSoftmax, causalSoftmaxByOps } from "../lib/tensor/ops/causal_softmax/mod.ts";
import { setFusedKernelsEnabled } from "../lib/tensor/webgpu/kernels.ts";
import { wasmKernelStats } from "../lib/tensor/wasm/kernels.ts";
import { kernelFor, setWebgpuAttentionEnabled } from "../lib/tensor/kernel_choice.ts";
import { setOpChainRoundsScores } from "../lib/tensor/ops/attention/mod.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import type { LanguageModel, Precision } from "../lib/models/types.ts";

const backends = await testBackends();
const gpu = (await webgpuStatus()).ok;

interface Case {
  shape: number[];
  past: number;
  /** Flat positions set to NaN (each makes its whole row NaN). */
  nans?: number[];
}

const CASES: Case[] = [
  { shape: [1, 1, 1, 1], past: 0 }, // T = 1
  { shape: [2, 3, 5, 5], past: 0 },
  { shape: [1, 2, 7, 7], past: 0 },
  { shape: [1, 2, 3, 10], past: 7 },
  { shape: [2, 2, 1, 9], past: 8 }, // one new query against a cache: the sampling case
  { shape: [2, 4, 64, 64], past: 0 },
  { shape: [1, 1, 2, 300], past: 298 }, // rows longer than the largest workgroup
  { shape: [300, 250, 1, 1], past: 0 }, // 75000 rows: more workgroups than one grid dimension holds
  // NaN in a visible score (row 1 of block 0) and in a masked one (row 0 of block 1)
  { shape: [1, 2, 4, 4], past: 0, nans: [1 * 4 + 1, 16 + 0 * 4 + 3] },
];

const label = (c: Case) => `[${c.shape}] past ${c.past}${c.nans ? " with NaN" : ""}`;
const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Scores with a spread of about e^8 between rows' smallest and largest probability, plus the NaNs. */
function scoresOf(c: Case): Float32Array {
  const x = randomArray(sizeOf(c.shape), 17 + c.shape.length + c.past).map((v) => 4 * v);
  for (const i of c.nans ?? []) x[i] = NaN;
  return x;
}

function upstreamOf(c: Case): Float32Array {
  return randomArray(sizeOf(c.shape), 29 + c.past);
}

/** Whether key `col` is visible from row `row` (flat over all leading axes) of a [.., T, past + T] case. */
function visible(c: Case, row: number, col: number): boolean {
  const T = c.shape[c.shape.length - 2];
  return col <= c.past + (row % T);
}

/** Float64 causal softmax; a row holding a NaN is NaN throughout. */
function referenceForward(c: Case, x: Float32Array): Float64Array {
  const cols = c.shape[c.shape.length - 1];
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    const row = Array.from(x.subarray(r * cols, (r + 1) * cols));
    if (row.some(Number.isNaN)) {
      y.fill(NaN, r * cols, (r + 1) * cols);
      continue;
    }
    let m = -Infinity;
    row.forEach((v, j) => visible(c, r, j) && (m = Math.max(m, v)));
    let s = 0;
    row.forEach((v, j) => visible(c, r, j) && (s += Math.exp(v - m)));
    row.forEach((v, j) => y[r * cols + j] = visible(c, r, j) ? Math.exp(v - m) / s : 0);
  }
  return y;
}

/** Float64 softmax gradient dx = y (dy - sum(dy y)) per row. */
function referenceGrad(c: Case, y: Float64Array, dy: Float32Array): Float64Array {
  const cols = c.shape[c.shape.length - 1];
  const dx = new Float64Array(y.length);
  for (let r = 0; r < y.length / cols; r++) {
    let s = 0;
    for (let j = r * cols; j < (r + 1) * cols; j++) s += dy[j] * y[j];
    for (let j = r * cols; j < (r + 1) * cols; j++) dx[j] = y[j] * (dy[j] - s);
  }
  return dx;
}

/**
 * NaN exactly where `want` is NaN, masked keys exactly 0 outside NaN rows, and the rest within a
 * relative error `tol` (of the largest reference value).
 */
function assertMatches(c: Case, got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) {
  assert.equal(got.length, want.length, `${what}: length`);
  const cols = c.shape[c.shape.length - 1];
  const a: number[] = [], b: number[] = [];
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(want[i])) {
      assert.ok(Number.isNaN(got[i]), `${what}: element ${i} is ${got[i]}, expected NaN (its row has a NaN)`);
      continue;
    }
    assert.ok(!Number.isNaN(got[i]), `${what}: element ${i} is NaN, expected ${want[i]}`);
    if (!visible(c, Math.floor(i / cols), i % cols)) {
      assert.ok(
        got[i] === 0,
        `${what}: masked element ${i} (row ${Math.floor(i / cols)}, key ${i % cols}) is ${got[i]}`,
      );
    }
    a.push(got[i]), b.push(want[i]);
  }
  const e = maxRelErr(a, b);
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} > ${tol}`);
}

/** y = causalSoftmax(x) and dx for upstream dy, with `f` the forward function under test. */
async function forwardAndGrad(
  f: (x: tf.Tensor, past: number) => tf.Tensor,
  c: Case,
  x: Float32Array,
  dy: Float32Array,
): Promise<{ y: Float32Array; dx: Float32Array }> {
  const xt = tf.tensor(x, c.shape), dyt = tf.tensor(dy, c.shape);
  const { value: yt, grad: dxt } = tf.valueAndGrad((t: tf.Tensor) => f(t, c.past))(xt, dyt);
  const out = { y: new Float32Array(await readData(yt)), dx: new Float32Array(await readData(dxt)) };
  tf.dispose([xt, dyt, yt, dxt]);
  return out;
}

/** Names of the programs dispatched on webgpu while `f` runs. */
const count = (names: string[], name: string) => names.filter((n) => n === name).length;

/** A small config of `model`: the tiny preset's structure, short context, small vocabulary. */
const smallConfig = (model: string, extra: Record<string, unknown> = {}) =>
  resolveConfig(model, "tiny", {
    vocabSize: 61,
    contextLength: 12,
    nEmbd: 16,
    nHead: 2,
    ...(model === "gpt"
      ? {}
      : { nWarmup: 1, channels: 2, imageSize: 4, keyDim: 4, cnnWidth: 4, cnnDepth: 2 }),
    ...extra,
  });

/** Replaces every weight by random values of moderate size (norm gains around 1). */
function randomizeWeights(m: LanguageModel, seed: number): void {
  let k = seed;
  for (const [name, v] of m.params) {
    const r = randomArray(v.size, k++);
    const isGain = v.rank === 1 && (name.endsWith(".weight") || name.endsWith(".g"));
    tf.tidy(() => v.assign(tf.tensor(r.map((x) => (isGain ? 1 + 0.3 * x : 0.4 * x)), v.shape)));
  }
}

function tokens(B: number, T: number, V: number, seed: number): number[][] {
  const r = randomArray(B * T, seed);
  return Array.from(
    { length: B },
    (_, b) => Array.from({ length: T }, (_, t) => Math.floor((r[b * T + t] + 1) / 2 * V) % V),
  );
}

for (const backend of backends) {
  Deno.test(`${backend}: causal softmax and its gradient match a float64 reference`, async () => {
    await initBackend(backend, { quiet: true });
    for (const c of CASES) {
      const x = scoresOf(c), dy = upstreamOf(c);
      const rowsBefore = wasmKernelStats().rows;
      const { y, dx } = await forwardAndGrad(causalSoftmax, c, x, dy);
      if (backend === "wasm") { // lmpipe's kernels, one job each way (ops/causal_softmax/wasm.ts)
        const rows = sizeOf(c.shape) / c.shape[c.shape.length - 1];
        assert.equal(wasmKernelStats().rows - rowsBefore, 2 * rows, `${label(c)}: wasm kernel rows`);
      }
      const y64 = referenceForward(c, x);
      assertMatches(c, y, y64, 1e-6, `${backend} ${label(c)} forward`);
      assertMatches(c, dx, referenceGrad(c, y64, dy), 1e-5, `${backend} ${label(c)} gradient`);
      if (kernelFor("causalSoftmax") === "ops") { // the op chain keeping only the probabilities: TF.js's bits
        const ops = await forwardAndGrad(causalSoftmaxByOps, c, x, dy);
        assert.deepEqual([y, dx], [ops.y, ops.dx], `${backend} ${label(c)}: equals TF.js's own chain`);
      }
    }
    assert.throws(
      () => causalSoftmax(tf.zeros([1, 2, 3, 4]), 0),
      /causal_softmax\/mod\.ts.*\[1,2,3,4\] with past 0.*past \+ T/,
    );
    await initBackend("cpu", { quiet: true });
  });
}

if (gpu) {
  Deno.test("webgpu: the fused kernels equal the op chain, in one dispatch forward and one backward", async () => {
    await initBackend("webgpu", { quiet: true });
    setFusedKernelsEnabled(true);
    try {
      for (const c of CASES) {
        const x = scoresOf(c), dy = upstreamOf(c);
        const before = tf.memory().numTensors;
        const fused = await dispatchedByAsync(() => forwardAndGrad(causalSoftmax, c, x, dy));
        assert.equal(tf.memory().numTensors, before, `${label(c)}: the fused path leaked tensors`);
        const ops = await dispatchedByAsync(() => forwardAndGrad(causalSoftmaxByOps, c, x, dy));
        // forward + gradient: one dispatch of each kernel, nothing else
        assert.deepEqual(
          fused.names,
          ["LmpipeCausalSoftmaxProgram", "LmpipeCausalSoftmaxGradProgram"],
          `${label(c)}: dispatches`,
        );
        assert.ok(ops.names.length > 2, `${label(c)}: the op chain took ${ops.names.length} dispatches`);
        const y64 = Float64Array.from(ops.result.y), dx64 = Float64Array.from(ops.result.dx);
        assertMatches(c, fused.result.y, y64, 1e-6, `${label(c)} kernel vs op chain forward`);
        assertMatches(c, fused.result.dx, dx64, 1e-5, `${label(c)} kernel vs op chain gradient`);
      }
      // turned off, causalSoftmax is the op chain again
      setFusedKernelsEnabled(false);
      const c = CASES[1];
      const off = await dispatchedByAsync(() => forwardAndGrad(causalSoftmax, c, scoresOf(c), upstreamOf(c)));
      assert.equal(off.names.filter((n) => n.startsWith("LmpipeCausal")).length, 0, `${off.names}`);
    } finally {
      setFusedKernelsEnabled(true);
      await initBackend("cpu", { quiet: true });
    }
  });

  const MODELS: [string, Record<string, unknown>][] = [
    ["gpt", {}],
    ["pixel-attn", { attnOrder: "values-first" }],
    ["pixel-attn", { attnOrder: "attend-first" }],
  ];

  // Each model twice: with the causal softmax kernels (lmpipe's flash attention off), and with the
  // flash attention of lib/tensor/ops/attention (its own tests: tests/attention_test.ts), which the models
  // use on webgpu by default (attend-first keeps the causal softmax).
  const KERNELS = [
    { flash: false, what: "the fused causal softmax", fwdName: "LmpipeCausalSoftmaxProgram" },
    { flash: true, what: "flash attention", fwdName: "LmpipeFlashAttentionProgram" },
  ];
  for (const [model, extra] of MODELS) {
    for (const k of KERNELS) {
      if (k.flash && extra.attnOrder === "attend-first") continue;
      const name = `${model}${extra.attnOrder ? ` (${extra.attnOrder})` : ""}`;
      const bwdName = k.flash ? "LmpipeFlashAttentionDqProgram" : "LmpipeCausalSoftmaxGradProgram";
      Deno.test(`webgpu: ${name} loss and gradients with ${k.what} equal cpu's`, async () => {
        const run = async (backend: "cpu" | "webgpu", precision: Precision) => {
          await initBackend(backend, { quiet: true });
          const rows = tokens(2, 13, 61, 71);
          const idx = tf.tensor2d(rows.map((r) => r.slice(0, 12)), [2, 12], "int32");
          const tgt = tf.tensor2d(rows.map((r) => r.slice(1)), [2, 12], "int32");
          const m = createModel(smallConfig(model, extra), 5);
          randomizeWeights(m, 500);
          const { names, result } = await dispatchedByAsync(async () => {
            const { value, grads } = tf.variableGrads(() => m.loss(idx, tgt, { precision, training: true }));
            const out = { loss: await readScalar(value), grads: new Map<string, Float32Array>() };
            for (const [n, v] of m.params) out.grads.set(n, new Float32Array(await readData(grads[v.name])));
            tf.dispose([value, ...Object.values(grads)]);
            return out;
          });
          tf.dispose([idx, tgt]);
          m.dispose();
          return { ...result, names };
        };
        setWebgpuAttentionEnabled(k.flash);
        try {
          for (const precision of ["fp32", "mixed"] as const) {
            // flash attention keeps scores and probabilities float32 under mixed: cpu's op chain does too here
            const before = setOpChainRoundsScores(!k.flash);
            const want = await run("cpu", precision);
            setOpChainRoundsScores(before);
            const got = await run("webgpu", precision);
            const fwd = count(got.names, k.fwdName);
            const bwd = count(got.names, bwdName);
            assert.ok(
              fwd > 0 && bwd === fwd,
              `${name} ${precision}: ${fwd} forward, ${bwd} backward kernels ran`,
            );
            // the tolerances of tests/gpt_test.ts (mixed: a float32 difference can flip an fp16 rounding)
            assertClose(
              [got.loss],
              [want.loss],
              precision === "fp32" ? 1e-5 : 1e-4,
              `${name} ${precision} loss`,
            );
            const tol = precision === "fp32" ? 1e-4 : 2e-3;
            for (const [n, g] of want.grads) {
              assertClose(got.grads.get(n)!, g, tol, `${name} ${precision} ${n}`);
            }
          }
        } finally {
          setWebgpuAttentionEnabled(true);
          await initBackend("cpu", { quiet: true });
        }
      });

      Deno.test(`webgpu: ${name} KV-cached decoding with ${k.what} equals the full pass`, async () => {
        await initBackend("webgpu", { quiet: true });
        setWebgpuAttentionEnabled(k.flash);
        try {
          const m = createModel(smallConfig(model, extra), 6);
          randomizeWeights(m, 600);
          const B = 2, T = 12, V = 61;
          const rows = tokens(B, T, V, 81);
          const full = await readData(tf.tidy(() => m.logits(tf.tensor2d(rows, [B, T], "int32"))));
          const state = m.startDecode(B);
          const { names } = await dispatchedByAsync(async () => {
            for (let t = 0; t < T; t++) {
              const step = tf.tensor1d(rows.map((r) => r[t]), "int32");
              const logits = m.decodeStep(state, step);
              const got = await readData(logits);
              for (let b = 0; b < B; b++) {
                const want = full.slice((b * T + t) * V, (b * T + t + 1) * V);
                assertClose(
                  got.slice(b * V, (b + 1) * V),
                  want,
                  1e-5,
                  `${name} sequence ${b}, position ${t}`,
                );
              }
              tf.dispose([step, logits]);
            }
          });
          assert.ok(
            count(names, k.fwdName) >= T,
            `${name}: the kernel did not run in decoding`,
          );
          state.dispose();
          m.dispose();
        } finally {
          setWebgpuAttentionEnabled(true);
          await initBackend("cpu", { quiet: true });
        }
      });
    }
  }
}
