// Add on wasm for float32 tensors of one shape, or a row added to every row (a bias, a position
// embedding): TF.js's wasm Add runs on one thread, ~1 ms for one [8, 256, 384] residual add of gpt S and
// ~8 ms for the two [50304, 384] halves of a tied embedding's gradient. This kernel (kernels.wat add_rows)
// does the same float32 add per element on all of lmpipe's wasm threads, so the bits are TF.js's. Other
// broadcasts, dtypes, small tensors, and everything when lmpipe's wasm kernels are off, go to TF.js's kernel.
import * as tf from "@tensorflow/tfjs-core";
import type { KernelFn, TensorInfo } from "../../host_kernel.ts";
import { MEMORY_BOUND_MIN_VALUES, offsetOf, runRows, usable } from "../../wasm/kernels.ts";
import { BLOCK, KIND } from "../../wasm/kernel_calls.ts";

/** Below this many outputs TF.js's kernel is as fast (no job to hand out). */
const MIN_VALUES = 4096;

/**
 * Whether `short` is the trailing axes of `long` after dropping its leading 1s, and has no more axes than
 * `long` (else the sum would gain axes).
 */
function isSuffix(short: number[], long: number[]): boolean {
  if (short.length > long.length) return false;
  const first = short.findIndex((d) => d !== 1);
  if (first < 0) return false; // a scalar or all ones: TF.js's kernel
  const s = short.slice(first);
  const tail = long.slice(long.length - s.length);
  return s.every((d, i) => d === tail[i]);
}

/** TF.js's Add kernel on wasm with float32 same-shape and row-broadcast adds on lmpipe's kernel. */
export function addWasm(orig: KernelFn): KernelFn {
  return (args) => {
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const backend = args.backend;
    if (a.dtype !== "float32" || b.dtype !== "float32" || !usable(backend)) return orig(args);
    const na = tf.util.sizeFromShape(a.shape), nb = tf.util.sizeFromShape(b.shape);
    if (Math.max(na, nb) < MIN_VALUES) return orig(args);
    const same = tf.util.arraysEqual(a.shape, b.shape);
    // the full-size operand first; a + b = b + a in float32, NaN included
    const [big, row] = na >= nb ? [a, b] : [b, a];
    if (!same && !isSuffix(row.shape, big.shape)) return orig(args);
    const n = Math.max(na, nb);
    const y = backend.makeOutput(big.shape.slice(), "float32") as TensorInfo;
    const cols = same ? BLOCK : Math.min(na, nb);
    const job = [
      KIND.addRows,
      offsetOf(backend, big),
      offsetOf(backend, row),
      offsetOf(backend, y),
      cols,
      n,
      same ? 0 : 1,
    ];
    runRows(backend, job, Math.ceil(n / cols), cols, 1, MEMORY_BOUND_MIN_VALUES);
    return y;
  };
}
