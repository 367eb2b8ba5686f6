// `lmpipe train --dry-run`: what a run would be before any data is read or any file written. Builds the
// model from the resolved config, counts its parameters per top-level module (the first part of each
// parameter's name: transformer, map, cnn, ln_f, lm_head, ...), and measures the peak memory of one
// training step at the run's batch size the way --batch-size auto does (lib/batch_size.ts: forward,
// backward, gradient norm and AdamW update on token ids made up in place), or runs that search itself
// under --batch-size auto.
import type { LanguageModel, ModelConfig, ModelFamily, Precision } from "../../lib/models/types.ts";
import { type BackendName, getGpuAdapter, initBackend, isSoftwareAdapter } from "../../lib/tensor/backend.ts";
import { findBatchSize, fmtMiB, measureStepPeaks, resolveMemoryLimit } from "../../lib/batch_size.ts";
import { fmtCount, info } from "../../lib/log.ts";
import { type PipelineEnv, stdoutWriter } from "../../lib/pipeline_env.ts";

export interface DryRunOptions {
  family: ModelFamily;
  config: ModelConfig;
  backend: string;
  /** Sequences per micro-batch; 0 = --batch-size auto. */
  batchSize: number;
  gradAccum: number;
  precision: Precision;
  weightDecay: number;
  seed: number;
  /** --memory-limit as given (with --batch-size auto). */
  memoryLimitFlag?: string;
  json: boolean;
}

/** Parameter counts: the total and per top-level module, in the model's parameter order. */
export function paramsByModule(model: LanguageModel): { total: number; by_module: Record<string, number> } {
  const by: Record<string, number> = {};
  let total = 0;
  for (const [name, v] of model.params) {
    const top = name.split(".")[0];
    by[top] = (by[top] ?? 0) + v.size;
    total += v.size;
  }
  return { total, by_module: by };
}

/**
 * Builds the model, counts its parameters, measures one step (or the auto search), prints the report.
 * Without --json the parameter table comes first, before the measurement, which takes as long as a
 * training step (minutes for the study's sizes on a CPU).
 */
export async function dryRun(o: DryRunOptions, env: PipelineEnv): Promise<void> {
  const backend = await initBackend(o.backend as BackendName, { quiet: true });
  const model = o.family.create(o.config, o.seed);
  const write = (text: string) => stdoutWriter(env)(new TextEncoder().encode(text));
  try {
    const params = paramsByModule(model);
    const flopsPerToken = model.flopsPerToken();
    if (!o.json) await write(paramsTable(o.config, params, flopsPerToken));
    const probe = { precision: o.precision, gradAccum: o.gradAccum, weightDecay: o.weightDecay };
    let batchSize = o.batchSize, peak: number | null, limit: { bytes: number; source: string } | null = null;
    if (batchSize === 0) {
      const adapter = backend.name === "webgpu" ? await getGpuAdapter() : null;
      const software = adapter ? isSoftwareAdapter(adapter) : false;
      limit = await resolveMemoryLimit("train", { name: backend.name, software }, {
        flag: o.memoryLimitFlag,
        env: Deno.env.get("LMPIPE_MEMORY_LIMIT"),
      });
      const found = await findBatchSize(model, { ...probe, limitBytes: limit.bytes, log: info });
      batchSize = found.batchSize, peak = found.peakBytes;
    } else {
      info(`dry run: measuring one training step at batch size ${batchSize} on made-up tokens`);
      [peak] = await measureStepPeaks(model, [batchSize], probe);
    }
    const weights = 4 * params.total;
    const memory: StepMemory = {
      backend: backend.name,
      counted_as: backend.name === "webgpu"
        ? "GPU buffers TF.js holds"
        : backend.name === "wasm"
        ? "heap bytes of tensors"
        : "live tensor bytes",
      batch_size: batchSize,
      context: o.config.contextLength,
      grad_accum: o.gradAccum,
      precision: o.precision,
      // float32 weights, their gradients, and AdamW's two moments
      weights_bytes: weights,
      gradients_bytes: weights,
      optimizer_bytes: 2 * weights,
      // the measured peak of one step; null: it ran out of memory
      step_peak_bytes: peak,
      // where the step has to fit: the wasm heap cannot grow past 4 GiB (weights and optimizer state included)
      ...(backend.name === "wasm" ? { heap_limit_bytes: WASM_HEAP_LIMIT } : {}),
      ...(limit ? { memory_limit_bytes: limit.bytes, memory_limit_source: limit.source } : {}),
    };
    if (!o.json) return await write(memoryLines(memory));
    const report = {
      dry_run: true,
      model: o.config.model,
      preset: o.config.preset ?? null,
      config: o.config,
      params,
      flops_per_token: flopsPerToken,
      memory,
    };
    await write(JSON.stringify(report) + "\n");
  } finally {
    model.dispose();
  }
}

