// The decoding step's bounded 16-bit integer head (lib/models/gpt_decode_head.ts) against the whole float32
// head: the same tokens and the same chosen logits, bit for bit, over more than a full context (the
// stepper's restart included) for two shapes, several seeds, top-k 1, 5 and 200, greedy and with
// temperature and top-p; a head built so that rounding its weights reorders its top k (which a bound 100x
// too small gets wrong); the fallbacks (no top-k, too many candidates, the switch); and the two kernels
// against float64 (the quantization, the row statistics, lo <= z <= hi).
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { Gpt, GPT_PRESETS } from "../lib/models/gpt.ts";
import { kernelFor, setDecodeInt16Head, setGemvBlasMinWork } from "../lib/tensor/kernel_choice.ts";
import { HeapView } from "../lib/tensor/ops/gemv/wasm.ts";
import { randomArray } from "../lib/tensor/testing.ts";
import { cachedStepper, chooseToken, type SamplingOptions, topKNeed } from "../pipelines/sample/generate.ts";
import { Int16Head, quantLevels, setBoundScaleForTests } from "../lib/models/gpt_decode_head.ts";
import { topKIds } from "../lib/top_k.ts";
import { Rng } from "../lib/rng.ts";
import { run as sample_ } from "../pipelines/sample/mod.ts";

import { offset, randomizeWeights } from "./helpers_gpt.ts";
import { saveUntrainedRun } from "./helpers_run.ts";

await initBackend("wasm", { quiet: true });
// the bounded head needs the head on lmpipe's gemv kernel (with BLAS threads it goes to sgemv)
setGemvBlasMinWork(Infinity);

interface Run {
  tokens: number[];
  /** The chosen token's logit after each step. */
  chosen: number[];
  /** The top-k candidates' ids after each step (empty without top-k). */
  ids: number[][];
  /** Steps whose logits held -Infinity: where the bounded head answered. */
  bounded: number;
}

/** Asserts a and b equal, naming the first step where they differ (assert's diff of long arrays is slow). */
function sameSteps(a: unknown[], b: unknown[], what: string): void {
  const i = a.findIndex((x, j) => JSON.stringify(x) !== JSON.stringify(b[j]));
  assert.ok(a.length === b.length && i < 0, `${what}: first differs at step ${i}`);
}

/** `steps` tokens sampled by cachedStepper with or without the bounded head. */
async function sample(
  model: Gpt,
  o: SamplingOptions,
  seed: number,
  steps: number,
  int16: boolean,
): Promise<Run> {
  setDecodeInt16Head(int16);
  const V = model.config.vocabSize;
  const stepper = cachedStepper(model, topKNeed(o, V));
  const rng = new Rng(seed), tokens = [seed % V];
  const run: Run = { tokens: [], chosen: [], ids: [], bounded: 0 };
  try {
    for (let i = 0; i < steps; i++) {
      const logits = await stepper.next(tokens);
      if (logits.includes(-Infinity)) run.bounded++;
      const id = chooseToken(logits, o, rng, stepper.blockMaxima?.());
      const need = topKNeed(o, V);
      if (need) run.ids.push(topKIds(logits, need.n, need.k));
      tokens.push(id), run.tokens.push(id), run.chosen.push(logits[id]);
    }
  } finally {
    stepper.dispose();
    setDecodeInt16Head(true);
  }
  return run;
}

const SHAPES = {
  "tied head, GPT-2's vocabulary": { nLayer: 2, nHead: 2, nEmbd: 64, contextLength: 16 },
  "untied head without biases, 1000 tokens": {
    nLayer: 1,
    nHead: 4,
    nEmbd: 32,
    contextLength: 24,
    bias: false,
    tie: false,
    vocabSize: 1000,
  },
};

const SAMPLINGS: [string, Omit<SamplingOptions, "allowedVocab">][] = [
  ["greedy", { temperature: 0, topK: 200, topP: 1 }],
  ["top-k 1", { temperature: 1, topK: 1, topP: 1 }],
  ["top-k 5, temperature 0.7", { temperature: 0.7, topK: 5, topP: 1 }],
  ["top-k 200, temperature 1.3, top-p 0.9", { temperature: 1.3, topK: 200, topP: 0.9 }],
];

