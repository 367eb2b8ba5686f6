// wasm matMul speed with and without the CBLAS sgemm path (lib/native/blas.ts) on one process: the
// numbers behind blasMinWork in lib/tensor/kernel_choice.ts (below it XNNPACK is as fast) and the GPT shapes
// (output head, attention per head). Timings are wall-clock medians; noisy on a shared machine.
//
//   LMPIPE_WASM_THREADS=1 deno run -A bench/blas_matmul.ts
//   LMPIPE_WASM_THREADS=2 LMPIPE_BLAS=/path/to/libopenblas.so.0 deno run -A bench/blas_matmul.ts
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { currentBlas } from "../lib/native/blas.ts";
import { setBlasMinWork } from "../lib/tensor/kernel_choice.ts";

const info = await initBackend("wasm");
if (!currentBlas()) {
  console.error(`bench/blas_matmul.ts: no BLAS on this machine (${info.device}); nothing to compare`);
  Deno.exit(1);
}

// [batch, M, K, N, transA, transB]
const SHAPES: [number, number, number, number, boolean, boolean][] = [
  [1, 16, 16, 16, false, false],
  [1, 32, 32, 32, false, false],
  [1, 24, 48, 48, false, false],
  [1, 64, 64, 64, false, false],
  [1, 128, 128, 128, false, false],
  [1, 333, 128, 128, false, false],
  [1, 333, 128, 512, false, false],
  [1, 128, 333, 128, true, false],
  [32, 128, 32, 128, false, true], // attention scores, one slice per (batch, head)
  [32, 128, 128, 32, false, false], // attention output
  [1, 333, 128, 50304, false, false], // output head forward
  [1, 333, 50304, 128, false, false], // its input gradient
  [1, 128, 333, 50304, true, false], // its weight gradient
];

function time(run: () => tf.Tensor, flop: number): number {
  const times: number[] = [];
  const reps = Math.max(3, Math.min(200, Math.ceil(2e8 / flop)));
  for (let i = 0; i < reps + 2; i++) {
    const t0 = performance.now();
    const y = run();
    y.dataSync();
    const dt = performance.now() - t0;
    y.dispose();
    if (i >= 2) times.push(dt);
  }
  times.sort((x, y) => x - y);
  return times[Math.floor(times.length / 2)];
}

console.log(
  `${info.device}\n| shape | M*K*N | XNNPACK GFLOP/s | BLAS GFLOP/s | ratio |\n|---|---|---|---|---|`,
);
for (const [batch, M, K, N, tA, tB] of SHAPES) {
  const bs = batch > 1 ? [batch] : [];
  const a = tf.randomNormal([...bs, ...(tA ? [K, M] : [M, K])]);
  const b = tf.randomNormal([...bs, ...(tB ? [N, K] : [K, N])]);
  const flop = 2 * batch * M * K * N;
  const run = () => tf.matMul(a, b, tA, tB);
  setBlasMinWork(Infinity);
  const x = time(run, flop);
  setBlasMinWork(0);
  const bl = time(run, flop);
  const shape = `${batch > 1 ? batch + "x" : ""}${M}x${K}${tA ? "ᵀ" : ""} @ ${K}x${N}${tB ? "ᵀ" : ""}`;
  const g = (ms: number) => (flop / ms / 1e6).toFixed(1);
  console.log(`| ${shape} | ${M * K * N} | ${g(x)} | ${g(bl)} | ${(x / bl).toFixed(2)} |`);
  a.dispose();
  b.dispose();
}
