// lib/loss.ts: the chunked tied-head cross-entropy must equal the plain logSoftmax cross-entropy in
// value and in both gradients, for chunk sizes that do and do not divide the rows, with and without a
// gradient tape, under an upstream gradient other than 1, and on every backend.
import assert from "node:assert/strict";
import { initBackend, readData, readScalar, tf } from "../lib/tensor/backend.ts";
import { chunkRowsFor, naiveCrossEntropy, tiedCrossEntropy } from "../lib/loss.ts";
import { assertClose, randomArray, testBackends } from "../lib/tensor/testing.ts";
import { boundary, roundTo } from "../lib/precision.ts";
import type { Precision } from "../lib/models/types.ts";
import {
  softmaxRowsAtTargets,
  softmaxRowsAtTargetsByOps,
  softmaxRowsAtTargetsFused,
  softmaxStatsAtTargets,
  softmaxStatsAtTargetsByOps,
} from "../lib/tensor/ops/softmax_rows/mod.ts";

const backends = await testBackends();
const N = 10, C = 6, V = 37;
const H = randomArray(N * C, 1).map((v) => v * 3);
const W = randomArray(V * C, 2);
// duplicates (5 twice, 0 three times) exercise the summed -onehot part of dL/dW
const T = Int32Array.from([5, 0, 36, 5, 17, 0, 2, 0, 30, 11]);

async function lossAndGrads(kind: "chunked" | "naive", chunkRows?: number, scale = 1) {
  const h = tf.tensor2d(H, [N, C]), w = tf.tensor2d(W, [V, C]), t = tf.tensor1d(T, "int32");
  const f = (a: tf.Tensor, b: tf.Tensor) => {
    const l = kind === "chunked"
      ? tiedCrossEntropy(a as tf.Tensor2D, b as tf.Tensor2D, t, { chunkRows })
      : naiveCrossEntropy(a as tf.Tensor2D, b as tf.Tensor2D, t);
    return tf.mul(l, scale) as tf.Scalar;
  };
  const { value, grads } = tf.valueAndGrads(f)([h, w]);
  const out = { loss: await readScalar(value), dh: await readData(grads[0]), dw: await readData(grads[1]) };
  tf.dispose([h, w, t, value, ...grads]);
  return out;
}

Deno.test("chunked tied cross-entropy equals logSoftmax cross-entropy (values and gradients, cpu)", async () => {
  await initBackend("cpu", { quiet: true });
  const want = await lossAndGrads("naive");
  assert.ok(want.loss > 1 && Number.isFinite(want.loss));
  // every chunk size from 1 to past N: each remainder of N (a short last chunk of 1 to size-1 rows)
  for (const rows of [...Array(N + 1).keys()].map((i) => i + 1).concat(64)) {
    const got = await lossAndGrads("chunked", rows);
    assertClose([got.loss], [want.loss], 1e-6, `loss, chunks of ${rows}`);
    assertClose(got.dh, want.dh, 1e-5, `dL/dh, chunks of ${rows}`);
    assertClose(got.dw, want.dw, 1e-5, `dL/dW, chunks of ${rows}`);
  }
  // the upstream gradient (e.g. a loss scale) multiplies both gradients
  const scaled = await lossAndGrads("chunked", 3, 1024);
  assertClose(scaled.dw, want.dw.map((v) => v * 1024), 1e-5, "dL/dW under a scaled loss");
  assertClose(scaled.dh, want.dh.map((v) => v * 1024), 1e-5, "dL/dh under a scaled loss");
});

