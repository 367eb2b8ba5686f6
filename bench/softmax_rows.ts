// The loss's vocabulary softmax alone on the wasm backend, per call on [rows, vocab] logits (default the
// GPT tiny eval chunk, [512, 50304]): softmaxRows (e into a new tensor), softmaxRowsAtTargets (training:
// e in place over the logits) and softmaxStatsAtTargets (evaluation: no e; on oneDNN's log-softmax where
// libdnnl is loaded, and on the wasm kernel), round-robin so that the
// machine's load hits all alike; medians in ms. LMPIPE_WASM_RELAXED=0 times the build without relaxed SIMD.
//
//   deno run -A bench/softmax_rows.ts --threads 1 --rounds 9
import { num, parseFlags } from "../lib/flags.ts";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import {
  softmaxRows,
  softmaxRowsAtTargets,
  softmaxStatsAtTargets,
} from "../lib/tensor/ops/softmax_rows/mod.ts";
import { wasmRelaxedSimd } from "../lib/tensor/wasm/kernels.ts";
import { setDnnlSoftmaxMin } from "../lib/tensor/kernel_choice.ts";
import { median, runBench } from "./common.ts";

const CMD = "bench/softmax_rows";
const HELP = `deno run -A bench/softmax_rows.ts [--threads N] [--rows N] [--vocab N] [--rounds N]`;

await runBench(async () => {
  const p = parseFlags(CMD, Deno.args, {
    threads: { type: "string" },
    rows: { type: "string" },
    vocab: { type: "string" },
    rounds: { type: "string" },
  });
  if (p.help) return console.log(HELP);
  const whole = (name: string, dflt: number, min = 1) => num(p, CMD, name, dflt, { min, integer: true });
  const threads = whole("threads", 0, 0);
  if (threads > 0) Deno.env.set("LMPIPE_WASM_THREADS", String(threads));
  const info = await initBackend("wasm", { quiet: true });
  const [rows, vocab, rounds] = [whole("rows", 512), whole("vocab", 50304), whole("rounds", 9)];
  const x = tf.mul(tf.randomNormal([rows, vocab], 0, 1, "float32", 1), 4) as tf.Tensor2D;
  const targets = tf.randomUniform([rows], 0, vocab, "int32", 2) as tf.Tensor1D;
  const variants: Record<string, () => number> = {
    "softmaxRows (e new)": () => time(() => softmaxRows(x)),
    "softmaxRowsAtTargets (e in place)": () => copied(x, (y) => softmaxRowsAtTargets(y, targets)),
    "softmaxStatsAtTargets (no e)": () => copied(x, (y) => softmaxStatsAtTargets(y, targets)),
    "the same on the wasm kernel": () => {
      const old = setDnnlSoftmaxMin(null); // oneDNN's log-softmax off
      try {
        return copied(x, (y) => softmaxStatsAtTargets(y, targets));
      } finally {
        setDnnlSoftmaxMin(old);
      }
    },
  };
  const times = new Map<string, number[]>(Object.keys(variants).map((k) => [k, []]));
  for (let r = 0; r < rounds + 1; r++) {
    for (const [name, f] of Object.entries(variants)) {
      const ms = f();
      if (r > 0) times.get(name)!.push(ms); // round 0 warms up
    }
  }
  console.log(`${info.device}; relaxed SIMD: ${wasmRelaxedSimd()}; [${rows}, ${vocab}], ${rounds} rounds`);
  for (const [name, ts] of times) {
    const ms = median(ts);
    console.log(
      `${name.padEnd(36)} ${ms.toFixed(2).padStart(8)} ms  ${
        (ms * 1e6 / (rows * vocab)).toFixed(3)
      } ns/logit`,
    );
  }
});

/**
 * Wall time of `f` on a copy of `x` (the in-place variants write over their input; tf.clone would share the
 * buffer), the copy made outside the timing (a wasm op is done when it returns; reading the copy back would
 * leave a 100 MB array for the garbage collector to free inside the next timing). e may be the copy's
 * buffer: both are disposed.
 */
function copied(x: tf.Tensor2D, f: (y: tf.Tensor2D) => { m: tf.Tensor }): number {
  const y = tf.mul(x, 1) as tf.Tensor2D;
  const ms = time(() => f(y));
  y.dispose();
  return ms;
}

/** Wall time of one call, its outputs read back (synchronous on wasm) and disposed. */
function time(f: () => { m: tf.Tensor }): number {
  const t0 = performance.now();
  const out = f();
  out.m.dataSync();
  const ms = performance.now() - t0;
  tf.dispose(Object.values(out));
  return ms;
}
