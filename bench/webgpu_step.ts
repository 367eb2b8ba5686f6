// One training step on webgpu as lib/train_loop.ts takes it (grad-accum 1, loss scale 1: forward,
// backward, gradient norm, the clip factor computed on the device, AdamW, then the step's one host read,
// which waits for all of it, so that its wall time is real); and a timer of shader/pipeline compilation. Shared by bench/webgpu_audit.ts and
// bench/gpu/train_step.ts.
import { readData, tf } from "../lib/tensor/backend.ts";
import {
  AdamW,
  ADAMW_DEFAULTS,
  clipCoefficient,
  deviceStepControl,
  stepControlOnDevice,
  sumOfSquares,
} from "../lib/optim.ts";
import { Rng } from "../lib/rng.ts";
import type { LanguageModel, Precision } from "../lib/models/types.ts";

/** Waits until the webgpu backend's GPU has finished everything recorded so far. */
export async function gpuSync(): Promise<void> {
  // deno-lint-ignore no-explicit-any
  const be = tf.backend() as any;
  be.ensureCommandEncoderReady();
  be.endComputePassEncoder();
  be.submitQueue();
  await (be.device as GPUDevice).queue.onSubmittedWorkDone();
}

/**
 * Milliseconds per call of `run` on webgpu: calls in batches between GPU syncs, the batch grown until it
 * lasts `minBatchMs` (so that Deno's ~10 ms per sync, bench/gpu/sync_latency.ts, is a small part of it) or
 * reaches `maxBatch` calls; the last batch is the measurement.
 */
export async function msPerCall(run: () => void, minBatchMs: number, maxBatch = 4096): Promise<number> {
  run();
  await gpuSync();
  for (let batch = 1;; batch *= 2) {
    const t = performance.now();
    for (let i = 0; i < batch; i++) run();
    await gpuSync();
    const ms = performance.now() - t;
    if (ms >= minBatchMs || batch >= maxBatch) return ms / batch;
  }
}

/** A training step of `model` on random batches of B sequences; call dispose() when done. */
export function makeTrainStep(model: LanguageModel, B: number, precision: Precision) {
  const T = model.config.contextLength as number, vocab = model.config.vocabSize as number;
  const names = [...model.params.keys()];
  const vars = names.map((n) => model.params.get(n)!);
  const optimizer = new AdamW(model.params, { ...ADAMW_DEFAULTS, decays: (n) => model.decays(n) });
  const rng = new Rng(5);
  const step = async (): Promise<number> => {
    const x = new Int32Array(B * T), y = new Int32Array(B * T);
    for (let i = 0; i < B * T; i++) x[i] = rng.int(vocab), y[i] = rng.int(vocab);
    const { value, grads } = tf.tidy(() => {
      const xt = tf.tensor2d(x, [B, T], "int32"), yt = tf.tensor2d(y, [B, T], "int32");
      return tf.variableGrads(() => model.loss(xt, yt, { precision, training: true }) as tf.Scalar, vars);
    });
    const acc = vars.map((v) => grads[v.name]);
    const both = tf.tidy(() => tf.stack([sumOfSquares(acc, 1), value]));
    const gmap = new Map(names.map((n, i) => [n, acc[i]]));
    const onDevice = stepControlOnDevice();
    if (onDevice) {
      const control = deviceStepControl(both, 1, 1);
      optimizer.step(gmap, 3e-4, 1, control);
      control.dispose();
    }
    const [sq, loss] = await readData(both);
    both.dispose(), value.dispose();
    if (!onDevice) optimizer.step(gmap, 3e-4, clipCoefficient(Math.sqrt(sq), 1));
    acc.forEach((t) => t.dispose());
    if (!onDevice) await gpuSync();
    return loss;
  };
  return { step, tokens: B * T, dispose: () => optimizer.dispose() };
}

/**
 * Times every shader module and compute pipeline the current webgpu device creates (TF.js's and
 * lmpipe's): `ms` and `pipelines` so far; reset() starts again.
 */
export function compileTimer(): { ms: number; pipelines: number; reset(): void } {
  // deno-lint-ignore no-explicit-any
  const device = (tf.backend() as any).device;
  const t = {
    ms: 0,
    pipelines: 0,
    reset() {
      t.ms = 0, t.pipelines = 0;
    },
  };
  for (const fn of ["createShaderModule", "createComputePipeline"]) {
    const orig = device[fn].bind(device);
    device[fn] = (...args: unknown[]) => {
      const t0 = performance.now();
      try {
        return orig(...args);
      } finally {
        t.ms += performance.now() - t0;
        if (fn === "createComputePipeline") t.pipelines++;
      }
    };
  }
  return t;
}
