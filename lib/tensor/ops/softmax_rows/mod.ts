// The unnormalised softmax of each row of a matrix, the hot spot of lmpipe's loss over a 50304-token
// vocabulary (lib/loss.ts): e = exp(x - rowmax), with the row maxima m and the row sums s of e. On wasm
// one multithreaded SIMD kernel computes it (wasm/kernels.ts), on webgpu one WGSL dispatch
// (webgpu.ts beside this file); elsewhere, or with LMPIPE_WASM_FUSED=0 / LMPIPE_WEBGPU_FUSED=0, TF.js's Max, Sub,
// Exp and Sum ops do. No gradient: lib/loss.ts forms its own. Two variants for the loss on wasm:
// softmaxRowsAtTargets (training: e in place, with the onehot folded in) and softmaxStatsAtTargets
// (evaluation: no e at all; on oneDNN's log-softmax for large inputs where libdnnl is loaded, dnnl.ts).
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

export interface SoftmaxRowsAtTargets extends SoftmaxRows {
  /** The logits at the targets, x[row, target[row]], [rows]. */
  xt: tf.Tensor1D;
}

/**
 * Whether softmaxRowsAtTargets runs as one kernel here (wasm with lmpipe's kernel). Elsewhere it is an
 * op chain with a [rows, cols] one-hot pass, slower than lib/loss.ts's other way.
 */
export function softmaxRowsAtTargetsFused(): boolean {
  return tf.getBackend() === "wasm" && kernelFor("softmaxRows") === "lmpipe";
}

/** x[row, targets[row]] for each row, [rows]. */
function targetLogits(x: tf.Tensor2D, targets: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => {
    const [rows, cols] = x.shape;
    const flat = tf.add(tf.mul(tf.range(0, rows, 1, "int32"), tf.scalar(cols, "int32")), targets);
    return tf.gather(tf.reshape(x, [-1]), flat) as tf.Tensor1D;
  });
}

/** The op chain of softmaxRowsAtTargets, on any backend: the reference its kernel is tested against. */
export function softmaxRowsAtTargetsByOps(x: tf.Tensor2D, targets: tf.Tensor1D): SoftmaxRowsAtTargets {
  const { e, m, s } = softmaxRowsByOps(x);
  const cols = x.shape[1];
  const xt = targetLogits(x, targets);
  return { e: tf.sub(e, tf.mul(tf.oneHot(targets, cols, 1, 0, "float32"), s)) as tf.Tensor2D, m, s, xt };
}

/**
 * softmaxRows of a 2-D float32 x with the cross-entropy's onehot folded in: e = exp(x - m) except
 * e[row, target[row]] = exp(x - m) - s[row], so that e / s is softmax - onehot, the logits' gradient
 * (lib/loss.ts); and the target logits xt. Targets are int32 [rows] in [0, cols). On wasm the kernel
 * writes e over x (one [rows, cols] buffer fewer): x must not be used after this call.
 */
export function softmaxRowsAtTargets(x: tf.Tensor2D, targets: tf.Tensor1D): SoftmaxRowsAtTargets {
  if (x.dtype !== "float32" || x.size === 0 || !softmaxRowsAtTargetsFused()) {
    return softmaxRowsAtTargetsByOps(x, targets);
  }
  const [e, m, s, xt] = tf.engine().runKernel(SOFTMAX_ROWS_KERNEL, { x, targets }, {}) as tf.Tensor[];
  return { e: e as tf.Tensor2D, m: m as tf.Tensor2D, s: s as tf.Tensor2D, xt: xt as tf.Tensor1D };
}

/** The row statistics the loss needs without gradients: each row's logsumexp is m + log(s). */
export type SoftmaxStatsAtTargets = Omit<SoftmaxRowsAtTargets, "e">;

/** The op chain of softmaxStatsAtTargets, on any backend: the reference its kernel is tested against. */
export function softmaxStatsAtTargetsByOps(x: tf.Tensor2D, targets: tf.Tensor1D): SoftmaxStatsAtTargets {
  const m = tf.max(x, 1, true) as tf.Tensor2D;
  const s = tf.tidy(() => tf.sum(tf.exp(tf.sub(x, m)), 1, true)) as tf.Tensor2D;
  return { m, s, xt: targetLogits(x, targets) };
}

/** Who computes softmaxStatsAtTargets for `work` logits here: "dnnl", "lmpipe" (wasm kernels) or "ops". */
function statsChoice(work: number): string {
  return tf.getBackend() === "wasm" ? kernelFor("softmaxStats", "wasm", work) : "ops";
}

/** Whether softmaxStatsAtTargets of `work` logits runs as a kernel here (oneDNN's or lmpipe's, on wasm). */
export function softmaxStatsFused(work: number): boolean {
  return statsChoice(work) !== "ops";
}

/**
 * softmaxRowsAtTargets without e, for evaluation's loss: each row's logsumexp as m + log(s), and the target
 * logits xt, of a 2-D float32 x (targets int32 [rows] in [0, cols)). On wasm lmpipe's kernel gives the row
 * maxima m and the row sums s of exp(x - m), the same as softmaxRows bit for bit, writes no [rows, cols]
 * output and leaves x alone; oneDNN's (kernel_choice.ts's softmaxStats row: large x, libdnnl loaded)
 * overwrites x with its log-softmax and gives m = the logsumexp, s = 1: x must not be used after this call.
 */
export function softmaxStatsAtTargets(x: tf.Tensor2D, targets: tf.Tensor1D): SoftmaxStatsAtTargets {
  const choice = x.dtype === "float32" && x.size > 0 ? statsChoice(x.size) : "ops";
  if (choice === "ops") return softmaxStatsAtTargetsByOps(x, targets);
  const attrs = { statsOnly: true, dnnl: choice === "dnnl" };
  const [m, s, xt] = tf.engine().runKernel(SOFTMAX_ROWS_KERNEL, { x, targets }, attrs) as tf.Tensor[];
  return { m: m as tf.Tensor2D, s: s as tf.Tensor2D, xt: xt as tf.Tensor1D };
}
