// Attention's causal softmax on wasm, forward and backward: lmpipe's kernels (lib/tensor/ops/causal_softmax/
// wasm.ts, one multithreaded job each way) against TF.js's op chain (mask Add, Softmax; Mul, Sum, Mul, Sub
// backward, one thread each), in one process, on the attention shapes of gpt T and the pixel models' small
// preset. Prints medians and the ratio per shape.
//
//   LMPIPE_WASM_THREADS=1 deno run -A bench/causal_softmax.ts
//   LMPIPE_WASM_THREADS=2 deno run -A bench/causal_softmax.ts
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { causalSoftmax } from "../lib/tensor/ops/causal_softmax/mod.ts";
import { setWasmKernelsEnabled, wasmKernelStats } from "../lib/tensor/wasm/kernels.ts";
import { median } from "./common.ts";

const info = await initBackend("wasm");

const CASES: [number[], string][] = [
  [[8, 4, 128, 128], "gpt T"],
  [[8, 4, 256, 256], "pixel small warm-up blocks"],
  [[8, 8, 256, 256], "pixel-attn small image attention"],
];

/** Median ms of a forward and backward pass through causalSoftmax with the kernels on or off. */
function time(shape: number[], kernels: boolean): number {
  const x = tf.randomNormal(shape), dy = tf.randomNormal(shape);
  const grad = tf.valueAndGrad((t: tf.Tensor) => causalSoftmax(t, 0));
  const old = setWasmKernelsEnabled(kernels);
  const times: number[] = [];
  try {
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const { value, grad: dx } = grad(x, dy); // wasm kernels are synchronous: done when this returns
      if (i >= 4) times.push(performance.now() - t0);
      tf.dispose([value, dx]);
    }
  } finally {
    setWasmKernelsEnabled(old);
    tf.dispose([x, dy]);
  }
  return median(times);
}

console.log(`${info.device}\n`);
console.log("| attention | scores | op chain ms | kernels ms | ratio |\n|---|---|---:|---:|---:|");
for (const [shape, what] of CASES) {
  const chain = time(shape, false);
  const rows = wasmKernelStats().rows;
  const kernels = time(shape, true);
  if (wasmKernelStats().rows === rows) throw new Error(`${what}: the wasm kernels did not run`);
  console.log(
    `| ${what} | [${shape}] | ${chain.toFixed(2)} | ${kernels.toFixed(2)} | ${
      (chain / kernels).toFixed(2)
    }x |`,
  );
}
console.log(
  "\ncommand: LMPIPE_WASM_THREADS=" + (Deno.env.get("LMPIPE_WASM_THREADS") ?? "(default)") +
    " deno run -A bench/causal_softmax.ts",
);
