// How a job of lmpipe's wasm kernels (kernels.wat) is described and run piece by piece, shared by
// the main thread (wasm/kernels.ts) and its worker threads (kernels_worker.ts): a job is a list of
// int32 arguments, the first naming the kernel, floats passed as their bits; its "rows" are the
// softmax's rows, or blocks of BLOCK elements for the elementwise kernels.

export const KIND = {
  softmaxRows: 0,
  adamW: 1,
  tanh: 2,
  layerNorm: 3,
  layerNormDx: 4,
  layerNormDwDb: 5,
  gelu: 6,
  geluGrad: 7,
  im2col: 8,
  col2im: 9,
  gemvRows: 10,
  imageNorm: 11,
  imageNormDx: 12,
  imageNormDgDb: 13,
  round16: 14,
  gemvBoundQ16: 15,
  q16Head: 16,
  /** Causal attention forward (lib/tensor/ops/attention/wasm.ts); numbers from 40 on avoid other branches'. */
  attnFwd: 40,
  /** Float64 sums of squares per block (lmpipe's sumOfSquares, wasm/kernels.ts). */
  sumSquares: 41,
  /** Running sums along an axis (lib/tensor/ops/cumsum/wasm.ts). */
  cumsum: 43,
  /** Attention's causal softmax and the softmax gradient (lib/tensor/ops/causal_softmax/wasm.ts). */
  causalSoftmax: 44,
  softmaxGrad: 45,
  /** Exact (erf) GELU and its gradient (lib/tensor/ops/gelu/wasm.ts). */
  geluExact: 46,
  geluExactGrad: 47,
  /** Column sums (a bias gradient) and a + b (lib/tensor/ops/add/wasm.ts). */
  colSums: 48,
  addRows: 49,
  /** Strided copies of contiguous runs (lib/tensor/ops/copy_runs/wasm.ts). */
  copyRuns: 50,
  /** Per-image channel means (lib/tensor/ops/global_pool/wasm.ts). */
  imageMeans: 51,
  /** Rows of a table at int32 indices (lib/tensor/ops/gather/wasm.ts). */
  gatherRows: 52,
  /** Rows of a product on oneDNN's sgemm, one OpenMP thread per piece (row_gemm.ts). */
  gemmRows: 53,
} as const;

/** Elements per row of an elementwise job (a multiple of 4: only the last block has a scalar tail). */
export const BLOCK = 8192;

