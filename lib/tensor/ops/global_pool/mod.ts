// globalAvgPool: the image models' CNNs end by averaging each image's pixels per channel ([N, H, W, C] ->
// [N, C], lib/models/cnn.ts). TF.js's wasm Mean kernel first transposes NHWC so that the averaged axes are
// innermost, then reduces on one thread: 3.8 ms for [121, 12, 12, 128], 4% of a pixel-attn-wide small step.
//   - On wasm (unless LMPIPE_WASM_AVGPOOL=0; wasm.ts): lmpipe's threaded per-image means and a broadcast copy
//     as gradient; with lmpipe's wasm kernels off, TF.js's AvgPool kernel with one window of the whole image
//     (XNNPACK's average pooling, NHWC as it lies: 0.33 ms for that shape), and as gradient the Mean's
//     (dy / (H·W) times ones over the pixels, lib/tensor/patches/gradients.ts); TF.js's AvgPoolGrad took
//     4x the Mean gradient's time. Nothing is saved for the gradient (Mean kept x).
//   - Elsewhere: tf.mean over H and W.
// kernel_choice.ts decides (row "globalAvgPool").
import * as tf from "@tensorflow/tfjs-core";
import { kernelFor } from "../../kernel_choice.ts";
import { globalAvgPoolByAvgPool, globalAvgPoolByKernels } from "./wasm.ts";

/** The reference: TF.js's mean over the pixels. */
export function globalAvgPoolByMean(x: tf.Tensor4D): tf.Tensor2D {
  return tf.mean(x, [1, 2]) as tf.Tensor2D;
}

/** The mean of each image's pixels per channel: x [N, H, W, C] -> [N, C]. Differentiable in x. */
export function globalAvgPool(x: tf.Tensor4D): tf.Tensor2D {
  if (x.rank !== 4) {
    throw new Error(
      `globalAvgPool (lib/tensor/ops/global_pool/mod.ts): expected x [N, H, W, C], got [${x.shape}]`,
    );
  }
  const path = x.dtype === "float32" && x.size > 0 ? kernelFor("globalAvgPool") : "ops";
  if (path === "lmpipe") return globalAvgPoolByKernels(x);
  if (path === "avgPool") return globalAvgPoolByAvgPool(x);
  return globalAvgPoolByMean(x);
}
