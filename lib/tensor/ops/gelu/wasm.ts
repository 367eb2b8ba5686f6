// GELU and its gradient on wasm, both forms, registered as LmpipeGelu / LmpipeGeluGrad (tanh) and
// LmpipeGeluExact / LmpipeGeluExactGrad (erf) (kernel_names.ts): one elementwise SIMD job each way
// (kernels.wat gelu_*, erf) on the kernels' threads (wasm/kernels.ts), the float32 operations of mod.ts's
// op chains around tanh or erf, keeping only x for the backward pass.
import * as tf from "@tensorflow/tfjs-core";
import { registerKernels } from "../../host_kernel.ts";
import {
  GELU_C,
  GELU_EXACT_GRAD_KERNEL,
  GELU_EXACT_KERNEL,
  GELU_GRAD_KERNEL,
  GELU_K,
  GELU_KERNEL,
} from "../../kernel_names.ts";
import {
  type AnyBackend,
  offsetOf,
  requireFloat32,
  runElementwise,
  type TensorInfo,
} from "../../wasm/kernels.ts";
import { floatBits, KIND } from "../../wasm/kernel_calls.ts";

// The float32 constants of the op chains: tanh form c, 3c (taken in float64 first), k; erf form 1/sqrt 2
// (erf's argument) and 1/sqrt(2 pi) (the gradient's normal density).
const TANH_FORWARD = [GELU_C, GELU_K].map(floatBits);
const TANH_GRAD = [GELU_C, 3 * GELU_C, GELU_K].map(floatBits);
const ERF_FORWARD = [Math.SQRT1_2].map(floatBits);
const ERF_GRAD = [Math.SQRT1_2, 1 / Math.sqrt(2 * Math.PI)].map(floatBits);

/** A forward kernel: y from x in one job of `kind` with `consts` after x, y, n. */
function forwardKernel(name: string, kind: number, consts: number[]) {
  return ({ inputs, backend }: { inputs: { x: TensorInfo }; backend: AnyBackend }): TensorInfo => {
    const { x } = inputs;
    requireFloat32(name, "x", x);
    const n = tf.util.sizeFromShape(x.shape);
    const y = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
    if (n > 0) runElementwise(backend, [kind, offsetOf(backend, x), offsetOf(backend, y), n, ...consts], n);
    return y;
  };
}

/** A gradient kernel: dx from x and dy in one job of `kind` with `consts` after x, dy, dx, n. */
function gradKernel(name: string, kind: number, consts: number[]) {
  return (
    { inputs, backend }: { inputs: { x: TensorInfo; dy: TensorInfo }; backend: AnyBackend },
  ): TensorInfo => {
    const { x, dy } = inputs;
    requireFloat32(name, "x", x);
    requireFloat32(name, "dy", dy, x.shape);
    const n = tf.util.sizeFromShape(x.shape);
    const dx = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
    if (n > 0) {
      const o = (t: TensorInfo) => offsetOf(backend, t);
      runElementwise(backend, [kind, o(x), o(dy), o(dx), n, ...consts], n);
    }
    return dx;
  };
}

// Registered once, when this module is first imported.
registerKernels("wasm", [
  [GELU_KERNEL, forwardKernel(GELU_KERNEL, KIND.gelu, TANH_FORWARD)],
  [GELU_GRAD_KERNEL, gradKernel(GELU_GRAD_KERNEL, KIND.geluGrad, TANH_GRAD)],
  [GELU_EXACT_KERNEL, forwardKernel(GELU_EXACT_KERNEL, KIND.geluExact, ERF_FORWARD)],
  [GELU_EXACT_GRAD_KERNEL, gradKernel(GELU_EXACT_GRAD_KERNEL, KIND.geluExactGrad, ERF_GRAD)],
]);
