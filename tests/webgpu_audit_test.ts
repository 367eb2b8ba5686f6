// bench/webgpu_audit.ts: the roofline model on literal cases, and one audited gpt tiny step on webgpu
// (llvmpipe in CI) whose JSON lines are complete, consistent with the summary, and show lmpipe's GEMM
// (or TF.js's stock matMul with --matmul stock) with the FLOPs of the step's matMuls.
import assert from "node:assert/strict";
import { dispatchCost, GPUS, LAUNCH_MS, predict } from "../bench/webgpu_audit.ts";
import { webgpuStatus } from "../lib/tensor/testing.ts";

const gpu = await webgpuStatus();

Deno.test("webgpu audit: roofline, fill and flags on literal cases", () => {
  const h100 = GPUS.h100;
  // 67 GFLOP, tiny traffic, full card: 1 ms + launch
  const big = predict({ flops: 67e9, bytes: 1e6 }, 1000, h100);
  assert(Math.abs(big.roofline_ms - 1) < 1e-9 && Math.abs(big.predicted_ms - (1 + LAUNCH_MS)) < 1e-9);
  assert.deepEqual(big.flags, []);
  // 33.5 MB in one workgroup: bandwidth-bound 0.01 ms, 264x that for using one of 264 slots
  const one = predict({ flops: 1, bytes: 33.5e6 }, 1, h100);
  assert(Math.abs(one.roofline_ms - 0.01) < 1e-9 && Math.abs(one.predicted_ms - (2.64 + LAUNCH_MS)) < 1e-9);
  assert.deepEqual(one.flags, ["underfilled", "far-above-roofline"]);
  assert(
    predict({ flops: 1, bytes: 33.5e6 }, 1, GPUS.h200).roofline_ms < one.roofline_ms,
    "H200 has more bandwidth",
  );
  // 33.5 GB through workgroup memory at 132 SMs x 128 B x 1.98 GHz: 1 ms, 500x its 0.002 ms DRAM roofline
  const smem = predict({ flops: 1, bytes: 6.7e6, smem: 1000 * 132 * 128 * 1.98e3 }, 1000, h100);
  assert(Math.abs(smem.predicted_ms - (1 + LAUNCH_MS)) < 1e-9, `${smem.predicted_ms}`);
  assert.deepEqual(smem.flags, ["far-above-roofline"]);
  // TF.js matMul program: 2 M N K from [batch, M, K] and the [batch, M, N] output
  const mm = dispatchCost({ constructor: { name: "MatMulPackedProgram" }, outputShape: [2, 5, 7] }, {
    dataId: {},
    shape: [2, 5, 7],
    dtype: "float32",
  }, [{ dataId: {}, shape: [2, 5, 3], dtype: "float32" }, {
    dataId: {},
    shape: [2, 3, 7],
    dtype: "float32",
  }]);
  assert.deepEqual(mm, { flops: 2 * 2 * 5 * 7 * 3, bytes: 4 * (70 + 30 + 42) });
  // lmpipe programs carry their own cost
  assert.deepEqual(
    dispatchCost({ cost: { flops: 9, bytes: 8 } }, { dataId: {}, shape: [1], dtype: "float32" }, []),
    {
      flops: 9,
      bytes: 8,
    },
  );
});

if (gpu.ok) {
  Deno.test("webgpu audit: one gpt tiny step, JSON per dispatch and a consistent summary, own and stock matMul", async () => {
    for (const matmul of ["own", "stock"]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../bench/webgpu_audit.ts", import.meta.url).pathname,
          ...["--model", "gpt", "--preset", "tiny", "--batch-size", "1", "--vocab-size", "256"],
          ...["--json", "--gpu", "h200", "--matmul", matmul],
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      const lines = text.trim().split("\n").map((l) => JSON.parse(l));
      const summary = lines.pop();
      assert.equal(summary.summary, true);
      assert.equal(summary.dispatches, lines.length);
      assert(lines.length > 50, `${lines.length} dispatches`);
      for (const d of lines) {
        for (const k of ["program", "workgroups", "threads", "flops", "bytes", "predicted_ms"]) {
          assert(k in d, k);
        }
        assert(d.predicted_ms >= LAUNCH_MS && d.workgroups.length === 3);
      }
      const total = lines.reduce((s, d) => s + d.predicted_ms, 0);
      assert(Math.abs(total - summary.predicted_step_ms) < 1e-9 * total + 1e-12);
      assert.equal(summary.gpu, "H200");
      assert(summary.first_step_compile_ms > 0 && summary.first_step_pipelines > 0, "compile time reported");
      const own = lines.filter((d) => d.program === "LmpipeMatMulProgram");
      assert.equal(own.length > 0, matmul === "own", `${matmul}: lmpipe GEMM dispatches ${own.length}`);
      // the step's matMul FLOPs: 2 layers x (forward 4 GEMMs + backward 8) at least, head included
      const mmFlops = lines.filter((d) => /MatMul/.test(d.program)).reduce((s, d) => s + d.flops, 0);
      assert(mmFlops > 6 * 2 * 64 * 64 * 64 * 12, `matMul FLOPs ${mmFlops}`);
    }
  });
}
