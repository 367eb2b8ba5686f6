// The optimiser side of training, independent of any model: AdamW with decoupled weight decay (the
// update PyTorch's torch.optim.AdamW makes, which nanoGPT uses), the learning-rate schedules, and the
// global gradient norm used for clipping and for the loss scaler's overflow check.
import { tf } from "./tensor/backend.ts";
import { adamWFusedGroup, adamWGroupSize } from "./tensor/webgpu/kernels.ts";
import { ADAMW_KERNEL, type AdamWConstants, SUM_SQUARES_KERNEL } from "./tensor/kernel_names.ts";
import { kernelFor } from "./tensor/kernel_choice.ts";
import { stepInputWrite } from "./tensor/webgpu/replay.ts";
import { switchOn } from "./tensor/env_switch.ts";

/** The step input (lib/tensor/webgpu/replay.ts) that carries AdamW's learning-rate terms on webgpu. */
export const ADAMW_STEP_TERMS = "adamw-step-terms";

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Which parameters get weight decay (the model decides: matrices and embeddings, not biases/norms). */
  decays: (name: string) => boolean;
  /**
   * Run each parameter's update as one fused kernel instead of the ~15 op chain below: one WGSL dispatch
   * per group of up to 8 parameters on webgpu (lib/tensor/webgpu/kernels.ts), a multithreaded SIMD pass
   * on wasm (wasm/kernels.ts). Both are bit-identical to the chain, which stays the reference and runs
   * on cpu. Default true; tests set false to compare.
   */
  fused?: boolean;
}

export const ADAMW_DEFAULTS = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

/**
 * Which parameters weight decay applies to: "matrices", the model's rule (matrices and embeddings, as
 * nanoGPT's configure_optimizers), or "all" (torch.optim.AdamW(model.parameters()): biases and norms too).
 */
export const DECAY_PARAMS = ["matrices", "all"] as const;
export type DecayParams = typeof DECAY_PARAMS[number];

/** One parameter's fused AdamW update through the backend's LmpipeAdamW kernel (wasm): [new p, m, v]. */
function adamWFused(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, c: AdamWConstants): tf.Tensor[] {
  return tf.engine().runKernel(
    ADAMW_KERNEL,
    { p, g, m, v } as unknown as tf.NamedTensorMap,
    c as unknown as tf.NamedAttrMap,
  ) as tf.Tensor[];
}

/**
 * AdamW over named variables. Per parameter p with gradient g at update t (t counts applied updates):
 *   p <- p * (1 - lr * wd)                       (only where decays(name))
 *   m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
 *   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * The moments are tensors named `exp_avg.<param>` / `exp_avg_sq.<param>` when saved (as PyTorch names them).
 */
export class AdamW {
  /** Number of updates applied so far (skipped steps do not count). */
  t = 0;
  readonly m = new Map<string, tf.Variable>();
  readonly v = new Map<string, tf.Variable>();

  constructor(readonly params: Map<string, tf.Variable>, readonly opts: AdamWOptions) {
    tf.tidy(() => { // the zero tensors the moments start from are freed; the variables keep their data
      for (const [name, p] of params) {
        this.m.set(name, tf.variable(tf.zerosLike(p), false));
        this.v.set(name, tf.variable(tf.zerosLike(p), false));
      }
    });
  }

