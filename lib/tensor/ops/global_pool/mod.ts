// globalAvgPool: the image models' CNNs end by averaging each image's pixels per channel ([N, H, W, C] ->
// [N, C], lib/models/cnn.ts). TF.js's wasm Mean kernel first transposes NHWC so that the averaged axes are
// innermost, then reduces on one thread: 3.8 ms for [121, 12, 12, 128], 4% of a pixel-attn-wide small step.
//   - On wasm (unless LMPIPE_WASM_AVGPOOL=0): TF.js's AvgPool kernel with one window of the whole image
//     (XNNPACK's average pooling, NHWC as it lies: 0.33 ms for that shape), and as gradient the Mean's
//     (dy / (H·W) times ones over the pixels, lib/tensor/patches/gradients.ts); TF.js's AvgPoolGrad took
//     4x the Mean gradient's time. Nothing is saved for the gradient (Mean kept x).
//   - Elsewhere: tf.mean over H and W.
// kernel_choice.ts decides (row "globalAvgPool").
import * as tf from "@tensorflow/tfjs-core";
import { kernelFor } from "../../kernel_choice.ts";
import { switchOn } from "../../env_switch.ts";

let enabled = switchOn("LMPIPE_WASM_AVGPOOL");

/** Turns the AvgPool path on or off for this process (tests and benchmarks); returns the old state. */
export function setAvgPoolEnabled(on: boolean): boolean {
  const old = enabled;
  enabled = on;
  return old;
}

/** Whether the AvgPool path is switched on (kernel_choice.ts asks). */
export function avgPoolEnabled(): boolean {
  return enabled;
}

/** The reference: TF.js's mean over the pixels. */
export function globalAvgPoolByMean(x: tf.Tensor4D): tf.Tensor2D {
  return tf.mean(x, [1, 2]) as tf.Tensor2D;
}

function globalAvgPoolByAvgPool(x: tf.Tensor4D): tf.Tensor2D {
  const [N, H, W, C] = x.shape;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xx = args[0] as tf.Tensor4D;
    return {
      value: tf.reshape(tf.avgPool(xx, [H, W], 1, "valid"), [N, C]),
      // the Mean's gradient, the same numbers: dy / n, broadcast over the pixels by a Multiply
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) =>
        tf.mul(tf.div(tf.reshape(dy as tf.Tensor, [N, 1, 1, C]), H * W), tf.fill([1, H, W, 1], 1)),
    };
  }) as (x: tf.Tensor) => tf.Tensor;
  return f(x) as tf.Tensor2D;
}

/** The mean of each image's pixels per channel: x [N, H, W, C] -> [N, C]. Differentiable in x. */
export function globalAvgPool(x: tf.Tensor4D): tf.Tensor2D {
  if (x.rank !== 4) {
    throw new Error(
      `globalAvgPool (lib/tensor/ops/global_pool/mod.ts): expected x [N, H, W, C], got [${x.shape}]`,
    );
  }
  if (x.dtype === "float32" && x.size > 0 && kernelFor("globalAvgPool") === "avgPool") {
    return globalAvgPoolByAvgPool(x);
  }
  return globalAvgPoolByMean(x);
}