/** The exports of an instance of kernels.wat. */
export interface KernelExports {
  softmax_rows(
    x: number,
    e: number,
    m: number,
    s: number,
    r0: number,
    r1: number,
    cols: number,
    store: number,
  ): void;
  adamw(
    p: number,
    g: number,
    m: number,
    v: number,
    po: number,
    mo: number,
    vo: number,
    i0: number,
    i1: number,
    ...constants: number[]
  ): void;
  tanh(x: number, y: number, i0: number, i1: number): void;
  causal_softmax(
    x: number,
    y: number,
    stats: number,
    r0: number,
    r1: number,
    T: number,
    K: number,
    past: number,
  ): void;
  softmax_grad(y: number, dy: number, dx: number, r0: number, r1: number, K: number): void;
  erf(x: number, y: number, i0: number, i1: number, s: number): void;
  gelu_erf_grad_out(x: number, e: number, dy: number, dx: number, i0: number, i1: number, rs: number): void;
  col_sums(x: number, y: number, g0: number, g1: number, rows: number, cols: number): void;
  add_rows(
    a: number,
    b: number,
    y: number,
    r0: number,
    r1: number,
    cols: number,
    n: number,
    bcast: number,
  ): void;
  copy_runs(src: number, dst: number, r0: number, r1: number, L: number, ...geometry: number[]): void;
  image_means(x: number, y: number, r0: number, r1: number, P: number, C: number): void;
  gather_rows(table: number, idx: number, out: number, r0: number, r1: number, rowBytes: number): void;
  cumsum(
    x: number,
    y: number,
    r0: number,
    r1: number,
    T: number,
    inner: number,
    blocks: number,
    exclusive: number,
    reverse: number,
  ): void;
  layernorm_fwd(
    x: number,
    w: number,
    b: number,
    y: number,
    mean: number,
    rstd: number,
    r0: number,
    r1: number,
    c: number,
    eps: number,
    hasBias: number,
  ): void;
  layernorm_dx(
    dy: number,
    x: number,
    w: number,
    mean: number,
    rstd: number,
    dx: number,
    r0: number,
    r1: number,
    c: number,
  ): void;
  layernorm_dwdb(
    dy: number,
    x: number,
    mean: number,
    rstd: number,
    dw: number,
    db: number,
    rows: number,
    c: number,
  ): void;
  imgnorm_fwd(
    x: number,
    gb: number,
    y: number,
    stats: number,
    r0: number,
    r1: number,
    n: number,
    c: number,
    eps: number,
    relu: number,
  ): void;
  imgnorm_dx(
    dy: number,
    x: number,
    gb: number,
    stats: number,
    dx: number,
    part: number,
    r0: number,
    r1: number,
    n: number,
    c: number,
    relu: number,
  ): void;
  imgnorm_dgdb(part: number, dg: number, db: number, rows: number, c: number): void;
  gelu_inner(x: number, u: number, i0: number, i1: number, c: number, k: number): void;
  round16(x: number, y: number, i0: number, i1: number, half: number, scale: number): void;
  gelu_out(x: number, t: number, y: number, i0: number, i1: number): void;
  gelu_grad_out(
    x: number,
    t: number,
    dy: number,
    dx: number,
    i0: number,
    i1: number,
    c3: number,
    k: number,
  ): void;
  im2col(x: number, col: number, k0: number, k1: number, ...geometry: number[]): void;
  col2im(col: number, dx: number, i0: number, i1: number, ...geometry: number[]): void;
  gemv_rows(a: number, lda: number, x: number, y: number, r0: number, r1: number, n: number): void;
  gemv_cols(
    a: number,
    lda: number,
    x: number,
    b: number,
    y: number,
    rows: number,
    c0: number,
    c1: number,
    hasBias: number,
  ): void;
  block_max(x: number, m: number, n: number): void;
  q16_head(
    w: number,
    out: number,
    prm: number,
    stats: number,
    r0: number,
    r1: number,
    n: number,
    q: number,
  ): void;
  sum_squares(x: number, part: number, b0: number, b1: number, n: number, scale: number): void;
  /** q, k, v, y, scratch, heads h0..h1, T, H, D, q/k/v strides (batch, head, row), y's, scale (kernels.wat). */
  attn_fwd(...args: number[]): void;
  gemv_bound_q16(
    a: number,
    p: number,
    prm: number,
    lo: number,
    hi: number,
    r0: number,
    r1: number,
    n: number,
    sh: number,
    m: number,
    n2: number,
  ): void;
}

const f32 = new Float32Array(1), i32 = new Int32Array(f32.buffer);

/** A float as the int32 bits of its float32 value (job arguments are int32). */
export function floatBits(x: number): number {
  f32[0] = x;
  return i32[0];
}

function bitsFloat(bits: number): number {
  i32[0] = bits;
  return f32[0];
}

/** Job arguments i0 <= i < i1 as a plain array. */
function sliceOf(a: ArrayLike<number>, i0: number, i1: number): number[] {
  return Array.from({ length: i1 - i0 }, (_, i) => a[i0 + i]);
}

/** A gemmRows piece on the calling thread (row_gemm.ts, bound to the memory). */
export type GemmPiece = (a: ArrayLike<number>, r0: number, r1: number) => void;

/**
 * Runs rows [r0, r1) of the job with arguments `a` (a[0] is its KIND); `gemm` runs gemmRows pieces (a
 * thread without one never takes such a job's rows).
 */
