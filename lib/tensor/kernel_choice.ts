// Whether one of lmpipe's own kernels (kernel_names.ts) runs on the current backend: the ops that have
// one (softmax_rows.ts, layer_norm.ts, gelu.ts) ask here instead of each spelling out the rule. On wasm
// the kernels of wasm_kernels.ts, unless LMPIPE_WASM_FUSED=0; on webgpu a kernel registered by
// webgpu_kernels.ts, webgpu_attention.ts or webgpu_layers.ts, unless LMPIPE_WEBGPU_FUSED=0; elsewhere
// never (the op chains run). MatMul on webgpu: lmpipe's GEMM (ops/matmul/webgpu.ts) unless
// LMPIPE_WEBGPU_MATMUL=0.
import * as tf from "@tensorflow/tfjs-core";
import { wasmKernelsActive } from "./wasm_kernels.ts";
import { fusedKernelsActive } from "./webgpu_kernels.ts";
import { ownMatMulEnabled } from "./ops/matmul/webgpu.ts";

export function ownKernelActive(kernelName: string): boolean {
  const backend = tf.getBackend();
  if (backend === "wasm") return wasmKernelsActive();
  return backend === "webgpu" && fusedKernelsActive() && tf.getKernel(kernelName, "webgpu") !== undefined;
}

/** Whether webgpu's BatchMatMul / _FusedMatMul run lmpipe's GEMM now (else TF.js's stock kernel). */
export function ownMatMulActive(): boolean {
  return tf.getBackend() === "webgpu" && ownMatMulEnabled();
}