for (const [name, shape] of Object.entries(SHAPES)) {
  Deno.test(`int16 head = float32 head: ${name}: tokens and chosen logits over 1.5 contexts`, async () => {
    const model = new Gpt({ ...GPT_PRESETS.tiny, ...shape }, 7);
    randomizeWeights(model, 40);
    assert.equal(kernelFor("decodeHead", "wasm", model.config.vocabSize * shape.nEmbd), "int16");
    const steps = Math.floor(1.5 * shape.contextLength);
    try {
      for (const [what, s] of SAMPLINGS) {
        for (const seed of [1, 2, 3]) {
          const o = { ...s, allowedVocab: 50257 };
          const want = await sample(model, o, seed, steps, false),
            got = await sample(model, o, seed, steps, true);
          assert.equal(want.bounded, 0);
          assert.equal(got.bounded, steps, `${what}, seed ${seed}: every step bounded`);
          sameSteps(got.tokens, want.tokens, `${what}, seed ${seed}: tokens`);
          sameSteps(got.chosen, want.chosen, `${what}, seed ${seed}: chosen logits`);
          sameSteps(got.ids, want.ids, `${what}, seed ${seed}: top-k ids`);
        }
      }
    } finally {
      model.dispose();
    }
  });
}

/**
 * A 1000-token model whose logits are sums of 32 weights (ln_f's gain 0, bias 1: the head's input is all
 * ones whatever the tokens), each row with one weight of 1 that sets its integer step to 1 / Q. 600 rows
 * lie on levels 0-60 of 32 steps plus a fraction of a step drawn per weight; above them, 200 rows "A" with
 * every other weight a little under half a step above the top level (rounded down: float32 sums 12-15 steps
 * above it, integer sums 0) and 200 rows "B" with half of them a little over half a step above it (rounded
 * up: float32 sums 8-10 steps, integer sums 16). The true top 1, 5 and 200 are A rows, the integer sums'
 * are B rows: only the bound keeps the A rows.
 */
function adversarialModel(): Gpt {
  const C = 32, V = 1000;
  const model = new Gpt(
    { ...GPT_PRESETS.tiny, nLayer: 1, nHead: 2, nEmbd: C, contextLength: 12, tie: false, vocabSize: V },
    3,
  );
  const rng = new Rng(17), step = 1 / quantLevels(C);
  const w = new Float32Array(V * C);
  for (let i = 0; i < V; i++) {
    const level = Math.floor(rng.next() * 61), m = (i - 600) % 200;
    w[i * C] = 1;
    for (let j = 1; j < C; j++) {
      const above = i < 600
        ? level + rng.next()
        : i < 800
        ? 0.49 - 0.0005 * m
        : j < 17
        ? 0.51 + 0.0005 * m
        : 0;
      w[i * C + j] = (i < 600 ? 0 : 61 * step) + above * step;
    }
  }
  const set = (name: string, v: Float32Array) => {
    const p = model.params.get(name)!;
    tf.tidy(() => p.assign(tf.tensor(v, p.shape)));
  };
  set("lm_head.weight", w);
  set("transformer.ln_f.weight", new Float32Array(C));
  set("transformer.ln_f.bias", new Float32Array(C).fill(1));
  return model;
}

Deno.test("int16 head: a head whose rounding to integers reorders the top k gives the float32 tokens", async () => {
  const model = adversarialModel();
  try {
    for (const topK of [1, 5, 200]) {
      const o = { temperature: 1, topK, topP: 1, allowedVocab: 1000 };
      const want = await sample(model, o, 5, 10, false);
      const got = await sample(model, o, 5, 10, true);
      assert.equal(got.bounded, 10, `top-k ${topK}: bounded, not all candidates`);
      sameSteps(got.ids, want.ids, `top-k ${topK}: ids`);
      sameSteps(got.tokens, want.tokens, `top-k ${topK}: tokens`);
      // the case has teeth: with every bound at 1% some true top-k id is missed
      const old = setBoundScaleForTests(0.01);
      try {
        const bad = await sample(model, o, 5, 10, true);
        assert.notEqual(
          JSON.stringify(bad.ids),
          JSON.stringify(want.ids),
          `top-k ${topK}: a bound 100x too small is caught`,
        );
      } finally {
        setBoundScaleForTests(old);
      }
    }
  } finally {
    model.dispose();
  }
});

