// Evaluation's loss statistics on oneDNN's log-softmax (lib/tensor/ops/softmax_rows/dnnl.ts, chosen by
// kernel_choice.ts's softmaxStats row): each row's logsumexp and the target logits against a float64
// reference, the same from lmpipe's wasm kernel (or the op chain) with oneDNN's turned off, and the loss without a gradient
// tape equal both ways. Without libdnnl2 the tests are skipped with the reason, unless
// LMPIPE_REQUIRE_NATIVE is set (CI's run with the native libraries), where that fails.
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { currentDnnl, dnnlStatus } from "../lib/native/dnnl.ts";
import { kernelFor, setDnnlSoftmaxMin } from "../lib/tensor/kernel_choice.ts";
import { softmaxStatsAtTargets } from "../lib/tensor/ops/softmax_rows/mod.ts";
import { tiedCrossEntropy } from "../lib/loss.ts";
import { randomArray } from "../lib/tensor/testing.ts";
import { wasmKernelsActive } from "../lib/tensor/wasm/kernels.ts";
import { dnnlSkipReason } from "./helpers_conv.ts";

await initBackend("wasm", { quiet: true });
const noDnnl = dnnlSkipReason(currentDnnl() ? "" : dnnlStatus(), "oneDNN softmax tests");

const [ROWS, COLS] = [37, 30011]; // over the 2^20 logits from which oneDNN's runs; odd sizes
const X = randomArray(ROWS * COLS, 7).map((v, i) => v * (i % 5 === 0 ? 30 : 6));
const T = Array.from({ length: ROWS }, (_, r) => (r * 7919) % COLS);

/** Largest error of m + log(s) against float64's logsumexp (relative to max(1, |lse|)), and of xt. */
function errors(m: Float32Array, s: Float32Array, xt: Float32Array): { lse: number; xt: number } {
  let lse = 0, xtErr = 0;
  for (let r = 0; r < ROWS; r++) {
    const row = X.subarray(r * COLS, (r + 1) * COLS);
    const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
    const want = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
    lse = Math.max(lse, Math.abs(m[r] + Math.log(s[r]) - want) / Math.max(1, Math.abs(want)));
    xtErr = Math.max(xtErr, Math.abs(xt[r] - row[T[r]]));
  }
  return { lse, xt: xtErr };
}

function stats(): { m: Float32Array; s: Float32Array; xt: Float32Array } {
  return tf.tidy(() => {
    const out = softmaxStatsAtTargets(tf.tensor2d(X, [ROWS, COLS]), tf.tensor1d(T, "int32"));
    return {
      m: out.m.dataSync() as Float32Array,
      s: out.s.dataSync() as Float32Array,
      xt: out.xt.dataSync() as Float32Array,
    };
  });
}

Deno.test({
  name: "oneDNN log-softmax: logsumexp and target logits match float64 and lmpipe's kernel",
  ignore: noDnnl !== "",
  fn() {
    const dnnl = currentDnnl()!;
    assert.equal(kernelFor("softmaxStats", "wasm", ROWS * COLS), "dnnl");
    const before = dnnl.calls;
    const viaDnnl = stats();
    assert.equal(dnnl.calls, before + 1, "oneDNN's log-softmax did not run");
    const old = setDnnlSoftmaxMin(null);
    try {
      // lmpipe's kernel, or the op chain under LMPIPE_WASM_FUSED=0
      assert.equal(kernelFor("softmaxStats", "wasm", ROWS * COLS), wasmKernelsActive() ? "lmpipe" : "ops");
      const viaWasm = stats();
      assert.equal(dnnl.calls, before + 1, "oneDNN ran with its softmax turned off");
      for (const [what, got] of [["oneDNN", viaDnnl], ["wasm", viaWasm]] as const) {
        const e = errors(got.m, got.s, got.xt);
        // float32 logsumexp of rows up to ~30: a few units in the last place
        assert.ok(e.lse < 4e-7, `${what}: logsumexp relative error ${e.lse}`);
        assert.equal(e.xt, 0, `${what}: target logits`);
      }
    } finally {
      setDnnlSoftmaxMin(old);
    }
  },
});

Deno.test({
  name: "oneDNN log-softmax: the loss without a gradient tape equals the wasm kernel's",
  ignore: noDnnl !== "",
  fn() {
    const [N, C, V] = [64, 16, 20011]; // 64 x 20011 logits: oneDNN's
    const h = tf.tensor2d(randomArray(N * C, 3), [N, C]);
    const w = tf.tensor2d(randomArray(V * C, 4).map((v) => v * 3), [V, C]);
    const t = tf.tensor1d(Array.from({ length: N }, (_, i) => (i * 331) % V), "int32");
    const loss = () => tiedCrossEntropy(h, w, t).dataSync()[0];
    const before = currentDnnl()!.calls;
    const withDnnl = loss();
    assert.equal(currentDnnl()!.calls, before + 1);
    const old = setDnnlSoftmaxMin(null);
    const withWasm = loss();
    setDnnlSoftmaxMin(old);
    // float32 sums of 20011 terms either way (TF.js's op chain under LMPIPE_WASM_FUSED=0: ~1.3e-6 apart)
    assert.ok(Math.abs(withDnnl - withWasm) <= 3e-6 * withWasm, `${withDnnl} vs ${withWasm}`);
    tf.dispose([h, w, t]);
  },
});
