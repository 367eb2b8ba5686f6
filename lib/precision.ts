// The one place that implements `--precision mixed` (binary16) and `--precision bf16` (bfloat16). TF.js has
// no 16-bit float dtype, so both are emulated: values stay float32 tensors but are rounded to the nearest
// 16-bit value (ties to even) wherever PyTorch's autocast would hold them in 16 bits: the inputs (weights
// included) and outputs of every matMul and conv, and, in the backward pass, the gradients of those
// tensors. Everything else (norms, softmax, the loss, the residual stream, the master weights and the
// optimizer) stays float32. The op-by-op table is docs/precision.md.
import { tf } from "./tensor/backend.ts";
import { toBf16Fused, toHalfFused } from "./tensor/webgpu/kernels.ts";
import { kernelFor } from "./tensor/kernel_choice.ts";
import { round16 } from "./tensor/ops/round16/wasm.ts";
import { markBf16Values } from "./tensor/bf16_values.ts";
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
  if (x.dtype === "float32" && kernelFor("toHalf") === "lmpipe") {
    return tf.getBackend() === "webgpu" ? toHalfFused(x) : round16(x, "binary16");
  }
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

// bfloat16 keeps float32's exponent and 8 significant bits: the same Veltkamp split with 2^16 + 1 rounds to
// nearest-even on 24 - 16 = 8 bits. Magnitudes of 2^100 and more are scaled down by 2^64 first so the
// multiply cannot overflow (exact: a power of two), and back after (2^128 and up become inf, as in bf16).
// Below 2^-126, bf16 is subnormal with a spacing of 2^-133: (x + 1.5·2^-110) - 1.5·2^-110 rounds to it
// (the float32 spacing in that binade is 2^-133). Checked against a bit-level converter in
// tests/precision_test.ts.
const BF16_SPLITTER = 65537;
const BF16_BIG = 2 ** 100;
const BF16_DOWN = 2 ** -64;
const BF16_SUBNORMAL_SHIFT = 1.5 * 2 ** -110;
/** Smallest positive normal bfloat16 (and float32) value. */
export const BF16_MIN_NORMAL = 2 ** -126;

/**
 * Rounds every value of float32 `x` to the nearest bfloat16 value (ties to even), as a float32 tensor;
 * ±inf and NaN stay. On wasm one SIMD pass over the bits (lib/tensor/ops/round16/wasm.ts), on webgpu one
 * WGSL dispatch (lib/tensor/webgpu/kernels.ts), both tested bit for bit against toBf16Ops, which runs
 * elsewhere (cpu) and is the reference. The result is marked as
 * holding bfloat16 values (lib/tensor/bf16_values.ts): oneDNN's bf16 convolutions take marked operands as
 * they are.
 */
export function toBf16(x: tf.Tensor): tf.Tensor {
  const own = x.dtype === "float32" && kernelFor("toBf16") === "lmpipe";
  const r = !own ? toBf16Ops(x) : tf.getBackend() === "webgpu" ? toBf16Fused(x) : round16(x, "bfloat16");
  markBf16Values(r);
  return r;
}

/** toBf16 as plain elementwise ops: runs on every backend; the reference. */
export function toBf16Ops(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const big = tf.greaterEqual(tf.abs(x), BF16_BIG);
    const xs = tf.where(big, tf.mul(x, BF16_DOWN), x);
    const c = tf.mul(xs, BF16_SPLITTER);
    const hi = tf.add(c, tf.sub(xs, c));
    let r = tf.where(big, tf.mul(hi, 1 / BF16_DOWN), hi);
    const sub = tf.sub(tf.add(x, BF16_SUBNORMAL_SHIFT), BF16_SUBNORMAL_SHIFT);
    r = tf.where(tf.less(tf.abs(x), BF16_MIN_NORMAL), sub, r);
    r = tf.where(tf.equal(r, 0), tf.mul(x, 0), r); // keep the sign of zero
    return tf.where(tf.logicalOr(tf.isNaN(x), tf.isInf(x)), x, r);
  });
}

/** An identity whose forward output and backward gradient are both rounded by `round`. */
function roundingIdentity(round: (t: tf.Tensor) => tf.Tensor): (x: tf.Tensor) => tf.Tensor {
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: round(args[0] as tf.Tensor),
    gradFunc: (dy: tf.Tensor | tf.Tensor[]) => round(dy as tf.Tensor),
  })) as (x: tf.Tensor) => tf.Tensor;
}

const halfBoundary = roundingIdentity(toHalf);
const bf16Boundary = roundingIdentity(toBf16);

/** Whether `precision` holds matMul and conv operands in 16 bits (mixed: binary16, bf16: bfloat16). */
export function isLowPrecision(precision: Precision | undefined): boolean {
  return precision === "mixed" || precision === "bf16";
}

/**
 * A 16-bit place of autocast (a matMul's or conv's input, weight or output): in `mixed` the tensor (and, in
 * the backward pass, its gradient) is rounded to binary16, in `bf16` to bfloat16; in `fp32` (or when
 * `precision` is unset) it is returned unchanged.
 */
export function boundary<T extends tf.Tensor>(x: T, precision: Precision | undefined): T {
  if (precision === "mixed") return halfBoundary(x) as T;
  if (precision === "bf16") return bf16Boundary(x) as T;
  return x;
}

/**
 * Forward-only: (x * scale) rounded to the 16-bit type of `precision`, divided by scale again (a gradient
 * held in 16 bits under a loss scale). Each step rounds to float32 as the ops would; on wasm one pass.
 */
export function roundScaled(x: tf.Tensor, scale: number, precision: Precision | undefined): tf.Tensor {
  if (!isLowPrecision(precision)) return x;
  const op = precision === "mixed" ? "toHalf" : "toBf16";
  if (x.dtype === "float32" && tf.getBackend() !== "webgpu" && kernelFor(op) === "lmpipe") {
    return round16(x, precision === "mixed" ? "binary16" : "bfloat16", scale);
  }
  if (scale === 1) return roundTo(x, precision); // x * 1 and x / 1 change no float32 value
  return tf.tidy(() => tf.div(roundTo(tf.mul(x, scale), precision), scale));
}

/** Forward-only rounding of `x` to the 16-bit type of `precision` (no gradient rule; for values). */
export function roundTo(x: tf.Tensor, precision: Precision | undefined): tf.Tensor {
  if (precision === "mixed") return toHalf(x);
  if (precision === "bf16") return toBf16(x);
  return x;
}
