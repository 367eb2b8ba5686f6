// The image models' per-image norm + ReLU as two WGSL kernels on webgpu (./mod.ts imageNormRelu picks
// them), one workgroup of 256 threads per image of n = H * W * C values:
//   - LmpipeImageNorm: mean, then the mean of squared deviations (tf.moments' two passes), then
//     y = relu((x - mean) * rstd * g[c] + b[c]) with rstd = 1 / sqrt(variance + eps); writes y and the
//     image's (mean, rstd).
//   - LmpipeImageNormGrad: with xhat recomputed and dy masked where y <= 0 (ReLU), dxhat = dy * g[c];
//     dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)); and per channel of the image the sums
//     of dy * xhat and of dy, which mod.ts adds over the images into dg and db.
// Sums are float32, each a strided loop per thread and a halving tree over the workgroup (wgsl.ts).
import * as tf from "@tensorflow/tfjs-core";
import { cachedPipeline, flatView, requireWithinBindingLimit, RowProgram } from "../../webgpu/kernels.ts";
import { wgslRowEntry, wgslTreeReduce } from "../../webgpu/wgsl.ts";
import { IMAGE_NORM_GRAD_KERNEL, IMAGE_NORM_KERNEL } from "../../kernel_names.ts";

// deno-lint-ignore no-explicit-any
type GpuBackend = any;
type TensorInfo = tf.TensorInfo;

const W = 256;

const uniforms = (bound: number) =>
  `struct Uniforms { nanValue: f32, infValue: f32, ${
    Array.from({ length: bound }, (_, i) => `shape${i}: i32, stride${i}: i32,`).join(" ")
  } rows: i32, cols: i32, C: i32, relu: i32, eps: f32, };`;

const SUM = (a: string, b: string) => `${a} + ${b}`;

const forwardShader = () =>
  `${uniforms(5)}
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<uniform> u: Uniforms;
var<workgroup> partial: array<f32, ${W}>;

${wgslRowEntry(W)}
  let C = u32(u.C);
  var acc = 0.0;
  for (var c = lid; c < cols; c = c + ${W}u) { acc = acc + x[base + c]; }
  partial[lid] = acc;
  var live: u32;
  ${wgslTreeReduce(SUM, W)}
  let mean = partial[0] / f32(cols);
  workgroupBarrier(); // everyone has read the sum before partial is reused
  acc = 0.0;
  for (var c = lid; c < cols; c = c + ${W}u) {
    let d = x[base + c] - mean;
    acc = acc + d * d;
  }
  partial[lid] = acc;
  ${wgslTreeReduce(SUM, W)}
  let rstd = 1.0 / sqrt(partial[0] / f32(cols) + u.eps);
  for (var c = lid; c < cols; c = c + ${W}u) {
    let ch = c % C;
    var v = (x[base + c] - mean) * rstd * g[ch] + b[ch];
    if (u.relu != 0 && v < 0.0) { v = 0.0; }
    y[base + c] = v;
  }
  if (lid == 0u) {
    stats[2u * row] = mean;
    stats[2u * row + 1u] = rstd;
  }
}`;

const gradShader = () =>
  `${uniforms(7)}
@group(0) @binding(0) var<storage, read_write> dx: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> sums: array<f32>;
@group(0) @binding(7) var<uniform> u: Uniforms;
var<workgroup> partial: array<f32, ${W}>;

// x's normalised value and dy masked by the ReLU (where the forward output was not positive), at i
fn xhatAt(i: u32, mean: f32, rstd: f32) -> f32 { return (x[i] - mean) * rstd; }
fn dyAt(i: u32, ch: u32, xh: f32) -> f32 {
  if (u.relu != 0 && !(xh * g[ch] + b[ch] > 0.0)) { return 0.0; }
  return dy[i];
}

${wgslRowEntry(W)}
  let C = u32(u.C);
  let mean = stats[2u * row];
  let rstd = stats[2u * row + 1u];
  var s1 = 0.0;
  var s2 = 0.0;
  for (var c = lid; c < cols; c = c + ${W}u) {
    let ch = c % C;
    let xh = xhatAt(base + c, mean, rstd);
    let dxh = dyAt(base + c, ch, xh) * g[ch];
    s1 = s1 + dxh;
    s2 = s2 + dxh * xh;
  }
  partial[lid] = s1;
  var live: u32;
  ${wgslTreeReduce(SUM, W)}
  let m1 = partial[0] / f32(cols);
  workgroupBarrier();
  partial[lid] = s2;
  ${wgslTreeReduce(SUM, W)}
  let m2 = partial[0] / f32(cols);
  for (var c = lid; c < cols; c = c + ${W}u) {
    let ch = c % C;
    let xh = xhatAt(base + c, mean, rstd);
    let dxh = dyAt(base + c, ch, xh) * g[ch];
    dx[base + c] = rstd * (dxh - m1 - xh * m2);
  }
  // this image's share of dg and db: sums over its pixels, per channel
  for (var ch = lid; ch < C; ch = ch + ${W}u) {
    var sg = 0.0;
    var sb = 0.0;
    for (var c = ch; c < cols; c = c + C) {
      let xh = xhatAt(base + c, mean, rstd);
      let d = dyAt(base + c, ch, xh);
      sg = sg + d * xh;
      sb = sb + d;
    }
    sums[2u * row * C + ch] = sg;
    sums[(2u * row + 1u) * C + ch] = sb;
  }
}`;

