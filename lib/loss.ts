// Next-token cross-entropy through an output head tied to the token embedding, computed in row chunks
// so the full [N, vocab] logits (N = B*T; 206 MB for 1024 x 50304) are never materialised. It avoids
// the TF.js ops that are wrong or slow on some backend (oneHot, gather with batchDims, transposed or
// batched matMuls on wasm's XNNPACK path, webgpu matMul outputs over one storage binding): every matMul
// is a plain 2-D one, with W^T made once per call, or, where BLAS takes transposes as flags (wasm with
// OpenBLAS), with transposed operands and no copy. The vocabulary softmax is lib/tensor/ops/softmax_rows/mod.ts.
//
// While gradients are being recorded, the forward pass also computes the gradients (the upstream
// gradient of a scalar loss is a scalar, so dL/dh and dL/dW can be formed chunk by chunk while each
// chunk's logits exist) and the backward pass only scales them: three matMuls per chunk in all, none
// recomputed. Without a gradient tape (eval) only the logits matMul runs.
import { tf } from "./tensor/backend.ts";
import { maxRowsPerChunk, takeAlongLastAxis } from "./nn.ts";
import { transposedMatMulsAreFree } from "./tensor/kernel_choice.ts";
import { gradientsRecorded } from "./tensor/tape_state.ts";
import {
  softmaxRows,
  softmaxRowsAtTargets,
  softmaxRowsAtTargetsFused,
  softmaxStatsAtTargets,
  softmaxStatsFused,
} from "./tensor/ops/softmax_rows/mod.ts";
import { boundary, isLowPrecision, roundScaled, roundTo } from "./precision.ts";
import type { Precision } from "./models/types.ts";

export interface TiedCrossEntropyOptions {
  /** Rows of h per chunk (default: as many as keep a chunk's logits at 2^24 floats, 64 MiB). */
  chunkRows?: number;
  /**
   * mixed / bf16 (autocast's rule for the head's linear): h and W are rounded to 16 bits (their gradients
   * too) and so are the logits before the float32 softmax and loss, and the logits' gradient, formed here
   * in the forward pass, at the scale `gradScale` the backward pass will bring (docs/precision.md).
   */
  precision?: Precision;
  /**
   * The gradient the caller will send into this loss (the factor it multiplies the loss by: loss scale /
   * micro-batches; default 1). Only the rounding uses it: any other incoming gradient still scales the
   * result linearly.
   */
  gradScale?: number;
}

/**
 * Floats in one chunk's logits at most by default: 128 MiB. The softmax part of dL/dW is a matMul whose
 * inner dimension is the chunk's rows, and OpenBLAS ran it ~15% faster on 512 rows than on 333
 * (V = 50304, C = 128, one Haswell-kernel thread); the study's GPT at context 1024, batch 1 still fits
 * wasm's 4 GiB heap with two such chunks live (bench/RESULTS.md, 2026-12-04).
 */
const CHUNK_FLOATS = 2 ** 25;

/**
 * Whether `dy` is the scalar 1 (a plain fp32 step's seed), read only where reading a value costs no
 * device round trip (wasm, cpu): then the saved gradients are the result as they are, and the two
 * multiplies (one a [V, C] pass, ~5 ms on the 50304 x 128 head) are skipped. Multiplying by 1 is exact,
 * so both ways give the same bits.
 */
function isOne(dy: tf.Tensor): boolean {
  const backend = tf.getBackend();
  if (dy.size !== 1 || (backend !== "wasm" && backend !== "cpu")) return false;
  return dy.dataSync()[0] === 1;
}

/**
 * The row chunk size used for `rows` rows over a vocabulary of `vocab`: `requested` as given, or else
 * the rows split evenly into as few chunks as keep each within CHUNK_FLOATS logits (1024 rows of 50304:
 * 2 x 512, not 667 + 357), so that no short tail chunk runs its matMuls far below the BLAS rate.
 */
export function chunkRowsFor(rows: number, vocab: number, requested?: number): number {
  const cap = Math.max(
    1,
    Math.min(rows, requested ?? Math.floor(CHUNK_FLOATS / vocab), maxRowsPerChunk(vocab)),
  );
  if (requested !== undefined) return cap;
  return Math.ceil(rows / Math.ceil(rows / cap));
}

interface ChunkOut {
  /** Sum over the chunk's rows of logsumexp(logits) - logit[target]. */
  lossSum: tf.Scalar;
  /** dL/dh for the chunk's rows [n, C] (only with gradients). */
  dh?: tf.Tensor2D;
  /** The softmax part of dL/dW: [V, C], or transposed [C, V] when W^T is given (only with gradients). */
  dwPart?: tf.Tensor2D;
}

