// Attention's causal softmax on wasm, forward and backward: lmpipe's kernels (lib/tensor/ops/causal_softmax/
// wasm.ts, one multithreaded job each way) against TF.js's op chain (mask Add, Softmax; Mul, Sum, Mul, Sub
// backward, one thread each), in one process, on the attention shapes of gpt T and the pixel models' small
// preset. Prints medians and the ratio per shape.
//
//   LMPIPE_WASM_THREADS=1 deno run -A bench/causal_softmax.ts
//   LMPIPE_WASM_THREADS=2 deno run -A bench/causal_softmax.ts
import { initBackend } from "../lib/tensor/backend.ts";
import { causalSoftmax } from "../lib/tensor/ops/causal_softmax/mod.ts";
import { wasmKernelStats } from "../lib/tensor/wasm/kernels.ts";
import { medianGradMs } from "./common.ts";

const info = await initBackend("wasm");

const CASES: [number[], string][] = [
  [[8, 4, 128, 128], "gpt T"],
  [[8, 4, 256, 256], "pixel small warm-up blocks"],
  [[8, 8, 256, 256], "pixel-attn small image attention"],
];

/** Median ms of a forward and backward pass through causalSoftmax with the kernels on or off. */
const time = (shape: number[], kernels: boolean) => medianGradMs((t) => causalSoftmax(t, 0), shape, kernels);

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
