// Attention's causal softmax as two WGSL kernels on webgpu (lib/tensor/ops/causal_softmax/mod.ts picks them):
//   - LmpipeCausalSoftmax: softmax over the last axis of scores [..., T, past + T] where query row i
//     (absolute position past + i) sees keys 0..past+i. The mask comes from the row index inside the
//     shader, so no [T, past + T] mask tensor is uploaded and no add runs before the softmax (op chain:
//     an upload, Add, and TF.js's Softmax program; here one dispatch).
//   - LmpipeCausalSoftmaxGrad: dx = dy * y - sum(dy * y) * y over each row, the float32 operations of
//     TF.js's Softmax gradient in its order (op chain: Mul, Sum, Mul, Sub; here one dispatch).
// One workgroup per row, with workgroup reductions for the maximum and the sums. Both bind their tensors
// as 1-D views and go through the backend's recordAndSubmit, as lib/tensor/webgpu/kernels.ts does.
// Numbers, as in the op chain (scores + mask of -1e9, then softmax): masked keys get exactly 0; a row
// holding a NaN or +Infinity anywhere (masked keys too) becomes NaN throughout; a visible -Infinity gets
// 0. One deliberate difference: a row whose visible scores are all -Infinity becomes NaN here, where the
// op chain would hand its probability to the masked keys.
import * as tf from "@tensorflow/tfjs-core";
import { registerKernels } from "../../host_kernel.ts";
import { CAUSAL_SOFTMAX_GRAD_KERNEL, CAUSAL_SOFTMAX_KERNEL } from "../../kernel_names.ts";
import {
  cachedPipeline,
  flatView,
  requireWithinBindingLimit,
  RowProgram,
  rowWorkgroup,
} from "../../webgpu/kernels.ts";
import { WGSL_FLOAT_TESTS, WGSL_MAX_NAN, wgslRowEntry, wgslTreeReduce } from "../../webgpu/wgsl.ts";

// The backend's internals are reached on purpose (TF.js 4.22: recordAndSubmit, uploadToGPU,
// makeTensorInfo, device), typed loosely as in webgpu/kernels.ts.
// deno-lint-ignore no-explicit-any
type GpuBackend = any;
type TensorInfo = tf.TensorInfo;

// recordAndSubmit's uniforms for [y (output), x], both 1-D: NaN, Infinity, 2 x (shape, stride); then
// rows, cols (= past + T), T (queries per [T, past + T] block) and past.
const forwardShader = (w: number) => `
struct Uniforms {
  nanValue: f32, infValue: f32, shape0: i32, stride0: i32, shape1: i32, stride1: i32,
  rows: i32, cols: i32, queries: i32, past: i32,
};
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> u: Uniforms;
var<workgroup> partial: array<f32, ${w}>;
${WGSL_FLOAT_TESTS}
${WGSL_MAX_NAN}

${wgslRowEntry(w)}
  // query i of its block sits at absolute position past + i: keys 0..past+i are visible
  let seen = u32(u.past) + row % u32(u.queries) + 1u;
  // maximum of the visible scores; NaN when any score of the row is NaN or +Infinity (as in the op
  // chain, where such a value, masked or not, turns the row's maximum or sum into NaN or Infinity)
  var best = -u.infValue;
  for (var c = lid; c < cols; c = c + ${w}u) {
    let v = x[base + c];
    if (isNaN(v) || isPosInf(v)) {
      best = u.nanValue;
    } else if (c < seen) {
      best = maxNaN(best, v);
    }
  }
  partial[lid] = best;
  var live: u32;
  ${wgslTreeReduce((a, b) => `maxNaN(${a}, ${b})`, w)}
  let mx = partial[0];
  workgroupBarrier(); // everyone has read the maximum before partial is reused for the sums
  let rowNaN = isNaN(mx) || isNegInf(mx);
  var acc = 0.0;
  for (var c = lid; c < cols; c = c + ${w}u) {
    var ev = 0.0;
    if (c < seen) {
      let v = x[base + c];
      ev = exp(v - mx);
      if (isNegInf(v)) { ev = 0.0; } // exp(-inf) is not guaranteed to be 0 on every GPU
      acc = acc + ev;
    }
    y[base + c] = ev;
  }
  partial[lid] = acc;
  ${wgslTreeReduce((a, b) => `${a} + ${b}`, w)}
  let s = partial[0];
  // each thread divides the elements it wrote above
  for (var c = lid; c < cols; c = c + ${w}u) {
    if (rowNaN) {
      y[base + c] = u.nanValue;
    } else if (c < seen) {
      y[base + c] = y[base + c] / s;
    }
  }
}`;

