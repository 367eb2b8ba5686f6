// The LayerNorm and GELU kernels on webgpu (lib/tensor/ops/layer_norm/webgpu.ts and ops/gelu/webgpu.ts, picked by ops/layer_norm/ and
// ops/gelu/): forward and every gradient against a float64 loop and against the op chains they replace,
// on row lengths C = 4, 16, 128, 768 and 1, 3 and 1000+ rows, with and without bias; NaN and infinity
// rows stay NaN (the loss scaler's overflow signal) without touching the other rows; one dispatch each
// forward, two (LayerNorm) or one (GELU) backward; clear errors past the binding limit; and the gpt tiny
// model's loss and gradients on webgpu agree with cpu with the kernels in use.
import assert from "node:assert/strict";
import { initBackend, readData, readScalar, tf } from "../lib/tensor/backend.ts";
import { layerNorm, layerNormByOps } from "../lib/tensor/ops/layer_norm/mod.ts";
import { gelu } from "../lib/tensor/ops/gelu/mod.ts";
import { setFusedKernelsEnabled } from "../lib/tensor/webgpu/kernels.ts";
import { setWebgpuAttentionEnabled } from "../lib/tensor/kernel_choice.ts";
import { GELU_C, GELU_K, LAYER_NORM_KERNEL } from "../lib/tensor/kernel_names.ts";
import { setWebGPUBindingLimitForTests } from "../lib/tensor/webgpu/limits.ts";
import { Gpt } from "../lib/models/gpt.ts";
import { resolveConfig } from "../lib/models/registry.ts";
import { assertClose, dispatchedBy, randomArray, webgpuStatus } from "../lib/tensor/testing.ts";

const gpu = await webgpuStatus();
const EPS = 1e-5;

// --- float64 references ----------------------------------------------------------------------------

/** LayerNorm of x [rows, C] and its gradients for the upstream gradient dy, in float64. */
function layerNormRef(x: Float32Array, w: Float32Array, b: Float32Array | null, dy: Float32Array, C: number) {
  const rows = x.length / C;
  const y = new Float64Array(x.length), dx = new Float64Array(x.length);
  const dw = new Float64Array(C), db = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    let s = 0;
    for (let c = 0; c < C; c++) s += x[o + c];
    const mean = s / C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[o + c] - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / C + EPS);
    let mg = 0, mgx = 0;
    for (let c = 0; c < C; c++) {
      const xh = (x[o + c] - mean) * rstd, g = dy[o + c] * w[c];
      y[o + c] = xh * w[c] + (b ? b[c] : 0);
      mg += g / C, mgx += g * xh / C;
      dw[c] += dy[o + c] * xh, db[c] += dy[o + c];
    }
    for (let c = 0; c < C; c++) {
      const xh = (x[o + c] - mean) * rstd, g = dy[o + c] * w[c];
      dx[o + c] = rstd * (g - mg - xh * mgx);
    }
  }
  return { y, dx, dw, db };
}

/** GELU (tanh form) and its derivative, in float64. */
function geluRef(x: Float32Array) {
  const y = new Float64Array(x.length), d = new Float64Array(x.length);
  x.forEach((v, i) => {
    const t = Math.tanh(GELU_K * (v + GELU_C * v ** 3));
    y[i] = 0.5 * v * (1 + t);
    d[i] = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_K * (1 + 3 * GELU_C * v * v);
  });
  return { y, d };
}

// --- running the ops -------------------------------------------------------------------------------

interface LnRun {
  y: Float32Array;
  dx: Float32Array;
  dw: Float32Array;
  db: Float32Array | null;
  forward: string[];
  all: string[];
}

