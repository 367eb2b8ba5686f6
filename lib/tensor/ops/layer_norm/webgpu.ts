// LayerNorm as WGSL kernels on webgpu, registered under the names ops/layer_norm/mod.ts calls
// (kernel_names.ts; kernel_choice.ts decides when). TF.js spells LayerNorm as ~10 programs forward and
// ~20 backward, each a pass over the tensor; here it is one dispatch forward and two backward.
//   - LmpipeLayerNorm: one workgroup per row (rowWorkgroup threads; each takes the row's elements
//     t, t + W, ...): row sum -> mean, sum of squared deviations -> rstd = 1 / sqrt(var + eps), then
//     y = (x - mean) * rstd * w (+ b); writes y and the row mean and rstd (kept for the gradient).
//   - LmpipeLayerNormGrad, dispatch 1: dx, one workgroup per row, both row sums (of g = dy w and of
//     g xhat) reduced together as a vec2; dispatch 2: dw and db, the column sums over rows. For those a
//     workgroup takes COL_TILE adjacent columns with LANES threads per column; lane l adds rows l,
//     l + LANES, ... (neighbouring threads read neighbouring columns of a row), then the lanes' sums
//     are added in lane order. This keeps C / COL_TILE * 256 threads busy (C = 768: 48 workgroups)
//     without a temporary buffer of partial sums and the third dispatch a two-level reduction over
//     row blocks would need; rows / LANES additions per thread stay short for rows up to B * T.
// Non-finite values: a NaN or infinity in a row of x (or of dy, backward) makes that row's outputs NaN,
// tested on the bits (WGSL lets compilers assume NaN away in float arithmetic), so the mixed-precision
// loss scaler still sees its overflows.
import * as tf from "@tensorflow/tfjs-core";
import { LAYER_NORM_GRAD_KERNEL, LAYER_NORM_KERNEL } from "../../kernel_names.ts";
import {
  cachedPipeline,
  flatView,
  requireShape,
  requireWithinBindingLimit,
  RowProgram,
  rowWorkgroup,
  setWebGPUKernelsRegistered,
  workgroupGrid,
} from "../../webgpu/kernels.ts";
import { wgslRowEntry, wgslTreeReduce } from "../../webgpu/wgsl.ts";

// The backend's internals are reached on purpose (TF.js 4.22: recordAndSubmit, runWebGPUProgram,
// uploadToGPU, makeTensorInfo, disposeData, device), typed loosely as in lib/tensor/webgpu/kernels.ts.
// deno-lint-ignore no-explicit-any
type GpuBackend = any;
type TensorInfo = tf.TensorInfo;

/** Columns per workgroup of the dw/db column sums, and threads (lanes) per column. */
const COL_TILE = 16;
const LANES = 16;

/** isFinite on the bits (neither NaN nor an infinity). */
const WGSL_IS_FINITE = `
fn isFinite(v: f32) -> bool { return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u; }`;

/** recordAndSubmit's leading uniforms for `k` tensors bound as 1-D views: NaN, Infinity, (shape, stride) each. */
function tfjsUniformFields(k: number): string {
  return "nanValue: f32, infValue: f32, " +
    Array.from({ length: k }, (_, i) => `shape${i}: i32, stride${i}: i32,`).join(" ");
}

// --- LayerNorm forward -------------------------------------------------------------------------------
// Bound: y (output), x, w, [b], mean, rstd; then our uniforms rows, cols, eps.
const layerNormShader = (w: number, bias: boolean) => {
  const k = bias ? 6 : 5;
  const at = bias ? 4 : 3; // binding of mean
  return `
struct Uniforms { ${tfjsUniformFields(k)} rows: i32, cols: i32, eps: f32, };
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
${bias ? "@group(0) @binding(3) var<storage, read> bias: array<f32>;" : ""}
@group(0) @binding(${at}) var<storage, read_write> mean: array<f32>;
@group(0) @binding(${at + 1}) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(${k}) var<uniform> u: Uniforms;
var<workgroup> partial: array<f32, ${w}>;
${WGSL_IS_FINITE}

${wgslRowEntry(w)}
  var acc = 0.0;
  var bad = false;
  for (var c = lid; c < cols; c = c + ${w}u) {
    let v = x[base + c];
    bad = bad || !isFinite(v);
    acc = acc + v;
  }
  partial[lid] = select(acc, u.nanValue, bad);
  var live: u32;
  ${wgslTreeReduce((a, b) => `${a} + ${b}`, w)}
  let mu = partial[0] / f32(cols);
  let rowNaN = !isFinite(mu); // a non-finite x anywhere in the row, or a sum that overflowed
  workgroupBarrier(); // everyone has read the sum before partial is reused
  var sq = 0.0;
  for (var c = lid; c < cols; c = c + ${w}u) {
    let d = x[base + c] - mu;
    sq = sq + d * d;
  }
  partial[lid] = sq;
  ${wgslTreeReduce((a, b) => `${a} + ${b}`, w)}
  let variance = partial[0] / f32(cols);
  let rs = 1.0 / sqrt(variance + u.eps);
  for (var c = lid; c < cols; c = c + ${w}u) {
    let v = (x[base + c] - mu) * rs * weight[c]${bias ? " + bias[c]" : ""};
    y[base + c] = select(v, u.nanValue, rowNaN);
  }
  if (lid == 0u) {
    mean[row] = select(mu, u.nanValue, rowNaN);
    rstd[row] = select(rs, u.nanValue, rowNaN);
  }
}`;
};

