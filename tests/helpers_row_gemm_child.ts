// Child process for tests/dnnl_row_gemm_test.ts: starts wasm with $LMPIPE_WASM_THREADS threads and runs
// evaluation's linear layers (matMulBias outside a tape) as row jobs of the wasm threads on oneDNN's sgemm
// (lib/tensor/wasm/row_gemm.ts), then on the matmul primitive. Prints one JSON line: which path ran each
// product, rows the workers took, the largest relative errors against a float64 loop, whether repeated calls
// gave the same bits, the largest difference from the primitive, and whether a tape kept the op chain.
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { currentDnnl, dnnlStatus } from "../lib/native/dnnl.ts";
import { kernelFor, setDnnlRowJobs } from "../lib/tensor/kernel_choice.ts";
import { matMulBias } from "../lib/tensor/ops/matmul/bias.ts";
import { dnnlMatMulCalls, matMulRowJobCalls } from "../lib/tensor/ops/matmul/dnnl.ts";
import { wasmKernelStats, wasmKernelThreads } from "../lib/tensor/wasm/kernels.ts";
import { randomArray } from "../lib/tensor/testing.ts";

await initBackend("wasm", { quiet: true });
const dnnl = currentDnnl();
if (!dnnl?.gemm || !dnnl.openmp) {
  console.log(JSON.stringify({ skip: dnnl ? "this oneDNN has no sgemm or is not on OpenMP" : dnnlStatus() }));
  Deno.exit(0);
}

/** x [M, K] @ w [K, N] + b in float64, rounded to float32. */
function reference(x: Float32Array, w: Float32Array, b: Float32Array, M: number, K: number, N: number) {
  const y = new Float32Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = b[j];
      for (let k = 0; k < K; k++) s += x[i * K + k] * w[k * N + j];
      y[i * N + j] = s;
    }
  }
  return y;
}

// GPT T's fc layer; rows that are no multiple of 8 and an odd width; the smallest size a row job takes
const shapes = [[1024, 128, 512], [301, 130, 71], [64, 4096, 8]];
const results = [];
for (const [M, K, N] of shapes) {
  const xv = randomArray(M * K, M), wv = randomArray(K * N, K + 1), bv = randomArray(N, N + 2);
  const [x, w, b] = [tf.tensor2d(xv, [M, K]), tf.tensor2d(wv, [K, N]), tf.tensor1d(bv)];
  const run = () => tf.tidy(() => matMulBias(x, w, b).dataSync() as Float32Array);
  const choice = kernelFor("matMulBias", "wasm", M * K * N, M);
  const [calls, workers] = [matMulRowJobCalls(), wasmKernelStats().rowsOnWorkers];
  const first = run();
  let sameBits = true;
  for (let i = 0; i < 20; i++) sameBits &&= run().every((v, j) => Object.is(v, first[j]));
  const rowJobs = matMulRowJobCalls() - calls, workerRows = wasmKernelStats().rowsOnWorkers - workers;
  const want = reference(xv, wv, bv, M, K, N);
  let err = 0;
  want.forEach((v, i) => err = Math.max(err, Math.abs(first[i] - v) / Math.max(1, Math.abs(v))));
  const old = setDnnlRowJobs(false);
  const primitiveCalls = dnnlMatMulCalls();
  const onPrimitive = run();
  const primitiveRan = dnnlMatMulCalls() - primitiveCalls;
  setDnnlRowJobs(old);
  let fromPrimitive = 0;
  onPrimitive.forEach((v, i) => fromPrimitive = Math.max(fromPrimitive, Math.abs(first[i] - v)));
  // under a gradient tape the op chain runs (training's numbers and tape), never a row job
  const tapeCalls = matMulRowJobCalls();
  tf.tidy(() => tf.grad((xx: tf.Tensor) => tf.sum(matMulBias(xx as tf.Tensor2D, w, b)))(x).dataSync());
  results.push({
    shape: [M, K, N],
    choice,
    rowJobs,
    workerRows,
    err,
    sameBits,
    primitiveRan,
    fromPrimitive,
    tapeRowJobs: matMulRowJobCalls() - tapeCalls,
  });
  tf.dispose([x, w, b]);
}
console.log(JSON.stringify({ threads: wasmKernelThreads(), results }));