Deno.test("int16 head: every logit in float32 without top-k, with too many candidates, or switched off", async () => {
  const model = new Gpt({ ...GPT_PRESETS.tiny, nLayer: 1, nHead: 2, nEmbd: 32, contextLength: 8 }, 2);
  randomizeWeights(model, 9);
  try {
    const V = model.config.vocabSize;
    for (const topK of [0, 50257, 60000]) {
      const o = { temperature: 1, topK, topP: 1, allowedVocab: 50257 };
      assert.equal(topKNeed(o, V), undefined, `top-k ${topK}: the whole distribution`);
      const want = await sample(model, o, 4, 6, false), got = await sample(model, o, 4, 6, true);
      assert.equal(got.bounded, 0);
      assert.deepEqual(got.tokens, want.tokens);
    }
    assert.deepEqual(topKNeed({ temperature: 0, topK: 0, topP: 1, allowedVocab: 50257 }, V), {
      k: 1,
      n: 50257,
    });
    // a head of equal rows: every row a candidate, more than MAX_CANDIDATES: the whole float32 head
    const head = model.params.get("transformer.wte.weight")!;
    tf.tidy(() => head.assign(tf.fill(head.shape, 0.01)));
    const o = { temperature: 1, topK: 5, topP: 1, allowedVocab: 50257 };
    const got = await sample(model, o, 4, 3, true);
    assert.equal(got.bounded, 0, "too many candidates: no -Infinity");
    setDecodeInt16Head(false);
    assert.equal(kernelFor("decodeHead", "wasm", V * 32), "f32");
  } finally {
    setDecodeInt16Head(true);
    model.dispose();
  }
});

Deno.test("q16_head and gemv_bound_q16 kernels = float64: integers, row sums, lo <= z <= hi", () => {
  const R = 300, C = 40, Q = quantLevels(C), heap = new HeapView(tf.backend());
  // rows of mixed magnitudes (a wide exponent range per row), a row of zeros, an input with one large entry
  const w = randomArray(R * C, 3).map((x, i) => x * 2 ** ((i % 7) * 3 - 9));
  w.fill(0, 10 * C, 11 * C);
  const a = tf.tensor(w), x = tf.tensor(randomArray(C, 4).map((v, j) => (j === 5 ? 40 : v)));
  const out = tf.zeros([R * C / 2]), prm = tf.zeros([4 * R]), stats = tf.zeros([4 * R]), z = tf.zeros([R]);
  heap.kernels.q16_head(offset(a), offset(out), offset(prm), offset(stats), 3, R, C, Q); // rows 3.. only
  const q = new Int16Array(heap.memory.buffer, offset(out), R * C);
  const f = heap.f32, P = f.slice(offset(prm) >> 2, (offset(prm) >> 2) + 4 * R);
  const st = f.slice(offset(stats) >> 2, (offset(stats) >> 2) + 4 * R);
  for (let i = 3; i < R; i++) {
    let mx = 0;
    for (let j = 0; j < C; j++) mx = Math.max(mx, Math.abs(w[i * C + j]));
    const s = P[4 * i], sums = [0, 0, 0, 0];
    let dw = 0; // sum |d| (|w| + |d|): what rounding d = w - s q in float32 may move the sums by, over u
    assert.equal(s, mx === 0 ? 1 : Math.fround(mx / Q), `row ${i}: scale`);
    for (let j = 0; j < C; j++) {
      const v = w[i * C + j], d = v - s * q[i * C + j];
      assert.ok(
        Math.abs(q[i * C + j]) <= Q && Math.abs(d) <= 0.5001 * s,
        `row ${i}, column ${j}: ${q[i * C + j]}`,
      );
      sums[0] += Math.abs(d), sums[1] += d * d, sums[2] += Math.abs(v), sums[3] += v * v;
      dw += Math.abs(d) * (Math.abs(v) + Math.abs(d));
    }
    const u = 2 ** -24, slack = [4 * u * (sums[2] + sums[0]), 8 * u * dw, 0, 0];
    for (let k = 0; k < 4; k++) {
      const err = Math.abs(st[4 * i + k] - sums[k]);
      assert.ok(err <= 1e-5 * sums[k] + slack[k] + 1e-30, `row ${i}, statistic ${k}`);
    }
  }
  const head = new Int16Head(heap, offset(a), R, C);
  assert.ok(head.usable());
  heap.kernels.gemv_rows(offset(a), C, offset(x), offset(z), 0, R, C);
  const Z = heap.f32.slice(offset(z) >> 2, (offset(z) >> 2) + R);
  for (const k of [1, 10, 299]) {
    const ids = head.candidates(offset(x), k, R);
    assert.ok(ids !== null);
    const { lo, hi } = head.bounds(R);
    for (let i = 0; i < R; i++) {
      assert.ok(lo[i] <= Z[i] && Z[i] <= hi[i], `row ${i}: ${lo[i]} <= ${Z[i]} <= ${hi[i]}`);
      const S = w.subarray(i * C, (i + 1) * C).reduce((acc, v) => acc + Math.abs(v), 0);
      assert.ok(
        hi[i] - lo[i] <= 2e-3 * 40 * S + 1e-20,
        `row ${i}: a bound of the order of max|h| sum|w| / Q`,
      );
    }
    const kth = [...Z].sort((p, q) => q - p)[k - 1];
    for (let i = 0; i < R; i++) if (Z[i] >= kth) assert.ok(ids.includes(i), `k ${k}: row ${i} kept`);
    if (k === 1) assert.ok(ids.length < R / 2, `k 1: ${ids.length} candidates of ${R}`);
  }
  head.dispose();
  tf.dispose([a, x, out, prm, stats, z]);
});

