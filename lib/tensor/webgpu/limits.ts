// The largest tensor a webgpu kernel may bind. A shader cannot bind a buffer larger than the device's
// maxStorageBufferBindingSize (128 MiB on llvmpipe and many GPUs); TF.js does not check and returns
// stale garbage (e.g. a 700x50304 matMul). patches/webgpu.ts turns that into a clear error for every
// TF.js program, lmpipe's own kernels check it themselves, and lib/nn.ts maxRowsPerChunk sizes row
// chunks of large outputs to fit.
import * as tf from "@tensorflow/tfjs-core";

// deno-lint-ignore no-explicit-any
type AnyBackend = any;

let bindingLimitOverride: number | null = null;

/** For tests: pretend the webgpu binding limit is `bytes` (null restores the device's limit). */
export function setWebGPUBindingLimitForTests(bytes: number | null): void {
  bindingLimitOverride = bytes;
}

/** The largest tensor (bytes) a webgpu kernel may read or write on the current device. */
export function webgpuMaxTensorBytes(backend: AnyBackend = tf.backend()): number {
  if (bindingLimitOverride != null) return bindingLimitOverride;
  return backend?.device?.limits?.maxStorageBufferBindingSize ?? Infinity;
}

/** Bytes of a webgpu tensor of `shape` and `dtype` (bool is stored as 32 bits). */
export function tensorBytes(shape: number[], dtype: string): number {
  return tf.util.sizeFromShape(shape) * (dtype === "complex64" ? 8 : 4);
}
