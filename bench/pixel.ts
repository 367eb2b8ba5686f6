// Step time and peak memory of the image models (pixel-cumsum, pixel-attn, pixel-attn-wide) per preset,
// through the LanguageModel interface only: one loss + gradient of every parameter per step (the work
// of a training step without the optimiser update, which is the same code for every model). Peak
// memory is the most the backend held during one step (lib/tensor/memory.ts: live tensor bytes on cpu and
// wasm, what the CNN chunking bounds; GPU buffers on webgpu), plus the process's resident set size at the end. Prints a Markdown table.
//
// With --dnnl on,off (wasm with oneDNN loaded), each configuration is measured with the convolutions on
// oneDNN and on today's path alternately, --repeat times, and a last table gives the median speed-up.
//
//   deno run -A bench/pixel.ts [--backend wasm] [--models pixel-cumsum,pixel-attn,pixel-attn-wide]
//        [--presets tiny] [--batch-size 8] [--steps 2] [--cnn-chunk 0] [--precision fp32]
//        [--threads N] [--dnnl on,off] [--repeat 3] [--warmup-steps 2]
import { list, num, parseFlags, str } from "../lib/flags.ts";
import { type BackendName, initBackend, tf } from "../lib/tensor/backend.ts";
import { peakBytes, resetPeak } from "../lib/tensor/memory.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { Rng } from "../lib/rng.ts";
import type { Precision } from "../lib/models/types.ts";
import { usageError } from "../lib/errors.ts";
import { loadAverage, median } from "./common.ts";
import { currentDnnl, dnnlStatus } from "../lib/native/dnnl.ts";
import { setDnnlConvs } from "../lib/tensor/kernel_choice.ts";

const HELP = `deno run -A bench/pixel.ts [flags]

  --backend B      cpu | wasm | webgpu | auto (default wasm)
  --models L       comma-separated families (default pixel-cumsum,pixel-attn,pixel-attn-wide)
  --presets L      presets (default tiny)
  --batch-size N   sequences per step (default 8)
  --context N      positions per sequence (default: the preset's context length)
  --steps N        timed steps after the warm-up steps (default 2)
  --warmup-steps N untimed steps first (default 2: lmpipe's wasm heap grows in the second step)
  --cnn-chunk N    images per CNN chunk (default 0 = the model's automatic choice)
  --precision P    fp32 | mixed (default fp32)
  --threads N      wasm threads (default: lmpipe's own; oneDNN and OpenBLAS get the same count)
  --dnnl L         on | off | on,off: convolutions on oneDNN or today's path, alternating (default on)
  --repeat N       rounds of every configuration (default 1)

Example: deno run -A bench/pixel.ts --backend wasm --presets tiny --steps 2
         deno run -A bench/pixel.ts --threads 1 --dnnl on,off --repeat 3`;

const p = parseFlags("bench/pixel", Deno.args, {
  backend: { type: "string" },
  models: { type: "string" },
  presets: { type: "string" },
  "batch-size": { type: "string" },
  context: { type: "string" },
  steps: { type: "string" },
  "warmup-steps": { type: "string" },
  "cnn-chunk": { type: "string" },
  precision: { type: "string" },
  threads: { type: "string" },
  dnnl: { type: "string" },
  repeat: { type: "string" },
});
if (p.help) {
  console.log(HELP);
  Deno.exit(0);
}
const threadsFlag = num(p, "bench/pixel", "threads", 0, { min: 0, integer: true });
const info = await initBackend(str(p, "backend", "wasm") as BackendName, {
  quiet: true,
  threads: threadsFlag || undefined,
});
const dnnlModes = list(p, "dnnl", "on");
for (const d of dnnlModes) {
  if (d !== "on" && d !== "off") throw usageError(`bench/pixel: --dnnl takes on, off or on,off; got '${d}'`);
}
if (dnnlModes.includes("on") && !currentDnnl()) {
  throw usageError(`bench/pixel: --dnnl on needs oneDNN on wasm: ${dnnlStatus()}`);
}
const repeat = num(p, "bench/pixel", "repeat", 1, { min: 1, integer: true });
const models = list(p, "models", "pixel-cumsum,pixel-attn,pixel-attn-wide");
const presets = list(p, "presets", "tiny");
const batch = num(p, "bench/pixel", "batch-size", 8, { min: 1, integer: true });
const contextFlag = num(p, "bench/pixel", "context", 0, { min: 0, integer: true });
const steps = num(p, "bench/pixel", "steps", 2, { min: 1, integer: true });
const warmupSteps = num(p, "bench/pixel", "warmup-steps", 2, { min: 1, integer: true });
const chunk = num(p, "bench/pixel", "cnn-chunk", 0, { min: 0, integer: true });
const precision = str(p, "precision", "fp32") as Precision;

