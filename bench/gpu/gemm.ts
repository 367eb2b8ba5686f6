// GEMM rate on webgpu: lmpipe's WGSL GEMM (lib/tensor/ops/matmul/webgpu.ts) against TF.js's stock
// matMul, fp32 (the WGSL GEMM has no f16 variant yet), square n x n x n, plus each one's largest error against float64 on the first 8 rows (a
// correctness check on the GPU at hand). One JSON line per (n, kernel) on stdout; the yardstick is
// bench/gpu/torch_matmul.py on the same card.
//
//   deno run -A bench/gpu/gemm.ts [--sizes 1024,2048,4096] [--seconds 1]
import { parseFlags, str } from "../../lib/flags.ts";
import { initBackend, readData, tf } from "../../lib/tensor/backend.ts";
import { setOwnMatMulEnabled } from "../../lib/tensor/ops/matmul/webgpu.ts";
import { gpuSync } from "../webgpu_step.ts";

const p = parseFlags("bench/gpu/gemm", Deno.args, { sizes: { type: "string" }, seconds: { type: "string" } });
const sizes = str(p, "sizes", "1024,2048,4096").split(",").map(Number);
const seconds = Number(str(p, "seconds", "1"));
const info = await initBackend("webgpu", { quiet: true });
console.error(`bench/gpu/gemm: ${info.device}`);

for (const n of sizes) {
  const a = tf.randomUniform([n, n], -1, 1), b = tf.randomUniform([n, n], -1, 1);
  const results: Record<string, Float32Array> = {};
  for (const kernel of ["own", "stock"]) {
    setOwnMatMulEnabled(kernel === "own");
    const t0 = performance.now();
    const first = tf.matMul(a, b);
    results[kernel] = (await readData(first)) as Float32Array; // compiles, and the result to compare
    first.dispose();
    const firstMs = performance.now() - t0;
    // matMuls per GPU sync: doubled until a batch takes 200 ms, so that the sync's fixed cost (a host
    // read waits ~10 ms in Deno's WebGPU: bench/gpu/sync_latency.ts) is under 5% of what is timed.
    let batch = 4;
    for (;;) {
      const t = performance.now();
      for (let i = 0; i < batch; i++) tf.matMul(a, b).dispose(); // buffers are released after the GPU is done
      await gpuSync();
      if (performance.now() - t >= 200 || batch >= 4096) break;
      batch *= 2;
    }
    let reps = 0;
    const t1 = performance.now();
    while (performance.now() - t1 < seconds * 1000 || reps < 3) {
      for (let i = 0; i < batch; i++) tf.matMul(a, b).dispose();
      reps += batch;
      await gpuSync();
    }
    const s = (performance.now() - t1) / 1000;
    const line = {
      bench: "gemm",
      kernel,
      dtype: "fp32",
      n,
      gflops: +((2 * n ** 3 * reps) / s / 1e9).toFixed(1),
      ms: +((s * 1000) / reps).toFixed(3),
      reps,
      per_sync: batch,
      first_call_ms: +firstMs.toFixed(1),
      device: info.device,
    };
    console.log(JSON.stringify(line));
  }
  // both results against float64 on the first rows (all of them for small n)
  const [av, bv] = [await readData(a), await readData(b)];
  const rows = Math.min(n, 8);
  const err: Record<string, number> = { own: 0, stock: 0 };
  let den = 1e-30;
  for (let r = 0; r < rows; r++) {
    const want = new Float64Array(n);
    for (let k = 0; k < n; k++) {
      const x = av[r * n + k];
      for (let c = 0; c < n; c++) want[c] += x * bv[k * n + c];
    }
    for (let c = 0; c < n; c++) {
      den = Math.max(den, Math.abs(want[c]));
      for (const kernel of ["own", "stock"]) {
        err[kernel] = Math.max(err[kernel], Math.abs(results[kernel][r * n + c] - want[c]));
      }
    }
  }
  console.log(JSON.stringify({
    bench: "gemm_check",
    n,
    rows_checked: rows,
    max_rel_err_own: err.own / den,
    max_rel_err_stock: err.stock / den,
  }));
  tf.dispose([a, b]);
}
setOwnMatMulEnabled(true);
