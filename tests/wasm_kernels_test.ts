// lmpipe's own wasm kernels (lib/tensor/wasm/kernels.wat, run by wasm/kernels.ts on several threads):
// the vocabulary softmax and tanh match float64 loops on every length remainder and on special values,
// AdamW is bit-identical to lib/optim.ts's op chain, the gradient norm's sum of squares is float64-exact
// before its last rounding, all give bit-identical results on 1 and 2 threads
// (with the worker proven to take work), the loss and its gradients stay where TF.js's op
// chain puts them, and the committed kernel bytes are those of the committed .wat.
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { softmaxRows, softmaxRowsByOps } from "../lib/tensor/ops/softmax_rows/mod.ts";
import {
  MEMORY_BOUND_MIN_VALUES,
  setWasmKernelsEnabled,
  wasmKernelStats,
  wasmKernelThreads,
} from "../lib/tensor/wasm/kernels.ts";
import { tiedCrossEntropy } from "../lib/loss.ts";
import { layerNorm, layerNormByOps } from "../lib/tensor/ops/layer_norm/mod.ts";
import { gelu, geluByOps } from "../lib/tensor/ops/gelu/mod.ts";
import { assertClose, randomArray } from "../lib/tensor/testing.ts";
import { generate, KERNELS } from "../scripts/build_wasm.ts";
import { setDnnlConvs } from "../lib/tensor/kernel_choice.ts";
import { denoChildJson } from "./helpers_run.ts";

function child(threads: string, relaxed = "1") {
  return denoChildJson(["run", "-A", "tests/helpers_wasm_kernels_child.ts"], {
    LMPIPE_WASM_THREADS: threads,
    LMPIPE_WASM_RELAXED: relaxed,
  });
}

/** Runs fn with the wasm kernels on or off, restoring the previous state. */
function withKernels<T>(on: boolean, fn: () => T): T {
  const old = setWasmKernelsEnabled(on);
  try {
    return fn();
  } finally {
    setWasmKernelsEnabled(old);
  }
}

Deno.test("wasm kernels: match float64 on 1 and 2 threads, bit-identical between them", async () => {
  // and the build without relaxed SIMD (the softmax's multiply-adds unfused), on 1 thread
  const [one, two, plain] = [await child("1"), await child("2"), await child("1", "0")];
  assert.equal(one.threads, 1, one.backend);
  assert.equal(two.threads, 2, two.backend);
  assert.equal(one.rowsOnWorkers, 0);
  assert.ok(two.rowsOnWorkers > 0, "the worker thread never took a row");
  assert.deepEqual([one.relaxed, two.relaxed, plain.relaxed], [true, true, false], "relaxed SIMD build used");
  for (const r of [one, two, plain]) {
    assert.equal(r.mErr, 0, "row maxima are exact");
    // the softmax's exp: ~1 ulp (8.3e-8 measured with fused multiply-adds, 1.1e-7 without)
    assert.ok(r.eErr < 1.5e-7, `exp relative error ${r.eErr}`);
    assert.ok(r.sErr < 5e-7, `row sum relative error ${r.sErr}`);
    assert.equal(r.statsSame, true, "softmaxStatsAtTargets: m and s differ from softmaxRows', or x changed");
    assert.deepEqual(r.specialS.map((v: string) => v === "NaN"), [true, false, false, false]);
    const want = [Math.exp(-5), 0, 1, Math.exp(-4)]; // row [0, -Infinity, 5, 1]: exp(-Infinity) is 0
    assertClose(r.specialE, want, 1e-6, "the row with -Infinity");
    assert.equal(r.specialE[1], 0);
    // row [0, -87.5, -88.5, -1000]: a denormal, then 0 where exp is below 2^-126.5 (exactly 0, no NaN)
    const tiny = Math.exp(-87.5);
    assert.ok(
      Math.abs(r.specialTiny[1] - tiny) < 1e-6 * tiny,
      `exp(-87.5) = ${r.specialTiny[1]}, want ${tiny}`,
    );
    assert.deepEqual([r.specialTiny[0], r.specialTiny[2], r.specialTiny[3]], [1, 0, 0]);
    assert.ok(r.tanhErr < 5e-7, `tanh relative error ${r.tanhErr}`);
    assert.equal(r.adamWIdentical, true, "AdamW kernel differs from the op chain");
    // float64 sums: only the final rounding to float32 (1.7e-8 measured); the op chain's float32 sums
    // drift further (4.7e-5 on these 400k values)
    assert.ok(r.sumSquaresErr < 1.2e-7, `sum of squares: relative error ${r.sumSquaresErr} against float64`);
    assert.ok(r.sumSquaresChainErr < 2e-4, `sum of squares: ${r.sumSquaresChainErr} from the op chain`);
    // inf, NaN, both (NaN), and squares whose sum passes float32's largest value (inf: an overflow)
    assert.deepEqual(r.sumSquaresSpecial, ["Infinity", "NaN", "NaN", "Infinity"]);
    assert.ok(r.imageNormErr < 1e-4, `image norm: relative error ${r.imageNormErr} against float64`);
    const t = (x: number) => String(Math.fround(Math.tanh(x)));
    assert.deepEqual(r.tanhSpecial, [
      "NaN",
      "-0",
      "0",
      "1",
      "-1",
      r.tanhSpecial[5],
      r.tanhSpecial[6],
      "1",
      "-1",
    ]);
    assertClose(
      [Number(r.tanhSpecial[5]), Number(r.tanhSpecial[6])],
      [Number(t(0.625)), Number(t(-0.625))],
      3e-7,
      "tanh at the branch boundary",
    );
  }
  assert.equal(two.hash, one.hash, "outputs differ between 1 and 2 threads");
});

