// The loss's vocabulary softmax on wasm, registered as LmpipeSoftmaxRows (kernel_names.ts): one
// multithreaded SIMD pass a row (kernels.wat softmax_rows) on the kernels' threads (wasm/kernels.ts),
// where TF.js runs Max, Sub, Exp and Sum, one thread each. Same outputs as the op chain in mod.ts; with
// a targets input also the loss's onehot part (softmaxRowsAtTargets there), or, with the attribute
// statsOnly, no e at all (softmaxStatsAtTargets there).
import { registerKernels } from "../../host_kernel.ts";
import { SOFTMAX_ROWS_KERNEL } from "../../kernel_names.ts";
import { type AnyBackend, offsetOf, requireFloat32, runRows, type TensorInfo } from "../../wasm/kernels.ts";
import { KIND } from "../../wasm/kernel_calls.ts";
import { dnnlLogSoftmaxInPlace } from "./dnnl.ts";

/**
 * Rows per piece of a threaded softmax job: the kernel finds each row's maximum inside the previous row's
 * exp loop, so only a piece's first row takes a pass of its own (1 in 8 here; 512 rows still make 64
 * pieces for the threads to share).
 */
const PIECE_ROWS = 8;

function softmaxRowsKernel(
  { inputs, backend, attrs }: {
    inputs: { x: TensorInfo; targets?: TensorInfo };
    backend: AnyBackend;
    attrs?: { statsOnly?: boolean; dnnl?: boolean };
  },
): TensorInfo[] {
  const { x, targets } = inputs;
  requireFloat32(SOFTMAX_ROWS_KERNEL, "x", x);
  if (x.shape.length !== 2) throw new Error(`${SOFTMAX_ROWS_KERNEL}: x must be 2-D, got [${x.shape}]`);
  if (targets) return atTargets(backend, x, targets, attrs?.statsOnly === true, attrs?.dnnl === true);
  if (attrs?.statsOnly) throw new Error(`${SOFTMAX_ROWS_KERNEL}: statsOnly needs a targets input`);
  const [rows, cols] = x.shape;
  const e = backend.makeOutput([rows, cols], "float32") as TensorInfo;
  const m = backend.makeOutput([rows, 1], "float32") as TensorInfo;
  const s = backend.makeOutput([rows, 1], "float32") as TensorInfo;
  if (rows > 0) {
    const o = (t: TensorInfo) => offsetOf(backend, t);
    runRows(backend, [KIND.softmaxRows, o(x), o(e), o(m), o(s), cols, 1], rows, cols, PIECE_ROWS);
  }
  return [e, m, s];
}

/**
 * With `targets` [rows] (int32), the loss's variant (softmaxRowsAtTargets in mod.ts), in place: x's
 * buffer becomes e, so no second [rows, cols] buffer is allocated and written (the caller's contract:
 * x is not used after). The target logits x[row, t] are read first; then the SIMD pass runs with e = x;
 * then, on the host, e[row, t] -= s[row], so that e / s is softmax - onehot. With `statsOnly`
 * (softmaxStatsAtTargets) the pass writes no e and x is left alone: outputs m, s, xt; with `dnnl` too,
 * oneDNN's log-softmax overwrites x instead (dnnl.ts) and m is each row's logsumexp, x[t] minus its
 * log-probability, with s = 1. Each target must lie in [0, cols): it indexes the heap.
 */
function atTargets(
  backend: AnyBackend,
  x: TensorInfo,
  targets: TensorInfo,
  statsOnly: boolean,
  dnnl = false,
): TensorInfo[] {
  const [rows, cols] = x.shape;
  if (targets.dtype !== "int32" || targets.shape.length !== 1 || targets.shape[0] !== rows) {
    throw new Error(
      `${SOFTMAX_ROWS_KERNEL}: targets must be int32 [${rows}], got ${targets.dtype} [${targets.shape}]`,
    );
  }
  const o = (t: TensorInfo) => offsetOf(backend, t);
  const view = (t: TensorInfo, n: number) => new Int32Array(backend.wasm.HEAPU8.buffer, o(t), n);
  view(targets, rows).forEach((c, r) => {
    if (!(c >= 0 && c < cols)) {
      throw new Error(`${SOFTMAX_ROWS_KERNEL}: target ${c} of row ${r} is outside [0, ${cols})`);
    }
  });
  const m = backend.makeOutput([rows, 1], "float32") as TensorInfo;
  const s = backend.makeOutput([rows, 1], "float32") as TensorInfo;
  const xt = backend.makeOutput([rows], "float32") as TensorInfo;
  // views taken after the allocations above, which can grow (and replace) the heap
  const heap = backend.wasm.HEAPU8.buffer as ArrayBuffer;
  const t = view(targets, rows);
  const xv = new Float32Array(heap, o(x), rows * cols), xtv = new Float32Array(heap, o(xt), rows);
  for (let r = 0; r < rows; r++) xtv[r] = xv[r * cols + t[r]];
  if (statsOnly && dnnl && rows > 0) {
    dnnlLogSoftmaxInPlace(heap, o(x), rows, cols);
    const mv = new Float32Array(heap, o(m), rows), sv = new Float32Array(heap, o(s), rows);
    for (let r = 0; r < rows; r++) mv[r] = xtv[r] - xv[r * cols + t[r]], sv[r] = 1;
    return [m, s, xt];
  }
  const store = statsOnly ? 0 : 1;
  if (rows > 0) {
    runRows(backend, [KIND.softmaxRows, o(x), o(x), o(m), o(s), cols, store], rows, cols, PIECE_ROWS);
  }
  if (statsOnly) return [m, s, xt];
  const sv = new Float32Array(heap, o(s), rows);
  for (let r = 0; r < rows; r++) xv[r * cols + t[r]] -= sv[r];
  backend.incRef(x.dataId); // e is x's buffer, as TF.js's Reshape shares one
  return [{ dataId: x.dataId, shape: [rows, cols], dtype: "float32" }, m, s, xt];
}

// Registered once, when this module is first imported.
registerKernels("wasm", [[SOFTMAX_ROWS_KERNEL, softmaxRowsKernel]]);
