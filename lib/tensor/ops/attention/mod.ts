// causalAttention: softmax(scale q k^T, causal) v over the last two axes, the attention of gpt
// (lib/nn.ts causalSelfAttention) and of pixel-attn's value images (lib/models/pixel_mapping.ts attnImages).
// q [..., T, D], k [..., past + T, D], v [..., past + T, Dv]: query i sits at absolute position
// past + i and sees keys 0..past+i (past > 0 when decoding with a KV cache).
//   - On webgpu with lmpipe's kernels on (lib/tensor/kernel_choice.ts kernelFor("causalAttention")) and heads of
//     up to 64 dims: the flash-style kernels of ./webgpu.ts, forward one dispatch, backward four, and no
//     [T, past + T] tensor in memory (the backward pass recomputes the probabilities from each row's
//     logsumexp). The softmax's maximum, sum and logsumexp are float32; under --precision mixed the
//     inputs (q scaled, k, v) are binary16 values, and the scores and probabilities stay float32 inside
//     the kernel (the op chain rounds them to binary16 between its ops).
//   - Everywhere else (and when probabilities are asked for, for the attention plots, or a score bias is
//     given: ALiBi, attn_extra of docs/variants.md) the op chain of causalAttentionByOps: q * scale,
//     matMul with k, + the score bias, causalSoftmax, matMul with v, with the layer boundaries of
//     --precision mixed between them, so cpu and wasm numbers do not change.
// Two entry points hand the flash kernels the models' own layouts instead of [..., T, D] heads, since on
// webgpu a step is bound by host time per dispatch (docs/gpu.md): causalAttentionFromQkv reads q, k, v
// out of gpt's fused projection [B, T, 3C] by column offset, writes y as [B, T, C] and returns one
// [B, T, 3C] gradient (per layer 7 dispatches fewer forward, the split and 4 transposes, and 5 fewer
// backward, the concat and 4 transposes); causalAttentionChannelsLast reads pixel-attn's q, k [B, T, C dk]
// and writes its value images channels last, [B, T, P, C] (3 transposes fewer each way). The models take
// them only where the flash kernels apply (flashAttentionLaidOutApplies: fp32 or mixed, heads of up to 64
// dims) and nothing else is asked (no rope, ALiBi, extra score, KV cache, probabilities or grouped kv
// heads); elsewhere both are the split/transpose chain around causalAttention, with the same numbers.
// On wasm, causalAttentionFromQkv has a forward-only kernel (./wasm.ts, kernels.wat attn_fwd: heads shared
// out between lmpipe's wasm threads, any head size): gpt takes it under the same conditions, fp32 only,
// and only while no gradient is recorded (attentionFromQkvApplies); training keeps the op chain.
import * as tf from "@tensorflow/tfjs-core";
import { causalSoftmax } from "../causal_softmax/mod.ts";
import { kernelFor } from "../../kernel_choice.ts";
import { boundary, isLowPrecision } from "../../../precision.ts";
import type { Precision } from "../../../models/types.ts";
import {
  FLASH_MAX_HEAD_DIM,
  flashAttentionCall,
  flashAttentionGradCall,
  type FlashLayout,
  type FlashStrides,
} from "./webgpu.ts";
import { attentionFromQkvWasm } from "./wasm.ts";
import { gradientsRecorded } from "../../tape_state.ts";

export interface CausalAttentionOptions {
  /** --precision: mixed puts binary16 boundaries on the scaled q (and, in the op chain, scores, probs). */
  precision?: Precision;
  /** When given, the probabilities [..., T, past + T] are pushed here (kept); forces the op chain. */
  probsOut?: tf.Tensor[];
  /** Added to the scaled scores before the softmax, broadcast to [..., T, past + T]; forces the op chain. */
  scoreBias?: tf.Tensor;
}