Deno.test("softmaxRows on cpu is the op chain; on wasm the kernel agrees with it", async () => {
  const x = randomArray(7 * 301, 3).map((v) => v * 30);
  for (const backend of ["cpu", "wasm"] as const) {
    await initBackend(backend, { quiet: true });
    const xb = tf.tensor2d(x, [7, 301]);
    const got = softmaxRows(xb), want = softmaxRowsByOps(xb);
    assert.deepEqual(got.e.shape, [7, 301]);
    assert.deepEqual(got.s.shape, [7, 1]);
    assertClose(got.e.dataSync(), want.e.dataSync(), 1e-6, `${backend} e`);
    assertClose(got.m.dataSync(), want.m.dataSync(), 0, `${backend} m`);
    assertClose(got.s.dataSync(), want.s.dataSync(), 1e-6, `${backend} s`);
  }
});

Deno.test("tiedCrossEntropy: same loss and gradients with the wasm kernels as with the op chain", async () => {
  await initBackend("wasm", { quiet: true });
  const [N, C, V] = [40, 16, 1003];
  const h = tf.tensor2d(randomArray(N * C, 11), [N, C]);
  const w = tf.tensor2d(randomArray(V * C, 12).map((v) => v * 2), [V, C]);
  const t = tf.tensor1d(Array.from({ length: N }, (_, i) => (i * 389) % V), "int32");
  const f = (kernels: boolean) =>
    withKernels(kernels, () => {
      const g = tf.grads((a, b) =>
        tiedCrossEntropy(a as tf.Tensor2D, b as tf.Tensor2D, t, { chunkRows: 16 })
      );
      const loss = tiedCrossEntropy(h, w, t, { chunkRows: 16 }).dataSync()[0];
      return { loss, grads: g([h, w]).map((x) => x.dataSync()) };
    });
  const [withKernel, withOps] = [f(true), f(false)];
  assert.ok(
    Math.abs(withKernel.loss - withOps.loss) < 1e-5 * withOps.loss,
    `${withKernel.loss} vs ${withOps.loss}`,
  );
  assertClose(withKernel.grads[0], withOps.grads[0], 1e-5, "dL/dh");
  assertClose(withKernel.grads[1], withOps.grads[1], 1e-5, "dL/dW");
});

Deno.test("wasm tanh kernel: gradients through it match the cpu backend; off, TF.js's own runs", async () => {
  const x = randomArray(1000, 9).map((v) => v * 4);
  const grad = () => {
    const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.tanh(a), tf.tanh(a))))(tf.tensor1d(x));
    return g.dataSync();
  };
  await initBackend("cpu", { quiet: true });
  const want = grad();
  await initBackend("wasm", { quiet: true });
  assertClose(grad(), want, 2e-6, "d/dx sum(tanh(x)^2), kernel");
  assertClose(withKernels(false, grad), want, 2e-6, "d/dx sum(tanh(x)^2), TF.js's tanh");
});

