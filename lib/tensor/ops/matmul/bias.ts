// x [M, K] @ w [K, N] + b [N], the linear layers' product and bias, for callers outside a gradient tape
// (evaluation, sampling): on wasm with oneDNN one matmul primitive call adds the bias as it writes the
// product (ops/matmul/dnnl.ts LmpipeMatMulBias), where the op chain runs a product and then TF.js's Add on
// one thread over the whole output. While gradients are recorded the op chain runs, so that training keeps
// its numbers and its tape. kernel_choice.ts's matMulBias row decides.
import * as tf from "@tensorflow/tfjs-core";
import { kernelFor } from "../../kernel_choice.ts";
import { gradientsRecorded } from "../../tape_state.ts";
import { MATMUL_BIAS_KERNEL, MATMUL_BIAS_ROWS_KERNEL } from "./dnnl.ts";

/** x @ w + b for 2-D float32 x and w and b [N]; the fused kernel where kernel_choice.ts takes it. */
export function matMulBias(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D {
  const [M, K] = x.shape, N = w.shape[1];
  const choice = !gradientsRecorded() && x.dtype === "float32" && w.dtype === "float32" &&
      b.dtype === "float32"
    ? kernelFor("matMulBias", tf.getBackend(), M * K * N, M)
    : "ops";
  const kernel = choice === "dnnl-rows"
    ? MATMUL_BIAS_ROWS_KERNEL
    : choice === "dnnl-matmul"
    ? MATMUL_BIAS_KERNEL
    : null;
  if (kernel === null) return tf.add(tf.matMul(x, w), b) as tf.Tensor2D;
  return tf.engine().runKernel(kernel, { x, w, b } as unknown as tf.NamedTensorMap) as tf.Tensor2D;
}