/** past (= keys - queries) of a call, or a clear error naming what does not fit. */
function pastOf(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor): number {
  const r = q.rank, T = q.shape[r - 2], Tk = k.shape[r - 2];
  const lead = (t: tf.Tensor) => t.shape.slice(0, -2).join(",");
  if (
    r < 3 || k.rank !== r || v.rank !== r || lead(k) !== lead(q) || lead(v) !== lead(q) ||
    k.shape[r - 1] !== q.shape[r - 1] || v.shape[r - 2] !== Tk || Tk < T
  ) {
    throw new Error(
      `causalAttention (lib/tensor/ops/attention/mod.ts): expected q [..., T, D], k [..., past + T, D], ` +
        `v [..., past + T, Dv] with the same leading dims; got q [${q.shape}], k [${k.shape}], v [${v.shape}]`,
    );
  }
  return Tk - T;
}

// Whether the op chain rounds scores and probabilities to binary16 under mixed precision (the emulation's
// rule, the default) or keeps them float32 as the flash kernels do (tests compare models both ways).
let roundScores = true;

/** Sets the op chain's mixed-precision rule for scores and probabilities (see above); returns the old one. */
export function setOpChainRoundsScores(on: boolean): boolean {
  const old = roundScores;
  roundScores = on;
  return old;
}

/** The reference: the op chain with TF.js's own gradients (and mixed precision's boundaries). */
export function causalAttentionByOps(
  q: tf.Tensor,
  k: tf.Tensor,
  v: tf.Tensor,
  scale: number,
  opts: CausalAttentionOptions = {},
): tf.Tensor {
  const past = pastOf(q, k, v), prec = opts.precision;
  const qs = boundary(tf.mul(q, scale), prec);
  const inner = roundScores ? prec : undefined;
  let scores = boundary(tf.matMul(qs, k, false, true), inner); // [..., T, past + T]
  if (opts.scoreBias) scores = boundary(tf.add(scores, opts.scoreBias), inner);
  const probs = boundary(causalSoftmax(scores, past), inner);
  if (opts.probsOut) opts.probsOut.push(tf.keep(probs));
  return tf.matMul(probs, v);
}

/** The flash kernels with their own gradient, on [BH, T, *] views of the inputs. */
function causalAttentionFused(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, scale: number): tf.Tensor {
  const r = q.rank, lead = q.shape.slice(0, -2);
  const flat3 = (t: tf.Tensor) => tf.reshape(t, [-1, t.shape[r - 2], t.shape[r - 1]]);
  const out = causalAttentionLaidOut([flat3(q), flat3(k), flat3(v)], undefined, scale);
  return tf.reshape(out, [...lead, q.shape[r - 2], v.shape[r - 1]]);
}

/**
 * softmax(scale q k^T (+ scoreBias) with query i seeing keys 0..past+i) v for q [..., T, D],
 * k [..., past + T, D], v [..., past + T, Dv]: [..., T, Dv]. Differentiable in q, k, v and the bias.
 */
export function causalAttention(
  q: tf.Tensor,
  k: tf.Tensor,
  v: tf.Tensor,
  scale: number,
  opts: CausalAttentionOptions = {},
): tf.Tensor {
  pastOf(q, k, v);
  const fusable = !opts.probsOut && !opts.scoreBias && q.dtype === "float32" && k.dtype === "float32" &&
    v.dtype === "float32" && q.size > 0 && v.size > 0 && q.shape[q.rank - 1] <= FLASH_MAX_HEAD_DIM;
  if (!fusable || kernelFor("causalAttention") !== "lmpipe") {
    return causalAttentionByOps(q, k, v, scale, opts);
  }
  // mixed / bf16: the scaled q is rounded to 16 bits as the op chain does; k and v arrive rounded
  if (isLowPrecision(opts.precision)) {
    return causalAttentionFused(boundary(tf.mul(q, scale), opts.precision), k, v, 1);
  }
  return causalAttentionFused(q, k, v, scale);
}

/**
 * The flash kernels with their own gradient on operands `layout` places (q, k, v one tensor or three; plain
 * [BH, T, *] ones without it): out in layout.outShape; the gradient of each distinct input in its shape.
 */
