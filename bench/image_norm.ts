// Speed of the image models' per-image norm + channel affine + ReLU on wasm (lib/tensor/ops/image_norm):
// forward, and the forward + the three gradients again (as tf.grads runs them), with lmpipe's fused kernels (./wasm.ts), the LayerNorm path
// they replaced (LMPIPE_WASM_IMAGE_NORM=0) and the op chain (LMPIPE_WASM_FUSED=0), on the CNN shapes of the
// tiny and small presets; the three alternate within one process and the medians are printed.
//
//   deno run -A bench/image_norm.ts --threads 1 --reps 9
import { parseArgs } from "node:util";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { imageNormRelu } from "../lib/tensor/ops/image_norm/mod.ts";
import { setWasmImageNormEnabled } from "../lib/tensor/ops/image_norm/wasm.ts";
import { setWasmKernelsEnabled } from "../lib/tensor/wasm/kernels.ts";
import { kernelFor } from "../lib/tensor/kernel_choice.ts";
import { median } from "./common.ts";

const { values } = parseArgs({
  options: { threads: { type: "string" }, reps: { type: "string", default: "9" } },
});
const info = await initBackend("wasm", {
  quiet: true,
  threads: values.threads ? Number(values.threads) : undefined,
});
const reps = Number(values.reps);

// [images, H, W, C]: a tiny step's 512 images (8 x 64 tokens, 8x8, 16 channels), a small chunk (12x12, 32)
const shapes = [[512, 8, 8, 16], [256, 12, 12, 32]];
const paths: Record<string, (on: boolean) => void> = {
  fused: () => (setWasmKernelsEnabled(true), setWasmImageNormEnabled(true)),
  layerNorm: () => (setWasmKernelsEnabled(true), setWasmImageNormEnabled(false)),
  ops: () => (setWasmKernelsEnabled(false), setWasmImageNormEnabled(true)),
};

console.log(`${info.device}; median of ${reps} alternating runs, ms`);
console.log("| [N, H, W, C] | path | forward | forward + gradients |");
console.log("|---|---|---:|---:|");
for (const shape of shapes) {
  const [x, dy] = [tf.randomNormal(shape), tf.randomNormal(shape)];
  const g = tf.randomNormal([shape[3]], 1, 0.2), b = tf.randomNormal([shape[3]], 0, 0.2);
  const f = (a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => imageNormRelu(a as tf.Tensor4D, gg, bb, true);
  const times: Record<string, { fwd: number[]; both: number[] }> = {};
  for (let rep = -2; rep < reps; rep++) { // two warm-up rounds
    for (const [name, set] of Object.entries(paths)) {
      set(true);
      const t0 = performance.now();
      tf.tidy(() => {
        f(x, g, b); // wasm kernels are done when they return
      });
      const t1 = performance.now();
      tf.tidy(() => {
        tf.grads(f)([x, g, b], dy);
      });
      const t2 = performance.now();
      if (rep < 0) continue;
      times[name] ??= { fwd: [], both: [] };
      times[name].fwd.push(t1 - t0), times[name].both.push(t2 - t1);
      if (rep === 0 && kernelFor("imageNorm") !== (name === "fused" ? "lmpipe" : name)) {
        throw new Error(`bench/image_norm.ts: path ${name} ran ${kernelFor("imageNorm")}`);
      }
    }
  }
  for (const [name, t] of Object.entries(times)) {
    console.log(`| [${shape}] | ${name} | ${median(t.fwd).toFixed(2)} | ${median(t.both).toFixed(2)} |`);
  }
  tf.dispose([x, dy, g, b]);
}
paths.fused(true);
