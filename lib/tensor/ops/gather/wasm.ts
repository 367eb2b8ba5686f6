// The token embedding on wasm: GatherV2 of whole rows of a float32 or int32 table (axis 0, batchDims 0) as one
// job of kernels.wat gather_rows, a memory.copy per index. The JavaScript kernel it replaces for those calls
// (patches/wasm.ts gatherBatchedKernel) zeroed the output first and then copied each row through a
// subarray: 0.6 ms of a GPT T evaluation step on 1 and 2 threads alike, for 1024 rows of 128 values. The
// same bits; every index is checked before anything is copied. Other gathers, and all of them when lmpipe's
// wasm kernels are off, stay on the JavaScript kernel.
import * as tf from "@tensorflow/tfjs-core";
import { type AnyBackend, heapView, type KernelArgs, type TensorInfo } from "../../host_kernel.ts";
import { MEMORY_BOUND_MIN_VALUES, offsetOf, runRows, usable } from "../../wasm/kernels.ts";
import { KIND } from "../../wasm/kernel_calls.ts";

/** Whether the call is a gather of whole rows of a float32/int32 table by int32 indices that the kernel takes. */
export function gatherRowsTakes({ inputs, backend, attrs }: KernelArgs): boolean {
  const { x, indices } = inputs as Record<string, TensorInfo>;
  const axis = tf.util.parseAxisParam(attrs.axis as number, x.shape)[0];
  return (attrs.batchDims ?? 0) === 0 && axis === 0 && (x.dtype === "float32" || x.dtype === "int32") &&
    indices.dtype === "int32" && usable(backend);
}

/** out[i, ...] = x[indices[i], ...] for a call gatherRowsTakes accepted; throws on an index out of range. */
export function gatherRowsWasm({ inputs, backend }: KernelArgs): TensorInfo {
  const { x, indices } = inputs as Record<string, TensorInfo>;
  const rows = x.shape[0], n = tf.util.sizeFromShape(indices.shape);
  const rowValues = tf.util.sizeFromShape(x.shape.slice(1));
  const out = (backend as AnyBackend).makeOutput(
    [...indices.shape, ...x.shape.slice(1)],
    x.dtype,
  ) as TensorInfo;
  if (n === 0 || rowValues === 0) return out;
  // views after the allocation above (it can grow the heap)
  const ids = heapView(backend, indices);
  for (let i = 0; i < n; i++) {
    const k = ids[i];
    if (!(k >= 0 && k < rows)) {
      throw new Error(
        `gather: index ${k} is out of range [0, ${rows}): position ${i} of the indices [${indices.shape}] ` +
          `into a table [${x.shape}] (lib/tensor/ops/gather/wasm.ts)`,
      );
    }
  }
  const job = [
    KIND.gatherRows,
    offsetOf(backend, x),
    offsetOf(backend, indices),
    offsetOf(backend, out),
    4 * rowValues,
  ];
  runRows(backend, job, n, rowValues, 1, MEMORY_BOUND_MIN_VALUES);
  return out;
}
