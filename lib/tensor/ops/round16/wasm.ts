// Rounding float32 values to binary16 or bfloat16 (ties to even), kept as float32: what --precision mixed and
// bf16 do at every autocast place (lib/precision.ts). On wasm the op chains of lib/precision.ts take ~14-19
// single-threaded TF.js kernels per call, several with broadcast scalars, and dominated a bf16 image-model
// step. Here one pass does it on the values' bits: bfloat16 keeps float32's exponent, so rounding is an add
// on the bit pattern; binary16 rounds the bits the same way in its normal range and to multiples of 2^-24
// below it. Whole vectors of 4 run in lmpipe's SIMD kernel (round16 in ../../wasm/kernels.wat, on the
// kernels' threads); the last 1-3 values of a tensor, and the same rules written out for reading, are the
// JavaScript below. The results equal the op chains bit for bit (tests/precision_test.ts).
import * as tf from "@tensorflow/tfjs-core";
import { type KernelArgs, registerKernels, type TensorInfo } from "../../host_kernel.ts";
import { offsetOf, runElementwise, usable } from "../../wasm/kernels.ts";
import { floatBits, KIND } from "../../wasm/kernel_calls.ts";
import { switchOn } from "../../env_switch.ts";

export const ROUND16_KERNEL = "LmpipeRound16";

let enabled = switchOn("LMPIPE_WASM_ROUND16");

/** Whether toHalf and toBf16 may use this kernel on wasm (LMPIPE_WASM_ROUND16=0: the op chains). */
export function round16Enabled(): boolean {
  return enabled;
}

/** Turns the kernel on or off for this process (benchmarks compare both); returns the old state. */
export function setRound16Enabled(on: boolean): boolean {
  const old = enabled;
  enabled = on;
  return old;
}
export type Round16Format = "binary16" | "bfloat16";

// Both rounders work in place on one float32 array and an Int32Array over the same memory (int32 bit
// arithmetic stays in V8's small-integer fast path; `& mask` wraps the sum back to 32 bits). With a
// scale s they round x * s and divide by s again, each step in float32 as TF.js's Multiply and RealDiv do.

/** Rounds float32 values to bfloat16 in place: `bits` and `floats` view the same memory. */
export function roundBf16InPlace(bits: Int32Array, floats: Float32Array, scale = 1): void {
  for (let i = 0; i < bits.length; i++) {
    if (scale !== 1) floats[i] = floats[i] * scale;
    const u = bits[i];
    // inf and NaN keep their bits; everything else: round to nearest even on the top 16 bits (a carry
    // into the exponent is the right answer, up to inf past the largest bfloat16)
    if ((u & 0x7f800000) !== 0x7f800000) bits[i] = (u + 0x7fff + ((u >> 16) & 1)) & -65536;
    if (scale !== 1) floats[i] = floats[i] / scale;
  }
}

const TWO24 = 16777216; // 2^24: binary16's subnormal spacing is 2^-24

/** Rounds float32 values to binary16 in place: `bits` and `floats` view the same memory. */
export function roundHalfInPlace(bits: Int32Array, floats: Float32Array, scale = 1): void {
  for (let i = 0; i < bits.length; i++) {
    if (scale !== 1) floats[i] = floats[i] * scale;
    const u = bits[i], a = u & 0x7fffffff, sign = u & -0x80000000;
    if (a >= 0x7f800000) { // inf, NaN
    } else if (a >= 0x477ff000) { // |x| >= 65520: past the largest binary16 by half a step or more
      bits[i] = sign | 0x7f800000;
    } else if (a >= 0x38800000) { // |x| >= 2^-14: 10 mantissa bits, round to nearest even on the bits
      bits[i] = sign | ((a + 0xfff + ((a >> 13) & 1)) & -8192);
    } else { // binary16 subnormals (and zero): multiples of 2^-24, ties to even
      const q = Math.abs(floats[i]) * TWO24; // exact: a power-of-two scale of a float32
      let r = Math.round(q);
      if (r - q === 0.5 && (r & 1) === 1) r -= 1; // Math.round takes ties up; binary16 takes them to even
      floats[i] = r / TWO24; // exact
      bits[i] |= sign; // the sign back, zero included
    }
    if (scale !== 1) floats[i] = floats[i] / scale;
  }
}

function round16Kernel({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const x = (inputs as Record<string, TensorInfo>).x;
  const { format, scale: scale64 } = attrs as { format: Round16Format; scale: number };
  const scale = Math.fround(scale64); // a scalar operand of TF.js's ops is a float32 too
  if (x.dtype !== "float32") throw new Error(`${ROUND16_KERNEL}: expected float32 values, got ${x.dtype}`);
  const n = tf.util.sizeFromShape(x.shape);
  const y = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  // whole vectors of 4 in lmpipe's SIMD kernel on all its threads, the last 1-3 values here
  const simd = usable(backend) ? n - (n % 4) : 0;
  if (simd > 0) {
    const args = [
      KIND.round16,
      offsetOf(backend, x),
      offsetOf(backend, y),
      simd,
      format === "binary16" ? 1 : 0,
    ];
    runElementwise(backend, [...args, floatBits(scale)], simd);
  }
  if (simd < n) {
    const src = backend.typedArrayFromHeap(x) as Float32Array,
      dst = backend.typedArrayFromHeap(y) as Float32Array;
    const tail = dst.subarray(simd);
    tail.set(src.subarray(simd));
    const bits = new Int32Array(tail.buffer, tail.byteOffset, tail.length);
    if (format === "bfloat16") roundBf16InPlace(bits, tail, scale);
    else roundHalfInPlace(bits, tail, scale);
  }
  return y;
}

registerKernels("wasm", [[ROUND16_KERNEL, round16Kernel]]);

/**
 * `x` rounded to `format` (ties to even) as float32, by the one-pass kernel above (wasm); with `scale`, the
 * values of x * scale rounded, then divided by scale, each step in float32 as the ops would do it.
 */
export function round16(x: tf.Tensor, format: Round16Format, scale = 1): tf.Tensor {
  return tf.engine().runKernel(ROUND16_KERNEL, { x } as unknown as tf.NamedTensorMap, {
    format,
    scale,
  } as unknown as tf.NamedAttrMap) as tf.Tensor;
}
