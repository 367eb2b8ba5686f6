// LayerNorm over the last axis (statistics in float32, eps 1e-5 as PyTorch), the normalisation of every
// transformer block. TF.js spells it as ~10 kernels forward and ~20 backward, each one pass on one wasm
// thread; on wasm (rows of a multiple of 4 values) lmpipe's kernels do it in two passes a row each way
// on all threads (wasm/kernels.ts), keeping only the row means and 1/std for the backward pass.
// Elsewhere, or with LMPIPE_WASM_FUSED=0, the op chain runs, with TF.js's gradients.
import * as tf from "@tensorflow/tfjs-core";
import { LAYER_NORM_GRAD_KERNEL, LAYER_NORM_KERNEL } from "../../kernel_names.ts";
import { kernelFor } from "../../kernel_choice.ts";
import "./wasm.ts"; // registers the wasm kernels
import "./webgpu.ts"; // registers the webgpu kernels

/** LayerNorm's epsilon when none is given (PyTorch's). */
export const LAYER_NORM_EPS = 1e-5;

/** The op chain: also the reference the kernels are tested against. */
export function layerNormByOps(
  x: tf.Tensor,
  weight: tf.Tensor1D,
  bias?: tf.Tensor1D,
  eps = LAYER_NORM_EPS,
): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true);
  const y = tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), weight);
  return bias ? tf.add(y, bias) : y;
}

/** The kernels' forward pass, saving what their gradient needs. */
function fused(eps: number, withBias: boolean) {
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [x, w, b] = args.slice(0, -1) as tf.Tensor[];
    const inputs = (withBias ? { x, w, b } : { x, w }) as unknown as tf.NamedTensorMap;
    const [y, mean, rstd] = tf.engine().runKernel(LAYER_NORM_KERNEL, inputs, { eps }) as tf.Tensor[];
    save([x, w, mean, rstd]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [xs, ws, means, rstds] = saved;
        const grads = tf.engine().runKernel(
          LAYER_NORM_GRAD_KERNEL,
          { dy: dy as tf.Tensor, x: xs, w: ws, mean: means, rstd: rstds } as unknown as tf.NamedTensorMap,
          {},
        ) as tf.Tensor[];
        if (!withBias) tf.dispose(grads[2]);
        return withBias ? grads : grads.slice(0, 2);
      },
    };
  });
}

/** LayerNorm of x [..., C] with weight [C] and optional bias [C]. */
export function layerNorm(
  x: tf.Tensor,
  weight: tf.Tensor1D,
  bias?: tf.Tensor1D,
  eps = LAYER_NORM_EPS,
): tf.Tensor {
  const C = x.shape[x.rank - 1];
  if (x.dtype !== "float32" || !(C > 0 && C % 4 === 0) || kernelFor("layerNorm") !== "lmpipe") {
    return layerNormByOps(x, weight, bias, eps);
  }
  return bias ? fused(eps, true)(x, weight, bias) : fused(eps, false)(x, weight);
}