export function runPiece(
  k: KernelExports,
  a: ArrayLike<number>,
  r0: number,
  r1: number,
  gemm?: GemmPiece | null,
): void {
  switch (a[0]) {
    case KIND.softmaxRows: // x, e, m, s, cols, store (1: write e; 0: only m and s)
      return k.softmax_rows(a[1], a[2], a[3], a[4], r0, r1, a[5], a[6]);
    case KIND.adamW: { // p, g, m, v, pOut, mOut, vOut, n, then 9 float constants
      const consts = Array.from({ length: 9 }, (_, i) => bitsFloat(a[9 + i]));
      return k.adamw(
        a[1],
        a[2],
        a[3],
        a[4],
        a[5],
        a[6],
        a[7],
        r0 * BLOCK,
        Math.min(a[8], r1 * BLOCK),
        ...consts,
      );
    }
    case KIND.round16: // x, y, n (a multiple of 4), half (1: binary16, 0: bfloat16), scale
      return k.round16(a[1], a[2], r0 * BLOCK, Math.min(a[3], r1 * BLOCK), a[4], bitsFloat(a[5]));
    case KIND.tanh: // x, y, n
      return k.tanh(a[1], a[2], r0 * BLOCK, Math.min(a[3], r1 * BLOCK));
    case KIND.layerNorm: // x, w, b, y, mean, rstd, C, eps, has bias
      return k.layernorm_fwd(a[1], a[2], a[3], a[4], a[5], a[6], r0, r1, a[7], bitsFloat(a[8]), a[9]);
    case KIND.layerNormDx: // dy, x, w, mean, rstd, dx, C
      return k.layernorm_dx(a[1], a[2], a[3], a[4], a[5], a[6], r0, r1, a[7]);
    case KIND.layerNormDwDb: // dy, x, mean, rstd, dw, db, rows, C: one piece, all rows
      return k.layernorm_dwdb(a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
    case KIND.imageNorm: // x, gb, y, stats, n, C, eps, relu
      return k.imgnorm_fwd(a[1], a[2], a[3], a[4], r0, r1, a[5], a[6], bitsFloat(a[7]), a[8]);
    case KIND.imageNormDx: // dy, x, gb, stats, dx, part, n, C, relu
      return k.imgnorm_dx(a[1], a[2], a[3], a[4], a[5], a[6], r0, r1, a[7], a[8], a[9]);
    case KIND.imageNormDgDb: // part, dg, db, images, C: one piece, all images
      return k.imgnorm_dgdb(a[1], a[2], a[3], a[4], a[5]);
    case KIND.gelu: { // x, y, n, c, k: u into y, tanh in place, then y; block by block (in cache)
      const i0 = r0 * BLOCK, i1 = Math.min(a[3], r1 * BLOCK);
      k.gelu_inner(a[1], a[2], i0, i1, bitsFloat(a[4]), bitsFloat(a[5]));
      k.tanh(a[2], a[2], i0, i1);
      return k.gelu_out(a[1], a[2], a[2], i0, i1);
    }
    case KIND.geluGrad: { // x, dy, dx, n, c, 3c, k: u into dx, tanh in place, then dx
      const i0 = r0 * BLOCK, i1 = Math.min(a[4], r1 * BLOCK);
      k.gelu_inner(a[1], a[3], i0, i1, bitsFloat(a[5]), bitsFloat(a[7]));
      k.tanh(a[3], a[3], i0, i1);
      return k.gelu_grad_out(a[1], a[3], a[2], a[3], i0, i1, bitsFloat(a[6]), bitsFloat(a[7]));
    }
    case KIND.im2col: // x, col, then b0, nb, H, W, Ci, OH, OW, KW, sh, sw, dh, dw, pt, pl, rows
      return k.im2col(a[1], a[2], r0, r1, ...Array.from({ length: 15 }, (_, i) => a[3 + i]));
    case KIND.col2im: // col, dx, then b_base, H, W, Ci, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl
      return k.col2im(a[1], a[2], r0, r1, ...Array.from({ length: 14 }, (_, i) => a[3 + i]));
    case KIND.gemvRows: // a, lda, x, y, n
      return k.gemv_rows(a[1], a[2], a[3], a[4], r0, r1, a[5]);
    case KIND.q16Head: // w, out, prm, stats, n, q
      return k.q16_head(a[1], a[2], a[3], a[4], r0, r1, a[5], bitsFloat(a[6]));
    case KIND.gemvBoundQ16: // a16, p, prm, lo, hi, n, sh, m, n2
      return k.gemv_bound_q16(
        a[1],
        a[2],
        a[3],
        a[4],
        a[5],
        r0,
        r1,
        a[6],
        bitsFloat(a[7]),
        bitsFloat(a[8]),
        bitsFloat(a[9]),
      );
    case KIND.attnFwd: // q, k, v, y, scratch, then T, H, D, q/k/v and y strides (batch, head, row); scale
      return k.attn_fwd(...sliceOf(a, 1, 6), r0, r1, ...sliceOf(a, 6, 15), bitsFloat(a[15]));
    case KIND.sumSquares: // x, part (float64 per block), n, scale
      return k.sum_squares(a[1], a[2], r0, r1, a[3], bitsFloat(a[4]));
    case KIND.cumsum: // x, y, T, inner, blocks of 64 columns, exclusive, reverse
      return k.cumsum(a[1], a[2], r0, r1, a[3], a[4], a[5], a[6], a[7]);
    case KIND.causalSoftmax: // x, y, stats [rows, 2], T, K, past
      return k.causal_softmax(a[1], a[2], a[3], r0, r1, a[4], a[5], a[6]);
    case KIND.softmaxGrad: // y, dy, dx, K
      return k.softmax_grad(a[1], a[2], a[3], r0, r1, a[4]);
    case KIND.geluExact: { // x, y, n, 1/sqrt 2: erf into y, then y; block by block (in cache)
      const i0 = r0 * BLOCK, i1 = Math.min(a[3], r1 * BLOCK);
      k.erf(a[1], a[2], i0, i1, bitsFloat(a[4]));
      return k.gelu_out(a[1], a[2], a[2], i0, i1);
    }
    case KIND.geluExactGrad: { // x, dy, dx, n, 1/sqrt 2, 1/sqrt(2 pi): erf into dx, then dx
      const i0 = r0 * BLOCK, i1 = Math.min(a[4], r1 * BLOCK);
      k.erf(a[1], a[3], i0, i1, bitsFloat(a[5]));
      return k.gelu_erf_grad_out(a[1], a[3], a[2], a[3], i0, i1, bitsFloat(a[6]));
    }
    case KIND.colSums: // x, y, rows, cols; groups of 16 columns
      return k.col_sums(a[1], a[2], r0, r1, a[3], a[4]);
    case KIND.addRows: // a, b, y, cols, n, b a row (1) or a's shape (0)
      return k.add_rows(a[1], a[2], a[3], r0, r1, a[4], a[5], a[6]);
    case KIND.copyRuns: // src, dst, L, then n1, n2, s0, s1, s2, d0, d1, d2
      return k.copy_runs(a[1], a[2], r0, r1, a[3], ...sliceOf(a, 4, 12));
    case KIND.imageMeans: // x, y, P, C; an image per row
      return k.image_means(a[1], a[2], r0, r1, a[3], a[4]);
    case KIND.gatherRows: // table, idx, out, bytes per row; an index per row
      return k.gather_rows(a[1], a[2], a[3], r0, r1, a[4]);
    case KIND.gemmRows: // A [M, K], B [K, N], C [M, N], bias [N] (-1: none), K, N, M; a row of C per row
      if (!gemm) throw new Error("wasm kernels: a gemmRows piece on a thread without oneDNN's sgemm");
      gemm(a, r0, r1);
      if (a[4] >= 0) k.add_rows(a[3], a[4], a[3], r0, r1, a[6], a[6] * a[7], 1);
      return;
    default:
      throw new Error(`wasm kernels: unknown job kind ${a[0]}`);
  }
}
