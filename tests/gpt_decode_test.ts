// lmpipe's wasm decoding step for gpt (lib/models/gpt_decode.ts) against decodeStep's op chain, the
// reference: the same logits to float32 rounding at every position of a full context and the same
// tokens for a seed, for a model with biases and the real vocabulary and one without biases, with an
// untied head and a vocabulary that is no multiple of the choice's blocks; with and without BLAS. Also
// the gemv kernels against float64 loops (odd sizes, row strides, column ranges) and the top-k candidates
// against a sort.
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { Gpt, GPT_PRESETS } from "../lib/models/gpt.ts";
import { blasThreads, currentBlas } from "../lib/native/blas.ts";
import {
  kernelFor,
  setBlasMinWork,
  setGemvBlasMinWork,
  setWasmDecodeEnabled,
} from "../lib/tensor/kernel_choice.ts";
import { HeapView } from "../lib/tensor/ops/gemv/wasm.ts";
import { assertClose, randomArray } from "../lib/tensor/testing.ts";
import { chooseToken } from "../pipelines/sample/generate.ts";
import { blockMaxima, topKIds } from "../lib/top_k.ts";
import { Rng } from "../lib/rng.ts";
import { LmpipeError } from "../lib/errors.ts";

import { offset, randomizeWeights } from "./helpers_gpt.ts";

await initBackend("wasm", { quiet: true });
if (!currentBlas() && Deno.env.get("LMPIPE_REQUIRE_NATIVE")) {
  throw new Error("gpt_decode_test: BLAS must be loaded here (LMPIPE_REQUIRE_NATIVE is set)");
}

const SHAPES = {
  "biases, tied head, GPT-2's vocabulary": { nLayer: 2, nHead: 2, nEmbd: 64, contextLength: 24 },
  "no biases, untied head, 1000 tokens": {
    nLayer: 2,
    nHead: 4,
    nEmbd: 32,
    contextLength: 20,
    bias: false,
    tie: false,
    vocabSize: 1000,
  },
  "exact GELU (the gpt2 and study presets' form)": {
    nLayer: 2,
    nHead: 2,
    nEmbd: 32,
    contextLength: 12,
    gelu: "exact",
  },
};

for (const [name, shape] of Object.entries(SHAPES)) {
  for (const blas of currentBlas() ? [true, false] : [false]) {
    Deno.test(`wasm decode = decodeStep: ${name}, ${blas ? "BLAS" : "no BLAS"}`, () => {
      const model = new Gpt({ ...GPT_PRESETS.tiny, ...shape }, 7);
      randomizeWeights(model, 40);
      const T = model.config.contextLength;
      const oldMin = setGemvBlasMinWork(blas ? 0 : Infinity),
        oldMatMul = setBlasMinWork(blas ? 4096 : Infinity);
      const calls0 = currentBlas()?.calls ?? 0;
      try {
        setWasmDecodeEnabled(false);
        const ref = model.startDecode(1);
        setWasmDecodeEnabled(true);
        assert.equal(kernelFor("cachedDecode"), "lmpipe");
        const fast = model.startDecode(1);
        assert.ok(!ref.stepOnHost && fast.stepOnHost, "the switch picks the path");
        const sampling = { temperature: 1, topK: 50, topP: 0.9, allowedVocab: 50257 };
        const rngRef = new Rng(11), rngFast = new Rng(11);
        let tokRef = 198 % model.config.vocabSize, tokFast = tokRef;
        for (let pos = 0; pos < T; pos++) {
          const input = tf.tensor1d([tokRef], "int32");
          const want = model.decodeStep(ref, input).dataSync() as Float32Array;
          input.dispose();
          // the last position through decodeStep on the fast state (the LanguageModel interface)
          const got = pos < T - 1 ? fast.stepOnHost!(tokFast) : (() => {
            const t = tf.tensor1d([tokFast], "int32");
            const out = model.decodeStep(fast, t);
            t.dispose();
            return out.dataSync() as Float32Array;
          })();
          assertClose(got, want, 1e-5, `position ${pos}`);
          tokRef = chooseToken(want, sampling, rngRef);
          tokFast = chooseToken(got, sampling, rngFast, pos < T - 1 ? fast.blockMaxima!() : undefined);
          assert.equal(tokFast, tokRef, `token after position ${pos}`);
        }
        assert.equal(fast.length, T);
        assert.throws(
          () => fast.stepOnHost!(1),
          (e) => e instanceof LmpipeError && /is full/.test(e.message),
        );
        ref.dispose(), fast.dispose();
        if (blas) assert.ok(currentBlas()!.calls > calls0, "BLAS ran");
      } finally {
        setGemvBlasMinWork(oldMin), setBlasMinWork(oldMatMul);
        setWasmDecodeEnabled(true);
        model.dispose();
      }
    });
  }
}

Deno.test("gemv rule: the block's linears on lmpipe's kernels; the head on BLAS only when BLAS has threads", () => {
  assert.equal(kernelFor("gemv", "wasm", 512 * 128), "lmpipe");
  const head = kernelFor("gemv", "wasm", 50304 * 128);
  assert.equal(head, currentBlas() && blasThreads() > 1 ? "blas" : "lmpipe");
});

