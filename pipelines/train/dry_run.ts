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

/** Builds the model, counts its parameters, measures one step (or the auto search), prints the report. */
export async function dryRun(o: DryRunOptions, env: PipelineEnv): Promise<void> {
  const backend = await initBackend(o.backend as BackendName, { quiet: true });
  const model = o.family.create(o.config, o.seed);
  try {
    const params = paramsByModule(model);
    const T = o.config.contextLength;
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
    const memory = {
      backend: backend.name,
      counted_as: backend.name === "webgpu" ? "GPU buffers TF.js holds" : "live tensor bytes",
      batch_size: batchSize,
      context: T,
      grad_accum: o.gradAccum,
      precision: o.precision,
      // float32 weights, their gradients, and AdamW's two moments
      weights_bytes: weights,
      gradients_bytes: weights,
      optimizer_bytes: 2 * weights,
      // null: the step ran out of memory
      step_peak_bytes: peak,
      ...(limit ? { memory_limit_bytes: limit.bytes, memory_limit_source: limit.source } : {}),
    };
    const report = {
      dry_run: true,
      model: o.config.model,
      preset: o.config.preset ?? null,
      config: o.config,
      params,
      flops_per_token: model.flopsPerToken(),
      memory,
    };
    const text = o.json
      ? JSON.stringify(report) + "\n"
      : readable(report.model, report.preset, params, memory);
    await stdoutWriter(env)(new TextEncoder().encode(text));
  } finally {
    model.dispose();
  }
}

function readable(
  modelName: string,
  preset: string | null,
  params: { total: number; by_module: Record<string, number> },
  m: {
    backend: string;
    counted_as: string;
    batch_size: number;
    context: number;
    grad_accum: number;
    precision: string;
    weights_bytes: number;
    step_peak_bytes: number | null;
  },
): string {
  const rows = [...Object.entries(params.by_module), ["total", params.total] as [string, number]];
  const w = Math.max(...rows.map(([n]) => n.length));
  const num = (n: number) => n.toLocaleString("en-US");
  const nw = Math.max(...rows.map(([, n]) => num(n).length));
  const lines = [
    `${modelName}/${preset ?? "custom"}: ${num(params.total)} parameters (${fmtCount(params.total)})`,
    ...rows.map(([n, c]) => `  ${n.padEnd(w)}  ${num(c).padStart(nw)}`),
    `memory (${m.backend}, ${m.counted_as}): weights ${fmtMiB(m.weights_bytes)}, gradients ${
      fmtMiB(m.weights_bytes)
    }, AdamW moments ${fmtMiB(2 * m.weights_bytes)}`,
    `  one step at ${m.batch_size} x ${m.context} tokens (grad-accum ${m.grad_accum}, ${m.precision}): ` +
    (m.step_peak_bytes === null ? "out of memory" : `peak ${fmtMiB(m.step_peak_bytes)}`),
  ];
  return lines.join("\n") + "\n";
}
