// Neural-network pieces shared by the model families: seeded initialisation, LayerNorm, GELU, causal
// multi-head self-attention (with an optional key/value cache for decoding), the 4x MLP and the
// pre-LayerNorm transformer block. Every matMul against a weight goes through fixes.ts `linear` (one
// plain 2-D matMul: correct gradients everywhere, XNNPACK's fast path on wasm), and every layer
// boundary goes through precision.ts so `--precision mixed` rounds activations and gradients there.
import { tf } from "./tensor/backend.ts";
import { linear } from "./tensor/fixes.ts";
import { boundary } from "./precision.ts";
import { causalAttention } from "./tensor/ops/attention/mod.ts";
import type { Precision } from "./models/types.ts";
import type { Rng } from "./rng.ts";
import { layerNorm } from "./tensor/layer_norm.ts";
import { gelu } from "./tensor/gelu.ts";

/** The additive causal mask moved to lib/tensor/causal_softmax.ts (its op-chain fallback); re-exported. */
export { causalMask } from "./tensor/causal_softmax.ts";

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