Deno.test("wasm decode: off with the switch, and for variants it does not cover", () => {
  const model = new Gpt({ ...GPT_PRESETS.tiny, contextLength: 8, norm: "rmsnorm" }, 1);
  try {
    assert.ok(!model.startDecode(1).stepOnHost, "RMSNorm: the op chain");
  } finally {
    model.dispose();
  }
  const plain = new Gpt({ ...GPT_PRESETS.tiny, contextLength: 8 }, 1);
  try {
    const s = plain.startDecode(1);
    assert.ok(s.stepOnHost);
    s.dispose();
    assert.ok(!plain.startDecode(2).stepOnHost, "batch 2: the op chain");
    setWasmDecodeEnabled(false);
    assert.equal(kernelFor("cachedDecode"), "ops");
    assert.ok(!plain.startDecode(1).stepOnHost);
  } finally {
    setWasmDecodeEnabled(true);
    plain.dispose();
  }
});

Deno.test("gemv kernels = float64 loops: tails, row strides, row and column ranges, bias or none", () => {
  const heap = new HeapView(tf.backend());
  const a = tf.tensor(randomArray(64 * 48, 1)), x = tf.tensor(randomArray(64, 2));
  const b = tf.tensor(randomArray(64, 3)), y = tf.zeros([64]);
  const A = a.dataSync(), X = x.dataSync(), Bv = b.dataSync();
  for (const [lda, n, r0, r1] of [[37, 13, 2, 11], [48, 48, 0, 30], [48, 3, 5, 6], [20, 20, 0, 0]]) {
    heap.f32.fill(-7, offset(y) >> 2, (offset(y) >> 2) + 64);
    heap.kernels.gemv_rows(offset(a), lda, offset(x), offset(y), r0, r1, n);
    const got = heap.f32.slice(offset(y) >> 2, (offset(y) >> 2) + 64);
    for (let r = 0; r < 64; r++) {
      let want = -7;
      if (r >= r0 && r < r1) {
        want = 0;
        for (let c = 0; c < n; c++) want += A[r * lda + c] * X[c];
      }
      assert.ok(
        Math.abs(got[r] - want) <= 1e-5 * (1 + Math.abs(want)),
        `gemv_rows lda ${lda} n ${n} row ${r}`,
      );
    }
  }
  for (
    const [lda, rows, c0, c1, bias] of [[41, 7, 3, 40, 1], [48, 48, 0, 48, 0], [33, 1, 0, 33, 1], [
      40,
      5,
      4,
      38,
      0,
    ]]
  ) {
    heap.f32.fill(-7, offset(y) >> 2, (offset(y) >> 2) + 64);
    heap.kernels.gemv_cols(offset(a), lda, offset(x), offset(b), offset(y), rows, c0, c1, bias);
    const got = heap.f32.slice(offset(y) >> 2, (offset(y) >> 2) + 64);
    for (let c = 0; c < 64; c++) {
      let want = -7;
      if (c >= c0 && c < c1) {
        want = bias ? Bv[c] : 0;
        for (let r = 0; r < rows; r++) want += X[r] * A[r * lda + c];
      }
      assert.ok(Math.abs(got[c] - want) <= 1e-5 * (1 + Math.abs(want)), `gemv_cols lda ${lda} col ${c}`);
    }
  }
  tf.dispose([a, x, b, y]);
});

Deno.test("top-k candidates = a sort's: ties, NaN, sizes around the block, k up to n", () => {
  const rng = new Rng(5);
  for (const n of [1, 15, 16, 17, 100, 1000, 5000]) {
    for (const k of [1, 2, 7, 64, n]) {
      if (k > n) continue;
      const v = Float32Array.from({ length: n }, () => rng.next() < 0.02 ? NaN : Math.floor(rng.next() * 40));
      const finite = [...v].filter((x) => !Number.isNaN(x)).sort((p, q) => q - p);
      const t = finite.length >= k ? finite[k - 1] : -Infinity;
      const want = [...v.keys()].filter((i) => v[i] >= t);
      assert.deepEqual(topKIds(v, n, k), want, `n ${n}, k ${k}`);
    }
  }
});

Deno.test("block_max kernel = blockMaxima; top-k candidates from a padded row's maxima = without", () => {
  const heap = new HeapView(tf.backend());
  const rng = new Rng(9);
  for (const n of [1, 15, 16, 17, 50, 64, 1000]) {
    const v = Float32Array.from(
      { length: n },
      () => rng.next() < 0.05 ? NaN : Math.floor(rng.next() * 30) - 40,
    );
    if (n >= 16) v.fill(NaN, 0, 16); // a block without a number
    if (n > 3) v.fill(100, n - 3); // the largest values lie past the cut below
    const x = tf.tensor(v), m = tf.zeros([Math.ceil(n / 16) + 1]);
    heap.kernels.block_max(offset(x), offset(m), n);
    const got = heap.f32.slice(offset(m) >> 2, (offset(m) >> 2) + Math.ceil(n / 16));
    assert.deepEqual([...got], [...blockMaxima(v, n)], `n ${n}`);
    for (const cut of [n, Math.max(1, n - 3)]) { // maxima over n values, top-k over fewer (allowedVocab)
      for (const k of [1, 5]) {
        if (k > cut) continue;
        assert.deepEqual(topKIds(v, cut, k, got), topKIds(v, cut, k), `n ${n}, first ${cut}, k ${k}`);
      }
    }
    tf.dispose([x, m]);
  }
});
