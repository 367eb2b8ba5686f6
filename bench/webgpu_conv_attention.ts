// Forward + backward time of lmpipe's webgpu convs (lib/tensor/ops/conv2d/webgpu.ts) and flash attention
// (lib/tensor/ops/attention/webgpu.ts) against what runs with them off (TF.js's stock conv kernels with
// lib/tensor/patches/webgpu.ts's filter gradient (ops/conv2d/mod.ts); matMul + fused causal softmax + matMul), on the image models'
// and gpt's shapes, in one process: each case alternates off and on and keeps the fastest of --reps
// runs (a GPU sync ends each run), after one warm-up of each (shader compiles). Prints a Markdown table.
//
//   deno run -A bench/webgpu_conv_attention.ts [--reps 3] [--scale 1]
// --scale divides the batch sizes (llvmpipe: --scale 4 keeps a run under a minute or two).
import { parseArgs } from "node:util";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import { setWebgpuAttentionEnabled, setWebgpuConvEnabled } from "../lib/tensor/kernel_choice.ts";
import { causalAttention } from "../lib/tensor/ops/attention/mod.ts";

const { values } = parseArgs({ options: { reps: { type: "string" }, scale: { type: "string" } } });
const reps = Number(values.reps ?? 3), scale = Number(values.scale ?? 1);
if (!(reps >= 1) || !(scale >= 1)) {
  console.error("bench/webgpu_conv_attention: --reps and --scale must be numbers >= 1");
  Deno.exit(2);
}
const be = await initBackend("webgpu", { quiet: true });
const r = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, "float32", seed);

interface Case {
  name: string;
  shape: string;
  gflop: number;
  /** Turns lmpipe's kernel for this case on or off. */
  toggle: (on: boolean) => void;
  /** Builds the inputs; returns the forward + backward to time (its outputs are waited for and freed). */
  setup: () => { run: () => tf.Tensor[]; inputs: tf.Tensor[] };
}

function convCase(name: string, n: number, hw: number, ci: number, co: number, stride: number): Case {
  const o = Math.ceil(hw / stride);
  return {
    name,
    shape: `${n}x${hw}x${hw}x${ci} * 3x3x${ci}x${co} s${stride}`,
    gflop: (3 * 2 * n * o * o * 9 * ci * co) / 1e9,
    toggle: setWebgpuConvEnabled,
    setup: () => {
      const x = r([n, hw, hw, ci], 1), w = r([3, 3, ci, co], 2), dy = r([n, o, o, co], 3);
      const f = (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, stride, "same");
      return { run: () => [f(x, w), ...tf.grads(f)([x, w], dy)], inputs: [x, w, dy] };
    },
  };
}

function attentionCase(name: string, bh: number, t: number, d: number, dv: number): Case {
  return {
    name,
    shape: `${bh} heads, T ${t}, D ${d}, Dv ${dv}`,
    // QK^T and PV forward (causal: half), twice that backward, and the recomputed QK^T
    gflop: (bh * t * t * (d + dv) * (1 + 2) + bh * t * t * d) / 1e9,
    toggle: setWebgpuAttentionEnabled,
    setup: () => {
      const q = r([1, bh, t, d], 4),
        k = r([1, bh, t, d], 5),
        v = r([1, bh, t, dv], 6),
        dy = r([1, bh, t, dv], 7);
      const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => causalAttention(a, b, c, 1 / Math.sqrt(d));
      return { run: () => tf.grads(f)([q, k, v], dy), inputs: [q, k, v, dy] };
    },
  };
}

const CASES: Case[] = [
  convCase("conv first (C -> 64)", 64 / scale, 20, 8, 64, 1),
  convCase("conv vgg9 (64 -> 64)", 64 / scale, 20, 64, 64, 1),
  convCase("conv vgg-wide (128 -> 256)", 32 / scale, 20, 128, 256, 1),
  convCase("conv resnet stride 2", 64 / scale, 20, 64, 128, 2),
  attentionCase("attention gpt small", 12, 256 / scale, 64, 64),
  attentionCase("attention pixel study", 8, 256 / scale, 64, 400),
];

async function timeOnce(run: () => tf.Tensor[]): Promise<number> {
  const t0 = performance.now();
  const outs = run();
  await Promise.all(outs.map((o) => readData(o))); // waits for the GPU
  const ms = performance.now() - t0;
  tf.dispose(outs);
  return ms;
}

console.log(`${be.device}; fastest of ${reps} after a warm-up; forward + backward\n`);
console.log("| case | shape | GFLOP | ms off | ms on | off / on |");
console.log("|---|---|---:|---:|---:|---:|");
for (const c of CASES) {
  const { run, inputs } = c.setup();
  const best = [Infinity, Infinity];
  for (let i = 0; i <= reps; i++) {
    for (const on of [false, true]) {
      c.toggle(on);
      const ms = await timeOnce(run);
      if (i > 0) best[+on] = Math.min(best[+on], ms);
    }
  }
  c.toggle(true);
  tf.dispose(inputs);
  const [off, on] = best;
  console.log(
    `| ${c.name} | ${c.shape} | ${c.gflop.toFixed(2)} | ${off.toFixed(0)} | ${on.toFixed(0)} | ${
      (off / on).toFixed(2)
    } |`,
  );
}
