// LayerNorm and its gradient on wasm, registered as LmpipeLayerNorm / LmpipeLayerNormGrad
// (kernel_names.ts): two passes a row each way (kernels.wat layernorm_*) on the kernels' threads
// (wasm/kernels.ts), keeping only the row means and 1/std for the backward pass, where TF.js runs
// ~10 kernels forward and ~20 backward on one thread.
import * as tf from "@tensorflow/tfjs-core";
import { registerKernels } from "../../host_kernel.ts";
import { LAYER_NORM_GRAD_KERNEL, LAYER_NORM_KERNEL } from "../../kernel_names.ts";
import { type AnyBackend, offsetOf, requireFloat32, runRows, type TensorInfo } from "../../wasm/kernels.ts";
import { floatBits, KIND } from "../../wasm/kernel_calls.ts";

/**
 * Below this many values a LayerNorm (either way) runs on the calling thread: a row costs too little for the
 * second thread's wake-up. Alone in a loop after a shared job, median ms on 2 threads, shared | on the calling
 * thread: forward [1024, 128] 0.094-0.111 | 0.085-0.087; the gradient (the rows, then the weight and bias
 * sums on one thread) [1024, 128] 0.144-0.157 | 0.103-0.106, [2048, 128] 0.190-0.265 | 0.204-0.208,
 * [1024, 384] 0.258-0.286 | 0.288-0.519, [2048, 384] 0.505-0.511 | 0.601-1.07. Shared from 2^18 values the
 * forward took [2048, 128] 0.147-0.161 and [1024, 384] 0.155-0.183 ms, against 0.160-0.165 and 0.204-0.210
 * on 1 thread.
 */
const MIN_VALUES = 1 << 18;

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
    runRows(backend, args, rows, C, 1, MIN_VALUES);
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
    const args = [KIND.layerNormDx, o(dy), o(x), o(w), o(mean), o(rstd), o(dx), C];
    runRows(backend, args, rows, C, 1, MIN_VALUES);
  }
  runRows(backend, [KIND.layerNormDwDb, o(dy), o(x), o(mean), o(rstd), o(dw), o(db), rows, C], 1, 0);
  return [dx, dw, db];
}

// Registered once, when this module is first imported.
registerKernels("wasm", [[LAYER_NORM_KERNEL, layerNormKernel], [
  LAYER_NORM_GRAD_KERNEL,
  layerNormGradKernel,
]]);