  /**
   * Applies one update with gradients `grads` (by parameter name), each multiplied by `gradScale` first.
   * With `control` (deviceStepControl: [scale, apply] on the device) the gradients are multiplied by
   * gradScale * scale, and where apply is 0 nothing changes; the caller learns which when it reads the
   * step's values and then calls undoSkippedStep().
   */
  step(grads: Map<string, tf.Tensor>, lr: number, gradScale = 1, control?: tf.Tensor): void {
    this.t += 1;
    const { beta1, beta2, eps, weightDecay } = this.opts;
    const terms = this.stepTerms(lr, this.t);
    const [stepSize, sqrtBc2, decayFactor] = terms;
    const fused = this.opts.fused !== false && kernelFor("adamW") === "lmpipe";
    const constants = (name: string): AdamWConstants => ({
      gradScale,
      beta1,
      oneMinusBeta1: 1 - beta1,
      beta2,
      oneMinusBeta2: 1 - beta2,
      decay: weightDecay > 0 && this.opts.decays(name) ? decayFactor : 1,
      decays: weightDecay > 0 && this.opts.decays(name),
      sqrtBc2,
      eps,
      stepSize,
    });
    const gradOf = (name: string) => {
      const g = grads.get(name);
      if (!g) throw new Error(`AdamW: no gradient for parameter '${name}'`);
      return g;
    };
    const names = [...this.params.keys()];
    if (fused && tf.getBackend() === "webgpu") {
      // up to adamWGroupSize() parameters per dispatch (lib/tensor/webgpu/kernels.ts)
      const k = adamWGroupSize((tf.backend() as unknown as { device: GPUDevice }).device);
      // the control's [scale, apply], then this step's learning-rate terms: one step input a recorded
      // step can replace (lib/tensor/webgpu/replay.ts), so the kernels' uniforms stay the same every step
      const ctl = control ? this.controlWithStepTerms(control, terms) : undefined;
      for (let i = 0; i < names.length; i += k) {
        const group = names.slice(i, i + k);
        tf.tidy(() => {
          const outs = adamWFusedGroup(
            group.map((name) => ({
              p: this.params.get(name)!,
              g: gradOf(name),
              m: this.m.get(name)!,
              v: this.v.get(name)!,
              c: constants(name),
            })),
            ctl,
          );
          group.forEach((name, j) => {
            this.m.get(name)!.assign(outs[3 * j + 1]);
            this.v.get(name)!.assign(outs[3 * j + 2]);
            this.params.get(name)!.assign(outs[3 * j]);
          });
        });
      }
      ctl?.dispose();
      return;
    }
    for (const [name, p] of this.params) {
      const g0 = gradOf(name);
      const m = this.m.get(name)!, v = this.v.get(name)!;
      const decays = weightDecay > 0 && this.opts.decays(name);
      tf.tidy(() => {
        if (fused && !control) {
          // The same float32 operations as the chain below, with the same host-computed constants.
          const [p1, m1, v1] = adamWFused(p, g0, m, v, constants(name));
          m.assign(m1);
          v.assign(v1);
          p.assign(p1);
          return;
        }
        const scale = control ? tf.mul(gradScale, tf.reshape(tf.slice(control, [0], [1]), [])) : gradScale;
        const g = scale === 1 ? g0 : tf.mul(g0, scale);
        const m1 = tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1));
        const v1 = tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2));
        const decayed = decays ? tf.mul(p, decayFactor) : p;
        const denom = tf.add(tf.div(tf.sqrt(v1), sqrtBc2), eps);
        const p1 = tf.sub(decayed, tf.mul(tf.div(m1, denom), stepSize));
        // a skipped step (apply 0) keeps every tensor as it was
        const skip = control ? tf.equal(tf.reshape(tf.slice(control, [1], [1]), []), 0) : null;
        const kept = (was: tf.Tensor, now: tf.Tensor) => (skip ? tf.where(skip, was, now) : now);
        m.assign(kept(m, m1));
        v.assign(kept(v, v1));
        p.assign(kept(p, p1));
      });
    }
  }

  /**
   * Update t's learning-rate terms as float32 [lr / (1 - b1^t), sqrt(1 - b2^t), 1 - lr * wd] (the last is
   * 1 without weight decay): what step() hands every implementation (each holds them as float32), and what
   * a replayed step writes in (lib/train_replay.ts).
   */
  stepTerms(lr: number, t: number): Float32Array {
    const { beta1, beta2, weightDecay } = this.opts;
    return new Float32Array([
      lr / (1 - Math.pow(beta1, t)),
      Math.sqrt(1 - Math.pow(beta2, t)),
      weightDecay > 0 ? 1 - lr * weightDecay : 1,
    ]);
  }

  /** [scale, apply] of a device control followed by the update's stepTerms, as one [5] tensor. */
  private controlWithStepTerms(control: tf.Tensor, stepTerms: Float32Array): tf.Tensor {
    const terms = tf.tensor1d(stepTerms);
    stepInputWrite(ADAMW_STEP_TERMS, terms);
    const out = tf.concat([tf.reshape(control, [2]), terms]);
    terms.dispose();
    return out;
  }

  /** The last step() ran with a control whose apply was 0: it changed nothing and does not count. */
  undoSkippedStep(): void {
    this.t -= 1;
  }

  /** Moment tensors by their saved names. */
  stateTensors(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const [name, t] of this.m) out.set(`exp_avg.${name}`, t);
    for (const [name, t] of this.v) out.set(`exp_avg_sq.${name}`, t);
    return out;
  }

  /** Restores moments saved by stateTensors() (values as flat float32 arrays by saved name). */
  loadState(t: number, tensors: Map<string, { shape: number[]; data: Float32Array }>): void {
    for (const [name, variable] of this.stateTensors()) {
      const saved = tensors.get(name);
      if (!saved) throw new Error(`optimizer state has no tensor '${name}'`);
      if (saved.shape.join(",") !== variable.shape.join(",")) {
        throw new Error(`optimizer state '${name}' has shape [${saved.shape}], expected [${variable.shape}]`);
      }
      tf.tidy(() => variable.assign(tf.tensor(saved.data, variable.shape, "float32")));
    }
    this.t = t;
  }

  dispose(): void {
    for (const t of this.m.values()) t.dispose();
    for (const t of this.v.values()) t.dispose();
  }
}

/** The learning-rate schedules `lmpipe train --lr-schedule` offers. */
export const SCHEDULE_NAMES = ["cosine", "onecycle", "constant"] as const;
export type ScheduleName = typeof SCHEDULE_NAMES[number];

export interface ScheduleOptions {
  schedule: ScheduleName;
  /** Peak learning rate. */
  lr: number;
  /** Final learning rate. */
  minLr: number;
  /** Steps of the rising phase. */
  warmup: number;
  /** Step at which the decay reaches minLr (stays there after). */
  decaySteps: number;
}

