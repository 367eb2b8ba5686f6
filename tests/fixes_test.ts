// One test per TF.js gap filled by lib/tensor/patches/ (and the kernels of ops/ it registers): forward and gradient on every backend this
// machine has (cpu, wasm, webgpu), against plain-JS references or the stock cpu kernel.
import assert from "node:assert/strict";
import { BackendWasm } from "@tensorflow/tfjs-backend-wasm";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { wasmKernelStats } from "../lib/tensor/wasm/kernels.ts";
import { asOutOfMemory, EXIT, LmpipeError } from "../lib/errors.ts";
import { embeddingLookup, linear, maxRowsPerChunk, takeAlongLastAxis } from "../lib/nn.ts";
import { setIm2colChunkFloatsForTests } from "../lib/tensor/ops/conv2d/wasm.ts";
import { setWebGPUBindingLimitForTests } from "../lib/tensor/webgpu/limits.ts";
import { setOwnMatMulEnabled } from "../lib/tensor/ops/matmul/webgpu.ts";
import {
  assertClose,
  randomArray,
  type TestBackend,
  testBackends,
  webgpuStatus,
} from "../lib/tensor/testing.ts";

const backends = await testBackends();
const gpu = await webgpuStatus();
const TOL: Record<TestBackend, number> = { cpu: 1e-5, wasm: 1e-5, webgpu: 1e-4 };

/** Runs `fn` on backend `b` and returns the values of the tensors it produced, then frees them. */
async function on(b: TestBackend, fn: () => tf.Tensor[]): Promise<Float32Array[]> {
  await initBackend(b, { quiet: true });
  const before = tf.memory().numTensors;
  const ts = tf.tidy(fn);
  const out: Float32Array[] = [];
  for (const t of ts) out.push(Float32Array.from(await t.data()));
  tf.dispose(ts);
  assert.equal(tf.memory().numTensors, before, `${b}: tensors leaked`);
  return out;
}

function t(shape: number[], seed: number): tf.Tensor {
  return tf.tensor(randomArray(shape.reduce((a, b) => a * b, 1), seed), shape);
}

// --- 1. embedding gradient (UnsortedSegmentSum) -----------------------------------------------------
Deno.test("embedding lookup and its gradient (UnsortedSegmentSum) match a JS reference", async () => {
  const V = 50, C = 8, ids = [3, 7, 3, 0, 49, 7, 7, 12, 3, 1];
  const table = randomArray(V * C, 1), r = randomArray(ids.length * C, 2);
  const wantFwd = new Float32Array(ids.length * C), wantGrad = new Float32Array(V * C);
  ids.forEach((id, i) => {
    for (let c = 0; c < C; c++) {
      wantFwd[i * C + c] = table[id * C + c];
      wantGrad[id * C + c] += r[i * C + c];
    }
  });
  for (const b of backends) {
    const [fwd, grad, seg] = await on(b, () => {
      const tab = tf.tensor2d(table, [V, C]);
      const idT = tf.tensor2d(ids, [2, 5], "int32");
      const R = tf.tensor3d(r, [2, 5, C]);
      const f = (w: tf.Tensor) => tf.sum(tf.mul(embeddingLookup(w as tf.Tensor2D, idT), R));
      const seg = tf.unsortedSegmentSum(tf.tensor2d(r, [ids.length, C]), tf.tensor1d(ids, "int32"), V);
      return [embeddingLookup(tab, idT), tf.grad(f)(tab), seg];
    });
    assertClose(fwd, wantFwd, TOL[b], `${b} embedding forward`);
    assertClose(grad, wantGrad, TOL[b], `${b} embedding gradient`);
    assertClose(seg, wantGrad, TOL[b], `${b} unsortedSegmentSum`);
  }
});

// --- 2. conv2d filter gradient (Conv2DBackpropFilter on wasm) ---------------------------------------
Deno.test("conv2d gradients (x and filter, strides, padding, fused bias+relu) match cpu", async () => {
  const cases = [
    { x: [2, 7, 7, 3], w: [3, 3, 3, 4], s: 1, pad: "same" as const },
    { x: [2, 8, 8, 3], w: [3, 3, 3, 5], s: 2, pad: "same" as const },
    { x: [3, 6, 5, 2], w: [2, 3, 2, 4], s: 1, pad: "valid" as const },
  ];
  for (const [ci, c] of cases.entries()) {
    const runCase = () => {
      const x = t(c.x, 10 + ci), w = t(c.w, 20 + ci), bias = t([c.w[3]], 30 + ci);
      const plain = (xx: tf.Tensor, ww: tf.Tensor) =>
        tf.conv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, c.s, c.pad);
      const r = tf.sin(tf.mul(plain(x, w), 3)); // fixed weights for the loss
      const [gx, gw] = tf.grads((xx: tf.Tensor, ww: tf.Tensor) => tf.sum(tf.mul(plain(xx, ww), r)))([x, w]);
      const fused = (xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
        tf.sum(tf.mul(
          tf.fused.conv2d({
            x: xx as tf.Tensor4D,
            filter: ww as tf.Tensor4D,
            strides: c.s,
            pad: c.pad,
            bias: bb,
            activation: "relu",
          }),
          r,
        ));
      const [fx, fw, fb] = tf.grads(fused)([x, w, bias]);
      return [plain(x, w), gx, gw, fx, fw, fb];
    };
    const ref = await on("cpu", runCase);
    for (const b of backends.filter((b) => b !== "cpu")) {
      const got = await on(b, runCase);
      const names = ["forward", "dx", "dW", "fused dx", "fused dW", "fused dbias"];
      got.forEach((g, i) => assertClose(g, ref[i], TOL[b] * 10, `${b} case ${ci} ${names[i]}`));
    }
  }
});

