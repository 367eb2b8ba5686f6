// True batches of wasm matMuls (attention's per-head products, [B, H, T, T] x [B, H, T, D]) on oneDNN's
// matmul primitive, one call for the whole batch (lib/tensor/ops/matmul/dnnl.ts), against one oneDNN
// sgemm per slice, in one process: the numbers behind kernel_choice.ts's batchMatMul row. Each slice is
// too small for two threads to share, so the per-slice path gets nothing from a second thread; the
// primitive shares the slices out. Prints a Markdown table of medians and the ratio per shape.
//
//   LMPIPE_WASM_THREADS=1 deno run -A bench/batched_matmul.ts
//   LMPIPE_WASM_THREADS=2 deno run -A bench/batched_matmul.ts
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { currentDnnl } from "../lib/native/dnnl.ts";
import { kernelFor, setDnnlBatchedMatMuls } from "../lib/tensor/kernel_choice.ts";
import { median } from "./common.ts";
import { dnnlMatMulCalls } from "../lib/tensor/ops/matmul/dnnl.ts";

const info = await initBackend("wasm");
const dnnl = currentDnnl();
if (!dnnl?.gemm) {
  console.error(`bench/batched_matmul.ts: no oneDNN with sgemm here (${info.device}); nothing to compare`);
  Deno.exit(1);
}

// [a shape, b shape, transposeA, transposeB, what]
const CASES: [number[], number[], boolean, boolean, string][] = [
  [[8, 4, 128, 32], [8, 4, 128, 32], false, true, "gpt T scores q k^T"],
  [[8, 4, 128, 128], [8, 4, 128, 32], false, false, "gpt T weighted sum p v"],
  [[8, 4, 256, 64], [8, 4, 256, 64], false, true, "pixel small warm-up scores"],
  [[8, 4, 256, 256], [8, 4, 256, 64], false, false, "pixel small p v"],
  [[8, 4, 256, 256], [8, 4, 256, 64], true, false, "pixel small dv = p^T dy"],
  [[8, 8, 256, 256], [8, 8, 256, 144], false, false, "pixel-attn small image values p v"],
  [[8, 8, 256, 144], [8, 8, 256, 144], false, true, "pixel-attn small dp = dy v^T"],
  [[8, 8, 256, 256], [8, 8, 256, 144], true, false, "pixel-attn small dv = p^T dy"],
];

function time(run: () => tf.Tensor): number {
  const times: number[] = [];
  for (let i = 0; i < 25; i++) {
    const t0 = performance.now();
    const y = run(); // wasm kernels are synchronous: the product is done when this returns
    if (i >= 5) times.push(performance.now() - t0);
    y.dispose();
  }
  return median(times);
}

console.log(`${info.device}\n`);
console.log(
  "| product | a | b | per-slice sgemm ms | matmul primitive ms | ratio |\n|---|---|---|---:|---:|---:|",
);
for (const [as, bs, tA, tB, what] of CASES) {
  const a = tf.randomNormal(as), b = tf.randomNormal(bs);
  const run = () => tf.matMul(a, b, tA, tB);
  const old = setDnnlBatchedMatMuls(false);
  const slices = time(run);
  setDnnlBatchedMatMuls(true);
  const calls = dnnlMatMulCalls();
  const whole = time(run);
  setDnnlBatchedMatMuls(old);
  if (dnnlMatMulCalls() === calls) {
    throw new Error(`${what}: the matmul primitive did not run (${kernelFor("batchMatMul")})`);
  }
  const t = (x: boolean) => (x ? " T" : "");
  console.log(
    `| ${what} | [${as}]${t(tA)} | [${bs}]${t(tB)} | ${slices.toFixed(3)} | ${whole.toFixed(3)} | ` +
      `${(slices / whole).toFixed(2)}x |`,
  );
  a.dispose(), b.dispose();
}
console.log(
  "\ncommand: LMPIPE_WASM_THREADS=" + (Deno.env.get("LMPIPE_WASM_THREADS") ?? "(default)") +
    " deno run -A bench/batched_matmul.ts",
);
