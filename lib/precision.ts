// The one place that implements `--precision mixed`. TF.js has no float16 dtype, so half precision is
// emulated: values stay float32 tensors but are rounded to the nearest IEEE binary16 value at layer
// boundaries, in the forward pass (activations) and in the backward pass (gradients). Swapping in real
// f16 arithmetic later means changing only this file.
import { tf } from "./tensor/backend.ts";
import { toHalfFused } from "./tensor/webgpu/kernels.ts";
import { kernelFor } from "./tensor/kernel_choice.ts";
import type { Precision } from "./models/types.ts";

/** Largest finite binary16 value. */
export const HALF_MAX = 65504;
/** Smallest positive normal binary16 value (2^-14); below it the spacing is fixed at 2^-24. */
export const HALF_MIN_NORMAL = 2 ** -14;

// Veltkamp splitting: with c = x * (2^13 + 1), hi = c + (x - c) is x rounded to nearest-even with
// 24 - 13 = 11 significant bits, i.e. binary16's precision, using only float32 multiply/add (each
// TF.js op writes a float32 tensor, so every step is rounded as the algorithm needs). Below 2^-14,
// binary16 is subnormal with a fixed spacing of 2^-24: (x + 0.75) - 0.75 rounds to multiples of 2^-24
// (0.75 lies in a binade whose float32 spacing is 2^-24). Checked against a bit-level converter over
// every float32 in the binades at the boundaries (tests/precision_test.ts repeats a sample per backend).
const SPLITTER = 8193;
const SUBNORMAL_SHIFT = 0.75;
// Inputs are clamped first so the multiply cannot overflow float32; anything this big is inf in fp16.
const CLAMP = 131072;

/**
 * Rounds every value of float32 `x` to the nearest binary16 value (ties to even), as a float32 tensor:
 * magnitudes of 65520 and above become ±inf, values below the smallest subnormal (2^-24) flush to a
 * signed zero as fp16 does, NaN stays NaN. On webgpu one fused WGSL dispatch (lib/tensor/webgpu/kernels.ts,
 * tested bit for bit against toHalfOps); elsewhere toHalfOps.
 */
export function toHalf(x: tf.Tensor): tf.Tensor {
  if (x.dtype === "float32" && kernelFor("toHalf") === "lmpipe") return toHalfFused(x);
  return toHalfOps(x);
}

/** toHalf as plain elementwise ops (~19 dispatches on a GPU): runs on every backend; the reference. */
export function toHalfOps(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const xc = tf.clipByValue(x, -CLAMP, CLAMP);
    const c = tf.mul(xc, SPLITTER);
    const normal = tf.add(c, tf.sub(xc, c));
    const sub = tf.sub(tf.add(xc, SUBNORMAL_SHIFT), SUBNORMAL_SHIFT);
    let r = tf.where(tf.less(tf.abs(xc), HALF_MIN_NORMAL), sub, normal);
    r = tf.where(tf.greater(tf.abs(r), HALF_MAX), tf.mul(tf.sign(xc), Infinity), r);
    r = tf.where(tf.equal(r, 0), tf.mul(xc, 0), r); // keep the sign of zero (-1e-9 -> -0 in fp16)
    return tf.where(tf.isNaN(x), x, r); // clipByValue's NaN handling differs between backends
  });
}

/** An identity whose forward output and backward gradient are both rounded to binary16. */
const halfBoundary = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
  value: toHalf(args[0] as tf.Tensor),
  gradFunc: (dy: tf.Tensor | tf.Tensor[]) => toHalf(dy as tf.Tensor),
})) as (x: tf.Tensor) => tf.Tensor;

/**
 * A layer boundary: in `mixed` precision the activation (and, in the backward pass, its gradient) is
 * rounded to binary16; in `fp32` (or when `precision` is unset) it is returned unchanged.
 */
export function boundary<T extends tf.Tensor>(x: T, precision: Precision | undefined): T {
  return (precision === "mixed" ? halfBoundary(x) : x) as T;
}
