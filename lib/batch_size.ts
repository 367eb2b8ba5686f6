// `train --batch-size auto`: the largest micro-batch whose training step fits a memory limit on the
// chosen backend. TF.js cannot say in advance what a step needs, WebGPU reports no memory size, and GPU
// allocation failures do not reliably surface as errors, so this measures: it runs real training steps
// (forward, backward, gradient norm, AdamW update with a throwaway optimizer) at trial batch sizes,
// takes each step's peak memory (lib/tensor/memory.ts), fits memory as a line in the batch size through
// the nearest measurements, tries the largest size the line allows, and narrows down until size B is
// measured to fit and the next size up measured not to (or B reaches the cap; sizes above 16 are
// multiples of 8). An allocation failure during a trial
// counts as "does not fit". The weights are copied to the host first and put back exactly afterwards,
// so training then starts from the same state as with an explicit --batch-size B.
import { usageError } from "./errors.ts";
import { AdamW, ADAMW_DEFAULTS, pairwiseSum, sumOfSquares } from "./optim.ts";
import type { LanguageModel, Precision } from "./models/types.ts";
import { readData, tf } from "./tensor/backend.ts";
import {
  isOutOfMemory,
  peakBytes,
  releasePooledBuffers,
  resetPeak,
  withGpuOomScope,
} from "./tensor/memory.ts";
import { addMicroBatchGradients } from "./train_loop.ts";

export interface ProbeOptions {
  precision: Precision;
  /** Micro-batches per step; trials run min(gradAccum, 2) to include the accumulated gradients. */
  gradAccum: number;
  weightDecay: number;
  /** Loss scale of mixed precision (the engine's starting scale). */
  lossScale?: number;
}

export interface AutoBatchOptions extends ProbeOptions, SearchOptions {}

export interface Trial {
  batchSize: number;
  /** Peak memory of the step in bytes; null when an allocation failed. */
  peakBytes: number | null;
  fits: boolean;
  /** The allocation failure, when there was one. */
  error?: string;
}

export interface AutoBatchResult {
  batchSize: number;
  /** Measured peak of a step at batchSize. */
  peakBytes: number;
  limitBytes: number;
  /** Memory ≈ baseBytes + bytesPerSequence · B, least squares through the measured trials. */
  baseBytes: number;
  bytesPerSequence: number;
  /** true when batchSize is the cap (a larger one might fit). */
  capped: boolean;
  /** false when the trials ran out before the next size up (nextBatchUp) was measured not to fit. */
  converged: boolean;
  /** Every trial, in the order run. */
  trials: Trial[];
}

const DEFAULT_MAX_BATCH = 1024;
const DEFAULT_MAX_TRIALS = 16;
const START_SCALE = 65536;

/**
 * Parses a memory size: a number with an optional unit, B, kB/MB/GB/TB (powers of 1000) or
 * KiB/MiB/GiB/TiB (powers of 1024; K/M/G/T alone mean the same), e.g. 8GiB, 6.5GB, 512MiB, 2G.
 */
export function parseMemorySize(cmd: string, flag: string, raw: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$/i.exec(raw);
  if (!m) {
    throw usageError(
      `lmpipe ${cmd}: ${flag} must be a memory size like 8GiB, 6GB, 512MiB or 2G, got '${raw}'`,
    );
  }
  const unit = (m[2] ?? "b").toLowerCase();
  const power = "bkmgt".indexOf(unit[0]);
  const base = unit.length === 1 || unit.includes("i") ? 1024 : 1000; // "k" alone: KiB
  const bytes = Math.floor(Number(m[1]) * base ** power);
  if (!(bytes > 0)) throw usageError(`lmpipe ${cmd}: ${flag} must be more than 0 bytes, got '${raw}'`);
  return bytes;
}

/** Formats bytes in binary units (MiB, GiB), as --memory-limit is usually written. */
export function fmtMiB(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}

/** Copies every parameter to the host (exact float32 values). */
async function snapshot(model: LanguageModel): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, p] of model.params) out.set(name, Float32Array.from(await readData(p)));
  return out;
}

function restore(model: LanguageModel, saved: Map<string, Float32Array>): void {
  for (const [name, p] of model.params) {
    tf.tidy(() => p.assign(tf.tensor(saved.get(name)!, p.shape, "float32")));
  }
}

/** Token ids for a trial batch: a fixed pattern within the vocabulary (memory does not depend on them). */
function trialTokens(B: number, T: number, vocab: number, offset: number): Int32Array {
  const out = new Int32Array(B * T);
  for (let i = 0; i < out.length; i++) out[i] = (i * 7919 + offset) % vocab;
  return out;
}

