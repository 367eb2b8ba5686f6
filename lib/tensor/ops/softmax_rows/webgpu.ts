// The loss's vocabulary softmax (ops/softmax_rows/mod.ts, the hot spot of lib/loss.ts) as one WGSL
// dispatch on webgpu (Max, Sub, Exp, Sum -> 1, without their two [rows, cols] temporaries), registered
// as LmpipeSoftmaxRows (kernel_names.ts; wasm's kernel has the name too).
import * as tf from "@tensorflow/tfjs-core";
import { registerKernels } from "../../host_kernel.ts";
import { SOFTMAX_ROWS_KERNEL } from "../../kernel_names.ts";
import { webgpuMaxTensorBytes } from "../../webgpu/limits.ts";
import { cachedPipeline, flatView, reduceWorkgroup, RowProgram } from "../../webgpu/kernels.ts";
import { WGSL_FLOAT_TESTS, WGSL_MAX_NAN, wgslRowEntry, wgslTreeReduce } from "../../webgpu/wgsl.ts";

// The backend's internals are reached on purpose (recordAndSubmit, uploadToGPU, device), typed loosely.
// deno-lint-ignore no-explicit-any
type GpuBackend = any;
type TensorInfo = tf.TensorInfo;

// One workgroup per row, of TF.js's reduction size W for the row length (webgpu/kernels.ts reduceWorkgroup): each
// thread takes the row's elements t, t + W, ...; a halving tree over the W partial maxima gives the row
// maximum (NaN if any element is NaN, tested on the bits so that no compiler may assume NaN away, as
// TF.js's Max does); each thread then writes e = exp(x - max) for its elements and the same tree adds
// the W partial sums: the additions of TF.js's Sum in its order, so on a driver that compiles each
// operation as written (Mesa llvmpipe) e, m and s equal the op chain's bit for bit. x is read twice,
// e written once, and nothing else of size [rows, cols] is allocated. As in the op chain: a row with a
// NaN gets m, e and s all NaN (the loss scaler's overflow check needs a NaN loss); x = -Infinity gives
// e = 0 (written explicitly: exp(-inf) is not guaranteed on every GPU) unless the whole row is
// -Infinity (then NaN, as -inf - -inf); x = +Infinity makes m infinite.
// Uniforms for [e (output), x, m, s], all bound as 1-D: NaN, Infinity, 4 x (shape, stride), rows, cols.
const softmaxRowsShader = (w: number) => `
struct Uniforms {
  nanValue: f32, infValue: f32, shape0: i32, stride0: i32, shape1: i32, stride1: i32,
  shape2: i32, stride2: i32, shape3: i32, stride3: i32, rows: i32, cols: i32,
};
@group(0) @binding(0) var<storage, read_write> e: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> s: array<f32>;
@group(0) @binding(4) var<uniform> u: Uniforms;
var<workgroup> partial: array<f32, ${w}>;

${WGSL_FLOAT_TESTS}
${WGSL_MAX_NAN}

${wgslRowEntry(w)}
  var best = -u.infValue;
  for (var c = lid; c < cols; c = c + ${w}u) { best = maxNaN(best, x[base + c]); }
  partial[lid] = best;
  var live: u32;
  ${wgslTreeReduce((a, b) => `maxNaN(${a}, ${b})`, w)}
  let mx = partial[0];
  workgroupBarrier(); // everyone has read the maximum before partial is reused for the sums
  let rowNaN = isNaN(mx);
  var acc = 0.0;
  for (var c = lid; c < cols; c = c + ${w}u) {
    let v = x[base + c];
    var ev = exp(v - mx);
    if (isNegInf(v) && mx > v) { ev = 0.0; }
    if (rowNaN) { ev = u.nanValue; }
    e[base + c] = ev;
    acc = acc + ev;
  }
  partial[lid] = acc;
  ${wgslTreeReduce((a, b) => `${a} + ${b}`, w)}
  if (lid == 0u) {
    m[row] = mx;
    s[row] = select(partial[0], u.nanValue, rowNaN);
  }
}`;

class LmpipeSoftmaxRowsProgram extends RowProgram {}

function softmaxRowsKernel(
  { inputs, backend }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend },
): TensorInfo[] {
  const { x } = inputs as Record<string, TensorInfo>;
  if (x.dtype !== "float32" || x.shape.length !== 2) {
    throw new Error(`${SOFTMAX_ROWS_KERNEL}: expected a 2-D float32 tensor, got [${x.shape}] ${x.dtype}`);
  }
  const [rows, cols] = x.shape;
  if (rows === 0 || cols === 0) {
    throw new Error(
      `${SOFTMAX_ROWS_KERNEL}: empty input [${x.shape}]; softmaxRows (lib/tensor/ops/softmax_rows/mod.ts) runs the op chain for it`,
    );
  }
  const limit = webgpuMaxTensorBytes(backend);
  if (rows * cols * 4 > limit) {
    throw new Error(
      `${SOFTMAX_ROWS_KERNEL}: [${rows}, ${cols}] floats are over this GPU's storage-buffer binding limit of ` +
        `${(limit / 2 ** 20).toFixed(1)} MiB; split the rows (maxRowsPerChunk in lib/nn.ts)`,
    );
  }
  const device = backend.device as GPUDevice;
  const e = backend.makeTensorInfo([rows, cols], "float32") as TensorInfo;
  const m = backend.makeTensorInfo([rows, 1], "float32") as TensorInfo;
  const s = backend.makeTensorInfo([rows, 1], "float32") as TensorInfo;
  for (const t of [x, e, m, s]) backend.uploadToGPU(t.dataId);
  const w = reduceWorkgroup(cols, device.limits.maxComputeWorkgroupSizeX);
  const pipeline = cachedPipeline(device, `LmpipeSoftmaxRows${w}`, () => softmaxRowsShader(w));
  backend.recordAndSubmit(
    new LmpipeSoftmaxRowsProgram(pipeline, device, rows, cols),
    flatView(e),
    [flatView(x), flatView(m), flatView(s)],
    [{ type: "int32", data: [rows] }, { type: "int32", data: [cols] }],
  );
  return [e, m, s];
}

// Registered once, when this module is first imported (backend.ts loads the webgpu backend first).
registerKernels("webgpu", [[SOFTMAX_ROWS_KERNEL, softmaxRowsKernel]]);
