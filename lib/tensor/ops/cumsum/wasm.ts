// Cumsum on wasm for float32 (the pixel-cumsum model's causal sum of activation images over time, and
// its gradient, a reversed Cumsum): TF.js's kernel runs on one thread, and for any axis but the last it
// transposes the input there and the output back, ~6 ms for one [8, 256, 256] sum over the middle axis.
// This kernel (kernels.wat cumsum) sums along the axis where it lies, blocks of 64 columns at a time on
// all of lmpipe's wasm threads, in TF.js's order (one float32 add per term), so the bits are the same.
// Other dtypes, and everything when lmpipe's wasm kernels are off, go to TF.js's kernel, with a negative
// axis counted from the front (TF.js's wasm kernel corrupts the heap on one).
import * as tf from "@tensorflow/tfjs-core";
import type { KernelFn, TensorInfo } from "../../host_kernel.ts";
import { offsetOf, runRows, usable } from "../../wasm/kernels.ts";
import { KIND } from "../../wasm/kernel_calls.ts";

/** Columns a row of the kernel's job covers (kernels.wat cumsum's block). */
const COLUMNS = 64;

/** TF.js's Cumsum kernel on wasm with float32 inputs on lmpipe's kernel (`orig` for the rest). */
export function cumsumWasm(orig: KernelFn): KernelFn {
  return (args) => {
    const { x } = args.inputs as { x: TensorInfo };
    const { axis, exclusive, reverse } = args.attrs as { axis: number; exclusive: boolean; reverse: boolean };
    const backend = args.backend;
    const rank = x.shape.length;
    const ax = axis < 0 ? axis + rank : axis;
    // TF.js's kernel takes a negative axis as it is and writes outside its output (the heap corrupted):
    // it gets the axis counted from the front
    if (!Number.isInteger(ax) || ax < 0 || ax >= rank) {
      throw new Error(`cumsum: axis ${axis} is outside the ${rank} axes of x [${x.shape}]`);
    }
    if (x.dtype !== "float32" || !usable(backend)) {
      return orig({ ...args, attrs: { ...args.attrs, axis: ax } });
    }
    const outer = tf.util.sizeFromShape(x.shape.slice(0, ax));
    const T = x.shape[ax];
    const inner = tf.util.sizeFromShape(x.shape.slice(ax + 1));
    const y = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
    if (outer * T * inner === 0) return y;
    const blocks = Math.ceil(inner / COLUMNS);
    const o = (t: TensorInfo) => offsetOf(backend, t);
    const job = [KIND.cumsum, o(x), o(y), T, inner, blocks, exclusive ? 1 : 0, reverse ? 1 : 0];
    runRows(backend, job, outer * blocks, T * Math.min(inner, COLUMNS));
    return y;
  };
}