/**
 * One training step at batch size B as the engine (lib/train_loop.ts) runs it, on the current weights,
 * which it changes: forward and backward per micro-batch with gradients summed, the one reduction of
 * gradient norm and loss, and an AdamW update from fresh moments. Returns the step's peak memory.
 */
async function trialStep(model: LanguageModel, B: number, o: ProbeOptions): Promise<number> {
  const T = model.config.contextLength, V = model.config.vocabSize;
  const vars = [...model.params.values()];
  const names = [...model.params.keys()];
  const S = o.precision === "mixed" ? o.lossScale ?? START_SCALE : 1;
  const micro = Math.min(2, Math.max(1, o.gradAccum));
  releasePooledBuffers();
  resetPeak();
  const optimizer = new AdamW(model.params, {
    ...ADAMW_DEFAULTS,
    weightDecay: o.weightDecay,
    decays: (n) => model.decays(n),
  });
  let acc: tf.Tensor[] | null = null;
  const lossParts: tf.Tensor[] = [];
  try {
    return await withGpuOomScope(async () => {
      for (let m = 0; m < micro; m++) {
        const x = trialTokens(B, T, V, m), y = trialTokens(B, T, V, m + 1);
        const r = addMicroBatchGradients(model, vars, names, x, y, B, o.precision, S / micro, acc);
        acc = r.acc;
        lossParts.push(r.loss);
      }
      const sums = tf.tidy(() => tf.stack([sumOfSquares(acc!, 1 / S), pairwiseSum(lossParts)]));
      await readData(sums);
      sums.dispose();
      optimizer.step(new Map(names.map((n, i) => [n, acc![i]])), 1e-4, 1 / S);
      // wait for the update to run (webgpu records work lazily; errors surface here)
      const check = tf.tidy(() => tf.sum(vars[0]));
      await readData(check);
      check.dispose();
      return peakBytes();
    });
  } finally {
    (acc as tf.Tensor[] | null)?.forEach((t) => t.dispose());
    lossParts.forEach((t) => t.dispose());
    optimizer.dispose();
  }
}

/**
 * Peak memory of one training step at each of `sizes` (null where an allocation failed); the model's
 * weights are unchanged afterwards.
 */
export async function measureStepPeaks(
  model: LanguageModel,
  sizes: number[],
  o: ProbeOptions,
): Promise<(number | null)[]> {
  const saved = await snapshot(model);
  const out: (number | null)[] = [];
  try {
    for (const B of sizes) {
      try {
        out.push(await trialStep(model, B, o));
      } catch (err) {
        if (!isOutOfMemory(err)) throw err;
        out.push(null);
      }
    }
  } finally {
    restore(model, saved);
    releasePooledBuffers();
  }
  return out;
}

/**
 * Batch sizes searched: every size up to 16, then multiples of 8 (a finer answer is not worth its
 * trials, and multiples of 8 suit GPU kernels). "The next size up" of a result means the next of these.
 */
export function snapBatch(b: number): number {
  return b <= 16 ? Math.max(1, b) : b - (b % 8);
}

export function nextBatchUp(b: number): number {
  return b < 16 ? b + 1 : snapBatch(b) + 8;
}

/** Largest unmeasured growth per trial before the search has seen a size that does not fit. */
const MAX_GROWTH = 4;

/**
 * The batch size to try next, a searched size strictly between lo (fits) and hi (does not fit, or the
 * cap + 1): from the line through the two measurements nearest lo, at most MAX_GROWTH x lo while no
 * failure is known; halfway when `bisect`.
 */
function nextSize(trials: Trial[], lo: number, hi: number, limit: number, bisect: boolean): number {
  const top = hi - 1 <= 16 ? hi - 1 : snapBatch(hi - 1);
  const clamp = (b: number) => Math.min(top, Math.max(nextBatchUp(lo), snapBatch(b)));
  if (bisect) return clamp(Math.floor((lo + hi) / 2));
  const measured = trials.filter((t) => t.peakBytes !== null);
  const a = measured.find((t) => t.batchSize === lo)!;
  const b = measured.filter((t) => t.batchSize !== lo)
    .sort((x, y) => Math.abs(x.batchSize - lo) - Math.abs(y.batchSize - lo))[0];
  let guess = hi - 1;
  if (b) {
    const slope = (b.peakBytes! - a.peakBytes!) / (b.batchSize - a.batchSize);
    if (slope > 0) guess = lo + Math.floor((limit - a.peakBytes!) / slope);
  }
  const unbounded = !trials.some((t) => !t.fits);
  if (unbounded) guess = Math.min(guess, lo * MAX_GROWTH);
  return clamp(guess);
}