Deno.test("gemv_bound_q16: the input's rounding to integers is inside the bound (weights exactly integers)", () => {
  const R = 64, C = 40, Q = quantLevels(C), heap = new HeapView(tf.backend()), rng = new Rng(8);
  // each row's largest weight is Q, so its scale is 1 and every weight an integer: the rounding is all h's
  const w = Float32Array.from({ length: R * C }, (_, i) => (i % C === 0 ? Q : Math.floor(rng.next() * Q)));
  // h_j 0.49 of an integer step above a step (the step is max|h| / Q = 1 / Q): the errors add up
  const h = Float32Array.from(
    { length: C },
    (_, j) => (j === 0 ? 1 : (Math.floor(rng.next() * Q / 2) + 0.49) / Q),
  );
  const a = tf.tensor(w), x = tf.tensor(h), z = tf.zeros([R]);
  const head = new Int16Head(heap, offset(a), R, C);
  heap.kernels.gemv_rows(offset(a), C, offset(x), offset(z), 0, R, C);
  const Z = heap.f32.slice(offset(z) >> 2, (offset(z) >> 2) + R);
  assert.ok(head.candidates(offset(x), 3, R) !== null);
  const { lo, hi } = head.bounds(R);
  for (let i = 0; i < R; i++) {
    assert.ok(lo[i] <= Z[i] && Z[i] <= hi[i], `row ${i}: ${lo[i]} <= ${Z[i]} <= ${hi[i]}`);
  }
  head.dispose();
  tf.dispose([a, x, z]);
});

Deno.test("lmpipe sample on wasm: the same tokens with the integer head on and off (greedy, top-k 5, 200)", async () => {
  const config = { ...GPT_PRESETS.tiny, model: "gpt", nLayer: 1, nHead: 2, nEmbd: 32, contextLength: 16 };
  const model = new Gpt(config, 6);
  randomizeWeights(model, 12);
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-int16-head-" });

  try {
    await saveUntrainedRun(dir, model);
    const run = async (on: boolean, extra: string[]) => {
      setDecodeInt16Head(on);
      let out = "";
      const args = ["--backend", "wasm", "--ckpt", dir, "--prompt-ids", "11,12", "--max-new-tokens", "30"];
      await sample_([...args, "--format", "tokens", "--seed", "9", ...extra], {
        stdout: (b) => Promise.resolve(void (out += new TextDecoder().decode(b))),
      });
      return out;
    };
    for (const extra of [["--temperature", "0"], ["--top-k", "5"], ["--top-k", "200", "--top-p", "0.8"]]) {
      const want = await run(false, extra), got = await run(true, extra);
      assert.equal(want.trim().split(" ").length, 30);
      assert.equal(got, want, extra.join(" "));
    }
  } finally {
    setDecodeInt16Head(true);
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});