Deno.test("wasm LayerNorm kernels: forward and all gradients match float64 and the op chain", async () => {
  await initBackend("wasm", { quiet: true });
  for (
    const [rows, C, withBias] of [[1, 4, true], [3, 12, false], [37, 128, true], [1024, 64, true]] as const
  ) {
    const x = randomArray(rows * C, rows + C).map((v, i) => v * 3 + (i % C === 0 ? 5 : 0));
    const w = randomArray(C, 2).map((v) => 1 + v / 2), b = randomArray(C, 3);
    const dy = randomArray(rows * C, 4);
    // float64 reference: y, and the gradients of sum(y * dy)
    const want = {
      y: new Float64Array(rows * C),
      dx: new Float64Array(rows * C),
      dw: new Float64Array(C),
      db: new Float64Array(C),
    };
    for (let r = 0; r < rows; r++) {
      const xr = x.subarray(r * C, (r + 1) * C), dr = dy.subarray(r * C, (r + 1) * C);
      const mean = xr.reduce((a, v) => a + v, 0) / C;
      const rstd = 1 / Math.sqrt(xr.reduce((a, v) => a + (v - mean) ** 2, 0) / C + 1e-5);
      const xh = Array.from(xr, (v) => (v - mean) * rstd), g = Array.from(dr, (d, j) => d * w[j]);
      const mg = g.reduce((a, v) => a + v, 0) / C, mgx = g.reduce((a, v, j) => a + v * xh[j], 0) / C;
      for (let j = 0; j < C; j++) {
        want.y[r * C + j] = xh[j] * w[j] + (withBias ? b[j] : 0);
        want.dx[r * C + j] = rstd * (g[j] - mg - xh[j] * mgx);
        want.dw[j] += dr[j] * xh[j];
        want.db[j] += dr[j];
      }
    }
    const run = (fn: typeof layerNorm) => {
      const inputs = [tf.tensor2d(x, [rows, C]), tf.tensor1d(w), ...(withBias ? [tf.tensor1d(b)] : [])];
      const apply = (xi: tf.Tensor, wi: tf.Tensor, bi?: tf.Tensor) =>
        fn(xi, wi as tf.Tensor1D, bi as tf.Tensor1D);
      const f = (...t: tf.Tensor[]) => tf.sum(tf.mul(apply(t[0], t[1], t[2]), tf.tensor2d(dy, [rows, C])));
      const y = apply(inputs[0], inputs[1], inputs[2]).dataSync();
      const g = tf.grads(f)(inputs).map((t) => t.dataSync());
      return { y, dx: g[0], dw: g[1], db: g[2] };
    };
    const got = run(layerNorm), chain = run(layerNormByOps);
    const what = `[${rows}, ${C}]${withBias ? " with bias" : ""}`;
    for (const k of ["y", "dx", "dw"] as const) {
      assertClose(got[k], want[k], 2e-5, `${k} ${what}, kernel vs float64`);
      assertClose(got[k], chain[k], 2e-5, `${k} ${what}, kernel vs op chain`);
    }
    if (withBias) assertClose(got.db!, want.db, 2e-5, `db ${what}`);
  }
});

