// The float64 reference of causal attention read out of gpt's fused projection, shared by
// tests/wasm_attention_test.ts and its child process: qkv [B, T, 3C] (q, k, v column blocks, head h in
// columns h D.. of each), y [B, T, C].

/** gpt-sized shapes [B, T, H, D] and odd ones: T and D not multiples of 4 or 8, one query, one head. */
export const ATTENTION_SHAPES: [number, number, number, number][] = [
  [2, 128, 4, 32],
  [3, 37, 3, 12],
  [1, 1, 2, 5],
  [2, 9, 1, 7],
  [1, 70, 2, 64],
  [1, 33, 5, 19],
];

/** softmax(scale q k^T, causal) v per head in float64. */
export function attentionQkvRef(
  qkv: Float32Array,
  B: number,
  T: number,
  H: number,
  D: number,
  scale: number,
): Float64Array {
  const C = H * D, y = new Float64Array(B * T * C), s = new Float64Array(T);
  const at = (b: number, t: number, col: number) => qkv[(b * T + t) * 3 * C + col];
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        let max = -Infinity;
        for (let j = 0; j <= i; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += at(b, i, h * D + d) * at(b, j, C + h * D + d);
          s[j] = dot * scale;
          max = Math.max(max, s[j]);
        }
        let sum = 0;
        for (let j = 0; j <= i; j++) sum += s[j] = Math.exp(s[j] - max);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j <= i; j++) acc += s[j] * at(b, j, 2 * C + h * D + d);
          y[(b * T + i) * C + h * D + d] = acc / sum;
        }
      }
    }
  }
  return y;
}

/** The largest |a - b| relative to the largest |b| (outputs are averages of v: one scale fits all). */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let err = 0, big = 0;
  for (let i = 0; i < b.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    big = Math.max(big, Math.abs(b[i]));
  }
  return big > 0 ? err / big : err;
}