/**
 * Learning rate for step `it` (0-based).
 * cosine (nanoGPT): linear warm-up lr*(it+1)/(warmup+1), then cosine from lr down to minLr at decaySteps.
 * onecycle: cosine rise from lr/25 to lr over the warm-up, then cosine fall to minLr at decaySteps.
 * constant: the same linear warm-up as cosine, then lr for good (minLr and decaySteps unused).
 */
export function learningRate(it: number, o: ScheduleOptions): number {
  const half = (from: number, to: number, ratio: number) =>
    to + 0.5 * (1 + Math.cos(Math.PI * Math.min(1, Math.max(0, ratio)))) * (from - to);
  if (o.schedule === "onecycle") {
    if (it < o.warmup) return half(o.lr, o.lr / 25, 1 - it / o.warmup);
    if (it >= o.decaySteps) return o.minLr;
    return half(o.lr, o.minLr, (it - o.warmup) / Math.max(1, o.decaySteps - o.warmup));
  }
  if (it < o.warmup) return (o.lr * (it + 1)) / (o.warmup + 1);
  if (o.schedule === "constant") return o.lr;
  if (it >= o.decaySteps) return o.minLr;
  return half(o.lr, o.minLr, (it - o.warmup) / Math.max(1, o.decaySteps - o.warmup));
}

/**
 * Sum of squares of all `tensors` as one scalar: a sum per tensor, then pairwise additions (webgpu's
 * addN with 8 or more inputs sums only the first 7). Any inf/NaN element makes the result non-finite,
 * so this one reduction is also the overflow check. `fused: false` forces the op chain (tests).
 */
export function sumOfSquares(tensors: tf.Tensor[], scale = 1, fused = true): tf.Scalar {
  // One kernel instead of ~3N: on webgpu a two-level reduction in ~N/15 + 1 dispatches
  // (lib/tensor/webgpu/kernels.ts), on wasm float64 sums per block on the kernels' threads
  // (lib/tensor/wasm/kernels.ts); both equal this op chain within float32 rounding.
  if (fused && tensors.length > 0 && kernelFor("sumSquares") === "lmpipe") {
    return tf.engine().runKernel(
      SUM_SQUARES_KERNEL,
      tensors as unknown as tf.NamedTensorMap,
      { scale } as unknown as tf.NamedAttrMap,
    ) as tf.Scalar;
  }
  return tf.tidy(() => {
    if (tensors.length === 0) return tf.scalar(0);
    return pairwiseSum(
      tensors.map((g) => tf.sum(tf.square(scale === 1 ? g : tf.mul(g, scale)))),
    ) as tf.Scalar;
  });
}

/**
 * The step's clip factor and overflow verdict computed on the device from `sqAndLoss` = [sum of squares of
 * the unscaled gradients, scaled loss], as a float32 [scale, apply] for AdamW.step's `control`: scale =
 * clipCoefficient(sqrt(sq), maxNorm) / lossScale (in float32 here, float64 on the host), apply = 1 when
 * both values are finite, else 0. It spares a GPU the wait for a host read between the backward pass and
 * AdamW; the host reads sqAndLoss afterwards and reaches the same verdict.
 */
export function deviceStepControl(sqAndLoss: tf.Tensor, maxNorm: number, lossScale: number): tf.Tensor {
  return tf.tidy(() => {
    const [sq, loss] = tf.unstack(sqAndLoss);
    const coef = maxNorm > 0 ? tf.minimum(1, tf.div(maxNorm, tf.add(tf.sqrt(sq), 1e-6))) : tf.scalar(1);
    const apply = tf.cast(tf.logicalAnd(tf.isFinite(sq), tf.isFinite(loss)), "float32");
    return tf.stack([tf.div(coef, lossScale), apply]);
  });
}

/**
 * Whether the training step computes its clip factor and overflow verdict on the device and records
 * AdamW before its host read (deviceStepControl): on webgpu, unless
 * LMPIPE_WEBGPU_DEVICE_CLIP=0 (the host computes them after the read, as on the other backends).
 */
export function stepControlOnDevice(): boolean {
  return tf.getBackend() === "webgpu" && switchOn("LMPIPE_WEBGPU_DEVICE_CLIP");
}

/** Factor that scales gradients of global norm `norm` down to at most `maxNorm` (PyTorch clip_grad_norm_). */
export function clipCoefficient(norm: number, maxNorm: number): number {
  if (!(maxNorm > 0)) return 1;
  return Math.min(1, maxNorm / (norm + 1e-6));
}

/**
 * The sum of same-shape tensors by pairwise additions (not addN: webgpu's addN with 8 or more inputs sums
 * only the first 7). Call inside a tidy: the intermediate sums are new tensors.
 */
export function pairwiseSum(ts: tf.Tensor[]): tf.Tensor {
  let parts = ts;
  while (parts.length > 1) {
    const next: tf.Tensor[] = [];
    for (let i = 0; i < parts.length; i += 2) {
      next.push(i + 1 < parts.length ? tf.add(parts[i], parts[i + 1]) : parts[i]);
    }
    parts = next;
  }
  return parts[0];
}
