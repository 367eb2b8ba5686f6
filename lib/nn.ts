// Neural-network pieces shared by the model families: seeded initialisation, LayerNorm and RMSNorm, GELU,
// causal multi-head self-attention (with an optional key/value cache for decoding), the 4x MLP or a gated
// one and the pre-norm transformer block, with the variants of docs/variants.md (BlockVariant). Every matMul against a weight goes through `linear` below (one
// plain 2-D matMul: correct gradients everywhere, XNNPACK's fast path on wasm), which under --precision
// mixed or bf16 rounds its operands and output to 16 bits as autocast does (precision.ts, docs/precision.md).
import { tf } from "./tensor/backend.ts";
import { webgpuMaxTensorBytes } from "./tensor/webgpu/limits.ts";
import { boundary, isLowPrecision } from "./precision.ts";
import {
  attentionFromQkvApplies,
  causalAttention,
  causalAttentionFromQkv,
} from "./tensor/ops/attention/mod.ts";
import type { Precision } from "./models/types.ts";
import type { Rng } from "./rng.ts";
import { layerNorm } from "./tensor/ops/layer_norm/mod.ts";
import { gelu, type GeluForm } from "./tensor/ops/gelu/mod.ts";
import { matMulBias } from "./tensor/ops/matmul/bias.ts";
import { applyRope, type RopeTables } from "./positions.ts";

/** The additive causal mask (lib/tensor/ops/causal_softmax/mod.ts, its op-chain fallback); re-exported. */
export { causalMask } from "./tensor/ops/causal_softmax/mod.ts";

// ---------------------------------------------------------------------------------------------
// Initialisation

/** Normal(0, std) values from `rng` (Box-Muller), so a seed gives the same weights on every backend. */
export function normalArray(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = 1 - rng.next(); // (0, 1]: log is finite
    const u2 = rng.next();
    const r = std * Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

export function normalInit(rng: Rng, shape: number[], std: number): tf.Tensor {
  return tf.tensor(normalArray(rng, shape.reduce((a, b) => a * b, 1), std), shape, "float32");
}

// ---------------------------------------------------------------------------------------------
// Formulations that are correct and fast on every backend (TF.js's own ops are wrong or slow on some)

/**
 * x[..., in] @ W[in, out] (+ b[out]) as one 2-D matMul over all rows: the fast XNNPACK path on wasm
 * and a plain 2-D gradient everywhere (TF.js's batched matMul against a 2-D weight is slow on wasm).
 * With `precision` mixed or bf16, autocast's rule for linear: x, W and b are rounded to 16 bits (their
 * gradients too) and so is the output; the sums are float32.
 *
 * @example
 * const y = linear(x, w, b); // x [B, T, 64], w [64, 256], b [256] -> y [B, T, 256]
 */
export function linear(x: tf.Tensor, w: tf.Tensor2D, b?: tf.Tensor1D, precision?: Precision): tf.Tensor {
  const inDim = w.shape[0], outDim = w.shape[1];
  if (x.shape[x.rank - 1] !== inDim) {
    throw new Error(
      `linear: input's last dimension ${x.shape[x.rank - 1]} does not match weight [${w.shape}]`,
    );
  }
  if (isLowPrecision(precision)) {
    x = boundary(x, precision), w = boundary(w, precision);
    if (b) b = boundary(b, precision);
  }
  const x2 = x.rank === 2 ? x as tf.Tensor2D : tf.reshape(x, [-1, inDim]) as tf.Tensor2D;
  // outside a gradient tape, on wasm with oneDNN, the bias is added as the product is written
  const y = b ? matMulBias(x2, w, b) : tf.matMul(x2, w);
  return boundary(x.rank === 2 ? y : tf.reshape(y, [...x.shape.slice(0, -1), outDim]), precision);
}

/**
 * Rows of `table` [V, C] for int32 `ids` of any shape: [...ids.shape, C]. Differentiable in `table`.
 *
 * @example
 * const tok = embeddingLookup(wte, idx); // wte [V, C], idx int32 [B, T] -> [B, T, C]
 */
export function embeddingLookup(table: tf.Tensor2D, ids: tf.Tensor): tf.Tensor {
  const flat = ids.rank === 1 ? ids : tf.reshape(ids, [-1]);
  const rows = tf.gather(table, flat as tf.Tensor1D, 0);
  return ids.rank === 1 ? rows : tf.reshape(rows, [...ids.shape, table.shape[1]]);
}

/**
 * out[r] = x[r, idx[r]] for x [R, V] and int32 idx [R], via a gather on the flattened tensor (no
 * one-hot, no batchDims): correct forward and gradient on cpu, wasm and webgpu.
 *
 * @example
 * const picked = takeAlongLastAxis(logProbs, targets); // [N, V], int32 [N] -> logProbs[n, targets[n]], [N]
 */
export function takeAlongLastAxis(x: tf.Tensor2D, idx: tf.Tensor1D): tf.Tensor1D {
  const [R, V] = x.shape;
  const flatIdx = tf.add(tf.mul(tf.range(0, R, 1, "int32"), tf.scalar(V, "int32")), idx);
  return tf.gather(tf.reshape(x, [-1]), flatIdx as tf.Tensor1D) as tf.Tensor1D;
}

/**
 * How many rows of a [rows, cols] float32 result fit in one webgpu buffer binding (Infinity on other
 * backends); at least 1. Use it to size the row chunks of a large output head.
 *
 * @example
 * const rows = Math.min(N, maxRowsPerChunk(vocabSize)); // rows of h per logits chunk
 */
export function maxRowsPerChunk(cols: number): number {
  if (tf.getBackend() !== "webgpu") return Infinity;
  const limit = webgpuMaxTensorBytes();
  return Math.max(1, Math.floor(limit / (4 * cols)));
}

// ---------------------------------------------------------------------------------------------
// Layers

/** LayerNorm over the last axis (statistics in float32, eps 1e-5 as PyTorch), optional bias. */
export { layerNorm };

/** GELU, tanh approximation (as GPT-2 used) or exact erf (PyTorch's default). */
export { gelu };

/** RMSNorm over the last axis (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps) * weight (+ bias). */
export function rmsNorm(x: tf.Tensor, weight: tf.Tensor1D, bias?: tf.Tensor1D, eps = 1e-5): tf.Tensor {
  const y = tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))), weight);
  return bias ? tf.add(y, bias) : y;
}

