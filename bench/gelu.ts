// Exact (erf) GELU on wasm, forward and backward: lmpipe's kernels (lib/tensor/ops/gelu/wasm.ts, one
// multithreaded job each way) against the op chain they replace (TF.js's Erf and ~15 elementwise kernels,
// one thread each), in one process, on the MLP hidden shapes of gpt T and S (batch 8) and of the gpt2 /
// study presets (one 1024-token sequence). The tanh form's kernels are timed beside them for scale.
// Prints medians and the ratio per shape.
//
//   LMPIPE_WASM_THREADS=1 deno run -A bench/gelu.ts
//   LMPIPE_WASM_THREADS=2 deno run -A bench/gelu.ts
import { initBackend } from "../lib/tensor/backend.ts";
import { gelu, type GeluForm } from "../lib/tensor/ops/gelu/mod.ts";
import { wasmKernelStats } from "../lib/tensor/wasm/kernels.ts";
import { medianGradMs } from "./common.ts";

const info = await initBackend("wasm");

const CASES: [number[], string][] = [
  [[1024, 512], "gpt T (4 layers, 128 wide, context 128)"],
  [[2048, 1536], "gpt S (6 layers, 384 wide, context 256)"],
  [[1024, 3072], "gpt2 / study, one sequence of 1024"],
];

/** Median ms of a forward and backward pass through gelu(form) with the wasm kernels on or off. */
const time = (shape: number[], form: GeluForm, kernels: boolean) =>
  medianGradMs((t) => gelu(t, form), shape, kernels);

console.log(`${info.device}\n`);
console.log(
  "| MLP hidden | shape | exact, op chain ms | exact, kernels ms | ratio | tanh, kernels ms |\n" +
    "|---|---|---:|---:|---:|---:|",
);
for (const [shape, what] of CASES) {
  const chain = time(shape, "exact", false);
  const jobs = wasmKernelStats().rows;
  const kernels = time(shape, "exact", true);
  if (wasmKernelStats().rows === jobs) throw new Error(`${what}: the wasm kernels did not run`);
  const tanh = time(shape, "tanh", true);
  console.log(
    `| ${what} | [${shape}] | ${chain.toFixed(2)} | ${kernels.toFixed(2)} | ${
      (chain / kernels).toFixed(2)
    }x | ${tanh.toFixed(2)} |`,
  );
}
console.log(
  "\ncommand: LMPIPE_WASM_THREADS=" + (Deno.env.get("LMPIPE_WASM_THREADS") ?? "(default)") +
    " deno run -A bench/gelu.ts",
);
