// GELU, tanh approximation (as GPT-2 used): 0.5 x (1 + tanh(k (x + c x^3))), the MLP's nonlinearity.
// The op chain is ~7 TF.js kernels forward and ~10 backward, each a pass over the MLP's widest tensor;
// where a backend registers lmpipe's GELU kernels (wasm: wasm/kernels.ts; webgpu: webgpu.ts beside this file),
// one kernel each way does the same float32 operations in the same order, keeping only x for the
// backward pass (tanh is recomputed). Elsewhere, or with LMPIPE_WASM_FUSED=0 / LMPIPE_WEBGPU_FUSED=0,
// the op chain runs.
import * as tf from "@tensorflow/tfjs-core";
import { GELU_C, GELU_GRAD_KERNEL, GELU_K, GELU_KERNEL } from "../../kernel_names.ts";
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

/** The kernels: forward y, backward from x and dy. */
const geluByKernels = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
  save([x]);
  return {
    value: tf.engine().runKernel(GELU_KERNEL, { x }, {}) as tf.Tensor,
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
      tf.engine().runKernel(GELU_GRAD_KERNEL, { x: saved[0], dy: dy as tf.Tensor }, {}) as tf.Tensor,
  };
}) as (x: tf.Tensor) => tf.Tensor;

/** GELU of x (any shape). */
export function gelu(x: tf.Tensor): tf.Tensor {
  return x.dtype === "float32" && kernelFor("gelu") === "lmpipe" ? geluByKernels(x) : geluByOps(x);
}