interface StepMemory {
  backend: string;
  counted_as: string;
  batch_size: number;
  context: number;
  grad_accum: number;
  precision: string;
  weights_bytes: number;
  gradients_bytes: number;
  optimizer_bytes: number;
  step_peak_bytes: number | null;
  heap_limit_bytes?: number;
  memory_limit_bytes?: number;
  memory_limit_source?: string;
}

/** The readable parameter table: one row per top-level module, then the total and FLOPs per token. */
function paramsTable(
  config: ModelConfig,
  params: { total: number; by_module: Record<string, number> },
  flopsPerToken: number,
): string {
  const rows = [...Object.entries(params.by_module), ["total", params.total] as [string, number]];
  const w = Math.max(...rows.map(([n]) => n.length));
  const num = (n: number) => n.toLocaleString("en-US");
  const nw = Math.max(...rows.map(([, n]) => num(n).length));
  return [
    `${config.model}/${config.preset ?? "custom"}: ${num(params.total)} parameters (${
      fmtCount(params.total)
    }), ` +
    `${fmtCount(flopsPerToken)} FLOPs/token (train)`,
    ...rows.map(([n, c]) => `  ${n.padEnd(w)}  ${num(c).padStart(nw)}`),
  ].join("\n") + "\n";
}

/** The wasm heap's ceiling: its memory is addressed with 32-bit offsets. */
const WASM_HEAP_LIMIT = 2 ** 32;

/** Why a step did not fit, and what to try. */
function outOfMemory(m: StepMemory): string {
  const state = m.weights_bytes + m.gradients_bytes + m.optimizer_bytes;
  const where = m.heap_limit_bytes !== undefined
    ? `the wasm heap ends at ${fmtMiB(m.heap_limit_bytes)} and the weights, gradients and AdamW moments ` +
      `take ${fmtMiB(state)} of it`
    : `the ${m.backend} backend could not allocate it`;
  return `out of memory (${where}); try a smaller --batch-size (1 can take minutes to measure on a CPU), ` +
    `a shorter --context, or --backend webgpu`;
}

/** The readable memory lines: the weights' state, and the measured step. */
function memoryLines(m: StepMemory): string {
  return [
    `memory (${m.backend}, ${m.counted_as}): weights ${fmtMiB(m.weights_bytes)}, gradients ${
      fmtMiB(m.gradients_bytes)
    }, AdamW moments ${fmtMiB(m.optimizer_bytes)}`,
    `  one step at ${m.batch_size} x ${m.context} tokens (grad-accum ${m.grad_accum}, ${m.precision}): ` +
    (m.step_peak_bytes === null ? outOfMemory(m) : `peak ${fmtMiB(m.step_peak_bytes)}`) +
    (m.memory_limit_bytes !== undefined
      ? ` (--batch-size auto, limit ${fmtMiB(m.memory_limit_bytes)} from ${m.memory_limit_source})`
      : ""),
  ].join("\n") + "\n";
}
