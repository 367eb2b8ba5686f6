// Whether one of lmpipe's own kernels (kernel_names.ts) runs on the current backend: the ops that have
// one (softmax_rows.ts, layer_norm.ts, gelu.ts) ask here instead of each spelling out the rule. On wasm
// the kernels of wasm_kernels.ts, unless LMPIPE_WASM_FUSED=0; on webgpu a kernel registered by
// webgpu_kernels.ts, webgpu_attention.ts or webgpu_layers.ts, unless LMPIPE_WEBGPU_FUSED=0; elsewhere
// never (the op chains run).
import * as tf from "@tensorflow/tfjs-core";
import { wasmKernelsActive } from "./wasm_kernels.ts";
import { fusedKernelsActive } from "./webgpu_kernels.ts";
import { currentDnnl } from "../native/dnnl.ts";

export function ownKernelActive(kernelName: string): boolean {
  const backend = tf.getBackend();
  if (backend === "wasm") return wasmKernelsActive();
  return backend === "webgpu" && fusedKernelsActive() && tf.getKernel(kernelName, "webgpu") !== undefined;
}

let dnnlConvs = true;

/** For tests and benchmarks: route wasm convolutions to oneDNN (when loaded) or not; returns the old setting. */
export function setDnnlConvs(on: boolean): boolean {
  const old = dnnlConvs;
  dnnlConvs = on;
  return old;
}

/**
 * Whether Conv2D and its gradients run on oneDNN (ops/conv2d/dnnl.ts): on wasm when lib/native/dnnl.ts
 * loaded the library (LMPIPE_DNNL=off: never); otherwise TF.js's kernels and fixes.ts's gradients run.
 */
export function dnnlConvActive(): boolean {
  return dnnlConvs && tf.getBackend() === "wasm" && currentDnnl() !== null;
}