export interface SearchOptions {
  limitBytes: number;
  /** Largest batch size considered (default 1024). */
  maxBatch?: number;
  /** Most trial steps (default 16). */
  maxTrials?: number;
  /** Progress lines (e.g. lib/log.ts info). */
  log?: (msg: string) => void;
}

/**
 * The search behind --batch-size auto, given `measure(B)`: the peak bytes of a step at batch size B,
 * throwing an out-of-memory error (isOutOfMemory) when it cannot run. Measures 1 and 2, then sizes
 * from the line through the measurements nearest the largest size that fits, until that size fits
 * and the next size up does not. Throws a usage error when even batch size 1 does not fit.
 */
export async function searchBatchSize(
  measure: (B: number) => Promise<number>,
  o: SearchOptions,
): Promise<AutoBatchResult> {
  const cap = o.maxBatch ?? DEFAULT_MAX_BATCH;
  const maxTrials = o.maxTrials ?? DEFAULT_MAX_TRIALS;
  const limit = o.limitBytes;
  const trials: Trial[] = [];
  const run = async (B: number): Promise<Trial> => {
    let t: Trial;
    try {
      const peak = await measure(B);
      t = { batchSize: B, peakBytes: peak, fits: peak <= limit };
    } catch (err) {
      if (!isOutOfMemory(err)) throw err;
      t = { batchSize: B, peakBytes: null, fits: false, error: (err as Error).message.split("\n")[0] };
    }
    trials.push(t);
    o.log?.(
      `batch size auto: trial ${B}: ` +
        (t.peakBytes === null ? `out of memory (${t.error})` : `peak ${fmtMiB(t.peakBytes)}`) +
        (t.fits ? "" : ` > limit ${fmtMiB(limit)}`),
    );
    return t;
  };
  const first = await run(1);
  if (!first.fits) {
    throw usageError(
      `--batch-size auto: even batch size 1 does not fit the memory limit of ${fmtMiB(limit)} ` +
        `(${first.peakBytes === null ? first.error : `a step needs ${fmtMiB(first.peakBytes)}`}). ` +
        `Raise --memory-limit, or use a smaller model or context.`,
    );
  }
  let lo = 1, hi = cap + 1;
  if (cap >= 2) {
    if ((await run(2)).fits) lo = 2;
    else hi = 2;
  }
  let bracketed = hi <= cap, sinceBracket = 0;
  while (nextBatchUp(lo) < hi && trials.length < maxTrials) {
    const t = await run(nextSize(trials, lo, hi, limit, bracketed && sinceBracket >= 3));
    if (t.fits) lo = t.batchSize;
    else hi = t.batchSize, bracketed = true;
    if (bracketed) sinceBracket++;
  }
  const { base, slope } = lineFit(trials);
  return {
    batchSize: lo,
    peakBytes: trials.find((t) => t.batchSize === lo)!.peakBytes!,
    limitBytes: limit,
    baseBytes: base,
    bytesPerSequence: slope,
    capped: hi === cap + 1 && nextBatchUp(lo) > cap,
    converged: nextBatchUp(lo) >= hi,
    trials,
  };
}

/** Least-squares line through the measured trials: peak ≈ base + slope · B. */
function lineFit(trials: Trial[]): { base: number; slope: number } {
  const pts = trials.filter((t) => t.peakBytes !== null);
  const n = pts.length;
  const mx = pts.reduce((a, t) => a + t.batchSize, 0) / n;
  const my = pts.reduce((a, t) => a + t.peakBytes!, 0) / n;
  let sxy = 0, sxx = 0;
  for (const t of pts) sxy += (t.batchSize - mx) * (t.peakBytes! - my), sxx += (t.batchSize - mx) ** 2;
  const slope = sxx > 0 ? sxy / sxx : 0;
  return { base: Math.round(my - slope * mx), slope: Math.round(slope) };
}

/**
 * Finds the largest batch size whose measured training step on `model` fits `limitBytes`
 * (searchBatchSize with real trial steps). The model's weights are unchanged afterwards.
 */
export async function findBatchSize(model: LanguageModel, o: AutoBatchOptions): Promise<AutoBatchResult> {
  const saved = await snapshot(model);
  try {
    return await searchBatchSize((B) => trialStep(model, B, o), o);
  } finally {
    restore(model, saved);
    releasePooledBuffers();
  }
}

/** What --batch-size auto compares each step's peak with, and where the figure came from. */
export interface MemoryLimit {
  bytes: number;
  source: string;
}

