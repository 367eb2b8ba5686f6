// The webgpu kernel of the loss's vocabulary softmax (LmpipeSoftmaxRows in lib/tensor/webgpu/kernels.ts,
// used by lib/tensor/ops/softmax_rows/mod.ts): one dispatch that must give what a float64 loop and TF.js's op
// chain (Max, Sub, Exp, Sum; bit for bit on a software adapter) give, on every remainder of the row
// length by the workgroup size, with NaN (the loss scaler's overflow signal must reach the row sum),
// -Infinity (exp gives 0) and large values (the maximum is subtracted first), without the op chain's
// [rows, cols] temporaries, and must leave tiedCrossEntropy's loss and gradients where the op chain
// puts them.
import assert from "node:assert/strict";
import { getGpuAdapter, initBackend, isSoftwareAdapter, readData, tf } from "../lib/tensor/backend.ts";
import { softmaxRows, softmaxRowsByOps } from "../lib/tensor/ops/softmax_rows/mod.ts";
import { setFusedKernelsEnabled } from "../lib/tensor/webgpu/kernels.ts";
import { SOFTMAX_ROWS_KERNEL } from "../lib/tensor/kernel_names.ts";
import { setWebGPUBindingLimitForTests } from "../lib/tensor/webgpu/limits.ts";
import { tiedCrossEntropy } from "../lib/loss.ts";
import { assertClose, dispatchedBy, randomArray, webgpuStatus } from "../lib/tensor/testing.ts";

const gpu = await webgpuStatus();
const adapter = await getGpuAdapter();
// The kernel does the op chain's float32 operations in its order (TF.js's reduction tree included), so
// where the driver compiles each operation as written (Mesa llvmpipe, where CI runs) the results are the
// same bit for bit; a hardware driver may contract or reorder, so there the check is 1e-6 relative.
const software = adapter !== null && isSoftwareAdapter(adapter);

/** Names of the programs dispatched on webgpu while `f` runs. */
/** e, m, s of the rows of x [rows, cols] in float64 (NaN rows: all NaN; -Infinity entries: e 0). */
function reference(x: Float32Array, rows: number, cols: number) {
  const e = new Float64Array(rows * cols), m = new Float64Array(rows), s = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * cols, (r + 1) * cols);
    let mx = -Infinity;
    for (const v of row) mx = Number.isNaN(v) || Number.isNaN(mx) ? NaN : Math.max(mx, v);
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += e[r * cols + c] = Math.exp(row[c] - mx);
    m[r] = mx, s[r] = sum;
  }
  return { e, m, s };
}

async function read(t: { e: tf.Tensor; m: tf.Tensor; s: tf.Tensor }) {
  return {
    e: new Float32Array(await readData(t.e)),
    m: new Float32Array(await readData(t.m)),
    s: new Float32Array(await readData(t.s)),
  };
}

/** The kernel's e, m, s for x, checked to come from one dispatch and three new tensors. */
async function fused(x: tf.Tensor2D) {
  const before = tf.memory().numTensors;
  const { result: out, names } = dispatchedBy(() => softmaxRows(x));
  assert.deepEqual(names, ["LmpipeSoftmaxRowsProgram"], "one dispatch");
  assert.equal(tf.memory().numTensors, before + 3, "three outputs, nothing else left behind");
  assert.deepEqual(out.e.shape, x.shape);
  assert.deepEqual(out.m.shape, [x.shape[0], 1]);
  assert.deepEqual(out.s.shape, [x.shape[0], 1]);
  const got = await read(out);
  tf.dispose([out.e, out.m, out.s]);
  return got;
}

/** Same NaN positions, and the finite values within `tol` relative to each row's largest |value|. */
function assertRowsClose(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  rows: number,
  tol: number,
  what: string,
): void {
  assert.equal(a.length, b.length, `${what}: lengths`);
  const cols = a.length / rows;
  for (let r = 0; r < rows; r++) {
    let scale = 1e-30, err = 0;
    for (let c = r * cols; c < (r + 1) * cols; c++) {
      const same = Object.is(a[c], b[c]) || (Number.isNaN(a[c]) && Number.isNaN(b[c])) || a[c] === b[c];
      if (!same && !(Number.isFinite(a[c]) && Number.isFinite(b[c]))) {
        assert.fail(`${what}: row ${r} column ${c - r * cols}: ${a[c]}, want ${b[c]}`);
      }
      if (Number.isFinite(b[c])) scale = Math.max(scale, Math.abs(b[c]));
      if (!same) err = Math.max(err, Math.abs(a[c] - b[c]));
    }
    assert(err / scale <= tol, `${what}: row ${r}: relative error ${err / scale} > ${tol}`);
  }
}

