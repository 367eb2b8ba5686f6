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

// lmpipe's implicit-GEMM convs on webgpu (lib/tensor/ops/conv2d/webgpu.ts) and its flash attention
// (lib/tensor/ops/attention/webgpu.ts): on with the other webgpu kernels, unless LMPIPE_WEBGPU_CONV=0 or
// LMPIPE_WEBGPU_ATTENTION=0 (then TF.js's stock Conv2D and Conv2DBackpropInput and fixes.ts's filter
// gradient run, or attention's op chain with its fused causal softmax). LMPIPE_WEBGPU_FUSED=0 turns
// both off too.
let webgpuConvOn = envSwitch("LMPIPE_WEBGPU_CONV");
let webgpuAttentionOn = envSwitch("LMPIPE_WEBGPU_ATTENTION");

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

/** Whether lmpipe's conv kernels run now: enabled, with the fused kernels, on the webgpu backend. */
export function webgpuConvActive(): boolean {
  return webgpuConvOn && fusedKernelsActive();
}

/** Turns lmpipe's webgpu flash attention on or off for this process. */
export function setWebgpuAttentionEnabled(on: boolean): void {
  webgpuAttentionOn = on;
}

/** Whether causalAttention (lib/tensor/ops/attention/mod.ts) runs the flash kernels now. */
export function webgpuAttentionActive(): boolean {
  return webgpuAttentionOn && fusedKernelsActive();
}

// Real f16 under --precision mixed (lib/train_loop.ts turns it on for a mixed run): where the GPU offers
// shader-f16, lmpipe's conv and attention kernels round every operand to binary16 as they load it
// (roundToHalf in lib/tensor/wgsl.ts, the rule of lib/precision.ts toHalf) and hold the tiles in workgroup
// memory as f16; products and sums stay f32. Other webgpu kernels and backends keep the emulation.
let halfOperands = false;

/** Turns binary16 operands for lmpipe's webgpu conv and attention kernels on or off (see above). */
export function setWebgpuHalfOperands(on: boolean): void {
  halfOperands = on;
}

/** Whether the kernels of `device` load their operands as f16: switched on and shader-f16 offered. */
export function webgpuHalfOperands(device: GPUDevice): boolean {
  return halfOperands && device.features.has("shader-f16");
}
