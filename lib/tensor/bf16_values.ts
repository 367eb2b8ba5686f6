// Which tensors hold bfloat16 values: lib/precision.ts's toBf16 marks every tensor it returns, so that a
// kernel with a real bfloat16 path (oneDNN's bf16 convolutions, lib/tensor/ops/conv2d/dnnl.ts) can take
// it exactly where the emulation has rounded the operands already; there converting them to bfloat16
// loses nothing and the result equals the float32 path up to the order of the float32 sums. Marks go by
// TF.js data id (shared by reshapes and clones, dropped with the tensor); a copy (a slice) is unmarked, and
// the conv kernel checks its values when the other operand is marked.
import type * as tf from "@tensorflow/tfjs-core";

const marked = new WeakSet<object>();

/** Marks `t` as holding only bfloat16 values (float32 numbers whose low 16 bits are zero, inf or NaN). */
export function markBf16Values(t: tf.TensorInfo): void {
  marked.add(t.dataId as object);
}

/** Whether `t` was marked by markBf16Values (its data came out of toBf16). */
export function isMarkedBf16(t: tf.TensorInfo): boolean {
  return marked.has(t.dataId as object);
}

/**
 * Whether the first `n` float32 words of `bits` (a tensor's data) are bfloat16 values: low 16 bits zero,
 * or NaN (any NaN converts to a NaN). A cheap spot check behind a mark: data written in place after
 * marking would fail it.
 */
export function looksBf16(bits: Uint32Array, n = 64): boolean {
  const end = Math.min(n, bits.length);
  for (let i = 0; i < end; i++) {
    const v = bits[i];
    if ((v & 0xffff) !== 0 && (v & 0x7f800000) !== 0x7f800000) return false;
  }
  return true;
}