Deno.test("wasm conv2d gradients are the same when im2col is split into chunks", async () => {
  const runCase = () => {
    const x = t([5, 6, 6, 3], 41), w = t([3, 3, 3, 4], 42);
    const f = (xx: tf.Tensor, ww: tf.Tensor) => tf.conv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, 2, "same");
    return tf.grads((xx: tf.Tensor, ww: tf.Tensor) => tf.sum(tf.square(f(xx, ww))))([x, w]);
  };
  const ref = await on("cpu", runCase);
  setIm2colChunkFloatsForTests(27 * 9 * 2); // two images per chunk: chunks of 2, 2, 1
  try {
    const got = await on("wasm", runCase);
    assertClose(got[0], ref[0], 1e-4, "wasm chunked dx");
    assertClose(got[1], ref[1], 1e-4, "wasm chunked dW");
  } finally {
    setIm2colChunkFloatsForTests(null);
  }
});

Deno.test("conv2d filter gradient matches a direct JS loop on every backend", async () => {
  const cases = [
    { x: [2, 5, 6, 3], w: [3, 3, 3, 4], s: 1, pad: "same" as const },
    { x: [2, 7, 7, 2], w: [3, 2, 2, 3], s: 2, pad: "same" as const },
    { x: [1, 6, 5, 2], w: [2, 3, 2, 2], s: 1, pad: "valid" as const },
  ];
  for (const [i, c] of cases.entries()) {
    const ci = tf.backend_util.computeConv2DInfo(
      c.x as [number, number, number, number],
      c.w as [number, number, number, number],
      c.s,
      1,
      c.pad,
    );
    const [B, H, W, Ci] = c.x, [KH, KW, , Co] = c.w, { outHeight: OH, outWidth: OW } = ci;
    const x = randomArray(B * H * W * Ci, 500 + i), r = randomArray(B * OH * OW * Co, 600 + i);
    const want = new Float32Array(KH * KW * Ci * Co);
    for (let b = 0; b < B; b++) {
      for (let oh = 0; oh < OH; oh++) {
        for (let ow = 0; ow < OW; ow++) {
          for (let kh = 0; kh < KH; kh++) {
            for (let kw = 0; kw < KW; kw++) {
              const h = oh * c.s + kh - ci.padInfo.top, w = ow * c.s + kw - ci.padInfo.left;
              if (h < 0 || h >= H || w < 0 || w >= W) continue;
              for (let ch = 0; ch < Ci; ch++) {
                for (let co = 0; co < Co; co++) {
                  want[((kh * KW + kw) * Ci + ch) * Co + co] += x[((b * H + h) * W + w) * Ci + ch] *
                    r[((b * OH + oh) * OW + ow) * Co + co];
                }
              }
            }
          }
        }
      }
    }
    for (const b of backends) {
      const [g] = await on(b, () => {
        const X = tf.tensor4d(x, c.x as [number, number, number, number]), R = tf.tensor(r, [B, OH, OW, Co]);
        const f = (ww: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(X, ww as tf.Tensor4D, c.s, c.pad), R));
        return [tf.grad(f)(t(c.w, 700 + i))];
      });
      assertClose(g, want, TOL[b] * 10, `${b} case ${i} dW`);
    }
  }
});

// --- 3. maxPool gradient when a whole window is negative --------------------------------------------
Deno.test("maxPool gradient with all-negative windows matches cpu", async () => {
  const runCase = () => {
    const x = tf.sub(tf.neg(tf.abs(t([2, 6, 6, 3], 51))), 1); // every value < -1
    const r = t([2, 3, 3, 3], 52), r2 = t([2, 3, 3, 3], 53);
    const g1 = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(xx as tf.Tensor4D, 2, 2, "valid"), r)))(x);
    const g2 = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(xx as tf.Tensor4D, 3, 2, "same"), r2)))(x);
    return [tf.maxPool(x as tf.Tensor4D, 2, 2, "valid"), g1, g2];
  };
  const ref = await on("cpu", runCase);
  for (const b of backends.filter((b) => b !== "cpu")) {
    const got = await on(b, runCase);
    ["forward", "grad 2x2 valid", "grad 3x3 s2 same"].forEach((n, i) =>
      assertClose(got[i], ref[i], TOL[b], `${b} ${n}`)
    );
  }
});

