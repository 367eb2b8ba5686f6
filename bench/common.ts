// What the training benchmarks share: synthetic token shards (speed does not depend on the text), the
// engine options of a timed run (no checkpoints, no evaluation until the end), one timed evaluation step, and the --n-layer/--n-head/
// --n-embd/--context flags that override a preset's shape.
import { join } from "node:path";
import { LmpipeError } from "../lib/errors.ts";
import { num, type Parsed, str } from "../lib/flags.ts";
import { Rng } from "../lib/rng.ts";
import { encodeU16, shardHeader } from "../lib/shard.ts";
import { evaluateBatches, type TrainOptions } from "../lib/train_loop.ts";
import { resolveConfig } from "../lib/models/registry.ts";
import { tf } from "../lib/tensor/backend.ts";
import { setWasmKernelsEnabled } from "../lib/tensor/wasm/kernels.ts";
import type { LanguageModel, ModelConfig, Precision } from "../lib/models/types.ts";
import type { WindowSampler } from "../lib/sampler.ts";

/** Writes an llm.c shard of `tokens` uniform random ids below `vocab` (at most GPT-2's 50257). */
export async function writeRandomShard(
  dir: string,
  name: string,
  tokens: number,
  seed: number,
  vocab = 50257,
): Promise<string> {
  const rng = new Rng(seed);
  const ids = Uint16Array.from({ length: tokens }, () => rng.int(Math.min(vocab, 50257)));
  const bytes = new Uint8Array(1024 + 2 * tokens);
  bytes.set(shardHeader(tokens)), bytes.set(encodeU16(ids), 1024);
  const path = join(dir, name);
  await Deno.writeFile(path, bytes);
  return path;
}

/**
 * Ms of one evaluation step, what `bench/train.ts --mode eval` times: the loss of a new batch of `batch`
 * sequences from `data` without gradients, through the engine's evaluateBatches (one host read). The
 * batch is read before the clock starts.
 */
export async function timeEvalStep(
  model: LanguageModel,
  data: WindowSampler,
  batch: number,
  precision: Precision,
): Promise<number> {
  const b = await data.next(batch);
  const t0 = performance.now();
  await evaluateBatches(model, [b], precision);
  return performance.now() - t0;
}

/** Engine options for a timed run of `maxSteps` steps; `over` changes any of them. */
export function benchTrainOptions(
  over: Partial<TrainOptions> & Pick<TrainOptions, "batchSize" | "maxSteps">,
): TrainOptions {
  return {
    gradAccum: 1,
    lr: 6e-4,
    minLr: 6e-5,
    warmup: 10,
    decaySteps: 1000,
    schedule: "cosine",
    weightDecay: 0.1,
    gradClip: 1,
    maxTimeS: null,
    precision: "fp32",
    scaleWindow: 2000,
    ckptEvery: 0,
    evalEvery: 0,
    evalIters: 1,
    seed: 1,
    ...over,
  };
}

/** parseFlags entries for the shape overrides. */
export const SHAPE_FLAGS = {
  "n-layer": { type: "string" },
  "n-head": { type: "string" },
  "n-embd": { type: "string" },
  context: { type: "string" },
} as const;

const SHAPE_FIELDS: [string, string][] = [["n-layer", "nLayer"], ["n-head", "nHead"], ["n-embd", "nEmbd"], [
  "context",
  "contextLength",
]];

/** The shape flags given, as config fields (e.g. {nLayer: 4, contextLength: 128}). */
export function shapeOverrides(p: Parsed, cmd: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [flag, field] of SHAPE_FIELDS) {
    if (str(p, flag) !== undefined) out[field] = num(p, cmd, flag, 1, { min: 1, integer: true });
  }
  return out;
}

/** Runs a benchmark's main; a LmpipeError (a bad flag, a missing tool) prints its message and exits with its code. */
export async function runBench(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    if (err instanceof LmpipeError) {
      console.error(err.message);
      Deno.exit(err.exitCode);
    }
    throw err;
  }
}

/** The machine's 1-, 5- and 15-minute load averages, "1.02 1.14 1.15": what every benchmark prints beside its times. */
export function loadAverage(): string {
  return Deno.loadavg().map((l) => l.toFixed(2)).join(" ");
}

/** The median of `xs` (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * A setting compared in one process, so that the comparison does not drift with the load of a shared
 * machine: `warmup` untimed steps alternating, then `pairs` pairs of step(false), step(true). Returns the
 * median ms of each and the median of the per-pair ratios off / on (above 1: on wins).
 */
export async function alternatingPairs(
  pairs: number,
  warmup: number,
  step: (on: boolean) => Promise<number>,
): Promise<{ off: number; on: number; ratio: number }> {
  for (let i = 0; i < warmup; i++) await step(i % 2 === 1);
  const off: number[] = [], on: number[] = [];
  for (let i = 0; i < pairs; i++) off.push(await step(false)), on.push(await step(true));
  return { off: median(off), on: median(on), ratio: median(off.map((v, i) => v / on[i])) };
}

/**
 * Median ms of a forward and backward pass through `f` on a random [shape] input, lmpipe's wasm kernels
 * on or off (20 passes, the first 4 untimed). For the wasm backend, whose kernels are done when they return.
 */
export function medianGradMs(f: (t: tf.Tensor) => tf.Tensor, shape: number[], kernels: boolean): number {
  const x = tf.randomNormal(shape), dy = tf.randomNormal(shape);
  const grad = tf.valueAndGrad(f);
  const old = setWasmKernelsEnabled(kernels);
  const times: number[] = [];
  try {
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const { value, grad: dx } = grad(x, dy);
      if (i >= 4) times.push(performance.now() - t0);
      tf.dispose([value, dx]);
    }
  } finally {
    setWasmKernelsEnabled(old);
    tf.dispose([x, dy]);
  }
  return median(times);
}

/**
 * The config of `family` at `preset`; with `trivial`, the preset's layers and heads with tiny widths (nEmbd 2
 * per head, context 16, vocabulary 256): the dispatches of the real model with almost no GPU work.
 */
export function benchModelConfig(family: string, preset: string, trivial: boolean): ModelConfig {
  const base = resolveConfig(family, preset, {});
  if (!trivial) return base;
  const heads = (base.nHead as number | undefined) ?? 1;
  return resolveConfig(family, preset, { nEmbd: 2 * heads, contextLength: 16, vocabSize: 256 });
}
