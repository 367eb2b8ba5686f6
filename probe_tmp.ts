import { initBackend, tf } from "./lib/tensor/backend.ts";
import { currentDnnl } from "./lib/native/dnnl.ts";
import { isMarkedBf16 } from "./lib/tensor/bf16_values.ts";
import { createModel, resolveConfig } from "./lib/models/registry.ts";
await initBackend("wasm", { quiet: true, threads: 1 });
for (const name of [tf.Conv2D, tf.Conv2DBackpropInput, tf.Conv2DBackpropFilter]) {
  const k = tf.getKernel(name, "wasm")!;
  const inner = k.kernelFunc;
  tf.unregisterKernel(name, "wasm");
  tf.registerKernel({ ...k, kernelFunc: (args) => {
    const ins = args.inputs as Record<string, tf.TensorInfo>;
    const marks = Object.entries(ins).map(([n, t]) => `${n}${JSON.stringify(t.shape)}:${isMarkedBf16(t)}`);
    if (!Object.values(ins).every(isMarkedBf16)) console.log(name, marks.join(" "));
    return inner(args);
  }});
}
const c = resolveConfig("pixel-attn", "tiny");
const m = createModel(c, 5);
const ids = Int32Array.from({ length: 8 * c.contextLength }, (_, i) => (i * 7919) % 50257);
const x = tf.tensor2d(ids, [8, c.contextLength], "int32");
const { value } = tf.variableGrads(() => m.loss(x, x, { precision: "bf16", training: true }), [...m.params.values()]);
console.log(value.dataSync()[0], currentDnnl()!.calls, currentDnnl()!.bf16Calls);