Deno.test("mixed and bf16: the logits' gradient is rounded to 16 bits at the loss scale, as autocast's backward pass (cpu)", async () => {
  await initBackend("cpu", { quiet: true });
  // Autocast's composition in ops: 16-bit h and W (gradients too), 16-bit logits whose gradient is 16-bit,
  // a float32 log-softmax and mean, the loss times S before the backward pass. `roundLogitGrad: false` is
  // the same with the logits rounded forward only: the gradient a float32 dL/dlogits would give.
  const roundedForwardOnly = (x: tf.Tensor, precision: Precision) =>
    tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
      value: roundTo(args[0] as tf.Tensor, precision),
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) => dy as tf.Tensor,
    }))(x);
  const autocast = (precision: Precision, S: number, roundLogitGrad: boolean) =>
    tf.valueAndGrads((a: tf.Tensor, b: tf.Tensor) => {
      const z = tf.matMul(boundary(a, precision), boundary(b, precision), false, true);
      const logits = roundLogitGrad ? boundary(z, precision) : roundedForwardOnly(z, precision);
      const picked = tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(tf.tensor1d(T, "int32"), V)), 1);
      return tf.mul(tf.neg(tf.mean(picked)), S) as tf.Scalar;
    });
  for (const [precision, S] of [["mixed", 2 ** 15], ["bf16", 0.5]] as [Precision, number][]) {
    const h = tf.tensor2d(H, [N, C]), w = tf.tensor2d(W, [V, C]), t = tf.tensor1d(T, "int32");
    const fused = tf.valueAndGrads((a: tf.Tensor, b: tf.Tensor) =>
      tf.mul(
        tiedCrossEntropy(a as tf.Tensor2D, b as tf.Tensor2D, t, { chunkRows: 3, precision, gradScale: S }),
        S,
      )
    )([h, w]);
    const want = autocast(precision, S, true)([h, w]), f32 = autocast(precision, S, false)([h, w]);
    const maxRel = (a: ArrayLike<number>, b: ArrayLike<number>) => {
      let m = 0, big = 0;
      for (let i = 0; i < b.length; i++) big = Math.max(big, Math.abs(b[i]));
      for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / big);
      return m;
    };
    for (const k of [0, 1]) {
      const [got, ref, unrounded] = await Promise.all([fused, want, f32].map((r) => readData(r.grads[k])));
      const err = maxRel(got, ref), away = maxRel(unrounded, ref);
      const what = `${precision} ${
        k ? "dL/dW" : "dL/dh"
      }: ${err} from autocast's, ${away} with a float32 dL/dlogits`;
      // float32 sums in a different order can tip a 16-bit rounding: within a unit roundoff, 10x closer
      assert.ok(away > 1e-4 && err < away / 10, what);
    }
    assertClose([await readScalar(fused.value)], [await readScalar(want.value)], 1e-6, `${precision} loss`);
    tf.dispose([h, w, t, fused.value, ...fused.grads, want.value, ...want.grads, f32.value, ...f32.grads]);
  }
});

Deno.test("without a gradient tape the chunked loss gives the same value and leaks nothing", async () => {
  await initBackend("cpu", { quiet: true });
  const h = tf.tensor2d(H, [N, C]), w = tf.tensor2d(W, [V, C]), t = tf.tensor1d(T, "int32");
  const before = tf.memory().numTensors;
  const l = tiedCrossEntropy(h, w, t, { chunkRows: 3 });
  assert.equal(tf.memory().numTensors, before + 1);
  const want = naiveCrossEntropy(h, w, t);
  assertClose([await readScalar(l)], [await readScalar(want)], 1e-6, "loss without tape");
  tf.dispose([h, w, t, l, want]);
});

Deno.test("chunk sizes: bounded logits per chunk, at least one row", () => {
  assert.equal(chunkRowsFor(1024, 50304), 512); // at most 2^25 floats per chunk, split evenly
  assert.equal(chunkRowsFor(2048, 50304), 512);
  assert.equal(chunkRowsFor(700, 50304), 350); // 2 x 350, not 667 + 33
  assert.equal(chunkRowsFor(10, 50304), 10);
  assert.equal(chunkRowsFor(1024, 2 ** 30), 1);
  assert.equal(chunkRowsFor(1024, 50304, 100), 100);
  // for every row count: as few chunks as the 2^25-float bound allows, of even sizes (the last chunk
  // is shorter than the others by less than the number of chunks)
  const cap = Math.floor(2 ** 25 / 50304);
  for (let rows = 1; rows <= 3000; rows++) {
    const size = chunkRowsFor(rows, 50304), count = Math.ceil(rows / size);
    assert.ok(size <= cap, `${rows} rows: chunks of ${size} over the bound ${cap}`);
    assert.equal(count, Math.ceil(rows / cap), `${rows} rows: ${count} chunks`);
    assert.ok(rows - (count - 1) * size > size - count, `${rows} rows: uneven chunks of ${size}`);
  }
});

Deno.test("tiedCrossEntropy rejects mismatched shapes and float targets", async () => {
  await initBackend("cpu", { quiet: true });
  const h = tf.zeros([4, 3]) as tf.Tensor2D, w = tf.zeros([5, 3]) as tf.Tensor2D;
  assert.throws(
    () => tiedCrossEntropy(h, tf.zeros([5, 2]) as tf.Tensor2D, tf.zeros([4], "int32") as tf.Tensor1D),
    /shapes/,
  );
  assert.throws(() => tiedCrossEntropy(h, w, tf.zeros([3], "int32") as tf.Tensor1D), /shapes/);
  assert.throws(() => tiedCrossEntropy(h, w, tf.zeros([4]) as tf.Tensor1D), /int32/);
  tf.dispose([h, w]);
});

