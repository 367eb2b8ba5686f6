// The unnormalised softmax of each row of a matrix, the hot spot of lmpipe's loss over a 50304-token
// vocabulary (lib/loss.ts): e = exp(x - rowmax), with the row maxima m and the row sums s of e. On wasm
// one multithreaded SIMD kernel computes it (wasm/kernels.ts), on webgpu one WGSL dispatch
// (webgpu.ts beside this file); elsewhere, or with LMPIPE_WASM_FUSED=0 / LMPIPE_WEBGPU_FUSED=0, TF.js's Max, Sub,
// Exp and Sum ops do. No gradient: lib/loss.ts forms its own.
import * as tf from "@tensorflow/tfjs-core";
import { SOFTMAX_ROWS_KERNEL } from "../../kernel_names.ts";
import { kernelFor } from "../../kernel_choice.ts";
import "./wasm.ts"; // registers the wasm kernels
import "./webgpu.ts"; // registers the webgpu kernel

export interface SoftmaxRows {
  /** exp(x - m), [rows, cols]. */
  e: tf.Tensor2D;
  /** Row maxima, [rows, 1]. */
  m: tf.Tensor2D;
  /** Row sums of e, [rows, 1]. */
  s: tf.Tensor2D;
}

/** The op chain, on any backend: also the reference the kernels are tested against. */
export function softmaxRowsByOps(x: tf.Tensor2D): SoftmaxRows {
  const m = tf.max(x, 1, true) as tf.Tensor2D;
  const e = tf.exp(tf.sub(x, m)) as tf.Tensor2D;
  const s = tf.sum(e, 1, true) as tf.Tensor2D;
  return { e, m, s };
}

/** e = exp(x - rowmax(x)), the row maxima and the row sums of e, for a 2-D float32 x. */
export function softmaxRows(x: tf.Tensor2D): SoftmaxRows {
  if (x.dtype !== "float32" || x.size === 0 || kernelFor("softmaxRows") !== "lmpipe") {
    return softmaxRowsByOps(x);
  }
  const [e, m, s] = tf.engine().runKernel(SOFTMAX_ROWS_KERNEL, { x }, {}) as tf.Tensor2D[];
  return { e, m, s };
}
