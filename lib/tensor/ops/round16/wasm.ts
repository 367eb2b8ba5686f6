// Rounding float32 values to binary16 or bfloat16 (ties to even), kept as float32: what --precision mixed and
// bf16 do at every autocast place (lib/precision.ts). On wasm the op chains of lib/precision.ts take ~14-19
// single-threaded TF.js kernels per call, several with broadcast scalars, and dominated a bf16 image-model
// step (7 of 8.3 s of a pixel-attn tiny step). Here one pass over the values on the wasm heap does it on
// their bits: bfloat16 keeps float32's exponent, so rounding is an add on the bit pattern; binary16 rounds
// the bits the same way in its normal range and by a scaled round-half-even below 2^-14. The results equal
// the op chains bit for bit (tests/round16_test.ts).
import * as tf from "@tensorflow/tfjs-core";
import { alloc, type KernelArgs, registerKernels, type TensorInfo, view } from "../../host_kernel.ts";

export const ROUND16_KERNEL = "LmpipeRound16";

let enabled = readEnabledFromEnv();

function readEnabledFromEnv(): boolean {
  try {
    return Deno.env.get("LMPIPE_WASM_ROUND16") !== "0";
  } catch {
    return true; // no env permission
  }
}

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
  const out = alloc(backend, x.shape.slice(), "float32");
  const src = view(backend, x) as Float32Array; // after the allocation: it may move the heap
  const dst = backend.typedArrayFromHeap(out.info) as Float32Array;
  const bits = new Int32Array(dst.buffer, dst.byteOffset, dst.length);
  dst.set(src);
  if (format === "bfloat16") roundBf16InPlace(bits, dst, scale);
  else roundHalfInPlace(bits, dst, scale);
  return out.info;
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
