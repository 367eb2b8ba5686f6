// The matMuls, convolutions and lmpipe's own kernels (attention, norms, loss softmax, AdamW, ...) of one
// training step, each timed alone on the GPU: which shapes a step spends its GPU time on and at what
// fraction of the card's rate, free of the per-dispatch
// timestamp queries that bench/webgpu_audit.ts --measure needs (those split every dispatch into its
// own pass and inflate short kernels). One warm-up step runs with TF.js's engine.runKernel watched, so
// the shapes are exactly what the model asks for on this backend; then each distinct (kernel, input
// shapes, attributes) runs back to back in batches sized so that Deno's ~10 ms host-read floor
// (bench/gpu/sync_latency.ts) is under 5% of what is timed. With --plans every matMul also runs under
// every tile and split-K factor lmpipe's GEMM offers, and the fastest is printed beside the chosen one.
// One JSON line per shape, then a summary line with the step's own wall time beside the sum (what the
// sum leaves out: TF.js's elementwise kernels, host time per dispatch, the step's reads).
// Caveat: calls of one shape run back to back on fresh outputs with no dependency between them, so the
// GPU may overlap them; a small grid is timed at its throughput, which flatters it against the latency
// it has inside a step.
//
//   deno run -A bench/gpu/shapes.ts --model gpt --preset small [--batch-size 8] [--precision fp32]
//        [--plans] [--ms 100] [--only REGEX]
import { num, parseFlags, str } from "../../lib/flags.ts";
import { initBackend, tf } from "../../lib/tensor/backend.ts";
import { setMatMulPlanForTests, TILES } from "../../lib/tensor/ops/matmul/webgpu.ts";
import { planMatMul } from "../../lib/tensor/ops/matmul/webgpu.ts";
import { createModel, resolveConfig } from "../../lib/models/registry.ts";
import { makeTrainStep, msPerCall } from "../webgpu_step.ts";
import type { Precision } from "../../lib/models/types.ts";

const cmd = "bench/gpu/shapes";
const p = parseFlags(cmd, Deno.args, {
  model: { type: "string" },
  preset: { type: "string" },
  "batch-size": { type: "string" },
  precision: { type: "string" },
  plans: { type: "boolean" },
  ms: { type: "string" },
  only: { type: "string" },
});
const only = new RegExp(str(p, "only", "."));
const family = str(p, "model", "gpt"), preset = str(p, "preset", "small");
const B = num(p, cmd, "batch-size", 8, { min: 1, integer: true });
const precision = str(p, "precision", "fp32") as Precision;
const batchMs = num(p, cmd, "ms", 100, { min: 1 });
const info = await initBackend("webgpu", { quiet: true });

const WATCHED = new Set([
  "BatchMatMul",
  "_FusedMatMul",
  "Conv2D",
  "Conv2DBackpropInput",
  "Conv2DBackpropFilter",
]);
const watched = (kernel: string) => (WATCHED.has(kernel) || kernel.startsWith("Lmpipe")) && only.test(kernel);
interface Call {
  kernel: string;
  shapes: Record<string, number[]>;
  dtypes: Record<string, tf.DataType>;
  attrs: tf.NamedAttrMap;
  count: number;
}
const calls = new Map<string, Call>();
// deno-lint-ignore no-explicit-any
const engine = tf.engine() as any;
const runKernel = engine.runKernel.bind(engine);
let watching = false;
engine.runKernel = (kernel: string, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap) => {
  // (kernels that take lists of tensors, the gradient sum of squares and AdamW's groups, are left out)
  const plain = !Array.isArray(inputs) &&
    Object.values(inputs).every((t) => t == null || t instanceof tf.Tensor);
  if (watching && watched(kernel) && plain) {
    const shapes: Record<string, number[]> = {}, dtypes: Record<string, tf.DataType> = {};
    for (const [k, t] of Object.entries(inputs)) if (t) shapes[k] = [...t.shape], dtypes[k] = t.dtype;
    const key = JSON.stringify([kernel, shapes, dtypes, attrs]);
    const c = calls.get(key);
    if (c) c.count++;
    else calls.set(key, { kernel, shapes, dtypes, attrs: { ...attrs }, count: 1 });
  }
  return runKernel(kernel, inputs, attrs);
};

const model = createModel(resolveConfig(family, preset), 1);
const { step, dispose } = makeTrainStep(model, B, precision);
await step(); // compiles
watching = true;
await step();
watching = false;
const stepMs: number[] = [];
for (let i = 0; i < 3; i++) {
  const t0 = performance.now();
  await step();
  stepMs.push(performance.now() - t0);
}
stepMs.sort((a, b) => a - b);
dispose(), model.dispose();
console.error(`${cmd}: ${family}/${preset} batch ${B}: ${calls.size} distinct shapes on ${info.device}`);