const rows: string[] = [];
/** ms/step per "model/preset" and oneDNN mode, over the rounds. */
const times = new Map<string, Record<string, number[]>>();
for (let round = 1; round <= repeat; round++) {
  for (const model of models) {
    for (const preset of presets) {
      for (const mode of dnnlModes) {
        setDnnlConvs(mode === "on");
        const config = resolveConfig(model, preset, { cnnChunk: chunk });
        const T = contextFlag || config.contextLength;
        const m = createModel(config, 1);
        const rng = new Rng(2);
        const ids = () =>
          tf.tensor2d(Int32Array.from({ length: batch * T }, () => rng.int(50257)), [batch, T], "int32");
        const x = ids(), y = ids();
        const vars = [...m.params.values()];
        const step = async () => {
          const { value, grads } = tf.variableGrads(() => m.loss(x, y, { precision, training: true }), vars);
          const loss = (await value.data())[0];
          for (const g of Object.values(grads)) await g.data(); // wait for the GPU to finish
          tf.dispose([value, ...Object.values(grads)]);
          return loss;
        };
        console.error(`${info.name} ${model}/${preset} oneDNN ${mode}: ${batch} x ${T} tokens ...`);
        // absolute: weights included (lib/tensor/memory.ts; tf.profile's peakBytes overflowed the call stack
        // on the study presets' hundreds of thousands of kernels)
        resetPeak();
        for (let i = 0; i < warmupSteps; i++) await step();
        const peak = peakBytes();
        const t0 = performance.now();
        let loss = 0;
        for (let i = 0; i < steps; i++) loss = await step();
        const ms = (performance.now() - t0) / steps;
        const rss = Deno.memoryUsage().rss;
        const key = `${model} | ${preset}`;
        const t = times.get(key) ?? {};
        (t[mode] ??= []).push(ms);
        times.set(key, t);
        rows.push(
          `| ${round} | ${info.name} | ${mode} | ${model} | ${preset} | ${
            (m.paramCount() / 1e6).toFixed(2)
          }M | ${(m.flopsPerToken() / 1e6).toFixed(1)}M | ` +
            `${batch}x${T} | ${ms.toFixed(0)} | ${((batch * T * 1000) / ms).toFixed(1)} | ` +
            `${(peak / 2 ** 20).toFixed(0)} | ${(rss / 2 ** 20).toFixed(0)} | ${loss.toFixed(3)} |`,
        );
        tf.dispose([x, y]);
        m.dispose();
      }
    }
  }
}
console.log(
  `${info.name} (${info.device}), precision ${precision}, cnnChunk ${
    chunk || "auto"
  }, ${warmupSteps} warm-up + ${steps} timed steps (loss + gradients)\n`,
);
console.log(
  "| round | backend | oneDNN convs | model | preset | params | FLOPs/token | batch x ctx | ms/step | tokens/s | peak tensor MiB | RSS MiB | loss |",
);
console.log("|---:|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|");
for (const r of rows) console.log(r);
if (dnnlModes.length === 2) {
  console.log("\n| model | preset | ms/step oneDNN on (median) | off (median) | speed-up on/off |");
  console.log("|---|---|---:|---:|---:|");
  for (const [key, t] of times) {
    const on = median(t.on), off = median(t.off);
    console.log(`| ${key} | ${on.toFixed(0)} | ${off.toFixed(0)} | ${(off / on).toFixed(2)}x |`);
  }
}
console.log(
  `\nload average ${loadAverage()} on ${navigator.hardwareConcurrency} cores`,
);
Deno.exit(0); // wasm worker threads would keep the process alive
