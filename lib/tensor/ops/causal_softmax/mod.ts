// The causal softmax of attention (lib/nn.ts causalSelfAttention, lib/models/pixel_mapping.ts attnImages):
// softmax over the last axis of scores [..., T, past + T] where query i, at absolute position past + i,
// sees keys 0..past+i. On webgpu with the fused kernels on (lib/tensor/webgpu/kernels.ts
// lib/tensor/kernel_choice.ts; LMPIPE_WEBGPU_FUSED=0 turns them off) the forward pass and its gradient are one
// WGSL dispatch each (lib/tensor/ops/causal_softmax/webgpu.ts); on wasm with lmpipe's kernels on
// (LMPIPE_WASM_FUSED=0 turns them off) one multithreaded job each (ops/causal_softmax/wasm.ts), within
// float32 rounding of the op chain. Everywhere else (cpu) the op chain runs:
// scores + an additive mask of -1e9, then tf.softmax, with the float32 operations of TF.js's own
// gradients, so cpu and wasm numbers do not change; but where TF.js's tape would keep the scores, the
// mask and the probabilities for the backward pass (three [..., T, T] tensors per attention layer, most
// of a long context's memory), only the probabilities are kept (causalSoftmaxKeepingProbs).
import * as tf from "@tensorflow/tfjs-core";
import { kernelFor } from "../../kernel_choice.ts";
import { CAUSAL_SOFTMAX_GRAD_KERNEL, CAUSAL_SOFTMAX_KERNEL } from "../../kernel_names.ts";
import "./wasm.ts"; // registers the wasm kernels
import "./webgpu.ts"; // registers the webgpu kernels

/**
 * Additive causal mask [q, past + q]: query i (at absolute position past + i) sees keys 0..past+i.
 * Masked entries are -1e9, not -inf, so a fully masked row can never produce NaN.
 */
export function causalMask(q: number, past: number): tf.Tensor2D {
  const k = past + q;
  const m = new Float32Array(q * k);
  for (let i = 0; i < q; i++) for (let j = past + i + 1; j < k; j++) m[i * k + j] = -1e9;
  return tf.tensor2d(m, [q, k]);
}

/** [T, past + T] of `scores`, or a clear error naming the caller's mistake. */
function queriesOf(scores: tf.Tensor, past: number): number {
  const r = scores.rank;
  const T = r >= 2 ? scores.shape[r - 2] : NaN;
  if (r < 2 || !Number.isInteger(past) || past < 0 || scores.shape[r - 1] !== past + T) {
    throw new Error(
      `causalSoftmax (lib/tensor/ops/causal_softmax/mod.ts): scores [${scores.shape}] with past ${past}: expected ` +
        `[..., T, past + T] with an integer past >= 0`,
    );
  }
  return T;
}

/** The op chain: add the -1e9 mask (only when T > 1, when some key is masked), then tf.softmax. */
export function causalSoftmaxByOps(scores: tf.Tensor, past: number): tf.Tensor {
  const T = queriesOf(scores, past);
  return tf.softmax(T > 1 ? tf.add(scores, causalMask(T, past)) : scores);
}

/**
 * A softmax whose backward pass keeps only its output y: `forward(x)` gives y, `backward(y, dy)` the
 * gradient dx = dy * y - sum(dy * y) * y.
 */
function keepingOutput(
  scores: tf.Tensor,
  forward: (x: tf.Tensor) => tf.Tensor,
  backward: (y: tf.Tensor, dy: tf.Tensor) => tf.Tensor,
): tf.Tensor {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const y = forward(x);
    save([y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => backward(saved[0], dy as tf.Tensor),
    };
  }) as (x: tf.Tensor) => tf.Tensor;
  return f(scores);
}

/**
 * The op chain's numbers with only the probabilities kept for the gradient: the same Add and Softmax
 * forward, and TF.js's Softmax gradient (the Add's gradient passes it on unchanged), in the same float32
 * operations.
 */
function causalSoftmaxKeepingProbs(scores: tf.Tensor, past: number): tf.Tensor {
  return keepingOutput(scores, (x) => causalSoftmaxByOps(x, past), (y, dy) => {
    const dyTimesY = tf.mul(dy, y);
    return tf.sub(dyTimesY, tf.mul(tf.sum(dyTimesY, -1, true), y));
  });
}

/** The causal softmax of `scores` [..., T, past + T] in one kernel call (no gradient of its own). */
function causalSoftmaxKernelCall(scores: tf.Tensor, past: number): tf.Tensor {
  return tf.engine().runKernel(
    CAUSAL_SOFTMAX_KERNEL,
    { x: scores } as unknown as tf.NamedTensorMap,
    { past } as unknown as tf.NamedAttrMap,
  ) as tf.Tensor;
}

/** The softmax gradient dy * y - sum(dy * y) * y over the last axis in one kernel call. */
function causalSoftmaxGradKernelCall(y: tf.Tensor, dy: tf.Tensor): tf.Tensor {
  return tf.engine().runKernel(
    CAUSAL_SOFTMAX_GRAD_KERNEL,
    { y, dy } as unknown as tf.NamedTensorMap,
    {},
  ) as tf.Tensor;
}

/** The fused kernels (webgpu, wasm), one call each way. */
function causalSoftmaxFused(scores: tf.Tensor, past: number): tf.Tensor {
  return keepingOutput(scores, (x) => causalSoftmaxKernelCall(x, past), causalSoftmaxGradKernelCall);
}

/**
 * Softmax over the last axis of `scores` [..., T, past + T], query row i seeing keys 0..past+i only
 * (the others get probability exactly 0). Differentiable.
 */
export function causalSoftmax(scores: tf.Tensor, past: number): tf.Tensor {
  queriesOf(scores, past);
  if (scores.dtype === "float32" && scores.size > 0 && kernelFor("causalSoftmax") === "lmpipe") {
    return causalSoftmaxFused(scores, past);
  }
  return causalSoftmaxKeepingProbs(scores, past);
}
