// Whether TF.js is recording the ops run now for a gradient: lmpipe's forward-only kernels (the wasm
// attention kernel) run only outside tf.grad / tf.variableGrads, and the loss skips work a gradient would need.
import * as tf from "@tensorflow/tfjs-core";

/** Whether ops run now are recorded for a gradient (inside tf.grad / tf.variableGrads): the engine's own test. */
export function gradientsRecorded(): boolean {
  // deno-lint-ignore no-explicit-any
  return (tf.engine() as any).isTapeOn();
}