// --- 4. cumsum gradient along an inner axis ---------------------------------------------------------
Deno.test("cumsum gradient along an inner axis (exclusive/reverse) matches a JS reference", async () => {
  const [A, N, Z] = [3, 5, 2];
  const r = randomArray(A * N * Z, 61);
  for (const exclusive of [false, true]) {
    for (const reverse of [false, true]) {
      // d/dx_i of sum_j r_j * y_j, where y_j sums x_i over i <= j (or <, >=, > for the variants).
      const want = new Float32Array(A * N * Z);
      for (let a = 0; a < A; a++) {
        for (let z = 0; z < Z; z++) {
          for (let i = 0; i < N; i++) {
            let s = 0;
            for (let j = 0; j < N; j++) {
              const inc = reverse ? (exclusive ? i > j : i >= j) : (exclusive ? i < j : i <= j);
              if (inc) s += r[(a * N + j) * Z + z];
            }
            want[(a * N + i) * Z + z] = s;
          }
        }
      }
      for (const b of backends) {
        const [g] = await on(b, () => {
          const x = t([A, N, Z], 62), R = tf.tensor3d(r, [A, N, Z]);
          return [tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(tf.cumsum(xx, 1, exclusive, reverse), R)))(x)];
        });
        assertClose(g, want, TOL[b], `${b} cumsum grad exclusive=${exclusive} reverse=${reverse}`);
      }
    }
  }
});

// --- 5. batched matMul against a broadcast 2-D weight, and linear() -----------------------------------
Deno.test("matMul 3-D x broadcast 2-D weight: gradients match a JS reference, also via linear()", async () => {
  const [B, T, K, N] = [2, 3, 4, 5];
  const x = randomArray(B * T * K, 71), w = randomArray(K * N, 72), r = randomArray(B * T * N, 73);
  const bias = randomArray(N, 74);
  const wantDx = new Float32Array(B * T * K), wantDw = new Float32Array(K * N), wantDb = new Float32Array(N);
  for (let row = 0; row < B * T; row++) {
    for (let n = 0; n < N; n++) {
      const g = r[row * N + n];
      wantDb[n] += g;
      for (let k = 0; k < K; k++) {
        wantDx[row * K + k] += g * w[k * N + n];
        wantDw[k * N + n] += x[row * K + k] * g;
      }
    }
  }
  for (const b of backends) {
    const got = await on(b, () => {
      const X = tf.tensor3d(x, [B, T, K]), W = tf.tensor2d(w, [K, N]), R = tf.tensor3d(r, [B, T, N]);
      const Wt = tf.transpose(W), bb = tf.tensor1d(bias);
      const mm = tf.grads((xx: tf.Tensor, ww: tf.Tensor) =>
        tf.sum(tf.mul(tf.matMul(xx as tf.Tensor3D, ww as tf.Tensor3D), R))
      )([X, W]);
      const mmT = tf.grads((xx: tf.Tensor, ww: tf.Tensor) =>
        tf.sum(tf.mul(tf.matMul(xx as tf.Tensor3D, ww as tf.Tensor3D, false, true), R))
      )([X, Wt]);
      const lin = tf.grads((xx: tf.Tensor, ww: tf.Tensor, b1: tf.Tensor) =>
        tf.sum(tf.mul(linear(xx, ww as tf.Tensor2D, b1 as tf.Tensor1D), R))
      )([X, W, bb]);
      return [...mm, mmT[0], tf.transpose(mmT[1]), ...lin];
    });
    const names = ["dx", "dW", "dx (transposeB)", "dW (transposeB)", "linear dx", "linear dW", "linear db"];
    const want = [wantDx, wantDw, wantDx, wantDw, wantDx, wantDw, wantDb];
    got.forEach((g, i) => assertClose(g, want[i], TOL[b], `${b} ${names[i]}`));
  }
});

Deno.test("matMul 4-D x broadcast 3-D: gradient summed over the broadcast batch dimension", async () => {
  const runCase = () => {
    const a = t([2, 3, 4, 5], 81), w = t([3, 5, 2], 82), r = t([2, 3, 4, 2], 83);
    // reference: explicit tiling, so no broadcast happens inside matMul
    const f = (aa: tf.Tensor, ww: tf.Tensor) =>
      tf.sum(tf.mul(tf.matMul(aa as tf.Tensor4D, ww as tf.Tensor4D), r));
    const tiled = (aa: tf.Tensor, ww: tf.Tensor) =>
      tf.sum(
        tf.mul(tf.matMul(aa as tf.Tensor4D, tf.tile(tf.expandDims(ww, 0), [2, 1, 1, 1]) as tf.Tensor4D), r),
      );
    return [...tf.grads(f)([a, w]), ...tf.grads(tiled)([a, w])];
  };
  for (const b of backends) {
    const [da, dw, ta, tw] = await on(b, runCase);
    assert.equal(dw.length, 3 * 5 * 2);
    assertClose(da, ta, TOL[b], `${b} da`);
    assertClose(dw, tw, TOL[b], `${b} dw`);
  }
});

