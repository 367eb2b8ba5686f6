// The wasm path of globalAvgPool (mod.ts explains the op): TF.js's AvgPool with one window per image, with the
// Mean's gradient, and the switch that turns it off (LMPIPE_WASM_AVGPOOL=0). The switch lives here, apart from
// mod.ts, so that kernel_choice.ts can ask it without importing the op that asks kernel_choice.ts.
import * as tf from "@tensorflow/tfjs-core";
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
