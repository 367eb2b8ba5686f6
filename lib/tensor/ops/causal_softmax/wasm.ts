// Attention's causal softmax and its gradient on wasm, registered under the names of the webgpu kernels
// (LmpipeCausalSoftmax, LmpipeCausalSoftmaxGrad; mod.ts picks them through kernel_choice.ts): one job each
// way on all of lmpipe's wasm threads (kernels.wat causal_softmax, softmax_grad), where the op chain runs
// an Add of the mask and TF.js's Softmax forward, and Mul, Sum, Mul, Sub backward, each on one thread. The
// forward pass takes only each row's visible keys through the vocabulary softmax's exp (masked keys are
// set to 0, what exp gives a score plus -1e9), so its numbers are within float32 rounding of the op
// chain's, not its bits; NaN and +Infinity rows propagate as there (mod.ts's contract).
import * as tf from "@tensorflow/tfjs-core";
import { registerKernels } from "../../host_kernel.ts";
import { CAUSAL_SOFTMAX_GRAD_KERNEL, CAUSAL_SOFTMAX_KERNEL } from "../../kernel_names.ts";
import { type AnyBackend, offsetOf, requireFloat32, runRows, type TensorInfo } from "../../wasm/kernels.ts";
import { KIND } from "../../wasm/kernel_calls.ts";

function causalSoftmaxKernel(
  { inputs, backend, attrs }: { inputs: { x: TensorInfo }; backend: AnyBackend; attrs: unknown },
): TensorInfo {
  const { x } = inputs;
  const { past } = attrs as { past: number };
  requireFloat32(CAUSAL_SOFTMAX_KERNEL, "scores", x);
  const r = x.shape.length, T = x.shape[r - 2], K = x.shape[r - 1];
  if (r < 2 || K !== past + T) {
    throw new Error(
      `${CAUSAL_SOFTMAX_KERNEL} (lib/tensor/ops/causal_softmax/wasm.ts): scores [${x.shape}] with past ${past}: ` +
        "the last axis must be past + T",
    );
  }
  const y = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  const rows = tf.util.sizeFromShape(x.shape) / K;
  if (rows === 0) return y;
  const stats = backend.makeOutput([rows, 2], "float32") as TensorInfo;
  const o = (t: TensorInfo) => offsetOf(backend, t);
  runRows(backend, [KIND.causalSoftmax, o(x), o(y), o(stats), T, K, past], rows, K);
  backend.disposeData(stats.dataId);
  return y;
}

function causalSoftmaxGradKernel(
  { inputs, backend }: { inputs: { y: TensorInfo; dy: TensorInfo }; backend: AnyBackend },
): TensorInfo {
  const { y, dy } = inputs;
  requireFloat32(CAUSAL_SOFTMAX_GRAD_KERNEL, "y", y);
  requireFloat32(CAUSAL_SOFTMAX_GRAD_KERNEL, "dy", dy, y.shape);
  const K = y.shape[y.shape.length - 1];
  const dx = backend.makeOutput(y.shape.slice(), "float32") as TensorInfo;
  const rows = K > 0 ? tf.util.sizeFromShape(y.shape) / K : 0;
  if (rows === 0) return dx;
  const o = (t: TensorInfo) => offsetOf(backend, t);
  runRows(backend, [KIND.softmaxGrad, o(y), o(dy), o(dx), K], rows, K);
  return dx;
}

// Registered once, when this module is first imported.
registerKernels("wasm", [
  [CAUSAL_SOFTMAX_KERNEL, causalSoftmaxKernel],
  [CAUSAL_SOFTMAX_GRAD_KERNEL, causalSoftmaxGradKernel],
]);
