// Data-parallel scaling over MPI (lib/dist/): the same global batch (--batch-size x --grad-accum
// micro-batches per step) trained by 1 process and by N ranks under mpirun, each process on one wasm
// thread, through the real engine (lib/train_loop.ts) on synthetic shards. Prints a Markdown table on
// stdout: ms/step, tokens/s, the speed-up and scaling efficiency (speed-up / N), and the share of a
// rank's step spent in the gradient all-reduce (packing and waiting for the slowest rank included), for
// each --grad-reduce format given (f32: MPI_Allreduce; bf16/fp16: the 16-bit sums of lib/dist/half_reduce.ts).
//
//   deno run -A bench/dist.ts                         # gpt small, batch 4 x 2 micro-batches, 1 vs 2 ranks
//   deno run -A bench/dist.ts --grad-reduce f32,bf16  # the 2-rank run once per format
//   deno run -A bench/dist.ts --preset tiny --steps 5
//
// Each configuration runs as its own process (or mpirun job) that runs this file with --worker.
import { join } from "node:path";
import { num, parseFlags, str } from "../lib/flags.ts";
import { usageError } from "../lib/errors.ts";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { WindowSampler } from "../lib/sampler.ts";
import { batchLosses, type StepLog, trainLoop } from "../lib/train_loop.ts";
import { startDist } from "../lib/dist/mod.ts";
import { GRAD_REDUCES, type GradReduce } from "../lib/dist/half_reduce.ts";
import { benchTrainOptions, runBench, writeRandomShard } from "./common.ts";

const CMD = "bench/dist";
const FLAGS = {
  model: { type: "string" },
  preset: { type: "string" },
  "batch-size": { type: "string" },
  "grad-accum": { type: "string" },
  steps: { type: "string" },
  "warmup-steps": { type: "string" },
  np: { type: "string" },
  "grad-reduce": { type: "string" },
  worker: { type: "boolean" },
} as const;

interface Result {
  ranks: number;
  gradReduce: GradReduce;
  msPerStep: number;
  reduceMsPerStep: number;
  /**
   * The reduction of one step's gradients after a barrier, as in training (buckets, format, pipeline;
   * 16-bit: rounding, collectives, sums and widening included): the communication alone, ms (median of 3).
   */
  pureReduceMs: number;
  params: number;
  tokensPerStep: number;
}

async function worker(o: Opts): Promise<void> {
  const dist = startDist(o.np > 1 ? "mpi" : "none", CMD, batchLosses, 1);
  await initBackend("wasm", { quiet: true, threads: 1 });
  const config = resolveConfig(o.model, o.preset);
  const model = createModel(config, 1);
  if (dist) {
    dist.dp.setGradReduce(o.gradReduce);
    await dist.dp.broadcastParams(model.params);
  }
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-bench-dist-" });
  const T = config.contextLength;
  const train = await WindowSampler.open([await writeRandomShard(dir, "train.bin", 200_000, 1)], T, 50304, 1);
  const val = await WindowSampler.open([await writeRandomShard(dir, "val.bin", 20_000, 2)], T, 50304, 1);
  const logs: StepLog[] = [];
  const reduceAt: number[] = [];
  await trainLoop(
    {
      model,
      train,
      val,
      out: join(dir, "run"),
      config: {},
      log: (r) => {
        logs.push(r);
        reduceAt.push(dist?.dp.stats.ms ?? 0);
      },
      quiet: true,
      dist: dist?.dp,
    },
    benchTrainOptions({ batchSize: o.batch, gradAccum: o.accum, maxSteps: o.warm + o.steps }),
  );
  let pure = 0;
  if (dist) {
    // the step's own reduction (buckets, pipeline, format) on gradients of the model's shapes, after a
    // barrier: the same code as in training, without the wait for a slower rank
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const grads = [...model.params.values()].map((v) => tf.fill(v.shape, 1e-3 * (dist.mpi.rank + 1)));
      await dist.mpi.barrier("bench");
      const t0 = performance.now();
      const summed = await dist.dp.allreduceGradients(grads);
      times.push(performance.now() - t0);
      summed.forEach((t) => t.dispose());
    }
    pure = times.sort((a, b) => a - b)[1];
  }
  if (!dist || dist.dp.writer) {
    const timed = logs.slice(o.warm);
    const result: Result = {
      ranks: dist?.mpi.size ?? 1,
      gradReduce: dist ? o.gradReduce : "f32",
      msPerStep: timed.reduce((a, r) => a + r.ms_per_step, 0) / timed.length,
      reduceMsPerStep: (reduceAt[reduceAt.length - 1] - (o.warm > 0 ? reduceAt[o.warm - 1] : 0)) /
        timed.length,
      pureReduceMs: pure,
      params: model.paramCount(),
      tokensPerStep: o.batch * o.accum * T,
    };
    console.log(JSON.stringify(result));
  }
  train.close(), val.close(), model.dispose();
  await Deno.remove(dir, { recursive: true });
  dist?.mpi.finalize();
}

