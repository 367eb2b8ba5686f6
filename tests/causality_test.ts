// Strict causality of every model, both halves, in fp32 and mixed precision: gpt and the three image
// models with each CNN (vgg9, vgg-wide, resnet), the image models with the checkpointed CNN path too.
// For a change at position t+1 of each sequence:
//   earlier half: the logits at positions <= t are bit for bit the same (training and eval mode);
//   later half:   the logits at every position >= t+1 change, by a clear margin for a changed token.
// Sensitivity: the change is also made 1e-6 small (token t+1's embedding row nudged by 1e-6, its id
// occurring nowhere else), and the later half must still see it at every later position in fp32, so a
// leak of that size into an earlier position would show as plainly. (Under --precision mixed,
// activations are rounded to binary16 at every matMul's and conv's input and output, whose spacing near 1
// is 1e-3: a 1e-6 nudge vanishes there, so mixed nudges by 3e-2, which reaches every later position
// through the rounding; 1e-2 did not reach pixel-cumsum/vgg9's own position once conv outputs were
// rounded too.)
// A leak that small is rounded away from mixed outputs too: planting a 1e-6 batch-mean leak at the
// CNN's input fails the fp32 test for all nine image configs but the mixed one for only two, those
// where a rounding happened to flip. Mixed still gets the bit-for-bit earlier half, which catches any
// leak that changes its outputs at all; the code it runs is the fp32 code plus rounding.
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { randomArray } from "../lib/tensor/testing.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import type { LanguageModel, ModelConfig, Precision } from "../lib/models/types.ts";

await initBackend("cpu", { quiet: true });

const V = 61, T = 8, B = 2;

/** Tiny configs of every model; the image models with each CNN kind and 6x6 images. */
function cases(): ModelConfig[] {
  const out: ModelConfig[] = [
    resolveConfig("gpt", "tiny", { vocabSize: V, contextLength: T, nLayer: 2, nEmbd: 16, nHead: 2 }),
  ];
  for (const model of ["pixel-cumsum", "pixel-attn", "pixel-attn-wide"]) {
    for (const cnn of ["vgg9", "vgg-wide", "resnet"]) {
      out.push(resolveConfig(model, "tiny", {
        vocabSize: V,
        contextLength: T,
        nEmbd: 16,
        nHead: 2,
        nWarmup: 1,
        channels: 2,
        imageSize: 6,
        keyDim: 4,
        cnn,
        cnnWidth: 4,
        cnnDepth: 2,
        cnnChunk: 5, // the checkpointed CNN path (16 images in chunks of 5)
      }));
    }
  }
  return out;
}

/**
 * Fixed random weights of moderate size (norm scales near 1), so no layer is dead or saturated. In the
 * image models the warm-up blocks' attention output is zeroed: they then pass nothing between positions
 * and only the image mapping carries a change forward, so the later half tests the mapping's sharing
 * (gpt's case tests that attention).
 */
function randomize(m: LanguageModel, seed: number): void {
  let i = 0;
  const image = m.params.has("lm_head.weight");
  for (const [name, v] of m.params) {
    const r = randomArray(v.size, seed + i++);
    const isNorm = v.rank === 1 && name.endsWith(".weight") || name.endsWith(".g");
    const off = image && /^transformer\.h\.\d+\.attn\.c_proj\./.test(name);
    tf.tidy(() => v.assign(tf.tensor(r.map((x) => (off ? 0 : isNorm ? 1 + 0.2 * x : 0.3 * x)), v.shape)));
  }
}

/** Token ids 1..B·T, each once, so that an id names one position of one sequence. */
function baseTokens(): number[][] {
  return Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, s) => 1 + b * T + s));
}

async function logits(m: LanguageModel, rows: number[][], precision: Precision, training: boolean) {
  const idx = tf.tensor2d(rows, [B, T], "int32");
  const l = m.logits(idx, { precision, training });
  const out = await l.data() as Float32Array;
  tf.dispose([idx, l]);
  return out;
}

/**
 * Both halves for a change at position t+1: rows s <= t identical (but for columns `skip`, e.g. a tied
 * head's row of a nudged embedding), every row s > t differing by more than `margin` somewhere.
 */
function checkHalves(
  ref: Float32Array,
  got: Float32Array,
  t: number,
  margin: number,
  skip: Set<number>,
  what: string,
): string[] {
  const problems: string[] = [];
  for (let b = 0; b < B; b++) {
    for (let s = 0; s < T; s++) {
      const o = (b * T + s) * V;
      let maxDiff = 0;
      for (let j = 0; j < V; j++) {
        if (s <= t && skip.has(j)) continue;
        maxDiff = Math.max(maxDiff, Math.abs(got[o + j] - ref[o + j]));
      }
      if (s <= t && maxDiff !== 0) problems.push(`${what}: position ${s} (<= ${t}) moved by ${maxDiff}`);
      if (s > t && !(maxDiff > margin)) {
        problems.push(`${what}: position ${s} (> ${t}) moved by only ${maxDiff} (needs > ${margin})`);
      }
    }
  }
  return problems;
}

for (const precision of ["fp32", "mixed"] as Precision[]) {
  Deno.test(`causality (${precision}): a change at t+1 leaves positions <= t bit for bit and reaches every later one, all models and CNNs`, async () => {
    const problems: string[] = [];
    const nudge = precision === "fp32" ? 1e-6 : 3e-2;
    for (const c of cases()) {
      const m = createModel(c, 3);
      randomize(m, 70);
      const name = `${c.model}${"cnn" in c ? `/${c.cnn}` : ""}`;
      const base = baseTokens();
      const tied = !m.params.has("lm_head.weight"); // gpt: the head is the token embedding
      const wte = m.params.get("transformer.wte.weight")!;
      const wte0 = await wte.data() as Float32Array;
      for (const training of [true, false]) {
        const ref = await logits(m, base, precision, training);
        for (const t of [0, 3, 6]) {
          // a new token at t+1 (an id used nowhere else)
          const changed = base.map((row, b) => row.map((v, s) => (s === t + 1 ? 40 + b : v)));
          const got = await logits(m, changed, precision, training);
          problems.push(
            ...checkHalves(ref, got, t, 1e-4, new Set(), `${name} ${training ? "train" : "eval"} token`),
          );
        }
      }
      // the embedding of the token at t+1 (both sequences) nudged by `nudge`
      for (const t of [0, 3, 6]) {
        const ids = base.map((row) => row[t + 1]);
        const w = wte0.slice();
        const r = randomArray(c.nEmbd as number, 500 + t);
        for (const id of ids) {
          for (let j = 0; j < r.length; j++) w[id * r.length + j] += nudge * Math.sign(r[j]);
        }
        const ref = await logits(m, base, precision, false);
        tf.tidy(() => wte.assign(tf.tensor(w, wte.shape)));
        const got = await logits(m, base, precision, false);
        tf.tidy(() => wte.assign(tf.tensor(wte0, wte.shape)));
        problems.push(
          ...checkHalves(ref, got, t, 0, tied ? new Set(ids) : new Set(), `${name} nudge ${nudge}`),
        );
      }
      m.dispose();
    }
    assert.deepEqual(problems, []);
  });
}