function causalAttentionLaidOut(
  inputs: tf.Tensor[],
  layout: FlashLayout | undefined,
  scale: number,
): tf.Tensor {
  const qkv = (t: tf.Tensor[]) =>
    (t.length === 1 ? [t[0], t[0], t[0]] : t) as [tf.Tensor, tf.Tensor, tf.Tensor];
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xs = args.slice(0, -1) as tf.Tensor[], save = args[args.length - 1] as tf.GradSaveFunc;
    const [out, lse] = flashAttentionCall(...qkv(xs), scale, layout);
    save([...xs, out, lse]);
    return {
      value: out,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const n = saved.length - 2, [so, sl] = saved.slice(n);
        return flashAttentionGradCall(...qkv(saved.slice(0, n)), so, sl, dy as tf.Tensor, scale, layout);
      },
    };
  }) as (...xs: tf.Tensor[]) => tf.Tensor;
  return f(...inputs);
}

// Whether the models hand the flash kernels their own layouts (below); off, they split and transpose as
// before (tests compare both ways bit for bit).
let layoutsEnabled = true;

/** Turns the laid-out flash paths below on or off (off: the split/transpose chains); returns the old state. */
export function setFlashLayoutsEnabled(on: boolean): boolean {
  const old = layoutsEnabled;
  layoutsEnabled = on;
  return old;
}

/**
 * Whether causalAttentionFromQkv and causalAttentionChannelsLast run the flash kernels on heads of
 * `headDim` under `precision` (webgpu with lmpipe's attention kernels, heads of up to FLASH_MAX_HEAD_DIM,
 * fp32 or mixed): the models ask before they take those paths.
 */
export function flashAttentionLaidOutApplies(headDim: number, precision?: Precision): boolean {
  return layoutsEnabled && kernelFor("causalAttention") === "lmpipe" &&
    headDim <= FLASH_MAX_HEAD_DIM && precision !== "bf16";
}

/**
 * Whether causalAttentionFromQkv runs lmpipe's wasm attention kernel now (./wasm.ts): the wasm backend with
 * the kernel on, fp32, and no gradient being recorded (the kernel is forward only).
 */
function wasmAttentionApplies(precision?: Precision): boolean {
  return layoutsEnabled && kernelFor("causalAttentionFromQkv") === "lmpipe" &&
    (precision === undefined || precision === "fp32") && !gradientsRecorded();
}

/**
 * Whether causalAttentionFromQkv has a kernel of its own for heads of `headDim` under `precision` now
 * (webgpu's flash kernels, or wasm's forward kernel outside gradients): gpt asks before it takes that path.
 */
export function attentionFromQkvApplies(headDim: number, precision?: Precision): boolean {
  return flashAttentionLaidOutApplies(headDim, precision) || wasmAttentionApplies(precision);
}

/**
 * Causal self-attention of nHead heads straight from a fused projection qkv [B, T, 3C] (the q, k and v
 * column blocks, heads consecutive within each, C = nHead D): y [B, T, C], head h in columns h D..(h + 1) D,
 * the same as splitting qkv, causalAttention on [B, H, T, D] views and merging the heads back. With the
 * flash kernels (flashAttentionLaidOutApplies) they read q, k, v out of qkv and write y in place, and the
 * gradient is one [B, T, 3C] tensor: no split, transposes or concat. Else that op chain.
 *
 * @example
 * const y = causalAttentionFromQkv(qkv, 12, 1 / 8); // qkv [B, T, 2304] -> y [B, T, 768]
 */
