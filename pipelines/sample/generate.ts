// Token generation for `lmpipe sample` (and the benchmark): the model's key/value cache by default
// (startDecode/decodeStep: each new token costs one position), or full recomputation of the last
// `context` tokens per token (--no-cache). Choosing the next token happens on the host from the logits
// with lmpipe's seeded RNG, so a seed gives the same text on every run of a backend.
import type { LanguageModel, Precision, TopKNeed } from "../../lib/models/types.ts";
import { readData, tf } from "../../lib/tensor/backend.ts";
import type { Rng } from "../../lib/rng.ts";
import { topKIds } from "../../lib/top_k.ts";

export interface SamplingOptions {
  /** 0 = greedy (argmax). */
  temperature: number;
  /** Keep the k most likely tokens (0 = all). */
  topK: number;
  /** Keep the smallest set of tokens whose probability reaches p (1 = all). */
  topP: number;
  /** Only ids below this are ever drawn (the tokenizer's vocabulary; the model's may be padded). */
  allowedVocab: number;
}

/**
 * Picks the next token from one row of logits; `maxima`: their block maxima (lib/top_k.ts) where the
 * model's step computed them (Stepper.blockMaxima), saving the top-k search a pass.
 */
export function chooseToken(
  logits: Float32Array,
  o: SamplingOptions,
  rng: Rng,
  maxima?: Float32Array,
): number {
  const V = Math.min(logits.length, o.allowedVocab);
  if (o.temperature === 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  // the candidates in ascending order: the top k (ties included), or every id
  const ids = o.topK > 0 && o.topK < V
    ? topKIds(logits, V, o.topK, maxima)
    : Array.from({ length: V }, (_, i) => i);
  let max = -Infinity;
  for (const i of ids) if (logits[i] > max) max = logits[i];
  const probs: number[] = [];
  let sum = 0;
  for (const i of ids) {
    const e = Math.exp((logits[i] - max) / o.temperature);
    probs.push(e), sum += e;
  }
  let order = ids.map((_, j) => j);
  let mass = 1;
  if (o.topP < 1) {
    order.sort((a, b) => probs[b] - probs[a] || ids[a] - ids[b]);
    let cum = 0, keep = 0;
    while (keep < order.length) {
      cum += probs[order[keep]] / sum;
      keep++;
      if (cum >= o.topP) break;
    }
    order = order.slice(0, keep);
    mass = cum;
  }
  let r = rng.next() * mass * sum;
  for (const j of order) {
    r -= probs[j];
    if (r < 0) return ids[j];
  }
  return ids[order[order.length - 1]];
}

/**
 * What chooseToken reads of `vocab` logits under `o`: the top k of the allowed ids (greedy: the top 1,
 * the first of equal maxima being among them), or undefined where it reads every logit (top-k 0 or at
 * least the allowed vocabulary: the softmax over all of them).
 */
export function topKNeed(o: SamplingOptions, vocab: number): TopKNeed | undefined {
  const n = Math.min(vocab, o.allowedVocab);
  const k = o.temperature === 0 ? 1 : o.topK;
  return k > 0 && k < n ? { k, n } : undefined;
}

/** Produces the logits for the next token after each token appended; cached or recomputed. */
export interface Stepper {
  /**
   * Logits [V] after `tokens` (the whole sequence so far; only new tokens are fed when cached). Read
   * them before the next call: a cached step may return a view that the next one overwrites.
   */
  next(tokens: number[]): Promise<Float32Array>;
  /** The block maxima of the logits next() returned last, where the model's step computed them. */
  blockMaxima?(): Float32Array | undefined;
  dispose(): void;
}

async function row(t: tf.Tensor): Promise<Float32Array> {
  const d = await readData(t) as Float32Array;
  t.dispose();
  return d;
}

/** Full recomputation over the last `context` tokens for every new token, in `precision` (default fp32). */
export function uncachedStepper(model: LanguageModel, precision: Precision = "fp32"): Stepper {
  const T = model.config.contextLength;
  return {
    next(tokens) {
      const win = tokens.slice(-T);
      const t = tf.tidy(() => {
        const logits = model.logits(tf.tensor2d(Int32Array.from(win), [1, win.length], "int32"), {
          training: false,
          precision,
        });
        const V = logits.shape[2];
        return tf.slice(logits, [0, win.length - 1, 0], [1, 1, V]).reshape([V]);
      });
      return row(t);
    },
    dispose() {},
  };
}

/**
 * Key/value-cached decoding. Within the context each call feeds only the tokens not yet consumed.
 * When the cache is full, it restarts from the last half-context of tokens (so long generations stay
 * fast; beyond the context this differs from --no-cache, which slides one token at a time). `need`
 * (topKNeed of the sampling): the logits are read only for that top k, so a host-side step may leave the
 * others -Infinity (lib/models/gpt_decode_head.ts).
 */
export function cachedStepper(model: LanguageModel, need?: TopKNeed): Stepper {
  const T = model.config.contextLength;
  let state = model.startDecode(1);
  let consumed = 0; // tokens of the sequence fed so far (the cache may hold a suffix)
  let offset = 0; // sequence index of the cache's first token
  return {
    async next(tokens) {
      if (tokens.length - offset > T) {
        if (state.reset) state.reset(); // the weights did not change: keep what the state built
        else state.dispose(), state = model.startDecode(1);
        offset = tokens.length - Math.ceil(T / 2);
        consumed = offset;
      }
      if (state.stepOnHost) { // the model's host-side step: logits without a tensor (gpt on wasm)
        let logits: Float32Array | null = null;
        for (; consumed < tokens.length; consumed++) logits = state.stepOnHost(tokens[consumed], need);
        if (!logits) throw new Error("cachedStepper.next: no new token to feed");
        return logits;
      }
      let last: tf.Tensor2D | null = null;
      for (; consumed < tokens.length; consumed++) {
        last?.dispose();
        const tok = tf.tensor1d([tokens[consumed]], "int32");
        last = model.decodeStep(state, tok);
        tok.dispose();
      }
      if (!last) throw new Error("cachedStepper.next: no new token to feed");
      return await row(last); // [1, V]: its data is the one row
    },
    blockMaxima() {
      return state.blockMaxima?.();
    },
    dispose() {
      state.dispose();
    },
  };
}