Deno.test("wasm GELU kernels: bit-identical to the op chain forward and backward; close to float64", async () => {
  await initBackend("wasm", { quiet: true });
  for (const n of [1, 3, 6, 8192 + 7, 70_001]) {
    const x = randomArray(n, n + 1).map((v, i) => v * [0.5, 3, 9][i % 3]), dy = randomArray(n, n + 2);
    const run = (fn: (t: tf.Tensor) => tf.Tensor) => {
      const xt = tf.tensor1d(x), dyt = tf.tensor1d(dy);
      const y = fn(xt).dataSync() as Float32Array;
      const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(fn(a), dyt)))(xt).dataSync() as Float32Array;
      return { y, dx };
    };
    // both with the kernels on, so that the chain's tanh is the same (wasm's Tanh kernel)
    const got = run(gelu), chain = run(geluByOps);
    const { kernelNames } = await tf.profile(() => gelu(tf.tensor1d(x)));
    assert.ok(kernelNames.includes("LmpipeGelu"), `gelu ran ${kernelNames}, not the kernel`);
    const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer));
    assert.deepEqual(bits(got.y), bits(chain.y), `GELU forward, n = ${n}`);
    assert.deepEqual(bits(got.dx), bits(chain.dx), `GELU backward, n = ${n}`);
    const k = Math.sqrt(2 / Math.PI), c = 0.044715;
    const want = Array.from(x, (v) => 0.5 * v * (1 + Math.tanh(k * (v + c * v ** 3))));
    assertClose(got.y, want, 1e-6, `GELU forward vs float64, n = ${n}`);
  }
});

Deno.test("wasm Add and column sums: TF.js's bits, on every shape they take and those they leave to TF.js", async () => {
  await initBackend("wasm", { quiet: true });
  const bits = (t: tf.Tensor) => Array.from(new Uint32Array((t.dataSync() as Float32Array).slice().buffer));
  const special = (a: Float32Array) => {
    a[0] = NaN, a[1] = Infinity, a[2] = -Infinity, a[3] = -0;
    return a;
  };
  // a's and b's shapes: one shape (a tail past the last block), rows plus a row (either order, with
  // leading 1s), and shapes TF.js keeps (more axes on the row, a column, both broadcast, a scalar, small)
  const adds: [number[], number[], boolean][] = [
    [[3, 8192 + 5], [3, 8192 + 5], true],
    [[8, 128, 128], [128, 128], true],
    [[37], [1000, 37], true],
    [[2048, 384], [1, 384], true],
    [[1, 1, 384], [2048, 384], false],
    [[2048, 1], [2048, 384], false],
    [[4, 1, 3000], [1, 5, 3000], false],
    [[], [64, 128], false],
    [[7, 9], [7, 9], false],
  ];
  for (const [i, [sa, sb, ours]] of adds.entries()) {
    const a = tf.tensor(special(randomArray(tf.util.sizeFromShape(sa), 80 + i)), sa);
    const b = tf.tensor(randomArray(tf.util.sizeFromShape(sb), 90 + i), sb);
    const jobs = wasmKernelStats().rows;
    const got = tf.add(a, b);
    assert.equal(wasmKernelStats().rows > jobs, ours, `[${sa}] + [${sb}]: lmpipe's kernel ran`);
    const want = withKernels(false, () => tf.add(a, b));
    assert.deepEqual(got.shape, want.shape, `[${sa}] + [${sb}] shape`);
    assert.deepEqual(bits(got), bits(want), `[${sa}] + [${sb}]`);
    tf.dispose([a, b, got, want]);
  }
  // an add is bound by memory: on the calling thread alone below MEMORY_BOUND_MIN_VALUES values, offered to
  // the worker threads from there
  if (wasmKernelThreads() >= 2) {
    const offered = (shape: number[]) => {
      const a = tf.ones(shape), before = wasmKernelStats().sharedJobs;
      tf.dispose([a, tf.add(a, a)]);
      return wasmKernelStats().sharedJobs - before;
    };
    assert.equal(offered([8, 128, 128]), 0, "a [8, 128, 128] add was offered to the worker threads");
    assert.equal(
      offered([8, MEMORY_BOUND_MIN_VALUES / 8]),
      1,
      "an add of MEMORY_BOUND_MIN_VALUES stayed home",
    );
  }
  // column sums: a group's tail (37, 21 columns), many groups on the threads, keepDims, two leading axes
  const sums: [number[], number[], boolean][] = [
    [[1024, 37], [0], false],
    [[5, 21], [0], true],
    [[2048, 1536], [0], false],
    [[8, 256, 384], [0, 1], false],
  ];
  for (const [i, [shape, axes, keep]] of sums.entries()) {
    const x = tf.tensor(randomArray(tf.util.sizeFromShape(shape), 100 + i).map((v) => v * 1e3), shape);
    const jobs = wasmKernelStats().rows;
    const got = tf.sum(x, axes, keep);
    assert.ok(wasmKernelStats().rows > jobs, `sum [${shape}] over ${axes}: lmpipe's kernel ran`);
    const want = withKernels(false, () => tf.sum(x, axes, keep)); // the JavaScript loop: same order
    assert.deepEqual(got.shape, want.shape);
    assert.deepEqual(bits(got), bits(want), `sum [${shape}] over ${axes}`);
    tf.dispose([x, got, want]);
  }
});