/**
 * Default limit of the heap bytes tensors hold on wasm (lib/tensor/memory.ts). The heap holds at most 4
 * GiB; beside the tensors it holds allocator slack and kernel scratch space. On the tiny GPT (context 64)
 * the heap grew to 1.25-1.6x the counted peak of a step at batch 1 to 16 (220-360 MiB), and to about the
 * counted peak at batch 136 (then counted by TF.js, which errs high). 2.5 GiB leaves room for the former
 * within 4 GiB; a heap that still overflows during a trial fails with an out-of-memory error
 * (lib/tensor/patches/wasm.ts), which counts as "does not fit". The study's presets need more
 * (`--memory-limit 3.5GiB`, README).
 */
export const WASM_DEFAULT_LIMIT = 2.5 * 2 ** 30;
/** Share of a GPU's memory (nvidia-smi) or of the host's available memory used by default. */
export const GPU_SHARE = 0.9, HOST_SHARE = 0.75;

export interface LimitSources {
  /** --memory-limit as given. */
  flag?: string;
  /** $LMPIPE_MEMORY_LIMIT. */
  env?: string;
  /** Total memory of the smallest GPU in bytes, or null when unknown (default: nvidia-smi). */
  gpuTotal?: () => Promise<number | null>;
  /** Host memory available now, bytes (default: Deno.systemMemoryInfo().available). */
  hostAvailable?: () => number | null;
}

/** Total memory of the smallest GPU nvidia-smi lists, bytes; null when it is missing or fails. */
export async function nvidiaSmiTotal(): Promise<number | null> {
  try {
    const out = await new Deno.Command("nvidia-smi", {
      args: ["--query-gpu=memory.total", "--format=csv,noheader,nounits"],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!out.success) return null;
    const mib = new TextDecoder().decode(out.stdout).trim().split("\n").map((l) => Number(l.trim()))
      .filter((n) => Number.isFinite(n) && n > 0);
    return mib.length ? Math.min(...mib) * 2 ** 20 : null;
  } catch {
    return null; // not installed, or no permission to run it
  }
}

function hostAvailable(): number | null {
  try {
    return Deno.systemMemoryInfo().available;
  } catch {
    return null;
  }
}

/**
 * The memory limit for --batch-size auto on `backend`: --memory-limit, else $LMPIPE_MEMORY_LIMIT, else
 * wasm: WASM_DEFAULT_LIMIT; webgpu on a hardware GPU and tensorflow: 90% of nvidia-smi's memory.total;
 * cpu, a software WebGPU adapter (its memory is the host's), and tensorflow without nvidia-smi: 75% of
 * the host's available memory. WebGPU reports no memory size, so a GPU nvidia-smi does not know needs
 * the flag: a usage error says so.
 */
export async function resolveMemoryLimit(
  cmd: string,
  backend: { name: string; software?: boolean },
  s: LimitSources,
): Promise<MemoryLimit> {
  if (s.flag !== undefined) {
    return { bytes: parseMemorySize(cmd, "--memory-limit", s.flag), source: "--memory-limit" };
  }
  if (s.env !== undefined && s.env.trim() !== "") {
    return { bytes: parseMemorySize(cmd, "LMPIPE_MEMORY_LIMIT", s.env), source: "$LMPIPE_MEMORY_LIMIT" };
  }
  if (backend.name === "wasm") {
    return { bytes: WASM_DEFAULT_LIMIT, source: "wasm default (heap at most 4 GiB)" };
  }
  const host = () => {
    const avail = (s.hostAvailable ?? hostAvailable)();
    if (avail === null) {
      throw usageError(
        `lmpipe ${cmd}: --batch-size auto needs a memory limit: the host's memory could not be read. ` +
          `Give --memory-limit (e.g. --memory-limit 8GiB).`,
      );
    }
    return { bytes: Math.floor(avail * HOST_SHARE), source: `${HOST_SHARE * 100}% of available host memory` };
  };
  if (backend.name === "cpu" || (backend.name === "webgpu" && backend.software)) return host();
  const gpu = await (s.gpuTotal ?? nvidiaSmiTotal)();
  if (gpu !== null) {
    return { bytes: Math.floor(gpu * GPU_SHARE), source: `${GPU_SHARE * 100}% of GPU memory (nvidia-smi)` };
  }
  if (backend.name === "tensorflow") return host();
  throw usageError(
    `lmpipe ${cmd}: --batch-size auto on ${backend.name} needs a memory limit: WebGPU does not report how much ` +
      `memory the GPU has, and nvidia-smi did not say. Give --memory-limit (e.g. --memory-limit 20GiB, a bit ` +
      `under the GPU's memory) or set LMPIPE_MEMORY_LIMIT.`,
  );
}
