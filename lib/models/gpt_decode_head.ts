// The output head of a cached decoding step (lib/models/gpt_decode.ts) read at half the bytes, for a
// sampler that draws from the top k. On the 4-layer, 128-wide model the head (50,304 x 128 float32, 25.8 MB)
// is ~80% of a token's time, bound by memory bandwidth. Here a bfloat16 copy of it (12.9 MB, built once
// per decode) gives an approximate logit a_i per row with a proven bound r_i on its distance to the float32
// logit z_i that gemv_rows computes: lo_i = a_i - r_i <= z_i <= a_i + r_i = hi_i. With lambda the k-th
// largest lo, every row whose z can be among the top k (ties included) has hi >= lambda (k rows have
// z >= lo >= lambda, so the k-th largest z is >= lambda, and z <= hi). Only those candidates are computed
// in float32, by gemv_rows itself (one row's sum does not depend on the other rows), so the sampler sees
// the same values for them as from the whole float32 head, and -Infinity for the rest: the same tokens.
//
// The bound (docs/kernels.md, "bounded bf16 head"). With b = bf16(w) row-wise, d = w - b (exact in
// float32), h the head's input, u = 2^-24, n = C and g = n u / (1 - n u): a float32 dot product of n terms
// in any order is within g sum_j |x_j y_j| of the exact one (Higham, Accuracy and Stability, (3.5); wasm
// has no fused multiply-add, every product and sum is rounded once), so
//   |z - a| <= |z - w.h| + |w.h - b.h| + |b.h - a| <= sum_j |d_j h_j| + g (sum |w_j h_j| + sum |b_j h_j|),
// bounded both by Hoelder (max |h| times sums of absolute values) and by Cauchy-Schwarz (|h|_2 times
// 2-norms); the smaller is used per row. Per row, once: E1 = sum |d|, E2 = |d|_2, S = sum |w| + E1
// (>= sum |b|), W = |w|_2 + E2 (>= |b|_2, |w|_2), and rb = [f (E1 + (2g + 8u) S), f (E2 + (2g + 8u) W)]
// with f = 1 + 2g + 2^-10 covering the float32 sums of these statistics (kernels.wat bf16_head) and the
// rounding of m rb; the 8u terms cover rounding a -+ r to float32 (|a| <= (1 + g) m S, resp. |h|_2 W),
// 2^-100 added to r (kernels.wat gemv_bound_bf16) covers underflow in either dot product.
import { tf } from "../tensor/backend.ts";
import { type AnyBackend, offsetOf, runRows } from "../tensor/wasm/kernels.ts";
import { floatBits, KIND } from "../tensor/wasm/kernel_calls.ts";
import type { HeapView } from "../tensor/ops/gemv/wasm.ts";
import { idsAtLeast, kthLargestByBlocks, TOP_K_BLOCK } from "../top_k.ts";

/**
 * More candidates than this and the step computes the whole float32 head instead (recomputing rows
 * one run at a time costs more than streaming them all).
 */
export const MAX_CANDIDATES = 4096;

const U = 2 ** -24;

/** The smallest float32 at or above x (x finite, >= 0). */
function roundUp32(x: number): number {
  const f = Math.fround(x);
  if (f >= x) return f;
  const bits = new Float32Array([f]), i = new Uint32Array(bits.buffer);
  i[0] += 1;
  return bits[0];
}

/** For tests: scales every row's bound (1: the proven one); a smaller one must make a test fail. */
let boundScale = 1;

/** For tests only: multiplies the bounds r_i by `s` (the proven bound at 1); returns the old factor. */
export function setBoundScaleForTests(s: number): number {
  const old = boundScale;
  boundScale = s;
  return old;
}

/** The bfloat16 copy of a [rows, C] float32 head on the wasm heap, with each row's bound. */
export class Bf16Head {
  readonly #heap: HeapView;
  readonly #head: number;
  readonly #rows: number;
  readonly #C: number;
  /** [rows, C] bfloat16 (as rows * C / 2 floats), then rb [rows, 2], lo, hi [rows], their block maxima, x8 [C]. */
  readonly #store: tf.Tensor;
  readonly #at: { a16: number; rb: number; lo: number; hi: number; loMax: number; hiMax: number; x8: number };
  /** The largest S and W of any row (the overflow check). */
  #maxS = 0;
  #maxW = 0;