// --- 6. addN with 8 or more inputs --------------------------------------------------------------------
Deno.test("addN of 12 inputs sums all of them (forward and gradient)", async () => {
  const n = 12, len = 10;
  const xs = Array.from({ length: n }, (_, i) => randomArray(len, 90 + i));
  const want = new Float32Array(len);
  for (const x of xs) x.forEach((v, j) => want[j] += v);
  const r = randomArray(len, 99);
  for (const b of backends) {
    const got = await on(b, () => {
      const ts = xs.map((x) => tf.tensor1d(x)), R = tf.tensor1d(r);
      const gs = tf.grads((...a: tf.Tensor[]) => tf.sum(tf.mul(tf.addN(a), R)))(ts);
      return [tf.addN(ts), ...gs];
    });
    assertClose(got[0], want, TOL[b], `${b} addN forward`);
    for (let i = 1; i <= n; i++) assertClose(got[i], r, TOL[b], `${b} addN gradient ${i}`);
  }
});

// --- 7. webgpu tensors over the binding limit ---------------------------------------------------------
Deno.test({
  name: "webgpu refuses tensors over the binding limit instead of returning garbage",
  ignore: !gpu.ok,
  fn: async () => {
    await initBackend("webgpu", { quiet: true });
    const limit = 64 * 1024; // bytes: 16384 floats
    setWebGPUBindingLimitForTests(limit);
    try {
      assert.equal(maxRowsPerChunk(1000), 16);
      const a = t([16, 8], 101), b = t([8, 1000], 102);
      const ok = tf.matMul(a, b); // 16 x 1000 floats = 64000 bytes: fits
      const ref = await on("cpu", () => [tf.matMul(t([16, 8], 101), t([8, 1000], 102))]);
      await initBackend("webgpu", { quiet: true });
      assertClose(await ok.data(), ref[0], 1e-4, "webgpu matMul under the limit");
      const big = t([17, 8], 103);
      // lmpipe's GEMM writes an output over the limit in row blocks (tests/webgpu_matmul_test.ts), but
      // no TF.js program may read it; with TF.js's stock matMul the matMul itself is refused
      const over = tf.matMul(big, b);
      assert.throws(() => tf.neg(over), /binding limit.*garbage.*maxRowsPerChunk/s);
      setOwnMatMulEnabled(false);
      try {
        assert.throws(() => tf.matMul(big, b), /binding limit.*garbage.*maxRowsPerChunk/s);
      } finally {
        setOwnMatMulEnabled(true);
      }
      tf.dispose([a, b, ok, big, over]);
    } finally {
      setWebGPUBindingLimitForTests(null);
    }
    assert.ok(maxRowsPerChunk(50304) >= 640, "a real device allows at least 640 rows of 50304 floats");
  },
});

// --- 8. oneHot float32 and gather with batchDims=1 on wasm --------------------------------------------
Deno.test("oneHot float32 and gather batchDims=1 (forward and gradient) match a JS reference", async () => {
  const [R, V] = [4, 6], idx = [5, 0, 2, 2], x = randomArray(R * V, 111), r = randomArray(R, 112);
  const wantOne = new Float32Array(R * V), wantPick = new Float32Array(R), wantGrad = new Float32Array(R * V);
  idx.forEach((k, i) => {
    wantOne[i * V + k] = 1;
    wantPick[i] = x[i * V + k];
    wantGrad[i * V + k] = r[i];
  });
  for (const b of backends) {
    const got = await on(b, () => {
      const X = tf.tensor2d(x, [R, V]), I = tf.tensor1d(idx, "int32"), Rr = tf.tensor1d(r);
      const pickB = (xx: tf.Tensor) => tf.reshape(tf.gather(xx, tf.reshape(I, [R, 1]), 1, 1), [R]);
      const pickF = (xx: tf.Tensor) => takeAlongLastAxis(xx as tf.Tensor2D, I);
      return [
        tf.oneHot(I, V, 1, 0, "float32"),
        pickB(X),
        tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(pickB(xx), Rr)))(X),
        pickF(X),
        tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(pickF(xx), Rr)))(X),
      ];
    });
    const names = ["oneHot", "gather batchDims=1", "its gradient", "takeAlongLastAxis", "its gradient"];
    [wantOne, wantPick, wantGrad, wantPick, wantGrad].forEach((w, i) =>
      assertClose(got[i], w, TOL[b], `${b} ${names[i]}`)
    );
  }
});

