// Where a cached decoding step's time goes (what `lmpipe sample` does per token), for both ways lmpipe
// runs it on wasm, alternating in one process: the op chain (decodeStep: embedding, the blocks against
// their key/value caches, the output head as TF.js ops, then the logits read back) and lmpipe's wasm
// step (lib/models/gpt_decode.ts: direct kernel calls, logits left on the heap). Per token: the model's
// step, reading the logits, choosing the token (top-k on the host). Then the cost of one step at an early
// and a late position (flat in the context?), the floor the output head sets (it reads the whole
// [vocab, C] float32 matrix every token: the memory bandwidth of a streaming read, measured here), and
// the TF.js kernels of one op-chain step (tf.profile). The wasm step runs twice: reading the whole float32
// head, and with the bounded integer head for the sampling's top k (lib/models/gpt_decode_head.ts; built
// at a decode's first step, inside that round's time).
//
//   deno run -A bench/decode.ts [--model gpt] [--preset tiny] [--n-layer 4] [--n-head 4] [--n-embd 128]
//        [--context 128] [--tokens 100] [--rounds 3] [--threads 1] [--top-k 200] [--paths a,b]
import { list, num, parseFlags, str } from "../lib/flags.ts";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { chooseToken, topKNeed } from "../pipelines/sample/generate.ts";
import { Rng } from "../lib/rng.ts";
import {
  blasForGemv,
  kernelFor,
  setDecodeInt16Head,
  setGemvBlasMinWork,
  setWasmDecodeEnabled,
} from "../lib/tensor/kernel_choice.ts";
import { Int16Head } from "../lib/models/gpt_decode_head.ts";
import { currentBlas } from "../lib/native/blas.ts";
import { HeapView } from "../lib/tensor/ops/gemv/wasm.ts";
import { runRows } from "../lib/tensor/wasm/kernels.ts";
import { KIND } from "../lib/tensor/wasm/kernel_calls.ts";
import { median } from "./common.ts";