  /**
   * Builds the copy of the head at byte offset `head` ([rows, C] float32, C a multiple of 8). Throws
   * nothing: usable() says whether every weight and bound is finite.
   */
  constructor(heap: HeapView, head: number, rows: number, C: number) {
    if (C % 8 !== 0) throw new Error(`Bf16Head: C = ${C} is not a multiple of 8`);
    this.#heap = heap, this.#head = head, this.#rows = rows, this.#C = C;
    const blocks = Math.ceil(rows / TOP_K_BLOCK), r4 = (n: number) => Math.ceil(n / 4) * 4;
    const sizes = [rows * C / 2, 2 * rows, rows, rows, blocks, blocks, C].map(r4);
    this.#store = tf.keep(tf.zeros([sizes.reduce((a, b) => a + b, 0) + 4 * rows]));
    const backend: AnyBackend = heap.backend;
    let o = offsetOf(backend, this.#store);
    const [a16, rb, lo, hi, loMax, hiMax, x8] = sizes.map((s) => (o += 4 * s) - 4 * s);
    this.#at = { a16, rb, lo, hi, loMax, hiMax, x8 };
    this.#build(o); // the per-row statistics go after the named regions
  }

  /** Rounds the head to bfloat16 and turns each row's statistics into its rb (see the file's top). */
  #build(stats: number) {
    const R = this.#rows, C = this.#C, at = this.#at;
    this.#heap.kernels.bf16_head(this.#head, at.a16, stats, 0, R, C);
    const f = this.#heap.f32, st = stats >> 2, rb = at.rb >> 2;
    const g = C * U / (1 - C * U), fudge = 1 + 2 * g + 2 ** -10, tiny = C * 2 ** -140;
    let maxS = 0, maxW = 0;
    for (let i = 0; i < R; i++) {
      const e1 = f[st + 4 * i] * fudge + tiny, e2 = Math.sqrt(f[st + 4 * i + 1] * fudge + tiny);
      const S = f[st + 4 * i + 2] * fudge + e1, W = Math.sqrt(f[st + 4 * i + 3] * fudge) + e2;
      const ra = fudge * (e1 + (2 * g + 8 * U) * S), rB = fudge * (e2 + (2 * g + 8 * U) * W);
      if (!(ra < 3e38 && rB < 3e38 && S < 3e38 && W < 3e38)) maxS = Infinity; // NaN or inf: unusable
      f[rb + 2 * i] = roundUp32(Math.min(ra, 3e38)), f[rb + 2 * i + 1] = roundUp32(Math.min(rB, 3e38));
      if (S > maxS) maxS = S;
      if (W > maxW) maxW = W;
    }
    this.#maxS = maxS, this.#maxW = maxW;
  }

  /** Whether every weight, and so every bound, is finite (else the step keeps the float32 head). */
  usable(): boolean {
    return this.#maxS < Infinity && this.#maxW < Infinity;
  }

  /**
   * The ids, ascending, below `n` whose float32 logit z = head[i] . h can be among the top k of ids
   * below n (ties included), for h the C floats at byte offset `h`; null where the bound cannot decide
   * cheaply (h not finite or so large that a sum could overflow, or more than MAX_CANDIDATES candidates):
   * then the caller computes every logit. 1 <= k <= n <= rows.
   */
  candidates(h: number, k: number, n: number): number[] | null {
    const C = this.#C, at = this.#at, f = this.#heap.f32, h0 = h >> 2, x8 = at.x8 >> 2;
    let m = 0, sq = 0;
    for (let j = 0; j < C; j++) {
      const v = f[h0 + j], a = Math.abs(v);
      if (!(a <= m)) m = a; // NaN makes m NaN: refused below
      sq += v * v;
    }
    for (let j = 0; j < C; j += 8) {
      for (let e = 0; e < 4; e++) {
        f[x8 + j + e] = f[h0 + j + 2 * e], f[x8 + j + 4 + e] = f[h0 + j + 2 * e + 1];
      }
    }
    const n2 = roundUp32(Math.sqrt(sq) * (1 + 2 ** -40));
    if (!(m * this.#maxS < 1e36 && n2 * this.#maxW < 1e36)) return null;
    const scale = boundScale;
    runRows(
      this.#heap.backend,
      [
        KIND.gemvBoundBf16,
        at.a16,
        at.x8,
        at.rb,
        at.lo,
        at.hi,
        C,
        floatBits(roundUp32(m * scale)),
        floatBits(roundUp32(n2 * scale)),
      ],
      n,
      C,
    );
    const k8 = this.#heap.kernels;
    k8.block_max(at.lo, at.loMax, n);
    k8.block_max(at.hi, at.hiMax, n);
    const heap = this.#heap.f32, blocks = Math.ceil(n / TOP_K_BLOCK);
    const view = (o: number, len: number) => heap.subarray(o >> 2, (o >> 2) + len);
    const lambda = kthLargestByBlocks(view(at.lo, n), n, k, view(at.loMax, blocks));
    const ids = idsAtLeast(view(at.hi, n), n, lambda, view(at.hiMax, blocks));
    return ids.length <= MAX_CANDIDATES ? ids : null;
  }

  /** Copies of the last candidates() call's lo and hi for rows below n (tests, bench/decode.ts). */
  bounds(n: number): { lo: Float32Array; hi: Float32Array } {
    const f = this.#heap.f32, lo = this.#at.lo >> 2, hi = this.#at.hi >> 2;
    return { lo: f.slice(lo, lo + n), hi: f.slice(hi, hi + n) };
  }

  dispose(): void {
    this.#store.dispose();
  }
}
