// Whole training steps on webgpu through lib/train_loop.ts with recorded steps replayed (lib/train_replay.ts)
// and without (LMPIPE_WEBGPU_REPLAY=0), alternating in one process: median ms per step over the steps after
// the recording ones. With --trivial the model keeps its preset's layers and heads (so its dispatches) but
// gets tiny widths, so that the step is host time even on llvmpipe, where the "GPU" shares the CPU: what a
// replay saves on a GPU node, where the host's share per dispatch bounds the step.
//
//   deno run -A bench/webgpu_replay.ts [--model gpt] [--preset small] [--trivial] [--batch-size N]
//        [--steps 10] [--rounds 2] [--json]
import { num, parseFlags, str } from "../lib/flags.ts";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { createModel } from "../lib/models/registry.ts";
import { WindowSampler } from "../lib/sampler.ts";
import { type StepLog, trainLoop } from "../lib/train_loop.ts";
import { replayStats } from "../lib/train_replay.ts";
import { benchModelConfig, median, runBench, writeRandomShard } from "./common.ts";
import { replaySubmitMs } from "../lib/tensor/webgpu/replay.ts";

const HELP = `deno run -A bench/webgpu_replay.ts [flags]

  --model M        model family (default gpt)
  --preset P       preset (default small)
  --trivial        the preset's layers and heads with tiny widths (nEmbd 2 per head, context 16,
                   vocabulary 256): its dispatches, almost no GPU work
  --batch-size N   sequences per step (default 8; 1 with --trivial)
  --steps N        training steps per run (default 10; the first 3 run through TF.js either way)
  --rounds N       runs per mode, alternating replay off / on (default 2)
  --json           one JSON object per run

Median ms per step of steps 4..N (the replays when on), per run, and the ratio off / on.
Example: deno run -A bench/webgpu_replay.ts --preset small --trivial`;

/** Steps that run through TF.js before the first replay (one ordinary, two recorded). */
const FIRST_REPLAY = 4;

await runBench(async () => {
  const p = parseFlags("bench/webgpu_replay", Deno.args, {
    model: { type: "string" },
    preset: { type: "string" },
    trivial: { type: "boolean" },
    "batch-size": { type: "string" },
    steps: { type: "string" },
    rounds: { type: "string" },
    json: { type: "boolean" },
  });
  if (p.help) {
    console.log(HELP);
    return;
  }
  const family = str(p, "model", "gpt"), preset = str(p, "preset", "small");
  const trivial = !!p.values.trivial;
  const B = num(p, "bench/webgpu_replay", "batch-size", trivial ? 1 : 8, { min: 1, integer: true });
  const steps = num(p, "bench/webgpu_replay", "steps", 10, { min: FIRST_REPLAY + 1, integer: true });
  const rounds = num(p, "bench/webgpu_replay", "rounds", 2, { min: 1, integer: true });
  const json = !!p.values.json;
  await initBackend("webgpu", { quiet: true });
  const config = benchModelConfig(family, preset, trivial);
  const T = config.contextLength as number, V = config.vocabSize as number;
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-replay-bench-" });
  const tokens = Math.max(4096, 4 * B * (T + 1) * steps);
  const shard = await writeRandomShard(dir, "bench_train_000001.bin", tokens, 1, V);

  async function run(replay: boolean): Promise<number> {
    Deno.env.set("LMPIPE_WEBGPU_REPLAY", replay ? "1" : "0");
    const train = await WindowSampler.open([shard], T, V, 1);
    const model = createModel(config, 1);
    const logs: StepLog[] = [];
    const out = await Deno.makeTempDir({ dir });
    const replayedBefore = replayStats.replayed, hostBefore = replayStats.hostMs;
    const submitBefore = replaySubmitMs.value;
    try {
      await trainLoop({ model, train, val: train, out, config: {}, quiet: true, log: (r) => logs.push(r) }, {
        batchSize: B,
        gradAccum: 1,
        lr: 1e-4,
        minLr: 1e-5,
        warmup: 1,
        decaySteps: steps,
        schedule: "cosine" as const,
        weightDecay: 0.1,
        gradClip: 1,
        maxSteps: steps,
        maxTimeS: null,
        precision: "fp32" as const,
        scaleWindow: 2000,
        initScale: 1,
        ckptEvery: 0,
        evalEvery: 0,
        evalIters: 1,
        seed: 1,
      });
    } finally {
      Deno.env.delete("LMPIPE_WEBGPU_REPLAY");
      train.close();
      model.dispose();
    }
    const replayed = replayStats.replayed - replayedBefore;
    if (replay && replayed !== steps - FIRST_REPLAY + 1) {
      throw new Error(
        `expected ${steps - FIRST_REPLAY + 1} replayed steps, got ${replayed}: ${replayStats.refusals}`,
      );
    }
    if (replay) {
      hostMs.push((replayStats.hostMs - hostBefore) / replayed);
      submitMs.push((replaySubmitMs.value - submitBefore) / replayed);
    }
    return median(logs.slice(FIRST_REPLAY - 1).map((l) => l.ms_per_step));
  }
  const hostMs: number[] = [], submitMs: number[] = [];

  const results: Record<string, number[]> = { off: [], on: [] };
  for (let r = 0; r < rounds; r++) {
    for (const mode of ["off", "on"] as const) {
      const ms = await run(mode === "on");
      results[mode].push(ms);
      if (json) {
        console.log(
          JSON.stringify({
            model: family,
            preset,
            trivial,
            batch: B,
            replay: mode === "on",
            ms_per_step: ms,
            ...(mode === "on" ? { host_ms: hostMs.at(-1), submit_ms: submitMs.at(-1) } : {}),
          }),
        );
      }
    }
  }
  await Deno.remove(dir, { recursive: true });
  const off = median(results.off), on = median(results.on);
  if (!json) {
    console.log(`${family} ${preset}${trivial ? " (trivial widths)" : ""}, batch ${B}, webgpu`);
    console.log(`  through TF.js: ${results.off.map((x) => x.toFixed(1)).join(" / ")} ms/step`);
    console.log(`  replayed:      ${results.on.map((x) => x.toFixed(1)).join(" / ")} ms/step`);
    console.log(`  host ms issuing one replay: ${hostMs.map((x) => x.toFixed(2)).join(" / ")}`);
    console.log(
      `    of which in queue.submit: ${
        submitMs.map((x) => x.toFixed(2)).join(" / ")
      } (llvmpipe runs the work there)`,
    );
    console.log(`  off / on: ${(off / on).toFixed(2)}x`);
  }
  tf.disposeVariables();
});
