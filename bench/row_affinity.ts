// Whether the wasm kernels' threads should keep their own rows from one job to the next (lib/tensor/wasm/
// row_jobs.ts: the main thread starts on the first rows / threads of a job, the workers on the rest) or
// all take the next rows in turn from one range, as before: steps of one model alternate between the two in
// one process (lib/tensor/wasm/kernels.ts setRowAffinity), so the pairwise ratio does not drift with the
// load of a shared machine. Evaluation steps (the step `bench/train.ts --mode eval` times) or the loss and
// its gradients (training without the optimiser, as bench/pixel.ts). Prints both medians and the median of
// the per-pair ratios (off / on: above 1, the ranges win).
//
//   deno run -A bench/row_affinity.ts --n-layer 4 --n-head 4 --n-embd 128 --context 128 --pairs 20
//   deno run -A bench/row_affinity.ts --model pixel-attn-wide --preset small --mode grads --pairs 4
import { num, parseFlags, str } from "../lib/flags.ts";
import { usageError } from "../lib/errors.ts";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { setRowAffinity, wasmKernelThreads } from "../lib/tensor/wasm/kernels.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { WindowSampler } from "../lib/sampler.ts";
import {
  alternatingPairs,
  loadAverage,
  runBench,
  SHAPE_FLAGS,
  shapeOverrides,
  timeEvalStep,
  writeRandomShard,
} from "./common.ts";

const CMD = "bench/row_affinity";
const HELP = `deno run -A bench/row_affinity.ts [flags]

  --threads N        wasm threads (default 2; the ranges only matter with 2 or more)
  --model M          gpt | pixel-cumsum | pixel-attn | pixel-attn-wide (default gpt)
  --preset P         preset of the model (default tiny)
  --n-layer N, --n-head N, --n-embd N, --context N   config overrides
  --batch-size N     sequences per step (default 8)
  --mode M           eval | grads: evaluation steps, or the loss and its gradients (default eval)
  --pairs N          timed pairs of steps, ranges off then on (default 12)
  --warmup-steps N   untimed steps first, alternating (default 4)

Example: deno run -A bench/row_affinity.ts --n-layer 4 --n-head 4 --n-embd 128 --context 128 --pairs 20`;

async function main(): Promise<void> {
  const p = parseFlags(CMD, Deno.args, {
    threads: { type: "string" },
    model: { type: "string" },
    preset: { type: "string" },
    ...SHAPE_FLAGS,
    "batch-size": { type: "string" },
    mode: { type: "string" },
    pairs: { type: "string" },
    "warmup-steps": { type: "string" },
  });
  if (p.help) return console.log(HELP);
  const whole = (name: string, dflt: number) => num(p, CMD, name, dflt, { min: 1, integer: true });
  const threads = whole("threads", 2), B = whole("batch-size", 8), pairs = whole("pairs", 12);
  const warmup = num(p, CMD, "warmup-steps", 4, { min: 0, integer: true });
  const mode = str(p, "mode", "eval");
  if (mode !== "eval" && mode !== "grads") {
    throw usageError(`${CMD}: --mode must be eval or grads, got '${mode}'`);
  }
  const info = await initBackend("wasm", { quiet: true, threads });
  if (wasmKernelThreads() < 2) {
    throw usageError(
      `${CMD}: the wasm kernels run on ${wasmKernelThreads()} thread(s) here; the ranges need 2+`,
    );
  }
  const family = str(p, "model", "gpt");
  const config = resolveConfig(family, str(p, "preset", "tiny"), shapeOverrides(p, CMD));
  const T = config.contextLength;
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-row-affinity-" });
  const prev = setRowAffinity(true);
  try {
    const shard = await writeRandomShard(dir, "row_affinity_000001.bin", 50_000, 1);
    const model = createModel(config, 1);
    const data = await WindowSampler.open([shard], T, config.vocabSize, 1);
    const vars = [...model.params.values()];
    const grads = async () => {
      const b = await data.next(B);
      const [x, y] = [b.x, b.y].map((ids) => tf.tensor2d(ids, [B, T], "int32"));
      const t0 = performance.now();
      const { value, grads } = tf.variableGrads(() => model.loss(x, y, { training: true }), vars);
      await value.data();
      const ms = performance.now() - t0;
      tf.dispose([value, ...Object.values(grads), x, y]);
      return ms;
    };
    const step = async (on: boolean) => {
      setRowAffinity(on);
      return mode === "eval" ? await timeEvalStep(model, data, B, "fp32") : await grads();
    };
    const r = await alternatingPairs(pairs, warmup, step);
    data.close(), model.dispose();
    const what = mode === "eval" ? "evaluation steps" : "loss + gradients";
    console.log(
      `${info.name} (${info.device}), ${family} ${str(p, "preset", "tiny")} T${T} B${B}, ${pairs} pairs of ` +
        `${what} (load ${loadAverage()}):\n  one range in turn: ${
          r.off.toFixed(1)
        } ms; each thread its own rows: ` +
        `${r.on.toFixed(1)} ms; per-pair ratio off/on, median ${r.ratio.toFixed(3)}`,
    );
  } finally {
    setRowAffinity(prev);
    await Deno.remove(dir, { recursive: true });
  }
}

await runBench(main);