Deno.test("wasm copies of runs (transpose, concat, slice, split): TF.js's values; the shapes they leave alone", async () => {
  await initBackend("wasm", { quiet: true });
  const same = (got: tf.Tensor, want: tf.Tensor, what: string) => {
    assert.deepEqual(got.shape, want.shape, `${what} shape`);
    assert.equal(got.dtype, want.dtype, `${what} dtype`);
    const a = got.dataSync(), b = want.dataSync();
    assert.ok(a.length === b.length && a.every((v, i) => Object.is(v, b[i])), what);
  };
  /** f's result with the kernels on (and whether a kernel job ran) against the kernels-off result. */
  const check = (what: string, f: () => tf.Tensor | tf.Tensor[], ours: boolean) => {
    const rows = wasmKernelStats().rows;
    const got = [f()].flat();
    assert.equal(wasmKernelStats().rows > rows, ours, `${what}: lmpipe's kernel ran`);
    const want = [withKernels(false, f)].flat();
    got.forEach((g, i) => same(g, want[i], `${what} [${i}]`));
    tf.dispose([...got, ...want]);
  };
  const x4 = tf.tensor(randomArray(8 * 64 * 6 * 32, 5), [8, 64, 6, 32]);
  const x5 = tf.tensor(randomArray(3 * 4 * 5 * 6 * 70, 6), [3, 4, 5, 6, 70]);
  const ints = tf.tensor(
    Int32Array.from({ length: 8 * 64 * 6 * 32 }, (_, i) => i * 7 - 5),
    [8, 64, 6, 32],
    "int32",
  );
  check("transpose [0,2,1,3]", () => tf.transpose(x4, [0, 2, 1, 3]), true);
  check("transpose [2,0,1,3]", () => tf.transpose(x4, [2, 0, 1, 3]), true);
  check("transpose int32 [1,0,2,3]", () => tf.transpose(ints, [1, 0, 2, 3]), true);
  check("transpose rank 5, four outer axes", () => tf.transpose(x5, [3, 1, 0, 2, 4]), false);
  check("transpose rank 5, merged to three", () => tf.transpose(x5, [2, 0, 1, 3, 4]), true);
  check("transpose moving the last axis", () => tf.transpose(x4, [0, 1, 3, 2]), false);
  check("transpose, small", () => tf.transpose(tf.ones([4, 3, 2]), [1, 0, 2]), false);
  check("concat last axis", () => tf.concat([x4, tf.mul(x4, 2), tf.neg(x4)], 3), true);
  check("concat axis 1", () => tf.concat([x4, tf.slice(x4, [0, 0, 0, 0], [8, 10, 6, 32])], 1), true);
  check("concat int32", () => tf.concat([ints, ints], 2), true);
  check("concat mixed dtypes", () => tf.concat([x4, tf.cast(ints, "float32")], 0), true);
  check("slice inside", () => tf.slice(x4, [1, 3, 2, 5], [6, 50, 3, 20]), true);
  check("slice, rank 5 (four outer axes)", () => tf.slice(x5, [1, 1, 1, 1, 1], [2, 3, 4, 5, 60]), false);
  check("split last axis", () => tf.split(tf.reshape(x4, [512, 192]), [64, 64, 64], 1), true);
  check("unstack axis 1", () => tf.unstack(x4, 1).slice(0, 2), false); // pieces of 1,536 values
  tf.dispose([x4, x5, ints]);
});