export function causalAttentionFromQkv(
  qkv: tf.Tensor,
  nHead: number,
  scale: number,
  opts: { precision?: Precision } = {},
): tf.Tensor {
  const [B, T, C3] = qkv.shape, C = C3 / 3, D = C / nHead;
  if (qkv.rank !== 3 || !Number.isInteger(D) || D < 1) {
    throw new Error(
      `causalAttentionFromQkv (lib/tensor/ops/attention/mod.ts): expected qkv [B, T, 3 C] with C a multiple ` +
        `of the ${nHead} heads; got [${qkv.shape}]`,
    );
  }
  if (qkv.dtype === "float32" && qkv.size > 0 && wasmAttentionApplies(opts.precision)) {
    return attentionFromQkvWasm(qkv, nHead, scale);
  }
  if (qkv.dtype !== "float32" || qkv.size === 0 || !flashAttentionLaidOutApplies(D, opts.precision)) {
    const [q, k, v] = tf.split(qkv, 3, 2).map((t) =>
      tf.transpose(tf.reshape(t, [B, T, nHead, D]), [0, 2, 1, 3])
    );
    const y = causalAttention(q, k, v, scale, opts); // [B, H, T, D]
    return tf.reshape(tf.transpose(y, [0, 2, 1, 3]), [B, T, C]);
  }
  // head h of batch b: rows of qkv (3C apart), columns h D.. of its block; y alike with rows C apart
  const rows = (off: number, width: number): FlashStrides => ({ off, b: T * width, h: D, r: width, c: 1 });
  const layout: FlashLayout = {
    B,
    H: nHead,
    T,
    Tk: T,
    D,
    Dv: D,
    q: rows(0, C3),
    k: rows(C, C3),
    v: rows(2 * C, C3),
    o: rows(0, C),
    outShape: [B, T, C],
    roundQ: opts.precision === "mixed", // the op chain's boundary on q * scale
  };
  return causalAttentionLaidOut([qkv], layout, scale);
}

/**
 * pixel-attn's value-image attention: queries and keys q, k [B, T, H D] as their projections write them
 * (heads side by side), values v [B, H, T, Dv] (one image of Dv pixels per head and position); y [B, T, Dv,
 * H], the images channels last, the same as heads to [B, H, T, D], causalAttention and a transpose. With
 * the flash kernels (flashAttentionLaidOutApplies) they read q and k where they are and write y in place:
 * no transposes either way. Else that op chain.
 *
 * @example
 * const imgs = causalAttentionChannelsLast(q, k, v, 8, 1 / Math.sqrt(8)); // [4, 256, 64] x2, [4, 8, 256, 400]
 */
export function causalAttentionChannelsLast(
  q: tf.Tensor,
  k: tf.Tensor,
  v: tf.Tensor,
  nHead: number,
  scale: number,
  opts: { precision?: Precision } = {},
): tf.Tensor {
  const [B, T, HD] = q.shape, D = HD / nHead, Dv = v.shape[3] ?? 0;
  if (
    q.rank !== 3 || !tf.util.arraysEqual(k.shape, q.shape) || !Number.isInteger(D) || v.rank !== 4 ||
    !tf.util.arraysEqual(v.shape.slice(0, 3), [B, nHead, T])
  ) {
    throw new Error(
      `causalAttentionChannelsLast (lib/tensor/ops/attention/mod.ts): expected q, k [B, T, H D] and v ` +
        `[B, H, T, Dv] for H = ${nHead}; got q [${q.shape}], k [${k.shape}], v [${v.shape}]`,
    );
  }
  const fusable = [q, k, v].every((t) => t.dtype === "float32" && t.size > 0) &&
    flashAttentionLaidOutApplies(D, opts.precision);
  if (!fusable) {
    const heads = (t: tf.Tensor) => tf.transpose(tf.reshape(t, [B, T, nHead, D]), [0, 2, 1, 3]);
    return tf.transpose(causalAttention(heads(q), heads(k), v, scale, opts), [0, 2, 3, 1]);
  }
  // q, k: head h of batch b in columns h D.. of rows H D apart; v: head-major; y: pixel c of head h at
  // ((b T + t) Dv + c) H + h
  const sideBySide: FlashStrides = { off: 0, b: T * HD, h: D, r: HD, c: 1 };
  const layout: FlashLayout = {
    B,
    H: nHead,
    T,
    Tk: T,
    D,
    Dv,
    q: sideBySide,
    k: sideBySide,
    v: { off: 0, b: nHead * T * Dv, h: T * Dv, r: Dv, c: 1 },
    o: { off: 0, b: T * Dv * nHead, h: 1, r: Dv * nHead, c: nHead },
    outShape: [B, T, Dv, nHead],
    roundQ: opts.precision === "mixed", // the op chain's boundary on q * scale
  };
  return causalAttentionLaidOut([q, k, v], layout, scale);
}
