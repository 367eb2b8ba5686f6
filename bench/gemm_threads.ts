// Whether oneDNN's sgemm should run small products on one OpenMP thread (lib/native/dnnl.ts,
// setDnnlGemmOneThreadBelow): evaluation steps of a gpt (lib/train_loop.ts evaluateBatches, the step
// `bench/train.ts --mode eval` times) alternate between the rule on and off in one process, so the
// pairwise ratio does not drift with the load of a shared machine. Prints both medians and the median of
// the per-pair ratios (off / on: above 1, the rule wins).
//
//   deno run -A bench/gemm_threads.ts --threads 2 --n-layer 4 --n-head 4 --n-embd 128 --context 128
import { num, parseFlags, str } from "../lib/flags.ts";
import { usageError } from "../lib/errors.ts";
import { initBackend } from "../lib/tensor/backend.ts";
import { currentDnnl, dnnlStatus, setDnnlGemmOneThreadBelow } from "../lib/native/dnnl.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { WindowSampler } from "../lib/sampler.ts";
import {
  alternatingPairs,
  runBench,
  SHAPE_FLAGS,
  shapeOverrides,
  timeEvalStep,
  writeRandomShard,
} from "./common.ts";

const CMD = "bench/gemm_threads";
const HELP = `deno run -A bench/gemm_threads.ts [flags]

  --threads N        wasm threads, also oneDNN's OpenMP budget (default 2)
  --preset P         gpt preset (default tiny)
  --n-layer N, --n-head N, --n-embd N, --context N   config overrides
  --batch-size N     sequences per step (default 8)
  --pairs N          timed pairs of steps, rule off then on (default 12)
  --below N          the rule's limit in multiply-adds (default 4194304, lib/native/dnnl.ts's)

Example: deno run -A bench/gemm_threads.ts --threads 2 --n-layer 4 --n-head 4 --n-embd 128 --context 128`;

async function main(): Promise<void> {
  const p = parseFlags(CMD, Deno.args, {
    threads: { type: "string" },
    preset: { type: "string" },
    ...SHAPE_FLAGS,
    "batch-size": { type: "string" },
    pairs: { type: "string" },
    below: { type: "string" },
  });
  if (p.help) return console.log(HELP);
  const whole = (name: string, dflt: number) => num(p, CMD, name, dflt, { min: 1, integer: true });
  const threads = whole("threads", 2), B = whole("batch-size", 8), pairs = whole("pairs", 12);
  const below = whole("below", 1 << 22);
  const info = await initBackend("wasm", { quiet: true, threads });
  if (!currentDnnl()?.gemm) throw usageError(`${CMD}: needs oneDNN's sgemm (${dnnlStatus()})`);
  const config = resolveConfig("gpt", str(p, "preset", "tiny"), shapeOverrides(p, CMD));
  const T = config.contextLength;
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-gemm-threads-" });
  const prev = setDnnlGemmOneThreadBelow(below);
  try {
    const shard = await writeRandomShard(dir, "gemm_threads_000001.bin", 50_000, 1);
    const model = createModel(config, 1);
    const train = await WindowSampler.open([shard], T, config.vocabSize, 1);
    const step = async (limit: number | null) => {
      setDnnlGemmOneThreadBelow(limit);
      return await timeEvalStep(model, train, B, "fp32");
    };
    const r = await alternatingPairs(pairs, 3, (on) => step(on ? below : null)); // warm-up: the heap grows, both paths compile
    train.close(), model.dispose();
    console.log(
      `${info.name} (${info.device}), gpt L${config.nLayer} H${config.nHead} C${config.nEmbd} T${T} B${B}, ` +
        `${pairs} pairs of evaluation steps:\n` +
        `  every sgemm on the budget: ${r.off.toFixed(1)} ms; under ${below} multiply-adds on one ` +
        `thread: ${r.on.toFixed(1)} ms; per-pair ratio off/on, median ${r.ratio.toFixed(3)}`,
    );
  } finally {
    setDnnlGemmOneThreadBelow(prev);
    await Deno.remove(dir, { recursive: true });
  }
}

await runBench(main);