/** Equal values (NaN equal to any NaN): the kernel against the op chain on a software adapter. */
function assertSameValues(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths`);
  let bad = 0, first = "";
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i]) && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) {
      if (bad++ === 0) first = `[${i}] ${a[i]} vs ${b[i]}`;
    }
  }
  assert.equal(bad, 0, `${what}: ${bad} of ${a.length} values differ from the op chain's, first ${first}`);
}

/** The kernel against float64 and against the op chain on webgpu, for x [rows, cols]. */
async function checkShape(x: Float32Array, rows: number, cols: number, what: string) {
  const xt = tf.tensor2d(x, [rows, cols]);
  const got = await fused(xt);
  const want = reference(x, rows, cols);
  assertRowsClose(got.m, want.m, rows, 0, `${what} m vs float64`); // a maximum is exact
  assertRowsClose(got.e, want.e, rows, 1e-6, `${what} e vs float64`);
  assertRowsClose(got.s, want.s, rows, 1e-6, `${what} s vs float64`);
  const ops = softmaxRowsByOps(xt);
  const chain = await read(ops);
  for (const k of ["e", "m", "s"] as const) {
    if (software) assertSameValues(got[k], chain[k], `${what} ${k} vs op chain`);
    else assertRowsClose(got[k], chain[k], rows, k === "m" ? 0 : 1e-6, `${what} ${k} vs op chain`);
  }
  tf.dispose([xt, ops.e, ops.m, ops.s]);
  return got;
}

