// Scores a token sequence with a model: total next-token cross-entropy (nats) over every token that
// has a predecessor, each scored exactly once. Non-overlapping windows (stride = context) use the
// model's loss in batches; sliding windows (stride < context) give every scored token up to
// context - stride tokens of extra history and score only the new tokens of each window.
import type { LanguageModel, Precision } from "../../lib/models/types.ts";
import { readData, tf } from "../../lib/tensor/backend.ts";
import { takeAlongLastAxis } from "../../lib/nn.ts";

/** Random access to a token sequence: `read(offset, count)`. */
export interface TokenSource {
  length: number;
  read(offset: number, count: number): Promise<Uint16Array> | Uint16Array;
}

export interface Score {
  /** Sum of -log p(target) in nats (float64 on the host). */
  nats: number;
  /** Number of tokens scored. */
  tokens: number;
  windows: number;
}

export interface ScoreOptions {
  context: number;
  /** Window advance; = context for non-overlapping windows. */
  stride: number;
  batchSize: number;
  precision: Precision;
  /** Score at most this many tokens. */
  maxTokens: number;
}

/** Sum of the loss over targets [from, L) of each [1, L] window via the full logits. */
async function scoreTail(
  model: LanguageModel,
  win: Uint16Array,
  from: number,
  precision: Precision,
): Promise<number> {
  const L = win.length - 1;
  const t = tf.tidy(() => {
    const x = tf.tensor2d(Int32Array.from(win.subarray(0, L)), [1, L], "int32");
    const logits = model.logits(x, { precision, training: false }); // [1, L, V]
    const V = logits.shape[2];
    const tail = tf.slice(logits, [0, from, 0], [1, L - from, V]).reshape([L - from, V]);
    const logp = tf.logSoftmax(tail);
    const targets = tf.tensor1d(Int32Array.from(win.subarray(from + 1, L + 1)), "int32");
    return tf.neg(tf.sum(takeAlongLastAxis(logp as tf.Tensor2D, targets)));
  });
  const v = (await readData(t))[0];
  t.dispose();
  return v;
}

/** Mean-loss of `rows` full windows of length T+1 in one batch, returned as a sum. */
async function scoreFull(
  model: LanguageModel,
  rows: Uint16Array[],
  T: number,
  precision: Precision,
): Promise<number> {
  const B = rows.length;
  const x = new Int32Array(B * T), y = new Int32Array(B * T);
  rows.forEach((w, b) => {
    for (let t = 0; t < T; t++) x[b * T + t] = w[t], y[b * T + t] = w[t + 1];
  });
  const t = tf.tidy(() =>
    model.loss(tf.tensor2d(x, [B, T], "int32"), tf.tensor2d(y, [B, T], "int32"), {
      precision,
      training: false,
    })
  );
  const v = (await readData(t))[0];
  t.dispose();
  return v * B * T;
}

export async function scoreSource(
  model: LanguageModel,
  src: TokenSource,
  o: ScoreOptions,
  budget: number,
): Promise<Score> {
  const n = Math.min(src.length, budget + 1); // tokens used: n - 1 targets at most
  const T = o.context;
  const score: Score = { nats: 0, tokens: 0, windows: 0 };
  if (n < 2) return score;
  if (o.stride >= T) {
    // non-overlapping: window k holds tokens [kT, kT + T], scoring targets kT+1 .. kT+T
    let pending: Uint16Array[] = [];
    const flush = async () => {
      if (pending.length) score.nats += await scoreFull(model, pending, T, o.precision);
      pending = [];
    };
    for (let start = 0; start < n - 1; start += T) {
      const len = Math.min(T, n - 1 - start);
      const win = Uint16Array.from(await src.read(start, len + 1));
      score.windows++, score.tokens += len;
      if (len === T) {
        pending.push(win);
        if (pending.length === o.batchSize) await flush();
      } else {
        await flush();
        score.nats += await scoreTail(model, win, 0, o.precision);
      }
    }
    await flush();
    return score;
  }
  // sliding: windows [begin, end) of up to T inputs; score only targets after the previous window's end
  let prevEnd = 0; // targets < prevEnd+1 are scored (target index = input index + 1)
  for (let begin = 0; prevEnd < n - 1; begin += o.stride) {
    const end = Math.min(begin + T, n - 1);
    const win = Uint16Array.from(await src.read(begin, end - begin + 1));
    const from = prevEnd - begin; // first input position whose target is new
    score.nats += await scoreTail(model, win, from, o.precision);
    score.tokens += end - prevEnd;
    score.windows++;
    prevEnd = end;
  }
  return score;
}