class LmpipeImageNormProgram extends RowProgram {}
class LmpipeImageNormGradProgram extends RowProgram {}

function sizes(kernel: string, x: TensorInfo, g: TensorInfo, b: TensorInfo, backend: GpuBackend) {
  const [N, H, Wd, C] = x.shape;
  if (x.shape.length !== 4 || tf.util.sizeFromShape(g.shape) !== C || tf.util.sizeFromShape(b.shape) !== C) {
    throw new Error(
      `${kernel}: expected x [N, H, W, C] with g and b of C values, got x [${x.shape}], g [${g.shape}], ` +
        `b [${b.shape}] (imageNormRelu in lib/tensor/ops/image_norm/mod.ts checks this first)`,
    );
  }
  requireWithinBindingLimit(kernel, "x", x, backend);
  return { N, n: H * Wd * C, C };
}

function imageNormKernel(
  { inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs?: tf.NamedAttrMap },
): TensorInfo[] {
  const { x, g, b } = inputs as Record<string, TensorInfo>;
  const { relu, eps } = attrs as unknown as { relu: boolean; eps: number };
  const s = sizes(IMAGE_NORM_KERNEL, x, g, b, backend);
  const device = backend.device as GPUDevice;
  const y = backend.makeTensorInfo(x.shape.slice(), "float32") as TensorInfo;
  const stats = backend.makeTensorInfo([s.N, 2], "float32") as TensorInfo;
  for (const t of [x, g, b, y, stats]) backend.uploadToGPU(t.dataId);
  const int = (v: number) => ({ type: "int32", data: [v] });
  backend.recordAndSubmit(
    new LmpipeImageNormProgram(cachedPipeline(device, IMAGE_NORM_KERNEL, forwardShader), device, s.N, s.n),
    flatView(y),
    [flatView(x), flatView(g), flatView(b), flatView(stats)],
    [int(s.N), int(s.n), int(s.C), int(relu ? 1 : 0), { type: "float32", data: [eps] }],
  );
  return [y, stats];
}

function imageNormGradKernel(
  { inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs?: tf.NamedAttrMap },
): TensorInfo[] {
  const { x, g, b, stats, dy } = inputs as Record<string, TensorInfo>;
  const { relu } = attrs as unknown as { relu: boolean };
  const s = sizes(IMAGE_NORM_GRAD_KERNEL, x, g, b, backend);
  if (!tf.util.arraysEqual(dy.shape, x.shape)) {
    throw new Error(`${IMAGE_NORM_GRAD_KERNEL}: dy [${dy.shape}] must have x's shape [${x.shape}]`);
  }
  const device = backend.device as GPUDevice;
  const dx = backend.makeTensorInfo(x.shape.slice(), "float32") as TensorInfo;
  const sums = backend.makeTensorInfo([s.N * 2 * s.C], "float32") as TensorInfo;
  for (const t of [x, g, b, stats, dy, dx, sums]) backend.uploadToGPU(t.dataId);
  const int = (v: number) => ({ type: "int32", data: [v] });
  backend.recordAndSubmit(
    new LmpipeImageNormGradProgram(
      cachedPipeline(device, IMAGE_NORM_GRAD_KERNEL, gradShader),
      device,
      s.N,
      s.n,
    ),
    flatView(dx),
    [flatView(x), flatView(g), flatView(b), flatView(stats), flatView(dy), flatView(sums)],
    [int(s.N), int(s.n), int(s.C), int(relu ? 1 : 0), { type: "float32", data: [0] }],
  );
  return [dx, sums];
}

/** [y, per-image (mean, 1/std) [N, 2]] of the norm (+ ReLU) in one webgpu dispatch (no gradient). */
export function imageNormCall(
  x: tf.Tensor,
  g: tf.Tensor,
  b: tf.Tensor,
  relu: boolean,
  eps: number,
): tf.Tensor[] {
  return tf.engine().runKernel(
    IMAGE_NORM_KERNEL,
    { x, g, b } as unknown as tf.NamedTensorMap,
    { relu, eps } as unknown as tf.NamedAttrMap,
  ) as tf.Tensor[];
}

/** [dx, per image and channel sums of dy * xhat then dy [N * 2 * C]] in one webgpu dispatch. */
export function imageNormGradCall(
  x: tf.Tensor,
  g: tf.Tensor,
  b: tf.Tensor,
  stats: tf.Tensor,
  dy: tf.Tensor,
  relu: boolean,
): tf.Tensor[] {
  return tf.engine().runKernel(
    IMAGE_NORM_GRAD_KERNEL,
    { x, g, b, stats, dy } as unknown as tf.NamedTensorMap,
    { relu } as unknown as tf.NamedAttrMap,
  ) as tf.Tensor[];
}

for (
  const [kernelName, fn] of [
    [IMAGE_NORM_KERNEL, imageNormKernel],
    [IMAGE_NORM_GRAD_KERNEL, imageNormGradKernel],
  ] as const
) {
  if (!tf.getKernel(kernelName, "webgpu")) {
    tf.registerKernel({ kernelName, backendName: "webgpu", kernelFunc: fn as unknown as tf.KernelFunc });
  }
}