/**
 * How a transformer block computes (docs/variants.md). Every field is optional and its default is
 * GPT-2's block, so `{}` is the block as it always was.
 */
export interface BlockVariant {
  /** The two norms of the block: "layernorm" (default) or "rmsnorm". */
  norm?: "layernorm" | "rmsnorm";
  /** "gelu" (default: c_proj(gelu(c_fc x))) or a gated unit, c_proj(act(x W) * (x V)), act SiLU or GELU. */
  mlp?: "gelu" | "swiglu" | "geglu";
  /** "gelu": q, k and v are gelu(x W + b) instead of x W (+ b). */
  qkvAct?: "none" | "gelu";
  /** The form of every GELU in the block: "tanh" (default, GPT-2's approximation) or "exact" (erf). */
  gelu?: GeluForm;
  /** Key/value heads, a divisor of the query heads (grouped-query attention); default: one per query head. */
  kvHeads?: number;
}

/** The norm a variant uses (LayerNorm or RMSNorm), with the same signature. */
export function normOf(v: BlockVariant = {}): typeof layerNorm {
  return v.norm === "rmsnorm" ? rmsNorm : layerNorm;
}

export interface AttentionParams {
  /** [C, C + 2 kvC] (q, k, v column blocks, heads consecutive within each; kvC = C unless grouped). */
  cAttnW?: tf.Tensor2D;
  cAttnB?: tf.Tensor1D;
  /** qkv=separate: the three projections [C, C], [C, kvC], [C, kvC] instead of cAttnW. */
  cQW?: tf.Tensor2D;
  cQB?: tf.Tensor1D;
  cKW?: tf.Tensor2D;
  cKB?: tf.Tensor1D;
  cVW?: tf.Tensor2D;
  cVB?: tf.Tensor1D;
  /** attn_extra=linear: [C, H], head h adds x_j · extraW[:, h] to the score of every query with key j. */
  extraW?: tf.Tensor2D;
  /** [C, C] */
  cProjW: tf.Tensor2D;
  cProjB?: tf.Tensor1D;
}

/** Keys and values of the positions seen so far, [B, kvHeads, length, D] each; null before the first. */
export interface KVCache {
  k: tf.Tensor4D | null;
  v: tf.Tensor4D | null;
  /** attn_extra=linear: each key's extra score per head, [B, H, 1, length]. */
  keyBias?: tf.Tensor4D | null;
}

/** A cache for one attention layer before the first position. */
export function emptyKVCache(): KVCache {
  return { k: null, v: null, keyBias: null };
}

