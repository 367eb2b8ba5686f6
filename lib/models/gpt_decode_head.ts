// The output head of a cached decoding step (lib/models/gpt_decode.ts) read at half the bytes and half the
// arithmetic, for a sampler that draws from the top k. On the 4-layer, 128-wide model the head (50,304 x 128
// float32, 25.8 MB) is most of a token's time. Here a 16-bit integer copy of it (one scale per row, built
// once per decode) gives an approximate logit a_i per row, by wasm's exact integer dot product, with a
// proven bound r_i on its distance to the float32 logit z_i that gemv_rows computes:
// lo_i = a_i - r_i <= z_i <= a_i + r_i = hi_i. With lambda the k-th largest lo, every row whose z can be
// among the top k (ties included) has hi >= lambda (k rows have z >= lo >= lambda, so the k-th largest z
// is >= lambda, and z <= hi); any lambda with k rows' lo at or above it will do (the code takes the k-th
// largest of the lo's maxima over blocks of 16 rows). Only those candidates are computed in float32, by gemv_rows itself (a row's
// sum does not depend on the other rows), so the sampler sees the same values for them as from the whole
// float32 head, and -Infinity for the rest: the same tokens.
//
// The bound (docs/kernels.md, "bounded integer head"). Row w = s q + d with q integers in [-Q, Q] and d
// exact; the input h = t p + e with p integers, t >= max|h| / Q so |e_j| <= t / 2 (Q: C Q^2 < 2^31, the
// integer sum cannot overflow). The integer sum is exact; a = float(sum) (s t) adds three roundings. With
// u = 2^-24 and g = C u / (1 - C u), a float32 dot product of C terms in any order is within
// g sum_j |x_j y_j| of the exact one (Higham, Accuracy and Stability of Numerical Algorithms, (3.5); wasm has
// no fused multiply-add), and w.h - (s q).(t p) = sum_j d_j h_j + sum_j s q_j e_j, so
//   |z - a| <= sum_j |d_j h_j| + sum_j |s q_j| |e_j| + g sum_j |w_j h_j| + 3u |a|
// bounded by Hoelder with M = max|h| (|e| <= M / 2Q) and by Cauchy-Schwarz with N2 = |h|_2; the smaller is
// used per row. Per row, once: E1 = sum |d|, E2 = |d|_2, S = sum |w| + E1 (>= sum |s q|), W = |w|_2 + E2,
// and rb = [f (E1 + S / 2Q + c S), f (E2 + sqrt(C) W / 2Q + c W)] with c = 2g + 16u (the dot product, the
// conversion, the rounding of a -+ r) and f = 1 + 2g + 2^-10 (the float32 sums of the statistics, t's
// rounding up, m rb's rounding), plus 4u (S + E1) and 4u (W + E2) on E1 and E2 for rounding d = w - s q
// in float32 (kernels.wat q16_head); r = min(M rb0, N2 rb1) + 2^-100 (underflow).
import { type AnyBackend, offsetOf, runRows, type TensorInfo } from "../tensor/wasm/kernels.ts";
import { floatBits, KIND } from "../tensor/wasm/kernel_calls.ts";
import type { HeapView } from "../tensor/ops/gemv/wasm.ts";
import { idsAtLeast, kthLargest, kthLargestByBlocks, TOP_K_BLOCK } from "../top_k.ts";

/**
 * More candidates than this and the step computes the whole float32 head instead (recomputing rows
 * one run at a time costs more than streaming them all).
 */
export const MAX_CANDIDATES = 4096;

const U = 2 ** -24;

const bits32 = new Float32Array(1), int32 = new Uint32Array(bits32.buffer);

/** The smallest float32 at or above x (x finite, >= 0). */
function roundUp32(x: number): number {
  const f = Math.fround(x);
  if (f >= x) return f;
  bits32[0] = f, int32[0] += 1;
  return bits32[0];
}

/** For tests: scales every row's bound (1: the proven one); a smaller one must make a test fail. */
let boundScale = 1;

/** For tests only: multiplies the bounds r_i by `s` (the proven bound at 1); returns the old factor. */
export function setBoundScaleForTests(s: number): number {
  const old = boundScale;
  boundScale = s;
  return old;
}

/** The largest integer magnitude for a width C: C Q^2 stays below 2^31 (the int32 sum cannot overflow). */
export function quantLevels(C: number): number {
  return Math.min(32767, Math.floor(Math.sqrt((2 ** 31 - 1) / C)));
}

/** The 16-bit integer copy of a [rows, C] float32 head on the wasm heap, with each row's scale and bound. */
export class Int16Head {
  readonly #heap: HeapView;
  readonly #head: number;
  readonly #rows: number;
  readonly #C: number;
  readonly #Q: number;
  /** [rows, C] int16 (as rows * C / 2 floats), prm [rows, 4] (scale, rb), lo, hi [rows], their block maxima, p [C] int16. */
  readonly #store: TensorInfo;
  readonly #at: { a16: number; prm: number; lo: number; hi: number; loMax: number; hiMax: number; p: number };
  /** The largest S and W of any row (the overflow check). */
  #maxS = 0;
  #maxW = 0;

