// The wasm paths of globalAvgPool (mod.ts explains the op), and the switch that turns them off
// (LMPIPE_WASM_AVGPOOL=0). The switch lives here, apart from mod.ts, so that kernel_choice.ts can ask it
// without importing the op that asks kernel_choice.ts.
//   - lmpipe's kernels: LmpipeImageMeans (kernels.wat image_means: per-image float64 channel sums times
//     1 / (H W), an image per row on all of lmpipe's wasm threads) and as gradient dy / (H W) repeated over
//     the pixels by LmpipeBroadcastPixels (ops/copy_runs/wasm.ts), the Mean gradient's numbers. TF.js's
//     AvgPool ran on one thread and its broadcast Multiply got slower on two: 28.5 ms of a
//     pixel-attn-wide `small` step on 1 thread, 38.2 on 2.
//   - with lmpipe's wasm kernels off: TF.js's AvgPool with one window per image, the same gradient by a
//     broadcast Multiply.
import * as tf from "@tensorflow/tfjs-core";
import { switchOn } from "../../env_switch.ts";
import { registerKernels } from "../../host_kernel.ts";
import { BROADCAST_PIXELS_KERNEL, IMAGE_MEANS_KERNEL } from "../../kernel_names.ts";
import { type AnyBackend, offsetOf, requireFloat32, runRows, type TensorInfo } from "../../wasm/kernels.ts";
import { KIND } from "../../wasm/kernel_calls.ts";

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

/** x [N, H, W, C] -> [N, C] by one AvgPool window of H x W per image; the gradient is the Mean's. */
export function globalAvgPoolByAvgPool(x: tf.Tensor4D): tf.Tensor2D {
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

/** LmpipeImageMeans: x [N, H, W, C] float32 -> [N, C], the mean of each image's pixels per channel. */
function imageMeansKernel(
  { inputs, backend }: { inputs: { x: TensorInfo }; backend: AnyBackend },
): TensorInfo {
  const { x } = inputs;
  requireFloat32(IMAGE_MEANS_KERNEL, "x", x);
  if (x.shape.length !== 4) {
    throw new Error(`${IMAGE_MEANS_KERNEL}: x must be [N, H, W, C], got [${x.shape}]`);
  }
  const [N, H, W, C] = x.shape;
  const y = backend.makeOutput([N, C], "float32") as TensorInfo;
  if (N * C > 0 && H * W > 0) {
    runRows(backend, [KIND.imageMeans, offsetOf(backend, x), offsetOf(backend, y), H * W, C], N, H * W * C);
  }
  return y;
}

registerKernels("wasm", [[IMAGE_MEANS_KERNEL, imageMeansKernel]]);

/** x [N, H, W, C] -> [N, C] by lmpipe's kernels; the gradient is the Mean's numbers, broadcast by a copy. */
export function globalAvgPoolByKernels(x: tf.Tensor4D): tf.Tensor2D {
  const [, H, W] = x.shape;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xx = args[0] as tf.Tensor4D;
    return {
      value: tf.engine().runKernel(IMAGE_MEANS_KERNEL, { x: xx }, {}) as tf.Tensor,
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) =>
        tf.engine().runKernel(BROADCAST_PIXELS_KERNEL, { g: tf.div(dy as tf.Tensor, H * W) }, {
          H,
          W,
        }) as tf.Tensor,
    };
  }) as (x: tf.Tensor) => tf.Tensor;
  return f(x) as tf.Tensor2D;
}