// --- wasm matMul rewritten onto XNNPACK's fast path (folded, transposed, batched) -------------------
Deno.test("matMul in every layout (2-D, transposed, folded batch, batched, broadcast) matches cpu", async () => {
  // Small sizes take TF.js's own loop, larger ones lmpipe's XNNPACK rewrites: both, in every layout.
  const cases: { a: number[]; b: number[]; tA: boolean; tB: boolean }[] = [];
  for (const [M, K, N] of [[3, 5, 4], [16, 32, 40]]) {
    for (const tA of [false, true]) {
      for (const tB of [false, true]) {
        const A = tA ? [K, M] : [M, K], Bm = tB ? [N, K] : [K, N];
        cases.push({ a: A, b: Bm, tA, tB }); // 2-D
        cases.push({ a: [2, ...A], b: Bm, tA, tB }); // batch x 2-D
        cases.push({ a: [2, 3, ...A], b: [2, 3, ...Bm], tA, tB }); // batched
        cases.push({ a: A, b: [3, ...Bm], tA, tB }); // 2-D x batch
      }
    }
  }
  for (const [i, c] of cases.entries()) {
    const runCase = () => {
      const a = t(c.a, 200 + i), b = t(c.b, 300 + i);
      const f = (x: tf.Tensor, y: tf.Tensor) => tf.matMul(x, y, c.tA, c.tB);
      const y = f(a, b), r = t(y.shape, 400 + i);
      return [y, ...tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.mul(f(x, w), r)))([a, b])];
    };
    const ref = await on("cpu", runCase);
    for (const b of backends.filter((b) => b !== "cpu")) {
      const got = await on(b, runCase);
      ["forward", "da", "db"].forEach((n, k) =>
        assertClose(got[k], ref[k], TOL[b], `${b} matMul a[${c.a}] b[${c.b}] tA=${c.tA} tB=${c.tB} ${n}`)
      );
    }
  }
});

// --- 9. wasm out of memory ---------------------------------------------------------------------------
Deno.test("wasm: a failed heap allocation is a clear error, not a tensor at address 0", () => {
  // A stand-in for BackendWasm's state, whose malloc fails (returns 0) like a full 4 GiB heap's.
  const fake = (mallocResult: number) => ({
    dataIdNextNumber: 1,
    dataIdMap: new Map(),
    wasm: {
      _malloc: () => mallocResult,
      HEAPU8: new Uint8Array(64),
      tfjs: { registerTensor: () => {}, disposeData: () => {} },
    },
  });
  // deno-lint-ignore no-explicit-any
  const move = (BackendWasm.prototype as any).move;
  const full = fake(0), id = {};
  assert.throws(
    () => move.call(full, id, new Float32Array([1, 2]), [2], "float32", 1),
    (e: unknown) => {
      assert.ok(e instanceof LmpipeError && e.exitCode === EXIT.memory, String(e)); // exit code 6, not a bug report
      assert.match(e.message, /wasm: out of memory allocating .*--batch-size/);
      return true;
    },
  );
  assert.equal(full.dataIdMap.size, 0);
  assert.deepEqual(Array.from(full.wasm.HEAPU8.subarray(0, 8)), [0, 0, 0, 0, 0, 0, 0, 0]); // nothing written
  const ok = fake(8);
  move.call(ok, id, new Float32Array([1, 2]), [2], "float32", 1);
  assert.deepEqual(Array.from(new Float32Array(ok.wasm.HEAPU8.buffer, 8, 2)), [1, 2]);
  assert.equal(ok.dataIdMap.get(id).memoryOffset, 8);
});

Deno.test("an allocation failure no check caught first still ends with the memory exit code", () => {
  const js = asOutOfMemory(new RangeError("Array buffer allocation failed"));
  assert.ok(js && js.exitCode === EXIT.memory && /--batch-size/.test(js.message));
  const gpu = new Error("webgpu: out of memory (createBuffer)");
  gpu.name = "GpuOutOfMemory";
  assert.equal(asOutOfMemory(gpu)?.exitCode, EXIT.memory);
  assert.equal(asOutOfMemory(new RangeError("Invalid array length")), null); // a bug, reported as one
  assert.equal(asOutOfMemory("out of memory"), null);
});