/**
 * One chunk: logits = hc @ W^T; loss terms; and, when `grads`, dL/dh = (softmax @ W - W[target]) / N
 * and the softmax part of dL/dW = softmax^T @ hc / N. The softmax normaliser 1/sum is applied to the
 * [n, C] sides, never to the [n, V] probabilities. With `wT` (W^T [C, V], made once per call) every
 * matMul is a plain one; without, the transposes are matMul flags (free on wasm's BLAS path).
 * Under mixed / bf16 the logits' gradient (softmax - onehot) / N is formed whole instead, rounded to 16 bits
 * at `gradScale` as autocast's backward pass holds it, and dL/dW gets its -onehot part here too.
 */
function chunk(
  hc: tf.Tensor2D,
  tc: tf.Tensor1D,
  w: tf.Tensor2D,
  wT: tf.Tensor2D | null,
  n: number,
  grads: boolean,
  precision?: Precision,
  gradScale = 1,
): ChunkOut {
  const logits = roundTo(wT ? tf.matMul(hc, wT) : tf.matMul(hc, w, false, true), precision) as tf.Tensor2D;
  if (!grads && softmaxStatsFused(logits.size)) {
    // evaluation on wasm's kernel or oneDNN's: each row's logsumexp m + log(s) and its target's logit, no
    // [n, V] output. Under mixed / bf16 the target's logit is formed as the other paths form it.
    const { m, s, xt } = softmaxStatsAtTargets(logits, tc);
    const targetLogit = isLowPrecision(precision)
      ? roundTo(tf.sum(tf.mul(hc, tf.gather(w, tc)), 1), precision)
      : xt;
    return { lossSum: tf.sub(tf.sum(tf.add(m, tf.log(s))), tf.sum(targetLogit)) as tf.Scalar };
  }
  if (foldsOnehot(precision) && !isLowPrecision(precision)) {
    // e[row, target] already holds e - s: e / s is softmax - onehot, the logits' gradient before 1/N,
    // so both gradients come out of the two matMuls whole (no W[target] rows, no segment sum)
    const { e, m, s, xt } = softmaxRowsAtTargets(logits, tc);
    const lossSum = tf.sub(tf.sum(tf.add(m, tf.log(s))), tf.sum(xt)) as tf.Scalar;
    if (!grads) return { lossSum };
    const inv = tf.div(1 / n, s);
    const dh = tf.mul(tf.matMul(e, w), inv) as tf.Tensor2D;
    const hs = tf.mul(hc, inv);
    const dwPart = (wT ? tf.matMul(tf.transpose(hs), e) : tf.matMul(e, hs, true, false)) as tf.Tensor2D;
    return { lossSum, dh, dwPart };
  }
  const { e, m, s } = softmaxRows(logits); // e = exp(logits - m), s its row sums [rows, 1]
  const lse = tf.add(m, tf.log(s));
  const wt = tf.gather(w, tc); // W[target] rows [rows, C]
  const targetLogit = roundTo(tf.sum(tf.mul(hc, wt), 1), precision); // as rounded as its logit
  const lossSum = tf.sub(tf.sum(lse), tf.sum(targetLogit)) as tf.Scalar;
  if (!grads) return { lossSum };
  if (isLowPrecision(precision)) {
    const probs = tf.mul(e, tf.div(1 / n, s));
    // probs - onehot / N: the one-hot rows hold float32(1 / N) at the targets (TF.js wasm's broadcasting
    // equal of the targets against a range took ~0.7 s per [256, 50304] chunk; OneHot is one pass)
    const dLogits = tf.sub(probs, tf.oneHot(tc, w.shape[0], 1 / n, 0, "float32"));
    const rounded = roundScaled(dLogits, gradScale, precision);
    const dh = tf.matMul(rounded, w) as tf.Tensor2D;
    const dwPart =
      (wT ? tf.matMul(tf.transpose(hc), rounded) : tf.matMul(rounded, hc, true, false)) as tf.Tensor2D;
    return { lossSum, dh, dwPart };
  }
  const inv = tf.div(1 / n, s); // softmax normaliser and the 1/N of the mean, per row
  const dh = tf.sub(tf.mul(tf.matMul(e, w), inv), tf.mul(wt, 1 / n)) as tf.Tensor2D;
  const hs = tf.mul(hc, inv);
  const dwPart = (wT ? tf.matMul(tf.transpose(hs), e) : tf.matMul(e, hs, true, false)) as tf.Tensor2D;
  return { lossSum, dh, dwPart };
}

/**
 * Whether `chunk` puts the -onehot part of dL/dW into its dwPart: under mixed / bf16 (the logits'
 * gradient is formed whole), and on wasm's softmax kernel, which folds it into e (softmaxRowsAtTargets).
 */
function foldsOnehot(precision?: Precision): boolean {
  return isLowPrecision(precision) || softmaxRowsAtTargetsFused();
}