const HELP = `deno run -A bench/decode.ts [flags]

  --model M      model family (default gpt)
  --preset P     preset (default tiny)
  --n-layer N, --n-head N, --n-embd N, --context N
                 gpt overrides (default: issue 17's T shape, 4 layers x 128 wide, context 128)
  --tokens N     tokens generated per round after a one-token prompt (default 100; at most context - 1)
  --rounds N     timed rounds after one warm-up round (default 3)
  --threads N    wasm threads (default 1)
  --top-k K      top-k of the sampling (default 200)
  --paths LIST   which ways to run, of: op-chain, wasm-f32, wasm-int16 (default all three)
  --gemv-blas-min N
                 the wasm step's one-row products of at least N multiply-adds go to BLAS's sgemv
                 (default: the rule's, kernel_choice.ts gemv row; 0 = all, when a BLAS library is loaded)

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
  "gemv-blas-min": { type: "string" },
  paths: { type: "string" },
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
if (str(p, "gemv-blas-min") !== undefined) setGemvBlasMinWork(num(p, CMD, "gemv-blas-min", 0, { min: 0 }));
const info = await initBackend("wasm", { quiet: true, threads: whole("threads", 1) });
const model = createModel(resolveConfig(family, str(p, "preset", "tiny"), overrides), 1);
const T = model.config.contextLength;
const tokens = Math.min(whole("tokens", 100), T - 1), rounds = whole("rounds", 3);
const sampling = { temperature: 1, topK: whole("top-k", 200), topP: 1, allowedVocab: 50257 };

/** Each way to run a step: the wasm step or the op chain, the bounded integer head or the float32 one. */
const ALL_PATHS = {
  "op-chain": { wasm: false, int16: false },
  "wasm-f32": { wasm: true, int16: false },
  "wasm-int16": { wasm: true, int16: true },
} as const;
type Path = keyof typeof ALL_PATHS;
const PATHS = list(p, "paths", Object.keys(ALL_PATHS).join(",")) as Path[];
for (const path of PATHS) {
  if (!(path in ALL_PATHS)) {
    throw new Error(`${CMD}: --paths: '${path}' is none of ${Object.keys(ALL_PATHS).join(", ")}`);
  }
}
const need = topKNeed(sampling, model.config.vocabSize);

/** A fresh decode on `path`. */
function start(path: Path) {
  setWasmDecodeEnabled(ALL_PATHS[path].wasm);
  setDecodeInt16Head(ALL_PATHS[path].int16);
  return model.startDecode(1);
}

/** Feeds `tok` to `state` and returns the logits row: the step's time and the read's, in ms. */
async function stepAndRead(state: ReturnType<typeof start>, tok: number) {
  const t0 = performance.now();
  if (state.stepOnHost) {
    const row = state.stepOnHost(tok, need);
    return { row, step: performance.now() - t0, read: 0 }; // the logits are a view of the heap: no read
  }
  const input = tf.tensor1d([tok], "int32");
  const logits = model.decodeStep(state, input);
  input.dispose();
  const t1 = performance.now();
  const row = await logits.data() as Float32Array;
  logits.dispose();
  return { row, step: t1 - t0, read: performance.now() - t1 };
}

/** One generation of `n` tokens on `path`; the summed time of each part, in ms. */
async function generate(path: Path, n: number, rng: Rng) {
  const state = start(path);
  const ms = { step: 0, read: 0, choose: 0 };
  let tok = 198;
  for (let i = 0; i < n; i++) {
    const { row, step, read } = await stepAndRead(state, tok);
    const t2 = performance.now();
    tok = chooseToken(row, sampling, rng, state.blockMaxima?.());
    ms.step += step, ms.read += read, ms.choose += performance.now() - t2;
  }
  state.dispose();
  return ms;
}

/** The median time of one step (model + read) at position `pos` over `reps` fresh decodes. */
async function stepAt(path: Path, pos: number, reps: number): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const state = start(path);
    for (let i = 0; i < pos; i++) await stepAndRead(state, 198);
    const { step, read } = await stepAndRead(state, 198);
    times.push(step + read);
    state.dispose();
  }
  return median(times);
}

console.log(
  `${family} ${JSON.stringify(overrides)}, ${info.device}; ${tokens} tokens per round; the wasm step's ` +
    `output head by ${
      blasForGemv(model.config.vocabSize * (model.config.nEmbd as number))
        ? "BLAS sgemv"
        : "lmpipe's gemv kernel"
    }`,
);
console.log(
  `the bounded integer head: ${
    kernelFor("decodeHead", "wasm", model.config.vocabSize * (model.config.nEmbd as number))
  } by the rule when on; top-k ${sampling.topK}`,
);
const rng = new Rng(3);
// warm-up: enough tokens for the JIT to optimize each path's host code (4 left the first round slow)
for (const path of PATHS) await generate(path, Math.min(tokens, 30), rng);
const rates = Object.fromEntries(PATHS.map((path) => [path, [] as number[]])) as Record<Path, number[]>;
for (let r = 1; r <= rounds; r++) {
  for (const path of PATHS) {
    const ms = await generate(path, tokens, rng);
    const total = ms.step + ms.read + ms.choose;
    const per = (v: number) => (v / tokens).toFixed(3);
    rates[path].push(1000 * tokens / total);
    console.log(
      `round ${r} ${path.padEnd(9)}: ${(1000 * tokens / total).toFixed(0).padStart(5)} tok/s; per token: ` +
        `model ${per(ms.step)} ms, read ${per(ms.read)} ms, choose ${per(ms.choose)} ms`,
    );
  }
}
for (const [a, b] of [["wasm-f32", "op-chain"], ["wasm-int16", "wasm-f32"]] as [Path, Path][]) {
  if (!rates[a] || !rates[b]) continue;
  const ratios = rates[a].map((w, i) => w / rates[b][i]);
  console.log(`${a} / ${b} tokens/s, per round: ${ratios.map((x) => x.toFixed(2)).join(" ")}`);
}