  /**
   * Builds the copy of the head at byte offset `head` ([rows, C] float32, C a multiple of 8). Throws
   * nothing: usable() says whether every weight and bound is finite.
   */
  constructor(heap: HeapView, head: number, rows: number, C: number) {
    if (C % 8 !== 0) throw new Error(`Int16Head: C = ${C} is not a multiple of 8`);
    this.#heap = heap, this.#head = head, this.#rows = rows, this.#C = C, this.#Q = quantLevels(C);
    const blocks = Math.ceil(rows / TOP_K_BLOCK), r4 = (n: number) => Math.ceil(n / 4) * 4;
    const sizes = [rows * C / 2, 4 * rows, rows, rows, blocks, blocks, C / 2].map(r4);
    // uninitialized (tf.zeros of these 14 MB took ~40 ms): every value is written before it is read
    const backend: AnyBackend = heap.backend;
    this.#store = backend.makeOutput([sizes.reduce((a, b) => a + b, 0) + 4 * rows], "float32") as TensorInfo;
    let o = offsetOf(backend, this.#store);
    const [a16, prm, lo, hi, loMax, hiMax, p] = sizes.map((s) => (o += 4 * s) - 4 * s);
    this.#at = { a16, prm, lo, hi, loMax, hiMax, p };
    this.#build(o); // the per-row statistics go after the named regions
  }

  /** Quantizes the head and turns each row's statistics into its bound factors (see the file's top). */
  #build(stats: number) {
    const R = this.#rows, C = this.#C, Q = this.#Q, at = this.#at;
    runRows(this.#heap.backend, [KIND.q16Head, this.#head, at.a16, at.prm, stats, C, floatBits(Q)], R, 2 * C);
    const f = this.#heap.f32, st = stats >> 2, prm = at.prm >> 2;
    const g = C * U / (1 - C * U), fudge = 1 + 2 * g + 2 ** -10, c = 2 * g + 16 * U, tiny = C * 2 ** -140;
    let maxS = 0, maxW = 0;
    for (let i = 0; i < R; i++) {
      const e1 = f[st + 4 * i] * fudge, e2 = Math.sqrt(f[st + 4 * i + 1] * fudge + tiny);
      const s1 = f[st + 4 * i + 2] * fudge, w2 = Math.sqrt(f[st + 4 * i + 3] * fudge);
      const E1 = e1 + 4 * U * (s1 + e1) + tiny, E2 = e2 + 4 * U * (w2 + e2);
      const S = s1 + E1, W = w2 + E2;
      const ra = fudge * (E1 + S / (2 * Q) + c * S), rB = fudge * (E2 + Math.sqrt(C) * W / (2 * Q) + c * W);
      if (!(ra < 3e38 && rB < 3e38 && S < 3e38 && W < 3e38)) maxS = Infinity; // NaN or inf: unusable
      f[prm + 4 * i + 1] = roundUp32(Math.min(ra, 3e38)), f[prm + 4 * i + 2] = roundUp32(Math.min(rB, 3e38));
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
    const C = this.#C, Q = this.#Q, at = this.#at, f = this.#heap.f32, h0 = h >> 2;
    let m = 0, sq = 0;
    for (let j = 0; j < C; j++) {
      const v = f[h0 + j], a = Math.abs(v);
      if (!(a <= m)) m = a; // NaN makes m NaN: refused below
      sq += v * v;
    }
    const n2 = roundUp32(Math.sqrt(sq) * (1 + 2 ** -40));
    if (!(m > 0 && m * this.#maxS < 1e36 && n2 * this.#maxW < 1e36)) return null;
    // h = t p + e: t rounded up so that |h_j| / t <= Q, p_j the nearest integer, |e_j| <= t / 2
    const t = roundUp32(m / Q), p = new Int16Array(this.#heap.memory.buffer, at.p, C);
    for (let j = 0; j < C; j++) p[j] = Math.round(f[h0 + j] / t);
    runRows(
      this.#heap.backend,
      [
        KIND.gemvBoundQ16,
        at.a16,
        at.p,
        at.prm,
        at.lo,
        at.hi,
        C,
        floatBits(t),
        floatBits(roundUp32(m * boundScale)),
        floatBits(roundUp32(n2 * boundScale)),
      ],
      n,
      C,
    );
    const kernels = this.#heap.kernels;
    kernels.block_max(at.lo, at.loMax, n);
    kernels.block_max(at.hi, at.hiMax, n);
    const heap = this.#heap.f32, blocks = Math.ceil(n / TOP_K_BLOCK);
    const view = (o: number, len: number) => heap.subarray(o >> 2, (o >> 2) + len);
    // lambda: the k-th largest block maximum of lo, at most the k-th largest lo (k blocks each hold a
    // row whose z >= lo >= it) and almost as tight; the exact k-th largest lo where blocks are too few
    const lambda = k <= blocks
      ? kthLargest(view(at.loMax, blocks), blocks, k)
      : kthLargestByBlocks(view(at.lo, n), n, k, view(at.loMax, blocks));
    const ids = idsAtLeast(view(at.hi, n), n, lambda, view(at.hiMax, blocks));
    return ids.length <= MAX_CANDIDATES ? ids : null;
  }

  /** Copies of the last candidates() call's lo and hi for rows below n (tests, bench/decode.ts). */
  bounds(n: number): { lo: Float32Array; hi: Float32Array } {
    const f = this.#heap.f32, lo = this.#at.lo >> 2, hi = this.#at.hi >> 2;
    return { lo: f.slice(lo, lo + n), hi: f.slice(hi, hi + n) };
  }

  dispose(): void {
    this.#heap.backend.disposeData(this.#store.dataId);
  }
}
