// Sum over leading axes on wasm (the gradient of a bias, dy summed over its rows). TF.js's wasm Sum
// transposes the input so as to sum along the last axis: ~3.5 ms for one [2048, 1536] bias gradient of
// gpt S. Here each column is summed where it lies, in float64 from the first row down and rounded once:
// on lmpipe's kernel threads in groups of 16 columns (kernels.wat col_sums), or, with lmpipe's wasm
// kernels off, in a JavaScript loop with the same order and the same bits. Other axes and dtypes go to
// TF.js's kernel.
import * as tf from "@tensorflow/tfjs-core";
import { heapView, type KernelFn, type TensorInfo } from "../../host_kernel.ts";
import { offsetOf, runRows, usable } from "../../wasm/kernels.ts";
import { KIND } from "../../wasm/kernel_calls.ts";

/** Columns per row of the kernel's job (kernels.wat col_sums' group). */
const GROUP = 16;

/** TF.js's Sum kernel on wasm with float32 sums over leading axes on lmpipe's column sums (`orig` else). */
export function sumLeadingAxesWasm(orig: KernelFn): KernelFn {
  return (args) => {
    const { x } = args.inputs as { x: TensorInfo };
    const { axis, keepDims } = args.attrs as { axis: number | number[]; keepDims: boolean };
    const rank = x.shape.length;
    if (x.dtype !== "float32" || rank < 2) return orig(args);
    const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
    const k = axes.length;
    if (k === 0 || k >= rank || axes.some((a, i) => a !== i)) return orig(args);
    const rows = tf.util.sizeFromShape(x.shape.slice(0, k)), cols = tf.util.sizeFromShape(x.shape.slice(k));
    const outShape = keepDims ? [...x.shape.slice(0, k).map(() => 1), ...x.shape.slice(k)] : x.shape.slice(k);
    const backend = args.backend;
    const out = backend.makeOutput(outShape, "float32") as TensorInfo;
    if (usable(backend)) {
      const groups = Math.ceil(cols / GROUP);
      const job = [KIND.colSums, offsetOf(backend, x), offsetOf(backend, out), rows, cols];
      if (groups > 0) runRows(backend, job, groups, rows * GROUP);
      return out;
    }
    const src = heapView(backend, x), dst = heapView(backend, out); // views after the allocation
    const acc = new Float64Array(cols);
    for (let r = 0, i = 0; r < rows; r++) {
      for (let j = 0; j < cols; j++, i++) acc[j] += src[i];
    }
    dst.set(acc);
    return out;
  };
}