const early = 10, late = Math.min(120, T - 1);
for (const path of PATHS) {
  const reps = path === "op-chain" ? 5 : 20;
  const [a, b] = [await stepAt(path, early, reps), await stepAt(path, late, reps)];
  console.log(
    `${path}: one step (model + read) at position ${early}: ${a.toFixed(3)} ms, at ${late}: ${
      b.toFixed(3)
    } ms`,
  );
}

// The floor: the head's matrix streamed once per token. Timed on the model's own head (V x C float32)
// and on a 256 MiB buffer that no cache holds, by lmpipe's gemv_rows kernel and by BLAS's sgemv.
{
  const V = model.config.vocabSize, C = model.config.nEmbd as number;
  const heap = new HeapView(tf.backend());
  const big = tf.zeros([1 << 26]),
    x = tf.randomNormal([C], 0, 1, "float32", 5),
    y = tf.zeros([(1 << 26) / C]);
  const off = (t: tf.Tensor) => (tf.backend() as any).dataIdMap.get(t.dataId).memoryOffset as number;
  const head = model.params.get("transformer.wte.weight")!;
  const blas = currentBlas();
  const gbps = (bytes: number, run: () => void, reps: number) => {
    run();
    const times: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      run();
      times.push(performance.now() - t0);
    }
    return { ms: median(times), gbs: bytes / median(times) / 1e6 };
  };
  const rows = (a: number, R: number) => () => heap.kernels.gemv_rows(a, C, off(x), off(y), 0, R, C);
  const sgemv = (a: number, R: number) => () =>
    blas!.sgemm(heap.memory.buffer, false, true, 1, R, C, off(x), a, off(y));
  const report = (what: string, r: { ms: number; gbs: number }) =>
    console.log(`  ${what.padEnd(44)} ${r.ms.toFixed(3)} ms, ${r.gbs.toFixed(1)} GB/s`);
  const headBytes = 4 * V * C, bigRows = (1 << 26) / C;
  console.log(`\nthe head's floor: ${(headBytes / 1e6).toFixed(1)} MB read per token`);
  const h1 = gbps(headBytes, rows(off(head), V), 30);
  report("head, gemv_rows kernel (1 thread)", h1);
  if (info.threads && info.threads > 1) {
    const shared = () => runRows(tf.backend(), [KIND.gemvRows, off(head), C, off(x), off(y), C], V, C);
    report(`head, gemv_rows kernel shared by ${info.threads} threads`, gbps(headBytes, shared, 30));
  }
  const b1 = gbps(4 * (1 << 26), rows(off(big), bigRows), 5);
  report("256 MiB streaming read, gemv_rows kernel", b1);
  if (blas) {
    report(`head, BLAS sgemv (${info.threads} thread(s))`, gbps(headBytes, sgemv(off(head), V), 30));
    report("256 MiB streaming read, BLAS sgemv", gbps(4 * (1 << 26), sgemv(off(big), bigRows), 5));
  }
  // the bounded head: its build (once per decode) and its bound pass over every row (its read of the head)
  const builds: number[] = [];
  let bh: Int16Head | null = null;
  for (let r = 0; r < 5; r++) {
    bh?.dispose();
    const t0 = performance.now();
    bh = new Int16Head(heap, off(head), V, C);
    builds.push(performance.now() - t0);
  }
  console.log(`  ${"int16 head: build (once per decode)".padEnd(44)} ${median(builds).toFixed(3)} ms`);
  const nVocab = Math.min(V, sampling.allowedVocab);
  const hb = gbps(2 * nVocab * C, () => bh!.candidates(off(x), sampling.topK, nVocab), 30);
  report(`int16 head: bounds + top-${sampling.topK} candidates`, hb);
  bh!.dispose();
  console.log(
    `  => f32 head alone: at most ${(1000 / h1.ms).toFixed(0)} tokens/s at the head's measured rate, ` +
      `${(b1.gbs * 1e9 / headBytes).toFixed(0)} tokens/s at the streaming rate`,
  );
  big.dispose(), x.dispose(), y.dispose();
}

setWasmDecodeEnabled(false);
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