Deno.test("wasm Sum over leading axes (bias gradients) matches float64 column sums; other axes untouched", async () => {
  await initBackend("wasm", { quiet: true });
  const x3 = randomArray(4 * 5 * 6, 21);
  const cases: { shape: number[]; axis: number | number[]; keepDims?: boolean }[] = [
    { shape: [1024, 37], axis: 0 },
    { shape: [4, 5, 6], axis: [0, 1], keepDims: true },
    { shape: [4, 5, 6], axis: [1, 0] },
    { shape: [4, 5, 6], axis: [-3] },
    { shape: [4, 5, 6], axis: 1 }, // not leading: TF.js's own kernel
    { shape: [4, 5, 6], axis: [0, 1, 2] }, // all axes: TF.js's own kernel
  ];
  for (const { shape, axis, keepDims = false } of cases) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = n === x3.length ? x3 : randomArray(n, 22);
    const got = tf.sum(tf.tensor(data, shape), axis, keepDims);
    // float64 reference by brute force over every index
    const axes = (Array.isArray(axis) ? axis : [axis]).map((a) => (a + shape.length) % shape.length);
    const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
    const want = new Float64Array(outShape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < n; i++) {
      let rest = i, o = 0, stride = 1;
      for (let d = shape.length - 1; d >= 0; d--) {
        const c = rest % shape[d];
        rest = Math.floor(rest / shape[d]);
        if (!axes.includes(d)) o += c * stride;
        stride *= outShape[d];
      }
      want[o] += data[i];
    }
    const wantShape = keepDims ? outShape : shape.filter((_, i) => !axes.includes(i));
    assert.deepEqual(got.shape, wantShape, `shape for ${JSON.stringify({ shape, axis, keepDims })}`);
    assertClose(got.dataSync(), want, 1e-6, `sum ${JSON.stringify({ shape, axis })}`);
  }
});

// --- Slice, SplitV, Unpack on wasm straight from the heap ------------------------------------------
Deno.test("wasm slice, split and unstack copy exactly what cpu's stock kernels copy (every rank, axis and dtype)", async () => {
  if (!backends.includes("wasm")) return;
  const shapes = [[7], [5, 6], [3, 4, 5], [2, 3, 4, 5], [2, 2, 3, 2, 3]];
  const cases = (shape: number[]) => {
    const out: { begin: number[]; size: number[] }[] = [];
    // whole; a cut on each axis alone (the runs then span every axis after it); cuts everywhere; -1 sizes;
    // an empty slice
    out.push({ begin: shape.map(() => 0), size: shape.slice() });
    shape.forEach((d, a) => {
      const begin = shape.map(() => 0), size = shape.slice();
      begin[a] = 1, size[a] = Math.max(1, d - 2);
      out.push({ begin, size });
    });
    out.push({ begin: shape.map((d) => Math.min(1, d - 1)), size: shape.map((d) => Math.max(1, d - 2)) });
    out.push({ begin: shape.map((d) => d - 1), size: shape.map(() => -1) });
    out.push({ begin: shape.map(() => 0), size: shape.map((d, a) => (a === 0 ? 0 : d)) });
    return out;
  };
  const run = async (b: TestBackend) => {
    await initBackend(b, { quiet: true });
    const before = tf.memory().numTensors;
    const got: number[][] = [];
    for (const [si, shape] of shapes.entries()) {
      const n = shape.reduce((a, c) => a * c, 1);
      const f = tf.tensor(randomArray(n, 300 + si), shape);
      const i = tf.tensor(Int32Array.from({ length: n }, (_, k) => k * 7 - 3), shape, "int32");
      const bo = tf.tensor(
        Uint8Array.from({ length: n }, (_, k) => (k * 5) % 3 === 0 ? 1 : 0),
        shape,
        "bool",
      );
      for (const x of [f, i, bo]) {
        for (const { begin, size } of cases(shape)) {
          got.push([...tf.tidy(() => tf.slice(x, begin, size).dataSync())]);
        }
        for (let a = 0; a < shape.length; a++) {
          const d = shape[a];
          const parts = tf.tidy(() => tf.split(x, d > 2 ? [1, d - 3, 2] : [d], a));
          for (const p of parts) got.push([...p.dataSync()], p.shape);
          const rows = tf.tidy(() => tf.unstack(x, a));
          for (const r of rows) got.push([...r.dataSync()], r.shape);
          tf.dispose([...parts, ...rows]);
        }
      }
      tf.dispose([f, i, bo]);
    }
    assert.equal(tf.memory().numTensors, before, `${b}: tensors leaked`);
    return got;
  };
  const want = await run("cpu"), got = await run("wasm");
  assert.equal(got.length, want.length);
  for (let k = 0; k < want.length; k++) assert.deepEqual(got[k], want[k], `piece ${k}`);
});