interface Opts {
  model: string;
  preset: string;
  batch: number;
  accum: number;
  steps: number;
  warm: number;
  np: number;
  /** The formats to run N ranks with (a worker gets one). */
  gradReduces: GradReduce[];
  gradReduce: GradReduce;
}

async function runOne(o: Opts, np: number, gradReduce: GradReduce): Promise<Result> {
  const args = [
    "run",
    "-A",
    new URL(import.meta.url).pathname,
    "--worker",
    "--model",
    o.model,
    "--preset",
    o.preset,
    "--batch-size",
    String(o.batch),
    "--grad-accum",
    String(o.accum),
    "--steps",
    String(o.steps),
    "--warmup-steps",
    String(o.warm),
    "--np",
    String(np),
    "--grad-reduce",
    gradReduce,
  ];
  const cmd = np > 1 ? "mpirun" : Deno.execPath();
  const full = np > 1
    ? ["--allow-run-as-root", "--oversubscribe", "-np", String(np), Deno.execPath(), ...args]
    : args;
  console.error(
    `bench/dist: ${np} process${np > 1 ? "es" : ""} x 1 thread, ${o.model}/${o.preset}` +
      (np > 1 ? `, gradients summed in ${gradReduce}` : "") + " ...",
  );
  const out = await new Deno.Command(cmd, {
    args: full,
    env: { LMPIPE_WASM_THREADS: "1", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
  if (!out.success) throw usageError(`${CMD}: the ${np}-process run failed (exit ${out.code})`);
  return JSON.parse(text);
}

async function main(): Promise<void> {
  const p = parseFlags(CMD, Deno.args, FLAGS);
  const o: Opts = {
    model: str(p, "model", "gpt"),
    preset: str(p, "preset", "small"),
    batch: num(p, CMD, "batch-size", 4, { min: 1, integer: true }),
    accum: num(p, CMD, "grad-accum", 2, { min: 1, integer: true }),
    steps: num(p, CMD, "steps", 3, { min: 1, integer: true }),
    warm: num(p, CMD, "warmup-steps", 1, { min: 0, integer: true }),
    np: num(p, CMD, "np", 2, { min: 1, integer: true }),
    gradReduces: [],
    gradReduce: "f32",
  };
  for (const f of str(p, "grad-reduce", "f32").split(",")) {
    if (!(GRAD_REDUCES as readonly string[]).includes(f)) {
      throw usageError(
        `${CMD}: --grad-reduce takes ${GRAD_REDUCES.join(", ")} (comma-separated), got '${f}'`,
      );
    }
    o.gradReduces.push(f as GradReduce);
  }
  o.gradReduce = o.gradReduces[0];
  if (p.values.worker) return await worker(o);
  if (o.accum % o.np !== 0) {
    throw usageError(`${CMD}: --grad-accum ${o.accum} must be a multiple of --np ${o.np}`);
  }
  const one = await runOne(o, 1, "f32");
  const many: Result[] = [];
  for (const f of o.gradReduces) many.push(await runOne(o, o.np, f));
  const load = (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ").slice(0, 3).join(" ");
  // The all-reduce in a step also waits for the slower rank; alone (after a barrier) it is the
  // communication cost, and 1 process's step split N ways plus that is the step communication would give.
  const ideal = one.msPerStep / o.np;
  const row = (r: Result) => {
    const speedup = one.msPerStep / r.msPerStep;
    const cells = [
      `${r.ranks} x 1 thread`,
      r.ranks > 1 ? r.gradReduce : "–",
      r.msPerStep.toFixed(0),
      (r.tokensPerStep * 1000 / r.msPerStep).toFixed(0),
      speedup.toFixed(2),
      `${(100 * speedup / r.ranks).toFixed(0)}%`,
      r.ranks > 1
        ? `${r.reduceMsPerStep.toFixed(0)} ms (${(100 * r.reduceMsPerStep / r.msPerStep).toFixed(1)}%)`
        : "–",
      r.ranks > 1 ? `${r.pureReduceMs.toFixed(0)} ms` : "–",
      r.ranks > 1 ? `${(100 * ideal / (ideal + r.pureReduceMs)).toFixed(0)}%` : "–",
    ];
    return `| ${cells.join(" | ")} |`;
  };
  console.log(
    `${o.model}/${o.preset}, ${
      (one.params / 1e6).toFixed(1)
    }M parameters, ${one.tokensPerStep} tokens/step ` +
      `(${o.batch} x ${o.accum} micro-batches), ${o.steps} timed steps after ${o.warm}; load average ${load}\n`,
  );
  console.log(
    "| processes | gradient sum | ms/step | tokens/s | speed-up | efficiency | all-reduce per step (share) | " +
      "all-reduce alone | efficiency if only the all-reduce were added |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  console.log(row(one));
  for (const r of many) console.log(row(r));
  console.log(
    `\nall-reduce alone: one step's ${
      (one.params / 1e6).toFixed(1)
    }M gradient values reduced after a barrier ` +
      `as in training (median of 3; 16-bit: rounding, collectives, sums and widening); the last column is ` +
      `${ideal.toFixed(0)} ms of compute per rank / (that + the all-reduce alone)`,
  );
}

await runBench(main);
