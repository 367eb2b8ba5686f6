// Host (JavaScript) time of a training step on webgpu: where the CPU side of a step goes, per dispatch.
// On a GPU node the H200 spent ~80 ms of a 177 ms gpt `small` step outside the GPU; this bench splits
// the CPU side into what runs per dispatch (lib/tensor/webgpu and TF.js's recordAndSubmit: uniforms,
// bind group, encoding; queue submits) and what runs around it (TF.js's engine: op dispatch, tensor
// bookkeeping, the gradient tape; lmpipe's model code), and the time spent waiting for the GPU (the
// step's one host read and the final sync). With --trivial the model keeps its preset's structure (layers,
// heads, so its dispatch count) but gets tiny widths, so the GPU work is negligible and the step's wall
// time is host time even on llvmpipe (where the "GPU" shares the CPU).
//
// On llvmpipe queue.submit runs the submitted work itself, so "host ms" there also excludes submits;
// on a GPU a submit is only its host cost. --ab alternates steps with lmpipe's host-side changes on and
// off in one process (the uniform arena of webgpu/record.ts and AdamW's parameter groups of
// webgpu/kernels.ts) and reports both (ratios within one run).
//
//   deno run -A bench/webgpu_host.ts [--model gpt] [--preset small] [--batch-size 8] [--trivial]
//        [--steps 3] [--ab] [--json]
import { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import { num, parseFlags, str } from "../lib/flags.ts";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { createModel } from "../lib/models/registry.ts";
import { benchModelConfig, median, runBench } from "./common.ts";
import { makeTrainStep } from "./webgpu_step.ts";
import { setUniformArenaEnabled } from "../lib/tensor/webgpu/record.ts";
import { setAdamWGroupingEnabled } from "../lib/tensor/webgpu/kernels.ts";

const HELP = `deno run -A bench/webgpu_host.ts [flags]

  --model M        model family (default gpt)
  --preset P       preset (default small)
  --batch-size N   sequences per step (default 8; 1 with --trivial)
  --trivial        the preset's layers and heads with tiny widths (nEmbd 2 per head, context 16,
                   vocabulary 256): the dispatches of the real model, almost no GPU work
  --steps N        timed steps after one warm-up step (default 3; the median is reported)
  --ab             alternate steps with lmpipe's uniform arena and AdamW groups on and off
  --json           one JSON object per row instead of the table

Host milliseconds per step: in recordAndSubmit (per dispatch: uniform buffer, bind group, encoding), in
queue submits, waiting for the GPU (the step's read and final sync), and the rest (TF.js's engine and
lmpipe's op code). Example: deno run -A bench/webgpu_host.ts --preset small --trivial`;

/** Accumulated milliseconds and calls of one instrumented function. */
interface Timed {
  ms: number;
  calls: number;
}

/** Depth of synchronous calls into the waiting functions (a read submits first: counted as waiting). */
let inWait = 0;

/**
 * Wraps `obj[fn]` so that its (synchronous or awaited) time is added to `t`; nested calls count once. An
 * async (waiting) function marks its synchronous part; `notInWait` skips calls made inside one.
 */
function instrument(
  obj: Record<string, unknown>,
  fn: string,
  t: Timed,
  isAsync = false,
  notInWait = false,
): void {
  const orig = obj[fn] as (...a: unknown[]) => unknown;
  let depth = 0;
  obj[fn] = function (this: unknown, ...args: unknown[]) {
    if (depth > 0 || (notInWait && inWait > 0)) return orig.apply(this, args);
    const t0 = performance.now();
    depth++;
    if (isAsync) inWait++;
    try {
      const r = orig.apply(this, args);
      if (isAsync && r instanceof Promise) {
        return r.finally(() => {
          t.ms += performance.now() - t0;
          t.calls++;
        });
      }
      t.ms += performance.now() - t0;
      t.calls++;
      return r;
    } finally {
      depth--;
      if (isAsync) inWait--;
    }
  };
}

async function main(): Promise<void> {
  const p = parseFlags("bench/webgpu_host", Deno.args, {
    model: { type: "string" },
    preset: { type: "string" },
    "batch-size": { type: "string" },
    trivial: { type: "boolean" },
    steps: { type: "string" },
    ab: { type: "boolean" },
    json: { type: "boolean" },
  });
  if (p.help) {
    console.log(HELP);
    return;
  }
  const family = str(p, "model", "gpt"), preset = str(p, "preset", "small");
  const trivial = !!p.values.trivial;
  const B = num(p, "bench/webgpu_host", "batch-size", trivial ? 1 : 8, { min: 1, integer: true });
  const steps = num(p, "bench/webgpu_host", "steps", 3, { min: 1, integer: true });
  const info = await initBackend("webgpu", { quiet: true });

  const config = benchModelConfig(family, preset, trivial);
  const model = createModel(config, 1);
  const { step, dispose } = makeTrainStep(model, B, "fp32");
  const T = config.contextLength as number;

  // deno-lint-ignore no-explicit-any
  const be = tf.backend() as any;
  const proto = WebGPUBackend.prototype as unknown as Record<string, unknown>;
  const timers = {
    record: { ms: 0, calls: 0 },
    bindGroup: { ms: 0, calls: 0 },
    uniforms: { ms: 0, calls: 0 },
    submit: { ms: 0, calls: 0 },
    read: { ms: 0, calls: 0 },
    sync: { ms: 0, calls: 0 },
  };
  instrument(proto, "recordAndSubmit", timers.record);
  instrument(proto, "makeUniforms", timers.uniforms);
  instrument(be.device as Record<string, unknown>, "createBindGroup", timers.bindGroup);
  instrument(be.queue as Record<string, unknown>, "submit", timers.submit, false, true);
  instrument(proto, "getBufferData", timers.read, true);
  instrument(be.device.queue as Record<string, unknown>, "onSubmittedWorkDone", timers.sync, true);

  await step(); // warm-up: compiles every pipeline
  const variants = p.values.ab ? ["arena + AdamW groups", "neither"] : ["as configured"];
  const rows = new Map<string, Record<string, number>[]>(variants.map((v) => [v, []]));
  for (let s = 0; s < steps * variants.length; s++) {
    const variant = variants[s % variants.length];
    if (p.values.ab) {
      setUniformArenaEnabled(variant !== "neither");
      setAdamWGroupingEnabled(variant !== "neither");
    }
    for (const t of Object.values(timers)) t.ms = 0, t.calls = 0;
    const t0 = performance.now();
    await step();
    const wall = performance.now() - t0;
    const waiting = timers.read.ms + timers.sync.ms;
    rows.get(variant)!.push({
      wall_ms: wall,
      waiting_ms: waiting,
      host_ms: wall - waiting,
      host_without_submits_ms: wall - waiting - timers.submit.ms,
      dispatches: timers.record.calls,
      record_ms: timers.record.ms - timers.submit.ms,
      uniforms_ms: timers.uniforms.ms,
      bind_group_ms: timers.bindGroup.ms,
      submits: timers.submit.calls,
      submit_ms: timers.submit.ms,
      reads: timers.read.calls,
      outside_record_ms: wall - waiting - timers.record.ms,
    });
  }
  dispose(), model.dispose();
  const f = (x: number) => x.toFixed(1);
  if (!p.values.json) {
    console.log(
      `# webgpu host time per step: ${family}/${preset}${trivial ? " (trivial widths)" : ""}, batch ${B}, ` +
        `context ${T}, adapter ${info.device}; median of ${steps} steps\n`,
    );
    console.log(
      "| variant | wall ms | waiting for GPU ms | host ms | host ms without submits | dispatches | " +
        "host us / dispatch (without submits) | in recordAndSubmit ms (uniforms / bind groups) | submits (ms) | " +
        "outside recordAndSubmit ms |",
    );
    console.log("|---|---:|---:|---:|---:|---:|---:|---|---|---:|");
  }
  for (const [variant, rs] of rows) {
    const med: Record<string, number> = {};
    for (const k of Object.keys(rs[0])) med[k] = median(rs.map((r) => r[k]));
    const summary = {
      model: family,
      preset,
      trivial,
      variant,
      batch_size: B,
      context: T,
      adapter: info.device,
      steps,
      ...med,
      host_us_per_dispatch: (1000 * med.host_without_submits_ms) / med.dispatches,
    };
    if (p.values.json) {
      console.log(JSON.stringify(summary));
      continue;
    }
    console.log(
      `| ${variant} | ${f(med.wall_ms)} | ${f(med.waiting_ms)} | ${f(med.host_ms)} | ${
        f(med.host_without_submits_ms)
      } | ${med.dispatches} | ${f(summary.host_us_per_dispatch)} | ${f(med.record_ms)} (${
        f(med.uniforms_ms)
      } / ${f(med.bind_group_ms)}) | ${med.submits} (${f(med.submit_ms)}) | ${f(med.outside_record_ms)} |`,
    );
  }
}

if (import.meta.main) await runBench(main);