// --- Tile's gradient (patches/gradients.ts) ----------------------------------------------------------
Deno.test("tile gradient: dy summed over the repeats, at ranks 1-5 and repeats of 1, against a JS reference", async () => {
  const cases: [number[], number[]][] = [
    [[3], [4]],
    [[1, 5], [6, 1]],
    [[2, 3], [3, 2]],
    [[2, 1, 3], [1, 4, 1]],
    [[1, 2, 1, 3], [2, 1, 3, 1]],
    [[2, 1, 2, 1, 2], [1, 3, 1, 2, 1]],
    [[2, 2], [1, 1]],
  ];
  for (const b of backends) {
    for (const [ci, [shape, reps]] of cases.entries()) {
      const outShape = shape.map((s, i) => s * reps[i]);
      const n = outShape.reduce((a, c) => a * c, 1);
      const dy = randomArray(n, 400 + ci);
      const [got] = await on(
        b,
        () => [
          tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.tile(x, reps), t(outShape, 400 + ci))))(t(shape, 500)),
        ],
      );
      // reference: every output position adds its dy to the input position it copies
      const want = new Float32Array(shape.reduce((a, c) => a * c, 1));
      const inStrides = shape.map((_, i) => shape.slice(i + 1).reduce((a, c) => a * c, 1));
      const outStrides = outShape.map((_, i) => outShape.slice(i + 1).reduce((a, c) => a * c, 1));
      for (let o = 0; o < n; o++) {
        let src = 0;
        outShape.forEach((
          _,
          i,
        ) => (src += (Math.floor(o / outStrides[i]) % outShape[i] % shape[i]) * inStrides[i]));
        want[src] += dy[o];
      }
      assertClose(got, want, TOL[b], `${b}: tile [${shape}] x [${reps}]`);
    }
  }
});

// --- Mean's gradient (patches/gradients.ts) ----------------------------------------------------------
Deno.test("mean gradient: dy / n broadcast over the averaged axes (any axes, keepDims), no host-made ones", async () => {
  const cases: [number[], number | number[], boolean][] = [
    [[4, 3, 3, 5], [1, 2], false], // an image model's global average pool
    [[4, 3, 3, 5], [1, 2], true],
    [[6], 0, false],
    [[2, 3, 4], -1, false],
    [[2, 3, 4], [0, 2], true],
  ];
  for (const b of backends) {
    for (const [ci, [shape, axis, keepDims]] of cases.entries()) {
      const axes = (Array.isArray(axis) ? axis : [axis]).map((a) => (a < 0 ? a + shape.length : a));
      const outShape = shape.filter((_, i) => !axes.includes(i) || keepDims).map((d, i) =>
        keepDims && axes.includes(i) ? 1 : d
      );
      const nOut = outShape.reduce((p, c) => p * c, 1);
      const dy = randomArray(nOut, 700 + ci);
      const made: string[] = [];
      const [got] = await on(b, () => {
        const w = t(outShape, 700 + ci), x = t(shape, 800);
        // deno-lint-ignore no-explicit-any
        const engine = tf.engine() as any;
        const makeTensor = engine.makeTensor;
        engine.makeTensor = (v: unknown, s: number[], d: string, be: unknown) => {
          if (s.length > 0) made.push(`[${s}]`);
          return makeTensor.call(engine, v, s, d, be);
        };
        try {
          return [tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.mean(x, axis, keepDims), w)))(x)];
        } finally {
          engine.makeTensor = makeTensor;
        }
      });
      // reference: input position i gets dy of the output it is averaged into, over n
      const n = axes.reduce((p, a) => p * shape[a], 1);
      const size = shape.reduce((p, c) => p * c, 1);
      const strides = shape.map((_, i) => shape.slice(i + 1).reduce((p, c) => p * c, 1));
      const want = new Float32Array(size);
      for (let i = 0; i < size; i++) {
        let o = 0;
        for (let d = 0; d < shape.length; d++) {
          if (axes.includes(d)) continue;
          o = o * shape[d] + (Math.floor(i / strides[d]) % shape[d]);
        }
        want[i] = dy[o] / n;
      }
      assertClose(got, want, TOL[b], `${b}: mean [${shape}] over ${JSON.stringify(axis)}`);
      assert(!made.includes(`[${shape}]`), `${b}: a tensor of x's shape was made on the host (${made})`);
    }
  }
});

