// Where a transformer gets token positions from, besides learned embeddings (docs/variants.md):
// sinusoidal embeddings added to the input (Vaswani et al. 2017), rotary embeddings that turn q and k
// (Su et al. 2021, RoFormer) and ALiBi's linear distance penalty on the attention scores (Press et al.
// 2021). All three are fixed functions of the absolute position, so a decoding step at position `start`
// gets the same numbers as the full forward pass: the tables are computed in float64 here, per call, for
// positions start..start+T-1, and rounded to float32 once.
import { tf } from "./tensor/backend.ts";

/**
 * Sinusoidal embeddings [T, C] of positions start..start+T-1: `scale` sin in even columns, `scale` cos in
 * odd ones. The default scale, 0.02, is the std GPT-2 draws token (and learned position) embeddings from,
 * so tokens and positions start at the ratio they have in GPT-2. Vaswani et al. added the unscaled table
 * to embeddings multiplied by sqrt(C); with GPT-2's initialisation an unscaled table drowns the tokens
 * (docs/variants.md measures it).
 */
export function sinusoidalTable(start: number, T: number, C: number, scale = 0.02): tf.Tensor2D {
  if (C % 2 !== 0) throw new Error(`sinusoidal positions need an even width, got ${C}`);
  const out = new Float32Array(T * C);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < C / 2; i++) {
      const angle = (start + t) / 10000 ** ((2 * i) / C);
      out[t * C + 2 * i] = scale * Math.sin(angle);
      out[t * C + 2 * i + 1] = scale * Math.cos(angle);
    }
  }
  return tf.tensor2d(out, [T, C]);
}

/** What rotary embeddings multiply by: cos [T, D] and the signed sin [T, D] (-sin even, +sin odd). */
export interface RopeTables {
  cos: tf.Tensor2D;
  sin: tf.Tensor2D;
}

/**
 * RoPE tables for head size D at positions start..start+T-1: the pair (2i, 2i+1) turns by the angle
 * p·θ_i with θ_i = base^(-2i/D) (base 10000, RoFormer's choice).
 */
export function ropeTables(start: number, T: number, D: number, base = 10000): RopeTables {
  if (D % 2 !== 0) throw new Error(`rotary positions need an even head size, got ${D}`);
  const cos = new Float32Array(T * D), sin = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < D / 2; i++) {
      const angle = (start + t) * base ** (-(2 * i) / D);
      const c = Math.cos(angle), s = Math.sin(angle);
      cos[t * D + 2 * i] = c, cos[t * D + 2 * i + 1] = c;
      sin[t * D + 2 * i] = -s, sin[t * D + 2 * i + 1] = s;
    }
  }
  return { cos: tf.tensor2d(cos, [T, D]), sin: tf.tensor2d(sin, [T, D]) };
}

/**
 * x [..., T, D] with each pair (x_2i, x_2i+1) at row t rotated by the tables' angle:
 * (x_2i cos - x_2i+1 sin, x_2i sin + x_2i+1 cos). Differentiable in x.
 */
export function applyRope(x: tf.Tensor, r: RopeTables): tf.Tensor {
  const pairs = tf.reshape(x, [-1, 2]); // rank 2: webgpu's reverse mishandles rank 5
  const swapped = tf.reshape(tf.reverse(pairs, 1), x.shape); // (x_2i+1, x_2i)
  return tf.add(tf.mul(x, r.cos), tf.mul(swapped, r.sin));
}

/**
 * ALiBi's head slopes: for H a power of two, m_h = 2^(-8h/H), h = 1..H; otherwise the slopes of the
 * power of two n below H, then every other slope of 2n (Press et al.'s rule).
 */
export function alibiSlopes(H: number): number[] {
  const pow2 = (n: number) => Array.from({ length: n }, (_, h) => 2 ** (-8 * (h + 1) / n));
  const n = 2 ** Math.floor(Math.log2(H));
  if (n === H) return pow2(H);
  return [...pow2(n), ...pow2(2 * n).filter((_, i) => i % 2 === 0).slice(0, H - n)];
}

/**
 * ALiBi's score bias [H, T, start + T]: -m_h (i - j) for query i (at absolute position start + i) and
 * key j <= start + i; 0 where the causal mask hides the key anyway.
 */
export function alibiBias(H: number, start: number, T: number): tf.Tensor3D {
  const slopes = alibiSlopes(H), Tk = start + T;
  const out = new Float32Array(H * T * Tk);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < T; i++) {
      for (let j = 0; j <= start + i; j++) out[(h * T + i) * Tk + j] = slopes[h] * (j - start - i);
    }
  }
  return tf.tensor3d(out, [H, T, Tk]);
}
