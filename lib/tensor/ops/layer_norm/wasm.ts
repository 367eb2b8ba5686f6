// LayerNorm and its gradient on wasm, registered as LmpipeLayerNorm / LmpipeLayerNormGrad
// (kernel_names.ts): two passes a row each way (kernels.wat layernorm_*) on the kernels' threads
// (wasm/kernels.ts), keeping only the row means and 1/std for the backward pass, where TF.js runs
// ~10 kernels forward and ~20 backward on one thread.
import * as tf from "@tensorflow/tfjs-core";
import { registerKernels } from "../../host_kernel.ts";
import { LAYER_NORM_GRAD_KERNEL, LAYER_NORM_KERNEL } from "../../kernel_names.ts";
import { type AnyBackend, offsetOf, requireFloat32, runRows, type TensorInfo } from "../../wasm/kernels.ts";
import { floatBits, KIND } from "../../wasm/kernel_calls.ts";

function layerNormKernel(
  { inputs, backend, attrs }: { inputs: Record<string, TensorInfo>; backend: AnyBackend; attrs: unknown },
): TensorInfo[] {
  const { x, w, b } = inputs;
  const { eps } = attrs as { eps: number };
  const C = x.shape[x.shape.length - 1], rows = tf.util.sizeFromShape(x.shape) / C;
  requireFloat32(LAYER_NORM_KERNEL, "x", x);
  requireFloat32(LAYER_NORM_KERNEL, "the weight", w, [C]);
  if (b) requireFloat32(LAYER_NORM_KERNEL, "the bias", b, [C]);
  if (C % 4 !== 0) {
    throw new Error(`${LAYER_NORM_KERNEL}: rows of ${C} values; the kernel needs a multiple of 4`);
  }
  const y = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  const mean = backend.makeOutput([rows], "float32") as TensorInfo;
  const rstd = backend.makeOutput([rows], "float32") as TensorInfo;
  if (rows > 0) {
    const o = (t: TensorInfo) => offsetOf(backend, t);
    const args = [
      KIND.layerNorm,
      o(x),
      o(w),
      b ? o(b) : 0,
      o(y),
      o(mean),
      o(rstd),
      C,
      floatBits(eps),
      b ? 1 : 0,
    ];
    runRows(backend, args, rows, C);
  }
  return [y, mean, rstd];
}

function layerNormGradKernel(
  { inputs, backend }: { inputs: Record<string, TensorInfo>; backend: AnyBackend },
): TensorInfo[] {
  const { dy, x, w, mean, rstd } = inputs;
  const C = x.shape[x.shape.length - 1], rows = tf.util.sizeFromShape(x.shape) / C;
  for (
    const [what, t, shape] of [["dy", dy, x.shape], ["mean", mean, [rows]], ["rstd", rstd, [rows]]] as const
  ) {
    requireFloat32(LAYER_NORM_GRAD_KERNEL, what, t, shape as number[]);
  }
  const dx = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  const dw = backend.makeOutput([C], "float32") as TensorInfo;
  const db = backend.makeOutput([C], "float32") as TensorInfo;
  const o = (t: TensorInfo) => offsetOf(backend, t);
  if (rows > 0) {
    runRows(backend, [KIND.layerNormDx, o(dy), o(x), o(w), o(mean), o(rstd), o(dx), C], rows, C);
  }
  runRows(backend, [KIND.layerNormDwDb, o(dy), o(x), o(mean), o(rstd), o(dw), o(db), rows, C], 1, 0);
  return [dx, dw, db];
}

// Registered once, when this module is first imported.
registerKernels("wasm", [[LAYER_NORM_KERNEL, layerNormKernel], [
  LAYER_NORM_GRAD_KERNEL,
  layerNormGradKernel,
]]);
