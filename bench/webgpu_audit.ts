// Dispatch audit of one training step on webgpu: every compute dispatch with its program, workgroups x
// threads, FLOPs and bytes moved, and the time it would take on a named GPU (H100/H200) by a roofline
// model, summed per program; it flags dispatches that cannot fill that GPU and those predicted (or,
// with --measure on that GPU, measured) far above their roofline. The predicted ms/step is the figure
// that must fall as kernels improve; it runs anywhere webgpu does (Mesa llvmpipe in CI), because the
// prediction depends only on what is dispatched, not on the adapter it runs on.
//
// Cost of a dispatch: lmpipe's programs carry `cost` ({flops, bytes}); TF.js's matMul and conv programs
// are estimated from their input and output shapes (2 M N K; 2 x output x filter / output channels),
// every other program as one operation per output element; bytes = every input and the output, 4 bytes
// each. Roofline = max(flops / peak, bytes / bandwidth). A program may also declare `smem`: the bytes its
// warps move through workgroup (shared) memory, counted as 128 bytes per warp-wide access times its
// bank-conflict ways (kernels that read tiles from workgroup memory for every multiply-add, like flash
// attention, are bound by that, not by DRAM). Predicted time = max(roofline, smem / workgroup-memory
// bandwidth) / fill + LAUNCH_MS, where fill = workgroups / FILL_WORKGROUPS (at most 1): a dispatch of W
// workgroups keeps at most W of the 2 x 132 slots busy.
// Compile time (shader modules and pipelines created during the first step) is reported apart from the
// step time.
//
//   deno run -A bench/webgpu_audit.ts --model gpt --preset tiny [--batch-size 4] [--json] [--gpu h100]
//        [--matmul own|stock] [--precision fp32|mixed] [--measure] [--top 15]
import { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import { num, parseFlags, str } from "../lib/flags.ts";
import { usageError } from "../lib/errors.ts";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { FILL_WORKGROUPS, setOwnMatMulEnabled } from "../lib/tensor/ops/matmul/webgpu.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { runBench } from "./common.ts";
import { compileTimer, makeTrainStep } from "./webgpu_step.ts";
import type { Precision } from "../lib/models/types.ts";

const HELP = `deno run -A bench/webgpu_audit.ts --model M --preset P [flags]

  --model M        model family (gpt, pixel-attn, ...; default gpt)
  --preset P       preset (default tiny)
  --batch-size N   sequences per step (default 4)
  --gpu G          roofline of h100 or h200 (default h100)
  --matmul W       own (lmpipe's GEMM, default) or stock (TF.js's matMul)
  --precision P    fp32 (default) or mixed
  --json           one JSON object per dispatch, then one summary object
  --measure        also time every dispatch with timestamp queries (meaningful on the named GPU itself)
  --top N          list the N costliest dispatches (default 15; text output)
  --vocab-size N   a smaller vocabulary than the preset's (quick checks)

One warm-up step (compiles every pipeline; its compile time is reported), then one audited step.
Example: deno run -A bench/webgpu_audit.ts --model gpt --preset tiny --json`;

/**
 * fp32 peak without tensor cores, f16 peak, memory bandwidth, and workgroup-memory bandwidth (132 SMs x
 * 32 banks x 4 bytes per clock at 1.98 GHz).
 */
export const GPUS: Record<string, { name: string; fp32: number; f16: number; bw: number; smemBw: number }> = {
  h100: { name: "H100 SXM", fp32: 67e12, f16: 134e12, bw: 3.35e12, smemBw: 132 * 128 * 1.98e9 },
  h200: { name: "H200", fp32: 67e12, f16: 134e12, bw: 4.8e12, smemBw: 132 * 128 * 1.98e9 },
};
/** Assumed cost of one dispatch on the GPU side (command processing, ramp-up and drain). */
export const LAUNCH_MS = 0.004;

export interface DispatchRecord {
  program: string;
  workgroups: [number, number, number];
  threads: number | null;
  flops: number;
  bytes: number;
  smem_bytes?: number;
  roofline_ms: number;
  predicted_ms: number;
  flags: string[];
  measured_ms?: number;
}

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** FLOPs and bytes of one dispatch (see the top of this file). */
// deno-lint-ignore no-explicit-any
export function dispatchCost(
  program: any,
  output: tf.TensorInfo,
  inputs: tf.TensorInfo[],
): { flops: number; bytes: number; smem?: number } {
  if (program.cost) return program.cost as { flops: number; bytes: number; smem?: number };
  const outN = size(program.outputShape ?? output.shape);
  const bytes = 4 * (outN + inputs.reduce((s, t) => s + size(t.shape), 0));
  const name: string = program.constructor?.name ?? "";
  if (/^MatMul/.test(name) && inputs.length >= 2 && inputs[0].shape.length === 3) {
    const [ba, r, c] = inputs[0].shape, out = program.outputShape ?? output.shape;
    const M = out[out.length - 2], batch = out.length === 3 ? out[0] : 1;
    const K = M > 0 ? (r * c) / M : 0;
    void ba;
    return { flops: 2 * batch * M * out[out.length - 1] * K, bytes };
  }
  if (/^Conv2D/.test(name) && inputs.length >= 2) {
    const f = inputs.find((t) => t.shape.length === 4 && t !== inputs[0]) ?? inputs[1];
    const outC = (program.outputShape ?? output.shape).at(-1) || 1;
    return { flops: (2 * outN * size(f.shape)) / outC, bytes };
  }
  return { flops: outN, bytes };
}

/** Roofline and predicted ms of one dispatch on `gpu`, and its flags. */
export function predict(
  cost: { flops: number; bytes: number; smem?: number },
  workgroups: number,
  gpu: { fp32: number; bw: number; smemBw: number },
): { roofline_ms: number; predicted_ms: number; flags: string[] } {
  const roofline = Math.max(cost.flops / gpu.fp32, cost.bytes / gpu.bw) * 1e3;
  const work = Math.max(roofline, ((cost.smem ?? 0) / gpu.smemBw) * 1e3);
  const fill = Math.min(1, workgroups / FILL_WORKGROUPS);
  const predicted = work / Math.max(fill, 1e-9) + LAUNCH_MS;
  const flags: string[] = [];
  if (workgroups < FILL_WORKGROUPS) flags.push("underfilled");
  if (predicted > 10 * roofline && roofline > 0.001) flags.push("far-above-roofline");
  return { roofline_ms: roofline, predicted_ms: predicted, flags };
}

async function main(): Promise<void> {
  const p = parseFlags("bench/webgpu_audit", Deno.args, {
    model: { type: "string" },
    preset: { type: "string" },
    "batch-size": { type: "string" },
    gpu: { type: "string" },
    matmul: { type: "string" },
    precision: { type: "string" },
    json: { type: "boolean" },
    measure: { type: "boolean" },
    top: { type: "string" },
    "vocab-size": { type: "string" },
  });
  if (p.help) {
    console.log(HELP);
    return;
  }
  const family = str(p, "model", "gpt"), preset = str(p, "preset", "tiny");
  const B = num(p, "bench/webgpu_audit", "batch-size", 4, { min: 1, integer: true });
  const gpuName = str(p, "gpu", "h100").toLowerCase();
  const gpu = GPUS[gpuName];
  if (!gpu) throw usageError(`bench/webgpu_audit: --gpu ${gpuName}: use ${Object.keys(GPUS).join(" or ")}`);
  const matmul = str(p, "matmul", "own");
  if (matmul !== "own" && matmul !== "stock") {
    throw usageError(`bench/webgpu_audit: --matmul ${matmul}: use own or stock`);
  }
  const precision = str(p, "precision", "fp32") as Precision;
  if (precision !== "fp32" && precision !== "mixed") {
    throw usageError(`bench/webgpu_audit: --precision ${precision}: use fp32 or mixed`);
  }
  const json = !!p.values.json, measure = !!p.values.measure;
  const top = num(p, "bench/webgpu_audit", "top", 15, { min: 0, integer: true });

  const info = await initBackend("webgpu", { quiet: true });
  setOwnMatMulEnabled(matmul === "own");
  // deno-lint-ignore no-explicit-any
  const be = tf.backend() as any;

  const compile = compileTimer();

  // every dispatch passes through recordAndSubmit
  let records: DispatchRecord[] | null = null;
  // deno-lint-ignore no-explicit-any
  const proto = WebGPUBackend.prototype as any;
  const record = proto.recordAndSubmit;
  // deno-lint-ignore no-explicit-any
  proto.recordAndSubmit = function (
    program: any,
    output: tf.TensorInfo,
    inputs: tf.TensorInfo[],
    ...rest: unknown[]
  ) {
    if (records) {
      const wg = [...program.dispatch, 1, 1].slice(0, 3) as [number, number, number];
      const ws = program.workgroupSize as number[] | undefined;
      const cost = dispatchCost(program, output, inputs);
      const pr = predict(cost, size(wg), gpu);
      records.push({
        program: program.constructor?.name ?? "?",
        workgroups: wg,
        threads: ws ? size(ws) : null,
        flops: cost.flops,
        bytes: cost.bytes,
        ...(cost.smem != null ? { smem_bytes: cost.smem } : {}),
        ...pr,
      });
    }
    return record.call(this, program, output, inputs, ...rest);
  };

  const vocab = str(p, "vocab-size");
  const config = resolveConfig(
    family,
    preset,
    vocab ? { vocabSize: num(p, "bench/webgpu_audit", "vocab-size", 1, { min: 2, integer: true }) } : {},
  );
  const model = createModel(config, 1);
  const { step, dispose } = makeTrainStep(model, B, precision);
  const T = config.contextLength as number;

  let t0 = performance.now();
  await step();
  const firstStepMs = performance.now() - t0;
  const firstCompileMs = compile.ms, firstPipelines = compile.pipelines;
  compile.reset();

  records = [];
  let timers: { name: string; query: Promise<number> }[] | null = null;
  if (measure && be.supportTimestampQuery) be.activeTimers = timers = [];
  t0 = performance.now();
  await step();
  const stepMs = performance.now() - t0;
  const steadyCompileMs = compile.ms;
  if (timers) {
    be.activeTimers = null;
    const ms = await Promise.all(timers.map((t) => t.query));
    if (ms.length === records.length) records.forEach((r, i) => (r.measured_ms = ms[i]));
    for (const r of records) {
      if (r.measured_ms != null && r.measured_ms > 10 * r.roofline_ms && r.roofline_ms > 0.001) {
        if (!r.flags.includes("far-above-roofline")) r.flags.push("far-above-roofline");
      }
    }
  }
  const recs = records;
  records = null;
  dispose(), model.dispose();

  type PerProgram = {
    count: number;
    flops: number;
    bytes: number;
    predicted_ms: number;
    measured_ms: number;
    underfilled: number;
  };
  const perProgram = new Map<string, PerProgram>();
  for (const r of recs) {
    const e = perProgram.get(r.program) ??
      { count: 0, flops: 0, bytes: 0, predicted_ms: 0, measured_ms: 0, underfilled: 0 };
    e.count++, e.flops += r.flops, e.bytes += r.bytes, e.predicted_ms += r.predicted_ms;
    e.measured_ms += r.measured_ms ?? 0;
    if (r.flags.includes("underfilled")) e.underfilled++;
    perProgram.set(r.program, e);
  }
  const sum = (f: (r: DispatchRecord) => number) => recs.reduce((s, r) => s + f(r), 0);
  const summary = {
    summary: true,
    model: family,
    preset,
    batch_size: B,
    tokens_per_step: B * T,
    precision,
    matmul,
    gpu: gpu.name,
    adapter: info.device,
    dispatches: recs.length,
    flops: sum((r) => r.flops),
    bytes: sum((r) => r.bytes),
    predicted_step_ms: sum((r) => r.predicted_ms),
    roofline_step_ms: sum((r) => r.roofline_ms),
    launch_overhead_ms: recs.length * LAUNCH_MS,
    underfilled_dispatches: recs.filter((r) => r.flags.includes("underfilled")).length,
    far_above_roofline_dispatches: recs.filter((r) => r.flags.includes("far-above-roofline")).length,
    predicted_tokens_per_s: (B * T) / (sum((r) => r.predicted_ms) / 1e3),
    measured_step_ms_here: stepMs,
    first_step_ms_here: firstStepMs,
    first_step_compile_ms: firstCompileMs,
    first_step_pipelines: firstPipelines,
    audited_step_compile_ms: steadyCompileMs,
    measured_gpu_ms: timers ? sum((r) => r.measured_ms ?? 0) : null,
    per_program: Object.fromEntries(
      [...perProgram].sort((a, b) => b[1].predicted_ms - a[1].predicted_ms),
    ),
  };

  if (json) {
    for (const r of recs) console.log(JSON.stringify(r));
    console.log(JSON.stringify(summary));
    return;
  }
  const f1 = (x: number) => x.toFixed(3);
  const g = (
    x: number,
  ) => (x >= 1e9
    ? `${(x / 1e9).toFixed(2)} G`
    : x >= 1e6
    ? `${(x / 1e6).toFixed(2)} M`
    : `${(x / 1e3).toFixed(1)} k`);
  console.log(
    `# webgpu dispatch audit: ${family}/${preset}, batch ${B} (${
      B * T
    } tokens), ${precision}, matMul ${matmul}\n`,
  );
  console.log(
    `Adapter here: ${info.device}. Roofline: ${gpu.name}, ${gpu.fp32 / 1e12} TFLOP/s fp32, ${
      gpu.bw / 1e12
    } TB/s.`,
  );
  console.log(
    `Predicted step on ${gpu.name}: **${summary.predicted_step_ms.toFixed(2)} ms** ` +
      `(${summary.predicted_tokens_per_s.toFixed(0)} tokens/s; pure roofline ${
        summary.roofline_step_ms.toFixed(2)
      } ms, ` +
      `${recs.length} dispatches x ${LAUNCH_MS} ms launch = ${summary.launch_overhead_ms.toFixed(2)} ms).`,
  );
  console.log(
    `${summary.underfilled_dispatches} dispatches have fewer than ${FILL_WORKGROUPS} workgroups; ` +
      `${summary.far_above_roofline_dispatches} are predicted${
        timers ? " or measured" : ""
      } > 10x their roofline.`,
  );
  console.log(
    `Here: first step ${firstStepMs.toFixed(0)} ms, of which compiling ${firstPipelines} pipelines ${
      firstCompileMs.toFixed(0)
    } ms; ` +
      `audited (second) step ${stepMs.toFixed(0)} ms (compile ${steadyCompileMs.toFixed(0)} ms)` +
      (timers ? `; GPU time of the audited step ${summary.measured_gpu_ms!.toFixed(1)} ms` : "") + ".\n",
  );
  console.log(
    "| program | dispatches | GFLOP | MB moved | predicted ms | share | underfilled | measured ms here |",
  );
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
  for (const [name, e] of Object.entries(summary.per_program)) {
    console.log(
      `| ${name} | ${e.count} | ${(e.flops / 1e9).toFixed(3)} | ${(e.bytes / 1e6).toFixed(1)} | ${
        f1(e.predicted_ms)
      } | ` +
        `${((100 * e.predicted_ms) / summary.predicted_step_ms).toFixed(1)}% | ${e.underfilled} | ` +
        `${timers ? e.measured_ms.toFixed(1) : "-"} |`,
    );
  }
  if (top > 0) {
    console.log(`\nCostliest ${top} dispatches:\n`);
    console.log(
      "| program | workgroups x threads | FLOPs | bytes | roofline ms | predicted ms | measured ms | flags |",
    );
    console.log("|---|---|---:|---:|---:|---:|---:|---|");
    for (const r of [...recs].sort((a, b) => b.predicted_ms - a.predicted_ms).slice(0, top)) {
      console.log(
        `| ${r.program} | ${r.workgroups.join("x")} x ${r.threads ?? "?"} | ${g(r.flops)} | ${
          g(r.bytes)
        } | ` +
          `${f1(r.roofline_ms)} | ${f1(r.predicted_ms)} | ${
            r.measured_ms != null ? f1(r.measured_ms) : "-"
          } | ${r.flags.join(", ")} |`,
      );
    }
  }
}

if (import.meta.main) await runBench(main);