for (const backend of backends.filter((b) => b !== "cpu")) {
  Deno.test(`chunked cross-entropy on ${backend} matches cpu (values and gradients)`, async () => {
    await initBackend("cpu", { quiet: true });
    const want = await lossAndGrads("naive");
    await initBackend(backend, { quiet: true });
    // on wasm the softmax kernel folds the onehot in (softmaxRowsAtTargets): every chunk remainder, and
    // a gradient seed other than 1
    for (const rows of backend === "wasm" ? [1, 2, 3, 4, 5, 6, 7, 9, 10] : [3]) {
      const got = await lossAndGrads("chunked", rows);
      assertClose([got.loss], [want.loss], 1e-5, `${backend} loss, chunks of ${rows}`);
      assertClose(got.dh, want.dh, 1e-4, `${backend} dL/dh, chunks of ${rows}`);
      assertClose(got.dw, want.dw, 1e-4, `${backend} dL/dW, chunks of ${rows}`);
    }
    const scaled = await lossAndGrads("chunked", 4, 3);
    assertClose(scaled.dw, want.dw.map((v) => v * 3), 1e-4, `${backend} dL/dW under a scaled loss`);
    const h = tf.tensor2d(H, [N, C]), w = tf.tensor2d(W, [V, C]), t = tf.tensor1d(T, "int32");
    const l = tiedCrossEntropy(h, w, t, { chunkRows: 4 }); // no tape: the loss alone
    assertClose([await readScalar(l)], [want.loss], 1e-5, `${backend} loss without tape`);
    tf.dispose([h, w, t, l]);
  });
}

if (backends.includes("wasm")) {
  Deno.test("wasm softmaxRowsAtTargets and softmaxStatsAtTargets kernels equal their op chains; a target out of range is an error", async () => {
    await initBackend("wasm", { quiet: true });
    const x = tf.tensor2d(randomArray(5 * 37, 3).map((v) => v * 4), [5, 37]);
    const t = tf.tensor1d([36, 0, 5, 5, 17], "int32");
    // LMPIPE_WASM_FUSED=0 turns the kernel off: then the op chain runs, against itself
    const fused = softmaxRowsAtTargetsFused();
    const want = softmaxRowsAtTargetsByOps(x, t);
    // the kernel writes e over its x: a copy of its own (tf.clone would share x's buffer)
    const got = softmaxRowsAtTargets(tf.tensor2d(await readData(x), [5, 37]), t);
    for (const k of ["e", "m", "s", "xt"] as const) {
      assertClose(await readData(got[k]), await readData(want[k]), 1e-6, `softmaxRowsAtTargets ${k}`);
    }
    // evaluation's variant: no e, x left alone, m and s bit for bit those of the variant with e
    const xs = await readData(x);
    const stats = softmaxStatsAtTargets(x, t), statsWant = softmaxStatsAtTargetsByOps(x, t);
    for (const k of ["m", "s", "xt"] as const) {
      assertClose(await readData(stats[k]), await readData(statsWant[k]), 1e-6, `softmaxStatsAtTargets ${k}`);
      if (k !== "xt") assert.deepEqual(await readData(stats[k]), await readData(got[k]), `stats ${k}`);
    }
    assert.deepEqual(await readData(stats.xt), await readData(got.xt), "stats xt");
    assert.deepEqual(await readData(x), xs, "softmaxStatsAtTargets leaves x as it was");
    const outs = [
      ...Object.values(got),
      ...Object.values(want),
      ...Object.values(stats),
      ...Object.values(statsWant),
    ];
    if (!fused) return tf.dispose([x, t, ...outs]);
    const before = tf.memory().numBytes;
    for (const [bad, msg] of [[37, /target 37 of row 2/], [-1, /target -1 of row 2/]] as const) {
      const tb = tf.tensor1d([0, 1, bad, 2, 3], "int32");
      assert.throws(() => softmaxRowsAtTargets(x, tb), msg);
      assert.throws(() => softmaxStatsAtTargets(x, tb), msg);
      tb.dispose();
    }
    assert.equal(tf.memory().numBytes, before, "a refused call leaves nothing allocated");
    assert.deepEqual(await readData(x), xs, "a refused call leaves x as it was");
    tf.dispose([x, t, ...outs]);
  });
}
