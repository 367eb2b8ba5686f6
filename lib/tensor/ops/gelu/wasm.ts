// GELU and its gradient on wasm, registered as LmpipeGelu / LmpipeGeluGrad (kernel_names.ts): one
// elementwise SIMD pass each way (kernels.wat gelu_*) on the kernels' threads (wasm/kernels.ts), the
// float32 operations of mod.ts's op chain, keeping only x for the backward pass.
import * as tf from "@tensorflow/tfjs-core";
import { registerKernels } from "../../host_kernel.ts";
import { GELU_C, GELU_GRAD_KERNEL, GELU_K, GELU_KERNEL } from "../../kernel_names.ts";
import {
  type AnyBackend,
  offsetOf,
  requireFloat32,
  runElementwise,
  type TensorInfo,
} from "../../wasm/kernels.ts";
import { floatBits, KIND } from "../../wasm/kernel_calls.ts";

function geluKernel({ inputs, backend }: { inputs: { x: TensorInfo }; backend: AnyBackend }): TensorInfo {
  const { x } = inputs;
  requireFloat32(GELU_KERNEL, "x", x);
  const n = tf.util.sizeFromShape(x.shape);
  const y = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  if (n > 0) {
    const args = [
      KIND.gelu,
      offsetOf(backend, x),
      offsetOf(backend, y),
      n,
      floatBits(GELU_C),
      floatBits(GELU_K),
    ];
    runElementwise(backend, args, n);
  }
  return y;
}

function geluGradKernel(
  { inputs, backend }: { inputs: { x: TensorInfo; dy: TensorInfo }; backend: AnyBackend },
): TensorInfo {
  const { x, dy } = inputs;
  requireFloat32(GELU_GRAD_KERNEL, "x", x);
  requireFloat32(GELU_GRAD_KERNEL, "dy", dy, x.shape);
  const n = tf.util.sizeFromShape(x.shape);
  const dx = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  if (n > 0) {
    const o = (t: TensorInfo) => offsetOf(backend, t);
    const consts = [GELU_C, 3 * GELU_C, GELU_K].map(floatBits);
    runElementwise(backend, [KIND.geluGrad, o(x), o(dy), o(dx), n, ...consts], n);
  }
  return dx;
}

// Registered once, when this module is first imported.
registerKernels("wasm", [[GELU_KERNEL, geluKernel], [GELU_GRAD_KERNEL, geluGradKernel]]);