// --- LayerNorm gradient: dx ---------------------------------------------------------------------------
// Bound: dx (output), dy, x, w, mean, rstd; then rows, cols.
const layerNormDxShader = (w: number) => `
struct Uniforms { ${tfjsUniformFields(6)} rows: i32, cols: i32, };
@group(0) @binding(0) var<storage, read_write> dx: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;
@group(0) @binding(6) var<uniform> u: Uniforms;
var<workgroup> partial: array<vec2<f32>, ${w}>;
${WGSL_IS_FINITE}

${wgslRowEntry(w)}
  let mu = mean[row];
  let rs = rstd[row];
  // sums of g = dy w and of g xhat over the row, together
  var acc = vec2<f32>(0.0, 0.0);
  var bad = !isFinite(mu) || !isFinite(rs);
  for (var c = lid; c < cols; c = c + ${w}u) {
    let d = dy[base + c];
    bad = bad || !isFinite(d);
    let g = d * weight[c];
    let xh = (x[base + c] - mu) * rs;
    acc = acc + vec2<f32>(g, g * xh);
  }
  partial[lid] = select(acc, vec2<f32>(u.nanValue, u.nanValue), bad);
  var live: u32;
  ${wgslTreeReduce((a, b) => `${a} + ${b}`, w)}
  let means = partial[0] / f32(cols); // mean(g), mean(g xhat)
  let rowNaN = !isFinite(means.x) || !isFinite(means.y);
  for (var c = lid; c < cols; c = c + ${w}u) {
    let g = dy[base + c] * weight[c];
    let xh = (x[base + c] - mu) * rs;
    let v = rs * (g - means.x - xh * means.y);
    dx[base + c] = select(v, u.nanValue, rowNaN);
  }
}`;

// --- LayerNorm gradient: dw, db -----------------------------------------------------------------------
// Bound: dw (output), dy, x, mean, rstd, db; then rows, cols. Workgroup (COL_TILE, LANES): x is the
// column within the tile, y the lane. No early return: every thread reaches the barrier.
const layerNormDwDbShader = `
struct Uniforms { ${tfjsUniformFields(6)} rows: i32, cols: i32, };
@group(0) @binding(0) var<storage, read_write> dw: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> rstd: array<f32>;
@group(0) @binding(5) var<storage, read_write> db: array<f32>;
@group(0) @binding(6) var<uniform> u: Uniforms;
var<workgroup> partial: array<vec2<f32>, ${COL_TILE * LANES}>;

@compute @workgroup_size(${COL_TILE}, ${LANES})
fn _start(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
  let col = (wid.y * nwg.x + wid.x) * ${COL_TILE}u + lid.x;
  let rows = u32(u.rows);
  let cols = u32(u.cols);
  var acc = vec2<f32>(0.0, 0.0); // sum of dy xhat, sum of dy
  if (col < cols) {
    for (var r = lid.y; r < rows; r = r + ${LANES}u) {
      let d = dy[r * cols + col];
      let xh = (x[r * cols + col] - mean[r]) * rstd[r];
      acc = acc + vec2<f32>(d * xh, d);
    }
  }
  partial[lid.y * ${COL_TILE}u + lid.x] = acc;
  workgroupBarrier();
  if (lid.y == 0u && col < cols) {
    var s = partial[lid.x];
    for (var l = 1u; l < ${LANES}u; l = l + 1u) { s = s + partial[l * ${COL_TILE}u + lid.x]; }
    dw[col] = s.x;
    db[col] = s.y;
  }
}`;

class LmpipeLayerNormProgram extends RowProgram {}

class LmpipeLayerNormDxProgram extends RowProgram {}

class LmpipeLayerNormDwDbProgram {
  outputShape: number[];
  dispatch: [number, number, number];
  size = false;
  constructor(readonly pipeline: GPUComputePipeline, device: GPUDevice, cols: number) {
    this.outputShape = [cols];
    this.dispatch = workgroupGrid(device, Math.ceil(cols / COL_TILE), LAYER_NORM_GRAD_KERNEL);
  }
}

const int = (v: number) => ({ type: "int32", data: [v] });

