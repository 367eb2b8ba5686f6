// The loss's vocabulary softmax on wasm, registered as LmpipeSoftmaxRows (kernel_names.ts): one
// multithreaded SIMD pass a row (kernels.wat softmax_rows) on the kernels' threads (wasm/kernels.ts),
// where TF.js runs Max, Sub, Exp and Sum, one thread each. Same outputs as the op chain in mod.ts; with
// a targets input also the loss's onehot part (softmaxRowsAtTargets there).
import { registerKernels } from "../../host_kernel.ts";
import { SOFTMAX_ROWS_KERNEL } from "../../kernel_names.ts";
import { type AnyBackend, offsetOf, requireFloat32, runRows, type TensorInfo } from "../../wasm/kernels.ts";
import { KIND } from "../../wasm/kernel_calls.ts";

function softmaxRowsKernel(
  { inputs, backend }: { inputs: { x: TensorInfo; targets?: TensorInfo }; backend: AnyBackend },
): TensorInfo[] {
  const { x, targets } = inputs;
  requireFloat32(SOFTMAX_ROWS_KERNEL, "x", x);
  if (x.shape.length !== 2) throw new Error(`${SOFTMAX_ROWS_KERNEL}: x must be 2-D, got [${x.shape}]`);
  const [rows, cols] = x.shape;
  const e = backend.makeOutput([rows, cols], "float32") as TensorInfo;
  const m = backend.makeOutput([rows, 1], "float32") as TensorInfo;
  const s = backend.makeOutput([rows, 1], "float32") as TensorInfo;
  if (rows > 0) {
    const o = (t: TensorInfo) => offsetOf(backend, t);
    runRows(backend, [KIND.softmaxRows, o(x), o(e), o(m), o(s), cols], rows, cols);
  }
  if (!targets) return [e, m, s];
  return [e, m, s, atTargets(backend, x, targets, e, s)];
}

/**
 * With `targets` [rows] (int32): the loss's cross-entropy gradient folded into e, one value a row, on
 * the host: e[row, t] -= s[row] (so that e / s is softmax - onehot), and the target logits x[row, t]
 * returned [rows]. Each target must lie in [0, cols): it indexes the heap.
 */
function atTargets(backend: AnyBackend, x: TensorInfo, targets: TensorInfo, e: TensorInfo, s: TensorInfo) {
  const [rows, cols] = x.shape;
  if (targets.dtype !== "int32" || targets.shape.length !== 1 || targets.shape[0] !== rows) {
    throw new Error(
      `${SOFTMAX_ROWS_KERNEL}: targets must be int32 [${rows}], got ${targets.dtype} [${targets.shape}]`,
    );
  }
  const xt = backend.makeOutput([rows], "float32") as TensorInfo;
  // views taken after the allocation above, which can grow (and replace) the heap
  const heap = backend.wasm.HEAPU8.buffer as ArrayBuffer;
  const f32 = (u: TensorInfo, n: number) => new Float32Array(heap, offsetOf(backend, u), n);
  const t = new Int32Array(heap, offsetOf(backend, targets), rows);
  const xv = f32(x, rows * cols), ev = f32(e, rows * cols), sv = f32(s, rows), xtv = f32(xt, rows);
  for (let r = 0; r < rows; r++) {
    const c = t[r];
    if (!(c >= 0 && c < cols)) {
      throw new Error(`${SOFTMAX_ROWS_KERNEL}: target ${c} of row ${r} is outside [0, ${cols})`);
    }
    xtv[r] = xv[r * cols + c];
    ev[r * cols + c] -= sv[r];
  }
  return xt;
}

// Registered once, when this module is first imported.
registerKernels("wasm", [[SOFTMAX_ROWS_KERNEL, softmaxRowsKernel]]);
