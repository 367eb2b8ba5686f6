// Training speed on webgpu for one model and preset: first step (with its compile time, reported
// apart), then the median ms/step and tokens/s of the timed steps, with lmpipe's GEMM or TF.js's stock matMul, and
// the peak of the GPU buffers TF.js holds (lib/tensor/memory.ts: in use plus pooled for reuse, weights
// included; WebGPU reports no device-wide figure). One JSON line on stdout. Used by bench/gpu/run_all.sh; runs anywhere webgpu does.
//
//   deno run -A bench/gpu/train_step.ts --model gpt --preset small [--batch-size 8] [--steps 3]
//        [--matmul own|stock] [--precision fp32|mixed]
import { num, parseFlags, str } from "../../lib/flags.ts";
import { initBackend, tf } from "../../lib/tensor/backend.ts";
import { setOwnMatMulEnabled } from "../../lib/tensor/ops/matmul/webgpu.ts";
import { createModel, resolveConfig } from "../../lib/models/registry.ts";
import { peakBytes, resetPeak } from "../../lib/tensor/memory.ts";
import { compileTimer, makeTrainStep } from "../webgpu_step.ts";
import type { Precision } from "../../lib/models/types.ts";

const cmd = "bench/gpu/train_step";
const p = parseFlags(cmd, Deno.args, {
  model: { type: "string" },
  preset: { type: "string" },
  "batch-size": { type: "string" },
  steps: { type: "string" },
  matmul: { type: "string" },
  precision: { type: "string" },
});
const family = str(p, "model", "gpt"), preset = str(p, "preset", "small");
const B = num(p, cmd, "batch-size", 8, { min: 1, integer: true });
const steps = num(p, cmd, "steps", 3, { min: 1, integer: true });
const matmul = str(p, "matmul", "own");
const precision = str(p, "precision", "fp32") as Precision;
const info = await initBackend("webgpu", { quiet: true });
setOwnMatMulEnabled(matmul !== "stock");
const compile = compileTimer();
resetPeak();
const model = createModel(resolveConfig(family, preset), 1);
const { step, tokens, dispose } = makeTrainStep(model, B, precision);
console.error(
  `${cmd}: ${family}/${preset} batch ${B} (${tokens} tokens) ${precision} matMul ${matmul} on ${info.device}`,
);
let t0 = performance.now();
const loss0 = await step();
const firstMs = performance.now() - t0;
const firstCompile = compile.ms, pipelines = compile.pipelines;
compile.reset();
const times: number[] = [];
let loss = loss0;
for (let i = 0; i < steps; i++) {
  t0 = performance.now();
  loss = await step();
  times.push(performance.now() - t0);
  console.error(`${cmd}: step ${i + 1}/${steps} ${times.at(-1)!.toFixed(0)} ms`);
}
// the median: the first timed steps after compilation can still be slower (an H200 showed 158 then 122 ms)
const ms = [...times].sort((a, b) => a - b)[times.length >> 1];
console.log(JSON.stringify({
  bench: "train",
  model: family,
  preset,
  batch_size: B,
  tokens_per_step: tokens,
  precision,
  matmul,
  params: model.paramCount(),
  first_step_ms: +firstMs.toFixed(1),
  first_step_compile_ms: +firstCompile.toFixed(1),
  first_step_pipelines: pipelines,
  later_compile_ms: +compile.ms.toFixed(1),
  ms_per_step: +ms.toFixed(1),
  tokens_per_s: +((tokens * 1000) / ms).toFixed(1),
  gpu_bytes: (tf.memory() as { numBytesInGPU?: number }).numBytesInGPU ?? null,
  peak_gpu_bytes: peakBytes(),
  loss_first: loss0,
  loss_last: loss,
  device: info.device,
}));
dispose(), model.dispose();
