// GELU, the MLP's nonlinearity, in two forms: "tanh", the approximation GPT-2 used, 0.5 x (1 + tanh(k (x +
// c x^3))), and "exact", 0.5 x (1 + erf(x / sqrt 2)), PyTorch's nn.GELU() default that nanoGPT and the
// study's code run (they differ by up to ~2e-4 in y). Each form is an op chain (TF.js's Tanh or Erf, the
// gradient written out), ~7 TF.js kernels forward and ~10 backward, each a pass over the MLP's widest
// tensor. Where a backend registers lmpipe's GELU kernels (wasm: wasm.ts beside this file; webgpu:
// webgpu.ts), one kernel each way does the same float32 operations in the same order around tanh or erf,
// keeping only x for the backward pass (tanh or erf is recomputed). Elsewhere, or with
// LMPIPE_WASM_FUSED=0 / LMPIPE_WEBGPU_FUSED=0, the op chain runs.
import * as tf from "@tensorflow/tfjs-core";
import {
  GELU_C,
  GELU_EXACT_GRAD_KERNEL,
  GELU_EXACT_KERNEL,
  GELU_GRAD_KERNEL,
  GELU_K,
  GELU_KERNEL,
} from "../../kernel_names.ts";
import { kernelFor } from "../../kernel_choice.ts";
import "./wasm.ts"; // registers the wasm kernels
import "./webgpu.ts"; // registers the webgpu kernels

/**
 * The op chain. Its gradient is written out, 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2), so the tape
 * holds x and t instead of six ops.
 */
export const geluByOps = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
  const x2 = tf.square(x);
  const t = tf.tanh(tf.mul(tf.mul(x, tf.add(tf.mul(x2, GELU_C), 1)), GELU_K));
  save([x, t]);
  return {
    value: tf.mul(tf.mul(x, 0.5), tf.add(t, 1)),
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const [xs, ts] = saved;
      const inner = tf.mul(tf.add(tf.mul(tf.square(xs), 3 * GELU_C), 1), GELU_K);
      const dt = tf.mul(tf.mul(xs, tf.sub(1, tf.square(ts))), inner);
      return tf.mul(dy as tf.Tensor, tf.mul(tf.add(tf.add(ts, 1), dt), 0.5));
    },
  };
}) as (x: tf.Tensor) => tf.Tensor;

/** A form's two kernels as one op: forward y, backward from x and dy. */
function byKernels(forward: string, backward: string): (x: tf.Tensor) => tf.Tensor {
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
    save([x]);
    return {
      value: tf.engine().runKernel(forward, { x }, {}) as tf.Tensor,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        tf.engine().runKernel(backward, { x: saved[0], dy: dy as tf.Tensor }, {}) as tf.Tensor,
    };
  }) as (x: tf.Tensor) => tf.Tensor;
}

const geluByKernels = byKernels(GELU_KERNEL, GELU_GRAD_KERNEL);
const geluExactByKernels = byKernels(GELU_EXACT_KERNEL, GELU_EXACT_GRAD_KERNEL);

/** The two forms of GELU (config field `gelu`): tanh approximation or exact erf. */
export type GeluForm = "tanh" | "exact";

/**
 * Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), with its gradient written out: 0.5 (1 + erf(x / sqrt 2)) +
 * x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi); the tape holds x and the erf term. TF.js's Erf is the
 * Abramowitz-Stegun 7.1.26 polynomial on cpu and webgpu (absolute error under 1.5e-7) and a compiled
 * erf on wasm; tests/gelu_test.ts compares all of them with a float64 series.
 */
export const geluExact = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
  const onePlusErf = tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1);
  save([x, onePlusErf]);
  return {
    value: tf.mul(tf.mul(x, 0.5), onePlusErf),
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const [xs, e] = saved;
      const phi = tf.mul(tf.exp(tf.mul(tf.square(xs), -0.5)), 1 / Math.sqrt(2 * Math.PI));
      return tf.mul(dy as tf.Tensor, tf.add(tf.mul(e, 0.5), tf.mul(xs, phi)));
    },
  };
}) as (x: tf.Tensor) => tf.Tensor;

/** GELU of x (any shape) in `form` ("tanh" by default: what checkpoints without the field trained with). */
export function gelu(x: tf.Tensor, form: GeluForm = "tanh"): tf.Tensor {
  const fused = x.dtype === "float32";
  if (form === "exact") {
    return fused && kernelFor("geluExact") === "lmpipe" ? geluExactByKernels(x) : geluExact(x);
  }
  return fused && kernelFor("gelu") === "lmpipe" ? geluByKernels(x) : geluByOps(x);
}