// Uniforms for [dx (output), y, dy], all 1-D: NaN, Infinity, 3 x (shape, stride); then rows, cols.
const gradShader = (w: number) => `
struct Uniforms {
  nanValue: f32, infValue: f32, shape0: i32, stride0: i32, shape1: i32, stride1: i32,
  shape2: i32, stride2: i32, rows: i32, cols: i32,
};
@group(0) @binding(0) var<storage, read_write> dx: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<uniform> u: Uniforms;
var<workgroup> partial: array<f32, ${w}>;

${wgslRowEntry(w)}
  var acc = 0.0;
  for (var c = lid; c < cols; c = c + ${w}u) {
    let p = dy[base + c] * y[base + c];
    acc = acc + p;
  }
  partial[lid] = acc;
  var live: u32;
  ${wgslTreeReduce((a, b) => `${a} + ${b}`, w)}
  let s = partial[0];
  for (var c = lid; c < cols; c = c + ${w}u) {
    let yv = y[base + c];
    let p = dy[base + c] * yv;
    dx[base + c] = p - s * yv;
  }
}`;

class LmpipeCausalSoftmaxProgram extends RowProgram {}

class LmpipeCausalSoftmaxGradProgram extends RowProgram {}

/** Throws, naming the kernel, unless `t` is a non-empty float32 tensor that fits one binding. */
function checkInput(kernel: string, what: string, t: TensorInfo, backend: GpuBackend): void {
  if (t.dtype !== "float32" || t.shape.length < 2 || tf.util.sizeFromShape(t.shape) === 0) {
    throw new Error(
      `${kernel}: ${what} must be a non-empty float32 tensor of rank >= 2, got [${t.shape}] ${t.dtype}; ` +
        `causalSoftmax (lib/tensor/ops/causal_softmax/mod.ts) runs the op chain for other inputs`,
    );
  }
  requireWithinBindingLimit(kernel, what, t, backend);
}

function causalSoftmaxKernel(
  { inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs?: tf.NamedAttrMap },
): TensorInfo {
  const { x } = inputs as Record<string, TensorInfo>;
  const past = (attrs as { past: number }).past;
  checkInput(CAUSAL_SOFTMAX_KERNEL, "scores", x, backend);
  const cols = x.shape[x.shape.length - 1], queries = x.shape[x.shape.length - 2];
  if (!Number.isInteger(past) || past < 0 || cols !== past + queries) {
    throw new Error(
      `${CAUSAL_SOFTMAX_KERNEL}: scores [${x.shape}] with past ${past}: the last axis must be past + T ` +
        `(T = ${queries} queries)`,
    );
  }
  const rows = tf.util.sizeFromShape(x.shape) / cols;
  const device = backend.device as GPUDevice;
  const y = backend.makeTensorInfo(x.shape.slice(), "float32") as TensorInfo;
  backend.uploadToGPU(x.dataId);
  backend.uploadToGPU(y.dataId);
  const w = rowWorkgroup(cols);
  const pipeline = cachedPipeline(device, `${CAUSAL_SOFTMAX_KERNEL}${w}`, () => forwardShader(w));
  const int = (v: number) => ({ type: "int32", data: [v] });
  backend.recordAndSubmit(
    new LmpipeCausalSoftmaxProgram(pipeline, device, rows, cols),
    flatView(y),
    [flatView(x)],
    [int(rows), int(cols), int(queries), int(past)],
  );
  return y;
}

function causalSoftmaxGradKernel(
  { inputs, backend }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend },
): TensorInfo {
  const { y, dy } = inputs as Record<string, TensorInfo>;
  checkInput(CAUSAL_SOFTMAX_GRAD_KERNEL, "y", y, backend);
  if (dy.dtype !== "float32" || !tf.util.arraysEqual(dy.shape, y.shape)) {
    throw new Error(
      `${CAUSAL_SOFTMAX_GRAD_KERNEL}: dy has shape [${dy.shape}] (${dy.dtype}), expected [${y.shape}] float32`,
    );
  }
  const cols = y.shape[y.shape.length - 1];
  const rows = tf.util.sizeFromShape(y.shape) / cols;
  const device = backend.device as GPUDevice;
  const dx = backend.makeTensorInfo(y.shape.slice(), "float32") as TensorInfo;
  for (const t of [y, dy, dx]) backend.uploadToGPU(t.dataId);
  const w = rowWorkgroup(cols);
  const pipeline = cachedPipeline(device, `${CAUSAL_SOFTMAX_GRAD_KERNEL}${w}`, () => gradShader(w));
  backend.recordAndSubmit(
    new LmpipeCausalSoftmaxGradProgram(pipeline, device, rows, cols),
    flatView(dx),
    [flatView(y), flatView(dy)],
    [{ type: "int32", data: [rows] }, { type: "int32", data: [cols] }],
  );
  return dx;
}

// Registered once, when this module is first imported (backend.ts loads the webgpu backend first).
registerKernels("webgpu", [
  [CAUSAL_SOFTMAX_KERNEL, causalSoftmaxKernel],
  [CAUSAL_SOFTMAX_GRAD_KERNEL, causalSoftmaxGradKernel],
]);
