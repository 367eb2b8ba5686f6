// Every fix lmpipe makes to TF.js 4.22's own kernels and gradients, one file per backend (wasm.ts,
// cpu.ts, webgpu.ts) plus the gradients wrong everywhere (gradients.ts) and a backward pass that frees
// what it no longer needs (backprop.ts). backend.ts applies them once,
// before any backend starts; docs/kernels.md lists them with lmpipe's own kernels.
import { installEarlyReleaseBackprop } from "./backprop.ts";
import { applyCpuPatches } from "./cpu.ts";
import { registerGradientPatches } from "./gradients.ts";
import { applyWasmPatches } from "./wasm.ts";
import { applyWebGPUPatches } from "./webgpu.ts";

let applied = false;

/** Registers every fix. Idempotent; called by backend.ts before any backend is started. */
export function applyPatches(): void {
  if (applied) return;
  applied = true;
  registerGradientPatches();
  installEarlyReleaseBackprop();
  applyWasmPatches();
  applyCpuPatches();
  applyWebGPUPatches();
}