/** A matMul call's batch (broadcast over the leading dims), M, N and K. */
function gemmDims(c: Call): { batch: number; M: number; N: number; K: number } {
  const A = c.shapes.a, Bm = c.shapes.b, ta = !!c.attrs.transposeA, tb = !!c.attrs.transposeB;
  const lead = (d: number[]) => d.slice(0, -2).reduce((x, y) => x * y, 1);
  return {
    batch: Math.max(lead(A), lead(Bm)),
    M: ta ? A.at(-1)! : A.at(-2)!,
    N: tb ? Bm.at(-2)! : Bm.at(-1)!,
    K: ta ? A.at(-2)! : A.at(-1)!,
  };
}

/** FLOPs of one call: 2 x outputs x reduction length. */
function flopsOf(c: Call): number {
  const s = c.shapes, a = c.attrs as Record<string, unknown>;
  if (!c.kernel.includes("MatMul") && !c.kernel.startsWith("Conv2D")) return 0; // lmpipe's kernels: time only
  if (c.kernel.includes("MatMul")) {
    const { batch, M, N, K } = gemmDims(c);
    return 2 * batch * M * N * K;
  }
  if (c.kernel === "Conv2D") { // x [N,H,W,Ci], filter [KH,KW,Ci,Co]; output pixels from strides/pad
    const [n, h, w] = s.x, [kh, kw, ci, co] = s.filter;
    const st = a.strides as number | number[], sh = Array.isArray(st) ? st[0] : st;
    const oh = a.pad === "same" ? Math.ceil(h / sh) : Math.ceil((h - kh + 1) / sh);
    const ow = a.pad === "same" ? Math.ceil(w / sh) : Math.ceil((w - kw + 1) / sh);
    return 2 * n * oh * ow * kh * kw * ci * co;
  }
  if (c.kernel === "Conv2DBackpropInput") { // dy [N,OH,OW,Co], filter [KH,KW,Ci,Co]
    const [n, oh, ow, co] = s.dy, [kh, kw, ci] = s.filter;
    return 2 * n * oh * ow * kh * kw * ci * co;
  }
  const [n, oh, ow, co] = s.dy, fs = a.filterShape as number[]; // Conv2DBackpropFilter
  return 2 * n * oh * ow * fs[0] * fs[1] * fs[2] * co;
}

const rows: { kernel: string; ms: number; count: number; flops: number }[] = [];
for (const c of calls.values()) {
  const inputs: tf.NamedTensorMap = {};
  for (const [k, shape] of Object.entries(c.shapes)) {
    inputs[k] = c.dtypes[k] === "float32" ? tf.randomUniform(shape, -1, 1) : tf.zeros(shape, c.dtypes[k]);
  }
  const run = () => tf.dispose(runKernel(c.kernel, inputs, c.attrs) as tf.Tensor | tf.Tensor[]);
  const ms = await msPerCall(run, batchMs, 8192);
  const flops = flopsOf(c);
  const line: Record<string, unknown> = {
    bench: "shape",
    kernel: c.kernel,
    shapes: c.shapes,
    transpose: c.kernel.includes("MatMul") ? [!!c.attrs.transposeA, !!c.attrs.transposeB] : undefined,
    strides: c.attrs.strides,
    calls_per_step: c.count,
    ms: +ms.toFixed(4),
    tflops: flops ? +(flops / ms / 1e9).toFixed(2) : undefined,
  };
  if (p.values.plans && c.kernel.includes("MatMul")) {
    const { batch, M, N, K } = gemmDims(c);
    const chosen = planMatMul(batch, M, N, K, 2 ** 29);
    line.chosen = `${chosen.tile.name}/${chosen.splits}`;
    const plans: Record<string, number> = {};
    for (const tile of Object.values(TILES)) {
      for (let S = 1; S <= 64 && (S === 1 || K / S >= 2 * tile.BK); S *= 2) {
        setMatMulPlanForTests({ tile, splits: S });
        plans[`${tile.name}/${S}`] = +(await msPerCall(run, batchMs, 8192)).toFixed(4);
      }
    }
    setMatMulPlanForTests(null);
    const best = Object.entries(plans).sort((x, y) => x[1] - y[1])[0];
    line.best = best[0], line.best_ms = best[1], line.plans = plans;
  }
  console.log(JSON.stringify(line));
  rows.push({ kernel: c.kernel, ms, count: c.count, flops });
  tf.dispose(Object.values(inputs));
}
const total = rows.reduce((s, r) => s + r.ms * r.count, 0);
const byKernel: Record<string, number> = {};
for (const r of rows) byKernel[r.kernel] = +((byKernel[r.kernel] ?? 0) + r.ms * r.count).toFixed(3);
console.log(JSON.stringify({
  bench: "shapes_summary",
  model: family,
  preset,
  batch_size: B,
  precision,
  distinct_shapes: rows.length,
  ms_per_step: +total.toFixed(3),
  step_wall_ms: +stepMs[1].toFixed(1),
  matmul_conv_tflops: +(
    rows.reduce((s, r) => s + r.flops * r.count, 0) /
    rows.filter((r) => r.flops).reduce((s, r) => s + r.ms * r.count, 0) / 1e9
  ).toFixed(2),
  ms_by_kernel: byKernel,
  device: info.device,
}));