if (gpu.ok) {
  Deno.test("webgpu softmaxRows kernel: float64 and op chain agree on odd shapes, up to the vocabulary", async () => {
    await initBackend("webgpu", { quiet: true });
    // row lengths around both workgroup sizes (64 below 4096 columns, 256 from there) and their remainders
    const shapes = [[1, 1], [3, 7], [1, 64], [2, 65], [5, 259], [2, 1027], [3, 4095], [2, 4097], [3, 50304]];
    let seed = 1;
    for (const [rows, cols] of shapes) {
      // rows on different scales and offsets, so that the maximum sits at different values
      const x = randomArray(rows * cols, seed++).map((v, i) => v * 20 + (Math.floor(i / cols) % 3) * 7 - 5);
      await checkShape(x, rows, cols, `[${rows}, ${cols}]`);
    }
  });

  Deno.test("webgpu softmaxRows kernel: NaN rows give NaN sums, other rows are untouched", async () => {
    await initBackend("webgpu", { quiet: true });
    for (const cols of [5, 300, 50304]) {
      const rows = 4;
      const x = randomArray(rows * cols, 7 + cols).map((v) => v * 10);
      x[0 * cols + cols - 1] = NaN; // last element of row 0
      x[2 * cols + 0] = NaN; // first element of row 2
      x[2 * cols + Math.floor(cols / 2)] = NaN;
      const got = await checkShape(x, rows, cols, `NaN rows, ${cols} columns`);
      assert.deepEqual(Array.from(got.s, Number.isNaN), [true, false, true, false], `${cols}: NaN sums`);
      assert(Number.isNaN(got.m[0]) && Number.isNaN(got.m[2]), "NaN rows have a NaN maximum");
      assert(got.s[1] >= 1 && got.s[3] >= 1, "the other rows' sums are finite, at least exp(0)");
    }
  });

  Deno.test("webgpu softmaxRows kernel: -Infinity gives exp 0; +Infinity an infinite maximum", async () => {
    await initBackend("webgpu", { quiet: true });
    const x = new Float32Array([0, -Infinity, 5, 1, -Infinity, -Infinity, -Infinity, 2]);
    const got = await checkShape(x, 2, 4, "-Infinity rows");
    assertClose(got.e, [Math.exp(-5), 0, 1, Math.exp(-4), 0, 0, 0, 1], 1e-6, "-Infinity rows e");
    assert(Object.is(got.e[1], 0) && Object.is(got.e[4], 0), "exp(-Infinity - max) is +0");
    assertClose(got.s, [1 + Math.exp(-5) + Math.exp(-4), 1], 1e-6, "-Infinity rows s");
    // a long row: every other entry -Infinity (masked), odd length
    const cols = 5001, long = randomArray(cols, 21);
    for (let c = 0; c < cols; c += 2) long[c] = -Infinity;
    const g2 = await checkShape(long, 1, cols, "long -Infinity row");
    for (let c = 0; c < cols; c += 2) assert(Object.is(g2.e[c], 0), `e[${c}] = ${g2.e[c]}, want 0`);
    // a row that is all -Infinity: -inf - -inf is NaN, in the op chain as here
    const allNeg = await fused(tf.tensor2d([-Infinity, -Infinity, -Infinity], [1, 3]));
    assert(Number.isNaN(allNeg.s[0]), `all -Infinity row: sum ${allNeg.s[0]}`);
    // +Infinity (an fp16 overflow upstream): the maximum is infinite, so the loss m + log(s) is not finite
    const inf = await fused(tf.tensor2d([1, Infinity, 2, 3, 4, 5], [2, 3]));
    assert.equal(inf.m[0], Infinity);
    assert(!Number.isFinite(inf.m[0] + Math.log(inf.s[0])), "the loss of an overflowed row is not finite");
    assertClose(inf.s.subarray(1), [1 + Math.exp(-1) + Math.exp(-2)], 1e-6, "the finite row");
  });

  Deno.test("webgpu softmaxRows kernel: large values do not overflow (the maximum is subtracted)", async () => {
    await initBackend("webgpu", { quiet: true });
    for (const [offset, spread] of [[1000, 30], [1e30, 1e29], [3e38, 1e37]]) {
      const rows = 3, cols = 4099;
      const x = randomArray(rows * cols, 31).map((v) => offset + v * spread);
      const got = await checkShape(x, rows, cols, `values around ${offset}`);
      for (let i = 0; i < got.e.length; i++) {
        assert(got.e[i] >= 0 && got.e[i] <= 1, `offset ${offset}: e[${i}] = ${got.e[i]}`);
      }
      for (const s of got.s) assert(s >= 1 && Number.isFinite(s), `offset ${offset}: sum ${s}`);
    }
  });

  Deno.test("webgpu softmaxRows kernel: more rows than one dispatch dimension holds (2-D grid)", async () => {
    await initBackend("webgpu", { quiet: true });
    // deno-lint-ignore no-explicit-any
    const max = (tf.backend() as any).device.limits.maxComputeWorkgroupsPerDimension as number;
    const rows = max + 3, cols = 2;
    const x = randomArray(rows * cols, 41).map((v) => v * 4);
    const got = await fused(tf.tensor2d(x, [rows, cols]));
    const want = reference(x, rows, cols);
    assertClose(got.m, want.m, 0, "2-D grid m");
    assertClose(got.s, want.s, 1e-6, "2-D grid s");
    assertClose(got.e, want.e, 1e-6, "2-D grid e");
  });

  Deno.test("webgpu softmaxRows kernel: allocates only its outputs (no [rows, cols] temporaries)", async () => {
    await initBackend("webgpu", { quiet: true });
    // A shape no other test uses, so that no pooled buffer of its size exists yet: what the buffer pool
    // allocates while the call runs is what the call needs.
    const rows = 13, cols = 50111, bytes = rows * cols * 4;
    const x = tf.tensor2d(randomArray(rows * cols, 51), [rows, cols]);
    await readData(tf.sum(x)); // x on the GPU before counting
    const allocated = () =>
      (tf.memory() as unknown as { numBytesAllocatedInGPU: number }).numBytesAllocatedInGPU;
    const measure = async (f: () => { e: tf.Tensor; m: tf.Tensor; s: tf.Tensor }) => {
      const before = allocated();
      const out = f();
      await readData(out.s);
      const grew = allocated() - before;
      tf.dispose([out.e, out.m, out.s]);
      return grew;
    };
    const kernel = await measure(() => softmaxRows(x));
    assert(kernel >= bytes, `the kernel allocated ${kernel} bytes, less than its output e (${bytes})`);
    assert(kernel < 1.1 * bytes, `the kernel allocated ${kernel} bytes for an output of ${bytes}`);
    // the op chain needs e and the x - m temporary (shows that this measure sees temporaries)
    const x2 = tf.tensor2d(randomArray(rows * (cols + 1), 52), [rows, cols + 1]);
    await readData(tf.sum(x2));
    const chain = await measure(() => softmaxRowsByOps(x2));
    assert(chain >= 1.9 * bytes, `the op chain allocated only ${chain} bytes`);
    tf.dispose([x, x2]);
  });

  Deno.test("webgpu softmaxRows kernel: over the binding limit is a clear error; off switch runs the op chain", async () => {
    await initBackend("webgpu", { quiet: true });
    const x = tf.tensor2d(randomArray(4 * 300, 61), [4, 300]);
    setWebGPUBindingLimitForTests(1000);
    try {
      assert.throws(
        () => tf.engine().runKernel(SOFTMAX_ROWS_KERNEL, { x }, {}),
        /LmpipeSoftmaxRows: \[4, 300\] floats are over this GPU's storage-buffer binding limit.*maxRowsPerChunk/,
      );
    } finally {
      setWebGPUBindingLimitForTests(null);
    }
    setFusedKernelsEnabled(false);
    try {
      const { result: out, names } = dispatchedBy(() => softmaxRows(x));
      assert(!names.includes("LmpipeSoftmaxRowsProgram") && names.length >= 4, names.join(", "));
      tf.dispose([out.e, out.m, out.s]);
    } finally {
      setFusedKernelsEnabled(true);
    }
    // an empty input takes the op chain
    const empty = softmaxRows(tf.zeros([0, 5]) as tf.Tensor2D);
    assert.deepEqual(empty.e.shape, [0, 5]);
    tf.dispose([x, empty.e, empty.m, empty.s]);
  });

  Deno.test("tiedCrossEntropy on webgpu: same loss and gradients with the softmax kernel as with the op chain", async () => {
    await initBackend("webgpu", { quiet: true });
    for (const [N, C, V, chunkRows] of [[40, 16, 1003, 16], [6, 8, 50304, 4]]) {
      const h = tf.tensor2d(randomArray(N * C, 11), [N, C]);
      const w = tf.tensor2d(randomArray(V * C, 12).map((v) => v * 2), [V, C]);
      const t = tf.tensor1d(Array.from({ length: N }, (_, i) => (i * 389) % V), "int32");
      const run = async (kernel: boolean) => {
        setFusedKernelsEnabled(kernel);
        try {
          const { result: out, names } = dispatchedBy(() =>
            tf.valueAndGrads((a: tf.Tensor, b: tf.Tensor) =>
              tiedCrossEntropy(a as tf.Tensor2D, b as tf.Tensor2D, t, { chunkRows })
            )([h, w])
          );
          const res = {
            loss: (await readData(out.value))[0],
            dh: await readData(out.grads[0]),
            dw: await readData(out.grads[1]),
            softmaxDispatches: names.filter((n) => n === "LmpipeSoftmaxRowsProgram").length,
            dispatches: names.length,
          };
          tf.dispose([out.value, ...out.grads]);
          return res;
        } finally {
          setFusedKernelsEnabled(true);
        }
      };
      const on = await run(true), off = await run(false);
      const chunks = Math.ceil(N / chunkRows);
      assert.equal(on.softmaxDispatches, chunks, "one softmax dispatch per chunk");
      assert.equal(off.softmaxDispatches, 0);
      assert(
        on.dispatches <= off.dispatches - 3 * chunks,
        `${on.dispatches} vs ${off.dispatches} dispatches`,
      );
      assert(Number.isFinite(on.loss) && on.loss > 1, `loss ${on.loss}`);
      assert(Math.abs(on.loss - off.loss) <= 1e-5 * off.loss, `V ${V}: loss ${on.loss} vs ${off.loss}`);
      assertClose(on.dh, off.dh, 1e-5, `V ${V}: dL/dh`);
      assertClose(on.dw, off.dw, 1e-5, `V ${V}: dL/dW`);
      if (software) {
        assert.equal(on.loss, off.loss, `V ${V}: loss`);
        assertSameValues(new Float32Array(on.dh), new Float32Array(off.dh), `V ${V}: dL/dh`);
        assertSameValues(new Float32Array(on.dw), new Float32Array(off.dw), `V ${V}: dL/dW`);
      }
      tf.dispose([h, w, t]);
    }
  });

  Deno.test("tiedCrossEntropy on webgpu: a NaN in one embedding row (never a target) makes the loss NaN", async () => {
    await initBackend("webgpu", { quiet: true });
    // The NaN reaches every row's logits in one column but no target logit, so only the softmax
    // sums (through log s) can carry it into the loss.
    const [N, C, V] = [5, 4, 700];
    const wv = randomArray(V * C, 72);
    wv[600 * C + 1] = NaN;
    const h = tf.tensor2d(randomArray(N * C, 71), [N, C]), w = tf.tensor2d(wv, [V, C]);
    const t = tf.tensor1d([1, 2, 3, 4, 5], "int32");
    const { result: loss, names } = dispatchedBy(() => tiedCrossEntropy(h, w, t, { chunkRows: 2 }));
    assert.equal(names.filter((n) => n === "LmpipeSoftmaxRowsProgram").length, 3);
    assert(Number.isNaN((await readData(loss))[0]), "the loss must be NaN");
    tf.dispose([h, w, t, loss]);
  });
}
