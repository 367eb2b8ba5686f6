// The loss's vocabulary softmax on wasm, registered as LmpipeSoftmaxRows (kernel_names.ts): one
// multithreaded SIMD pass a row (kernels.wat softmax_rows) on the kernels' threads (wasm/kernels.ts),
// where TF.js runs Max, Sub, Exp and Sum, one thread each. Same outputs as the op chain in mod.ts.
import { registerKernels } from "../../host_kernel.ts";
import { SOFTMAX_ROWS_KERNEL } from "../../kernel_names.ts";
import { type AnyBackend, offsetOf, requireFloat32, runRows, type TensorInfo } from "../../wasm/kernels.ts";
import { KIND } from "../../wasm/kernel_calls.ts";

function softmaxRowsKernel(
  { inputs, backend }: { inputs: { x: TensorInfo }; backend: AnyBackend },
): TensorInfo[] {
  const { x } = inputs;
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
  return [e, m, s];
}

// Registered once, when this module is first imported.
registerKernels("wasm", [[SOFTMAX_ROWS_KERNEL, softmaxRowsKernel]]);