Deno.test("wasm conv gradients: the im2col/col2im kernels give the JavaScript loops' numbers", async () => {
  await initBackend("wasm", { quiet: true });
  const cases = [
    { x: [64, 7, 7, 3], w: [3, 3, 3, 4], strides: 1, pad: "same" as const, dilations: 1 },
    { x: [9, 8, 9, 2], w: [3, 2, 2, 5], strides: 2, pad: "same" as const, dilations: 1 },
    { x: [5, 9, 9, 4], w: [2, 3, 4, 3], strides: 1, pad: "valid" as const, dilations: 1 },
  ];
  for (const [i, c] of cases.entries()) {
    const run = (kernels: boolean) =>
      withKernels(kernels, () => {
        const x = tf.tensor4d(
          randomArray(tf.util.sizeFromShape(c.x), 60 + i),
          c.x as [number, number, number, number],
        );
        const w = tf.tensor4d(
          randomArray(tf.util.sizeFromShape(c.w), 70 + i),
          c.w as [number, number, number, number],
        );
        const f = (a: tf.Tensor, b: tf.Tensor) =>
          tf.sum(
            tf.square(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.strides, c.pad, "NHWC", c.dilations)),
          );
        return tf.grads(f)([x, w]).map((g) => g.dataSync());
      });
    // with oneDNN loaded the convs would go there (tests/dnnl_conv_test.ts); this test is about the path without it
    const dnnlWas = setDnnlConvs(false);
    let on: ReturnType<typeof run>, off: ReturnType<typeof run>;
    try {
      const before = wasmKernelStats().rows;
      on = run(true);
      assert.ok(wasmKernelStats().rows > before, "the im2col/col2im kernels did not run");
      off = run(false);
    } finally {
      setDnnlConvs(dnnlWas);
    }
    assertClose(on[0], off[0], 1e-6, `case ${i} dx`);
    assertClose(on[1], off[1], 1e-6, `case ${i} dW`);
  }
});

Deno.test("wasm Cumsum kernel: bit-identical to TF.js's on every axis, exclusive and reverse, and in gradients", async () => {
  await initBackend("wasm", { quiet: true });
  const cases: [number[], number][] = [
    [[3, 37, 130], 1], // 3 blocks of columns, the last 2 wide
    [[3, 37, 130], 0],
    [[3, 37, 130], 2], // the last axis: one column a row
    [[3, 37, 130], -2],
    [[2, 5, 3, 67], 2],
    [[41], 0],
    [[2, 256, 160], 1], // over 2^16 values: shared with the worker threads
  ];
  for (const [shape, axis] of cases) {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = randomArray(n, n + axis);
    // special values where the sums go through them: they must propagate as TF.js's do, and -0 starts
    v[0] = -0, v[Math.min(5, n - 1)] = NaN, v[Math.min(9, n - 1)] = Infinity;
    for (const exclusive of [false, true]) {
      for (const reverse of [false, true]) {
        const what = `[${shape}] axis ${axis} exclusive ${exclusive} reverse ${reverse}`;
        const run = () =>
          tf.tidy(() => {
            const x = tf.tensor(v, shape);
            const f = (t: tf.Tensor) => tf.cumsum(t, axis, exclusive, reverse);
            const r = tf.tensor(randomArray(n, 3), shape);
            const dx = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(f(t), r)))(
              tf.tensor(randomArray(n, 4), shape),
            );
            return [f(x).dataSync(), dx.dataSync()].map((a) => Float32Array.from(a));
          });
        const before = wasmKernelStats().rows;
        const [y, dx] = withKernels(true, run);
        assert.ok(wasmKernelStats().rows > before, `${what}: the kernel did not run`);
        const [yRef, dxRef] = withKernels(false, run);
        assert.deepEqual(new Uint32Array(y.buffer), new Uint32Array(yRef.buffer), `${what}: forward bits`);
        assert.deepEqual(new Uint32Array(dx.buffer), new Uint32Array(dxRef.buffer), `${what}: gradient bits`);
      }
    }
  }
});

Deno.test("the committed kernel bytes are built from the committed .wat (scripts/build_wasm.ts)", async () => {
  for (const k of KERNELS) {
    const committed = await Deno.readTextFile(new URL(`../${k.out}`, import.meta.url));
    assert.equal(
      committed,
      await generate(k.wat),
      `${k.out} is stale: run deno run -A scripts/build_wasm.ts`,
    );
  }
});