/** y and the gradients of sum(y * dy) through `ln`, with the programs dispatched forward and in all. */
async function runLayerNorm(
  ln: typeof layerNorm,
  x: Float32Array,
  w: Float32Array,
  b: Float32Array | null,
  dy: Float32Array,
  C: number,
): Promise<LnRun> {
  const shape = [x.length / C, C];
  const xt = tf.tensor(x, shape),
    wt = tf.tensor1d(w),
    bt = b ? tf.tensor1d(b) : null,
    dyt = tf.tensor(dy, shape);
  const fwd = dispatchedBy(() => ln(xt, wt, bt ?? undefined));
  const f = bt
    ? (a: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => ln(a, ww as tf.Tensor1D, bb as tf.Tensor1D)
    : (a: tf.Tensor, ww: tf.Tensor) => ln(a, ww as tf.Tensor1D);
  const { result: grads, names } = dispatchedBy(() => tf.grads(f)(bt ? [xt, wt, bt] : [xt, wt], dyt));
  const out: LnRun = {
    y: new Float32Array(await readData(fwd.result)),
    dx: new Float32Array(await readData(grads[0])),
    dw: new Float32Array(await readData(grads[1])),
    db: bt ? new Float32Array(await readData(grads[2])) : null,
    forward: fwd.names,
    all: names,
  };
  tf.dispose([xt, wt, dyt, fwd.result, ...grads, ...(bt ? [bt] : [])]);
  return out;
}

/** gelu forward and its gradient for upstream dy, with the programs dispatched forward and in all. */
async function runGelu(x: Float32Array, dy: Float32Array) {
  const xt = tf.tensor1d(x), dyt = tf.tensor1d(dy);
  const fwd = dispatchedBy(() => gelu(xt));
  const { result: g, names } = dispatchedBy(() => tf.grad((a: tf.Tensor) => gelu(a))(xt, dyt));
  const out = {
    y: new Float32Array(await readData(fwd.result)),
    dx: new Float32Array(await readData(g)),
    forward: fwd.names,
    all: names,
  };
  tf.dispose([xt, dyt, fwd.result, g]);
  return out;
}

/** Runs `f` with the fused webgpu kernels off (the op chains), then turns them back on. */
async function withKernelsOff<T>(f: () => T | Promise<T>): Promise<T> {
  setFusedKernelsEnabled(false);
  try {
    return await f();
  } finally {
    setFusedKernelsEnabled(true);
  }
}

/** Elementwise product (the chain rule for GELU's derivative and dy). */
const times = (a: ArrayLike<number>, b: ArrayLike<number>) => Float64Array.from(a, (v, i) => v * b[i]);

/** Row r of a [rows, C] array. */
const rowOf = (a: Float32Array, r: number, C: number) => a.subarray(r * C, (r + 1) * C);

// Tolerance, relative to each tensor's largest value (testing.ts maxRelErr), against float64 and against
// TF.js's op chain (which sums in another order): measured up to 7e-7 on Mesa llvmpipe (dx, C = 4 with
// 1030 rows); float32 sums of up to 768 values per row or 1030 rows per column.
const TOL = 5e-6;

if (gpu.ok) {
  Deno.test("webgpu LayerNorm kernels: y, dx, dw, db match float64 and the op chain; 1 + 2 dispatches", async () => {
    await initBackend("webgpu", { quiet: true });
    let seed = 1;
    for (const C of [4, 16, 128, 768]) {
      for (const rows of [1, 3, 1030]) {
        for (const bias of [true, false]) {
          const n = rows * C;
          // an offset and a scale per case, so that means and variances are far from 0 and 1
          const x = randomArray(n, seed++).map((v, i) => 3 * v + (i % 7) * 0.25 - 1);
          const w = randomArray(C, seed++).map((v) => 1 + 0.5 * v);
          const b = bias ? randomArray(C, seed++) : null;
          const dy = randomArray(n, seed++);
          const what = `C ${C}, ${rows} rows, ${bias ? "bias" : "no bias"}`;
          const got = await runLayerNorm(layerNorm, x, w, b, dy, C);
          assert.deepEqual(got.forward, ["LmpipeLayerNormProgram"], `${what}: forward dispatches`);
          assert.deepEqual(
            got.all,
            ["LmpipeLayerNormProgram", "LmpipeLayerNormDxProgram", "LmpipeLayerNormDwDbProgram"],
            `${what}: forward + backward dispatches`,
          );
          const want = layerNormRef(x, w, b, dy, C);
          assertClose(got.y, want.y, TOL, `${what}: y vs float64`);
          assertClose(got.dx, want.dx, TOL, `${what}: dx vs float64`);
          assertClose(got.dw, want.dw, TOL, `${what}: dw vs float64`);
          if (b) assertClose(got.db!, want.db, TOL, `${what}: db vs float64`);
          const chain = await runLayerNorm(layerNormByOps, x, w, b, dy, C);
          assert(chain.all.length > 10, `${what}: the op chain ran ${chain.all.length} programs`);
          assertClose(got.y, chain.y, TOL, `${what}: y vs op chain`);
          assertClose(got.dx, chain.dx, TOL, `${what}: dx vs op chain`);
          assertClose(got.dw, chain.dw, TOL, `${what}: dw vs op chain`);
          if (b) assertClose(got.db!, chain.db!, TOL, `${what}: db vs op chain`);
        }
      }
    }
  });

  Deno.test("webgpu LayerNorm kernels: a NaN or infinity in x or dy makes its row NaN, other rows exact", async () => {
    await initBackend("webgpu", { quiet: true });
    const C = 128, rows = 5;
    const x = randomArray(rows * C, 301), w = randomArray(C, 302).map((v) => 1 + 0.5 * v);
    const b = randomArray(C, 303), dy = randomArray(rows * C, 304);
    const clean = layerNormRef(x, w, b, dy, C);
    const bad = x.slice();
    bad[1 * C + 17] = NaN, bad[3 * C + 100] = Infinity;
    const got = await runLayerNorm(layerNorm, bad, w, b, dy, C);
    for (let r = 0; r < rows; r++) {
      const y = rowOf(got.y, r, C), dx = rowOf(got.dx, r, C);
      if (r === 1 || r === 3) {
        assert(y.every(Number.isNaN), `row ${r}: y must be NaN throughout`);
        assert(dx.every(Number.isNaN), `row ${r}: dx must be NaN throughout`);
      } else {
        assertClose(y, clean.y.subarray(r * C, (r + 1) * C), TOL, `row ${r}: y`);
        assertClose(dx, clean.dx.subarray(r * C, (r + 1) * C), TOL, `row ${r}: dx`);
      }
    }
    // dw sums xhat over every row: all non-finite, as the op chain's; db = sum of dy is untouched
    assert(got.dw.every((v) => !Number.isFinite(v)), "dw must be non-finite throughout");
    assertClose(got.db!, clean.db, TOL, "db");
    // a non-finite upstream gradient (a mixed-precision overflow) reaches dx of its row
    const badDy = dy.slice();
    badDy[2 * C + 5] = Infinity;
    const g2 = await runLayerNorm(layerNorm, x, w, b, badDy, C);
    assert(rowOf(g2.dx, 2, C).every(Number.isNaN), "row 2: dx must be NaN throughout");
    assertClose(rowOf(g2.dx, 4, C), clean.dx.subarray(4 * C), TOL, "row 4: dx");
    assert(!Number.isFinite(g2.db![5]) && !Number.isFinite(g2.dw![5]), "column 5: dw, db non-finite");
    assertClose(g2.db!.subarray(6), clean.db.subarray(6), TOL, "other columns of db");
  });

  Deno.test("webgpu LayerNorm kernels: more rows than one dispatch dimension holds (2-D grid)", async () => {
    await initBackend("webgpu", { quiet: true });
    // deno-lint-ignore no-explicit-any
    const max = (tf.backend() as any).device.limits.maxComputeWorkgroupsPerDimension as number;
    const C = 4, rows = max + 3;
    const x = randomArray(rows * C, 401), w = randomArray(C, 402), b = randomArray(C, 403);
    const dy = randomArray(rows * C, 404);
    const got = await runLayerNorm(layerNorm, x, w, b, dy, C);
    assert.equal(got.all.length, 3);
    const want = layerNormRef(x, w, b, dy, C);
    assertClose(got.y, want.y, TOL, "2-D grid y");
    assertClose(got.dx, want.dx, TOL, "2-D grid dx");
    assertClose(got.dw, want.dw, 1e-4, "2-D grid dw (65k rows summed in float32)");
    assertClose(got.db!, want.db, 1e-4, "2-D grid db");
  });

  Deno.test("webgpu LayerNorm kernels: binding limit is a clear error; off switch and odd C run the op chain", async () => {
    await initBackend("webgpu", { quiet: true });
    const x = tf.tensor2d(randomArray(4 * 300, 501), [4, 300]), w = tf.ones([300]) as tf.Tensor1D;
    setWebGPUBindingLimitForTests(1000);
    try {
      assert.throws(
        () => tf.engine().runKernel(LAYER_NORM_KERNEL, { x, w }, { eps: EPS }),
        /LmpipeLayerNorm: x \[4,300\] \(0\.0 MiB\) is over this GPU's storage-buffer binding limit/,
      );
    } finally {
      setWebGPUBindingLimitForTests(null);
    }
    await withKernelsOff(() => {
      const { result, names } = dispatchedBy(() => layerNorm(x, w));
      assert(!names.includes("LmpipeLayerNormProgram") && names.length > 5, names.join(", "));
      result.dispose();
    });
    const odd = tf.ones([2, 6]), w6 = tf.ones([6]) as tf.Tensor1D;
    const { result, names } = dispatchedBy(() => layerNorm(odd, w6));
    assert(!names.includes("LmpipeLayerNormProgram"), "C = 6 is not a multiple of 4: op chain");
    tf.dispose([x, w, odd, w6, result]);
  });

  Deno.test("webgpu GELU kernels: y and dx match float64 and the op chain; 1 + 1 dispatches; NaN stays NaN", async () => {
    await initBackend("webgpu", { quiet: true });
    let seed = 601;
    for (const n of [7, 4 * 16, 3 * 512, 1030 * 128]) {
      const x = randomArray(n, seed++).map((v, i) => v * (i % 3 === 0 ? 6 : 2));
      const dy = randomArray(n, seed++);
      const got = await runGelu(x, dy);
      assert.deepEqual(got.forward, ["LmpipeGeluProgram"], `${n}: forward dispatches`);
      assert.deepEqual(got.all, ["LmpipeGeluProgram", "LmpipeGeluProgram"], `${n}: forward + backward`);
      const want = geluRef(x);
      assertClose(got.y, want.y, TOL, `${n}: y vs float64`);
      assertClose(got.dx, times(want.d, dy), TOL, `${n}: dx vs float64`);
      const chain = await withKernelsOff(() => runGelu(x, dy));
      assert(!chain.all.includes("LmpipeGeluProgram") && chain.all.length > 5, chain.all.join(", "));
      assertClose(got.y, chain.y, TOL, `${n}: y vs op chain`);
      assertClose(got.dx, chain.dx, TOL, `${n}: dx vs op chain`);
    }
    // large magnitudes (tanh saturates without overflow), zeros, NaN
    const x = new Float32Array([-1e5, -20, -0, 0, 20, 1e5, 1e20, NaN, 0.5]);
    const dy = new Float32Array([1, 1, 1, 1, 1, 1, 0, 1, NaN]);
    const got = await runGelu(x, dy);
    const want = geluRef(x);
    for (let i = 0; i < 7; i++) {
      assert(
        Math.abs(got.y[i] - want.y[i]) <= 1e-6 * Math.max(1, Math.abs(want.y[i])),
        `y(${x[i]}) = ${got.y[i]}`,
      );
    }
    for (let i = 0; i < 6; i++) assert(Math.abs(got.dx[i] - want.d[i]) <= 1e-6, `dx(${x[i]}) = ${got.dx[i]}`);
    assert(Number.isNaN(got.y[7]) && Number.isNaN(got.dx[7]), "NaN x gives NaN y and dx");
    assert(Number.isNaN(got.dx[8]) && Number.isFinite(got.y[8]), "NaN dy gives NaN dx only");
  });

  Deno.test("gpt tiny on webgpu with the LayerNorm and GELU kernels: loss and gradients agree with cpu", async () => {
    // the tiny preset's layers (2 x 64 wide, 2 heads) with a small vocabulary and context (cpu time)
    const config = resolveConfig("gpt", "tiny", { vocabSize: 61, contextLength: 16 });
    const run = async (backend: "cpu" | "webgpu", precision: "fp32" | "mixed") => {
      await initBackend(backend, { quiet: true });
      // attention as the op chain (flash attention's mixed-precision rule differs: tests/causal_softmax_test.ts)
      setWebgpuAttentionEnabled(false);
      const B = 2, T = 16;
      const ids = Array.from({ length: B * (T + 1) }, (_, i) => (i * 37 + 11) % 61);
      const idx = tf.tensor2d(ids.slice(0, B * T), [B, T], "int32");
      const tgt = tf.tensor2d(ids.slice(B), [B, T], "int32");
      const model = new Gpt(config, 42);
      let k = 900;
      for (const [name, v] of model.params) {
        const r = randomArray(v.size, k++);
        const gain = v.rank === 1 && name.endsWith(".weight"); // LayerNorm gains around 1
        v.assign(tf.tensor(r.map((x) => (gain ? 1 + 0.5 * x : 0.5 * x)), v.shape));
      }
      const { result, names } = dispatchedBy(() =>
        tf.variableGrads(() => model.loss(idx, tgt, { precision }))
      );
      const out = {
        loss: await readScalar(result.value),
        grads: new Map<string, Float32Array>(),
        names,
      };
      for (const [n, v] of model.params) {
        out.grads.set(n, new Float32Array(await readData(result.grads[v.name])));
      }
      tf.dispose([result.value, ...Object.values(result.grads), idx, tgt]);
      model.dispose();
      setWebgpuAttentionEnabled(true);
      return out;
    };
    for (const precision of ["fp32", "mixed"] as const) {
      const want = await run("cpu", precision), got = await run("webgpu", precision);
      const count = (p: string) => got.names.filter((n) => n === p).length;
      // 2 blocks: 5 LayerNorms (2 a block + the final one), 2 GELUs; forward and backward
      assert.equal(count("LmpipeLayerNormProgram"), 5, `${precision}: LayerNorm kernels forward`);
      assert.equal(count("LmpipeLayerNormDxProgram"), 5, `${precision}: LayerNorm kernels backward`);
      assert.equal(count("LmpipeGeluProgram"), 4, `${precision}: GELU kernels forward + backward`);
      assertClose([got.loss], [want.loss], precision === "fp32" ? 1e-5 : 1e-4, `webgpu ${precision} loss`);
      // as tests/gpt_test.ts: mixed can flip an fp16 rounding, a relative step of 2^-11
      const tol = precision === "fp32" ? 1e-4 : 2e-3;
      for (const [n, g] of want.grads) assertClose(got.grads.get(n)!, g, tol, `webgpu ${precision} ${n}`);
    }
  });
}
