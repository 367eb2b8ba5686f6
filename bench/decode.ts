// Where a cached decoding step's time goes (what `lmpipe sample` does per token): the model's step
// (decodeStep: embedding, the blocks against their key/value caches, the output head), reading the
// logits back to the host, and choosing the token (top-k on the host). Also the TF.js kernels one step
// runs, by name, from tf.profile: the per-op engine cost is most of a small model's token.
//
//   deno run -A bench/decode.ts [--model gpt] [--preset tiny] [--n-layer 4] [--n-head 4] [--n-embd 128]
//        [--context 128] [--tokens 100] [--rounds 3] [--threads 1] [--top-k 200]
import { num, parseFlags, str } from "../lib/flags.ts";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { chooseToken } from "../pipelines/sample/generate.ts";
import { Rng } from "../lib/rng.ts";

const HELP = `deno run -A bench/decode.ts [flags]

  --model M      model family (default gpt)
  --preset P     preset (default tiny)
  --n-layer N, --n-head N, --n-embd N, --context N
                 gpt overrides (default: issue 17's T shape, 4 layers x 128 wide, context 128)
  --tokens N     tokens generated per round after a one-token prompt (default 100; at most context - 1)
  --rounds N     timed rounds after one warm-up round (default 3)
  --threads N    wasm threads (default 1)
  --top-k K      top-k of the sampling (default 200)

Example: deno run -A bench/decode.ts --threads 1 --tokens 100 --rounds 3`;

const CMD = "bench/decode";
const p = parseFlags(CMD, Deno.args, {
  model: { type: "string" },
  preset: { type: "string" },
  "n-layer": { type: "string" },
  "n-head": { type: "string" },
  "n-embd": { type: "string" },
  context: { type: "string" },
  tokens: { type: "string" },
  rounds: { type: "string" },
  threads: { type: "string" },
  "top-k": { type: "string" },
});
if (p.help) {
  console.log(HELP);
  Deno.exit(0);
}
const whole = (name: string, dflt: number) => num(p, CMD, name, dflt, { min: 1, integer: true });
const family = str(p, "model", "gpt");
const overrides: Record<string, number> = family === "gpt"
  ? {
    nLayer: whole("n-layer", 4),
    nHead: whole("n-head", 4),
    nEmbd: whole("n-embd", 128),
    contextLength: whole("context", 128),
  }
  : {};
const info = await initBackend("wasm", { quiet: true, threads: whole("threads", 1) });
const model = createModel(resolveConfig(family, str(p, "preset", "tiny"), overrides), 1);
const T = model.config.contextLength;
const tokens = Math.min(whole("tokens", 100), T - 1), rounds = whole("rounds", 3);
const sampling = { temperature: 1, topK: whole("top-k", 200), topP: 1, allowedVocab: 50257 };

/** One generation of `n` tokens; the summed time of each part, in ms. */
async function generate(n: number, rng: Rng) {
  const state = model.startDecode(1);
  const ms = { step: 0, read: 0, choose: 0 };
  let tok = 198;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const input = tf.tensor1d([tok], "int32");
    const logits = model.decodeStep(state, input);
    input.dispose();
    const t1 = performance.now();
    const row = await logits.data() as Float32Array;
    logits.dispose();
    const t2 = performance.now();
    tok = chooseToken(row, sampling, rng);
    ms.step += t1 - t0, ms.read += t2 - t1, ms.choose += performance.now() - t2;
  }
  state.dispose();
  return ms;
}

console.log(`${family} ${JSON.stringify(overrides)}, ${info.device}; ${tokens} tokens per round`);
const rng = new Rng(3);
await generate(4, rng);
for (let r = 1; r <= rounds; r++) {
  const ms = await generate(tokens, rng);
  const total = ms.step + ms.read + ms.choose;
  const per = (v: number) => (v / tokens).toFixed(2);
  console.log(
    `round ${r}: ${(1000 * tokens / total).toFixed(0)} tok/s; per token: step ${per(ms.step)} ms, ` +
      `read ${per(ms.read)} ms, choose ${per(ms.choose)} ms`,
  );
}

// the kernels of one step halfway into the context
const state = model.startDecode(1);
for (let i = 0; i < Math.floor(T / 2); i++) {
  const input = tf.tensor1d([198], "int32");
  model.decodeStep(state, input).dispose();
  input.dispose();
}
const input = tf.tensor1d([198], "int32");
const profile = await tf.profile(async () => {
  const logits = model.decodeStep(state, input);
  await logits.data();
  logits.dispose();
});
input.dispose(), state.dispose();
const byName = new Map<string, { count: number; ms: number }>();
for (const k of profile.kernels) {
  const e = byName.get(k.name) ?? { count: 0, ms: 0 };
  e.count++, e.ms += Number(k.kernelTimeMs) || 0;
  byName.set(k.name, e);
}
console.log(
  `\none step at position ${Math.floor(T / 2)}: ${profile.kernels.length} kernels (tf.profile times)`,
);
for (const [name, e] of [...byName].sort((a, b) => b[1].ms - a[1].ms)) {
  console.log(`  ${name.padEnd(20)} x${String(e.count).padEnd(4)} ${e.ms.toFixed(2)} ms`);
}
const head = profile.kernels.find((k) =>
  k.name === "BatchMatMul" && k.inputShapes[1]?.[1] === model.config.vocabSize
);
if (head) {
  console.log(
    `  of which the output head ${JSON.stringify(head.inputShapes)}: ${
      Number(head.kernelTimeMs).toFixed(2)
    } ms`,
  );
}
model.dispose();