/** The tensors a cache holds now (to dispose the old ones after a step, or all at the end). */
export function kvCacheTensors(c: KVCache): tf.Tensor[] {
  return [c.k, c.v, c.keyBias].filter((t): t is tf.Tensor4D => t != null);
}

export interface LayerOptions {
  precision?: Precision;
  /** Incremental decoding: attend to (and append to) this cache. Its new tensors are tf.keep()-ed. */
  cache?: KVCache;
  /** When set, each attention layer pushes its softmax probabilities [B, H, T, Tk] (kept) here. */
  attentionProbs?: tf.Tensor[];
  /** The block's variant (default GPT-2's). */
  variant?: BlockVariant;
  /** pos=rope: tables of this call's positions (lib/positions.ts ropeTables), applied to q and k. */
  rope?: RopeTables;
  /** pos=alibi: the score bias [H, T, Tk] of this call's positions (lib/positions.ts alibiBias). */
  alibi?: tf.Tensor3D;
}

/** [B, T, C] -> [B, H, T, D] */
function splitHeads(x: tf.Tensor, nHead: number): tf.Tensor4D {
  const [B, T, C] = x.shape;
  return tf.transpose(tf.reshape(x, [B, T, nHead, C / nHead]), [0, 2, 1, 3]) as tf.Tensor4D;
}

/** [B, G, T, D] -> [B, G·n, T, D], each head repeated n times in a row (head h reads group h / n). */
function repeatHeads(x: tf.Tensor4D, n: number): tf.Tensor4D {
  if (n === 1) return x;
  const [B, G, T, D] = x.shape; // a rank-4 tile (TF.js has no rank-5 tile gradient)
  return tf.reshape(tf.tile(tf.reshape(x, [B, G, 1, T * D]), [1, 1, n, 1]), [B, G * n, T, D]);
}

/** The variant's qkv_act on a projection: gelu (a 16-bit boundary after it) or none. */
function qkvActivation(t: tf.Tensor, opts: LayerOptions): tf.Tensor {
  return opts.variant?.qkvAct === "gelu" ? boundary(gelu(t, opts.variant.gelu), opts.precision) : t;
}

/** q, k and v [B, T, C], [B, T, kvC], [B, T, kvC] of x: fused or separate projections, then qkv_act. */
function projectQkv(x: tf.Tensor3D, p: AttentionParams, kvC: number, opts: LayerOptions): tf.Tensor[] {
  const prec = opts.precision, C = x.shape[2];
  const act = (t: tf.Tensor) => qkvActivation(t, opts);
  if (p.cAttnW) {
    const qkv = act(linear(x, p.cAttnW, p.cAttnB, prec));
    return kvC === C ? tf.split(qkv, 3, 2) : tf.split(qkv, [C, kvC, kvC], 2);
  }
  if (!p.cQW || !p.cKW || !p.cVW) {
    throw new Error("attention: neither c_attn nor c_q, c_k, c_v weights given");
  }
  return [[p.cQW, p.cQB], [p.cKW, p.cKB], [p.cVW, p.cVB]].map(([w, b]) =>
    act(linear(x, w as tf.Tensor2D, b as tf.Tensor1D | undefined, prec))
  );
}

/**
 * Causal multi-head self-attention of x [B, T, C]. With `opts.cache`, x holds the T newest positions
 * and attends to the cached ones too; the cache is replaced by the concatenation (old tensors are the
 * caller's to dispose). The variant's options (grouped keys and values, qkv_act, rotary positions,
 * ALiBi, the extra linear score term) apply as docs/variants.md describes.
 */