// --- GatherV2's gradient along axis 0 (patches/gradients.ts) -----------------------------------------
Deno.test("gather gradient along axis 0: a segment sum of dy over repeated rows, without identity transposes", async () => {
  const cases: [number[], number[]][] = [
    [[7, 3], [0, 2, 2, 6, 0]], // repeated rows, as token ids repeat
    [[5, 2, 3], [4, 1]], // rank 3
    [[6], [5, 5, 1]], // rank 1
  ];
  for (const b of backends) {
    for (const [ci, [shape, idx]] of cases.entries()) {
      const inner = shape.slice(1).reduce((p, c) => p * c, 1);
      const dy = randomArray(idx.length * inner, 900 + ci);
      const kernels: string[] = [];
      const [got] = await on(b, () => {
        const x = t(shape, 950 + ci), w = t([idx.length, ...shape.slice(1)], 900 + ci);
        const ids = tf.tensor1d(idx, "int32");
        // deno-lint-ignore no-explicit-any
        const engine = tf.engine() as any;
        const runKernel = engine.runKernel;
        engine.runKernel = (
          k: string,
          i: unknown,
          a: unknown,
        ) => (kernels.push(k), runKernel.call(engine, k, i, a));
        try {
          return [tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.gather(x, ids), w)))(x)];
        } finally {
          engine.runKernel = runKernel;
        }
      });
      const want = new Float32Array(shape.reduce((p, c) => p * c, 1));
      idx.forEach((row, i) => {
        for (let j = 0; j < inner; j++) want[row * inner + j] += dy[i * inner + j];
      });
      assertClose(got, want, TOL[b], `${b}: gather [${shape}] at ${idx}`);
      assert(!kernels.includes("Transpose"), `${b}: the gradient ran ${kernels}`);
    }
  }
  // another axis keeps TF.js's gradient, which must still be right
  const [got] = await on("cpu", () => [
    tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.gather(x, tf.tensor1d([1, 1, 0], "int32"), 1), t([2, 3], 5))))(
      t([2, 2], 6),
    ),
  ]);
  const w = randomArray(6, 5);
  assertClose(
    got,
    Float32Array.from([w[2], w[0] + w[1], w[5], w[3] + w[4]]),
    TOL.cpu,
    "cpu: gather along axis 1",
  );
});

// --- GatherV2 of whole rows on wasm (patches/wasm.ts: a copy per run of >= 64 values) -----------------
Deno.test("gather with batchDims 0: rows of 64+ values (copied per row on wasm) and short ones match a JS reference", async () => {
  const cases: [number[], number[], number][] = [
    [[50, 64], [3, 0, 49, 3, 17], 0], // the token embedding's layout, repeated ids
    [[9, 130], [8, 1], 0], // a run that is not a multiple of the SIMD width
    [[4, 6, 70], [5, 0, 5, 2], 1], // axis 1: runs of 70 inside each outer slice
    [[30, 5], [29, 0, 7], 0], // runs of 5: TF.js's own loop
  ];
  for (const b of backends) {
    for (const [ci, [shape, ids, axis]] of cases.entries()) {
      const xv = randomArray(shape.reduce((p, q) => p * q, 1), 900 + ci);
      const [got] = await on(b, () => [tf.gather(tf.tensor(xv, shape), tf.tensor1d(ids, "int32"), axis)]);
      const outer = shape.slice(0, axis).reduce((p, q) => p * q, 1);
      const run = shape.slice(axis + 1).reduce((p, q) => p * q, 1), dim = shape[axis];
      const want = new Float32Array(outer * ids.length * run);
      for (let o = 0; o < outer; o++) {
        ids.forEach((k, n) => {
          want.set(xv.subarray((o * dim + k) * run, (o * dim + k + 1) * run), (o * ids.length + n) * run);
        });
      }
      assert.deepEqual(got, want, `${b}: gather [${shape}] at ${ids} along ${axis}`);
    }
  }
  await initBackend("wasm", { quiet: true });
  assert.throws(
    () => tf.tidy(() => tf.gather(tf.zeros([4, 64]), tf.tensor1d([1, 4], "int32")).dataSync()),
    /index 4 is out of range \[0, 4\)/,
  );
  // along axis 0 wasm runs lmpipe's kernel (ops/gather/wasm.ts): its rows are counted; int32 tables too, and
  // a gather big enough to share out between the threads
  for (
    const [rows, run, n, dtype] of [[50, 64, 5, "float32"], [300, 128, 6000, "float32"], [
      40,
      64,
      7,
      "int32",
    ]] as const
  ) {
    const xv = Array.from({ length: rows * run }, (_, i) => (dtype === "int32" ? i : Math.sin(i)));
    const ids = Array.from({ length: n }, (_, i) => (i * 7919) % rows);
    const before = wasmKernelStats().rows;
    const got = tf.tidy(() =>
      tf.gather(tf.tensor(xv, [rows, run], dtype), tf.tensor1d(ids, "int32")).dataSync()
    );
    assert.equal(wasmKernelStats().rows - before, n, `gather [${rows}, ${run}] ${dtype}: rows on the kernel`);
    const want = dtype === "int32" ? new Int32Array(n * run) : new Float32Array(n * run);
    ids.forEach((k, i) => want.set(xv.slice(k * run, (k + 1) * run), i * run));
    assert.deepEqual(got, want, `gather [${rows}, ${run}] ${dtype} at ${n} ids`);
  }
  const gathered = wasmKernelStats().rows;
  assert.throws(
    () => tf.tidy(() => tf.gather(tf.zeros([4, 64]), tf.tensor1d([0, -1], "int32")).dataSync()),
    /index -1 is out of range \[0, 4\): position 1/,
  );
  assert.equal(wasmKernelStats().rows, gathered, "nothing copied for a bad index");
});