/** Runs `chunk` over all rows; with `grads` also assembles dL/dh [N, C] and dL/dW [V, C]. */
function chunked(
  h: tf.Tensor2D,
  w: tf.Tensor2D,
  targets: tf.Tensor1D,
  rows: number,
  grads: boolean,
  precision?: Precision,
  gradScale = 1,
) {
  const [N, C] = h.shape;
  const V = w.shape[0];
  const wT = transposedMatMulsAreFree() ? null : tf.transpose(w) as tf.Tensor2D;
  let lossSum: tf.Tensor = tf.scalar(0);
  let dwPart: tf.Tensor | null = null;
  const dhs: tf.Tensor[] = [];
  for (let r0 = 0; r0 < N; r0 += rows) {
    const n = Math.min(rows, N - r0);
    const out = tf.tidy(() => {
      const hc = n === N ? h : tf.slice(h, [r0, 0], [n, C]);
      const tc = n === N ? targets : tf.slice(targets, [r0], [n]);
      return chunk(hc, tc, w, wT, N, grads, precision, gradScale) as unknown as tf.TensorContainer;
    }) as unknown as ChunkOut;
    const prev = lossSum;
    lossSum = tf.add(lossSum, out.lossSum);
    prev.dispose(), out.lossSum.dispose();
    if (grads) {
      dhs.push(out.dh!);
      if (dwPart === null) dwPart = out.dwPart!;
      else {
        const old: tf.Tensor = dwPart;
        dwPart = tf.add(old, out.dwPart!);
        old.dispose(), out.dwPart!.dispose();
      }
    }
  }
  wT?.dispose();
  const loss = tf.div(lossSum, N) as tf.Scalar;
  if (!grads) return { loss };
  const dwSoftmax = (wT ? tf.transpose(dwPart!) : dwPart!) as tf.Tensor2D;
  // The -onehot part of dL/dW (already in under mixed / bf16): row target[r] gets -h[r]/N, summed over
  // duplicate targets.
  const dw = foldsOnehot(precision)
    ? dwSoftmax
    : tf.sub(dwSoftmax, tf.unsortedSegmentSum(tf.mul(h, 1 / N), targets, V)) as tf.Tensor2D;
  const dh = (dhs.length === 1 ? dhs[0] : tf.concat(dhs, 0)) as tf.Tensor2D;
  return { loss, dh, dw };
}

/**
 * Mean over rows of -log softmax(h @ W^T)[target]: h [N, C] float32 hidden states, W [V, C] the tied
 * token embedding, targets [N] int32 in [0, V). Differentiable in h and W (gradients computed with the
 * forward pass as described at the top of this file). Out-of-range targets are a caller bug.
 *
 * @example
 * const loss = tiedCrossEntropy(tf.reshape(h, [-1, C]) as tf.Tensor2D, wte, tf.reshape(targets, [-1]) as tf.Tensor1D);
 */
export function tiedCrossEntropy(
  h: tf.Tensor2D,
  w: tf.Tensor2D,
  targets: tf.Tensor1D,
  opts: TiedCrossEntropyOptions = {},
): tf.Scalar {
  const [N, C] = h.shape;
  if (h.rank !== 2 || w.rank !== 2 || w.shape[1] !== C || targets.rank !== 1 || targets.shape[0] !== N) {
    throw new Error(
      `tiedCrossEntropy: shapes h [${h.shape}], W [${w.shape}], targets [${targets.shape}] do not fit`,
    );
  }
  if (targets.dtype !== "int32") {
    throw new Error(`tiedCrossEntropy: targets must be int32, got ${targets.dtype}`);
  }
  const rows = chunkRowsFor(N, w.shape[0], opts.chunkRows);
  const prec = opts.precision;
  if (!gradientsRecorded()) {
    return tf.tidy(() => chunked(boundary(h, prec), boundary(w, prec), targets, rows, false, prec).loss);
  }
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [hIn, wIn, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const { loss, dh, dw } = chunked(
      hIn as tf.Tensor2D,
      wIn as tf.Tensor2D,
      targets,
      rows,
      true,
      prec,
      opts.gradScale ?? 1,
    );
    save([dh!, dw!]);
    return {
      value: loss,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        isOne(dy as tf.Tensor)
          ? [tf.clone(saved[0]), tf.clone(saved[1])]
          : [tf.mul(saved[0], dy as tf.Tensor), tf.mul(saved[1], dy as tf.Tensor)],
    };
  });
  return f(boundary(h, prec), boundary(w, prec)) as tf.Scalar;
}

/** The same loss the plain way (full logits, logSoftmax, flat gather): a reference for tests. */
export function naiveCrossEntropy(h: tf.Tensor2D, w: tf.Tensor2D, targets: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    const logp = tf.logSoftmax(tf.matMul(h, w, false, true)) as tf.Tensor2D;
    return tf.neg(tf.mean(takeAlongLastAxis(logp, targets))) as tf.Scalar;
  });
}
