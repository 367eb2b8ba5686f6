// Where a training or evaluation step's time goes on one backend: every registered kernel of the
// backend is wrapped with a timer (self time: kernels that run other kernels have those subtracted), a
// few steps run through the real engine (lib/train_loop.ts: trainLoop, or with --mode eval the
// evaluateBatches step that `bench/train.ts --mode eval` times), and the kernels are ranked by time per
// step; the rest of the step (engine bookkeeping, the gradient tape, data, JavaScript outside kernels)
// is listed as "outside kernels". Meant for synchronous backends (wasm, cpu), where a kernel's work is done when
// it returns; on webgpu it would time only the dispatch. Used to explain the lmpipe/PyTorch ratio of
// `bench/train.ts --vs-torch` (bench/RESULTS.md).
//
//   deno run -A bench/profile_step.ts --threads 1 --n-layer 4 --n-head 4 --n-embd 128 --context 128 --top 25
import { num, parseFlags, str } from "../lib/flags.ts";
import { usageError } from "../lib/errors.ts";
import { type BackendName, initBackend, tf } from "../lib/tensor/backend.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { type Precision, PRECISIONS } from "../lib/models/types.ts";
import { WindowSampler } from "../lib/sampler.ts";
import { type StepLog, trainLoop } from "../lib/train_loop.ts";
import {
  benchTrainOptions,
  runBench,
  SHAPE_FLAGS,
  shapeOverrides,
  timeEvalStep,
  writeRandomShard,
} from "./common.ts";

const CMD = "bench/profile_step";
const HELP = `deno run -A bench/profile_step.ts [flags]

  --backend B        wasm | cpu (default wasm)
  --threads N        wasm threads (default: lmpipe's own)
  --model M          gpt | pixel-cumsum | pixel-attn | pixel-attn-wide (default gpt)
  --preset P         preset of the model (default tiny)
  --n-layer N, --n-head N, --n-embd N, --context N   config overrides
  --batch-size N     sequences per step (default 8)
  --steps N          profiled steps (default 3)
  --warmup-steps N   untimed steps first (default 10: the image models' steps settle over their first ~10,
                     the wasm heap still growing into new pages in some of them; the second is 2-3x slower)
  --mode M           train | eval: training steps, or evaluation steps (the loss of one batch without
                     gradients, lib/train_loop.ts evaluateBatches, as bench/train.ts --mode eval) (default train)
  --top N            kernels listed (default 20)
  --group G          kernel | shape: rank by kernel name, or by name and input shapes (default shape)
  --precision P      fp32 | mixed | bf16 (default fp32)
  --cnn-chunk N      image models: images per CNN chunk (default 0 = the model's automatic choice)

Example: deno run -A bench/profile_step.ts --threads 1 --n-layer 4 --n-head 4 --n-embd 128 --context 128`;

interface Cost {
  calls: number;
  ms: number;
  /** Floating-point operations (matMuls only). */
  flop: number;
}

/** 2 m k n per batch for a BatchMatMul (lib/tensor/ops/matmul/wasm.ts's and TF.js's), 0 for other kernels. */
function matMulFlop(
  name: string,
  args: { inputs: Record<string, unknown>; attrs?: Record<string, unknown> },
): number {
  if (name !== "BatchMatMul") return 0;
  const a = (args.inputs.a as tf.TensorInfo).shape, b = (args.inputs.b as tf.TensorInfo).shape;
  const tA = Boolean(args.attrs?.transposeA), tB = Boolean(args.attrs?.transposeB);
  const m = tA ? a[a.length - 1] : a[a.length - 2], k = tA ? a[a.length - 2] : a[a.length - 1];
  const n = tB ? b[b.length - 2] : b[b.length - 1];
  const batch = Math.max(
    a.slice(0, -2).reduce((x, y) => x * y, 1),
    b.slice(0, -2).reduce((x, y) => x * y, 1),
  );
  return 2 * m * k * n * batch;
}

