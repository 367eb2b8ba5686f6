// What oneDNN's bf16 convolutions buy under --precision bf16 (lib/tensor/ops/conv2d/dnnl.ts, docs/precision.md):
// for each image model and preset, a step (loss + gradients of every parameter, as bench/pixel.ts) under
// three settings, alternated round by round in one process: fp32 (oneDNN's float32 convs), bf16 with the
// bf16 convs, and bf16 with them off (oneDNN's float32 convs on the emulation's rounded values). Prints per
// setting the median whole-step ms and the ms spent in the three conv kernels (Conv2D and both gradients,
// timed around the kernel, oneDNN's reorders included), and the ratios against bf16 with the convs off.
//
//   deno run -A bench/bf16_conv.ts [--models pixel-attn,pixel-attn-wide] [--presets tiny,small]
//        [--batch-size 8] [--steps 2] [--repeat 3] [--threads 1]
import { list, num, parseFlags } from "../lib/flags.ts";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { Rng } from "../lib/rng.ts";
import { usageError } from "../lib/errors.ts";
import { loadAverage, median } from "./common.ts";
import { currentDnnl, dnnlStatus } from "../lib/native/dnnl.ts";
import { setDnnlBf16Convs } from "../lib/tensor/kernel_choice.ts";

const HELP = `deno run -A bench/bf16_conv.ts [flags]

  --models L       comma-separated image models (default pixel-attn,pixel-attn-wide)
  --presets L      presets (default tiny,small)
  --batch-size N   sequences per step (default 8)
  --steps N        timed steps per setting and round, after one untimed warm-up step (default 2)
  --repeat N       rounds over the three settings (default 3)
  --threads N      wasm threads; oneDNN and OpenBLAS get the same count (default 1)

Example: flock /tmp/lmpipe-bench.lock deno run -A bench/bf16_conv.ts --presets tiny --repeat 3`;

const CMD = "bench/bf16_conv";
const p = parseFlags(CMD, Deno.args, {
  models: { type: "string" },
  presets: { type: "string" },
  "batch-size": { type: "string" },
  steps: { type: "string" },
  repeat: { type: "string" },
  threads: { type: "string" },
});
if (p.help) {
  console.log(HELP);
  Deno.exit(0);
}
const whole = (name: string, dflt: number) => num(p, CMD, name, dflt, { min: 1, integer: true });
const info = await initBackend("wasm", { quiet: true, threads: whole("threads", 1) });
const dnnl = currentDnnl();
if (!dnnl) throw usageError(`${CMD}: needs oneDNN on wasm: ${dnnlStatus()}`);
if (!dnnl.bf16) console.error(`${CMD}: ${dnnl.label}: the bf16 setting will run float32 convs`);
const [batch, steps, repeat] = [whole("batch-size", 8), whole("steps", 2), whole("repeat", 3)];

// Time spent in the conv kernels: wrap the wasm backend's registered Conv2D family (oneDNN's wrappers).
let convMs = 0;
for (const name of [tf.Conv2D, tf.Conv2DBackpropInput, tf.Conv2DBackpropFilter]) {
  const k = tf.getKernel(name, "wasm");
  if (!k) continue;
  const inner = k.kernelFunc;
  tf.unregisterKernel(name, "wasm");
  tf.registerKernel({
    ...k,
    kernelFunc: (args) => {
      const t0 = performance.now();
      const out = inner(args);
      convMs += performance.now() - t0;
      return out;
    },
  });
}

const SETTINGS = [
  { name: "fp32", precision: "fp32", bf16Convs: false },
  { name: "bf16, bf16 convs", precision: "bf16", bf16Convs: true },
  { name: "bf16, fp32 convs", precision: "bf16", bf16Convs: false },
] as const;

/** Per "model | preset", per setting: whole-step ms and conv ms of every timed step. */
const times = new Map<string, Record<string, { step: number[]; conv: number[]; bf16Share: number }>>();
for (let round = 1; round <= repeat; round++) {
  for (const model of list(p, "models", "pixel-attn,pixel-attn-wide")) {
    for (const preset of list(p, "presets", "tiny,small")) {
      const config = resolveConfig(model, preset);
      const T = config.contextLength;
      const m = createModel(config, 1);
      const rng = new Rng(2);
      const ids = () =>
        tf.tensor2d(Int32Array.from({ length: batch * T }, () => rng.int(50257)), [batch, T], "int32");
      const x = ids(), y = ids();
      const vars = [...m.params.values()];
      const key = `${model} | ${preset}`;
      const byKey = times.get(key) ?? {};
      times.set(key, byKey);
      for (const s of SETTINGS) {
        setDnnlBf16Convs(s.bf16Convs);
        const step = () => {
          const { value, grads } = tf.variableGrads(
            () => m.loss(x, y, { precision: s.precision, training: true }),
            vars,
          );
          value.dataSync();
          tf.dispose([value, ...Object.values(grads)]);
        };
        console.error(`round ${round}: ${model}/${preset} ${s.name}: ${batch} x ${T} tokens ...`);
        step(); // warm-up: primitives built, heap grown
        const r = byKey[s.name] ??= { step: [], conv: [], bf16Share: 0 };
        const [calls, bf16Calls] = [dnnl.calls, dnnl.bf16Calls];
        for (let i = 0; i < steps; i++) {
          convMs = 0;
          const t0 = performance.now();
          step();
          r.step.push(performance.now() - t0);
          r.conv.push(convMs);
        }
        r.bf16Share = (dnnl.bf16Calls - bf16Calls) / Math.max(1, dnnl.calls - calls);
      }
      setDnnlBf16Convs(true);
      tf.dispose([x, y]);
      m.dispose();
    }
  }
}
console.log(
  `wasm (${info.device}), batch ${batch}, ${repeat} rounds x ${steps} timed steps (loss + gradients), medians\n`,
);
console.log(
  "| model | preset | setting | bf16 share of oneDNN calls | ms/step | conv ms/step | step speed-up vs bf16 + fp32 convs | conv speed-up |",
);
console.log("|---|---|---|---:|---:|---:|---:|---:|");
for (const [key, byName] of times) {
  const base = byName["bf16, fp32 convs"];
  for (const s of SETTINGS) {
    const r = byName[s.name];
    const [st, cv] = [median(r.step), median(r.conv)];
    console.log(
      `| ${key} | ${s.name} | ${(100 * r.bf16Share).toFixed(0)}% | ${st.toFixed(0)} | ${cv.toFixed(0)} | ${
        (median(base.step) / st).toFixed(2)
      }x | ${(median(base.conv) / cv).toFixed(2)}x |`,
    );
  }
}
console.log(
  `\nload average ${loadAverage()} on ${navigator.hardwareConcurrency} cores`,
);
Deno.exit(0); // wasm worker threads would keep the process alive