export function causalSelfAttention(
  x: tf.Tensor3D,
  p: AttentionParams,
  nHead: number,
  opts: LayerOptions = {},
): tf.Tensor3D {
  const [B, T, C] = x.shape;
  const D = C / nHead, kvHeads = opts.variant?.kvHeads || nHead;
  const prec = opts.precision;
  if (
    p.cAttnW && kvHeads === nHead && !opts.rope && !opts.alibi && !p.extraW && !opts.cache &&
    !opts.attentionProbs && attentionFromQkvApplies(D, prec)
  ) {
    // the flash kernels (webgpu) or the forward kernel (wasm, evaluation) read q, k, v out of the fused
    // projection and write y as [B, T, C]: no split, head transposes or concat (lib/tensor/ops/attention/mod.ts)
    const qkv = qkvActivation(linear(x, p.cAttnW, p.cAttnB, prec), opts);
    const y = boundary(causalAttentionFromQkv(qkv, nHead, 1 / Math.sqrt(D), { precision: prec }), prec);
    return linear(y, p.cProjW, p.cProjB, prec) as tf.Tensor3D;
  }
  const [q0, k0, v0] = projectQkv(x, p, kvHeads * D, opts);
  let q = splitHeads(q0, nHead), k = splitHeads(k0, kvHeads), v = splitHeads(v0, kvHeads);
  if (opts.rope) {
    q = applyRope(q, opts.rope) as tf.Tensor4D;
    k = boundary(applyRope(k, opts.rope), prec) as tf.Tensor4D;
  }
  // attn_extra: head h's extra score for key j is x_j . extraW[:, h], the same for every query
  let keyBias = p.extraW
    ? boundary(
      tf.reshape(tf.transpose(linear(x, p.extraW, undefined, prec), [0, 2, 1]), [B, nHead, 1, T]),
      prec,
    ) as tf.Tensor4D
    : undefined;
  const cache = opts.cache;
  if (cache) {
    if (cache.k && cache.v) {
      k = tf.concat([cache.k, k], 2), v = tf.concat([cache.v, v], 2);
      if (keyBias && cache.keyBias) keyBias = tf.concat([cache.keyBias, keyBias], 3);
    }
    cache.k = tf.keep(k), cache.v = tf.keep(v);
    if (keyBias) cache.keyBias = tf.keep(keyBias);
  }
  const scoreBias = opts.alibi && keyBias ? tf.add(opts.alibi, keyBias) : opts.alibi ?? keyBias;
  const group = nHead / kvHeads;
  // softmax(q k^T / sqrt(D) + scoreBias, causal) v: flash kernels on webgpu when there is no score
  // bias, else matMul, (+ bias,) causal softmax, matMul
  const y = boundary(
    causalAttention(q, repeatHeads(k, group), repeatHeads(v, group), 1 / Math.sqrt(D), {
      precision: prec,
      probsOut: opts.attentionProbs,
      scoreBias,
    }),
    prec,
  ); // [B, H, T, D]
  const merged = tf.reshape(tf.transpose(y, [0, 2, 1, 3]), [B, T, C]);
  return linear(merged, p.cProjW, p.cProjB, prec) as tf.Tensor3D;
}

export interface MlpParams {
  /** [C, 4C] (gelu) or [C, 2F] (swiglu, geglu: the gate's F columns, then the linear unit's F) */
  cFcW: tf.Tensor2D;
  cFcB?: tf.Tensor1D;
  /** [4C, C] or [F, C] */
  cProjW: tf.Tensor2D;
  cProjB?: tf.Tensor1D;
}

/**
 * The feed-forward part: c_proj(gelu(c_fc(x))) (GPT-2's 4x MLP), or with a gated unit (Shazeer 2020)
 * c_proj(act(g) * u) where [g, u] = c_fc(x) and act is SiLU (swiglu) or GELU (geglu).
 */
export function mlp(
  x: tf.Tensor,
  p: MlpParams,
  precision?: Precision,
  kind: BlockVariant["mlp"] = "gelu",
  form: GeluForm = "tanh",
) {
  const hidden = linear(x, p.cFcW, p.cFcB, precision);
  let act: tf.Tensor;
  if (kind === "gelu") act = boundary(gelu(hidden, form), precision);
  else {
    const [g, u] = tf.split(hidden, 2, -1);
    const gate = kind === "swiglu" ? tf.mul(g, tf.sigmoid(g)) : gelu(g, form);
    act = boundary(tf.mul(gate, u), precision);
  }
  return linear(act, p.cProjW, p.cProjB, precision);
}

export interface BlockParams {
  ln1W: tf.Tensor1D;
  ln1B?: tf.Tensor1D;
  attn: AttentionParams;
  ln2W: tf.Tensor1D;
  ln2B?: tf.Tensor1D;
  mlp: MlpParams;
}

/**
 * Pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)). The residual stream stays
 * float32 in mixed precision (as under PyTorch autocast); what enters each matMul is rounded.
 */
export function block(x: tf.Tensor3D, p: BlockParams, nHead: number, opts: LayerOptions = {}): tf.Tensor3D {
  const prec = opts.precision, norm = normOf(opts.variant);
  const a = norm(x, p.ln1W, p.ln1B) as tf.Tensor3D; // float32; linear rounds it where it enters a matMul
  const x1 = tf.add(x, causalSelfAttention(a, p.attn, nHead, opts));
  const m = norm(x1, p.ln2W, p.ln2B);
  return tf.add(x1, mlp(m, p.mlp, prec, opts.variant?.mlp, opts.variant?.gelu)) as tf.Tensor3D;
}
