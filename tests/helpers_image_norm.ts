// The float64 reference of the image models' per-image norm + channel affine + ReLU
// (lib/tensor/ops/image_norm/mod.ts), forward and all three gradients, shared by the tests of its wasm
// and webgpu kernels.
import { IMAGE_NORM_EPS } from "../lib/tensor/ops/image_norm/mod.ts";

/**
 * y, dx, dg, db of the norm of x [N, H, W, C] (flat; n = H * W * C values an image) over each image, times
 * g [C] plus b [C], through ReLU when `relu`, with upstream gradient dy; in float64.
 */
export function imageNormRef(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  b: ArrayLike<number>,
  dy: ArrayLike<number>,
  shape: readonly number[],
  relu: boolean,
): { y: Float64Array; dx: Float64Array; dg: Float64Array; db: Float64Array } {
  const [N, , , C] = shape, n = shape[1] * shape[2] * C;
  const y = new Float64Array(N * n), dx = new Float64Array(N * n);
  const dg = new Float64Array(C), db = new Float64Array(C);
  for (let i = 0; i < N; i++) {
    const o = i * n;
    let mean = 0, v = 0;
    for (let j = 0; j < n; j++) mean += x[o + j] / n;
    for (let j = 0; j < n; j++) v += (x[o + j] - mean) ** 2 / n;
    const rstd = 1 / Math.sqrt(v + IMAGE_NORM_EPS);
    let m1 = 0, m2 = 0;
    const xh = (j: number) => (x[o + j] - mean) * rstd;
    const pre = (j: number) => xh(j) * g[j % C] + b[j % C];
    const d = (j: number) => relu && !(pre(j) > 0) ? 0 : dy[o + j];
    for (let j = 0; j < n; j++) {
      y[o + j] = relu ? Math.max(0, pre(j)) : pre(j);
      m1 += d(j) * g[j % C] / n, m2 += d(j) * g[j % C] * xh(j) / n;
      dg[j % C] += d(j) * xh(j), db[j % C] += d(j);
    }
    for (let j = 0; j < n; j++) dx[o + j] = rstd * (d(j) * g[j % C] - m1 - xh(j) * m2);
  }
  return { y, dx, dg, db };
}