async function main(): Promise<void> {
  const p = parseFlags(CMD, Deno.args, {
    backend: { type: "string" },
    threads: { type: "string" },
    preset: { type: "string" },
    model: { type: "string" },
    ...SHAPE_FLAGS,
    "batch-size": { type: "string" },
    steps: { type: "string" },
    "warmup-steps": { type: "string" },
    top: { type: "string" },
    group: { type: "string" },
    precision: { type: "string" },
    mode: { type: "string" },
    "cnn-chunk": { type: "string" },
  });
  if (p.help) return console.log(HELP);
  const whole = (name: string, dflt: number, min = 1) => num(p, CMD, name, dflt, { min, integer: true });
  const backendName = str(p, "backend", "wasm") as BackendName;
  if (backendName !== "wasm" && backendName !== "cpu") {
    throw usageError(
      `${CMD}: --backend must be wasm or cpu (kernels of GPU backends return before their work is done)`,
    );
  }
  const group = str(p, "group", "shape");
  const mode = str(p, "mode", "train");
  if (mode !== "train" && mode !== "eval") {
    throw usageError(`${CMD}: --mode must be train or eval, got '${mode}'`);
  }
  const precision = str(p, "precision", "fp32");
  if (!(PRECISIONS as readonly string[]).includes(precision)) {
    throw usageError(`${CMD}: --precision must be one of ${PRECISIONS.join(", ")}, got '${precision}'`);
  }
  if (group !== "kernel" && group !== "shape") {
    throw usageError(`${CMD}: --group must be kernel or shape, got '${group}'`);
  }
  const overrides: Record<string, number> = shapeOverrides(p, CMD);
  if (str(p, "cnn-chunk") !== undefined) overrides.cnnChunk = whole("cnn-chunk", 0, 0);
  const B = whole("batch-size", 8),
    steps = whole("steps", 3),
    warm = whole("warmup-steps", 10, 0),
    top = whole("top", 20);
  const threads = str(p, "threads") === undefined ? undefined : whole("threads", 1);
  const info = await initBackend(backendName, { quiet: true, threads });

  // Wrap every kernel of the backend (after initBackend: lmpipe's own kernels are registered by then).
  const costs = new Map<string, Cost>();
  let recording = warm === 0;
  const stack: number[] = []; // time spent in nested kernels, per open kernel
  for (const k of tf.getKernelsForBackend(backendName)) {
    const inner = k.kernelFunc;
    tf.unregisterKernel(k.kernelName, backendName);
    tf.registerKernel({
      ...k,
      kernelFunc: (args) => {
        if (!recording) return inner(args);
        stack.push(0);
        const t0 = performance.now();
        const out = inner(args);
        const total = performance.now() - t0;
        const nested = stack.pop()!;
        if (stack.length > 0) stack[stack.length - 1] += total;
        const shapes = Object.values(args.inputs).map((t) => (t ? `[${(t as tf.TensorInfo).shape}]` : "-"))
          .join(" ");
        const flags = args.attrs?.transposeA ? " tA" : "";
        const key = group === "kernel"
          ? k.kernelName
          : `${k.kernelName} ${shapes}${flags}${args.attrs?.transposeB ? " tB" : ""}`;
        const c = costs.get(key) ?? { calls: 0, ms: 0, flop: 0 };
        c.calls += 1, c.ms += total - nested, c.flop += matMulFlop(k.kernelName, args as never);
        costs.set(key, c);
        return out;
      },
    });
  }

  const modelName = str(p, "model", "gpt");
  const preset = str(p, "preset", "tiny");
  const config = resolveConfig(modelName, preset, overrides);
  const shapeLabel = modelName === "gpt" ? `L${config.nLayer} H${config.nHead} C${config.nEmbd}` : preset;
  const T = config.contextLength;
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-profile-step-" });
  try {
    const shardPath = await writeRandomShard(dir, "profile_train_000001.bin", 50_000, 1);
    const model = createModel(config, 1);
    const train = await WindowSampler.open([shardPath], T, config.vocabSize, 1);
    console.error(
      `${info.name} (${info.device}) ${modelName}: ${warm} warm-up + ${steps} profiled ${mode} steps of ${B} x ${T} tokens ...`,
    );
    const run: ProfileRun = {
      model,
      train,
      B,
      warm,
      steps,
      precision: precision as Precision,
      record: (on) => recording = on,
    };
    const stepMs = mode === "eval" ? await profileEval(run) : await profileTrain(run, dir);
    train.close(), model.dispose();
    const rows = [...costs.entries()].map(([key, c]) => ({
      key,
      calls: c.calls / steps,
      ms: c.ms / steps,
      flop: c.flop / steps,
    }));
    rows.sort((a, b) => b.ms - a.ms);
    const inKernels = rows.reduce((a, r) => a + r.ms, 0);
    console.log(
      `${info.name} (${info.device}), ${modelName} ${shapeLabel} T${T} B${B}: ` +
        `${stepMs.toFixed(0)} ms per ${mode} step (mean of ${steps}), ${
          (B * T * 1000 / stepMs).toFixed(0)
        } tokens/s\n`,
    );
    const pct = (ms: number) => (100 * ms / stepMs).toFixed(1);
    console.log(
      `| ${
        group === "kernel" ? "kernel" : "kernel and input shapes"
      } | calls/step | ms/step | % of step | GFLOP/s |`,
    );
    console.log("|---|---:|---:|---:|---:|");
    for (const r of rows.slice(0, top)) {
      const rate = r.flop > 0 ? (r.flop / 1e6 / r.ms).toFixed(1) : "";
      console.log(`| ${r.key} | ${r.calls.toFixed(0)} | ${r.ms.toFixed(1)} | ${pct(r.ms)} | ${rate} |`);
    }
    const rest = rows.slice(top).reduce((a, r) => a + r.ms, 0);
    const mm = rows.reduce((a, r) => a + (r.flop > 0 ? r.ms : 0), 0),
      mmFlop = rows.reduce((a, r) => a + r.flop, 0);
    console.log(`| (${Math.max(0, rows.length - top)} more) | | ${rest.toFixed(1)} | ${pct(rest)} | |`);
    console.log(
      `| outside kernels (engine, tape, JS) | | ${(stepMs - inKernels).toFixed(1)} | ${
        pct(stepMs - inKernels)
      } | |`,
    );
    console.log(`| all BatchMatMul | | ${mm.toFixed(1)} | ${pct(mm)} | ${(mmFlop / 1e6 / mm).toFixed(1)} |`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** What a profiled run needs: the model and its data, step counts, and the switch of the kernel timers. */
interface ProfileRun {
  model: ReturnType<typeof createModel>;
  train: WindowSampler;
  /** Sequences per step. */
  B: number;
  warm: number;
  steps: number;
  precision: Precision;
  record: (on: boolean) => void;
}

/**
 * Mean ms of `steps` training steps through trainLoop after `warm` untimed ones; `record` turns the
 * kernel timers on for the profiled steps only.
 */
async function profileTrain(
  { model, train, B, warm, steps, precision, record }: ProfileRun,
  dir: string,
): Promise<number> {
  const logs: StepLog[] = [];
  await trainLoop({
    model,
    train,
    val: train,
    out: dir,
    config: {},
    quiet: true,
    log: (r) => {
      logs.push(r);
      // from the end of the warm-up steps to the end of the last profiled one; one more step follows
      // so that the engine's end-of-run evaluation is not counted
      record(logs.length >= warm && logs.length < warm + steps);
    },
  }, benchTrainOptions({ batchSize: B, maxSteps: warm + 1 + steps, precision }));
  return logs.slice(warm, warm + steps).reduce((a, r) => a + r.ms_per_step, 0) / steps;
}

/**
 * Mean ms of `steps` evaluation steps (evaluateBatches on one new batch each, as bench/train.ts --mode
 * eval times them) after `warm` untimed ones, the kernel timers on for the profiled ones.
 */
async function profileEval({ model, train, B, warm, steps, precision, record }: ProfileRun): Promise<number> {
  let total = 0;
  for (let i = 0; i < warm + steps; i++) {
    record(i >= warm);
    const ms = await timeEvalStep(model, train, B, precision);
    if (i >= warm) total += ms;
  }
  record(false);
  return total / steps;
}

await runBench(main);