/** Rows and C of x [..., C]; throws, naming the kernel and the fix, for inputs the kernels do not take. */
function rowsOf(kernel: string, x: TensorInfo, backend: GpuBackend): { rows: number; cols: number } {
  const cols = x.shape[x.shape.length - 1];
  const size = tf.util.sizeFromShape(x.shape);
  if (x.dtype !== "float32" || x.shape.length < 1 || size === 0 || cols % 4 !== 0) {
    throw new Error(
      `${kernel}: x must be a non-empty float32 tensor whose last axis is a multiple of 4, got ` +
        `[${x.shape}] ${x.dtype}; layerNorm (lib/tensor/ops/layer_norm/mod.ts) runs the op chain for other inputs`,
    );
  }
  requireWithinBindingLimit(kernel, "x", x, backend);
  return { rows: size / cols, cols };
}

function layerNormKernel(
  { inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs?: tf.NamedAttrMap },
): TensorInfo[] {
  const { x, w, b } = inputs as Record<string, TensorInfo>; // b is absent without a bias
  const eps = (attrs as { eps: number }).eps;
  const { rows, cols } = rowsOf(LAYER_NORM_KERNEL, x, backend);
  requireShape(LAYER_NORM_KERNEL, "the weight", w, [cols]);
  if (b) requireShape(LAYER_NORM_KERNEL, "the bias", b, [cols]);
  const device = backend.device as GPUDevice;
  const y = backend.makeTensorInfo(x.shape.slice(), "float32") as TensorInfo;
  const mean = backend.makeTensorInfo([rows], "float32") as TensorInfo;
  const rstd = backend.makeTensorInfo([rows], "float32") as TensorInfo;
  const bound = b ? [x, w, b, mean, rstd] : [x, w, mean, rstd];
  for (const t of [y, ...bound]) backend.uploadToGPU(t.dataId);
  const wg = rowWorkgroup(cols);
  const key = `${LAYER_NORM_KERNEL}${wg}${b ? "b" : ""}`;
  const pipeline = cachedPipeline(device, key, () => layerNormShader(wg, !!b));
  backend.recordAndSubmit(
    new LmpipeLayerNormProgram(pipeline, device, rows, cols),
    flatView(y),
    bound.map(flatView),
    [int(rows), int(cols), { type: "float32", data: [eps] }],
  );
  return [y, mean, rstd];
}

function layerNormGradKernel(
  { inputs, backend }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend },
): TensorInfo[] {
  const { dy, x, w, mean, rstd } = inputs as Record<string, TensorInfo>;
  const { rows, cols } = rowsOf(LAYER_NORM_GRAD_KERNEL, x, backend);
  requireShape(LAYER_NORM_GRAD_KERNEL, "dy", dy, x.shape);
  requireShape(LAYER_NORM_GRAD_KERNEL, "the weight", w, [cols]);
  requireShape(LAYER_NORM_GRAD_KERNEL, "mean", mean, [rows]);
  requireShape(LAYER_NORM_GRAD_KERNEL, "rstd", rstd, [rows]);
  const device = backend.device as GPUDevice;
  const dx = backend.makeTensorInfo(x.shape.slice(), "float32") as TensorInfo;
  const dw = backend.makeTensorInfo([cols], "float32") as TensorInfo;
  const db = backend.makeTensorInfo([cols], "float32") as TensorInfo;
  for (const t of [dy, x, w, mean, rstd, dx, dw, db]) backend.uploadToGPU(t.dataId);
  const wg = rowWorkgroup(cols);
  const dxPipeline = cachedPipeline(device, `${LAYER_NORM_GRAD_KERNEL}Dx${wg}`, () => layerNormDxShader(wg));
  backend.recordAndSubmit(
    new LmpipeLayerNormDxProgram(dxPipeline, device, rows, cols),
    flatView(dx),
    [dy, x, w, mean, rstd].map(flatView),
    [int(rows), int(cols)],
  );
  const sumsPipeline = cachedPipeline(device, `${LAYER_NORM_GRAD_KERNEL}DwDb`, () => layerNormDwDbShader);
  backend.recordAndSubmit(
    new LmpipeLayerNormDwDbProgram(sumsPipeline, device, cols),
    flatView(dw),
    [dy, x, mean, rstd, db].map(flatView),
    [int(rows), int(cols)],
  );
  return [dx, dw, db];
}

const KERNELS = [
  [LAYER_NORM_KERNEL, layerNormKernel],
  [LAYER_NORM_GRAD_KERNEL, layerNormGradKernel],
] as const;

/**
 * Registers the LayerNorm kernels for webgpu (true) or takes them out of the registry (false), so that
 * layerNorm runs its op chain while the other fused kernels stay on: for tests that need whole training
 * steps bit-identical with the fused kernels on and off (tests/webgpu_kernels_test.ts), since these
 * kernels add in their own order.
 */
export function setLayerNormKernelsRegistered(on: boolean): void {
  setWebGPUKernelsRegistered(KERNELS, on);
}

// Registered once, when this module is first imported (backend.ts loads the webgpu backend first).
setLayerNormKernelsRegistered(true);
