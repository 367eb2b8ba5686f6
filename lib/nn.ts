// Neural-network pieces shared by the model families: seeded initialisation, LayerNorm, GELU, causal
// multi-head self-attention (with an optional key/value cache for decoding), the 4x MLP and the
// pre-LayerNorm transformer block. Every matMul against a weight goes through `linear` below (one
// plain 2-D matMul: correct gradients everywhere, XNNPACK's fast path on wasm), and every layer
// boundary goes through precision.ts so `--precision mixed` rounds activations and gradients there.
import { tf } from "./tensor/backend.ts";
import { webgpuMaxTensorBytes } from "./tensor/webgpu/limits.ts";
import { boundary } from "./precision.ts";
import { causalAttention } from "./tensor/ops/attention/mod.ts";
import type { Precision } from "./models/types.ts";
import type { Rng } from "./rng.ts";
import { layerNorm } from "./tensor/ops/layer_norm/mod.ts";
import { gelu } from "./tensor/ops/gelu/mod.ts";

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
 *
 * @example
 * const y = linear(x, w, b); // x [B, T, 64], w [64, 256], b [256] -> y [B, T, 256]
 */
export function linear(x: tf.Tensor, w: tf.Tensor2D, b?: tf.Tensor1D): tf.Tensor {
  const inDim = w.shape[0], outDim = w.shape[1];
  if (x.shape[x.rank - 1] !== inDim) {
    throw new Error(
      `linear: input's last dimension ${x.shape[x.rank - 1]} does not match weight [${w.shape}]`,
    );
  }
  const x2 = x.rank === 2 ? x as tf.Tensor2D : tf.reshape(x, [-1, inDim]) as tf.Tensor2D;
  let y: tf.Tensor = tf.matMul(x2, w);
  if (b) y = tf.add(y, b);
  return x.rank === 2 ? y : tf.reshape(y, [...x.shape.slice(0, -1), outDim]);
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

/** GELU, tanh approximation (as GPT-2 used). */
export { gelu };

export interface AttentionParams {
  /** [C, 3C] (q, k, v column blocks, heads consecutive within each). */
  cAttnW: tf.Tensor2D;
  cAttnB?: tf.Tensor1D;
  /** [C, C] */
  cProjW: tf.Tensor2D;
  cProjB?: tf.Tensor1D;
}

/** Keys and values of the positions seen so far, [B, H, length, D] each; null before the first. */
export interface KVCache {
  k: tf.Tensor4D | null;
  v: tf.Tensor4D | null;
}

export interface LayerOptions {
  precision?: Precision;
  /** Incremental decoding: attend to (and append to) this cache. Its new tensors are tf.keep()-ed. */
  cache?: KVCache;
  /** When set, each attention layer pushes its softmax probabilities [B, H, T, Tk] (kept) here. */
  attentionProbs?: tf.Tensor[];
}

/** [B, T, C] -> [B, H, T, D] */
function splitHeads(x: tf.Tensor, nHead: number): tf.Tensor4D {
  const [B, T, C] = x.shape;
  return tf.transpose(tf.reshape(x, [B, T, nHead, C / nHead]), [0, 2, 1, 3]) as tf.Tensor4D;
}

/**
 * Causal multi-head self-attention of x [B, T, C]. With `opts.cache`, x holds the T newest positions
 * and attends to the cached ones too; the cache is replaced by the concatenation (old tensors are the
 * caller's to dispose).
 */
export function causalSelfAttention(
  x: tf.Tensor3D,
  p: AttentionParams,
  nHead: number,
  opts: LayerOptions = {},
): tf.Tensor3D {
  const [B, T, C] = x.shape;
  const D = C / nHead;
  const prec = opts.precision;
  const qkv = boundary(linear(x, p.cAttnW, p.cAttnB), prec);
  const [q0, k0, v0] = tf.split(qkv, 3, 2);
  const q = splitHeads(q0, nHead);
  let k = splitHeads(k0, nHead), v = splitHeads(v0, nHead);
  const cache = opts.cache;
  if (cache) {
    if (cache.k && cache.v) {
      k = tf.concat([cache.k, k], 2), v = tf.concat([cache.v, v], 2);
    }
    cache.k = tf.keep(k), cache.v = tf.keep(v);
  }
  // softmax(q k^T / sqrt(D), causal) v: flash kernels on webgpu, else matMul, causal softmax, matMul
  const y = boundary(
    causalAttention(q, k, v, 1 / Math.sqrt(D), { precision: prec, probsOut: opts.attentionProbs }),
    prec,
  ); // [B, H, T, D]
  const merged = tf.reshape(tf.transpose(y, [0, 2, 1, 3]), [B, T, C]);
  return boundary(linear(merged, p.cProjW, p.cProjB), prec) as tf.Tensor3D;
}

export interface MlpParams {
  /** [C, 4C] */
  cFcW: tf.Tensor2D;
  cFcB?: tf.Tensor1D;
  /** [4C, C] */
  cProjW: tf.Tensor2D;
  cProjB?: tf.Tensor1D;
}

/** The 4x GELU MLP: c_proj(gelu(c_fc(x))). */
export function mlp(x: tf.Tensor, p: MlpParams, precision?: Precision): tf.Tensor {
  const hidden = boundary(linear(x, p.cFcW, p.cFcB), precision);
  const act = boundary(gelu(hidden), precision);
  return boundary(linear(act, p.cProjW, p.cProjB), precision);
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
 * Pre-LayerNorm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)). The residual stream stays
 * float32 in mixed precision (as under PyTorch autocast); what enters each matMul is rounded.
 */
export function block(x: tf.Tensor3D, p: BlockParams, nHead: number, opts: LayerOptions = {}): tf.Tensor3D {
  const prec = opts.precision;
  const a = boundary(layerNorm(x, p.ln1W, p.ln1B), prec) as tf.Tensor3D;
  const x1 = tf.add(x, causalSelfAttention(a, p.attn, nHead, opts));
  const m = boundary(layerNorm(x1, p.ln2W, p.ln2B), prec);
  return tf.add(x1, mlp(m, p.mlp, prec)) as tf.Tensor3D;
}
