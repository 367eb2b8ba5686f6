// Whether one of lmpipe's own kernels (kernel_names.ts) runs on the current backend: the ops that have
// one (softmax_rows.ts, layer_norm.ts, gelu.ts) ask here instead of each spelling out the rule. On wasm
// the kernels of wasm_kernels.ts, unless LMPIPE_WASM_FUSED=0; on webgpu a kernel registered by
// webgpu_kernels.ts, webgpu_attention.ts or webgpu_layers.ts, unless LMPIPE_WEBGPU_FUSED=0; elsewhere
// never (the op chains run).
import * as tf from "@tensorflow/tfjs-core";
import { wasmKernelsActive } from "./wasm_kernels.ts";
import { fusedKernelsActive } from "./webgpu_kernels.ts";

export function ownKernelActive(kernelName: string): boolean {
  const backend = tf.getBackend();
  if (backend === "wasm") return wasmKernelsActive();
  return backend === "webgpu" && fusedKernelsActive() && tf.getKernel(kernelName, "webgpu") !== undefined;
}

// lmpipe's implicit-GEMM convs on webgpu (lib/tensor/ops/conv2d/webgpu.ts): on unless LMPIPE_WEBGPU_CONV=0
// (then TF.js's stock Conv2D and Conv2DBackpropInput and fixes.ts's filter gradient run).
let webgpuConvOn = envSwitch("LMPIPE_WEBGPU_CONV");

/** Whether an env var leaves a kernel family on: anything but "0" (or no env permission) is on. */
function envSwitch(name: string): boolean {
  try {
    return Deno.env.get(name) !== "0";
  } catch {
    return true;
  }
}

/** Turns lmpipe's webgpu convs on or off for this process (tests and benchmarks compare both). */
export function setWebgpuConvEnabled(on: boolean): void {
  webgpuConvOn = on;
}

/** Whether lmpipe's conv kernels run now: enabled and the current backend is webgpu. */
export function webgpuConvActive(): boolean {
  return webgpuConvOn && tf.getBackend() === "webgpu";
}
